//! `lattice worker`: one worker process, normally started by an agent's
//! provider (or a batch job) with the dispatcher's address.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use lattice_endpoint_agent::{run_worker_until, ShellRuntime, WorkerOptions};

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
    options.runtime = ShellRuntime::new(
        args.scratch_dir
            .unwrap_or_else(ShellRuntime::default_scratch_root),
    );
    let dispatcher = options.dispatcher.clone();
    run_worker_until(options, crate::commands::service::shutdown_signal())
        .await
        .with_context(|| format!("worker of dispatcher {dispatcher}"))
}
