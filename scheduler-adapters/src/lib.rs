//! Providers that start worker pools ("blocks") and the strategy that scales
//! them between `min_blocks` and `max_blocks`.
//!
//! A *block* is one unit of allocation: a batch job (Slurm, PBS, LSF) of
//! `nodes` nodes, a set of Kubernetes pods, or a group of local processes.
//! Every node of a block runs `workers_per_node` `lattice worker` processes
//! that connect back to the agent's dispatcher.
//!
//! [`Provider`] is the boundary: submit a block, ask the states of many
//! blocks at once, cancel. Each implementation drives its scheduler through
//! the scheduler's real commands (`sbatch`/`squeue`/`scancel`, `qsub`/`qstat`/
//! `qdel`, `bsub`/`bjobs`/`bkill`) or API, run with `tokio::process` so that
//! no async thread blocks; a state is only ever what the scheduler said.
//! [`strategy::Strategy`] is pure: it turns observations and a clock into
//! submit/cancel decisions.
//!
//! Architecture invariant: this crate does not know about tasks, functions or
//! the service. It is told how many blocks to run and reports their states.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

mod batch;
mod command;
pub mod config;
pub mod kubernetes;
pub mod local;
pub mod lsf;
pub mod pbs;
pub mod slurm;
pub mod strategy;

pub use command::CommandError;
pub use config::{build_provider, ProviderConfig, StrategyConfig};

/// The scheduler's identifier of a submitted block (Slurm job id, PBS job id,
/// the block's pod label, a local process group).
pub type JobId = String;

/// What to start: one block of `nodes` nodes, each running `workers_per_node`
/// workers, for at most `walltime`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    /// Unique among the agent's blocks; passed to workers (`--block-id`) and
    /// used in job names (letters, digits, `-`).
    pub block_id: String,
    pub nodes: u32,
    pub workers_per_node: u32,
    pub walltime: Duration,
    pub worker: WorkerCommand,
    /// Shell lines run before the workers start (`module load ...`,
    /// `. venv/bin/activate`); the first that fails stops the block before
    /// any worker starts (see `worker_init_script`).
    pub worker_init: Vec<String>,
}

/// How a worker is started: `PROGRAM worker --dispatcher ADDR --capacity N
/// --block-id ID [--scratch-dir DIR]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The `lattice` binary as seen from the compute nodes.
    pub program: PathBuf,
    /// `HOST:PORT` of the dispatcher, reachable from the compute nodes.
    pub dispatcher: String,
    /// Tasks each worker runs at once.
    pub capacity: u32,
    pub scratch_dir: Option<PathBuf>,
}

impl WorkerCommand {
    /// The worker's argv for one block.
    pub fn argv(&self, block_id: &str) -> Vec<String> {
        let mut argv = vec![
            self.program.display().to_string(),
            "worker".into(),
            "--dispatcher".into(),
            self.dispatcher.clone(),
            "--capacity".into(),
            self.capacity.to_string(),
            "--block-id".into(),
            block_id.to_owned(),
        ];
        if let Some(dir) = &self.scratch_dir {
            argv.push("--scratch-dir".into());
            argv.push(dir.display().to_string());
        }
        argv
    }

    /// [`WorkerCommand::argv`] as one shell-quoted line.
    pub fn shell_line(&self, block_id: &str) -> String {
        self.argv(block_id)
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Quotes a word for POSIX `sh` (unchanged when it needs no quoting): the
/// one quoting rule of the workspace, the one task templates use.
pub use lattice_protocol::template::shell_quote;

/// What the scheduler says about a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockState {
    /// Queued, held, or starting (pods being scheduled, images pulled).
    Pending,
    Running,
    /// Ended on its own without an error (or is no longer known to the
    /// scheduler after it ran).
    Completed,
    /// Refused at submission, or ended with an error; `message` is the
    /// scheduler's own words (`sbatch: error: Invalid account ...`,
    /// `TIMEOUT`, `ImagePullBackOff: ...`).
    Failed {
        message: String,
    },
    Cancelled,
    /// The scheduler gave an answer this provider does not understand, or
    /// no answer at all; `message` says what it said.
    Unknown {
        message: String,
    },
}

impl BlockState {
    /// Pending or running: still holds (or will hold) resources.
    pub fn is_active(&self) -> bool {
        matches!(self, BlockState::Pending | BlockState::Running)
    }

