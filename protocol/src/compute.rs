//! REST bodies of the compute API: functions, endpoints, tasks and batches.
//! An API boundary: fields may be added, never renamed or removed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{BatchId, EndpointId, FunctionId, IdentityId, TaskId};

/// Arguments of one task: template parameter name -> value. Strings are
/// used as they are; other JSON values in their JSON text.
pub type TaskArgs = BTreeMap<String, serde_json::Value>;

/// What a function runs. Immutable once registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FunctionSpec {
    /// A command line run by `/bin/sh -c`; `{name}` placeholders are replaced
    /// by shell-quoted argument values (`{{` and `}}` are literal braces).
    Shell { command: String },
    /// A WASI (preview 1) command module, base64-encoded.
    Wasm { module: String },
    /// A Python callable serialized by the SDK.
    Python {
        /// base64 of the serialized callable.
        payload: String,
        /// How `payload` was made: `source`, `dill` or `cloudpickle`.
        serializer: String,
        /// `major.minor` of the submitting interpreter.
        python_version: String,
        /// Name of the callable, for messages.
        #[serde(default)]
        entry_point: Option<String>,
    },
    /// A container image and a command template (same placeholders as shell).
    Container { image: String, command: String },
}

impl FunctionSpec {
    /// `shell`, `wasm`, `python` or `container`.
    pub fn kind(&self) -> &'static str {
        match self {
            FunctionSpec::Shell { .. } => "shell",
            FunctionSpec::Wasm { .. } => "wasm",
            FunctionSpec::Python { .. } => "python",
            FunctionSpec::Container { .. } => "container",
        }
    }
}

/// `POST /v1/functions`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionRegister {
    /// A name to recognise it by [default: derived from the spec].
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub spec: FunctionSpec,
}

/// A registered function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionInfo {
    pub id: FunctionId,
    pub name: String,
    pub description: Option<String>,
    pub owner_id: IdentityId,
    /// `shell`, `wasm`, `python` or `container`.
    pub kind: String,
    /// SHA-256 (hex) of the canonical JSON of `spec`.
    pub content_hash: String,
    /// Template parameters a task must supply.
    pub parameters: Vec<String>,
    pub spec: FunctionSpec,
    pub created_at: DateTime<Utc>,
    /// Set when the owner deleted it; tasks can no longer be submitted.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Whether an agent is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EndpointStatus {
    Online,
    Offline,
}

/// `POST /v1/endpoints`: register an endpoint (done by `lattice agent` on first start).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointRegister {
    pub name: String,
}

/// An endpoint as users see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointInfo {
    pub id: EndpointId,
    pub name: String,
    pub owner_id: IdentityId,
    pub status: EndpointStatus,
    pub created_at: DateTime<Utc>,
    pub last_seen: Option<DateTime<Utc>>,
    /// Agent version and host, from its last connection.
    pub agent_version: Option<String>,
    pub hostname: Option<String>,
    /// Workers connected to the agent's dispatcher, and idle task slots.
    pub workers: u32,
    pub idle_slots: u32,
    /// Tasks held by the agent, not yet running.
    pub agent_queue_depth: u32,
    /// Tasks waiting in the service's queue for this endpoint.
    pub waiting_tasks: u64,
    /// Worker blocks the agent's provider runs (batch jobs, pods), from its
    /// last heartbeat; empty for agents without a provider.
    #[serde(default)]
    pub blocks: Vec<BlockReport>,
    /// The kind of worker-block provider the agent runs (`local`,
    /// `slurm`, `pbs`, `lsf`, `kubernetes`); `None` without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The last block failure the agent's provider reported, in the
    /// scheduler's words (`sbatch: error: ... Invalid account ...`); cleared
    /// once a block runs again.
    #[serde(default)]
    pub provider_error: Option<String>,
    /// A multi-user endpoint takes tasks from any identity its agent's
    /// policy admits; each runs under the local account it maps to.
    #[serde(default)]
    pub multi_user: bool,
    /// A multi-user endpoint's active per-user child agents (shown to the
    /// owner only).
    #[serde(default)]
    pub children: Vec<ChildReport>,
}

