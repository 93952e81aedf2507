//! The timers vocabulary: a timer starts a transfer, a task batch or a flow
//! run on a schedule (once, or every interval from a start until an end),
//! and records every tick as a timer run.
//!
//! Field names follow the anchor's Timers API v2 (`timer_type`,
//! `schedule.type` `once`/`recurring`, `interval_seconds`,
//! `end.condition` `time`/`iterations`, `number_of_runs`,
//! `inactive_reason.cause`, `next_run`, `last_ran_at`) so that documents
//! written for it need few changes. Durations on the command line are
//! written `90s`, `15m`, `1h`, `1d` ([`parse_duration`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{FlowId, TimerId};

/// Longest timer name, in characters.
pub const MAX_TIMER_NAME_CHARS: usize = 256;
/// Largest timer body (the transfer, task or run document), in bytes.
pub const MAX_TIMER_BODY_BYTES: usize = 256 * 1024;
/// Longest interval: one year.
pub const MAX_INTERVAL_SECONDS: u64 = 366 * 24 * 3600;

/// What a timer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TimerKind {
    /// A transfer; the body is a transfer document (the anchor's or Lattice's).
    Transfer,
    /// A task or a batch of tasks; the body is the compute action's body
    /// (`function_id`, `endpoint_id`, `args`/`kwargs` or `tasks`).
    Task,
    /// A flow run; the body is a run start (`body`, `label`, `tags`, ...).
    Flow,
}

impl TimerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Transfer => "transfer",
            TimerKind::Task => "task",
            TimerKind::Flow => "flow",
        }
    }
}

/// When a recurring timer stops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "condition", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ScheduleEnd {
    /// No tick after this time.
    Time { datetime: DateTime<Utc> },
    /// After this many runs (skipped ticks do not count).
    Iterations {
        #[serde(alias = "iterations")]
        count: u64,
    },
}

/// When a timer ticks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Schedule {
    /// One tick, at `datetime` (default: now).
    Once {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        datetime: Option<DateTime<Utc>>,
    },
    /// Ticks at `start`, `start + interval`, `start + 2 interval`, ...
    /// (`start` defaults to now) until `end`, if any.
    Recurring {
        interval_seconds: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<DateTime<Utc>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<ScheduleEnd>,
    },
}

/// `POST /v1/timers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimerCreate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(alias = "kind")]
    pub timer_type: TimerKind,
    pub schedule: Schedule,
    /// The flow a `flow` timer starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<FlowId>,
    /// What each tick starts (see [`TimerKind`]).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub body: Value,
}

/// `PATCH /v1/timers/{id}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimerUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A timer's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TimerStatus {
    /// Ticks as scheduled.
    Active,
    /// Paused by its owner, or by the service (see `inactive_reason`).
    Inactive,
    /// Its schedule is over.
    Ended,
    /// Deleted by its owner; it never ticks again.
    Deleted,
}

impl TimerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerStatus::Active => "active",
            TimerStatus::Inactive => "inactive",
            TimerStatus::Ended => "ended",
            TimerStatus::Deleted => "deleted",
        }
    }
}

/// Why a timer is inactive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InactiveReason {
    /// `user` (paused by its owner) or `access` (the service paused it:
    /// its owner may no longer start what it starts).
    pub cause: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A timer as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimerInfo {
    pub id: TimerId,
    pub name: String,
    pub timer_type: TimerKind,
    /// `identity:ID` of the owner, whom every tick acts as.
    pub owner: String,
    pub schedule: Schedule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<FlowId>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub body: Value,
    pub status: TimerStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_reason: Option<InactiveReason>,
    pub submitted_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ran_at: Option<DateTime<Utc>>,
    /// When it ticks next (none once ended, deleted or inactive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<DateTime<Utc>>,
    pub number_of_runs: u64,
    pub number_of_errors: u64,
    /// Ticks skipped because the previous run was still going.
    pub number_of_skips: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `GET /v1/timers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimerList {
    pub timers: Vec<TimerInfo>,
}

/// How one tick went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TimerRunStatus {
    /// Due, not started yet (or being retried after a transient error).
    Pending,
    /// Started; what it started is still going.
    Active,
    Succeeded,
    Failed,
    /// Not started: the previous run was still going.
    Skipped,
}

impl TimerRunStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TimerRunStatus::Succeeded | TimerRunStatus::Failed | TimerRunStatus::Skipped
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TimerRunStatus::Pending => "pending",
            TimerRunStatus::Active => "active",
            TimerRunStatus::Succeeded => "succeeded",
            TimerRunStatus::Failed => "failed",
            TimerRunStatus::Skipped => "skipped",
        }
    }
}

/// One tick of a timer: when it was due and ran, what it started, how
/// that ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimerRunInfo {
    /// 1 for the first tick, then 2, 3, ...
    pub seq: u64,
    pub due_at: DateTime<Utc>,
    /// When it was started (none while pending, and for skipped ticks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_at: Option<DateTime<Utc>>,
    pub status: TimerRunStatus,
    /// What it started: `action:<id>` of the built-in transfer or compute
    /// action (whose details name the transfer or the tasks), or
    /// `run:<id>` of a flow run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The transfer id, the task ids or the run's status, as reported.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Start attempts (more than one after transient errors).
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// `GET /v1/timers/{id}/runs`, newest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimerRunList {
    pub runs: Vec<TimerRunInfo>,
    /// Pass as `before` for the next (older) page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
}

/// Parses a duration written `90s`, `15m`, `1h`, `1d`, `2w`, a plain
/// number of seconds, or a sum such as `1h30m`.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bad = || {
        format!("`{text}` is not a duration; write a number with a unit, such as 90s, 15m, 1h, 1d")
    };
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// Writes seconds the way [`parse_duration`] reads them (`1d2h`, `90s`).
pub fn format_duration(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".into();
    }
    let mut left = seconds;
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("120"), Ok(120));
        assert_eq!(parse_duration(" 2w "), Ok(14 * 86_400));
        for bad in [
            "",
            "h",
            "1x",
            "1h30",
            "-5s",
            "1.5h",
            "99999999999999999999d",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("not a duration"), "{bad}: {e}");
        }
        for s in [1, 59, 60, 90, 3600, 5400, 86_400, 90_061] {
            assert_eq!(parse_duration(&format_duration(s)), Ok(s));
        }
        assert_eq!(format_duration(90), "1m30s");
        assert_eq!(format_duration(86_400), "1d");
    }

    #[test]
    fn schedules_read_the_anchors_shapes() {
        let once: Schedule = serde_json::from_str(r#"{"type":"once"}"#).unwrap();
        assert_eq!(once, Schedule::Once { datetime: None });
        let every: Schedule = serde_json::from_str(
            r#"{"type":"recurring","interval_seconds":60,"end":{"condition":"iterations","iterations":3}}"#,
        )
        .unwrap();
        assert_eq!(
            every,
            Schedule::Recurring {
                interval_seconds: 60,
                start: None,
                end: Some(ScheduleEnd::Iterations { count: 3 })
            }
        );
        let counted: ScheduleEnd =
            serde_json::from_str(r#"{"condition":"iterations","count":2}"#).unwrap();
        assert_eq!(counted, ScheduleEnd::Iterations { count: 2 });
        let create: TimerCreate = serde_json::from_str(
            r#"{"timer_type":"flow","schedule":{"type":"once"},"flow_id":"00000000-0000-0000-0000-000000000001","body":{"body":{}}}"#,
        )
        .unwrap();
        assert_eq!(create.timer_type, TimerKind::Flow);
    }
}
