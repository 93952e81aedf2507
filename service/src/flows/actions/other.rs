//! The remaining built-in actions: `search_ingest` and `search_delete`
//! (queued search tasks the action follows), `set_access_rule` (a rule
//! on a collection, answered at once), `approval` (INACTIVE until an
//! approver answers), `echo` and `expression_eval` (return the body,
//! whose `.=` parameters the run already evaluated).
//!
//! Bodies follow the anchor where it has the action: the search ingest
//! provider's `search_index`, `subject`, `visible_to`, `content`, and
//! the set-permission shape `principal_type` + `principal`,
//! `permissions`, `path`, `endpoint_id`.

use std::str::FromStr;

use lattice_protocol::search::{DeleteTarget, Entry, IngestDocument, SearchTaskState};
use lattice_protocol::sharing::{AclRuleCreate, Permissions, Principal};
use lattice_protocol::{SearchIndexId, SearchTaskId};
use serde_json::{json, Value};

use super::Progress;
use crate::auth::Caller;
use crate::flows::roles::{canonical_principals, matches};
use crate::flows::{FlowError, FlowResult};
use crate::search::Asker;
use crate::sharing::{access, Actor, Viewer};
use crate::state::AppState;
use crate::store::ActionRecord;

fn invalid(what: &str, message: impl std::fmt::Display) -> FlowError {
    FlowError::Invalid(format!("{what} action body: {message}"))
}

fn index_of(what: &str, body: &Value) -> FlowResult<SearchIndexId> {
    let text = body
        .get("index_id")
        .or_else(|| body.get("search_index"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(what, "`index_id` (or `search_index`) names the index"))?;
    text.parse()
        .map_err(|_| invalid(what, format!("`{text}` is not an index id")))
}

/// The entries of an ingest body: one entry given inline (`subject`,
/// `content`, `visible_to`, `id`), an `ingest_data` document, or `entries`.
fn entries_of(body: &Value) -> FlowResult<Vec<Entry>> {
    const W: &str = "search_ingest";
    if body.get("subject").is_some() {
        let entry: Entry = serde_json::from_value(json!({
            "subject": body["subject"],
            "id": body.get("id").cloned().unwrap_or(Value::Null),
            "content": body.get("content").cloned().unwrap_or(json!({})),
            "visible_to": body.get("visible_to").cloned().unwrap_or(json!([])),
        }))
        .map_err(|e| invalid(W, e))?;
        return Ok(vec![entry]);
    }
    if let Some(entries) = body.get("entries") {
        return serde_json::from_value(entries.clone())
            .map_err(|e| invalid(W, format!("entries: {e}")));
    }
    if body.get("ingest_data").is_some() {
        let doc: IngestDocument =
            serde_json::from_value(body.clone()).map_err(|e| invalid(W, e))?;
        return Ok(doc.into_entries());
    }
    Err(invalid(
        W,
        "give `subject` and `content`, `entries`, or `ingest_type` and `ingest_data`",
    ))
}

fn with_task(internal: &mut Value, task: SearchTaskId) {
    if let Value::Object(map) = internal {
        map.insert("search_task_id".into(), json!(task));
    } else {
        *internal = json!({"search_task_id": task});
    }
}

async fn asker(state: &AppState, caller: &Caller) -> FlowResult<Asker> {
    Ok(Asker::of(&state.store, Some(caller)).await?)
}

pub(crate) async fn search_ingest(
    state: &AppState,
    caller: &Caller,
    body: &Value,
    internal: &mut Value,
) -> FlowResult<Progress> {
    let index = index_of("search_ingest", body)?;
    let entries = entries_of(body)?;
    let asker = asker(state, caller).await?;
    let submitted = crate::search::tasks::submit_ingest(
        &state.store,
        &state.search,
        &asker,
        index,
        IngestDocument::GMetaList { gmeta: entries },
    )
    .await?;
    with_task(internal, submitted.task_id);
    refresh_search(state, caller, internal).await
}

pub(crate) async fn search_delete(
    state: &AppState,
    caller: &Caller,
    body: &Value,
    internal: &mut Value,
) -> FlowResult<Progress> {
    let index = index_of("search_delete", body)?;
    let subjects: Vec<String> = match body.get("subjects").or_else(|| body.get("subject")) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| invalid("search_delete", format!("subjects: {e}")))?,
        None => return Err(invalid("search_delete", "`subjects` lists what to delete")),
    };
    let asker = asker(state, caller).await?;
    let submitted = crate::search::tasks::submit_delete(
        &state.store,
        &state.search,
        &asker,
        index,
        DeleteTarget::Subjects { subjects },
    )
    .await?;
    with_task(internal, submitted.task_id);
    refresh_search(state, caller, internal).await
}

