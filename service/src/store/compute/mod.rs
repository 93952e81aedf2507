//! Persistent state of the compute core: functions, endpoints, tasks and the
//! embedded queue. Same pattern as the account tables: SQL written once,
//! instantiated for both back ends by `impl_compute_store!`.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lattice_protocol::compute::{
    BatchStatus, BlockReport, ChildReport, FunctionInfo, FunctionSpec, TaskArgs, TaskInfo,
    TaskResult, TaskState,
};
use lattice_protocol::frames::{OutcomeStatus, TaskOutcome, TaskStarted};
use lattice_protocol::{BatchId, EndpointId, FunctionId, IdentityId, TaskId};
use sqlx::QueryBuilder;

mod rows;

use rows::*;

use super::sql::{PostgresStore, SqliteStore};
use super::{corrupt, to_millis, uuid_of, StoreResult};

/// An endpoint as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    pub id: EndpointId,
    pub owner_id: IdentityId,
    pub name: String,
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    /// Set while an agent is connected.
    pub connected_at: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub agent_version: Option<String>,
    pub hostname: Option<String>,
    pub workers: u32,
    pub idle_slots: u32,
    pub queue_depth: u32,
    /// The agent provider's blocks, from its last heartbeat.
    pub blocks: Vec<BlockReport>,
    /// The last block failure the agent reported.
    pub provider_error: Option<String>,
    /// The kind of block provider the agent last reported.
    pub provider: Option<String>,
    /// The agent announced multi-user mode when it last connected.
    pub multi_user: bool,
    /// A multi-user agent's per-user children, from its last heartbeat.
    pub children: Vec<ChildReport>,
}

/// What an agent told about itself when it connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConnection {
    pub hostname: String,
    pub agent_version: String,
    pub multi_user: bool,
}

/// What the relay needs to hand a task to an agent.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchedTask {
    pub task_id: TaskId,
    pub function_id: FunctionId,
    pub args: TaskArgs,
    pub walltime_secs: u32,
    /// Including this delivery.
    pub attempts: u32,
    pub max_retries: u32,
    /// The submitter.
    pub owner_id: IdentityId,
    /// The submitter's variables for a multi-user endpoint's user config.
    pub user_config: Option<serde_json::Value>,
}

/// A message of the embedded queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    pub seq: i64,
    pub task_id: TaskId,
    pub deliveries: u32,
}

/// Whether a reported final result was the first for its task.
#[derive(Clone, Debug, PartialEq)]
pub enum Recorded {
    /// The task as it now stands, for result streams.
    First(Box<TaskInfo>),
    Duplicate,
    /// No such task (a confused or malicious agent).
    Unknown,
}

