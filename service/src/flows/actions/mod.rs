//! The built-in action providers, named by their path on the service
//! (`/v1/actions/<name>`), and the action-provider API over them: run
//! (idempotent per creator and request id), status, cancel, release,
//! resume. Flows call them in-process through the same functions the HTTP
//! routes call, as the run's starter.
//!
//! How an action starts, so that a crash never starts one twice: the
//! provider first *plans* it from the body (checks the body, chooses every
//! id it will create), the plan is stored with the action record, and only
//! then is the work *begun*; `begin` is idempotent (a transfer's
//! submission id, a compute batch's pre-chosen task ids), and a record
//! whose plan was stored but not begun is begun again on the next request
//! with the same request id.
//!
//! Modules: [`compute`] (tasks), [`data`] (transfer, delete, ls, mkdir),
//! [`other`] (search ingest and delete, access rules, approval, echo,
//! expression evaluation). They know nothing of runs.

pub(crate) mod compute;
pub(crate) mod data;
pub(crate) mod other;

use chrono::Utc;
use lattice_protocol::api::Scope;
use lattice_protocol::flows::{ActionProviderInfo, ActionRequest, ActionState, ActionStatus};
use lattice_protocol::{ActionId, FlowRunId};
use serde_json::{json, Value};

use super::roles::matches;
use super::{FlowError, FlowResult};
use crate::auth::Caller;
use crate::sharing::Viewer;
use crate::state::AppState;
use crate::store::{ActionRecord, StoreError};

/// Longest request id, in bytes.
const MAX_REQUEST_ID: usize = 256;

/// One built-in provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    Transfer,
    Delete,
    Ls,
    Mkdir,
    Compute,
    SearchIngest,
    SearchDelete,
    SetAccessRule,
    Approval,
    ExpressionEval,
    Echo,
}

impl Provider {
    pub const ALL: [Provider; 11] = [
        Provider::Transfer,
        Provider::Delete,
        Provider::Ls,
        Provider::Mkdir,
        Provider::Compute,
        Provider::SearchIngest,
        Provider::SearchDelete,
        Provider::SetAccessRule,
        Provider::Approval,
        Provider::ExpressionEval,
        Provider::Echo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Transfer => "transfer",
            Provider::Delete => "delete",
            Provider::Ls => "ls",
            Provider::Mkdir => "mkdir",
            Provider::Compute => "compute",
            Provider::SearchIngest => "search_ingest",
            Provider::SearchDelete => "search_delete",
            Provider::SetAccessRule => "set_access_rule",
            Provider::Approval => "approval",
            Provider::ExpressionEval => "expression_eval",
            Provider::Echo => "echo",
        }
    }

    /// The provider named `name`, or 404 listing the known ones.
    pub fn named(name: &str) -> FlowResult<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                FlowError::NotFound(format!(
                    "no built-in action provider `{name}`; there are {}",
                    Self::ALL.map(|p| p.name()).join(", ")
                ))
            })
    }

    /// The provider an `ActionUrl` names: `/v1/actions/<name>` (with or
    /// without a trailing `/`, or the same path under this service's
    /// public URL).
    pub fn of_url(url: &str, public_url: &str) -> Option<Self> {
        let path = url
            .strip_prefix(public_url.trim_end_matches('/'))
            .unwrap_or(url);
        let name = path.strip_prefix("/v1/actions/")?.trim_end_matches('/');
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The token scopes the provider's work needs.
    pub fn scope(self) -> Option<Scope> {
        match self {
            Provider::Transfer
            | Provider::Delete
            | Provider::Ls
            | Provider::Mkdir
            | Provider::SetAccessRule => Some(Scope::Transfer),
            Provider::Compute => Some(Scope::Compute),
            _ => None,
        }
    }

    pub fn info(self) -> ActionProviderInfo {
        let (title, subtitle, input_schema) = match self {
            Provider::Transfer => ("Transfer", "Copy files and directories between collections (the anchor's transfer body, or Lattice's own)", data::transfer_schema()),
            Provider::Delete => ("Delete", "Delete paths in a collection", json!({"type": "object", "required": ["DATA"]})),
            Provider::Ls => ("List directory", "List a directory of a collection", json!({"type": "object", "required": ["path"]})),
            Provider::Mkdir => ("Make directory", "Create a directory in a collection", json!({"type": "object", "required": ["path"]})),
            Provider::Compute => ("Compute", "Run a registered function on an endpoint, once or for a batch of argument sets", compute::schema()),
            Provider::SearchIngest => ("Search ingest", "Add or replace entries of a search index", json!({"type": "object", "required": ["index_id"]})),
            Provider::SearchDelete => ("Search delete", "Delete subjects from a search index", json!({"type": "object", "required": ["index_id", "subjects"]})),
            Provider::SetAccessRule => ("Set access rule", "Grant a principal read or read-write access to a path of a collection", json!({"type": "object", "required": ["path", "principal"]})),
            Provider::Approval => ("Approval", "Wait until someone approves (or answers) in the CLI or the web app", json!({"type": "object"})),
            Provider::ExpressionEval => ("Expression evaluation", "Return the (evaluated) body", json!({"type": "object"})),
            Provider::Echo => ("Echo", "Return the body as the action's details", json!({"type": "object"})),
        };
        ActionProviderInfo {
            title: title.to_owned(),
            subtitle: subtitle.to_owned(),
            api_version: "1.0".to_owned(),
            synchronous: matches!(
                self,
                Provider::Ls
                    | Provider::Mkdir
                    | Provider::SetAccessRule
                    | Provider::ExpressionEval
                    | Provider::Echo
            ),
            log_supported: false,
            input_schema,
            runnable_by: vec!["all_authenticated_users".to_owned()],
            visible_to: vec!["public".to_owned()],
        }
    }
}

