//! Runs ONE function invocation: a shell command today; Wasm, Python and
//! container kinds as the runtime issue lands.
//!
//! It owns building the command from a template and arguments (values are
//! shell-quoted, never interpolated raw), the per-task scratch directory,
//! limits (walltime, output caps) and captured output. It must not know about
//! queues, agents, the service or other invocations.
//!
//! A shell invocation runs `/bin/sh -c COMMAND` in `SCRATCH_ROOT/<task id>`
//! (created before, removed after), with stdin closed, as the leader of its
//! own process group. Walltime, cancellation and the end of the shell all
//! kill the whole group with SIGKILL, so no background grandchild outlives its
//! task. Only the last [`ShellRuntime::output_tail_bytes`] of stdout and
//! stderr are kept, however much the command writes.

pub mod python;

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use chrono::Utc;
use lattice_protocol::compute::{FunctionSpec, TaskResult};
use lattice_protocol::frames::{OutcomeStatus, TaskAssignment, TaskOutcome};
use lattice_protocol::template::render_shell;
use tokio::io::AsyncReadExt;

/// Bytes of stdout and of stderr kept by default (the tail).
pub const DEFAULT_OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// How long pipes are still read after the shell exited and its process
/// group was killed (a process that left the group may hold them open).
const PIPE_DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Runs shell functions.
#[derive(Clone, Debug)]
pub struct ShellRuntime {
    /// Parent of the per-task scratch directories.
    pub scratch_root: PathBuf,
    /// Bytes kept from the end of stdout, and separately of stderr.
    pub output_tail_bytes: usize,
}

impl ShellRuntime {
    pub fn new(scratch_root: impl Into<PathBuf>) -> Self {
        Self {
            scratch_root: scratch_root.into(),
            output_tail_bytes: DEFAULT_OUTPUT_TAIL_BYTES,
        }
    }

    /// The default scratch root: `$TMPDIR/lattice-scratch-<uid>`.
    pub fn default_scratch_root() -> PathBuf {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        std::env::temp_dir().join(format!("lattice-scratch-{uid}"))
    }

    /// Runs `task` to its end. `walltime_secs == 0` means no walltime.
    pub async fn run(&self, task: &TaskAssignment) -> TaskOutcome {
        self.run_cancellable(task, std::future::pending())
            .await
            .unwrap_or_else(|| unreachable_outcome(task))
    }

