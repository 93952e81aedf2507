//! Persistent state of search: indexes (their settings and lifecycle, not
//! their entries, which live in the search engine), the roles on them, and
//! the queue of tasks that change them. Same pattern as the other tables:
//! SQL written once, instantiated for both back ends by `impl_search_store!`.
//!
//! The store keeps rows; who may change them, and in what order tasks
//! apply, is decided by `crate::search`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lattice_protocol::search::{
    IndexRole, IndexRoleName, IndexStatus, RejectedEntry, SearchTaskKind, SearchTaskState,
};
use lattice_protocol::{IdentityId, SearchIndexId, SearchTaskId};

mod rows;

use rows::*;

use super::sql::{PostgresStore, SqliteStore};
use super::{corrupt, from_millis, to_millis, uuid_of, StoreResult};

/// An index as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchIndexRecord {
    pub id: SearchIndexId,
    pub display_name: String,
    pub description: String,
    pub owner: IdentityId,
    pub status: IndexStatus,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub purge_after: Option<DateTime<Utc>>,
}

/// A task as stored. `seq` is assigned by the store at insertion and
/// orders the tasks of an index.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchTaskRecord {
    pub id: SearchTaskId,
    pub seq: i64,
    pub index_id: SearchIndexId,
    pub kind: SearchTaskKind,
    pub state: SearchTaskState,
    pub submitted_by: IdentityId,
    /// The request to apply, as JSON text.
    pub payload: String,
    pub entries_total: u64,
    pub entries_applied: u64,
    pub rejected: Vec<RejectedEntry>,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchTaskOutcome {
    pub state: SearchTaskState,
    pub entries_applied: u64,
    pub rejected: Vec<RejectedEntry>,
    pub message: Option<String>,
    pub completed_at: DateTime<Utc>,
}

#[async_trait]
pub trait SearchStore: Send + Sync + 'static {
    /// Creates an index with its owner's role row, in one transaction.
    async fn insert_search_index(
        &self,
        index: &SearchIndexRecord,
        owner_role: &IndexRole,
    ) -> StoreResult<()>;
    async fn search_index(&self, id: SearchIndexId) -> StoreResult<Option<SearchIndexRecord>>;
    /// Name, description, status and the deletion times; false if gone.
    async fn update_search_index(&self, index: &SearchIndexRecord) -> StoreResult<bool>;
    /// Indexes (open or deleted) on which one of `principals` has a role.
    async fn search_indexes_with_role(
        &self,
        principals: &[String],
    ) -> StoreResult<Vec<SearchIndexRecord>>;
    /// Deleted indexes whose grace period ended before `now`.
    async fn search_indexes_to_purge(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<SearchIndexRecord>>;
    /// Removes an index's rows (roles and tasks included); false if gone.
    async fn delete_search_index(&self, id: SearchIndexId) -> StoreResult<bool>;

    /// `Conflict` if the principal already holds that role.
    async fn insert_search_role(&self, role: &IndexRole) -> StoreResult<()>;
    async fn search_roles(&self, index: SearchIndexId) -> StoreResult<Vec<IndexRole>>;
    async fn delete_search_role(&self, index: SearchIndexId, id: uuid::Uuid) -> StoreResult<bool>;

    /// Queues a task; returns it with its `seq`.
    async fn insert_search_task(&self, task: &SearchTaskRecord) -> StoreResult<SearchTaskRecord>;
    async fn search_task(&self, id: SearchTaskId) -> StoreResult<Option<SearchTaskRecord>>;
    /// The newest `limit` tasks of an index, newest first (payloads left empty).
    async fn search_tasks(
        &self,
        index: SearchIndexId,
        limit: u32,
    ) -> StoreResult<Vec<SearchTaskRecord>>;
    /// Indexes with a `pending` or `progress` task, oldest task first.
    async fn indexes_with_unfinished_tasks(&self) -> StoreResult<Vec<SearchIndexId>>;
    /// The index's unfinished task with the lowest `seq`.
    async fn next_search_task(&self, index: SearchIndexId)
        -> StoreResult<Option<SearchTaskRecord>>;
    /// Marks a task `progress` if it is still in state `from`; false if
    /// someone else changed it first (another replica claimed it).
    async fn start_search_task(
        &self,
        id: SearchTaskId,
        from: SearchTaskState,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records the end of a task and drops its payload.
    async fn finish_search_task(
        &self,
        id: SearchTaskId,
        outcome: &SearchTaskOutcome,
    ) -> StoreResult<()>;
}

fn text_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("a unit enum serializes as a string")
}

