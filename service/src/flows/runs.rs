//! Runs: start (the starter role, the input checked against the flow's
//! schema, one run per request id), list, show, log, relabel, cancel,
//! resume, release, and answering a run's approval step. The run is
//! leased to this replica as it is inserted and its driver starts at once
//! ([`super::driver`]).

use chrono::Utc;
use lattice_flows::model::LogEntry;
use lattice_flows::{FlowDefinition, Run};
use lattice_protocol::api::Scope;
use lattice_protocol::flows::{
    FlowRoleName, RunApprove, RunInfo, RunList, RunLog, RunLogEntry, RunStart, RunStatus,
    RunUpdate, MAX_LABEL_CHARS, MAX_RUN_TAGS,
};
use lattice_protocol::{FlowId, FlowRunId};
use serde_json::{json, Value};

use super::actions::Provider;
use super::definitions;
use super::roles::{canonical_principals, RunRoles};
use super::{FlowError, FlowResult, Nudge};
use crate::auth::Caller;
use crate::sharing::Viewer;
use crate::state::AppState;
use crate::store::{RunFilter, RunLogRecord, RunRecord, StoreError};

/// The API's status of the machine's status.
pub(crate) fn status_of(status: lattice_flows::RunStatus) -> RunStatus {
    match status {
        lattice_flows::RunStatus::Active => RunStatus::Active,
        lattice_flows::RunStatus::Inactive => RunStatus::Inactive,
        lattice_flows::RunStatus::Succeeded => RunStatus::Succeeded,
        lattice_flows::RunStatus::Failed => RunStatus::Failed,
    }
}

/// A log entry as stored: its `code` and the rest of the entry.
pub(crate) fn log_record(entry: LogEntry) -> RunLogRecord {
    let mut details = serde_json::to_value(&entry.event).unwrap_or(Value::Null);
    let code = details
        .as_object_mut()
        .and_then(|m| m.remove("code"))
        .and_then(|c| c.as_str().map(str::to_owned))
        .unwrap_or_default();
    RunLogRecord {
        seq: entry.seq,
        at: entry.time,
        state: entry.state,
        code,
        details,
    }
}

/// The `details` the API shows: output, error, or what the run waits on.
pub(crate) fn details_of(run: &Run, waiting_on: Value) -> Value {
    match run.status {
        lattice_flows::RunStatus::Succeeded => json!({"output": run.output}),
        lattice_flows::RunStatus::Failed => json!({"error": run.error}),
        lattice_flows::RunStatus::Inactive => json!({"waiting_on": waiting_on}),
        lattice_flows::RunStatus::Active => json!({}),
    }
}

fn display_status(record: &RunRecord) -> String {
    match record.status {
        RunStatus::Active => "RUNNING".into(),
        RunStatus::Inactive => {
            let approval = record.details["waiting_on"]
                .as_array()
                .is_some_and(|w| w.iter().any(|a| a["waiting_for"] == "approval"));
            if approval {
                "AWAITING APPROVAL".into()
            } else {
                "INACTIVE".into()
            }
        }
        RunStatus::Succeeded => "SUCCEEDED".into(),
        RunStatus::Failed => "FAILED".into(),
    }
}

pub(crate) fn info(record: RunRecord, roles: &RunRoles) -> RunInfo {
    RunInfo {
        display_status: display_status(&record),
        id: record.id,
        run_id: record.id,
        action_id: record.id,
        flow_id: record.flow_id,
        flow_title: record.flow_title,
        status: record.status,
        label: record.label,
        tags: record.tags,
        created_by: record.starter,
        run_managers: record.run_managers,
        run_monitors: record.run_monitors,
        start_time: record.created_at,
        completion_time: record.completed_at,
        transitions: record.transitions,
        details: record.details,
        user_roles: roles.names(),
    }
}

fn check_label_and_tags(label: Option<&str>, tags: &[String]) -> FlowResult<()> {
    if label.is_some_and(|l| l.chars().count() > MAX_LABEL_CHARS || l.contains('\0')) {
        return Err(FlowError::Invalid(format!(
            "label: at most {MAX_LABEL_CHARS} characters, no NUL"
        )));
    }
    if tags.len() > MAX_RUN_TAGS {
        return Err(FlowError::Invalid(format!("tags: at most {MAX_RUN_TAGS}")));
    }
    if tags
        .iter()
        .any(|t| t.is_empty() || t.len() > 128 || t.contains('\0'))
    {
        return Err(FlowError::Invalid(
            "tags: each 1 to 128 bytes, no NUL".into(),
        ));
    }
    Ok(())
}