/// What the provider reports after beginning or looking again.
pub(crate) struct Progress {
    pub state: ActionState,
    pub details: Value,
}

impl Progress {
    pub(crate) fn done(details: Value) -> Self {
        Self {
            state: ActionState::Succeeded,
            details,
        }
    }

    pub(crate) fn active(details: Value) -> Self {
        Self {
            state: ActionState::Active,
            details,
        }
    }

    pub(crate) fn failed(details: Value) -> Self {
        Self {
            state: ActionState::Failed,
            details,
        }
    }
}

/// The plan: what `begin` needs, stored before anything starts.
async fn plan(
    state: &AppState,
    caller: &Caller,
    provider: Provider,
    body: &Value,
) -> FlowResult<Value> {
    match provider {
        Provider::Compute => compute::plan(body),
        Provider::Transfer => data::plan_transfer(body),
        Provider::Delete => data::plan_delete(body),
        Provider::Ls | Provider::Mkdir => Ok(json!({})),
        Provider::Approval => other::plan_approval(state, caller, body).await,
        _ => Ok(json!({})),
    }
}

/// Starts (or, idempotently, starts again) the work of a planned action.
async fn begin(
    state: &AppState,
    caller: &Caller,
    record: &mut ActionRecord,
) -> FlowResult<Progress> {
    let body = record.body.clone();
    let progress = match record.provider_kind() {
        Provider::Compute => compute::begin(state, caller, &body, &record.internal).await?,
        Provider::Transfer | Provider::Delete => {
            data::begin_task(state, caller, &mut record.internal).await?
        }
        Provider::Ls => data::ls(state, caller, &body).await?,
        Provider::Mkdir => data::mkdir(state, caller, &body).await?,
        Provider::SearchIngest => {
            other::search_ingest(state, caller, &body, &mut record.internal).await?
        }
        Provider::SearchDelete => {
            other::search_delete(state, caller, &body, &mut record.internal).await?
        }
        Provider::SetAccessRule => other::set_access_rule(state, caller, &body).await?,
        Provider::Approval => {
            crate::notify::hooks::approval_requested(state, record);
            other::approval_waiting(&record.internal)
        }
        Provider::ExpressionEval | Provider::Echo => Progress::done(body),
    };
    set_begun(&mut record.internal);
    Ok(progress)
}