#[async_trait]
pub trait ComputeStore: Send + Sync + 'static {
    async fn insert_function(&self, function: &FunctionInfo) -> StoreResult<()>;
    async fn function(&self, id: FunctionId) -> StoreResult<Option<FunctionInfo>>;
    async fn functions_owned_by(&self, owner: IdentityId) -> StoreResult<Vec<FunctionInfo>>;
    /// A live function of `owner` with this content hash and name.
    async fn function_by_hash(
        &self,
        owner: IdentityId,
        content_hash: &str,
        name: &str,
    ) -> StoreResult<Option<FunctionInfo>>;
    async fn delete_function(&self, id: FunctionId, at: DateTime<Utc>) -> StoreResult<bool>;

    async fn insert_endpoint(&self, endpoint: &EndpointRecord) -> StoreResult<()>;
    async fn endpoint(&self, id: EndpointId) -> StoreResult<Option<EndpointRecord>>;
    async fn endpoint_by_secret(&self, secret_hash: &str) -> StoreResult<Option<EndpointRecord>>;
    async fn endpoint_by_name(
        &self,
        owner: IdentityId,
        name: &str,
    ) -> StoreResult<Option<EndpointRecord>>;
    async fn endpoints_owned_by(&self, owner: IdentityId) -> StoreResult<Vec<EndpointRecord>>;
    async fn rotate_endpoint_secret(&self, id: EndpointId, secret_hash: &str) -> StoreResult<()>;
    /// Records an agent connecting (`hostname`/`version` set) or leaving.
    async fn set_endpoint_connected(
        &self,
        id: EndpointId,
        connected: Option<AgentConnection>,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn update_endpoint_load(
        &self,
        id: EndpointId,
        workers: u32,
        idle_slots: u32,
        queue_depth: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Records the blocks and the last block failure an agent reported.
    async fn update_endpoint_blocks(
        &self,
        id: EndpointId,
        blocks: &[BlockReport],
        provider_error: Option<&str>,
        provider: Option<&str>,
        children: &[ChildReport],
    ) -> StoreResult<()>;

    /// Inserts tasks in one transaction.
    async fn insert_tasks(&self, tasks: &[TaskInfo]) -> StoreResult<()>;
    async fn task(&self, id: TaskId) -> StoreResult<Option<TaskInfo>>;
    async fn tasks(&self, ids: &[TaskId]) -> StoreResult<Vec<TaskInfo>>;
    async fn list_tasks(
        &self,
        owner: IdentityId,
        state: Option<TaskState>,
        batch: Option<BatchId>,
        limit: u32,
    ) -> StoreResult<Vec<TaskInfo>>;
    async fn batch_status(&self, batch: BatchId) -> StoreResult<BatchStatus>;
    /// Final tasks of a batch that finished at or after `since`.
    async fn batch_finished_since(
        &self,
        batch: BatchId,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<TaskInfo>>;
    async fn waiting_tasks(&self, endpoint: EndpointId) -> StoreResult<u64>;
    /// Marks non-final tasks dispatched and counts the attempt; final tasks
    /// are left out of the answer (their deliveries are stale).
    async fn dispatch_tasks(
        &self,
        ids: &[TaskId],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<DispatchedTask>>;
    async fn mark_started(&self, started: &[TaskStarted]) -> StoreResult<()>;
    /// Records final outcomes; the first final result of a task wins.
    async fn record_outcomes(&self, outcomes: &[TaskOutcome]) -> StoreResult<Vec<Recorded>>;
    /// Cancels a task unless it is already final; true if it was cancelled.
    async fn cancel_task(&self, id: TaskId, at: DateTime<Utc>) -> StoreResult<bool>;

    /// Appends messages; returns them with their sequence numbers.
    async fn queue_push(
        &self,
        endpoint: EndpointId,
        tasks: &[TaskId],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<QueuedMessage>>;
    /// Every live (not dead-lettered) message of an endpoint, in order.
    async fn queue_pending(&self, endpoint: EndpointId) -> StoreResult<Vec<QueuedMessage>>;
    async fn queue_ack(&self, seqs: &[i64]) -> StoreResult<()>;
    async fn queue_dead_letter(&self, seqs: &[i64], at: DateTime<Utc>) -> StoreResult<()>;
    /// Clears leases recorded by earlier versions, which leased in the store
    /// (leases now live in the embedded broker's memory).
    async fn queue_clear_leases(&self) -> StoreResult<u64>;
}

const FUNCTION_COLUMNS: &str =
    "id, owner_id, name, description, kind, content_hash, parameters, spec, created_at, deleted_at";
const ENDPOINT_COLUMNS: &str = "id, owner_id, name, secret_hash, created_at, connected_at, last_seen, agent_version, hostname, workers, idle_slots, queue_depth";
const TASK_COLUMNS: &str = "id, batch_id, function_id, endpoint_id, owner_id, state, args, walltime_secs, max_retries, attempts, submitted_at, dispatched_at, started_at, finished_at, worker, result, error, duplicate_results, user_config";
const FINAL_STATES: &str = "('success', 'failed', 'cancelled')";
/// Rows per multi-row INSERT (well under SQLite's parameter limit).
const INSERT_CHUNK: usize = 500;
/// Rows per batched UPDATE of `mark_started` and `record_outcomes` (7
/// parameters each, well under SQLite's parameter limit).
const ROWS_PER_UPDATE: usize = 256;

macro_rules! impl_compute_store {
    ($store:ty, $db:ty) => {
        #[async_trait]
        impl ComputeStore for $store {
            async fn insert_function(&self, f: &FunctionInfo) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO functions ({FUNCTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ))
                .bind(f.id.to_string())
                .bind(f.owner_id.to_string())
                .bind(&f.name)
                .bind(&f.description)
                .bind(&f.kind)
                .bind(&f.content_hash)
                .bind(serde_json::to_string(&f.parameters).expect("strings serialize"))
                .bind(serde_json::to_string(&f.spec).expect("spec serializes"))
                .bind(to_millis(f.created_at))
                .bind(f.deleted_at.map(to_millis))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn function(&self, id: FunctionId) -> StoreResult<Option<FunctionInfo>> {
                let row: Option<FunctionRow> = sqlx::query_as(&format!(
                    "SELECT {FUNCTION_COLUMNS} FROM functions WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(FunctionRow::into_info).transpose()
            }

            async fn functions_owned_by(&self, owner: IdentityId) -> StoreResult<Vec<FunctionInfo>> {
                let rows: Vec<FunctionRow> = sqlx::query_as(&format!(
                    "SELECT {FUNCTION_COLUMNS} FROM functions WHERE owner_id = $1 AND deleted_at IS NULL ORDER BY created_at, id"
                ))
                .bind(owner.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(FunctionRow::into_info).collect()
            }

            async fn function_by_hash(
                &self,
                owner: IdentityId,
                content_hash: &str,
                name: &str,
            ) -> StoreResult<Option<FunctionInfo>> {
                let row: Option<FunctionRow> = sqlx::query_as(&format!(
                    "SELECT {FUNCTION_COLUMNS} FROM functions WHERE owner_id = $1 AND content_hash = $2 AND name = $3 AND deleted_at IS NULL ORDER BY created_at LIMIT 1"
                ))
                .bind(owner.to_string())
                .bind(content_hash)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                row.map(FunctionRow::into_info).transpose()
            }

            async fn delete_function(&self, id: FunctionId, at: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE functions SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL")
                    .bind(id.to_string())
                    .bind(to_millis(at))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_endpoint(&self, e: &EndpointRecord) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO endpoints ({ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                ))
                .bind(e.id.to_string())
                .bind(e.owner_id.to_string())
                .bind(&e.name)
                .bind(&e.secret_hash)
                .bind(to_millis(e.created_at))
                .bind(e.connected_at.map(to_millis))
                .bind(e.last_seen.map(to_millis))
                .bind(&e.agent_version)
                .bind(&e.hostname)
                .bind(i64::from(e.workers))
                .bind(i64::from(e.idle_slots))
                .bind(i64::from(e.queue_depth))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn endpoint(&self, id: EndpointId) -> StoreResult<Option<EndpointRecord>> {
                let row: Option<EndpointRow> = sqlx::query_as(&format!(
                    "SELECT {ENDPOINT_COLUMNS}, blocks, provider_error, provider, multi_user, children FROM endpoints WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(EndpointRow::into_record).transpose()
            }

            async fn endpoint_by_secret(&self, secret_hash: &str) -> StoreResult<Option<EndpointRecord>> {
                let row: Option<EndpointRow> = sqlx::query_as(&format!(
                    "SELECT {ENDPOINT_COLUMNS}, blocks, provider_error, provider, multi_user, children FROM endpoints WHERE secret_hash = $1"
                ))
                .bind(secret_hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map(EndpointRow::into_record).transpose()
            }

            async fn endpoint_by_name(&self, owner: IdentityId, name: &str) -> StoreResult<Option<EndpointRecord>> {
                let row: Option<EndpointRow> = sqlx::query_as(&format!(
                    "SELECT {ENDPOINT_COLUMNS}, blocks, provider_error, provider, multi_user, children FROM endpoints WHERE owner_id = $1 AND name = $2"
                ))
                .bind(owner.to_string())
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                row.map(EndpointRow::into_record).transpose()
            }

            async fn endpoints_owned_by(&self, owner: IdentityId) -> StoreResult<Vec<EndpointRecord>> {
                let rows: Vec<EndpointRow> = sqlx::query_as(&format!(
                    "SELECT {ENDPOINT_COLUMNS}, blocks, provider_error, provider, multi_user, children FROM endpoints WHERE owner_id = $1 ORDER BY created_at, id"
                ))
                .bind(owner.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(EndpointRow::into_record).collect()
            }

            async fn rotate_endpoint_secret(&self, id: EndpointId, secret_hash: &str) -> StoreResult<()> {
                sqlx::query("UPDATE endpoints SET secret_hash = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(secret_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn set_endpoint_connected(
                &self,
                id: EndpointId,
                connected: Option<AgentConnection>,
                at: DateTime<Utc>,
            ) -> StoreResult<()> {
                match connected {
                    Some(agent) => {
                        sqlx::query("UPDATE endpoints SET connected_at = $2, last_seen = $2, hostname = $3, agent_version = $4, multi_user = $5 WHERE id = $1")
                            .bind(id.to_string())
                            .bind(to_millis(at))
                            .bind(agent.hostname)
                            .bind(agent.agent_version)
                            .bind(agent.multi_user)
                            .execute(&self.pool)
                            .await?;
                    }
                    None => {
                        sqlx::query("UPDATE endpoints SET connected_at = NULL, last_seen = $2, workers = 0, idle_slots = 0 WHERE id = $1")
                            .bind(id.to_string())
                            .bind(to_millis(at))
                            .execute(&self.pool)
                            .await?;
                    }
                }
                Ok(())
            }

            async fn update_endpoint_load(
                &self,
                id: EndpointId,
                workers: u32,
                idle_slots: u32,
                queue_depth: u32,
                at: DateTime<Utc>,
            ) -> StoreResult<()> {
                // A heartbeat proves a session is connected, even if another session
                // of the endpoint ended (and cleared `connected_at`) after it started.
                sqlx::query("UPDATE endpoints SET workers = $2, idle_slots = $3, queue_depth = $4, last_seen = $5, connected_at = COALESCE(connected_at, $5) WHERE id = $1")
                    .bind(id.to_string())
                    .bind(i64::from(workers))
                    .bind(i64::from(idle_slots))
                    .bind(i64::from(queue_depth))
                    .bind(to_millis(at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn update_endpoint_blocks(
                &self,
                id: EndpointId,
                blocks: &[BlockReport],
                provider_error: Option<&str>,
                provider: Option<&str>,
                children: &[ChildReport],
            ) -> StoreResult<()> {
                let blocks = if blocks.is_empty() {
                    None
                } else {
                    Some(serde_json::to_string(blocks).map_err(|e| corrupt("endpoints", e))?)
                };
                let children = if children.is_empty() {
                    None
                } else {
                    Some(serde_json::to_string(children).map_err(|e| corrupt("endpoints", e))?)
                };
                sqlx::query("UPDATE endpoints SET blocks = $2, provider_error = $3, children = $4, provider = $5 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(blocks)
                    .bind(provider_error)
                    .bind(children)
                    .bind(provider)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn insert_tasks(&self, tasks: &[TaskInfo]) -> StoreResult<()> {
                // One chunk needs no transaction of its own: BEGIN and COMMIT
                // are two more round trips to SQLite's connection thread.
                if tasks.len() <= INSERT_CHUNK {
                    let mut conn = self.pool.acquire().await?;
                    return Self::insert_task_chunk(&mut conn, tasks).await;
                }
                let mut tx = self.pool.begin().await?;
                for chunk in tasks.chunks(INSERT_CHUNK) {
                    Self::insert_task_chunk(&mut tx, chunk).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn task(&self, id: TaskId) -> StoreResult<Option<TaskInfo>> {
                let row: Option<TaskRow> = sqlx::query_as(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(TaskRow::into_info).transpose()
            }

            async fn tasks(&self, ids: &[TaskId]) -> StoreResult<Vec<TaskInfo>> {
                let mut out = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(INSERT_CHUNK) {
                    let mut query: QueryBuilder<$db> =
                        QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ("));
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(id.to_string());
                    }
                    query.push(")");
                    let rows: Vec<TaskRow> = query.build_query_as().fetch_all(&self.pool).await?;
                    for row in rows {
                        out.push(row.into_info()?);
                    }
                }
                Ok(out)
            }

            async fn list_tasks(
                &self,
                owner: IdentityId,
                state: Option<TaskState>,
                batch: Option<BatchId>,
                limit: u32,
            ) -> StoreResult<Vec<TaskInfo>> {
                let mut query: QueryBuilder<$db> =
                    QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE owner_id = "));
                query.push_bind(owner.to_string());
                if let Some(state) = state {
                    query.push(" AND state = ").push_bind(state.as_str());
                }
                if let Some(batch) = batch {
                    query.push(" AND batch_id = ").push_bind(batch.to_string());
                }
                query.push(" ORDER BY submitted_at DESC, id LIMIT ").push_bind(i64::from(limit));
                let rows: Vec<TaskRow> = query.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(TaskRow::into_info).collect()
            }

            async fn batch_status(&self, batch: BatchId) -> StoreResult<BatchStatus> {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT state, COUNT(*) FROM tasks WHERE batch_id = $1 GROUP BY state")
                        .bind(batch.to_string())
                        .fetch_all(&self.pool)
                        .await?;
                let mut status = BatchStatus {
                    batch_id: batch,
                    ..Default::default()
                };
                for (state, count) in rows {
                    let count = count.max(0) as u64;
                    status.total += count;
                    match TaskState::parse(&state) {
                        Some(TaskState::Waiting) => status.waiting += count,
                        Some(TaskState::Dispatched) => status.dispatched += count,
                        Some(TaskState::Running) => status.running += count,
                        Some(TaskState::Success) => status.success += count,
                        Some(TaskState::Failed) => status.failed += count,
                        Some(TaskState::Cancelled) => status.cancelled += count,
                        None => return Err(corrupt("tasks", format!("unknown state `{state}`"))),
                    }
                }
                Ok(status)
            }

            async fn batch_finished_since(&self, batch: BatchId, since: DateTime<Utc>) -> StoreResult<Vec<TaskInfo>> {
                let rows: Vec<TaskRow> = sqlx::query_as(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE batch_id = $1 AND state IN {FINAL_STATES} AND finished_at >= $2 ORDER BY finished_at, id"
                ))
                .bind(batch.to_string())
                .bind(to_millis(since))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TaskRow::into_info).collect()
            }

            async fn waiting_tasks(&self, endpoint: EndpointId) -> StoreResult<u64> {
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE endpoint_id = $1 AND state = 'waiting'")
                    .bind(endpoint.to_string())
                    .fetch_one(&self.pool)
                    .await?;
                Ok(count.max(0) as u64)
            }

            async fn dispatch_tasks(&self, ids: &[TaskId], at: DateTime<Utc>) -> StoreResult<Vec<DispatchedTask>> {
                let mut out = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(INSERT_CHUNK) {
                    let mut query: QueryBuilder<$db> = QueryBuilder::new(
                        "UPDATE tasks SET state = 'dispatched', attempts = attempts + 1, dispatched_at = ",
                    );
                    query.push_bind(to_millis(at));
                    query.push(format!(" WHERE state NOT IN {FINAL_STATES} AND id IN ("));
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(id.to_string());
                    }
                    query.push(") RETURNING id, function_id, args, walltime_secs, attempts, max_retries, owner_id, user_config");
                    let rows: Vec<DispatchRow> = query.build_query_as().fetch_all(&self.pool).await?;
                    for row in rows {
                        out.push(DispatchedTask {
                            task_id: TaskId(uuid_of("tasks", &row.id)?),
                            function_id: FunctionId(uuid_of("tasks", &row.function_id)?),
                            args: serde_json::from_str(&row.args).map_err(|e| corrupt("tasks", e))?,
                            walltime_secs: row.walltime_secs.max(0) as u32,
                            attempts: row.attempts.max(0) as u32,
                            max_retries: row.max_retries.max(0) as u32,
                            owner_id: IdentityId(uuid_of("tasks", &row.owner_id)?),
                            user_config: row
                                .user_config
                                .as_deref()
                                .map(serde_json::from_str)
                                .transpose()
                                .map_err(|e| corrupt("tasks", e))?,
                        });
                    }
                }
                Ok(out)
            }

            async fn mark_started(&self, started: &[TaskStarted]) -> StoreResult<()> {
                // One statement per chunk (not one per task): on SQLite every
                // statement is a round trip to the connection's thread.
                let mut seen = HashSet::new();
                let started: Vec<&TaskStarted> = started.iter().filter(|s| seen.insert(s.task_id)).collect();
                let mut tx = self.pool.begin().await?;
                for chunk in started.chunks(ROWS_PER_UPDATE) {
                    let mut query: QueryBuilder<$db> = QueryBuilder::new(
                        "UPDATE tasks SET state = 'running', started_at = s_at, worker = s_worker FROM (",
                    );
                    for (i, s) in chunk.iter().enumerate() {
                        if i > 0 {
                            query.push(" UNION ALL ");
                        }
                        query.push("SELECT ").push_bind(s.task_id.to_string());
                        query.push(" AS s_id, CAST(").push_bind(to_millis(s.at));
                        query.push(" AS BIGINT) AS s_at, ").push_bind(&s.worker);
                        query.push(" AS s_worker");
                    }
                    query.push(") AS started WHERE id = s_id AND state IN ('waiting', 'dispatched')");
                    query.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn record_outcomes(&self, outcomes: &[TaskOutcome]) -> StoreResult<Vec<Recorded>> {
                // The first outcome of each task goes into one UPDATE per chunk
                // (on SQLite every statement is a round trip to the
                // connection's thread); the rest are duplicates, or outcomes of
                // tasks already final or unknown, counted one by one (rare).
                // One chunk needs no transaction: the UPDATE is atomic, and a
                // duplicate's count is a separate fact.
                if outcomes.len() <= ROWS_PER_UPDATE {
                    let mut conn = self.pool.acquire().await?;
                    return Self::record_outcomes_on(&mut conn, outcomes).await;
                }
                let mut tx = self.pool.begin().await?;
                let recorded = Self::record_outcomes_on(&mut tx, outcomes).await?;
                tx.commit().await?;
                Ok(recorded)
            }

            async fn cancel_task(&self, id: TaskId, at: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query(&format!(
                    "UPDATE tasks SET state = 'cancelled', finished_at = $2, error = 'cancelled by the owner' WHERE id = $1 AND state NOT IN {FINAL_STATES}"
                ))
                .bind(id.to_string())
                .bind(to_millis(at))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn queue_push(&self, endpoint: EndpointId, tasks: &[TaskId], at: DateTime<Utc>) -> StoreResult<Vec<QueuedMessage>> {
                let mut out = Vec::with_capacity(tasks.len());
                if tasks.len() <= INSERT_CHUNK {
                    let mut conn = self.pool.acquire().await?;
                    Self::queue_push_chunk(&mut conn, endpoint, tasks, at, &mut out).await?;
                } else {
                    let mut tx = self.pool.begin().await?;
                    for chunk in tasks.chunks(INSERT_CHUNK) {
                        Self::queue_push_chunk(&mut tx, endpoint, chunk, at, &mut out).await?;
                    }
                    tx.commit().await?;
                }
                out.sort_by_key(|m| m.seq);
                Ok(out)
            }

            async fn queue_pending(&self, endpoint: EndpointId) -> StoreResult<Vec<QueuedMessage>> {
                let rows: Vec<QueueRow> = sqlx::query_as(
                    "SELECT seq, task_id, deliveries FROM queue_messages \
                     WHERE endpoint_id = $1 AND dead_at IS NULL ORDER BY seq",
                )
                .bind(endpoint.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(QueueRow::into_message).collect()
            }

            async fn queue_ack(&self, seqs: &[i64]) -> StoreResult<()> {
                for chunk in seqs.chunks(INSERT_CHUNK) {
                    let mut query: QueryBuilder<$db> = QueryBuilder::new("DELETE FROM queue_messages WHERE seq IN (");
                    let mut list = query.separated(", ");
                    for seq in chunk {
                        list.push_bind(*seq);
                    }
                    query.push(")");
                    query.build().execute(&self.pool).await?;
                }
                Ok(())
            }

            async fn queue_dead_letter(&self, seqs: &[i64], at: DateTime<Utc>) -> StoreResult<()> {
                for chunk in seqs.chunks(INSERT_CHUNK) {
                    let mut query: QueryBuilder<$db> = QueryBuilder::new("UPDATE queue_messages SET lease_owner = NULL, dead_at = ");
                    query.push_bind(to_millis(at));
                    query.push(" WHERE seq IN (");
                    let mut list = query.separated(", ");
                    for seq in chunk {
                        list.push_bind(*seq);
                    }
                    query.push(")");
                    query.build().execute(&self.pool).await?;
                }
                Ok(())
            }

            async fn queue_clear_leases(&self) -> StoreResult<u64> {
                let done = sqlx::query("UPDATE queue_messages SET lease_owner = NULL WHERE lease_owner IS NOT NULL")
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }

        impl $store {
            async fn insert_task_chunk(conn: &mut <$db as sqlx::Database>::Connection, chunk: &[TaskInfo]) -> StoreResult<()> {
                let mut query: QueryBuilder<$db> = QueryBuilder::new(
                    "INSERT INTO tasks (id, batch_id, function_id, endpoint_id, owner_id, state, args, walltime_secs, max_retries, attempts, submitted_at, user_config) ",
                );
                query.push_values(chunk, |mut row, t| {
                    row.push_bind(t.id.to_string())
                        .push_bind(t.batch_id.to_string())
                        .push_bind(t.function_id.to_string())
                        .push_bind(t.endpoint_id.to_string())
                        .push_bind(t.owner_id.to_string())
                        .push_bind(t.state.as_str())
                        .push_bind(serde_json::to_string(&t.args).expect("args serialize"))
                        .push_bind(i64::from(t.walltime_secs))
                        .push_bind(i64::from(t.max_retries))
                        .push_bind(i64::from(t.attempts))
                        .push_bind(to_millis(t.submitted_at))
                        .push_bind(t.user_endpoint_config.as_ref().map(|c| c.to_string()));
                });
                query.build().execute(&mut *conn).await?;
                Ok(())
            }

            async fn queue_push_chunk(
                conn: &mut <$db as sqlx::Database>::Connection,
                endpoint: EndpointId,
                chunk: &[TaskId],
                at: DateTime<Utc>,
                out: &mut Vec<QueuedMessage>,
            ) -> StoreResult<()> {
                let mut query: QueryBuilder<$db> =
                    QueryBuilder::new("INSERT INTO queue_messages (endpoint_id, task_id, enqueued_at) ");
                query.push_values(chunk, |mut row, id| {
                    row.push_bind(endpoint.to_string())
                        .push_bind(id.to_string())
                        .push_bind(to_millis(at));
                });
                query.push(" RETURNING seq, task_id, deliveries");
                let rows: Vec<QueueRow> = query.build_query_as().fetch_all(&mut *conn).await?;
                for row in rows {
                    out.push(row.into_message()?);
                }
                Ok(())
            }

            async fn record_outcomes_on(conn: &mut <$db as sqlx::Database>::Connection, outcomes: &[TaskOutcome]) -> StoreResult<Vec<Recorded>> {
                let mut seen = HashSet::new();
                let firsts: Vec<&TaskOutcome> = outcomes.iter().filter(|o| seen.insert(o.task_id)).collect();
                let mut updated: HashMap<TaskId, TaskInfo> = HashMap::with_capacity(firsts.len());
                for chunk in firsts.chunks(ROWS_PER_UPDATE) {
                    let mut query: QueryBuilder<$db> = QueryBuilder::new(
                        "UPDATE tasks SET state = o_state, result = o_result, error = o_error, worker = COALESCE(o_worker, worker), started_at = COALESCE(started_at, o_started_at), finished_at = o_finished_at FROM (",
                    );
                    for (i, o) in chunk.iter().enumerate() {
                        let state = match o.status {
                            OutcomeStatus::Success => TaskState::Success,
                            OutcomeStatus::Failed => TaskState::Failed,
                        };
                        let result = o
                            .result
                            .as_ref()
                            .map(|r| serde_json::to_string(r).expect("result serializes"));
                        if i > 0 {
                            query.push(" UNION ALL ");
                        }
                        query.push("SELECT ").push_bind(o.task_id.to_string());
                        query.push(" AS o_id, ").push_bind(state.as_str());
                        query.push(" AS o_state, ").push_bind(result);
                        query.push(" AS o_result, ").push_bind(o.error.clone());
                        query.push(" AS o_error, ").push_bind(o.worker.clone());
                        query.push(" AS o_worker, CAST(").push_bind(o.started_at.map(to_millis));
                        query.push(" AS BIGINT) AS o_started_at, CAST(").push_bind(to_millis(o.finished_at));
                        query.push(" AS BIGINT) AS o_finished_at");
                    }
                    query.push(format!(
                        ") AS outcomes WHERE id = o_id AND state NOT IN {FINAL_STATES} RETURNING {TASK_COLUMNS}"
                    ));
                    let rows: Vec<TaskRow> = query.build_query_as().fetch_all(&mut *conn).await?;
                    for row in rows {
                        let task = row.into_info()?;
                        updated.insert(task.id, task);
                    }
                }
                let mut recorded = Vec::with_capacity(outcomes.len());
                for o in outcomes {
                    if let Some(task) = updated.remove(&o.task_id) {
                        recorded.push(Recorded::First(Box::new(task)));
                        continue;
                    }
                    let dup = sqlx::query("UPDATE tasks SET duplicate_results = duplicate_results + 1 WHERE id = $1")
                        .bind(o.task_id.to_string())
                        .execute(&mut *conn)
                        .await?;
                    recorded.push(if dup.rows_affected() == 1 { Recorded::Duplicate } else { Recorded::Unknown });
                }
                Ok(recorded)
            }
        }
    };
}

impl_compute_store!(SqliteStore, sqlx::Sqlite);
impl_compute_store!(PostgresStore, sqlx::Postgres);
