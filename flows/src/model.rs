//! Wire types: the flow definition document (the Globus Flows definition
//! language, field names as the anchor spells them) and the run status and
//! log entries the REST API shows. Data only, serde only, no behaviour, so
//! the service can move this module to `protocol/` unchanged.
//!
//! Paths, expressions and comparators are kept as the author wrote them
//! (strings and JSON values); `validate` checks them and reports every
//! problem at once, which typed parsing (one serde error) could not.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A flow definition, or one inner machine of a `Parallel` branch or a
/// `Map` iterator: `{StartAt, States, Comment}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FlowDefinition {
    pub start_at: String,
    pub states: BTreeMap<String, State>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One state, tagged by its `Type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type")]
pub enum State {
    Action(ActionState),
    Pass(PassState),
    Choice(ChoiceState),
    Wait(WaitState),
    Fail(FailState),
    Succeed(SucceedState),
    ExpressionEval(ExpressionEvalState),
    Parallel(ParallelState),
    Map(MapState),
}

/// `Next` or `End`, shared by the states that continue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Transition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<bool>,
}

/// Invokes an action provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActionState {
    pub action_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_path: Option<String>,
    /// Seconds the action may take before `ActionTimeout` (anchor default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_time: Option<u64>,
    /// When false, a FAILED action's status is stored at `ResultPath` and
    /// the flow continues; when true (the default) it raises
    /// `ActionFailedException`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_on_action_failure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catch: Vec<Catcher>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry: Vec<Retrier>,
    #[serde(flatten)]
    pub transition: Transition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Copies (part of) its input, or `Parameters`/`Result`, to `ResultPath`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PassState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_path: Option<String>,
    #[serde(flatten)]
    pub transition: Transition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Evaluates its `Parameters` (usually `.=` expressions) into `ResultPath`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExpressionEvalState {
    pub parameters: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_path: Option<String>,
    #[serde(flatten)]
    pub transition: Transition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChoiceState {
    pub choices: Vec<ChoiceRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One Choice rule: a comparison (`Variable` plus one comparator such as
/// `StringEquals`, `NumericLessThanPath`, `IsPresent`), or `And`/`Or`/`Not`
/// of nested rules. `Next` is set on top-level rules only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChoiceRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and: Option<Vec<ChoiceRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub or: Option<Vec<ChoiceRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<ChoiceRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The comparator (exactly one for a comparison rule), and any field
    /// the author added (validation names unknown ones).
    #[serde(flatten)]
    pub comparison: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_path: Option<String>,
    #[serde(flatten)]
    pub transition: Transition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FailState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SucceedState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Runs every branch on the same input; the output is the list of branch
/// outputs in branch order, stored at `ResultPath`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ParallelState {
    pub branches: Vec<FlowDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catch: Vec<Catcher>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry: Vec<Retrier>,
    #[serde(flatten)]
    pub transition: Transition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Runs the inner machine once per element of the list at `ItemsPath`
/// (each element is that run's input, or `Parameters` resolved against
/// `{"item": element, "index": i, "input": state input}`), at most
/// `MaxConcurrency` at a time (0 or absent: no limit beyond the run's
/// fan-out limit); the output is the list of outputs in item order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_path: Option<String>,
    /// `Iterator` (States Language 1.0) or `ItemProcessor` (its newer name).
    #[serde(alias = "ItemProcessor")]
    pub iterator: FlowDefinition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catch: Vec<Catcher>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry: Vec<Retrier>,
    #[serde(flatten)]
    pub transition: Transition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Catcher {
    pub error_equals: Vec<String>,
    pub next: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Retrier {
    pub error_equals: Vec<String>,
    /// Seconds before the first retry (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    /// Retries after the first attempt (default 3; 0 means never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Multiplier of the interval per retry (default 2.0, at least 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_rate: Option<f64>,
}

/// A run's status as the REST API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Active,
    /// Waiting on a person or a consent: at least one action is INACTIVE.
    Inactive,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed)
    }
}

/// The error a failed run (or state) ends with: `Error` is a name Catch
/// and Retry match on, `Cause` says what happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause")]
    pub cause: String,
}

/// What one run log entry records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "code")]
pub enum LogEvent {
    FlowStarted {
        input: Value,
    },
    StateEntered {
        input: Value,
    },
    StateExited {
        output: Value,
    },
    /// An action was requested; private parameters are omitted from `body`.
    ActionStarted {
        request_id: String,
        action_url: String,
        body: Value,
    },
    ActionInactive {
        request_id: String,
        details: Value,
    },
    ActionActive {
        request_id: String,
    },
    ActionCompleted {
        request_id: String,
        status: Value,
    },
    ActionCancelled {
        request_id: String,
    },
    WaitStarted {
        until: String,
    },
    Retrying {
        error: RunError,
        attempt: u32,
        at: String,
    },
    Caught {
        error: RunError,
        next: String,
    },
    FlowSucceeded {
        output: Value,
    },
    FlowFailed {
        error: RunError,
    },
    FlowCancelled,
}

/// One run log entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the run's log, from 0.
    pub seq: u64,
    pub time: chrono::DateTime<chrono::Utc>,
    /// Where: `""` for the flow, else the state path (`Name`, or
    /// `Outer/branch 1/Inner`, `Outer/item 3/Inner`).
    pub state: String,
    #[serde(flatten)]
    pub event: LogEvent,
}