async fn principals(state: &AppState, field: &str, given: &[String]) -> FlowResult<Vec<String>> {
    let list = canonical_principals(field, given, false).map_err(FlowError::Invalid)?;
    for p in &list {
        crate::sharing::check_principal_exists(&state.store, p).await?;
    }
    Ok(list.iter().map(ToString::to_string).collect())
}

/// The built-in providers a definition's actions name (inner machines
/// included), to know which scopes its runs need.
fn providers_of(definition: &FlowDefinition, public_url: &str, out: &mut Vec<Provider>) {
    use lattice_flows::model::State;
    for state in definition.states.values() {
        match state {
            State::Action(a) => {
                if let Some(p) = Provider::of_url(&a.action_url, public_url) {
                    out.push(p);
                }
            }
            State::Parallel(p) => {
                for b in &p.branches {
                    providers_of(b, public_url, out);
                }
            }
            State::Map(m) => providers_of(&m.iterator, public_url, out),
            _ => {}
        }
    }
}

/// The scopes a run of `definition` acts with: those its built-in actions
/// need. The starter's token must hold them.
pub(crate) fn scopes_needed(definition: &FlowDefinition, public_url: &str) -> Vec<Scope> {
    let mut providers = Vec::new();
    providers_of(definition, public_url, &mut providers);
    let mut scopes: Vec<Scope> = providers.iter().filter_map(|p| p.scope()).collect();
    scopes.sort_by_key(|s| s.as_str());
    scopes.dedup();
    scopes
}

/// Starts a run of flow `id` as `caller` (who needs the starter role and
/// a token with the scopes the flow's actions need). With a request id
/// used before, the first run is returned (`false`: not new).
pub async fn start(
    state: &AppState,
    caller: &Caller,
    id: FlowId,
    request: RunStart,
) -> FlowResult<(bool, RunInfo)> {
    let viewer = Viewer::of(&state.store, caller.identity_id).await?;
    let (flow, _) =
        definitions::with_role(&state.store, &viewer, id, FlowRoleName::Starter, "start it")
            .await?;
    check_label_and_tags(request.label.as_deref(), &request.tags)?;
    if let Some(r) = &request.request_id {
        if r.is_empty() || r.len() > 256 {
            return Err(FlowError::Invalid("request_id: use 1 to 256 bytes".into()));
        }
        if let Some(existing) = state
            .store
            .run_by_request(id, caller.identity_id, r)
            .await?
        {
            let roles = RunRoles::of(&viewer, &existing, Some(&flow));
            return Ok((false, info(existing, &roles)));
        }
    }
    let run_managers = principals(state, "run_managers", &request.run_managers).await?;
    let run_monitors = principals(state, "run_monitors", &request.run_monitors).await?;
    let definition = FlowDefinition::from_value(flow.definition.clone())
        .map_err(|e| FlowError::Conflict(format!("the flow's stored definition: {e}")))?;
    for scope in scopes_needed(&definition, state.config.public_url.as_str()) {
        if !caller.has_scope(scope) {
            return Err(FlowError::Denied(format!(
                "this flow's actions need a token with the `{}` scope; log in with it",
                scope.as_str()
            )));
        }
    }
    lattice_flows::validate_input(&flow.input_schema, &request.body)
        .map_err(|e| FlowError::Invalid(e.to_string()))?;
    let run_id = FlowRunId::new();
    let identity = state.store.identity(caller.identity_id).await?;
    let context = json!({
        "flow_id": flow.id,
        "run_id": run_id,
        "user_id": format!("identity:{}", caller.identity_id),
        "username": identity.as_ref().map(|i| i.username.clone()),
        "email": identity.as_ref().and_then(|i| i.email.clone()),
        "identities": viewer.identities().iter().map(|i| format!("identity:{i}")).collect::<Vec<_>>(),
    });
    let now = Utc::now();
    let (mut run, _) = Run::start_with_context(
        run_id.to_string(),
        definition,
        request.body,
        context,
        state.flows.limits,
        now,
    );
    let log: Vec<RunLogRecord> = run.drain_log().into_iter().map(log_record).collect();
    let status = status_of(run.status);
    let record = RunRecord {
        id: run_id,
        flow_id: flow.id,
        flow_title: flow.title.clone(),
        starter: caller.identity_id,
        request_id: request.request_id,
        label: request.label,
        tags: request.tags,
        run_managers,
        run_monitors,
        status,
        transitions: run.transitions,
        machine: serde_json::to_string(&run).expect("a run serializes"),
        details: details_of(&run, json!([])),
        created_at: now,
        updated_at: now,
        completed_at: status.is_final().then_some(now),
    };
    let lease_until = now + chrono::Duration::from_std(state.flows.lease).unwrap_or_default();
    match state
        .store
        .insert_run(&record, &log, &state.flows.replica, lease_until)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) if record.request_id.is_some() => {
            let existing = state
                .store
                .run_by_request(
                    id,
                    caller.identity_id,
                    record.request_id.as_deref().unwrap_or_default(),
                )
                .await?
                .ok_or_else(|| FlowError::Conflict("the run vanished".into()))?;
            let roles = RunRoles::of(&viewer, &existing, Some(&flow));
            return Ok((false, info(existing, &roles)));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(run_id = %run_id, flow_id = %flow.id, "run started");
    if !status.is_final() {
        super::driver::drive(state.clone(), run_id);
    }
    let mut record = record;
    record.machine.clear();
    let roles = RunRoles::of(&viewer, &record, Some(&flow));
    Ok((true, info(record, &roles)))
}

