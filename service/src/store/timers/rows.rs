//! The timers tables' rows as the database returns them, and their
//! conversion to records (an undecodable row is `StoreError::Corrupt`).

use super::*;

fn json_of<T: serde::de::DeserializeOwned>(table: &'static str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(table, format!("bad JSON `{text}`: {e}")))
}

fn enum_of<T: serde::de::DeserializeOwned>(table: &'static str, text: &str) -> StoreResult<T> {
    serde_json::from_value(Value::String(text.to_owned()))
        .map_err(|e| corrupt(table, format!("`{text}`: {e}")))
}

fn count_of(table: &'static str, n: i64) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| corrupt(table, format!("negative count {n}")))
}

#[derive(sqlx::FromRow)]
pub(super) struct TimerRow {
    id: String,
    owner_id: String,
    name: String,
    kind: String,
    schedule: String,
    flow_id: Option<String>,
    body: String,
    status: String,
    inactive_cause: Option<String>,
    inactive_detail: Option<String>,
    next_due: Option<i64>,
    ticks: i64,
    runs: i64,
    errors: i64,
    skips: i64,
    last_error: Option<String>,
    last_ran_at: Option<i64>,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

impl TimerRow {
    pub(super) fn into_record(self) -> StoreResult<TimerRecord> {
        const T: &str = "timers";
        Ok(TimerRecord {
            id: TimerId(uuid_of(T, &self.id)?),
            owner: IdentityId(uuid_of(T, &self.owner_id)?),
            name: self.name,
            kind: enum_of(T, &self.kind)?,
            schedule: json_of(T, &self.schedule)?,
            flow_id: self
                .flow_id
                .map(|f| uuid_of(T, &f).map(FlowId))
                .transpose()?,
            body: json_of(T, &self.body)?,
            status: enum_of(T, &self.status)?,
            inactive_reason: self.inactive_cause.map(|cause| InactiveReason {
                cause,
                detail: self.inactive_detail,
            }),
            next_due: self.next_due.map(from_millis),
            ticks: count_of(T, self.ticks)?,
            runs: count_of(T, self.runs)?,
            errors: count_of(T, self.errors)?,
            skips: count_of(T, self.skips)?,
            last_error: self.last_error,
            last_ran_at: self.last_ran_at.map(from_millis),
            version: count_of(T, self.version)?,
            created_at: from_millis(self.created_at),
            updated_at: from_millis(self.updated_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct TimerRunRow {
    timer_id: String,
    seq: i64,
    due_at: i64,
    ran_at: Option<i64>,
    status: String,
    resource_id: Option<String>,
    details: String,
    error: Option<String>,
    attempts: i64,
    next_check_at: Option<i64>,
    completed_at: Option<i64>,
}

impl TimerRunRow {
    pub(super) fn into_record(self) -> StoreResult<TimerRunRecord> {
        const T: &str = "timer_runs";
        Ok(TimerRunRecord {
            timer_id: TimerId(uuid_of(T, &self.timer_id)?),
            seq: count_of(T, self.seq)?,
            due_at: from_millis(self.due_at),
            ran_at: self.ran_at.map(from_millis),
            status: enum_of(T, &self.status)?,
            resource_id: self.resource_id,
            details: json_of(T, &self.details)?,
            error: self.error,
            attempts: u32::try_from(self.attempts)
                .map_err(|_| corrupt(T, format!("bad attempts {}", self.attempts)))?,
            next_check_at: self.next_check_at.map(from_millis),
            completed_at: self.completed_at.map(from_millis),
        })
    }
}