pub(crate) async fn refresh_search(
    state: &AppState,
    caller: &Caller,
    internal: &Value,
) -> FlowResult<Progress> {
    let id: SearchTaskId = internal
        .get("search_task_id")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| FlowError::Conflict("the action's search task id is missing".into()))?;
    let asker = asker(state, caller).await?;
    let task = crate::search::tasks::show(&state.store, &asker, id).await?;
    let details = serde_json::to_value(&task).unwrap_or(Value::Null);
    Ok(match task.state {
        SearchTaskState::Pending | SearchTaskState::Progress => Progress::active(details),
        SearchTaskState::Success => Progress::done(details),
        SearchTaskState::Failed => Progress::failed(details),
    })
}

/// Grants access to a path: `collection` (or the anchor's `endpoint_id`),
/// `path`, `permissions` (`r`/`rw`, or the anchor's `read`/`read,write`),
/// and `principal` in wire form or the anchor's `principal_type`
/// (`identity`, `group`, `all_authenticated_users`, `anonymous`) plus id.
pub(crate) async fn set_access_rule(
    state: &AppState,
    caller: &Caller,
    body: &Value,
) -> FlowResult<Progress> {
    const W: &str = "set_access_rule";
    let text = |name: &str| body.get(name).and_then(Value::as_str);
    let collection = text("collection")
        .or_else(|| text("endpoint_id"))
        .ok_or_else(|| invalid(W, "`collection` (or `endpoint_id`) is required"))?;
    let path = text("path").ok_or_else(|| invalid(W, "`path` is required"))?;
    let principal_text = match (text("principal_type"), text("principal")) {
        (Some("anonymous"), _) => "public".to_owned(),
        (Some("all_authenticated_users"), _) => "all_authenticated_users".to_owned(),
        (Some(kind @ ("identity" | "group")), Some(id)) if !id.contains(':') => {
            format!("{kind}:{id}")
        }
        (_, Some(p)) => p.to_owned(),
        (_, None) => return Err(invalid(W, "`principal` is required")),
    };
    let principal = Principal::from_str(&principal_text).map_err(|e| invalid(W, e))?;
    let permissions = match text("permissions").unwrap_or("r") {
        "r" | "read" => Permissions::Read,
        "rw" | "read,write" | "write" => Permissions::ReadWrite,
        other => return Err(invalid(W, format!("permissions `{other}`: use r or rw"))),
    };
    let actor = Actor::of(&state.store, caller).await?;
    let record = access::usable_collection(&state.store, &actor.viewer, collection).await?;
    let rule = access::create_rule(
        state,
        &actor,
        &record,
        AclRuleCreate {
            principal,
            path: path.to_owned(),
            permissions,
            expires_at: None,
        },
    )
    .await?;
    Ok(Progress::done(json!({
        "access_id": rule.id,
        "collection": record.name,
        "principal": principal_text,
        "path": rule.path,
        "permissions": rule.permissions,
    })))
}