/// A run as an action status (a flow used as an action).
pub(crate) fn as_action_status(info: &RunInfo) -> lattice_protocol::flows::ActionStatus {
    use lattice_protocol::flows::{ActionState, ActionStatus};
    ActionStatus {
        action_id: info.run_id.to_string(),
        status: match info.status {
            RunStatus::Active => ActionState::Active,
            RunStatus::Inactive => ActionState::Inactive,
            RunStatus::Succeeded => ActionState::Succeeded,
            RunStatus::Failed => ActionState::Failed,
        },
        display_status: Some(info.display_status.clone()),
        creator_id: Some(format!("identity:{}", info.created_by)),
        label: info.label.clone(),
        monitor_by: info.run_monitors.clone(),
        manage_by: info.run_managers.clone(),
        start_time: Some(info.start_time),
        completion_time: info.completion_time,
        release_after: None,
        details: info.details.clone(),
    }
}

/// A run `viewer` may see (404 otherwise), with their roles on it.
async fn visible(
    state: &AppState,
    viewer: &Viewer,
    id: FlowRunId,
) -> FlowResult<(RunRecord, RunRoles)> {
    let not_found = || FlowError::NotFound(format!("run {id} does not exist"));
    let mut run = state.store.run(id).await?.ok_or_else(not_found)?;
    let flow = state.store.flow(run.flow_id).await?;
    let roles = RunRoles::of(viewer, &run, flow.as_ref());
    if !roles.monitor {
        return Err(not_found());
    }
    run.machine.clear();
    Ok((run, roles))
}

async fn managed(
    state: &AppState,
    viewer: &Viewer,
    id: FlowRunId,
    to: &str,
) -> FlowResult<(RunRecord, RunRoles)> {
    let (run, roles) = visible(state, viewer, id).await?;
    if !roles.manager {
        return Err(FlowError::Denied(format!(
            "only the run's starter or a run manager may {to}"
        )));
    }
    Ok((run, roles))
}

pub async fn show(state: &AppState, viewer: &Viewer, id: FlowRunId) -> FlowResult<RunInfo> {
    let (run, roles) = visible(state, viewer, id).await?;
    Ok(info(run, &roles))
}

/// Query of `GET /v1/runs`.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub flow_id: Option<FlowId>,
    pub statuses: Vec<RunStatus>,
    pub label: Option<String>,
    pub limit: Option<u32>,
    pub marker: Option<String>,
}

