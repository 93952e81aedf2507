//! The local provider: workers on this machine, started by the agent,
//! replaced when they exit unexpectedly, stopped with it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use lattice_function_runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::worker::{run_worker, WorkerOptions};

/// First delay before replacing a worker that exited; doubles to [`RESTART_MAX`].
const RESTART_INITIAL: Duration = Duration::from_millis(500);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A worker that ran this long resets the restart delay.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// How local workers are started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerLaunch {
    /// Child processes `COMMAND worker --dispatcher ADDR --capacity N
    /// --scratch-dir DIR`, each in its own process group; `COMMAND` is the
    /// running executable unless set (it must be a `lattice` binary).
    Processes { command: Option<PathBuf> },
    /// Worker loops inside the agent process (tests, embedded use); tasks
    /// still run as separate processes.
    InProcess,
}

/// Running local workers.
pub(crate) struct LocalProvider {
    stop: watch::Sender<bool>,
    slots: Vec<JoinHandle<()>>,
}

/// What every local worker gets.
#[derive(Clone, Debug)]
pub(crate) struct LocalWorkers {
    pub(crate) launch: WorkerLaunch,
    pub(crate) count: u32,
    pub(crate) capacity: u32,
    pub(crate) dispatcher: SocketAddr,
    pub(crate) scratch_root: PathBuf,
    /// How long a stopping worker may take before it is killed.
    pub(crate) grace: Duration,
}

impl LocalProvider {
    pub(crate) fn start(workers: LocalWorkers) -> Result<Self, crate::AgentError> {
        let command = match &workers.launch {
            WorkerLaunch::Processes { command: Some(c) } => Some(c.clone()),
            WorkerLaunch::Processes { command: None } => {
                Some(std::env::current_exe().map_err(|e| {
                    crate::AgentError::Config(format!(
                        "cannot find the agent's own executable to start workers: {e}"
                    ))
                })?)
            }
            WorkerLaunch::InProcess => None,
        };
        let (stop, stopped) = watch::channel(false);
        let slots = (0..workers.count)
            .map(|slot| {
                let workers = workers.clone();
                let stopped = stopped.clone();
                let command = command.clone();
                tokio::spawn(async move {
                    match command {
                        Some(command) => supervise_process(slot, command, workers, stopped).await,
                        None => supervise_in_process(slot, workers, stopped).await,
                    }
                })
            })
            .collect();
        Ok(Self { stop, slots })
    }

    /// Stops every worker (each gets the grace period, then is killed) and waits.
    /// Marks the workers as stopping, so that their exits (when the
    /// dispatcher closes their connections) are not taken for crashes.
    pub(crate) fn stopping(&self) {
        let _ = self.stop.send(true);
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for slot in self.slots {
            let _ = slot.await;
        }
    }
}

async fn supervise_process(
    slot: u32,
    command: PathBuf,
    workers: LocalWorkers,
    mut stopped: watch::Receiver<bool>,
) {
    let mut delay = RESTART_INITIAL;
    while !*stopped.borrow() {
        let mut cmd = tokio::process::Command::new(&command);
        cmd.arg("worker")
            .arg("--dispatcher")
            .arg(workers.dispatcher.to_string())
            .arg("--capacity")
            .arg(workers.capacity.to_string())
            .arg("--scratch-dir")
            .arg(&workers.scratch_root)
            .stdin(Stdio::null())
            // Own group: a Ctrl-C at the terminal reaches the agent, which
            // then stops its workers in order.
            .process_group(0)
            .kill_on_drop(true);
        let began = tokio::time::Instant::now();
        match cmd.spawn() {
            Ok(mut child) => {
                tracing::debug!(slot, pid = child.id(), "started a local worker");
                tokio::select! {
                    status = child.wait() => {
                        if *stopped.borrow() {
                            return;
                        }
                        let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                        if began.elapsed() >= HEALTHY_RUN {
                            delay = RESTART_INITIAL;
                        }
                        tracing::warn!(slot, retry_in = ?delay, "local worker exited unexpectedly ({status}); replacing it");
                    }
                    _ = stopped.changed() => {
                        if tokio::time::timeout(workers.grace, child.wait()).await.is_err() {
                            tracing::warn!(slot, "local worker did not stop in {:?}; killing it", workers.grace);
                            let _ = child.kill().await;
                        }
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(slot, command = %command.display(), retry_in = ?delay, "cannot start a local worker: {e}");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => return,
        }
        delay = (delay * 2).min(RESTART_MAX);
    }
}

async fn supervise_in_process(
    slot: u32,
    workers: LocalWorkers,
    mut stopped: watch::Receiver<bool>,
) {
    let mut delay = RESTART_INITIAL;
    while !*stopped.borrow() {
        let mut options = WorkerOptions::new(workers.dispatcher.to_string(), workers.capacity);
        options.runtime = Runtime::new(workers.scratch_root.clone());
        let mut worker = tokio::spawn(run_worker(options));
        tokio::select! {
            ended = &mut worker => {
                if *stopped.borrow() {
                    return;
                }
                tracing::warn!(slot, retry_in = ?delay, "in-process worker ended unexpectedly ({ended:?}); replacing it");
            }
            _ = stopped.changed() => {
                if tokio::time::timeout(workers.grace, &mut worker).await.is_err() {
                    worker.abort();
                }
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => return,
        }
        delay = (delay * 2).min(RESTART_MAX);
    }
}