    /// Completed, failed or cancelled: will never run again.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            BlockState::Completed | BlockState::Failed { .. } | BlockState::Cancelled
        )
    }

    /// `pending`, `running`, ...
    pub fn name(&self) -> &'static str {
        match self {
            BlockState::Pending => "pending",
            BlockState::Running => "running",
            BlockState::Completed => "completed",
            BlockState::Failed { .. } => "failed",
            BlockState::Cancelled => "cancelled",
            BlockState::Unknown { .. } => "unknown",
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            BlockState::Failed { message } | BlockState::Unknown { message } => Some(message),
            _ => None,
        }
    }
}

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The scheduler refused the block; the message is its own
    /// (e.g. `sbatch: error: Batch job submission failed: Invalid account ...`).
    #[error("{0}")]
    Refused(String),
    /// A scheduler command could not run or gave output we cannot read.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The Kubernetes API could not be reached or answered an error.
    #[error("kubernetes API: {0}")]
    Api(String),
    /// A provider setting is unusable.
    #[error("{0}")]
    Config(String),
    /// Writing the batch script failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Starts, watches and stops blocks on one kind of scheduler.
///
/// Implementations hold only what is needed to talk to the scheduler (paths,
/// a client, the ids of blocks they cancelled); the agent keeps the block
/// table. Every method may be called concurrently.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// `slurm`, `pbs`, ...
    fn kind(&self) -> &'static str;

    /// Submits one block; returns the scheduler's id for it. A refusal by the
    /// scheduler is [`ProviderError::Refused`] with its message.
    async fn submit(&self, spec: &BlockSpec) -> Result<JobId, ProviderError>;

    /// The states of these jobs, in one scheduler query where the scheduler
    /// allows. Every id given is in the answer.
    async fn status(&self, jobs: &[JobId]) -> Result<HashMap<JobId, BlockState>, ProviderError>;

    /// Cancels these jobs (already finished ones are not an error).
    async fn cancel(&self, jobs: &[JobId]) -> Result<(), ProviderError>;
}