pub async fn list(state: &AppState, viewer: &Viewer, query: ListQuery) -> FlowResult<RunList> {
    let Some(me) = viewer.identity else {
        return Ok(RunList {
            runs: Vec::new(),
            marker: None,
        });
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    let before = match &query.marker {
        None => None,
        Some(m) => {
            let (ms, id) = m.split_once('_').ok_or_else(|| {
                FlowError::Invalid("marker: not a marker this service gave".into())
            })?;
            let ms: i64 = ms
                .parse()
                .map_err(|_| FlowError::Invalid("marker: not a marker this service gave".into()))?;
            let id: FlowRunId = id
                .parse()
                .map_err(|_| FlowError::Invalid("marker: not a marker this service gave".into()))?;
            let at = chrono::DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| FlowError::Invalid("marker: out of range".into()))?;
            Some((at, id))
        }
    };
    let principals: Vec<String> = viewer
        .principals()
        .iter()
        .map(ToString::to_string)
        .collect();
    let filter = RunFilter {
        flow_id: query.flow_id,
        statuses: query.statuses,
        label: query.label,
        before,
        limit: limit + 1,
    };
    let mut runs = state.store.runs_for(me, &principals, &filter).await?;
    let more = runs.len() > limit as usize;
    runs.truncate(limit as usize);
    let marker = more
        .then(|| {
            runs.last()
                .map(|r| format!("{}_{}", r.created_at.timestamp_millis(), r.id))
        })
        .flatten();
    let mut flows = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(runs.len());
    for run in runs {
        if let std::collections::hash_map::Entry::Vacant(slot) = flows.entry(run.flow_id) {
            slot.insert(state.store.flow(run.flow_id).await?);
        }
        let roles = RunRoles::of(viewer, &run, flows[&run.flow_id].as_ref());
        out.push(info(run, &roles));
    }
    Ok(RunList { runs: out, marker })
}

pub async fn log(
    state: &AppState,
    viewer: &Viewer,
    id: FlowRunId,
    after: Option<u64>,
    limit: Option<u32>,
) -> FlowResult<RunLog> {
    visible(state, viewer, id).await?;
    let limit = limit.unwrap_or(100).clamp(1, 1000);
    let mut entries = state.store.run_log(id, after, limit + 1).await?;
    let has_next_page = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    Ok(RunLog {
        entries: entries
            .into_iter()
            .map(|e| RunLogEntry {
                seq: e.seq,
                time: e.at,
                state: e.state,
                code: e.code,
                details: e.details,
            })
            .collect(),
        has_next_page,
    })
}

pub async fn update(
    state: &AppState,
    viewer: &Viewer,
    id: FlowRunId,
    update: RunUpdate,
) -> FlowResult<RunInfo> {
    let (mut run, roles) = managed(state, viewer, id, "change it").await?;
    if let Some(label) = update.label {
        run.label = Some(label);
    }
    if let Some(tags) = update.tags {
        run.tags = tags;
    }
    check_label_and_tags(run.label.as_deref(), &run.tags)?;
    if let Some(m) = update.run_managers {
        run.run_managers = principals(state, "run_managers", &m).await?;
    }
    if let Some(m) = update.run_monitors {
        run.run_monitors = principals(state, "run_monitors", &m).await?;
    }
    if !state.store.update_run_meta(&run).await? {
        return Err(FlowError::NotFound(format!("run {id} does not exist")));
    }
    Ok(info(run, &roles))
}

