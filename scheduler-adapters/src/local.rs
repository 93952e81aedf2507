//! Local blocks: worker processes on this host, one process group per
//! worker, output in `SCRIPT_DIR/lattice-BLOCK.N.log`. The "scheduler" is
//! the kernel: a block is running while all its workers live, completed
//! when they all exited cleanly, failed when one exited with an error (the
//! message carries its exit status and the last line it printed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::Render;
use crate::{BlockSpec, BlockState, JobId, Provider, ProviderError};

/// How long cancelled workers get between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// `[provider] type = "local"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    #[serde(default)]
    pub worker_init: Vec<String>,
    #[serde(default)]
    pub script_dir: Option<PathBuf>,
}

impl LocalConfig {
    pub(crate) fn render(&self, out: &mut Render) {
        out.list(
            "Shell lines run before each worker starts.",
            "worker_init",
            &self.worker_init,
            "[\"source ~/venv/bin/activate\"]",
        );
        out.opt_path(
            "Where worker logs go (default: the endpoint's dir + /blocks).",
            "script_dir",
            &self.script_dir,
            "\"/tmp/lattice-blocks\"",
        );
    }
}

struct Worker {
    child: tokio::process::Child,
    log: PathBuf,
}

#[derive(Default)]
struct LocalBlock {
    workers: Vec<Worker>,
    cancelled: bool,
}

/// The local provider.
pub struct LocalProvider {
    log_dir: PathBuf,
    blocks: Mutex<HashMap<JobId, LocalBlock>>,
}

impl std::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProvider")
            .field("log_dir", &self.log_dir)
            .finish_non_exhaustive()
    }
}

impl LocalProvider {
    pub fn new(config: LocalConfig, default_log_dir: &Path) -> Self {
        Self {
            log_dir: config
                .script_dir
                .unwrap_or_else(|| default_log_dir.to_owned()),
            blocks: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, LocalBlock>> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn signal_group(pid: Option<u32>, signal: i32) {
    if let Some(pid) = pid {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
        unsafe {
            libc::kill(-(pid as i32), signal);
        }
    }
}

fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

#[async_trait]
impl Provider for LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn submit(&self, spec: &BlockSpec) -> Result<JobId, ProviderError> {
        tokio::fs::create_dir_all(&self.log_dir)
            .await
            .map_err(|source| ProviderError::Io {
                path: self.log_dir.display().to_string(),
                source,
            })?;
        let mut script = String::new();
        for line in &spec.worker_init {
            script.push_str(line);
            script.push('\n');
        }
        script.push_str("exec ");
        script.push_str(&spec.worker.shell_line(&spec.block_id));
        let mut block = LocalBlock::default();
        for n in 0..spec.nodes * spec.workers_per_node {
            let log = self
                .log_dir
                .join(format!("lattice-{}.{n}.log", spec.block_id));
            let file = std::fs::File::create(&log).map_err(|source| ProviderError::Io {
                path: log.display().to_string(),
                source,
            })?;
            let err = file.try_clone().map_err(|source| ProviderError::Io {
                path: log.display().to_string(),
                source,
            })?;
            let child = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&script)
                .env("LATTICE_BLOCK_ID", &spec.block_id)
                .stdin(Stdio::null())
                .stdout(file)
                .stderr(err)
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| ProviderError::Refused(format!("cannot start /bin/sh: {e}")))?;
            block.workers.push(Worker { child, log });
        }
        let id = format!("local-{}", spec.block_id);
        self.lock().insert(id.clone(), block);
        Ok(id)
    }

    async fn status(&self, jobs: &[JobId]) -> Result<HashMap<JobId, BlockState>, ProviderError> {
        let mut blocks = self.lock();
        let mut states = HashMap::new();
        for job in jobs {
            let Some(block) = blocks.get_mut(job) else {
                states.insert(
                    job.clone(),
                    BlockState::Unknown {
                        message: format!("no local block {job}"),
                    },
                );
                continue;
            };
            let mut alive = 0;
            let mut failure = None;
            for (n, worker) in block.workers.iter_mut().enumerate() {
                match worker.child.try_wait() {
                    Ok(None) => alive += 1,
                    Ok(Some(status)) if status.success() => {}
                    Ok(Some(status)) => {
                        failure.get_or_insert_with(|| {
                            format!(
                                "local worker {n} exited with {status}: {}",
                                last_line(&worker.log)
                            )
                        });
                    }
                    Err(e) => {
                        failure.get_or_insert_with(|| format!("local worker {n}: {e}"));
                    }
                }
            }
            let state = match (block.cancelled, failure) {
                (true, _) => BlockState::Cancelled,
                (false, Some(message)) => BlockState::Failed { message },
                (false, None) if alive > 0 => BlockState::Running,
                (false, None) => BlockState::Completed,
            };
            states.insert(job.clone(), state);
        }
        Ok(states)
    }

    async fn cancel(&self, jobs: &[JobId]) -> Result<(), ProviderError> {
        let mut pids = Vec::new();
        {
            let mut blocks = self.lock();
            for job in jobs {
                if let Some(block) = blocks.get_mut(job) {
                    block.cancelled = true;
                    pids.extend(block.workers.iter().filter_map(|w| w.child.id()));
                }
            }
        }
        for pid in &pids {
            signal_group(Some(*pid), libc::SIGTERM);
        }
        if !pids.is_empty() {
            tokio::spawn(async move {
                tokio::time::sleep(KILL_GRACE).await;
                for pid in pids {
                    signal_group(Some(pid), libc::SIGKILL);
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::spec;

    async fn wait_for(
        provider: &LocalProvider,
        job: &JobId,
        want: fn(&BlockState) -> bool,
    ) -> BlockState {
        for _ in 0..200 {
            let state = provider.status(std::slice::from_ref(job)).await.unwrap()[job].clone();
            if want(&state) {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("block {job} never reached the wanted state");
    }

    #[tokio::test]
    async fn blocks_run_fail_loudly_and_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let provider = LocalProvider::new(LocalConfig::default(), dir.path());

        // A "worker" that stays up: running, then cancelled.
        let mut sleeper = spec("b1", 1, 2);
        sleeper.worker.program = "/bin/sleep".into();
        sleeper.worker_init = vec!["exec sleep 30".into()];
        let job = provider.submit(&sleeper).await.unwrap();
        assert_eq!(
            wait_for(&provider, &job, |_| true).await,
            BlockState::Running
        );
        provider.cancel(std::slice::from_ref(&job)).await.unwrap();
        assert_eq!(
            wait_for(&provider, &job, |_| true).await,
            BlockState::Cancelled
        );

        // A worker binary that does not exist: failed, with the shell's words.
        let mut broken = spec("b2", 1, 1);
        broken.worker.program = dir.path().join("no-such-lattice");
        let job = provider.submit(&broken).await.unwrap();
        let state = wait_for(&provider, &job, |s| s.is_final()).await;
        let message = state.message().unwrap_or_default().to_owned();
        assert!(matches!(state, BlockState::Failed { .. }), "{state:?}");
        assert!(
            message.contains("exit status: 127") && message.contains("no-such-lattice"),
            "{message}"
        );
    }
}