/// Formats a walltime as `[D-]HH:MM:SS` (rounded up to whole seconds).
pub fn format_walltime(walltime: Duration) -> String {
    let total = walltime.as_secs() + u64::from(walltime.subsec_nanos() > 0);
    let (days, rest) = (total / 86_400, total % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    if days > 0 {
        format!("{days}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// Parses `HH:MM:SS`, `MM:SS`, `D-HH:MM:SS` or plain seconds.
pub fn parse_walltime(text: &str) -> Result<Duration, String> {
    let bad = || format!("walltime `{text}`: use HH:MM:SS, D-HH:MM:SS or seconds");
    let (days, clock) = match text.split_once('-') {
        Some((d, rest)) => (d.trim().parse::<u64>().map_err(|_| bad())?, rest),
        None => (0, text),
    };
    let parts: Vec<u64> = clock
        .split(':')
        .map(|p| p.trim().parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let secs = match parts.as_slice() {
        [s] => *s,
        [m, s] if *s < 60 => m * 60 + s,
        [h, m, s] if *m < 60 && *s < 60 => h * 3600 + m * 60 + s,
        _ => return Err(bad()),
    };
    let total = days * 86_400 + secs;
    if total == 0 {
        return Err(format!("walltime `{text}` must be more than zero"));
    }
    Ok(Duration::from_secs(total))
}

/// How a block script's `worker_init` part reports a failure.
#[derive(Clone, Copy, Debug)]
enum InitReport<'a> {
    /// Stderr of the lines goes to this file (a shell word: quoted, may hold
    /// `$VARS`), which the provider reads; it is removed when every line
    /// succeeded, so it exists after the script ended only if worker_init
    /// stopped the block.
    File(&'a str),
    /// Stderr stays where the script's goes (Kubernetes: the container log,
    /// whose tail becomes the pod's termination message).
    Stderr,
}

/// Marks the summary line a failed `worker_init` writes.
const INIT_SUMMARY: &str = "lattice: worker_init line ";
/// Bounds of the stderr tail a block failure message carries.
const INIT_TAIL_LINES: usize = 20;
const INIT_TAIL_BYTES: usize = 2000;

/// The `worker_init` part of a block script (POSIX `sh`; also run by bash).
///
/// Each line runs in the script's own shell (so `module load`, `.
/// venv/bin/activate` and `export` reach the workers) as `{ LINE } || exit`:
/// the first line whose exit status is not 0 ends the script with that
/// status before any worker starts, and so does a line that makes the shell
/// exit (`exit 3`, `.` of a missing file under dash). An EXIT trap then
/// writes `lattice: worker_init line N (`LINE`) failed with exit status S`
/// after the lines' stderr (a line that exits with 0 still stops the block,
/// said as `exited the block script (status 0)`, and the script exits with
/// 1). `set -e` is not used: it would reach into the scripts a line sources,
/// which are rarely written for it. The script's own stderr is kept on file
/// descriptor 9 meanwhile.
fn worker_init_script(worker_init: &[String], report: InitReport<'_>) -> String {
    if worker_init.is_empty() {
        return "# (no worker_init)\n".to_owned();
    }
    let mut s = String::from(
        "# worker_init: the first line that fails stops the block before any worker starts\n",
    );
    s.push_str("exec 9>&2\n");
    match report {
        InitReport::File(path) => {
            s.push_str(&format!("lattice_init_report={path}\n"));
            s.push_str(
                "if { : >>\"$lattice_init_report\"; } 2>/dev/null; then exec 2>\"$lattice_init_report\"; else lattice_init_report=; fi\n",
            );
        }
        InitReport::Stderr => s.push_str("lattice_init_report=\n"),
    }
    s.push_str(concat!(
        "lattice_init_failed() {\n",
        "  lattice_init_status=$1\n",
        "  exec 2>&9 9>&-\n",
        "  lattice_init_summary=\"lattice: worker_init line $lattice_init_step failed with exit status $lattice_init_status; no worker started\"\n",
        "  [ \"$lattice_init_status\" -ne 0 ] || lattice_init_summary=\"lattice: worker_init line $lattice_init_step exited the block script (status 0); no worker started\"\n",
        "  if [ -n \"$lattice_init_report\" ]; then\n",
        "    printf '%s\\n' \"$lattice_init_summary\" >>\"$lattice_init_report\"\n",
        "    cat \"$lattice_init_report\" >&2\n",
        "  else\n",
        "    printf '%s\\n' \"$lattice_init_summary\" >&2\n",
        "  fi\n",
        "  [ \"$lattice_init_status\" -ne 0 ] || lattice_init_status=1\n",
        "  exit \"$lattice_init_status\"\n",
        "}\n",
        "trap 'lattice_init_failed $?' EXIT\n",
    ));
    for (n, line) in worker_init.iter().enumerate() {
        s.push_str(&format!(
            "lattice_init_step={}\n{{\n{line}\n}} || exit\n",
            shell_quote(&format!("{} (`{}`)", n + 1, line_summary(line)))
        ));
    }
    s.push_str("trap - EXIT\nexec 2>&9 9>&-\n");
    if let InitReport::File(_) = report {
        s.push_str(
            "if [ -n \"$lattice_init_report\" ]; then cat \"$lattice_init_report\" >&2; rm -f \"$lattice_init_report\"; fi\n",
        );
    }
    s
}

/// A worker_init line as its failure summary names it: its first line, at
/// most 80 characters.
fn line_summary(line: &str) -> String {
    let first = line.lines().next().unwrap_or("").trim();
    let mut out: String = first.chars().take(80).collect();
    if out.len() < first.len() || line.trim().lines().nth(1).is_some() {
        out.push_str(" ...");
    }
    out
}

/// A worker_init report (the lines' stderr, then the summary the script
/// wrote when a line failed) as one message: the summary, then the last
/// lines of stderr (at most 20 lines and 2,000 bytes).
pub fn describe_init_report(text: &str) -> String {
    let text = text.trim_end();
    let (stderr, summary) = match text.rfind(INIT_SUMMARY) {
        Some(at) if !text[at..].contains('\n') => (
            &text[..at],
            format!("worker_init line {}", &text[at + INIT_SUMMARY.len()..]),
        ),
        _ => (text, "worker_init did not finish".to_owned()),
    };
    let summary = summary
        .strip_suffix("; no worker started")
        .unwrap_or(&summary)
        .to_owned();
    let stderr = stderr.trim();
    let mut out = if stderr.is_empty() {
        format!("{summary} (nothing on stderr)")
    } else {
        format!("{summary}: {}", tail(stderr))
    };
    if stderr.contains("source: not found") {
        out.push_str(
            " (worker_init runs under /bin/sh, which has no `source`: write `. FILE` instead)",
        );
    }
    out
}

/// The end of a text: its last [`INIT_TAIL_LINES`] lines, at most
/// [`INIT_TAIL_BYTES`], `...` in front when something was left out.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let kept = &lines[lines.len().saturating_sub(INIT_TAIL_LINES)..];
    let mut out = kept.join("\n");
    let mut cut = kept.len() < lines.len();
    if out.len() > INIT_TAIL_BYTES {
        let mut start = out.len() - INIT_TAIL_BYTES;
        while !out.is_char_boundary(start) {
            start += 1;
        }
        out = out[start..].to_owned();
        cut = true;
    }
    if cut {
        out.insert_str(0, "... ");
    }
    out
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walltimes_round_trip() {
        assert_eq!(format_walltime(Duration::from_secs(90)), "00:01:30");
        assert_eq!(format_walltime(Duration::from_secs(90_061)), "1-01:01:01");
        assert_eq!(
            parse_walltime("01:00:00").unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            parse_walltime("2-00:00:10").unwrap(),
            Duration::from_secs(172_810)
        );
        assert_eq!(parse_walltime("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_walltime("5:30").unwrap(), Duration::from_secs(330));
        for bad in ["", "1:99", "a", "0", "1:2:3:4"] {
            assert!(parse_walltime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn worker_lines_are_quoted() {
        let command = WorkerCommand {
            program: "/opt/my lattice/bin/lattice".into(),
            dispatcher: "login1:9000".into(),
            capacity: 2,
            scratch_dir: None,
        };
        assert_eq!(
            command.shell_line("b-1"),
            "'/opt/my lattice/bin/lattice' worker --dispatcher login1:9000 --capacity 2 --block-id b-1"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    /// Runs `worker_init_script(lines) + "echo started"` under `shell` with
    /// its report in `dir`: (exit code, stdout, stderr, report if left).
    fn run_init(
        shell: &str,
        dir: &std::path::Path,
        lines: &[&str],
    ) -> (i32, String, String, Option<String>) {
        let report = dir.join("report.err");
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let mut script = worker_init_script(
            &lines,
            InitReport::File(&shell_quote(&report.display().to_string())),
        );
        script.push_str("echo \"started FOO=$FOO\"\n");
        let output = std::process::Command::new(shell)
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let report = std::fs::read_to_string(&report).ok();
        let _ = std::fs::remove_file(dir.join("report.err"));
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
            report,
        )
    }

    /// Every way a line can fail stops the script before the workers, under
    /// dash (`/bin/sh` here) and bash, with the line and its stderr reported.
    #[test]
    fn worker_init_stops_at_the_first_failing_line() {
        let dir = tempfile::tempdir().unwrap();
        for shell in ["/bin/sh", "bash"] {
            // All good: the environment reaches what follows, stderr goes to
            // the log afterwards, no report is left.
            let (code, stdout, stderr, report) = run_init(
                shell,
                dir.path(),
                &["export FOO=1", "echo warning >&2", "cd / # a comment"],
            );
            assert_eq!(
                (code, stdout.as_str()),
                (0, "started FOO=1\n"),
                "{shell}: {stderr}"
            );
            assert_eq!(stderr, "warning\n", "{shell}");
            assert_eq!(report, None, "{shell}");

            let cases: [(&[&str], i32, &str); 6] = [
                // A command that fails: its status.
                (&["export FOO=1", "echo 'module: python/9.9 not found' >&2; false"], 1, "line 2 (`echo 'module: python/9.9 not found' >&2; false`) failed with exit status 1"),
                // A command that is not there (`source` under dash).
                (&["no-such-command-xyz --flag"], 127, "line 1 (`no-such-command-xyz --flag`) failed with exit status 127"),
                // `.` of a missing file: dash exits at once (special built-in).
                (&[". /nonexistent/venv/bin/activate"], if shell == "bash" { 1 } else { 2 }, "line 1 (`. /nonexistent/venv/bin/activate`) failed with exit status"),
                // A line that exits.
                (&["echo bye >&2; exit 3"], 3, "line 1 (`echo bye >&2; exit 3`) failed with exit status 3"),
                // Exiting with 0 still stops the block, as a failure.
                (&["exit 0"], 1, "line 1 (`exit 0`) exited the block script (status 0)"),
                // Only the line's final status counts (as in `sh -c LINE`).
                (&["false; true", "false"], 1, "line 2 (`false`) failed with exit status 1"),
            ];
            for (lines, want_code, want) in cases {
                let (code, stdout, stderr, report) = run_init(shell, dir.path(), lines);
                let report = report.unwrap_or_else(|| panic!("{shell} {lines:?}: no report"));
                assert_eq!(code, want_code, "{shell} {lines:?}: {stderr}");
                assert!(!stdout.contains("started"), "{shell} {lines:?}: {stdout}");
                assert!(
                    report.contains(&format!("lattice: worker_init {want}")),
                    "{shell} {lines:?}: {report}"
                );
                assert_eq!(stderr, report, "{shell} {lines:?}: the log has the report");
                let described = describe_init_report(&report);
                assert!(
                    described.starts_with(&format!("worker_init {want}")),
                    "{described}"
                );
            }
        }
    }

    /// Kubernetes: no report file, the failure is the end of stderr.
    #[test]
    fn worker_init_without_a_report_file_ends_stderr_with_the_failure() {
        let lines = vec![
            "export FOO=1".to_owned(),
            "echo 'no such env' >&2; false".to_owned(),
        ];
        let mut script = worker_init_script(&lines, InitReport::Stderr);
        script.push_str("echo started\n");
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            describe_init_report(&stderr),
            "worker_init line 2 (`echo 'no such env' >&2; false`) failed with exit status 1: no such env"
        );
    }

    #[test]
    fn init_reports_are_described_summary_first_with_a_bounded_tail() {
        assert_eq!(
            describe_init_report("sh: 1: source: not found\nlattice: worker_init line 1 (`source ~/venv/bin/activate`) failed with exit status 127; no worker started\n"),
            "worker_init line 1 (`source ~/venv/bin/activate`) failed with exit status 127: sh: 1: source: not found (worker_init runs under /bin/sh, which has no `source`: write `. FILE` instead)"
        );
        assert_eq!(
            describe_init_report("lattice: worker_init line 2 (`false`) failed with exit status 1; no worker started\n"),
            "worker_init line 2 (`false`) failed with exit status 1 (nothing on stderr)"
        );
        assert_eq!(
            describe_init_report("still loading\n"),
            "worker_init did not finish: still loading"
        );
        let noisy: String = (0..100).map(|i| format!("warning {i}\n")).collect();
        let described = describe_init_report(&format!(
            "{noisy}lattice: worker_init line 1 (`x`) failed with exit status 1; no worker started"
        ));
        assert!(described.contains(": ... warning 80\n"), "{described}");
        assert!(described.ends_with("warning 99"), "{described}");
        let long = "é".repeat(3000);
        let described = describe_init_report(&long);
        assert!(described.len() < 2100, "{}", described.len());
        assert_eq!(
            line_summary(&format!("{}\nsecond", "x".repeat(100))),
            format!("{} ...", "x".repeat(80))
        );
    }
}