/// An approval's plan: its message, options (default approve/reject) and
/// approvers (default: the creator; principals in wire form).
pub(crate) async fn plan_approval(
    state: &AppState,
    caller: &Caller,
    body: &Value,
) -> FlowResult<Value> {
    const W: &str = "approval";
    let message = body
        .get("message")
        .or_else(|| body.get("prompt"))
        .and_then(Value::as_str)
        .unwrap_or("approve to continue")
        .to_owned();
    let options: Vec<String> = match body.get("options") {
        None | Some(Value::Null) => vec!["approve".into(), "reject".into()],
        Some(v) => {
            serde_json::from_value(v.clone()).map_err(|e| invalid(W, format!("options: {e}")))?
        }
    };
    if options.is_empty() {
        return Err(invalid(W, "options: give at least one"));
    }
    let approvers: Vec<String> = match body.get("approvers") {
        None | Some(Value::Null) => vec![format!("identity:{}", caller.identity_id)],
        Some(v) => {
            serde_json::from_value(v.clone()).map_err(|e| invalid(W, format!("approvers: {e}")))?
        }
    };
    let approvers =
        canonical_principals("approvers", &approvers, false).map_err(FlowError::Invalid)?;
    for p in &approvers {
        crate::sharing::check_principal_exists(&state.store, p).await?;
    }
    Ok(json!({
        "message": message,
        "options": options,
        "approvers": approvers.iter().map(ToString::to_string).collect::<Vec<_>>(),
    }))
}

pub(crate) fn approval_waiting(internal: &Value) -> Progress {
    Progress {
        state: lattice_protocol::flows::ActionState::Inactive,
        details: json!({
            "waiting_for": "approval",
            "message": internal.get("message"),
            "options": internal.get("options"),
            "approvers": internal.get("approvers"),
            "how": "lattice flow run approve RUN [--option X], or the run's page in the web app",
        }),
    }
}

/// Answers an approval: only its approvers, only while it waits, and only
/// with one of its options. The answer SUCCEEDS the action; the option
/// chosen is in its details for a `Choice` to branch on.
pub(crate) fn approve(
    viewer: &Viewer,
    record: &ActionRecord,
    option: Option<String>,
    input: Option<Value>,
) -> FlowResult<Progress> {
    if record.status != lattice_protocol::flows::ActionState::Inactive {
        return Err(FlowError::Conflict(format!(
            "action {} is not waiting for approval",
            record.id
        )));
    }
    let approvers: Vec<String> = record
        .internal
        .get("approvers")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    if !approvers.iter().any(|p| matches(viewer, p)) {
        return Err(FlowError::Denied(format!(
            "only its approvers ({}) may answer this approval",
            approvers.join(", ")
        )));
    }
    let options: Vec<String> = record
        .internal
        .get("options")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let option = match option {
        None => options.first().cloned().unwrap_or_default(),
        Some(o) if options.contains(&o) => o,
        Some(o) => {
            return Err(FlowError::Invalid(format!(
                "option `{o}` is not offered; choose one of: {}",
                options.join(", ")
            )))
        }
    };
    Ok(Progress::done(json!({
        "message": record.internal.get("message"),
        "option": option,
        "input": input,
        "approved_by": viewer.identity.map(|i| format!("identity:{i}")),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_bodies_take_one_entry_or_many() {
        let one = entries_of(&json!({"search_index": "x", "subject": "s1",
            "visible_to": ["public"], "content": {"a": 1}}))
        .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].subject, "s1");
        let many = entries_of(&json!({"entries": [
            {"subject": "a", "content": {}, "visible_to": []},
            {"subject": "b", "content": {}, "visible_to": []}]}))
        .unwrap();
        assert_eq!(many.len(), 2);
        let doc = entries_of(
            &json!({"ingest_type": "GMetaList", "ingest_data": {"gmeta": [
            {"subject": "a", "content": {}, "visible_to": []}]}}),
        )
        .unwrap();
        assert_eq!(doc.len(), 1);
        assert!(entries_of(&json!({"nothing": 1})).is_err());
    }
}
