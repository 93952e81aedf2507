//! What users are told about (pure): each [`Event`] with its kind, a short
//! subject, a body in plain words and a link to the resource in the API.

use lattice_protocol::notify::{EventBody, EventKind};
use lattice_protocol::{ActionId, BatchId, CollectionId, EventId, FlowRunId, GroupId, TransferId};
use serde_json::json;

/// Something that happened to a user's resource, or that asks for them.
/// Other domains build one and hand it to [`super::notify`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A transfer (or delete) task succeeded.
    TransferSucceeded {
        transfer_id: TransferId,
        label: Option<String>,
        message: String,
    },
    /// A transfer task failed.
    TransferFailed {
        transfer_id: TransferId,
        label: Option<String>,
        reason: String,
    },
    /// A transfer task paused (an endpoint offline).
    TransferInactive {
        transfer_id: TransferId,
        label: Option<String>,
        reason: String,
    },
    /// A flow run succeeded.
    FlowRunSucceeded {
        run_id: FlowRunId,
        flow_title: String,
        label: Option<String>,
    },
    /// A flow run failed (or was cancelled).
    FlowRunFailed {
        run_id: FlowRunId,
        flow_title: String,
        label: Option<String>,
        reason: String,
    },
    /// A flow run waits (an action paused or needing attention).
    FlowRunInactive {
        run_id: FlowRunId,
        flow_title: String,
        label: Option<String>,
        reason: String,
    },
    /// Every task of a batch reached a final state.
    TaskBatchFinished {
        batch_id: BatchId,
        tasks: u64,
        failed: u64,
    },
    /// A flow run's approval step waits for the recipient.
    ApprovalRequested {
        run_id: FlowRunId,
        action_id: ActionId,
        flow_title: String,
        message: String,
    },
    /// Someone gave the recipient access to a path of a collection.
    AccessGranted {
        collection_id: CollectionId,
        collection_name: String,
        path: String,
        permissions: String,
        granted_by: String,
    },
    /// Someone invited the recipient into a group.
    GroupInvited {
        group_id: GroupId,
        group_name: String,
        invited_by: String,
    },
    /// The service made one of the recipient's timers inactive (the
    /// timers domain calls this; the id is the timer's).
    TimerInactive {
        timer_id: lattice_protocol::TimerId,
        name: String,
        reason: String,
    },
    /// A test delivery (`POST /v1/webhooks/{id}/test`).
    Ping {
        webhook_id: lattice_protocol::WebhookId,
    },
}

/// `"nightly"` for a labelled resource, else its id.
fn named(label: &Option<String>, id: impl std::fmt::Display) -> String {
    match label {
        Some(label) if !label.is_empty() => format!("\"{label}\" ({id})"),
        _ => id.to_string(),
    }
}

impl Event {
    pub(crate) fn kind(&self) -> EventKind {
        match self {
            Event::TransferSucceeded { .. } => EventKind::TransferSucceeded,
            Event::TransferFailed { .. } => EventKind::TransferFailed,
            Event::TransferInactive { .. } => EventKind::TransferInactive,
            Event::FlowRunSucceeded { .. } => EventKind::FlowRunSucceeded,
            Event::FlowRunFailed { .. } => EventKind::FlowRunFailed,
            Event::FlowRunInactive { .. } => EventKind::FlowRunInactive,
            Event::TaskBatchFinished { .. } => EventKind::TaskBatchFinished,
            Event::ApprovalRequested { .. } => EventKind::ApprovalRequested,
            Event::AccessGranted { .. } => EventKind::AccessGranted,
            Event::GroupInvited { .. } => EventKind::GroupInvited,
            Event::TimerInactive { .. } => EventKind::TimerInactive,
            Event::Ping { .. } => EventKind::Ping,
        }
    }

    /// The API path of the resource the event is about.
    pub(crate) fn path(&self) -> String {
        match self {
            Event::TransferSucceeded { transfer_id, .. }
            | Event::TransferFailed { transfer_id, .. }
            | Event::TransferInactive { transfer_id, .. } => format!("v1/transfers/{transfer_id}"),
            Event::FlowRunSucceeded { run_id, .. }
            | Event::FlowRunFailed { run_id, .. }
            | Event::FlowRunInactive { run_id, .. } => format!("v1/runs/{run_id}"),
            Event::ApprovalRequested { run_id, .. } => format!("v1/runs/{run_id}"),
            Event::TaskBatchFinished { batch_id, .. } => format!("v1/batches/{batch_id}"),
            Event::AccessGranted { collection_id, .. } => {
                format!("v1/collections/{collection_id}")
            }
            Event::GroupInvited { group_id, .. } => format!("v1/groups/{group_id}"),
            Event::TimerInactive { timer_id, .. } => format!("v1/timers/{timer_id}"),
            Event::Ping { webhook_id } => format!("v1/webhooks/{webhook_id}"),
        }
    }

