//! `lattice worker`: one worker process, normally started by an agent's
//! provider (or a batch job) with the dispatcher's address.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use lattice_endpoint_agent::{run_worker_until, Runtime, WorkerOptions};

#[derive(Args, Debug)]
pub(crate) struct WorkerArgs {
    /// Address of the agent's dispatcher (`HOST:PORT`).
    #[arg(long, env = "LATTICE_DISPATCHER", value_name = "HOST:PORT")]
    dispatcher: String,

    /// Tasks this worker runs at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    capacity: u32,

    /// The scheduler block that started this worker, if any.
    #[arg(long, env = "LATTICE_BLOCK_ID", value_name = "ID")]
    block_id: Option<String>,

    /// Parent of the per-task scratch directories [default: $TMPDIR/lattice-scratch-UID].
    #[arg(long, env = "LATTICE_SCRATCH_DIR", value_name = "DIR")]
    scratch_dir: Option<PathBuf>,
}

/// Runs until the dispatcher says stop or goes away; Ctrl-C / SIGTERM kill
/// the running tasks and exit.
pub(crate) async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let mut options = WorkerOptions::new(args.dispatcher, args.capacity);
    options.block_id = args.block_id;
    options.runtime = Runtime::new(
        args.scratch_dir
            .unwrap_or_else(Runtime::default_scratch_root),
    );
    if options.block_id.is_some() {
        options.runtime.shell.env_allow.extend(scheduler_env());
    }
    let dispatcher = options.dispatcher.clone();
    run_worker_until(options, crate::commands::service::shutdown_signal())
        .await
        .with_context(|| format!("worker of dispatcher {dispatcher}"))
}

/// Inside a scheduler block, tasks also see the batch job's own variables
/// (`SLURM_JOB_ID`, `PBS_JOBID`, `LSB_JOBID`, ...) and the block id, so a
/// task can tell which allocation it runs in.
fn scheduler_env() -> Vec<String> {
    const PREFIXES: [&str; 4] = ["SLURM_", "PBS_", "LSB_", "LSF_"];
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name == "LATTICE_BLOCK_ID" || PREFIXES.iter().any(|p| name.starts_with(p)))
        .collect()
}
