//! Local blocks: worker processes on this host, one process group per
//! worker, each `/bin/sh -c SCRIPT` (the worker_init lines, then `exec` the
//! worker), output in `SCRIPT_DIR/lattice-BLOCK.N.log`. The "scheduler" is
//! the kernel: a block is pending while its workers' worker_init runs,
//! running while a worker lives past it, completed when they all exited
//! cleanly, failed when one exited with an error (the message carries its
//! exit status and the last line it printed or, when worker_init stopped
//! it, the failing line and the tail of its stderr from
//! `SCRIPT_DIR/lattice-BLOCK.N.worker_init.err`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::Render;
use crate::{
    describe_init_report, shell_quote, worker_init_script, BlockSpec, BlockState, InitReport,
    JobId, Provider, ProviderError,
};

/// The shell that runs a local block's script (worker_init included).
pub const SHELL: &str = "/bin/sh";

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
            "Shell lines run by /bin/sh before each worker starts (POSIX sh: `. FILE`,\nnot `source FILE`). The first line that fails stops the block; its stderr\nis shown on the endpoint and on the tasks that wait for it.",
            "worker_init",
            &self.worker_init,
            "[\". ~/venv/bin/activate\"]",
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
    /// Exists while the worker's worker_init runs, and after it stopped the
    /// worker (none without worker_init).
    init_report: Option<PathBuf>,
}

impl Worker {
    /// Still in worker_init (or stopped by it).
    fn in_init(&self) -> bool {
        self.init_report.as_ref().is_some_and(|p| p.exists())
    }

    /// Why the worker ended with `status`.
    fn failure(&self, n: usize, status: std::process::ExitStatus) -> String {
        if let Some(report) = self.init_report.as_ref() {
            if let Ok(text) = std::fs::read(report) {
                return format!(
                    "local worker {n}: {}",
                    describe_init_report(&String::from_utf8_lossy(&text))
                );
            }
        }
        format!(
            "local worker {n} exited with {status}: {}",
            last_line(&self.log)
        )
    }
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

    fn log_path(&self, spec: &BlockSpec, worker: u32) -> PathBuf {
        self.log_dir
            .join(format!("lattice-{}.{worker}.log", spec.block_id))
    }

    fn init_report_path(&self, spec: &BlockSpec, worker: u32) -> Option<PathBuf> {
        (!spec.worker_init.is_empty()).then(|| {
            self.log_dir.join(format!(
                "lattice-{}.{worker}.worker_init.err",
                spec.block_id
            ))
        })
    }

