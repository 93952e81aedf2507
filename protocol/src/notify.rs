//! Notifications: the kinds of events users are told about, per-identity
//! preferences (which kinds arrive by email), webhooks (a URL that receives
//! each subscribed event as a signed JSON POST) and their delivery log.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{DeliveryId, EventId, WebhookId};

/// What happened, as a user subscribes to it. On the wire as
/// `transfer.succeeded`, `flow_run.failed`, ...
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    #[serde(rename = "transfer.succeeded")]
    TransferSucceeded,
    #[serde(rename = "transfer.failed")]
    TransferFailed,
    /// A transfer paused (an endpoint offline).
    #[serde(rename = "transfer.inactive")]
    TransferInactive,
    #[serde(rename = "flow_run.succeeded")]
    FlowRunSucceeded,
    #[serde(rename = "flow_run.failed")]
    FlowRunFailed,
    /// A run waits on something (an approval, a paused action).
    #[serde(rename = "flow_run.inactive")]
    FlowRunInactive,
    #[serde(rename = "task_batch.finished")]
    TaskBatchFinished,
    /// A flow run asks you to approve or reject a step.
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    /// Someone gave you access to a collection.
    #[serde(rename = "access.granted")]
    AccessGranted,
    /// Someone invited you into a group.
    #[serde(rename = "group.invited")]
    GroupInvited,
    /// One of your timers was made inactive by the service.
    #[serde(rename = "timer.inactive")]
    TimerInactive,
    /// A test event (`POST /v1/webhooks/{id}/test`); needs no subscription.
    #[serde(rename = "ping")]
    Ping,
}

impl EventKind {
    /// Every kind a user may subscribe to (all but `ping`).
    pub const SUBSCRIBABLE: [EventKind; 11] = [
        EventKind::TransferSucceeded,
        EventKind::TransferFailed,
        EventKind::TransferInactive,
        EventKind::FlowRunSucceeded,
        EventKind::FlowRunFailed,
        EventKind::FlowRunInactive,
        EventKind::TaskBatchFinished,
        EventKind::ApprovalRequested,
        EventKind::AccessGranted,
        EventKind::GroupInvited,
        EventKind::TimerInactive,
    ];

    /// The kinds sent by email to someone who never set preferences: every
    /// failure and pause, every request for their attention, and finished
    /// transfers (as the anchor); not finished runs or task batches, which
    /// automation produces by the hundred.
    pub const EMAIL_DEFAULTS: [EventKind; 9] = [
        EventKind::TransferSucceeded,
        EventKind::TransferFailed,
        EventKind::TransferInactive,
        EventKind::FlowRunFailed,
        EventKind::FlowRunInactive,
        EventKind::ApprovalRequested,
        EventKind::AccessGranted,
        EventKind::GroupInvited,
        EventKind::TimerInactive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TransferSucceeded => "transfer.succeeded",
            EventKind::TransferFailed => "transfer.failed",
            EventKind::TransferInactive => "transfer.inactive",
            EventKind::FlowRunSucceeded => "flow_run.succeeded",
            EventKind::FlowRunFailed => "flow_run.failed",
            EventKind::FlowRunInactive => "flow_run.inactive",
            EventKind::TaskBatchFinished => "task_batch.finished",
            EventKind::ApprovalRequested => "approval.requested",
            EventKind::AccessGranted => "access.granted",
            EventKind::GroupInvited => "group.invited",
            EventKind::TimerInactive => "timer.inactive",
            EventKind::Ping => "ping",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event kind that does not exist; names the word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownEventKind(pub String);

impl fmt::Display for UnknownEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown event kind `{}` (known: {})",
            self.0,
            EventKind::SUBSCRIBABLE
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl std::error::Error for UnknownEventKind {}

impl FromStr for EventKind {
    type Err = UnknownEventKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::SUBSCRIBABLE
            .iter()
            .chain(std::iter::once(&EventKind::Ping))
            .find(|k| k.as_str() == s)
            .copied()
            .ok_or_else(|| UnknownEventKind(s.to_owned()))
    }
}

/// `GET /v1/notifications/preferences`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotifyPreferences {
    /// The kinds sent to you by email.
    pub email: Vec<EventKind>,
    /// Where email goes (your identity's address from login), if known.
    #[serde(default)]
    pub email_address: Option<String>,
    /// False when the service has no SMTP server configured: no email is
    /// sent whatever the preferences say.
    #[serde(default)]
    pub email_enabled: bool,
}

/// `PUT /v1/notifications/preferences`: replaces the email kinds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PreferencesUpdate {
    /// The kinds to receive by email (empty: none).
    pub email: Vec<String>,
}

/// `POST /v1/webhooks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookCreate {
    /// `https://...` (or `http://...`); loopback and private addresses only
    /// when the service allows them.
    pub url: String,
    /// The event kinds to deliver (at least one).
    pub events: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A webhook as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookInfo {
    pub id: WebhookId,
    pub url: String,
    pub events: Vec<EventKind>,
    #[serde(default)]
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The signing secret: returned once, by the create call only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `GET /v1/webhooks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookList {
    pub webhooks: Vec<WebhookInfo>,
}

/// Where one delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeliveryStatus {
    /// Waiting for its first attempt or a retry.
    Pending,
    /// The receiver answered 2xx.
    Succeeded,
    /// A 4xx answer (not retried), or every attempt failed.
    Failed,
}

/// One attempt of a delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryAttempt {
    /// 1 for the first.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status; none when it did not answer.
    #[serde(default)]
    pub status_code: Option<u16>,
    /// Why there is no answer, or what was wrong with it.
    #[serde(default)]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One event's delivery to one webhook, with its attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryInfo {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub event: EventKind,
    pub status: DeliveryStatus,
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due (pending deliveries only).
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub attempts: Vec<DeliveryAttempt>,
}

/// `GET /v1/webhooks/{id}/deliveries`, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryInfo>,
}

/// The JSON body a webhook receives (also what the signature covers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventBody {
    pub id: EventId,
    pub kind: EventKind,
    pub created_at: DateTime<Utc>,
    /// One line, as an email's subject.
    pub subject: String,
    /// Plain words, as an email's body.
    pub text: String,
    /// The resource in the API.
    pub link: String,
    /// The event's fields (ids, names, statuses, reasons).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}

/// The header carrying the seconds since the epoch the body was signed at.
pub const TIMESTAMP_HEADER: &str = "lattice-timestamp";
/// The header carrying `v1=` and the hex HMAC-SHA256 of `timestamp.body`.
pub const SIGNATURE_HEADER: &str = "lattice-signature";
/// The header carrying the event kind.
pub const EVENT_HEADER: &str = "lattice-event";
/// The header carrying the delivery id (the same on every retry).
pub const DELIVERY_HEADER: &str = "lattice-delivery";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_text_and_json() {
        for kind in EventKind::SUBSCRIBABLE
            .iter()
            .chain([EventKind::Ping].iter())
        {
            assert_eq!(kind.as_str().parse::<EventKind>().unwrap(), *kind);
            let json = serde_json::to_string(kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        let err = "transfer.done".parse::<EventKind>().unwrap_err();
        assert!(err.to_string().contains("transfer.done"), "{err}");
        assert!(EventKind::EMAIL_DEFAULTS
            .iter()
            .all(|k| EventKind::SUBSCRIBABLE.contains(k)));
    }
}
