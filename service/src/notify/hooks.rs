//! The calls other domains make when something happens, one line each at
//! the call site: each works out whom to tell and with which [`Event`],
//! loading what it needs on its own task, so the caller never waits.

use lattice_protocol::flows::RunStatus;
use lattice_protocol::sharing::{
    AclRuleInfo, MemberInfo, MembershipStatus, Permissions, Principal,
};
use lattice_protocol::transfer::TransferStatus;
use lattice_protocol::{IdentityId, TransferId};
use serde_json::Value;

use super::{notify, Event};
use crate::state::AppState;
use crate::store::{ActionRecord, CollectionRecord, GroupRecord, RunRecord};

/// A transfer (or delete) task succeeded, failed or paused: its owner is
/// told if the task's `notify_on` asks for that end.
pub(crate) fn transfer_changed(
    state: &AppState,
    transfer_id: TransferId,
    status: TransferStatus,
    message: &str,
) {
    let state = state.clone();
    let message = message.to_owned();
    tokio::spawn(async move {
        let record = match state.store.transfer(transfer_id).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(transfer_id = %transfer_id, error = %e, "cannot load a transfer to notify about");
                return;
            }
        };
        let wanted = &record.notify_on;
        let label = record.label.clone();
        let event = match status {
            TransferStatus::Succeeded if wanted.succeeded => Event::TransferSucceeded {
                transfer_id,
                label,
                message,
            },
            TransferStatus::Failed if wanted.failed => Event::TransferFailed {
                transfer_id,
                label,
                reason: message,
            },
            TransferStatus::Paused if wanted.inactive => Event::TransferInactive {
                transfer_id,
                label,
                reason: message,
            },
            _ => return,
        };
        notify(&state, record.owner_id, event);
    });
}

/// A run reached `record.status` (final, or inactive): its starter is told.
pub(crate) fn run_changed(state: &AppState, record: &RunRecord, reason: Option<&str>) {
    let reason = reason.unwrap_or("no reason given").to_owned();
    let (run_id, flow_title, label) = (record.id, record.flow_title.clone(), record.label.clone());
    let event = match record.status {
        RunStatus::Succeeded => Event::FlowRunSucceeded {
            run_id,
            flow_title,
            label,
        },
        RunStatus::Failed => Event::FlowRunFailed {
            run_id,
            flow_title,
            label,
            reason,
        },
        RunStatus::Inactive => Event::FlowRunInactive {
            run_id,
            flow_title,
            label,
            reason,
        },
        RunStatus::Active => return,
    };
    notify(state, record.starter, event);
}

/// An approval action began waiting: each approver named as an identity
/// is told (approvers named as groups are not expanded).
pub(crate) fn approval_requested(state: &AppState, action: &ActionRecord) {
    let approvers: Vec<IdentityId> = action
        .internal
        .get("approvers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|p| p.parse::<Principal>().ok())
        .filter_map(|p| match p {
            Principal::Identity(id) => Some(id),
            _ => None,
        })
        .collect();
    let Some(run_id) = action.run_id else {
        return;
    };
    let message = action
        .internal
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("approve to continue")
        .to_owned();
    let (state, action_id) = (state.clone(), action.id);
    tokio::spawn(async move {
        let flow_title = match state.store.run(run_id).await {
            Ok(Some(run)) => run.flow_title,
            _ => "a flow".to_owned(),
        };
        for approver in approvers {
            notify(
                &state,
                approver,
                Event::ApprovalRequested {
                    run_id,
                    action_id,
                    flow_title: flow_title.clone(),
                    message: message.clone(),
                },
            );
        }
    });
}

/// An access rule was created: the identity it names (not the creator
/// granting themselves) is told. Rules for groups or everyone tell nobody.
pub(crate) fn access_granted(
    state: &AppState,
    granted_by: IdentityId,
    collection: &CollectionRecord,
    rule: &AclRuleInfo,
) {
    let Principal::Identity(recipient) = rule.principal else {
        return;
    };
    if recipient == granted_by {
        return;
    }
    let permissions = match rule.permissions {
        Permissions::Read => "read",
        Permissions::ReadWrite => "read and write",
    };
    let (collection_id, collection_name, path) =
        (collection.id, collection.name.clone(), rule.path.clone());
    let state = state.clone();
    tokio::spawn(async move {
        let granted_by = username(&state, granted_by).await;
        notify(
            &state,
            recipient,
            Event::AccessGranted {
                collection_id,
                collection_name,
                path,
                permissions: permissions.to_owned(),
                granted_by,
            },
        );
    });
}

/// A membership action left someone invited into a group: they are told.
pub(crate) fn group_invited(
    state: &AppState,
    invited_by: IdentityId,
    group: &GroupRecord,
    member: &MemberInfo,
) {
    let (Some(recipient), MembershipStatus::Invited) = (member.identity_id, member.status) else {
        return;
    };
    let (group_id, group_name) = (group.id, group.name.clone());
    let state = state.clone();
    tokio::spawn(async move {
        let invited_by = username(&state, invited_by).await;
        notify(
            &state,
            recipient,
            Event::GroupInvited {
                group_id,
                group_name,
                invited_by,
            },
        );
    });
}

/// How a person is named in a message: their username, else their id.
async fn username(state: &AppState, id: IdentityId) -> String {
    match state.store.identity(id).await {
        Ok(Some(identity)) => identity.username,
        _ => format!("identity {id}"),
    }
}