    /// Runs `task` until it ends or `cancel` completes; `None` when it was
    /// cancelled (its process group is killed and nothing is reported).
    pub async fn run_cancellable(
        &self,
        task: &TaskAssignment,
        cancel: impl Future<Output = ()>,
    ) -> Option<TaskOutcome> {
        let started_at = Utc::now();
        let command = match &task.spec {
            FunctionSpec::Shell { command } => command,
            other => {
                return Some(failed(
                    task,
                    started_at,
                    None,
                    format!(
                        "function kind {} is not supported by this worker yet",
                        other.kind()
                    ),
                ))
            }
        };
        let command = match render_shell(command, &task.args) {
            Ok(command) => command,
            Err(e) => {
                return Some(failed(
                    task,
                    started_at,
                    None,
                    format!("invalid command template: {e}"),
                ))
            }
        };
        let scratch = self.scratch_root.join(task.task_id.to_string());
        if let Err(e) = tokio::fs::create_dir_all(&scratch).await {
            return Some(failed(
                task,
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
            Err(message) => return Some(failed(task, started_at, None, message)),
        };
        let result = TaskResult {
            stdout: String::from_utf8_lossy(&ran.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&ran.stderr).into_owned(),
            returncode: ran.status.and_then(|s| s.code()),
            value: None,
        };
        let error = match ran.ending {
            Ending::Cancelled => return None,
            Ending::Timeout => Some(format!(
                "timeout: exceeded walltime of {} s",
                task.walltime_secs
            )),
            Ending::Exited => match ran.status {
                Some(status) => exit_error(status),
                None => Some("the command's exit status was lost".to_owned()),
            },
        };
        Some(TaskOutcome {
            task_id: task.task_id,
            attempt: task.attempt,
            status: if error.is_none() {
                OutcomeStatus::Success
            } else {
                OutcomeStatus::Failed
            },
            result: Some(result),
            error,
            worker: None,
            started_at: Some(started_at),
            finished_at: Utc::now(),
        })
    }

    async fn run_shell(
        &self,
        task: &TaskAssignment,
        command: &str,
        scratch: &Path,
        walltime: Option<Duration>,
        cancel: impl Future<Output = ()>,
    ) -> Result<Ran, String> {
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .current_dir(scratch)
            .env("LATTICE_TASK_ID", task.task_id.to_string())
            .env("LATTICE_SCRATCH_DIR", scratch)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
        let group = ProcessGroup(child.id().map(|pid| pid as libc::pid_t));
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let mut out = Tail::new(self.output_tail_bytes);
        let mut err = Tail::new(self.output_tail_bytes);
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
            tokio::select! {
                read = stdout.read(&mut out_buf), if out_open => match read {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => out.push(&out_buf[..n]),
                },
                read = stderr.read(&mut err_buf), if err_open => match read {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => err.push(&err_buf[..n]),
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

fn unreachable_outcome(task: &TaskAssignment) -> TaskOutcome {
    failed(task, Utc::now(), None, "cancelled".to_owned())
}

/// How the shell ended.
enum Ending {
    Exited,
    Timeout,
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

fn failed(
    task: &TaskAssignment,
    started_at: chrono::DateTime<Utc>,
    result: Option<TaskResult>,
    error: String,
) -> TaskOutcome {
    TaskOutcome {
        task_id: task.task_id,
        attempt: task.attempt,
        status: OutcomeStatus::Failed,
        result,
        error: Some(error),
        worker: None,
        started_at: Some(started_at),
        finished_at: Utc::now(),
    }
}

/// The last `cap` bytes of a stream.
struct Tail {
    cap: usize,
    bytes: VecDeque<u8>,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            bytes: VecDeque::with_capacity(cap.min(8192)),
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let chunk = &chunk[chunk.len().saturating_sub(self.cap)..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.cap);
        self.bytes.drain(..overflow);
        self.bytes.extend(chunk);
    }

    fn into_vec(self) -> Vec<u8> {
        self.bytes.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_protocol::compute::TaskArgs;
    use lattice_protocol::{FunctionId, TaskId};
    use serde_json::json;

    fn task(
        command: &str,
        args: &[(&str, serde_json::Value)],
        walltime_secs: u32,
    ) -> TaskAssignment {
        TaskAssignment {
            task_id: TaskId::new(),
            function_id: FunctionId::new(),
            spec: FunctionSpec::Shell {
                command: command.to_owned(),
            },
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<TaskArgs>(),
            walltime_secs,
            attempt: 1,
            max_retries: 0,
        }
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
            assert_eq!(outcome.status, OutcomeStatus::Success, "{outcome:?}");
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
        assert!(outcome.started_at.is_some());
    }

    #[tokio::test]
    async fn nonzero_exit_fails_with_status() {
        let (_dir, runtime) = runtime();
        let outcome = runtime.run(&task("echo out; exit 3", &[], 10)).await;
        assert_eq!(outcome.status, OutcomeStatus::Failed);
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

    #[tokio::test]
    async fn output_keeps_only_the_tail() {
        let (_dir, mut runtime) = runtime();
        runtime.output_tail_bytes = 1000;
        // ~1 MB of output followed by a marker.
        let t = task(
            "i=0; while [ $i -lt 2000 ]; do printf '%0500d' $i; i=$((i+1)); done; printf END; printf E >&2",
            &[],
            30,
        );
        let outcome = runtime.run(&t).await;
        assert_eq!(outcome.status, OutcomeStatus::Success);
        let result = outcome.result.unwrap();
        assert_eq!(result.stdout.len(), 1000);
        assert!(
            result.stdout.ends_with("1999END"),
            "{}",
            &result.stdout[900..]
        );
        assert_eq!(result.stderr, "E");
    }

    #[test]
    fn tail_keeps_last_bytes_across_chunks() {
        let mut tail = Tail::new(5);
        tail.push(b"abc");
        tail.push(b"defg");
        assert_eq!(tail.into_vec(), b"cdefg");
        let mut tail = Tail::new(3);
        tail.push(b"0123456789");
        assert_eq!(tail.into_vec(), b"789");
    }

    fn alive(pid: i32) -> bool {
        // A zombie waiting for a reaper counts as dead.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn walltime_kills_the_whole_process_group() {
        let (_dir, runtime) = runtime();
        let t = task("sleep 30 & echo $!; sleep 30", &[], 1);
        let begin = std::time::Instant::now();
        let outcome = runtime.run(&t).await;
        assert!(begin.elapsed() < Duration::from_secs(10));
        assert_eq!(outcome.status, OutcomeStatus::Failed);
        assert_eq!(
            outcome.error.as_deref(),
            Some("timeout: exceeded walltime of 1 s")
        );
        let grandchild: i32 = outcome.result.unwrap().stdout.trim().parse().unwrap();
        let mut gone = false;
        for _ in 0..50 {
            if !alive(grandchild) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "grandchild {grandchild} survived the walltime kill");
    }

    #[tokio::test]
    async fn background_leftovers_die_when_the_shell_exits() {
        let (_dir, runtime) = runtime();
        let begin = std::time::Instant::now();
        let outcome = runtime.run(&task("sleep 30 & echo $!", &[], 0)).await;
        assert!(begin.elapsed() < Duration::from_secs(10));
        assert_eq!(outcome.status, OutcomeStatus::Success);
        let grandchild: i32 = outcome.result.unwrap().stdout.trim().parse().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!alive(grandchild));
    }

    #[tokio::test]
    async fn cancel_kills_and_reports_nothing() {
        let (_dir, runtime) = runtime();
        let begin = std::time::Instant::now();
        let outcome = runtime
            .run_cancellable(
                &task("sleep 30", &[], 0),
                tokio::time::sleep(Duration::from_millis(200)),
            )
            .await;
        assert!(outcome.is_none());
        assert!(begin.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn template_errors_and_other_kinds_fail_cleanly() {
        let (_dir, runtime) = runtime();
        let outcome = runtime.run(&task("echo {missing}", &[], 10)).await;
        assert_eq!(outcome.status, OutcomeStatus::Failed);
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
            Some("function kind wasm is not supported by this worker yet")
        );
    }
}
