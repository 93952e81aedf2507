//! Frames of the two binary channels, each MessagePack-encoded by
//! [`crate::framing`]:
//!
//! - the agent channel: one WebSocket from an endpoint agent to the service
//!   ([`AgentFrame`] up, [`ServiceFrame`] down);
//! - the worker channel: one TCP connection from a worker process to its
//!   agent's dispatcher ([`WorkerFrame`] up, [`DispatcherFrame`] down).
//!
//! Results travel in batches so that ten thousand small tasks are not ten
//! thousand round trips. Delivery is at-least-once; the service records the
//! first final result of a task and counts later ones as duplicates.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::compute::{BlockReport, ChildReport, FunctionSpec, TaskArgs, TaskResult};
use crate::ids::{EndpointId, FunctionId, IdentityId, TaskId, WorkerId};
use crate::transfer::{
    CollectionAnnounce, FileOp, FileOpError, FileOpOutcome, FileOpRequestId, TransferCommand,
    TransferReport,
};

/// Who submitted a task: what a multi-user agent maps to a local account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitter {
    pub identity_id: IdentityId,
    pub username: String,
    #[serde(default)]
    pub email: Option<String>,
    /// Issuer URL of the identity provider (`local` for `lattice dev`).
    pub identity_provider: String,
}

/// One task handed to an agent, and by it to a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskAssignment {
    pub task_id: TaskId,
    pub function_id: FunctionId,
    pub spec: FunctionSpec,
    pub args: TaskArgs,
    pub walltime_secs: u32,
    /// 1 for the first delivery.
    pub attempt: u32,
    pub max_retries: u32,
    /// Who submitted it; sent to multi-user agents only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitter: Option<Submitter>,
    /// The submitter's variables for a multi-user endpoint's per-user
    /// config template (`user_endpoint_config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_config: Option<serde_json::Value>,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Success,
    Failed,
}

/// The final result of one task attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub task_id: TaskId,
    pub attempt: u32,
    pub status: OutcomeStatus,
    pub result: Option<TaskResult>,
    /// Why it failed, in one sentence (`timeout`, `worker lost`, ...).
    pub error: Option<String>,
    /// `host:pid` (or the worker id) of the worker that ran it.
    pub worker: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
}

/// A task a worker started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStarted {
    pub task_id: TaskId,
    pub worker: String,
    pub at: DateTime<Utc>,
}

/// Agent -> service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentFrame {
    /// First frame on a connection.
    Hello {
        endpoint_id: EndpointId,
        agent_version: String,
        hostname: String,
        /// A multi-user agent (`lattice agent --multi-user`): it takes tasks
        /// from any identity its own policy admits and needs each task's
        /// submitter.
        #[serde(default)]
        multi_user: bool,
    },
    /// Permission to send `credits` more tasks (cumulative with earlier grants).
    Credit {
        credits: u32,
    },
    /// Periodic liveness and load report.
    Heartbeat {
        workers: u32,
        idle_slots: u32,
        queue_depth: u32,
        /// The provider's worker blocks (empty without a provider).
        #[serde(default)]
        blocks: Vec<BlockReport>,
        /// The last block failure, in the scheduler's words.
        #[serde(default)]
        provider_error: Option<String>,
        /// The kind of the configured worker-block provider (`slurm`, ...).
        #[serde(default)]
        provider: Option<String>,
        /// A multi-user agent's active per-user child agents.
        #[serde(default)]
        children: Vec<ChildReport>,
    },
    Started {
        tasks: Vec<TaskStarted>,
    },
    Results {
        results: Vec<TaskOutcome>,
    },
    /// The collections this agent hosts and its transfer endpoint's
    /// certificate fingerprint; sent after every welcome.
    Collections {
        collections: Vec<CollectionAnnounce>,
        /// Hex SHA-256 of the agent's transfer certificate (None: no data plane).
        data_fingerprint: Option<String>,
    },
    /// Answer to [`ServiceFrame::FileOp`].
    FileOpResult {
        request_id: FileOpRequestId,
        result: Result<FileOpOutcome, FileOpError>,
    },
    /// Progress, faults and the end of one side of a transfer attempt.
    Transfer {
        report: TransferReport,
    },
}

/// Service -> agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServiceFrame {
    /// Answer to `Hello`.
    Welcome {
        endpoint_id: EndpointId,
    },
    Tasks {
        tasks: Vec<TaskAssignment>,
    },
    /// Stop these tasks if they are queued or running; report nothing for them.
    Cancel {
        task_ids: Vec<TaskId>,
    },
    /// These results are recorded; the agent may forget them.
    ResultsAck {
        task_ids: Vec<TaskId>,
    },
    /// The service is closing the channel; `message` says why.
    Error {
        message: String,
    },
    /// Run a file operation in one of the agent's collections; answered
    /// with [`AgentFrame::FileOpResult`].
    FileOp {
        request_id: FileOpRequestId,
        collection: String,
        /// For a guest collection: the directory of `collection` that is
        /// its root; every path of `op` is resolved beneath it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subtree: Option<String>,
        op: FileOp,
    },
    /// Start or stop one side of a transfer attempt.
    Transfer {
        /// Boxed: it is much larger than the other frames.
        command: Box<TransferCommand>,
    },
}

/// Worker -> dispatcher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerFrame {
    Hello {
        worker_id: WorkerId,
        /// Tasks this worker runs at once.
        capacity: u32,
        hostname: String,
        pid: u32,
        /// The scheduler block that started this worker, if any.
        block_id: Option<String>,
    },
    Started {
        task_id: TaskId,
        at: DateTime<Utc>,
    },
    Result {
        outcome: TaskOutcome,
    },
    /// A per-user child agent (which connects to its root agent as one big
    /// worker) reports its own workers and blocks.
    Status {
        workers: u32,
        #[serde(default)]
        blocks: Vec<BlockReport>,
        #[serde(default)]
        provider_error: Option<String>,
    },
}

/// Dispatcher -> worker.
// A frame exists briefly (made, written, dropped): its size does not matter,
// and boxing the assignment would cost an allocation per task.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DispatcherFrame {
    Run {
        task: TaskAssignment,
    },
    Cancel {
        task_id: TaskId,
    },
    /// Finish running tasks, then exit.
    Shutdown,
}