    /// One line.
    pub(crate) fn subject(&self) -> String {
        match self {
            Event::TransferSucceeded {
                transfer_id, label, ..
            } => format!("Transfer {} succeeded", named(label, transfer_id)),
            Event::TransferFailed {
                transfer_id, label, ..
            } => format!("Transfer {} failed", named(label, transfer_id)),
            Event::TransferInactive {
                transfer_id, label, ..
            } => format!("Transfer {} is paused", named(label, transfer_id)),
            Event::FlowRunSucceeded {
                flow_title,
                label,
                run_id,
            } => format!(
                "Run {} of flow \"{flow_title}\" succeeded",
                named(label, run_id)
            ),
            Event::FlowRunFailed {
                flow_title,
                label,
                run_id,
                ..
            } => format!(
                "Run {} of flow \"{flow_title}\" failed",
                named(label, run_id)
            ),
            Event::FlowRunInactive {
                flow_title,
                label,
                run_id,
                ..
            } => format!(
                "Run {} of flow \"{flow_title}\" is waiting",
                named(label, run_id)
            ),
            Event::TaskBatchFinished {
                batch_id, failed, ..
            } if *failed > 0 => {
                format!("Task batch {batch_id} finished with {failed} failed task(s)")
            }
            Event::TaskBatchFinished { batch_id, .. } => format!("Task batch {batch_id} finished"),
            Event::ApprovalRequested { flow_title, .. } => {
                format!("Approval requested by a run of flow \"{flow_title}\"")
            }
            Event::AccessGranted {
                collection_name, ..
            } => format!("You were given access to collection \"{collection_name}\""),
            Event::GroupInvited { group_name, .. } => {
                format!("You are invited to group \"{group_name}\"")
            }
            Event::TimerInactive { name, .. } => format!("Timer \"{name}\" was made inactive"),
            Event::Ping { .. } => "Test event from Lattice".to_owned(),
        }
    }

    /// Plain words: what happened and what to do; the link is added by
    /// [`Event::body`].
    fn text(&self) -> String {
        match self {
            Event::TransferSucceeded { message, .. } => {
                format!("Your transfer succeeded: {message}.")
            }
            Event::TransferFailed { reason, .. } => format!(
                "Your transfer failed: {reason}. Its events say what happened at each attempt."
            ),
            Event::TransferInactive { reason, .. } => format!(
                "Your transfer is paused: {reason}. Nothing needs doing if the endpoint comes back."
            ),
            Event::FlowRunSucceeded { .. } => "Your flow run succeeded.".to_owned(),
            Event::FlowRunFailed { reason, .. } => format!("Your flow run failed: {reason}."),
            Event::FlowRunInactive { reason, .. } => {
                format!("Your flow run is waiting: {reason}.")
            }
            Event::TaskBatchFinished { tasks, failed, .. } => format!(
                "All {tasks} task(s) of your batch reached a final state; {failed} failed."
            ),
            Event::ApprovalRequested {
                message, action_id, ..
            } => format!(
                "A flow run asks for your approval (action {action_id}): {message}. Approve or reject it with `lattice flow approve` or POST to the run's approve route."
            ),
            Event::AccessGranted {
                path,
                permissions,
                granted_by,
                collection_name,
                ..
            } => format!(
                "{granted_by} gave you {permissions} access to {path} in collection \"{collection_name}\"."
            ),
            Event::GroupInvited {
                invited_by,
                group_name,
                ..
            } => format!(
                "{invited_by} invited you into group \"{group_name}\". Accept or decline the invitation with `lattice group`."
            ),
            Event::TimerInactive { reason, name, .. } => format!(
                "The service paused your timer \"{name}\": {reason}. Fix the cause and resume it with `lattice timer resume`."
            ),
            Event::Ping { .. } => {
                "This is a test event: your webhook receives Lattice's events.".to_owned()
            }
        }
    }