fn parse_text<T: serde::de::DeserializeOwned>(table: &'static str, text: &str) -> StoreResult<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|e| corrupt(table, format!("`{text}`: {e}")))
}

/// `$first, $first+1, ...` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const INDEX_COLUMNS: &str =
    "id, display_name, description, owner_id, status, created_at, deleted_at, purge_after";
const ROLE_COLUMNS: &str = "id, index_id, principal, role, created_at";
const TASK_COLUMNS: &str = "seq, id, index_id, kind, state, submitted_by, payload, entries_total, entries_applied, rejected, message, created_at, started_at, completed_at";
/// The task columns with an empty payload, for listings.
const TASK_COLUMNS_NO_PAYLOAD: &str = "seq, id, index_id, kind, state, submitted_by, '' AS payload, entries_total, entries_applied, rejected, message, created_at, started_at, completed_at";

macro_rules! impl_search_store {
    ($store:ty) => {
        #[async_trait]
        impl SearchStore for $store {
            async fn insert_search_index(
                &self,
                index: &SearchIndexRecord,
                owner_role: &IndexRole,
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(&format!(
                    "INSERT INTO search_indexes ({INDEX_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ))
                .bind(index.id.to_string())
                .bind(&index.display_name)
                .bind(&index.description)
                .bind(index.owner.to_string())
                .bind(text_of(&index.status))
                .bind(to_millis(index.created_at))
                .bind(index.deleted_at.map(to_millis))
                .bind(index.purge_after.map(to_millis))
                .execute(&mut *tx)
                .await?;
                sqlx::query(&format!(
                    "INSERT INTO search_index_roles ({ROLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
                ))
                .bind(owner_role.id.to_string())
                .bind(owner_role.index_id.to_string())
                .bind(&owner_role.principal)
                .bind(text_of(&owner_role.role))
                .bind(to_millis(owner_role.created_at))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn search_index(
                &self,
                id: SearchIndexId,
            ) -> StoreResult<Option<SearchIndexRecord>> {
                let row: Option<IndexRow> = sqlx::query_as(&format!(
                    "SELECT {INDEX_COLUMNS} FROM search_indexes WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(IndexRow::into_record).transpose()
            }

            async fn update_search_index(&self, index: &SearchIndexRecord) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE search_indexes SET display_name = $2, description = $3, status = $4, deleted_at = $5, purge_after = $6 WHERE id = $1",
                )
                .bind(index.id.to_string())
                .bind(&index.display_name)
                .bind(&index.description)
                .bind(text_of(&index.status))
                .bind(index.deleted_at.map(to_millis))
                .bind(index.purge_after.map(to_millis))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn search_indexes_with_role(
                &self,
                principals: &[String],
            ) -> StoreResult<Vec<SearchIndexRecord>> {
                if principals.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "SELECT {INDEX_COLUMNS} FROM search_indexes WHERE id IN (
                         SELECT index_id FROM search_index_roles WHERE principal IN ({})
                     ) ORDER BY created_at, id",
                    placeholders(1, principals.len())
                );
                let mut query = sqlx::query_as::<_, IndexRow>(&sql);
                for p in principals {
                    query = query.bind(p);
                }
                let rows = query.fetch_all(&self.pool).await?;
                rows.into_iter().map(IndexRow::into_record).collect()
            }

            async fn search_indexes_to_purge(
                &self,
                now: DateTime<Utc>,
            ) -> StoreResult<Vec<SearchIndexRecord>> {
                let rows: Vec<IndexRow> = sqlx::query_as(&format!(
                    "SELECT {INDEX_COLUMNS} FROM search_indexes WHERE status = 'deleted' AND purge_after <= $1 ORDER BY purge_after"
                ))
                .bind(to_millis(now))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(IndexRow::into_record).collect()
            }

            async fn delete_search_index(&self, id: SearchIndexId) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                // Explicit rather than through ON DELETE (see delete_group).
                for table in ["search_tasks", "search_index_roles"] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE index_id = $1"))
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                let done = sqlx::query("DELETE FROM search_indexes WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_search_role(&self, role: &IndexRole) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO search_index_roles ({ROLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
                ))
                .bind(role.id.to_string())
                .bind(role.index_id.to_string())
                .bind(&role.principal)
                .bind(text_of(&role.role))
                .bind(to_millis(role.created_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn search_roles(&self, index: SearchIndexId) -> StoreResult<Vec<IndexRole>> {
                let rows: Vec<RoleRow> = sqlx::query_as(&format!(
                    "SELECT {ROLE_COLUMNS} FROM search_index_roles WHERE index_id = $1 ORDER BY created_at, id"
                ))
                .bind(index.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(RoleRow::into_role).collect()
            }

            async fn delete_search_role(
                &self,
                index: SearchIndexId,
                id: uuid::Uuid,
            ) -> StoreResult<bool> {
                let done =
                    sqlx::query("DELETE FROM search_index_roles WHERE index_id = $1 AND id = $2")
                        .bind(index.to_string())
                        .bind(id.to_string())
                        .execute(&self.pool)
                        .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_search_task(
                &self,
                task: &SearchTaskRecord,
            ) -> StoreResult<SearchTaskRecord> {
                let (seq,): (i64,) = sqlx::query_as(
                    "INSERT INTO search_tasks (id, index_id, kind, state, submitted_by, payload, entries_total, entries_applied, rejected, message, created_at, started_at, completed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING seq",
                )
                .bind(task.id.to_string())
                .bind(task.index_id.to_string())
                .bind(text_of(&task.kind))
                .bind(text_of(&task.state))
                .bind(task.submitted_by.to_string())
                .bind(&task.payload)
                .bind(task.entries_total as i64)
                .bind(task.entries_applied as i64)
                .bind(serde_json::to_string(&task.rejected).expect("rejected entries serialize"))
                .bind(task.message.clone())
                .bind(to_millis(task.created_at))
                .bind(task.started_at.map(to_millis))
                .bind(task.completed_at.map(to_millis))
                .fetch_one(&self.pool)
                .await?;
                Ok(SearchTaskRecord {
                    seq,
                    ..task.clone()
                })
            }

            async fn search_task(&self, id: SearchTaskId) -> StoreResult<Option<SearchTaskRecord>> {
                let row: Option<TaskRow> = sqlx::query_as(&format!(
                    "SELECT {TASK_COLUMNS} FROM search_tasks WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(TaskRow::into_record).transpose()
            }

            async fn search_tasks(
                &self,
                index: SearchIndexId,
                limit: u32,
            ) -> StoreResult<Vec<SearchTaskRecord>> {
                let rows: Vec<TaskRow> = sqlx::query_as(&format!(
                    "SELECT {TASK_COLUMNS_NO_PAYLOAD} FROM search_tasks WHERE index_id = $1 ORDER BY seq DESC LIMIT $2"
                ))
                .bind(index.to_string())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TaskRow::into_record).collect()
            }

            async fn indexes_with_unfinished_tasks(&self) -> StoreResult<Vec<SearchIndexId>> {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT index_id, MIN(seq) AS first_seq FROM search_tasks
                     WHERE state IN ('pending', 'progress') GROUP BY index_id ORDER BY first_seq",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|(id, _)| uuid_of("search_tasks", id).map(SearchIndexId))
                    .collect()
            }

            async fn next_search_task(
                &self,
                index: SearchIndexId,
            ) -> StoreResult<Option<SearchTaskRecord>> {
                let row: Option<TaskRow> = sqlx::query_as(&format!(
                    "SELECT {TASK_COLUMNS} FROM search_tasks
                     WHERE index_id = $1 AND state IN ('pending', 'progress') ORDER BY seq LIMIT 1"
                ))
                .bind(index.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(TaskRow::into_record).transpose()
            }

            async fn start_search_task(
                &self,
                id: SearchTaskId,
                from: SearchTaskState,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE search_tasks SET state = 'progress', started_at = $2 WHERE id = $1 AND state = $3",
                )
                .bind(id.to_string())
                .bind(to_millis(at))
                .bind(text_of(&from))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn finish_search_task(
                &self,
                id: SearchTaskId,
                outcome: &SearchTaskOutcome,
            ) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE search_tasks SET state = $2, entries_applied = $3, rejected = $4, message = $5, completed_at = $6, payload = ''
                     WHERE id = $1",
                )
                .bind(id.to_string())
                .bind(text_of(&outcome.state))
                .bind(outcome.entries_applied as i64)
                .bind(serde_json::to_string(&outcome.rejected).expect("rejected entries serialize"))
                .bind(outcome.message.clone())
                .bind(to_millis(outcome.completed_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }
    };
}

impl_search_store!(SqliteStore);
impl_search_store!(PostgresStore);

/// A role's wire name (`writer`, `admin`, `owner`), for messages.
pub fn role_name(role: IndexRoleName) -> String {
    text_of(&role)
}
