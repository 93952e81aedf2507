//! The `python` kind: a serialized callable run by a persistent Python
//! interpreter (`python3 -m lattice.worker`) over pipes. Not implemented
//! yet: every invocation fails with a clear error.

use std::future::Future;
use std::path::PathBuf;

use chrono::Utc;
use lattice_protocol::frames::{OutcomeStatus, TaskAssignment, TaskOutcome};

/// Runs `python` functions. Cheap to clone; long-lived interpreters are
/// shared by clones.
#[derive(Clone, Debug)]
pub struct PythonRuntime {
    /// The interpreter to start (e.g. a conda env's `python`) [default: `python3`].
    pub python: PathBuf,
}

impl Default for PythonRuntime {
    fn default() -> Self {
        Self {
            python: PathBuf::from("python3"),
        }
    }
}

impl PythonRuntime {
    /// Runs `task` until it ends or `cancel` completes (`None`: cancelled).
    pub async fn run_cancellable(
        &self,
        task: &TaskAssignment,
        cancel: impl Future<Output = ()>,
    ) -> Option<TaskOutcome> {
        let _ = cancel;
        Some(TaskOutcome {
            task_id: task.task_id,
            attempt: task.attempt,
            status: OutcomeStatus::Failed,
            result: None,
            error: Some("function kind python is not supported by this worker yet".into()),
            worker: None,
            started_at: Some(Utc::now()),
            finished_at: Utc::now(),
        })
    }
}