    /// The event's fields for a webhook's `data`.
    fn data(&self) -> serde_json::Value {
        match self {
            Event::TransferSucceeded {
                transfer_id,
                label,
                message,
            } => json!({"transfer_id": transfer_id, "label": label, "message": message}),
            Event::TransferFailed {
                transfer_id,
                label,
                reason,
            }
            | Event::TransferInactive {
                transfer_id,
                label,
                reason,
            } => json!({"transfer_id": transfer_id, "label": label, "reason": reason}),
            Event::FlowRunSucceeded {
                run_id,
                flow_title,
                label,
            } => json!({"run_id": run_id, "flow_title": flow_title, "label": label}),
            Event::FlowRunFailed {
                run_id,
                flow_title,
                label,
                reason,
            }
            | Event::FlowRunInactive {
                run_id,
                flow_title,
                label,
                reason,
            } => {
                json!({"run_id": run_id, "flow_title": flow_title, "label": label, "reason": reason})
            }
            Event::TaskBatchFinished {
                batch_id,
                tasks,
                failed,
            } => json!({"batch_id": batch_id, "tasks": tasks, "failed": failed}),
            Event::ApprovalRequested {
                run_id,
                action_id,
                flow_title,
                message,
            } => {
                json!({"run_id": run_id, "action_id": action_id, "flow_title": flow_title, "message": message})
            }
            Event::AccessGranted {
                collection_id,
                collection_name,
                path,
                permissions,
                granted_by,
            } => {
                json!({"collection_id": collection_id, "collection_name": collection_name, "path": path, "permissions": permissions, "granted_by": granted_by})
            }
            Event::GroupInvited {
                group_id,
                group_name,
                invited_by,
            } => json!({"group_id": group_id, "group_name": group_name, "invited_by": invited_by}),
            Event::TimerInactive {
                timer_id,
                name,
                reason,
            } => json!({"timer_id": timer_id, "name": name, "reason": reason}),
            Event::Ping { webhook_id } => json!({"webhook_id": webhook_id}),
        }
    }

    /// The whole event as webhooks receive it; `public_url` ends in `/`.
    pub(crate) fn body(
        &self,
        id: EventId,
        public_url: &url::Url,
        now: chrono::DateTime<chrono::Utc>,
    ) -> EventBody {
        let link = public_url
            .join(&self.path())
            .map(|u| u.to_string())
            .unwrap_or_else(|_| format!("{public_url}{}", self.path()));
        EventBody {
            id,
            kind: self.kind(),
            created_at: now,
            subject: self.subject(),
            text: self.text(),
            link,
            data: self.data(),
        }
    }
}

/// An email's text: the body's words, then the link.
pub(crate) fn email_text(body: &EventBody) -> String {
    format!(
        "{}\n\n{}\n\n-- \nLattice. You get this because of your notification preferences; change them with `lattice notify prefs`.\n",
        body.text, body.link
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_transfer_names_itself_the_reason_and_the_link() {
        let id = TransferId::new();
        let event = Event::TransferFailed {
            transfer_id: id,
            label: Some("nightly".into()),
            reason: "FILE_NOT_FOUND: /data/x".into(),
        };
        let url = url::Url::parse("https://lattice.example.org/").unwrap();
        let body = event.body(EventId::new(), &url, chrono::Utc::now());
        assert_eq!(body.kind, EventKind::TransferFailed);
        assert_eq!(body.subject, format!("Transfer \"nightly\" ({id}) failed"));
        assert_eq!(
            body.link,
            format!("https://lattice.example.org/v1/transfers/{id}")
        );
        assert!(body.text.contains("FILE_NOT_FOUND"), "{}", body.text);
        assert_eq!(body.data["transfer_id"], id.to_string());
        assert!(email_text(&body).contains(&body.link));
    }

    #[test]
    fn a_public_url_with_a_prefix_keeps_it() {
        let event = Event::TimerInactive {
            timer_id: lattice_protocol::TimerId(uuid::Uuid::nil()),
            name: "mirror".into(),
            reason: "the owner lost access to collection lab".into(),
        };
        let url = url::Url::parse("https://example.org/lattice/").unwrap();
        let body = event.body(EventId::new(), &url, chrono::Utc::now());
        assert_eq!(
            body.link,
            "https://example.org/lattice/v1/timers/00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(body.kind, EventKind::TimerInactive);
    }
}
