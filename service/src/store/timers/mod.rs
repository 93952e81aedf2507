//! Persistent state of timers: the timer (what it starts, its schedule,
//! where it stands) and one row per tick. Same pattern as the other
//! tables: SQL written once, instantiated for both back ends by
//! `impl_timer_store!`.
//!
//! The one invariant concurrent replicas rely on: every write of a timer
//! row is a compare-and-set on its `version` ([`TimerStore::save_timer`]),
//! and a tick's run row is written in the same transaction, so of several
//! replicas that see a tick due exactly one records it. When to tick and
//! who may see a timer is decided by `crate::timers`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lattice_protocol::timers::{InactiveReason, Schedule, TimerKind, TimerRunStatus, TimerStatus};
use lattice_protocol::{FlowId, IdentityId, TimerId};
use serde_json::Value;

mod rows;

use rows::*;

use super::sql::{PostgresStore, SqliteStore};
use super::{corrupt, from_millis, to_millis, uuid_of, StoreResult};

/// A timer as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TimerRecord {
    pub id: TimerId,
    /// Every tick acts as this identity.
    pub owner: IdentityId,
    pub name: String,
    pub kind: TimerKind,
    pub schedule: Schedule,
    pub flow_id: Option<FlowId>,
    pub body: Value,
    pub status: TimerStatus,
    pub inactive_reason: Option<InactiveReason>,
    pub next_due: Option<DateTime<Utc>>,
    /// Ticks so far: the seq of the newest timer run.
    pub ticks: u64,
    pub runs: u64,
    pub errors: u64,
    pub skips: u64,
    pub last_error: Option<String>,
    pub last_ran_at: Option<DateTime<Utc>>,
    /// Bumped by every save; a save names the version it read.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One tick of a timer as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TimerRunRecord {
    pub timer_id: TimerId,
    pub seq: u64,
    pub due_at: DateTime<Utc>,
    pub ran_at: Option<DateTime<Utc>>,
    pub status: TimerRunStatus,
    pub resource_id: Option<String>,
    pub details: Value,
    pub error: Option<String>,
    pub attempts: u32,
    /// When a replica looks at it next: retry a pending start, poll an
    /// active one. `None` once final.
    pub next_check_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait TimerStore: Send + Sync + 'static {
    async fn insert_timer(&self, timer: &TimerRecord) -> StoreResult<()>;
    async fn timer(&self, id: TimerId) -> StoreResult<Option<TimerRecord>>;
    /// Timers owned by one of `owners`, newest first; deleted ones only
    /// when `deleted`.
    async fn timers_of(
        &self,
        owners: &[IdentityId],
        deleted: bool,
    ) -> StoreResult<Vec<TimerRecord>>;
    /// Writes every field of `timer` with version `expected + 1`, and
    /// inserts or replaces `run` (by timer and seq), in one transaction,
    /// only if the stored version is still `expected`; false if it is not
    /// (someone else changed the timer: read it again) or it is gone.
    async fn save_timer(
        &self,
        timer: &TimerRecord,
        expected: u64,
        run: Option<&TimerRunRecord>,
    ) -> StoreResult<bool>;
    /// Active timers due at `now`, the most overdue first.
    async fn due_timers(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<TimerRecord>>;
    /// The earliest due time of an active timer.
    async fn earliest_due(&self) -> StoreResult<Option<DateTime<Utc>>>;

    async fn timer_run(&self, timer: TimerId, seq: u64) -> StoreResult<Option<TimerRunRecord>>;
    /// Rewrites a run's progress, only if it is not final yet (a final
    /// run never changes again); false if it was.
    async fn update_timer_run(&self, run: &TimerRunRecord) -> StoreResult<bool>;
    /// Runs of a timer with `seq < before` (all when `None`), newest first.
    async fn timer_runs(
        &self,
        timer: TimerId,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<TimerRunRecord>>;
    /// The pending or active runs of one timer, oldest first.
    async fn open_runs_of_timer(&self, timer: TimerId) -> StoreResult<Vec<TimerRunRecord>>;
    /// Pending or active runs (of any timer) to look at by `now`.
    async fn open_timer_runs(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<TimerRunRecord>>;
    /// The earliest `next_check_at` of an open run.
    async fn earliest_check(&self) -> StoreResult<Option<DateTime<Utc>>>;
}

fn bigint(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

const TIMER_COLUMNS: &str = "id, owner_id, name, kind, schedule, flow_id, body, status, inactive_cause, inactive_detail, next_due, ticks, runs, errors, skips, last_error, last_ran_at, version, created_at, updated_at";
const RUN_COLUMNS: &str = "timer_id, seq, due_at, ran_at, status, resource_id, details, error, attempts, next_check_at, completed_at";

/// The statuses of runs that may still change.
fn open_statuses() -> String {
    [TimerRunStatus::Pending, TimerRunStatus::Active]
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

macro_rules! impl_timer_store {
    ($store:ty) => {
        #[async_trait]
        impl TimerStore for $store {
            async fn insert_timer(&self, timer: &TimerRecord) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO timers ({TIMER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                     $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
                ))
                .bind(timer.id.to_string())
                .bind(timer.owner.to_string())
                .bind(&timer.name)
                .bind(timer.kind.as_str())
                .bind(serde_json::to_string(&timer.schedule).expect("a schedule serializes"))
                .bind(timer.flow_id.map(|f| f.to_string()))
                .bind(timer.body.to_string())
                .bind(timer.status.as_str())
                .bind(timer.inactive_reason.as_ref().map(|r| r.cause.clone()))
                .bind(timer.inactive_reason.as_ref().and_then(|r| r.detail.clone()))
                .bind(timer.next_due.map(to_millis))
                .bind(bigint(timer.ticks))
                .bind(bigint(timer.runs))
                .bind(bigint(timer.errors))
                .bind(bigint(timer.skips))
                .bind(timer.last_error.clone())
                .bind(timer.last_ran_at.map(to_millis))
                .bind(bigint(timer.version))
                .bind(to_millis(timer.created_at))
                .bind(to_millis(timer.updated_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn timer(&self, id: TimerId) -> StoreResult<Option<TimerRecord>> {
                let row: Option<TimerRow> =
                    sqlx::query_as(&format!("SELECT {TIMER_COLUMNS} FROM timers WHERE id = $1"))
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TimerRow::into_record).transpose()
            }

            async fn timers_of(
                &self,
                owners: &[IdentityId],
                deleted: bool,
            ) -> StoreResult<Vec<TimerRecord>> {
                if owners.is_empty() {
                    return Ok(Vec::new());
                }
                let list = (1..=owners.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let status = if deleted {
                    String::new()
                } else {
                    format!(" AND status <> '{}'", TimerStatus::Deleted.as_str())
                };
                let sql = format!(
                    "SELECT {TIMER_COLUMNS} FROM timers WHERE owner_id IN ({list}){status}
                     ORDER BY created_at DESC, id DESC"
                );
                let mut query = sqlx::query_as::<_, TimerRow>(&sql);
                for owner in owners {
                    query = query.bind(owner.to_string());
                }
                let rows = query.fetch_all(&self.pool).await?;
                rows.into_iter().map(TimerRow::into_record).collect()
            }

            async fn save_timer(
                &self,
                timer: &TimerRecord,
                expected: u64,
                run: Option<&TimerRunRecord>,
            ) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "UPDATE timers SET name = $3, status = $4, inactive_cause = $5, inactive_detail = $6,
                     next_due = $7, ticks = $8, runs = $9, errors = $10, skips = $11, last_error = $12,
                     last_ran_at = $13, updated_at = $14, version = $2 + 1
                     WHERE id = $1 AND version = $2",
                )
                .bind(timer.id.to_string())
                .bind(bigint(expected))
                .bind(&timer.name)
                .bind(timer.status.as_str())
                .bind(timer.inactive_reason.as_ref().map(|r| r.cause.clone()))
                .bind(timer.inactive_reason.as_ref().and_then(|r| r.detail.clone()))
                .bind(timer.next_due.map(to_millis))
                .bind(bigint(timer.ticks))
                .bind(bigint(timer.runs))
                .bind(bigint(timer.errors))
                .bind(bigint(timer.skips))
                .bind(timer.last_error.clone())
                .bind(timer.last_ran_at.map(to_millis))
                .bind(to_millis(timer.updated_at))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    // Dropping the transaction rolls it back.
                    return Ok(false);
                }
                if let Some(run) = run {
                    sqlx::query(&format!(
                        "INSERT INTO timer_runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                         ON CONFLICT (timer_id, seq) DO UPDATE SET ran_at = excluded.ran_at,
                         status = excluded.status, resource_id = excluded.resource_id,
                         details = excluded.details, error = excluded.error, attempts = excluded.attempts,
                         next_check_at = excluded.next_check_at, completed_at = excluded.completed_at"
                    ))
                    .bind(run.timer_id.to_string())
                    .bind(bigint(run.seq))
                    .bind(to_millis(run.due_at))
                    .bind(run.ran_at.map(to_millis))
                    .bind(run.status.as_str())
                    .bind(run.resource_id.clone())
                    .bind(run.details.to_string())
                    .bind(run.error.clone())
                    .bind(i64::from(run.attempts))
                    .bind(run.next_check_at.map(to_millis))
                    .bind(run.completed_at.map(to_millis))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn due_timers(
                &self,
                now: DateTime<Utc>,
                limit: u32,
            ) -> StoreResult<Vec<TimerRecord>> {
                let rows: Vec<TimerRow> = sqlx::query_as(&format!(
                    "SELECT {TIMER_COLUMNS} FROM timers WHERE status = $1 AND next_due <= $2
                     ORDER BY next_due LIMIT $3"
                ))
                .bind(TimerStatus::Active.as_str())
                .bind(to_millis(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TimerRow::into_record).collect()
            }

            async fn earliest_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
                let at: Option<i64> = sqlx::query_scalar(
                    "SELECT MIN(next_due) FROM timers WHERE status = $1",
                )
                .bind(TimerStatus::Active.as_str())
                .fetch_one(&self.pool)
                .await?;
                Ok(at.map(from_millis))
            }

            async fn timer_run(
                &self,
                timer: TimerId,
                seq: u64,
            ) -> StoreResult<Option<TimerRunRecord>> {
                let row: Option<TimerRunRow> = sqlx::query_as(&format!(
                    "SELECT {RUN_COLUMNS} FROM timer_runs WHERE timer_id = $1 AND seq = $2"
                ))
                .bind(timer.to_string())
                .bind(bigint(seq))
                .fetch_optional(&self.pool)
                .await?;
                row.map(TimerRunRow::into_record).transpose()
            }

            async fn update_timer_run(&self, run: &TimerRunRecord) -> StoreResult<bool> {
                let done = sqlx::query(&format!(
                    "UPDATE timer_runs SET ran_at = $3, status = $4, resource_id = $5, details = $6,
                     error = $7, attempts = $8, next_check_at = $9, completed_at = $10
                     WHERE timer_id = $1 AND seq = $2 AND status IN ({})",
                    open_statuses()
                ))
                .bind(run.timer_id.to_string())
                .bind(bigint(run.seq))
                .bind(run.ran_at.map(to_millis))
                .bind(run.status.as_str())
                .bind(run.resource_id.clone())
                .bind(run.details.to_string())
                .bind(run.error.clone())
                .bind(i64::from(run.attempts))
                .bind(run.next_check_at.map(to_millis))
                .bind(run.completed_at.map(to_millis))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn timer_runs(
                &self,
                timer: TimerId,
                before: Option<u64>,
                limit: u32,
            ) -> StoreResult<Vec<TimerRunRecord>> {
                let rows: Vec<TimerRunRow> = sqlx::query_as(&format!(
                    "SELECT {RUN_COLUMNS} FROM timer_runs WHERE timer_id = $1 AND seq < $2
                     ORDER BY seq DESC LIMIT $3"
                ))
                .bind(timer.to_string())
                .bind(before.map(bigint).unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TimerRunRow::into_record).collect()
            }

            async fn open_runs_of_timer(
                &self,
                timer: TimerId,
            ) -> StoreResult<Vec<TimerRunRecord>> {
                let rows: Vec<TimerRunRow> = sqlx::query_as(&format!(
                    "SELECT {RUN_COLUMNS} FROM timer_runs WHERE timer_id = $1 AND status IN ({})
                     ORDER BY seq",
                    open_statuses()
                ))
                .bind(timer.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TimerRunRow::into_record).collect()
            }

            async fn open_timer_runs(
                &self,
                now: DateTime<Utc>,
                limit: u32,
            ) -> StoreResult<Vec<TimerRunRecord>> {
                let rows: Vec<TimerRunRow> = sqlx::query_as(&format!(
                    "SELECT {RUN_COLUMNS} FROM timer_runs WHERE status IN ({}) AND next_check_at <= $1
                     ORDER BY next_check_at LIMIT $2",
                    open_statuses()
                ))
                .bind(to_millis(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TimerRunRow::into_record).collect()
            }

            async fn earliest_check(&self) -> StoreResult<Option<DateTime<Utc>>> {
                let at: Option<i64> = sqlx::query_scalar(&format!(
                    "SELECT MIN(next_check_at) FROM timer_runs WHERE status IN ({})",
                    open_statuses()
                ))
                .fetch_one(&self.pool)
                .await?;
                Ok(at.map(from_millis))
            }
        }
    };
}

impl_timer_store!(SqliteStore);
impl_timer_store!(PostgresStore);
