//! The compute tables' rows as the database returns them, and their
//! conversion to records (an undecodable row is `StoreError::Corrupt`).

use super::super::{corrupt, from_millis, uuid_of, StoreResult};
use super::*;

#[derive(sqlx::FromRow)]
pub(super) struct FunctionRow {
    pub(super) id: String,
    pub(super) owner_id: String,
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) kind: String,
    pub(super) content_hash: String,
    pub(super) parameters: String,
    pub(super) spec: String,
    pub(super) created_at: i64,
    pub(super) deleted_at: Option<i64>,
}

impl FunctionRow {
    pub(super) fn into_info(self) -> StoreResult<FunctionInfo> {
        const T: &str = "functions";
        let spec: FunctionSpec = serde_json::from_str(&self.spec).map_err(|e| corrupt(T, e))?;
        Ok(FunctionInfo {
            id: FunctionId(uuid_of(T, &self.id)?),
            name: self.name,
            description: self.description,
            owner_id: IdentityId(uuid_of(T, &self.owner_id)?),
            kind: self.kind,
            content_hash: self.content_hash,
            parameters: serde_json::from_str(&self.parameters).map_err(|e| corrupt(T, e))?,
            spec,
            created_at: from_millis(self.created_at),
            deleted_at: self.deleted_at.map(from_millis),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct EndpointRow {
    pub(super) id: String,
    pub(super) owner_id: String,
    pub(super) name: String,
    pub(super) secret_hash: String,
    pub(super) created_at: i64,
    pub(super) connected_at: Option<i64>,
    pub(super) last_seen: Option<i64>,
    pub(super) agent_version: Option<String>,
    pub(super) hostname: Option<String>,
    pub(super) workers: i64,
    pub(super) idle_slots: i64,
    pub(super) queue_depth: i64,
    pub(super) blocks: Option<String>,
    pub(super) provider_error: Option<String>,
    pub(super) provider: Option<String>,
    pub(super) multi_user: bool,
    pub(super) children: Option<String>,
}

impl EndpointRow {
    pub(super) fn into_record(self) -> StoreResult<EndpointRecord> {
        const T: &str = "endpoints";
        Ok(EndpointRecord {
            id: EndpointId(uuid_of(T, &self.id)?),
            owner_id: IdentityId(uuid_of(T, &self.owner_id)?),
            name: self.name,
            secret_hash: self.secret_hash,
            created_at: from_millis(self.created_at),
            connected_at: self.connected_at.map(from_millis),
            last_seen: self.last_seen.map(from_millis),
            agent_version: self.agent_version,
            hostname: self.hostname,
            workers: self.workers.max(0) as u32,
            idle_slots: self.idle_slots.max(0) as u32,
            queue_depth: self.queue_depth.max(0) as u32,
            blocks: match self.blocks.as_deref() {
                None | Some("") => Vec::new(),
                Some(text) => serde_json::from_str(text).map_err(|e| corrupt(T, e))?,
            },
            provider_error: self.provider_error,
            provider: self.provider,
            multi_user: self.multi_user,
            children: match self.children.as_deref() {
                None | Some("") => Vec::new(),
                Some(text) => serde_json::from_str(text).map_err(|e| corrupt(T, e))?,
            },
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct TaskRow {
    pub(super) id: String,
    pub(super) batch_id: String,
    pub(super) function_id: String,
    pub(super) endpoint_id: String,
    pub(super) owner_id: String,
    pub(super) state: String,
    pub(super) args: String,
    pub(super) walltime_secs: i64,
    pub(super) max_retries: i64,
    pub(super) attempts: i64,
    pub(super) submitted_at: i64,
    pub(super) dispatched_at: Option<i64>,
    pub(super) started_at: Option<i64>,
    pub(super) finished_at: Option<i64>,
    pub(super) worker: Option<String>,
    pub(super) result: Option<String>,
    pub(super) error: Option<String>,
    pub(super) duplicate_results: i64,
    pub(super) user_config: Option<String>,
}

impl TaskRow {
    pub(super) fn into_info(self) -> StoreResult<TaskInfo> {
        const T: &str = "tasks";
        Ok(TaskInfo {
            id: TaskId(uuid_of(T, &self.id)?),
            state: TaskState::parse(&self.state)
                .ok_or_else(|| corrupt(T, format!("unknown state `{}`", self.state)))?,
            function_id: FunctionId(uuid_of(T, &self.function_id)?),
            endpoint_id: EndpointId(uuid_of(T, &self.endpoint_id)?),
            batch_id: BatchId(uuid_of(T, &self.batch_id)?),
            owner_id: IdentityId(uuid_of(T, &self.owner_id)?),
            args: serde_json::from_str(&self.args).map_err(|e| corrupt(T, e))?,
            result: self
                .result
                .as_deref()
                .map(serde_json::from_str::<TaskResult>)
                .transpose()
                .map_err(|e| corrupt(T, e))?,
            error: self.error,
            submitted_at: from_millis(self.submitted_at),
            dispatched_at: self.dispatched_at.map(from_millis),
            started_at: self.started_at.map(from_millis),
            finished_at: self.finished_at.map(from_millis),
            worker: self.worker,
            attempts: self.attempts.max(0) as u32,
            max_retries: self.max_retries.max(0) as u32,
            walltime_secs: self.walltime_secs.max(0) as u32,
            duplicate_results: self.duplicate_results.max(0) as u32,
            endpoint_problem: None,
            user_endpoint_config: self
                .user_config
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt(T, e))?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct DispatchRow {
    pub(super) id: String,
    pub(super) function_id: String,
    pub(super) args: String,
    pub(super) walltime_secs: i64,
    pub(super) attempts: i64,
    pub(super) max_retries: i64,
    pub(super) owner_id: String,
    pub(super) user_config: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct QueueRow {
    pub(super) seq: i64,
    pub(super) task_id: String,
    pub(super) deliveries: i64,
}

impl QueueRow {
    pub(super) fn into_message(self) -> StoreResult<QueuedMessage> {
        Ok(QueuedMessage {
            seq: self.seq,
            task_id: TaskId(uuid_of("queue_messages", &self.task_id)?),
            deliveries: self.deliveries.max(0) as u32,
        })
    }
}
