//! The flows vocabulary: flows (a stored definition plus its input schema,
//! metadata and roles), runs and their log, and the action-provider API
//! that Lattice both calls (external providers) and serves (its built-in
//! actions under `/v1/actions/<name>` and every flow under `/v1/flows/<id>`).
//!
//! Field names follow the anchor (Globus Flows and the Globus
//! action-provider contract: `flow_starters`, `run_managers`,
//! `request_id`, `monitor_by`, `release_after`, `display_status`) so that
//! documents and clients written for it need few changes. The definition
//! itself is carried as JSON here; its language lives in `lattice-flows`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{FlowId, FlowRunId, IdentityId};

/// Largest flow document (definition plus schema and metadata), in bytes.
pub const MAX_FLOW_BYTES: usize = 1024 * 1024;
/// Longest run label, in characters.
pub const MAX_LABEL_CHARS: usize = 256;
/// Most tags on one run.
pub const MAX_RUN_TAGS: usize = 32;

// ---------------------------------------------------------------------- flows

/// A role on a flow. The owner holds every one of them.
/// - `administrator`: update the flow, change its roles, delete it, and
///   manage every run of it;
/// - `starter`: start runs (and see the flow);
/// - `viewer`: see the flow's definition;
/// - `run_manager`: cancel, resume, relabel and release every run of it;
/// - `run_monitor`: see every run of it and their logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FlowRoleName {
    Administrator,
    Starter,
    Viewer,
    RunManager,
    RunMonitor,
}

impl FlowRoleName {
    pub const ALL: [FlowRoleName; 5] = [
        FlowRoleName::Administrator,
        FlowRoleName::Starter,
        FlowRoleName::Viewer,
        FlowRoleName::RunManager,
        FlowRoleName::RunMonitor,
    ];
}

/// `POST /v1/flows`. Role lists hold principals (`identity:ID`,
/// `group:ID`, `all_authenticated_users`, and for viewers also `public`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlowCreate {
    /// `{StartAt, States, Comment}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub definition: Value,
    /// JSON Schema every run's input must satisfy (`{}`: anything).
    #[serde(default = "empty_object")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input_schema: Value,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub subtitle: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub flow_administrators: Vec<String>,
    #[serde(default)]
    pub flow_starters: Vec<String>,
    #[serde(default)]
    pub flow_viewers: Vec<String>,
    #[serde(default)]
    pub run_managers: Vec<String>,
    #[serde(default)]
    pub run_monitors: Vec<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// `PUT /v1/flows/{id}`: fields left out stay as they are; a role list
/// given replaces that role's list.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlowUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub definition: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub input_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keywords: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_administrators: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_starters: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_viewers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_managers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_monitors: Option<Vec<String>>,
}

/// One flow as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlowInfo {
    pub id: FlowId,
    /// Where the flow is started, and its address as an action provider.
    pub action_url: String,
    pub owner: IdentityId,
    pub title: String,
    pub subtitle: String,
    pub description: String,
    pub keywords: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub definition: Value,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input_schema: Value,
    pub flow_administrators: Vec<String>,
    pub flow_starters: Vec<String>,
    pub flow_viewers: Vec<String>,
    pub run_managers: Vec<String>,
    pub run_monitors: Vec<String>,
    /// The caller's roles on the flow (`owner` first if they own it).
    pub user_roles: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What validation warned about (the definition was accepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<DefinitionProblem>,
}

/// `GET /v1/flows`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlowList {
    pub flows: Vec<FlowInfo>,
}

/// One problem validation found, located by state and field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionProblem {
    /// The state's path (`Outer/branch 1/Inner`), empty for the definition.
    pub state: String,
    /// The field (`Next`, `Parameters.path.$`), empty for the state itself.
    pub field: String,
    pub message: String,
}

/// `POST /v1/flows/validate` (the body is a `FlowCreate`): every problem
/// at once. `valid` is false when there are errors.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidationReport {
    pub valid: bool,
    pub errors: Vec<DefinitionProblem>,
    pub warnings: Vec<DefinitionProblem>,
}

// ----------------------------------------------------------------------- runs

/// A run's status, as the anchor spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RunStatus {
    Active,
    /// Waiting on a person (an approval) or on an action that is INACTIVE.
    Inactive,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed)
    }
}

/// `POST /v1/flows/{id}/run`: the action-provider request shape, so a flow
/// can be an action of another flow. `body` is the run's input.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunStart {
    #[serde(default = "empty_object")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub body: Value,
    /// Starting twice with the same request id starts one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Principals who may see this run (besides the flow's run monitors).
    #[serde(default, alias = "monitor_by")]
    pub run_monitors: Vec<String>,
    /// Principals who may manage this run (besides the flow's run managers).
    #[serde(default, alias = "manage_by")]
    pub run_managers: Vec<String>,
}