/// Tells the run's driver; if no driver here has it yet (just after a
/// restart), wakes the sweeper and waits for it to be claimed.
async fn tell(state: &AppState, id: FlowRunId, nudge: fn() -> Nudge) -> FlowResult<()> {
    for _ in 0..50 {
        if state.flows.nudge(id, nudge()) {
            return Ok(());
        }
        state.flows.wake.notify_one();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(FlowError::Unavailable(format!(
        "run {id} is being taken over by a service replica; try again in a few seconds"
    )))
}

async fn wait_final(state: &AppState, id: FlowRunId) -> FlowResult<()> {
    for _ in 0..100 {
        match state.store.run(id).await? {
            Some(r) if !r.status.is_final() => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Cancels a run that is not finished (409 if it is): its running actions
/// are cancelled and it ends FAILED with `RunCancelled`.
pub async fn cancel(state: &AppState, viewer: &Viewer, id: FlowRunId) -> FlowResult<RunInfo> {
    let (run, _) = managed(state, viewer, id, "cancel it").await?;
    if run.status.is_final() {
        return Err(FlowError::Conflict(format!(
            "run {id} already ended ({})",
            display_status(&run)
        )));
    }
    tell(state, id, || Nudge::Cancel).await?;
    wait_final(state, id).await?;
    show(state, viewer, id).await
}

/// Asks an INACTIVE run to look at what it waits on again now.
pub async fn resume(state: &AppState, viewer: &Viewer, id: FlowRunId) -> FlowResult<RunInfo> {
    let (run, _) = managed(state, viewer, id, "resume it").await?;
    if run.status.is_final() {
        return Err(FlowError::Conflict(format!("run {id} already ended")));
    }
    tell(state, id, || Nudge::Look).await?;
    show(state, viewer, id).await
}

/// Forgets a finished run and its log (409 while it runs).
pub async fn release(state: &AppState, viewer: &Viewer, id: FlowRunId) -> FlowResult<()> {
    let (run, _) = managed(state, viewer, id, "release it").await?;
    if !run.status.is_final() {
        return Err(FlowError::Conflict(format!(
            "run {id} is still running; cancel it first"
        )));
    }
    state.store.delete_run(id).await?;
    Ok(())
}

/// Answers the run's waiting approval step. Whoever the step names as
/// approvers may answer (the starter by default); seeing the run is
/// needed too.
pub async fn approve(
    state: &AppState,
    viewer: &Viewer,
    id: FlowRunId,
    answer: RunApprove,
) -> FlowResult<RunInfo> {
    let not_found = || FlowError::NotFound(format!("run {id} does not exist"));
    let run = state.store.run(id).await?.ok_or_else(not_found)?;
    let flow = state.store.flow(run.flow_id).await?;
    let roles = RunRoles::of(viewer, &run, flow.as_ref());
    let waiting: Vec<_> = state
        .store
        .actions_of_run(id)
        .await?
        .into_iter()
        .filter(|a| {
            a.provider == Provider::Approval.name()
                && a.status == lattice_protocol::flows::ActionState::Inactive
                && answer
                    .request_id
                    .as_ref()
                    .is_none_or(|r| *r == a.request_id)
        })
        .collect();
    let approvable: Vec<_> = waiting
        .into_iter()
        .filter(|a| {
            let approvers: Vec<String> = a.internal["approvers"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|p| p.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            approvers.iter().any(|p| super::roles::matches(viewer, p))
        })
        .collect();
    if !roles.monitor && approvable.is_empty() {
        return Err(not_found());
    }
    let action = match approvable.len() {
        0 => {
            return Err(if run.status == RunStatus::Inactive {
                FlowError::Denied(format!("run {id} waits for an approval you may not give"))
            } else {
                FlowError::Conflict(format!("run {id} is not waiting for an approval"))
            })
        }
        1 => approvable.into_iter().next().expect("one"),
        n => {
            return Err(FlowError::Invalid(format!(
                "run {id} waits on {n} approvals; name one with request_id"
            )))
        }
    };
    super::actions::approve(state, viewer, action, answer.option, answer.input).await?;
    tell(state, id, || Nudge::Look).await?;
    // The answer is recorded; the run moves on as its driver sees it.
    for _ in 0..40 {
        let now = state.store.run(id).await?.ok_or_else(not_found)?;
        if now.status != RunStatus::Inactive {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut run = state.store.run(id).await?.ok_or_else(not_found)?;
    run.machine.clear();
    Ok(info(run, &roles))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use lattice_flows::model::LogEvent;

    #[test]
    fn log_entries_keep_their_code_apart_from_their_details() {
        let record = log_record(LogEntry {
            seq: 3,
            time: Utc::now(),
            state: "Move".into(),
            event: LogEvent::ActionStarted {
                request_id: "r".into(),
                action_url: "/v1/actions/transfer".into(),
                body: json!({"a": 1}),
            },
        });
        assert_eq!((record.seq, record.code.as_str()), (3, "action_started"));
        assert_eq!(record.details["request_id"], json!("r"));
        assert!(record.details.get("code").is_none());
    }

    #[test]
    fn labels_and_tags_are_bounded() {
        assert!(check_label_and_tags(Some("nightly"), &["a".into()]).is_ok());
        assert!(check_label_and_tags(Some(&"x".repeat(MAX_LABEL_CHARS + 1)), &[]).is_err());
        assert!(check_label_and_tags(None, &[String::new()]).is_err());
        let many: Vec<String> = (0..=MAX_RUN_TAGS).map(|i| i.to_string()).collect();
        assert!(check_label_and_tags(None, &many).is_err());
    }

    #[test]
    fn the_scopes_a_run_needs_come_from_its_builtin_actions() {
        let definition = FlowDefinition::from_value(json!({"StartAt": "M", "States": {
            "M": {"Type": "Map", "ItemsPath": "$.xs", "Iterator": {"StartAt": "C", "States": {
                "C": {"Type": "Action", "ActionUrl": "/v1/actions/compute", "End": true}}}, "Next": "T"},
            "T": {"Type": "Action", "ActionUrl": "https://svc.example.org/v1/actions/transfer", "Next": "E"},
            "E": {"Type": "Action", "ActionUrl": "https://elsewhere.example.org/run", "End": true}}}))
        .unwrap();
        let scopes = scopes_needed(&definition, "https://svc.example.org/");
        assert_eq!(scopes, vec![Scope::Compute, Scope::Transfer]);
    }
}