/// State of a worker block, as its scheduler reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BlockPhase {
    /// Being submitted, queued, or starting.
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    Unknown,
}

/// One worker block of an endpoint (agent heartbeat, `GET /v1/endpoints/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockReport {
    /// The agent's name for the block (workers announce it).
    pub id: String,
    /// The scheduler's id (Slurm job id, ...), once submitted.
    #[serde(default)]
    pub job_id: Option<String>,
    pub state: BlockPhase,
    /// Why it failed (or what the scheduler said), in the scheduler's words.
    #[serde(default)]
    pub message: Option<String>,
    /// Nodes asked for.
    pub nodes: u32,
    /// Workers of this block connected to the dispatcher now.
    pub workers: u32,
}

/// One per-user child agent of a multi-user endpoint (agent heartbeat,
/// `GET /v1/endpoints/{id}` for the endpoint's owner).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChildReport {
    /// The local account it runs as.
    pub local_user: String,
    /// The canonical JSON of the user's template variables.
    pub variables: String,
    /// The child agent's process id on the endpoint's host.
    pub pid: Option<u32>,
    /// Tasks it holds (queued or running).
    pub tasks: u32,
    /// Workers connected to it.
    pub workers: u32,
    /// Its provider's blocks (batch jobs submitted as the user).
    #[serde(default)]
    pub blocks: Vec<BlockReport>,
    #[serde(default)]
    pub provider_error: Option<String>,
}

/// Answer to `POST /v1/endpoints`: the agent's credential, shown once.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointRegistered {
    pub endpoint: EndpointInfo,
    /// The agent authenticates its channel with this secret.
    pub agent_secret: String,
}

/// States of a task: `waiting -> dispatched -> running -> success | failed | cancelled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskState {
    Waiting,
    Dispatched,
    Running,
    Success,
    Failed,
    Cancelled,
}

impl TaskState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failed | TaskState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Dispatched => "dispatched",
            TaskState::Running => "running",
            TaskState::Success => "success",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "waiting" => TaskState::Waiting,
            "dispatched" => TaskState::Dispatched,
            "running" => TaskState::Running,
            "success" => TaskState::Success,
            "failed" => TaskState::Failed,
            "cancelled" => TaskState::Cancelled,
            _ => return None,
        })
    }
}

/// What a finished invocation produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskResult {
    /// Tail of standard output (the whole output when small).
    pub stdout: String,
    /// Tail of standard error.
    pub stderr: String,
    /// Exit status; `None` when killed by a signal or not a process.
    pub returncode: Option<i32>,
    /// A serialized return value (Python functions), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The exception a Python function raised (the task is then `failed`
    /// and `error` reads `TYPE: MESSAGE`). Absent for other kinds and for
    /// failures that are not the function's own (timeout, worker lost, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<RemoteException>,
}

/// An exception raised by a Python function on the endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RemoteException {
    /// Qualified type name: `ValueError`, `numpy.linalg.LinAlgError`, ...
    pub type_name: String,
    /// `str(exception)`.
    pub message: String,
    /// The remote traceback, formatted as Python prints it, starting in
    /// the function's own code.
    pub traceback: String,
    /// base64 of the pickled exception (cloudpickle, protocol 5) when it
    /// pickles; the SDK re-raises it as the same type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// The one argument key a `python` task may carry: base64 of the pickled
/// `(args, kwargs)` tuple, as written by the Python SDK. A `python` task
/// without it calls its function with no arguments.
pub const PYTHON_ARGS_KEY: &str = "__lattice_payload__";