    /// The script [`SHELL`] runs for worker number `worker` of a block
    /// (`LATTICE_BLOCK_ID` comes from the environment).
    pub fn render_script(&self, spec: &BlockSpec, worker: u32) -> String {
        let mut script = match self.init_report_path(spec, worker) {
            Some(report) => worker_init_script(
                &spec.worker_init,
                InitReport::File(&shell_quote(&report.display().to_string())),
            ),
            None => String::new(),
        };
        script.push_str("exec ");
        script.push_str(&spec.worker.shell_line(&spec.block_id));
        script.push('\n');
        script
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
        let io = |path: &Path, source| ProviderError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut block = LocalBlock::default();
        for n in 0..spec.nodes * spec.workers_per_node {
            let log = self.log_path(spec, n);
            let file = std::fs::File::create(&log).map_err(|e| io(&log, e))?;
            let err = file.try_clone().map_err(|e| io(&log, e))?;
            // Created before the shell starts: the block is pending from now
            // until the script removes it.
            let init_report = self.init_report_path(spec, n);
            if let Some(report) = &init_report {
                std::fs::File::create(report).map_err(|e| io(report, e))?;
            }
            let child = tokio::process::Command::new(SHELL)
                .arg("-c")
                .arg(self.render_script(spec, n))
                .env("LATTICE_BLOCK_ID", &spec.block_id)
                .stdin(Stdio::null())
                .stdout(file)
                .stderr(err)
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| ProviderError::Refused(format!("cannot start {SHELL}: {e}")))?;
            block.workers.push(Worker {
                child,
                log,
                init_report,
            });
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
            let mut started = 0;
            let mut failure = None;
            for (n, worker) in block.workers.iter_mut().enumerate() {
                match worker.child.try_wait() {
                    Ok(None) => {
                        alive += 1;
                        if !worker.in_init() {
                            started += 1;
                        }
                    }
                    Ok(Some(status)) if status.success() => {}
                    Ok(Some(status)) => {
                        failure.get_or_insert_with(|| worker.failure(n, status));
                    }
                    Err(e) => {
                        failure.get_or_insert_with(|| format!("local worker {n}: {e}"));
                    }
                }
            }
            let state = match (block.cancelled, failure) {
                (true, _) => BlockState::Cancelled,
                (false, Some(message)) => BlockState::Failed { message },
                (false, None) if started > 0 => BlockState::Running,
                (false, None) if alive > 0 => BlockState::Pending,
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
    use crate::testing::{fake_bin, spec};

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
        fake_bin(&dir.path().join("bin"), "sleeper", "exec sleep 30");
        let mut sleeper = spec("b1", 1, 2);
        sleeper.worker.program = dir.path().join("bin/sleeper");
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

    /// The case: `source` under /bin/sh used to print `source: not
    /// found` into the log and start the workers anyway.
    #[tokio::test]
    async fn a_failing_worker_init_line_stops_the_block_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let provider = LocalProvider::new(LocalConfig::default(), &dir.path().join("blocks"));
        let venv = dir.path().join("venv/bin");
        std::fs::create_dir_all(&venv).unwrap();
        std::fs::write(
            venv.join("activate"),
            "VIRTUAL_ENV=/venv; export VIRTUAL_ENV\n",
        )
        .unwrap();
        let ran = dir.path().join("ran");
        fake_bin(
            &dir.path().join("bin"),
            "worker",
            &format!("echo worker >> {}", ran.display()),
        );
        let mut spec = spec("b1", 1, 2);
        spec.worker.program = dir.path().join("bin/worker");
        spec.worker_init = vec![
            "echo 'loading the environment' >&2".into(),
            format!("source {}/activate", venv.display()),
            format!("echo past-init >> {}", ran.display()),
        ];
        let job = provider.submit(&spec).await.unwrap();
        let state = wait_for(&provider, &job, |s| s.is_final()).await;
        let message = state.message().unwrap_or_default().to_owned();
        assert!(matches!(state, BlockState::Failed { .. }), "{state:?}");
        // Worker 0 or 1, whichever the poll saw end first.
        assert!(message.starts_with("local worker "), "{message}");
        assert!(
            message.contains(&format!(
                ": worker_init line 2 (`source {}/activate`) failed with exit status 127: ",
                venv.display()
            )),
            "{message}"
        );
        assert!(message.contains("loading the environment\n"), "{message}");
        assert!(message.contains("source: not found"), "{message}");
        assert!(message.contains("write `. FILE` instead"), "{message}");
        assert!(!ran.exists(), "nothing after the failing line ran");
        // The block's log has it too.
        let log = std::fs::read_to_string(dir.path().join("blocks/lattice-b1.0.log")).unwrap();
        assert!(
            log.contains("source: not found") && log.contains("lattice: worker_init line 2"),
            "{log}"
        );

        // Written as POSIX sh, the same lines start the workers, which see
        // what worker_init set.
        spec.block_id = "b2".into();
        spec.workers_per_node = 1;
        spec.worker_init[1] = format!(". {}/activate", venv.display());
        fake_bin(
            &dir.path().join("bin"),
            "worker",
            &format!(
                "echo \"worker VIRTUAL_ENV=$VIRTUAL_ENV\" >> {}; exec sleep 30",
                ran.display()
            ),
        );
        let job = provider.submit(&spec).await.unwrap();
        wait_for(&provider, &job, |s| *s == BlockState::Running).await;
        for _ in 0..200 {
            if std::fs::read_to_string(&ran).is_ok_and(|t| t.contains("worker")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            std::fs::read_to_string(&ran).unwrap(),
            "past-init\nworker VIRTUAL_ENV=/venv\n"
        );
        assert!(
            !dir.path()
                .join("blocks/lattice-b2.0.worker_init.err")
                .exists(),
            "removed once worker_init succeeded"
        );
        let log = std::fs::read_to_string(dir.path().join("blocks/lattice-b2.0.log")).unwrap();
        assert_eq!(
            log, "loading the environment\n",
            "worker_init's stderr is in the log"
        );
        provider.cancel(std::slice::from_ref(&job)).await.unwrap();
    }

    /// Workers still in worker_init are not running yet.
    #[tokio::test]
    async fn a_block_is_pending_while_worker_init_runs() {
        let dir = tempfile::tempdir().unwrap();
        let provider = LocalProvider::new(LocalConfig::default(), dir.path());
        fake_bin(&dir.path().join("bin"), "sleeper", "exec sleep 30");
        let go = dir.path().join("go");
        let mut spec = spec("b1", 1, 1);
        spec.worker.program = dir.path().join("bin/sleeper");
        spec.worker_init = vec![format!(
            "while [ ! -e {} ]; do sleep 0.05; done",
            go.display()
        )];
        let job = provider.submit(&spec).await.unwrap();
        assert_eq!(
            wait_for(&provider, &job, |_| true).await,
            BlockState::Pending
        );
        std::fs::write(&go, "").unwrap();
        wait_for(&provider, &job, |s| *s == BlockState::Running).await;
        provider.cancel(std::slice::from_ref(&job)).await.unwrap();
        assert_eq!(
            wait_for(&provider, &job, |_| true).await,
            BlockState::Cancelled
        );
    }
}
