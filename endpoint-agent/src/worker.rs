//! The worker loop (`lattice worker`): connect to a dispatcher, announce
//! capacity, run what it sends with the runtime, report back.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use lattice_function_runtime::{Invocation, Outcome, Runtime, Status};
use lattice_protocol::frames::{
    DispatcherFrame, OutcomeStatus, TaskAssignment, TaskOutcome, WorkerFrame,
};
use lattice_protocol::{TaskId, WorkerId};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

use crate::wire::{read_frame, write_frame, WireError};

/// Error text of the outcome a worker reports for a cancelled task; the
/// dispatcher drops it (cancelled tasks report nothing to the service).
pub(crate) const CANCELLED: &str = "cancelled";

/// How a worker connects and runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// `HOST:PORT` of the agent's dispatcher.
    pub dispatcher: String,
    /// Tasks run at once.
    pub capacity: u32,
    pub worker_id: WorkerId,
    /// The scheduler block that started this worker, if any.
    pub block_id: Option<String>,
    /// Runs the tasks, every kind; built once and shared by all of them.
    pub runtime: Runtime,
}

impl WorkerOptions {
    pub fn new(dispatcher: impl Into<String>, capacity: u32) -> Self {
        Self {
            dispatcher: dispatcher.into(),
            capacity,
            worker_id: WorkerId::new(),
            block_id: None,
            runtime: Runtime::new(Runtime::default_scratch_root()),
        }
    }
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot connect to the dispatcher at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("capacity must be at least 1")]
    NoCapacity,
    #[error("worker channel: {0}")]
    Channel(#[from] WireError),
}

/// Runs until the dispatcher sends `Shutdown` (running tasks finish first)
/// or closes the connection (running tasks are killed: nobody is left to
/// hear their results, and the service delivers them again).
pub async fn run_worker(options: WorkerOptions) -> Result<(), WorkerError> {
    run_worker_until(options, std::future::pending()).await
}

/// [`run_worker`], also stopping when `shutdown` completes (SIGTERM from a
/// batch scheduler): running tasks are killed, then the worker exits.
pub async fn run_worker_until(
    options: WorkerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    if options.capacity == 0 {
        return Err(WorkerError::NoCapacity);
    }
    let stream = TcpStream::connect(&options.dispatcher)
        .await
        .map_err(|source| WorkerError::Connect {
            address: options.dispatcher.clone(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let (read_half, mut write_half) = stream.into_split();
    let hostname = crate::hostname();
    let pid = std::process::id();
    let name = format!("{hostname}:{pid}");

    write_frame(
        &mut write_half,
        &WorkerFrame::Hello {
            worker_id: options.worker_id,
            capacity: options.capacity,
            hostname: hostname.clone(),
            pid,
            block_id: options.block_id.clone(),
        },
    )
    .await?;
    tracing::info!(worker_id = %options.worker_id, dispatcher = %options.dispatcher, capacity = options.capacity, "worker connected");

    // Reading and writing run in their own tasks: frame reads are not
    // cancel-safe, so they never sit in a select.
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<WorkerFrame>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            write_frame(&mut write_half, &frame).await?;
        }
        let _ = write_half.shutdown().await;
        Ok::<(), WireError>(())
    });
    let (in_tx, mut in_rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut reader = BufReader::new(read_half);
        loop {
            let frame = read_frame::<DispatcherFrame>(&mut reader).await;
            let end = !matches!(frame, Ok(Some(_)));
            if in_tx.send(frame).is_err() || end {
                return;
            }
        }
    });

    let mut runtime = options.runtime.clone();
    // Every task slot may run a Wasm module at once.
    runtime.wasm.max_instances = runtime.wasm.max_instances.max(options.capacity);
    let runtime = Arc::new(runtime);
    let slots = Arc::new(Semaphore::new(options.capacity as usize));
    let mut cancels: HashMap<TaskId, oneshot::Sender<()>> = HashMap::new();
    let mut tasks: JoinSet<TaskId> = JoinSet::new();
    let mut draining = false;
    let mut connected = true;
    let mut result = Ok(());
    tokio::pin!(shutdown);
    let mut shutdown_done = false;

    loop {
        if draining && tasks.is_empty() {
            break;
        }
        tokio::select! {
            frame = in_rx.recv(), if connected => match frame {
                Some(Ok(Some(DispatcherFrame::Run { task }))) => {
                    if draining || cancels.contains_key(&task.task_id) {
                        tracing::warn!(task_id = %task.task_id, "ignoring a task sent while shutting down or already running");
                        continue;
                    }
                    let (cancel_tx, cancel_rx) = oneshot::channel();
                    cancels.insert(task.task_id, cancel_tx);
                    tasks.spawn(run_one(
                        task,
                        runtime.clone(),
                        slots.clone(),
                        cancel_rx,
                        out_tx.clone(),
                        name.clone(),
                    ));
                }
                Some(Ok(Some(DispatcherFrame::Cancel { task_id }))) => {
                    if let Some(cancel) = cancels.remove(&task_id) {
                        let _ = cancel.send(());
                    }
                }
                Some(Ok(Some(DispatcherFrame::Shutdown))) => {
                    tracing::info!(running = tasks.len(), "dispatcher asked to shut down; finishing running tasks");
                    draining = true;
                }
                Some(Ok(None)) | Some(Err(_)) | None => {
                    if let Some(Err(e)) = frame {
                        tracing::warn!("worker channel failed: {e}");
                        result = Err(WorkerError::Channel(e));
                    } else {
                        tracing::info!("dispatcher closed the connection");
                    }
                    connected = false;
                    draining = true;
                    for (_, cancel) in cancels.drain() {
                        let _ = cancel.send(());
                    }
                }
            },
            Some(joined) = tasks.join_next() => {
                if let Ok(task_id) = joined {
                    cancels.remove(&task_id);
                }
            }
            () = &mut shutdown, if !shutdown_done => {
                tracing::info!(running = tasks.len(), "worker stopping: killing running tasks");
                shutdown_done = true;
                draining = true;
                for (_, cancel) in cancels.drain() {
                    let _ = cancel.send(());
                }
            }
        }
    }
    reader.abort();
    drop(out_tx);
    match writer.await {
        Ok(Err(e)) if result.is_ok() && connected => result = Err(e.into()),
        _ => {}
    }
    tracing::info!(worker_id = %options.worker_id, "worker stopped");
    result
}