/// Looks again at an ACTIVE action's work.
async fn refresh(
    state: &AppState,
    caller: &Caller,
    record: &ActionRecord,
) -> FlowResult<Option<Progress>> {
    Ok(match record.provider_kind() {
        Provider::Compute => Some(compute::refresh(state, &record.internal).await?),
        Provider::Transfer | Provider::Delete => {
            Some(data::refresh_task(state, caller, &record.internal).await?)
        }
        Provider::SearchIngest | Provider::SearchDelete => {
            Some(other::refresh_search(state, caller, &record.internal).await?)
        }
        _ => None,
    })
}

fn begun(internal: &Value) -> bool {
    internal.get("begun").and_then(Value::as_bool) == Some(true)
}

fn set_begun(internal: &mut Value) {
    if let Value::Object(map) = internal {
        map.insert("begun".into(), Value::Bool(true));
    } else {
        *internal = json!({"begun": true});
    }
}

impl ActionRecord {
    fn provider_kind(&self) -> Provider {
        Provider::named(&self.provider).unwrap_or(Provider::Echo)
    }
}

/// The action-provider status document of a record.
pub fn status_of(record: &ActionRecord) -> ActionStatus {
    ActionStatus {
        action_id: record.id.to_string(),
        status: record.status,
        display_status: Some(display_status(record)),
        creator_id: Some(format!("identity:{}", record.creator)),
        label: record.label.clone(),
        monitor_by: record.monitor_by.clone(),
        manage_by: record.manage_by.clone(),
        start_time: Some(record.created_at),
        completion_time: record.completed_at,
        release_after: record.release_after,
        details: record.details.clone(),
    }
}

fn display_status(record: &ActionRecord) -> String {
    match (record.status, record.provider.as_str()) {
        (ActionState::Inactive, "approval") => "AWAITING APPROVAL".into(),
        (ActionState::Active, _) => "RUNNING".into(),
        (s, _) => serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    }
}

fn check_request(request: &ActionRequest) -> FlowResult<()> {
    if request.request_id.is_empty() || request.request_id.len() > MAX_REQUEST_ID {
        return Err(FlowError::Invalid(format!(
            "request_id: use 1 to {MAX_REQUEST_ID} bytes"
        )));
    }
    if !request.body.is_object() {
        return Err(FlowError::Invalid("body: must be a JSON object".into()));
    }
    if request.label.as_ref().is_some_and(|l| l.len() > 256) {
        return Err(FlowError::Invalid("label: at most 256 bytes".into()));
    }
    for (field, list) in [
        ("monitor_by", &request.monitor_by),
        ("manage_by", &request.manage_by),
    ] {
        super::roles::canonical_principals(field, list, true).map_err(FlowError::Invalid)?;
    }
    Ok(())
}

/// `POST /v1/actions/<name>/run`: starts an action as `caller`; the same
/// (caller, request id) again returns the first action (`false`: not new).
pub async fn run(
    state: &AppState,
    caller: &Caller,
    provider: Provider,
    request: ActionRequest,
    run_id: Option<FlowRunId>,
) -> FlowResult<(bool, ActionStatus)> {
    check_request(&request)?;
    if let Some(scope) = provider.scope() {
        if !caller.has_scope(scope) {
            return Err(FlowError::Denied(format!(
                "the {} action needs a token with the {} scope",
                provider.name(),
                scope.as_str()
            )));
        }
    }
    let store = &state.store;
    if let Some(mut existing) = store
        .action_by_request(provider.name(), caller.identity_id, &request.request_id)
        .await?
    {
        if !begun(&existing.internal) && !existing.status.is_final() {
            // Planned, then interrupted before it began: begin now.
            settle(state, caller, &mut existing).await?;
        }
        return Ok((false, status_of(&existing)));
    }
    let internal = plan(state, caller, provider, &request.body).await?;
    let mut record = ActionRecord {
        id: ActionId::new(),
        provider: provider.name().to_owned(),
        request_id: request.request_id,
        creator: caller.identity_id,
        run_id,
        status: ActionState::Active,
        label: request.label,
        monitor_by: request.monitor_by,
        manage_by: request.manage_by,
        body: request.body,
        details: json!({}),
        internal,
        created_at: Utc::now(),
        completed_at: None,
        release_after: request.release_after,
    };
    match store.insert_action(&record).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            // A concurrent request with the same id won: its action.
            let existing = store
                .action_by_request(provider.name(), caller.identity_id, &record.request_id)
                .await?
                .ok_or_else(|| FlowError::Conflict("the action vanished".into()))?;
            return Ok((false, status_of(&existing)));
        }
        Err(e) => return Err(e.into()),
    }
    settle(state, caller, &mut record).await?;
    Ok((true, status_of(&record)))
}