/// `POST /v1/tasks`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskSubmit {
    pub function_id: FunctionId,
    pub endpoint_id: EndpointId,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub args: TaskArgs,
    /// Seconds the invocation may run [default: the service's default walltime].
    #[serde(default)]
    pub walltime_secs: Option<u32>,
    /// Times a task is retried when its worker or agent dies [default: 2].
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Variables for a multi-user endpoint's per-user config template (a
    /// JSON object, checked by the agent against the admin's schema).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub user_endpoint_config: Option<serde_json::Value>,
}

/// `POST /v1/batches`: many tasks of one function in one request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchSubmit {
    pub function_id: FunctionId,
    pub endpoint_id: EndpointId,
    /// One argument map per task.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub tasks: Vec<TaskArgs>,
    #[serde(default)]
    pub walltime_secs: Option<u32>,
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Variables for a multi-user endpoint's per-user config template, for
    /// every task of the batch.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub user_endpoint_config: Option<serde_json::Value>,
}

/// Answer to `POST /v1/batches` (and `POST /v1/tasks`, with one task).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchSubmitted {
    pub batch_id: BatchId,
    pub task_ids: Vec<TaskId>,
}

/// A task as users see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskInfo {
    pub id: TaskId,
    pub state: TaskState,
    pub function_id: FunctionId,
    pub endpoint_id: EndpointId,
    pub batch_id: BatchId,
    pub owner_id: IdentityId,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub args: TaskArgs,
    pub result: Option<TaskResult>,
    pub error: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The worker that ran the final attempt.
    pub worker: Option<String>,
    /// Deliveries to an agent so far.
    pub attempts: u32,
    pub max_retries: u32,
    pub walltime_secs: u32,
    /// Final results that arrived after the first one and were dropped.
    pub duplicate_results: u32,
    /// For a task not yet final: why its endpoint cannot run it now (it is
    /// offline, since when; or its provider cannot start workers), so it
    /// does not wait silently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_problem: Option<String>,
    /// The variables submitted for a multi-user endpoint's user config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub user_endpoint_config: Option<serde_json::Value>,
}

/// `POST /v1/tasks/status`: many tasks in one round trip.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskStatusRequest {
    pub task_ids: Vec<TaskId>,
}

/// Counts of a batch's tasks per state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchStatus {
    pub batch_id: BatchId,
    pub total: u64,
    pub waiting: u64,
    pub dispatched: u64,
    pub running: u64,
    pub success: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl BatchStatus {
    pub fn finished(&self) -> u64 {
        self.success + self.failed + self.cancelled
    }
}

/// A message on the result stream (`GET /v1/batches/{id}/stream`, a WebSocket of JSON text frames).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StreamEvent {
    /// A task reached its final state.
    Task { task: Box<TaskInfo> },
    /// Every task of the batch is final; the stream closes after this.
    Done { status: BatchStatus },
}

/// A client's message on the session stream (`GET /v1/stream`, a WebSocket
/// of JSON text frames): one connection per client session carries its
/// submissions and the results of every batch it follows.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SessionRequest {
    /// Submit a batch (the body of `POST /v1/batches`). Answered by
    /// `submitted` or `error` with the same `request_id`; the batch is then
    /// followed on this connection.
    Submit { request_id: u64, batch: BatchSubmit },
    /// Follow a batch submitted earlier (e.g. before a kernel restart):
    /// its already-final tasks come first, then the rest as they finish.
    Subscribe { batch_id: BatchId },
}

/// The service's message on the session stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SessionEvent {
    /// A `submit` was accepted.
    Submitted {
        request_id: u64,
        batch_id: BatchId,
        task_ids: Vec<TaskId>,
    },
    /// Tasks of followed batches that reached their final state.
    Tasks { tasks: Vec<TaskInfo> },
    /// Every task of a followed batch is final; it is no longer followed.
    Done { status: BatchStatus },
    /// A request failed: `request_id` names a refused `submit`, `batch_id`
    /// a refused `subscribe`; with neither, the connection closes after it.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch_id: Option<BatchId>,
        code: crate::ErrorCode,
        message: String,
    },
}
