//! What the runtime is asked to run and what it answers: its own types, not
//! the wire's. A task's delivery (attempt, retries, submitter, per-user
//! config) and the report of its end (attempt, worker) belong to the worker
//! that converts at its boundary; this module must not grow them.

use chrono::{DateTime, Utc};
use lattice_protocol::compute::{FunctionSpec, TaskArgs, TaskResult};
use lattice_protocol::{FunctionId, TaskId};

/// One call of one function.
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    /// Names the invocation's scratch directory, container and log lines.
    pub task_id: TaskId,
    /// Keys what is kept between invocations of the same function (compiled
    /// Wasm modules, functions loaded into a Python interpreter).
    pub function_id: FunctionId,
    /// The function's kind and body.
    pub spec: FunctionSpec,
    pub args: TaskArgs,
    /// Seconds it may run before it is stopped as timed out.
    pub walltime_secs: u32,
}

/// How an invocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    Failed,
}

/// The end of one invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: Status,
    /// What it printed and returned, when it got to run.
    pub result: Option<TaskResult>,
    /// Why it failed, in one sentence (`timeout: ...`, `memory limit: ...`).
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}
