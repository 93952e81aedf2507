//! The `shell` kind.
//!
//! An invocation runs `/bin/sh -c COMMAND` in its scratch directory, with
//! stdin closed, an environment reduced to an allow-list, as the leader of
//! its own process group. Walltime, cancellation, the output limit and the
//! end of the shell all kill the whole group with SIGKILL, so no background
//! grandchild outlives its task (a process that calls `setsid` escapes the
//! group: see `docs/runtime.md`). Only the last
//! [`ShellRuntime::output_tail_bytes`] of stdout and of stderr are kept,
//! however much the command writes; [`ShellRuntime::max_output_bytes`]
//! optionally fails the task when it writes more than that in total.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use crate::{Invocation, Outcome};
use chrono::Utc;
use lattice_protocol::compute::{FunctionSpec, TaskResult};
use lattice_protocol::template::render_shell;
use tokio::io::AsyncReadExt;

use crate::output::{
    failed, outcome, output_limit_error, scratch_dir, timeout_error, Tail,
    DEFAULT_OUTPUT_TAIL_BYTES,
};

/// Variables passed from the worker's environment to shell functions by
/// default (when set). The task also gets `LATTICE_TASK_ID` and
/// `LATTICE_SCRATCH_DIR`.
pub const DEFAULT_SHELL_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "TMPDIR"];

/// How long pipes are still read after the shell exited and its process
/// group was killed (a process that left the group may hold them open).
const PIPE_DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Runs shell functions. Holds only configuration: cheap to clone, and each
/// invocation costs a `fork`/`exec` of `/bin/sh` plus a scratch directory.
#[derive(Clone, Debug)]
pub struct ShellRuntime {
    /// Parent of the per-task scratch directories.
    pub scratch_root: PathBuf,
    /// Bytes kept from the end of stdout, and separately of stderr.
    pub output_tail_bytes: usize,
    /// When set, a task that writes more than this many bytes to stdout and
    /// stderr together is killed and fails with `output limit: ...`.
    /// Unset (the default), output beyond the tails is discarded.
    pub max_output_bytes: Option<u64>,
    /// Names of the worker's environment variables a task sees (when set);
    /// nothing else of the worker's environment is passed.
    pub env_allow: Vec<String>,
}

