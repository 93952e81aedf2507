//! Persistent state of notifications: each identity's email preferences,
//! webhooks, and the durable queue of webhook deliveries with a row per
//! attempt. Same pattern as the other tables: SQL written once,
//! instantiated for both back ends by `impl_notify_store!`.
//!
//! The store guards the one invariant concurrent replicas rely on: a due
//! delivery is leased to one worker at a time ([`NotifyStore::claim_deliveries`]
//! sets the lease in the statement that picks the rows). Who may see which
//! webhook is decided by `crate::notify`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lattice_protocol::notify::{DeliveryStatus, EventKind};
use lattice_protocol::{DeliveryId, EventId, IdentityId, WebhookId};

mod rows;

use rows::*;

use super::sql::{PostgresStore, SqliteStore};
use super::{corrupt, from_millis, to_millis, uuid_of, StoreResult};

/// A webhook as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRecord {
    pub id: WebhookId,
    pub owner: IdentityId,
    pub url: String,
    pub events: Vec<EventKind>,
    /// The HMAC key deliveries are signed with.
    pub secret: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One event's delivery to one webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub event: EventKind,
    /// The JSON body, exactly as sent.
    pub body: String,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When a pending delivery is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// One attempt of a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    pub delivery_id: DeliveryId,
    /// 1 for the first.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// What an attempt leaves the delivery as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryOutcome {
    pub status: DeliveryStatus,
    /// When to try again (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait NotifyStore: Send + Sync + 'static {
    /// The kinds an identity chose to get by email; `None` if it never chose.
    async fn email_preferences(&self, identity: IdentityId) -> StoreResult<Option<Vec<EventKind>>>;
    /// Replaces an identity's email kinds.
    async fn set_email_preferences(
        &self,
        identity: IdentityId,
        kinds: &[EventKind],
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    async fn insert_webhook(&self, webhook: &WebhookRecord) -> StoreResult<()>;
    async fn webhook(&self, id: WebhookId) -> StoreResult<Option<WebhookRecord>>;
    /// An owner's webhooks, oldest first.
    async fn webhooks_of(&self, owner: IdentityId) -> StoreResult<Vec<WebhookRecord>>;
    /// Removes a webhook with its deliveries and their attempts; false if gone.
    async fn delete_webhook(&self, id: WebhookId) -> StoreResult<bool>;

    /// Inserts pending deliveries in one transaction.
    async fn insert_deliveries(&self, deliveries: &[DeliveryRecord]) -> StoreResult<()>;
    /// Leases up to `limit` pending deliveries due at `now` (and not
    /// leased by another worker past `now`) until `until`, oldest due first.
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// Appends an attempt and moves its delivery on (status, attempt count,
    /// next due time, completion; the lease dropped), in one transaction.
    async fn record_attempt(
        &self,
        attempt: &AttemptRecord,
        outcome: DeliveryOutcome,
    ) -> StoreResult<()>;
    /// A webhook's deliveries, newest first, each with its attempts.
    async fn deliveries_of(
        &self,
        webhook: WebhookId,
        limit: u32,
    ) -> StoreResult<Vec<(DeliveryRecord, Vec<AttemptRecord>)>>;
}

fn kinds_text(kinds: &[EventKind]) -> String {
    serde_json::to_string(kinds).expect("event kinds serialize")
}

fn status_text(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Succeeded => "succeeded",
        DeliveryStatus::Failed => "failed",
    }
}

const WEBHOOK_COLUMNS: &str = "id, owner_id, url, events, secret, description, created_at";
const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, event_kind, body, status, attempts, next_attempt_at, created_at, completed_at";
const ATTEMPT_COLUMNS: &str = "delivery_id, attempt, at, status_code, error, duration_ms";