/// Begins a planned action and records what happened; a refusal fails the
/// action (and is returned) so the same request id does not retry it.
async fn settle(state: &AppState, caller: &Caller, record: &mut ActionRecord) -> FlowResult<()> {
    match begin(state, caller, record).await {
        Ok(progress) => apply(state, record, progress).await,
        Err(e) if e.is_permanent() => {
            let message = e.client_message();
            set_begun(&mut record.internal);
            apply(
                state,
                record,
                Progress::failed(json!({"error": "ActionUnableToRun", "cause": message})),
            )
            .await?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

async fn apply(state: &AppState, record: &mut ActionRecord, progress: Progress) -> FlowResult<()> {
    record.status = progress.state;
    record.details = progress.details;
    if record.status.is_final() && record.completed_at.is_none() {
        record.completed_at = Some(Utc::now());
    }
    state.store.update_action(record).await?;
    Ok(())
}

/// Loads an action of `provider` that `caller` may see (its creator, or a
/// principal of `monitor_by`/`manage_by`); `manage` asks for `manage_by`.
async fn visible(
    state: &AppState,
    caller: &Caller,
    provider: Provider,
    id: ActionId,
    manage: bool,
) -> FlowResult<ActionRecord> {
    let not_found = || FlowError::NotFound(format!("action {id} does not exist"));
    let record = state
        .store
        .action(id)
        .await?
        .filter(|r| r.provider == provider.name())
        .ok_or_else(not_found)?;
    let viewer = Viewer::of(&state.store, caller.identity_id).await?;
    if viewer.is(record.creator) {
        return Ok(record);
    }
    let manager = record.manage_by.iter().any(|p| matches(&viewer, p));
    let monitor = manager || record.monitor_by.iter().any(|p| matches(&viewer, p));
    match (monitor, manage, manager) {
        (false, _, _) => Err(not_found()),
        (true, true, false) => Err(FlowError::Denied(format!(
            "only the action's creator or a principal of its manage_by may change action {id}"
        ))),
        _ => Ok(record),
    }
}

/// Looks again at an unfinished action and records any change. The run's
/// starter is the caller for the work's own permission checks.
pub(crate) async fn refreshed(
    state: &AppState,
    mut record: ActionRecord,
) -> FlowResult<ActionRecord> {
    if record.status.is_final() || record.status == ActionState::Inactive {
        return Ok(record);
    }
    let caller = acting_as(record.creator, record.provider_kind().scope());
    if !begun(&record.internal) {
        settle(state, &caller, &mut record).await?;
        return Ok(record);
    }
    if let Some(progress) = refresh(state, &caller, &record).await? {
        if progress.state != record.status || progress.details != record.details {
            apply(state, &mut record, progress).await?;
        }
    }
    Ok(record)
}

pub async fn status(
    state: &AppState,
    caller: &Caller,
    provider: Provider,
    id: ActionId,
) -> FlowResult<ActionStatus> {
    let record = visible(state, caller, provider, id, false).await?;
    Ok(status_of(&refreshed(state, record).await?))
}

/// Cancels an unfinished action: its work is cancelled where it can be,
/// and it ends FAILED with `details.cancelled`.
pub async fn cancel(
    state: &AppState,
    caller: &Caller,
    provider: Provider,
    id: ActionId,
) -> FlowResult<ActionStatus> {
    let record = visible(state, caller, provider, id, true).await?;
    Ok(status_of(&cancel_record(state, record).await?))
}

pub(crate) async fn cancel_record(
    state: &AppState,
    mut record: ActionRecord,
) -> FlowResult<ActionRecord> {
    if record.status.is_final() {
        return Ok(record);
    }
    let caller = acting_as(record.creator, record.provider_kind().scope());
    match record.provider_kind() {
        Provider::Compute => compute::cancel(state, &caller, &record.internal).await,
        Provider::Transfer | Provider::Delete => {
            data::cancel_task(state, &caller, &record.internal).await
        }
        _ => {}
    }
    let mut details = record.details.clone();
    if let Value::Object(map) = &mut details {
        map.insert("cancelled".into(), Value::Bool(true));
    } else {
        details = json!({"cancelled": true});
    }
    apply(state, &mut record, Progress::failed(details)).await?;
    Ok(record)
}

/// Forgets a finished action (409 while it runs).
pub async fn release(
    state: &AppState,
    caller: &Caller,
    provider: Provider,
    id: ActionId,
) -> FlowResult<ActionStatus> {
    let record = visible(state, caller, provider, id, true).await?;
    if !record.status.is_final() {
        return Err(FlowError::Conflict(format!(
            "action {id} is still running; cancel it first"
        )));
    }
    state.store.delete_action(id).await?;
    Ok(status_of(&record))
}

/// Asks an INACTIVE action to go on: an approval goes on only when
/// approved, so this just reports its status.
pub async fn resume(
    state: &AppState,
    caller: &Caller,
    provider: Provider,
    id: ActionId,
) -> FlowResult<ActionStatus> {
    let record = visible(state, caller, provider, id, true).await?;
    Ok(status_of(&refreshed(state, record).await?))
}

/// Answers a waiting approval (see [`other::approve`]).
pub(crate) async fn approve(
    state: &AppState,
    viewer: &Viewer,
    mut record: ActionRecord,
    option: Option<String>,
    input: Option<Value>,
) -> FlowResult<ActionRecord> {
    let progress = other::approve(viewer, &record, option, input)?;
    apply(state, &mut record, progress).await?;
    Ok(record)
}

/// The caller a run's built-in action acts as: the run's starter, with
/// only the scope that action needs, bound to nothing the user holds (no
/// login token is stored; this value never leaves the process).
pub(crate) fn acting_as(identity: lattice_protocol::IdentityId, scope: Option<Scope>) -> Caller {
    Caller {
        identity_id: identity,
        token_id: lattice_protocol::TokenId(uuid::Uuid::nil()),
        family_id: lattice_protocol::TokenId(uuid::Uuid::nil()),
        scopes: scope.into_iter().collect(),
        expires_at: Utc::now() + chrono::Duration::hours(1),
        client_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_urls_name_builtin_providers() {
        let base = "https://lattice.example.org";
        assert_eq!(
            Provider::of_url("/v1/actions/compute", base),
            Some(Provider::Compute)
        );
        assert_eq!(
            Provider::of_url("/v1/actions/transfer/", base),
            Some(Provider::Transfer)
        );
        assert_eq!(
            Provider::of_url("https://lattice.example.org/v1/actions/ls", base),
            Some(Provider::Ls)
        );
        assert_eq!(Provider::of_url("/v1/actions/nope", base), None);
        assert_eq!(
            Provider::of_url("https://actions.globus.org/transfer/transfer", base),
            None
        );
        for p in Provider::ALL {
            assert_eq!(Provider::named(p.name()).unwrap(), p);
            assert!(lattice_protocol::flows::BUILTIN_ACTIONS.contains(&p.name()));
        }
        let e = Provider::named("tranfser").unwrap_err().to_string();
        assert!(e.contains("transfer") && e.contains("tranfser"), "{e}");
    }
}