impl ShellRuntime {
    pub fn new(scratch_root: impl Into<PathBuf>) -> Self {
        Self {
            scratch_root: scratch_root.into(),
            output_tail_bytes: DEFAULT_OUTPUT_TAIL_BYTES,
            max_output_bytes: None,
            env_allow: DEFAULT_SHELL_ENV.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The default scratch root: `$TMPDIR/lattice-scratch-<uid>`.
    pub fn default_scratch_root() -> PathBuf {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        std::env::temp_dir().join(format!("lattice-scratch-{uid}"))
    }

    /// Runs `task` to its end. `walltime_secs == 0` means no walltime.
    pub async fn run(&self, task: &Invocation) -> Outcome {
        self.run_cancellable(task, std::future::pending())
            .await
            .unwrap_or_else(|| failed(Utc::now(), None, "cancelled".to_owned()))
    }

    /// Runs `task` until it ends or `cancel` completes; `None` when it was
    /// cancelled (its process group is killed and nothing is reported).
    pub async fn run_cancellable(
        &self,
        task: &Invocation,
        cancel: impl Future<Output = ()>,
    ) -> Option<Outcome> {
        let started_at = Utc::now();
        let FunctionSpec::Shell { command } = &task.spec else {
            return Some(failed(
                started_at,
                None,
                format!(
                    "function kind {} is not run by the shell runtime",
                    task.spec.kind()
                ),
            ));
        };
        let command = match render_shell(command, &task.args) {
            Ok(command) => command,
            Err(e) => {
                return Some(failed(
                    started_at,
                    None,
                    format!("invalid command template: {e}"),
                ))
            }
        };
        let scratch = scratch_dir(&self.scratch_root, task);
        if let Err(e) = tokio::fs::create_dir_all(&scratch).await {
            return Some(failed(
                started_at,
                None,
                format!(
                    "cannot create the scratch directory {}: {e}",
                    scratch.display()
                ),
            ));
        }
        let walltime =
            (task.walltime_secs > 0).then(|| Duration::from_secs(task.walltime_secs.into()));
        let ran = self
            .run_shell(task, &command, &scratch, walltime, cancel)
            .await;
        if let Err(e) = tokio::fs::remove_dir_all(&scratch).await {
            tracing::warn!(task_id = %task.task_id, dir = %scratch.display(), "cannot remove the scratch directory: {e}");
        }
        let ran = match ran {
            Ok(ran) => ran,
            Err(message) => return Some(failed(started_at, None, message)),
        };
        let result = TaskResult {
            stdout: String::from_utf8_lossy(&ran.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&ran.stderr).into_owned(),
            returncode: ran.status.and_then(|s| s.code()),
            value: None,
            exception: None,
        };
        let error = match ran.ending {
            Ending::Cancelled => return None,
            Ending::Timeout => Some(timeout_error(task.walltime_secs)),
            Ending::OutputLimit(limit) => Some(output_limit_error(limit)),
            Ending::Exited => match ran.status {
                Some(status) => exit_error(status),
                None => Some("the command's exit status was lost".to_owned()),
            },
        };
        Some(outcome(started_at, Some(result), error))
    }

    fn command(&self, task: &Invocation, command: &str, scratch: &Path) -> tokio::process::Command {
        let mut child = tokio::process::Command::new("/bin/sh");
        child
            .arg("-c")
            .arg(command)
            .current_dir(scratch)
            .env_clear();
        for name in &self.env_allow {
            if let Some(value) = std::env::var_os(name) {
                child.env(name, value);
            }
        }
        child
            .env("LATTICE_TASK_ID", task.task_id.to_string())
            .env("LATTICE_SCRATCH_DIR", scratch)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        child
    }

    async fn run_shell(
        &self,
        task: &Invocation,
        command: &str,
        scratch: &Path,
        walltime: Option<Duration>,
        cancel: impl Future<Output = ()>,
    ) -> Result<Ran, String> {
        let mut child = self
            .command(task, command, scratch)
            .spawn()
            .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
        let group = ProcessGroup(child.id().map(|pid| pid as libc::pid_t));
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let mut out = Tail::new(self.output_tail_bytes);
        let mut err = Tail::new(self.output_tail_bytes);
        let mut written: u64 = 0;
        let mut out_buf = vec![0u8; 8192];
        let mut err_buf = vec![0u8; 8192];
        let (mut out_open, mut err_open) = (true, true);
        let mut status: Option<ExitStatus> = None;
        let mut ending = Ending::Exited;
        let mut killed = false;

        let walltime_expired = async {
            match walltime {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(walltime_expired);
        tokio::pin!(cancel);
        let drain_deadline = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(drain_deadline);

        loop {
            if status.is_some() && !out_open && !err_open {
                break;
            }
            if let Some(limit) = self.max_output_bytes {
                if written > limit && !killed {
                    killed = true;
                    ending = Ending::OutputLimit(limit);
                    group.kill();
                }
            }
            tokio::select! {
                read = stdout.read(&mut out_buf), if out_open => match read {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => {
                        written += n as u64;
                        out.push(&out_buf[..n]);
                    }
                },
                read = stderr.read(&mut err_buf), if err_open => match read {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => {
                        written += n as u64;
                        err.push(&err_buf[..n]);
                    }
                },
                waited = child.wait(), if status.is_none() => {
                    let exit = waited.map_err(|e| format!("cannot wait for /bin/sh: {e}"))?;
                    status = Some(exit);
                    // Leftover background processes of the task die with it.
                    group.kill();
                    drain_deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + PIPE_DRAIN_GRACE);
                }
                () = &mut walltime_expired, if !killed && status.is_none() => {
                    killed = true;
                    ending = Ending::Timeout;
                    group.kill();
                }
                () = &mut cancel, if !killed && status.is_none() => {
                    killed = true;
                    ending = Ending::Cancelled;
                    group.kill();
                }
                () = &mut drain_deadline, if status.is_some() => {
                    tracing::debug!(task_id = %task.task_id, "a process that left the task's group still holds its output open");
                    break;
                }
            }
        }
        Ok(Ran {
            status,
            ending,
            stdout: out.into_vec(),
            stderr: err.into_vec(),
        })
    }
}

/// How the shell ended.
enum Ending {
    Exited,
    Timeout,
    OutputLimit(u64),
    Cancelled,
}

struct Ran {
    status: Option<ExitStatus>,
    ending: Ending,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// The process group led by the shell; killed again when dropped, so even
/// an abandoned run (its future dropped) leaves no process behind.
struct ProcessGroup(Option<libc::pid_t>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

impl ProcessGroup {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            // SAFETY: killpg only sends a signal; an absent group is ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

fn exit_error(status: ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => None,
        (Some(code), _) => Some(format!("command exited with status {code}")),
        (None, Some(signal)) => Some(format!("killed by signal {signal}")),
        (None, None) => Some("command ended without an exit status".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::alive;
    use crate::Status;
    use serde_json::json;

    fn task(command: &str, args: &[(&str, serde_json::Value)], walltime_secs: u32) -> Invocation {
        crate::testing::task(
            FunctionSpec::Shell {
                command: command.to_owned(),
            },
            args,
            walltime_secs,
        )
    }

    fn runtime() -> (tempfile::TempDir, ShellRuntime) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = ShellRuntime::new(dir.path());
        (dir, runtime)
    }

    #[tokio::test]
    async fn hostile_arguments_are_literal_data() {
        let (dir, runtime) = runtime();
        let hostile = [
            "; rm -rf ~",
            "$(id)",
            "`id`",
            "a\nb; echo pwned",
            "it's \"q\" \\ $HOME *",
        ];
        for value in hostile {
            let t = task("printf '%s' {v}", &[("v", json!(value))], 10);
            let outcome = runtime.run(&t).await;
            assert_eq!(outcome.status, Status::Success, "{outcome:?}");
            let result = outcome.result.unwrap();
            assert_eq!(result.stdout, value);
            assert_eq!(result.returncode, Some(0));
        }
        // Scratch directories are removed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn runs_in_its_scratch_dir_with_stdin_closed() {
        let (dir, runtime) = runtime();
        let t = task("pwd; cat; echo err >&2", &[], 10);
        let outcome = runtime.run(&t).await;
        let result = outcome.result.unwrap();
        let expected = dir.path().join(t.task_id.to_string());
        assert_eq!(
            result.stdout.trim_end(),
            expected
                .canonicalize()
                .unwrap_or(expected)
                .to_str()
                .unwrap()
        );
        assert_eq!(result.stderr, "err\n");
        assert!(outcome.started_at <= outcome.finished_at);
    }

    #[tokio::test]
    async fn environment_is_only_the_allow_list() {
        let (_dir, mut runtime) = runtime();
        runtime.env_allow = vec!["PATH".into(), "LATTICE_TEST_ALLOWED_NOT_SET".into()];
        let t = task("env | cut -d= -f1 | sort", &[], 10);
        let outcome = runtime.run(&t).await;
        assert_eq!(outcome.status, Status::Success, "{outcome:?}");
        let names: Vec<String> = outcome
            .result
            .unwrap()
            .stdout
            .lines()
            .map(str::to_owned)
            .collect();
        // `sh` itself adds PWD (and some add SHLVL / `_`); nothing of the
        // worker's environment beyond the allow-list may appear.
        let from_worker: Vec<&String> = names
            .iter()
            .filter(|n| !["PWD", "SHLVL", "_", "OLDPWD"].contains(&n.as_str()))
            .collect();
        let expected_path = std::env::var_os("PATH").is_some();
        let mut expected = vec!["LATTICE_SCRATCH_DIR", "LATTICE_TASK_ID"];
        if expected_path {
            expected.push("PATH");
        }
        assert_eq!(from_worker, expected, "{names:?}");
    }

    #[tokio::test]
    async fn nonzero_exit_fails_with_status() {
        let (_dir, runtime) = runtime();
        let outcome = runtime.run(&task("echo out; exit 3", &[], 10)).await;
        assert_eq!(outcome.status, Status::Failed);
        assert_eq!(
            outcome.error.as_deref(),
            Some("command exited with status 3")
        );
        let result = outcome.result.unwrap();
        assert_eq!(result.returncode, Some(3));
        assert_eq!(result.stdout, "out\n");
    }

    #[tokio::test]
    async fn killed_by_signal_is_reported() {
        let (_dir, runtime) = runtime();
        let outcome = runtime.run(&task("kill -TERM $$", &[], 10)).await;
        assert_eq!(outcome.error.as_deref(), Some("killed by signal 15"));
        assert_eq!(outcome.result.unwrap().returncode, None);
    }

    const MEGABYTE_THEN_END: &str = "i=0; while [ $i -lt 2000 ]; do printf '%0500d' $i; i=$((i+1)); done; printf END; printf E >&2";

    #[tokio::test]
    async fn output_keeps_only_the_tail() {
        let (_dir, mut runtime) = runtime();
        runtime.output_tail_bytes = 1000;
        // ~1 MB of output followed by a marker.
        let outcome = runtime.run(&task(MEGABYTE_THEN_END, &[], 30)).await;
        assert_eq!(outcome.status, Status::Success);
        let result = outcome.result.unwrap();
        assert_eq!(result.stdout.len(), 1000);
        assert!(
            result.stdout.ends_with("1999END"),
            "{}",
            &result.stdout[900..]
        );
        assert_eq!(result.stderr, "E");
    }

    #[tokio::test]
    async fn hard_output_cap_fails_the_task() {
        let (_dir, mut runtime) = runtime();
        runtime.output_tail_bytes = 1000;
        runtime.max_output_bytes = Some(100_000);
        let outcome = runtime.run(&task(MEGABYTE_THEN_END, &[], 30)).await;
        assert_eq!(outcome.status, Status::Failed);
        let error = outcome.error.unwrap();
        assert!(error.starts_with("output limit: "), "{error}");
        assert!(error.contains("100000 bytes"), "{error}");
        // Killed before the end: the marker was never written.
        let result = outcome.result.unwrap();
        assert!(!result.stdout.ends_with("END"));
        assert_eq!(result.returncode, None);
    }

    #[tokio::test]
    async fn walltime_kills_the_whole_process_group() {
        let (_dir, runtime) = runtime();
        let t = task("sleep 30 & echo $!; sleep 30", &[], 1);
        let outcome = runtime.run(&t).await;
        assert_eq!(outcome.status, Status::Failed);
        assert_eq!(
            outcome.error.as_deref(),
            Some("timeout: exceeded walltime of 1 s")
        );
        let grandchild: i32 = outcome.result.unwrap().stdout.trim().parse().unwrap();
        assert!(
            gone_soon(&[grandchild]).await,
            "grandchild {grandchild} survived the walltime kill"
        );
    }

    /// Waits (bounded, as a hang guard) until none of `pids` is alive.
    async fn gone_soon(pids: &[i32]) -> bool {
        for _ in 0..100 {
            if !pids.iter().any(|&pid| alive(pid)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn many_background_children_and_grandchildren_die_at_walltime() {
        let (_dir, runtime) = runtime();
        // 40 children, each starting a grandchild of its own, all sleeping.
        let t = task(
            "for i in $(seq 1 40); do (sleep 60 & echo $!; sleep 60) & echo $!; done; sleep 60",
            &[],
            3,
        );
        let outcome = runtime.run(&t).await;
        assert_eq!(outcome.status, Status::Failed);
        assert!(outcome.error.unwrap().starts_with("timeout: "));
        let pids: Vec<i32> = outcome
            .result
            .unwrap()
            .stdout
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(pids.len(), 80, "every child and grandchild printed its pid");
        assert!(gone_soon(&pids).await, "some of {pids:?} survived");
    }

    #[tokio::test]
    async fn background_leftovers_die_when_the_shell_exits() {
        let (_dir, runtime) = runtime();
        let outcome = runtime.run(&task("sleep 30 & echo $!", &[], 0)).await;
        assert_eq!(outcome.status, Status::Success);
        let grandchild: i32 = outcome.result.unwrap().stdout.trim().parse().unwrap();
        assert!(gone_soon(&[grandchild]).await);
    }

    #[tokio::test]
    async fn cancel_kills_and_reports_nothing() {
        let (_dir, runtime) = runtime();
        let outcome = runtime
            .run_cancellable(
                &task("sleep 30", &[], 0),
                tokio::time::sleep(Duration::from_millis(200)),
            )
            .await;
        assert!(outcome.is_none());
    }

    #[tokio::test]
    async fn template_errors_and_other_kinds_fail_cleanly() {
        let (_dir, runtime) = runtime();
        let outcome = runtime.run(&task("echo {missing}", &[], 10)).await;
        assert_eq!(outcome.status, Status::Failed);
        assert_eq!(
            outcome.error.as_deref(),
            Some("invalid command template: missing argument `missing`")
        );
        let outcome = runtime.run(&task("echo {", &[], 10)).await;
        assert!(outcome
            .error
            .unwrap()
            .starts_with("invalid command template: unclosed"));

        let mut wasm = task("", &[], 10);
        wasm.spec = FunctionSpec::Wasm {
            module: String::new(),
        };
        let outcome = runtime.run(&wasm).await;
        assert_eq!(
            outcome.error.as_deref(),
            Some("function kind wasm is not run by the shell runtime")
        );
    }
}
