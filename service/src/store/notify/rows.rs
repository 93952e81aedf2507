//! The notification tables' rows as the database returns them, and their
//! conversion to records (an undecodable row is `StoreError::Corrupt`).

use super::*;

/// A JSON list of event kinds.
pub(super) fn kinds_of(table: &'static str, text: &str) -> StoreResult<Vec<EventKind>> {
    serde_json::from_str(text).map_err(|e| corrupt(table, format!("bad event kinds `{text}`: {e}")))
}

fn kind_of(table: &'static str, text: &str) -> StoreResult<EventKind> {
    text.parse()
        .map_err(|e: lattice_protocol::notify::UnknownEventKind| corrupt(table, e))
}

fn status_of(table: &'static str, text: &str) -> StoreResult<DeliveryStatus> {
    match text {
        "pending" => Ok(DeliveryStatus::Pending),
        "succeeded" => Ok(DeliveryStatus::Succeeded),
        "failed" => Ok(DeliveryStatus::Failed),
        other => Err(corrupt(table, format!("bad status `{other}`"))),
    }
}

fn count_of(table: &'static str, n: i64) -> StoreResult<u32> {
    u32::try_from(n).map_err(|_| corrupt(table, format!("bad count {n}")))
}

#[derive(sqlx::FromRow)]
pub(super) struct WebhookRow {
    id: String,
    owner_id: String,
    url: String,
    events: String,
    secret: String,
    description: Option<String>,
    created_at: i64,
}

impl WebhookRow {
    pub(super) fn into_record(self) -> StoreResult<WebhookRecord> {
        const T: &str = "webhooks";
        Ok(WebhookRecord {
            id: WebhookId(uuid_of(T, &self.id)?),
            owner: IdentityId(uuid_of(T, &self.owner_id)?),
            url: self.url,
            events: kinds_of(T, &self.events)?,
            secret: self.secret,
            description: self.description,
            created_at: from_millis(self.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct DeliveryRow {
    id: String,
    webhook_id: String,
    event_id: String,
    event_kind: String,
    body: String,
    status: String,
    attempts: i64,
    next_attempt_at: Option<i64>,
    created_at: i64,
    completed_at: Option<i64>,
}

impl DeliveryRow {
    pub(super) fn into_record(self) -> StoreResult<DeliveryRecord> {
        const T: &str = "webhook_deliveries";
        Ok(DeliveryRecord {
            id: DeliveryId(uuid_of(T, &self.id)?),
            webhook_id: WebhookId(uuid_of(T, &self.webhook_id)?),
            event_id: EventId(uuid_of(T, &self.event_id)?),
            event: kind_of(T, &self.event_kind)?,
            body: self.body,
            status: status_of(T, &self.status)?,
            attempts: count_of(T, self.attempts)?,
            next_attempt_at: self.next_attempt_at.map(from_millis),
            created_at: from_millis(self.created_at),
            completed_at: self.completed_at.map(from_millis),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AttemptRow {
    delivery_id: String,
    attempt: i64,
    at: i64,
    status_code: Option<i64>,
    error: Option<String>,
    duration_ms: i64,
}

impl AttemptRow {
    pub(super) fn into_record(self) -> StoreResult<AttemptRecord> {
        const T: &str = "webhook_attempts";
        Ok(AttemptRecord {
            delivery_id: DeliveryId(uuid_of(T, &self.delivery_id)?),
            attempt: count_of(T, self.attempt)?,
            at: from_millis(self.at),
            status_code: self
                .status_code
                .map(|c| u16::try_from(c).map_err(|_| corrupt(T, format!("bad status code {c}"))))
                .transpose()?,
            error: self.error,
            duration_ms: u64::try_from(self.duration_ms).unwrap_or(0),
        })
    }
}