/// One run as the API shows it; also the action status of a flow used as
/// an action (`action_id` is the run id).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunInfo {
    /// The run's id (also `run_id`, and `action_id` as an action).
    pub id: FlowRunId,
    pub run_id: FlowRunId,
    pub action_id: FlowRunId,
    pub flow_id: FlowId,
    pub flow_title: String,
    pub status: RunStatus,
    /// A word or two for people: `RUNNING`, `AWAITING APPROVAL`, `SUCCEEDED`...
    pub display_status: String,
    pub label: Option<String>,
    pub tags: Vec<String>,
    pub created_by: IdentityId,
    pub run_managers: Vec<String>,
    pub run_monitors: Vec<String>,
    pub start_time: DateTime<Utc>,
    pub completion_time: Option<DateTime<Utc>>,
    /// State entries so far.
    pub transitions: u64,
    /// `output` once SUCCEEDED, `error` (`{Error, Cause}`) once FAILED,
    /// `waiting_on` (the INACTIVE actions and what they wait for) while
    /// INACTIVE.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Value,
    /// The caller's roles on the run (`run_owner`, `run_manager`, `run_monitor`).
    pub user_roles: Vec<String>,
}

/// `GET /v1/runs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunList {
    pub runs: Vec<RunInfo>,
    /// Pass as `marker` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

/// `PUT /v1/runs/{id}`: fields left out stay as they are.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_managers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_monitors: Option<Vec<String>>,
}

/// One entry of a run's log.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunLogEntry {
    /// Position in the run's log, from 0.
    pub seq: u64,
    pub time: DateTime<Utc>,
    /// The state's path; empty for the flow itself.
    pub state: String,
    /// `flow_started`, `state_entered`, `action_started`, `retrying`,
    /// `caught`, `flow_succeeded`, ...
    pub code: String,
    /// The rest of the entry (inputs and outputs without private parameters).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Value,
}

/// `GET /v1/runs/{id}/log`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunLog {
    pub entries: Vec<RunLogEntry>,
    /// True when more entries follow (ask again with `after` = the last `seq`).
    pub has_next_page: bool,
}

/// `POST /v1/runs/{id}/approve`: answers the run's waiting approval (or
/// input) step, which then SUCCEEDS with `{option, input, approved_by}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunApprove {
    /// One of the options the step offered (default: its first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option: Option<String>,
    /// Free input for an input step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub input: Option<Value>,
    /// Which waiting step, when several wait at once (its request id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

// ----------------------------------------------------- action-provider API

/// The state of one action, as the action-provider contract spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ActionState {
    Active,
    Inactive,
    Succeeded,
    Failed,
}

impl ActionState {
    pub fn is_final(self) -> bool {
        matches!(self, ActionState::Succeeded | ActionState::Failed)
    }
}

/// `POST {provider}/run`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionRequest {
    /// The caller's id for this request: the same id twice starts one action.
    pub request_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub body: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monitor_by: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manage_by: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Seconds after completion when the provider may forget the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_after: Option<u64>,
}

/// What a provider answers about one action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionStatus {
    pub action_id: String,
    pub status: ActionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monitor_by: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manage_by: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_after: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[serde(default)]
    pub details: Value,
}

/// `GET {provider}/`: what the provider is and what its body looks like.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionProviderInfo {
    pub title: String,
    pub subtitle: String,
    pub api_version: String,
    pub synchronous: bool,
    pub log_supported: bool,
    /// The JSON Schema of `body`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input_schema: Value,
    /// Who may use it (`all_authenticated_users`).
    pub runnable_by: Vec<String>,
    pub visible_to: Vec<String>,
}

/// The built-in action providers' names (`/v1/actions/<name>`).
pub const BUILTIN_ACTIONS: &[&str] = &[
    "transfer",
    "delete",
    "ls",
    "mkdir",
    "compute",
    "search_ingest",
    "search_delete",
    "set_access_rule",
    "approval",
    "expression_eval",
    "echo",
];

/// `/v1/flows/<id>`: a flow used as an action of another flow.
pub fn flow_action_url(id: FlowId) -> String {
    format!("/v1/flows/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_start_accepts_the_action_provider_request_names() {
        let start: RunStart = serde_json::from_value(serde_json::json!({
            "body": {"x": 1}, "request_id": "r1", "monitor_by": ["public"],
            "manage_by": ["identity:a"]
        }))
        .unwrap();
        assert_eq!(start.run_monitors, vec!["public"]);
        assert_eq!(start.run_managers, vec!["identity:a"]);
        assert_eq!(start.request_id.as_deref(), Some("r1"));
    }

    #[test]
    fn statuses_are_spelled_as_the_anchor_spells_them() {
        assert_eq!(
            serde_json::to_value(RunStatus::Inactive).unwrap(),
            serde_json::json!("INACTIVE")
        );
        assert_eq!(
            serde_json::to_value(ActionState::Succeeded).unwrap(),
            serde_json::json!("SUCCEEDED")
        );
    }
}
