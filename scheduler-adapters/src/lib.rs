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
    /// `conda activate ...`).
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

/// Quotes a word for POSIX `sh` (unchanged when it needs no quoting).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

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

/// The worker-init lines followed by a command, as script lines.
fn init_lines(worker_init: &[String]) -> String {
    if worker_init.is_empty() {
        return "# (no worker_init)\n".to_owned();
    }
    let mut out = String::new();
    for line in worker_init {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Script lines that start `workers_per_node` workers on every node of the
/// block and wait for them: directly when the block has one node, else
/// through `launcher`, a command prefix that runs its argument once on every
/// node (`{nodes}` is replaced by the node count).
fn node_launch(spec: &BlockSpec, launcher: Option<&str>) -> Result<String, ProviderError> {
    let per_node = format!(
        "for i in $(seq 1 {}); do {} & done; wait",
        spec.workers_per_node,
        spec.worker.shell_line(&spec.block_id)
    );
    let mut out = format!(
        "# {} worker(s) on each of {} node(s)\n",
        spec.workers_per_node, spec.nodes
    );
    match launcher {
        _ if spec.nodes == 1 => out.push_str(&per_node),
        Some(launcher) => {
            out.push_str(&launcher.replace("{nodes}", &spec.nodes.to_string()));
            out.push_str(" /bin/sh -c ");
            out.push_str(&shell_quote(&per_node));
        }
        None => {
            return Err(ProviderError::Config(format!(
                "blocks of {} nodes need `launcher` in [provider]: a command that runs its argument once on every node of the job",
                spec.nodes
            )))
        }
    }
    out.push('\n');
    Ok(out)
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
}