async fn run_one(
    task: TaskAssignment,
    runtime: Arc<Runtime>,
    slots: Arc<Semaphore>,
    mut cancel: oneshot::Receiver<()>,
    out: mpsc::UnboundedSender<WorkerFrame>,
    worker: String,
) -> TaskId {
    let (invocation, attempt) = invocation_of(task);
    let task_id = invocation.task_id;
    let _permit = slots.acquire_owned().await;
    let outcome = if cancel.try_recv().is_ok() {
        None
    } else {
        let _ = out.send(WorkerFrame::Started {
            task_id,
            at: Utc::now(),
        });
        let cancelled = async move {
            // A dropped sender is not a cancel.
            if cancel.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        runtime.run_cancellable(&invocation, cancelled).await
    };
    let outcome = match outcome {
        Some(outcome) => outcome_frame(task_id, attempt, worker, outcome),
        None => TaskOutcome {
            task_id,
            attempt,
            status: OutcomeStatus::Failed,
            result: None,
            error: Some(CANCELLED.to_owned()),
            worker: Some(worker),
            started_at: None,
            finished_at: Utc::now(),
        },
    };
    let _ = out.send(WorkerFrame::Result { outcome });
    task_id
}

/// What the runtime is asked to run for a task frame, and the attempt its
/// outcome reports. Every field of the frame is named here, so a new one
/// does not compile until it is given to the runtime or left out on purpose.
fn invocation_of(task: TaskAssignment) -> (Invocation, u32) {
    let TaskAssignment {
        task_id,
        function_id,
        spec,
        args,
        walltime_secs,
        attempt,
        // Retrying is the service's business.
        max_retries: _,
        // A multi-user agent used them to pick the user's own agent, whose
        // workers (this one) already run as that user.
        submitter: _,
        user_config: _,
    } = task;
    let invocation = Invocation {
        task_id,
        function_id,
        spec,
        args,
        walltime_secs,
    };
    (invocation, attempt)
}

/// The result frame of a run, from every field of the runtime's outcome.
fn outcome_frame(task_id: TaskId, attempt: u32, worker: String, outcome: Outcome) -> TaskOutcome {
    let Outcome {
        status,
        result,
        error,
        started_at,
        finished_at,
    } = outcome;
    TaskOutcome {
        task_id,
        attempt,
        status: match status {
            Status::Success => OutcomeStatus::Success,
            Status::Failed => OutcomeStatus::Failed,
        },
        result,
        error,
        worker: Some(worker),
        started_at: Some(started_at),
        finished_at,
    }
}

#[cfg(test)]
mod tests {
    use lattice_protocol::compute::{FunctionSpec, TaskResult};
    use lattice_protocol::FunctionId;

    use super::*;

    #[test]
    fn frames_convert_to_and_from_the_runtime_field_by_field() {
        let task = TaskAssignment {
            task_id: TaskId::new(),
            function_id: FunctionId::new(),
            spec: FunctionSpec::Shell {
                command: "echo {x}".into(),
            },
            args: [("x".to_owned(), serde_json::json!(1))].into(),
            walltime_secs: 42,
            attempt: 3,
            max_retries: 5,
            submitter: None,
            user_config: Some(serde_json::json!({"account": "p1"})),
        };
        let (invocation, attempt) = invocation_of(task.clone());
        assert_eq!(attempt, 3);
        assert_eq!(
            invocation,
            Invocation {
                task_id: task.task_id,
                function_id: task.function_id,
                spec: task.spec,
                args: task.args,
                walltime_secs: 42,
            }
        );

        let started_at = Utc::now();
        let result = TaskResult {
            stdout: "1\n".into(),
            ..TaskResult::default()
        };
        let frame = outcome_frame(
            invocation.task_id,
            attempt,
            "node1:77".into(),
            Outcome {
                status: Status::Failed,
                result: Some(result.clone()),
                error: Some("timeout: exceeded walltime of 42 s".into()),
                started_at,
                finished_at: started_at,
            },
        );
        assert_eq!(
            frame,
            TaskOutcome {
                task_id: invocation.task_id,
                attempt: 3,
                status: OutcomeStatus::Failed,
                result: Some(result),
                error: Some("timeout: exceeded walltime of 42 s".into()),
                worker: Some("node1:77".into()),
                started_at: Some(started_at),
                finished_at: started_at,
            }
        );
    }
}