/// `$claim_lock` ends the subquery that picks the deliveries
/// [`NotifyStore::claim_deliveries`] leases: PostgreSQL locks them and skips
/// those another replica is claiming; SQLite (one writer) needs nothing.
macro_rules! impl_notify_store {
    ($store:ty, $claim_lock:literal) => {
        #[async_trait]
        impl NotifyStore for $store {
            async fn email_preferences(
                &self,
                identity: IdentityId,
            ) -> StoreResult<Option<Vec<EventKind>>> {
                let text: Option<String> = sqlx::query_scalar(
                    "SELECT email_events FROM notify_preferences WHERE identity_id = $1",
                )
                .bind(identity.to_string())
                .fetch_optional(&self.pool)
                .await?;
                text.map(|t| kinds_of("notify_preferences", &t)).transpose()
            }

            async fn set_email_preferences(
                &self,
                identity: IdentityId,
                kinds: &[EventKind],
                at: DateTime<Utc>,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO notify_preferences (identity_id, email_events, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (identity_id) DO UPDATE SET email_events = $2, updated_at = $3",
                )
                .bind(identity.to_string())
                .bind(kinds_text(kinds))
                .bind(to_millis(at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn insert_webhook(&self, webhook: &WebhookRecord) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(webhook.id.to_string())
                .bind(webhook.owner.to_string())
                .bind(&webhook.url)
                .bind(kinds_text(&webhook.events))
                .bind(&webhook.secret)
                .bind(&webhook.description)
                .bind(to_millis(webhook.created_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn webhook(&self, id: WebhookId) -> StoreResult<Option<WebhookRecord>> {
                let row: Option<WebhookRow> = sqlx::query_as(&format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(WebhookRow::into_record).transpose()
            }

            async fn webhooks_of(&self, owner: IdentityId) -> StoreResult<Vec<WebhookRecord>> {
                let rows: Vec<WebhookRow> = sqlx::query_as(&format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE owner_id = $1 ORDER BY created_at, id"
                ))
                .bind(owner.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(WebhookRow::into_record).collect()
            }

            async fn delete_webhook(&self, id: WebhookId) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = $1)",
                )
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_deliveries(&self, deliveries: &[DeliveryRecord]) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                for d in deliveries {
                    sqlx::query(&format!(
                        "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                    ))
                    .bind(d.id.to_string())
                    .bind(d.webhook_id.to_string())
                    .bind(d.event_id.to_string())
                    .bind(d.event.as_str())
                    .bind(&d.body)
                    .bind(status_text(d.status))
                    .bind(i64::from(d.attempts))
                    .bind(d.next_attempt_at.map(to_millis))
                    .bind(to_millis(d.created_at))
                    .bind(d.completed_at.map(to_millis))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn claim_deliveries(
                &self,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
                limit: u32,
            ) -> StoreResult<Vec<DeliveryRecord>> {
                let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
                    "UPDATE webhook_deliveries SET lease_until = $1 WHERE id IN (
                         SELECT id FROM webhook_deliveries
                         WHERE status = 'pending' AND next_attempt_at <= $2
                           AND (lease_until IS NULL OR lease_until < $2)
                         ORDER BY next_attempt_at LIMIT $3 {}
                     ) RETURNING {DELIVERY_COLUMNS}",
                    $claim_lock
                ))
                .bind(to_millis(until))
                .bind(to_millis(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(DeliveryRow::into_record).collect()
            }

            async fn record_attempt(
                &self,
                attempt: &AttemptRecord,
                outcome: DeliveryOutcome,
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(&format!(
                    "INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
                ))
                .bind(attempt.delivery_id.to_string())
                .bind(i64::from(attempt.attempt))
                .bind(to_millis(attempt.at))
                .bind(attempt.status_code.map(i64::from))
                .bind(&attempt.error)
                .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
                let completed = (outcome.status != DeliveryStatus::Pending).then(|| to_millis(attempt.at));
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = $2, attempts = $3, next_attempt_at = $4,
                     lease_until = NULL, completed_at = $5 WHERE id = $1",
                )
                .bind(attempt.delivery_id.to_string())
                .bind(status_text(outcome.status))
                .bind(i64::from(attempt.attempt))
                .bind(outcome.next_attempt_at.map(to_millis))
                .bind(completed)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn deliveries_of(
                &self,
                webhook: WebhookId,
                limit: u32,
            ) -> StoreResult<Vec<(DeliveryRecord, Vec<AttemptRecord>)>> {
                let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                ))
                .bind(webhook.to_string())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                let deliveries = rows
                    .into_iter()
                    .map(DeliveryRow::into_record)
                    .collect::<StoreResult<Vec<_>>>()?;
                let attempts: Vec<AttemptRow> = sqlx::query_as(&format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id IN
                     (SELECT id FROM webhook_deliveries WHERE webhook_id = $1)
                     ORDER BY delivery_id, attempt"
                ))
                .bind(webhook.to_string())
                .fetch_all(&self.pool)
                .await?;
                let mut by_delivery: std::collections::HashMap<DeliveryId, Vec<AttemptRecord>> =
                    std::collections::HashMap::new();
                for row in attempts {
                    let attempt = row.into_record()?;
                    by_delivery.entry(attempt.delivery_id).or_default().push(attempt);
                }
                Ok(deliveries
                    .into_iter()
                    .map(|d| {
                        let attempts = by_delivery.remove(&d.id).unwrap_or_default();
                        (d, attempts)
                    })
                    .collect())
            }
        }
    };
}

impl_notify_store!(SqliteStore, "");
impl_notify_store!(PostgresStore, "FOR UPDATE SKIP LOCKED");
