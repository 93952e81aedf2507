//! Checking a parsed definition before it is stored: every problem at once,
//! each naming its state (a path: `Name`, or `Outer/branch 1/Inner`,
//! `Outer/iterator/Inner` inside Parallel and Map) and field. Errors make
//! the definition unusable; warnings (a Choice without `Default`) do not.
//! Never panics: every input, however odd, yields a [`Report`].

use crate::choice;
use crate::definition::DefinitionError;
use crate::expr::Expression;
use crate::model::{Catcher, FlowDefinition, Retrier, State, Transition};
use crate::params;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeSet, VecDeque};

/// One problem with a definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The state path (empty for the definition itself).
    pub state: String,
    /// The field at fault (`Next`, `Parameters.id.$`, `Choices[1].Variable`).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.state.is_empty(), self.field.is_empty()) {
            (true, _) => write!(f, "{}: {}", self.field, self.message),
            (false, true) => write!(f, "state {:?}: {}", self.state, self.message),
            (false, false) => {
                write!(
                    f,
                    "state {:?}, {}: {}",
                    self.state, self.field, self.message
                )
            }
        }
    }
}

/// The result of [`validate`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Most states in one definition, inner machines included.
pub const MAX_STATES: usize = 1_000;
/// Deepest nesting of Parallel and Map.
pub const MAX_NESTING: usize = 8;

/// Validates a definition.
pub fn validate(definition: &FlowDefinition) -> Report {
    let mut v = Validator {
        report: Report::default(),
        states_seen: 0,
    };
    v.machine(definition, "", 0);
    v.report
}

struct Validator {
    report: Report,
    states_seen: usize,
}

impl Validator {
    fn error(&mut self, state: &str, field: &str, message: impl Into<String>) {
        self.report.errors.push(Problem {
            state: state.to_string(),
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn warning(&mut self, state: &str, field: &str, message: impl Into<String>) {
        self.report.warnings.push(Problem {
            state: state.to_string(),
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn machine(&mut self, m: &FlowDefinition, prefix: &str, depth: usize) {
        if depth > MAX_NESTING {
            self.error(
                prefix.trim_end_matches('/'),
                "",
                format!("Parallel and Map nest deeper than {MAX_NESTING} levels"),
            );
            return;
        }
        self.states_seen += m.states.len();
        if self.states_seen > MAX_STATES {
            self.error("", "States", format!("more than {MAX_STATES} states"));
            return;
        }
        let start_field = if prefix.is_empty() {
            "StartAt".to_string()
        } else {
            format!("{prefix}StartAt")
        };
        if m.states.is_empty() {
            self.error(prefix.trim_end_matches('/'), "States", "no states");
            return;
        }
        if !m.states.contains_key(&m.start_at) {
            self.error(
                "",
                &start_field,
                format!("StartAt names {:?}, which is not a state", m.start_at),
            );
        }
        for (name, state) in &m.states {
            let path = format!("{prefix}{name}");
            self.state(m, &path, state, depth);
        }
        // Reachability from StartAt over Next, Default, Choices and Catch.
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([m.start_at.as_str()]);
        while let Some(name) = queue.pop_front() {
            let Some(state) = m.states.get(name) else {
                continue;
            };
            if !seen.insert(name) {
                continue;
            }
            queue.extend(targets(state));
        }
        for name in m.states.keys() {
            if !seen.contains(name.as_str()) {
                self.error(
                    &format!("{prefix}{name}"),
                    "",
                    format!("unreachable from StartAt {:?}", m.start_at),
                );
            }
        }
    }

    fn target(&mut self, m: &FlowDefinition, path: &str, field: &str, target: &str) {
        if !m.states.contains_key(target) {
            self.error(path, field, format!("{target:?} is not a state"));
        }
    }

    fn transition(&mut self, m: &FlowDefinition, path: &str, t: &Transition) {
        match (&t.next, t.end) {
            (Some(next), Some(true)) => {
                self.error(path, "End", "has both Next and End");
                self.target(m, path, "Next", next);
            }
            (None, None | Some(false)) => self.error(path, "Next", "needs Next or \"End\": true"),
            (Some(next), _) => self.target(m, path, "Next", next),
            (None, Some(true)) => {}
        }
    }

    fn path_field(&mut self, path: &str, field: &str, value: Option<&str>) {
        if let Some(p) = value {
            if let Err(e) = params::parse_path(p) {
                self.error(path, field, e.to_string());
            }
        }
    }

    fn result_path(&mut self, path: &str, field: &str, value: Option<&str>) {
        if let Some(p) = value {
            if let Err(e) = params::parse_reference_path(p) {
                self.error(path, field, e.to_string());
            }
        }
    }

    /// `.$` paths and `.=` expressions of a Parameters template.
    fn parameters(&mut self, path: &str, field: &str, template: &Value) {
        match template {
            Value::Object(map) => {
                for (key, value) in map {
                    let f = format!("{field}.{key}");
                    if key == "__Private_Parameters" {
                        if !value
                            .as_array()
                            .is_some_and(|a| a.iter().all(Value::is_string))
                        {
                            self.error(path, &f, "a list of parameter names");
                        }
                    } else if key.ends_with(".$") {
                        match value.as_str() {
                            Some(p) => self.path_field(path, &f, Some(p)),
                            None => {
                                self.error(path, &f, "a \".$\" parameter takes a JSONPath string")
                            }
                        }
                    } else if key.ends_with(".=") {
                        match value.as_str() {
                            Some(src) => {
                                if let Err(e) = Expression::parse(src) {
                                    self.error(path, &f, e.to_string());
                                }
                            }
                            None => self.error(
                                path,
                                &f,
                                "a \".=\" parameter takes an expression string",
                            ),
                        }
                    } else {
                        self.parameters(path, &f, value);
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.parameters(path, &format!("{field}[{i}]"), item);
                }
            }
            _ => {}
        }
    }

    fn catchers(&mut self, m: &FlowDefinition, path: &str, catch: &[Catcher]) {
        for (i, c) in catch.iter().enumerate() {
            if c.error_equals.is_empty() {
                self.error(path, &format!("Catch[{i}].ErrorEquals"), "lists no errors");
            }
            self.all_last(
                path,
                &format!("Catch[{i}].ErrorEquals"),
                &c.error_equals,
                i,
                catch.len(),
            );
            self.target(m, path, &format!("Catch[{i}].Next"), &c.next);
            self.result_path(
                path,
                &format!("Catch[{i}].ResultPath"),
                c.result_path.as_deref(),
            );
        }
    }

    fn retriers(&mut self, path: &str, retry: &[Retrier]) {
        for (i, r) in retry.iter().enumerate() {
            let field = format!("Retry[{i}]");
            if r.error_equals.is_empty() {
                self.error(path, &format!("{field}.ErrorEquals"), "lists no errors");
            }
            self.all_last(
                path,
                &format!("{field}.ErrorEquals"),
                &r.error_equals,
                i,
                retry.len(),
            );
            if let Some(rate) = r.backoff_rate {
                if !(1.0..=100.0).contains(&rate) {
                    self.error(
                        path,
                        &format!("{field}.BackoffRate"),
                        "must be between 1.0 and 100.0",
                    );
                }
            }
            if r.max_attempts.is_some_and(|n| n > 100) {
                self.error(path, &format!("{field}.MaxAttempts"), "at most 100");
            }
        }
    }

    /// `States.ALL` must be alone, in the last catcher or retrier.
    fn all_last(&mut self, path: &str, field: &str, errors: &[String], i: usize, n: usize) {
        if errors.iter().any(|e| e == "States.ALL") && (errors.len() > 1 || i + 1 != n) {
            self.error(
                path,
                field,
                "States.ALL must be alone and in the last entry",
            );
        }
    }

    fn state(&mut self, m: &FlowDefinition, path: &str, state: &State, depth: usize) {
        match state {
            State::Action(a) => {
                if a.action_url.trim().is_empty() {
                    self.error(path, "ActionUrl", "is empty");
                }
                match (&a.input_path, &a.parameters) {
                    (Some(_), Some(_)) => self.error(
                        path,
                        "InputPath",
                        "InputPath and Parameters are mutually exclusive on an Action",
                    ),
                    (None, None) => self.warning(
                        path,
                        "Parameters",
                        "neither Parameters nor InputPath: the action's body is the whole state data",
                    ),
                    _ => {}
                }
                if let Some(p) = &a.parameters {
                    self.parameters(path, "Parameters", p);
                }
                self.path_field(path, "InputPath", a.input_path.as_deref());
                self.result_path(path, "ResultPath", a.result_path.as_deref());
                if a.wait_time == Some(0) {
                    self.error(path, "WaitTime", "must be at least 1 second");
                }
                if let Some(run_as) = &a.run_as {
                    if run_as.trim().is_empty() {
                        self.error(path, "RunAs", "is empty");
                    }
                }
                self.catchers(m, path, &a.catch);
                self.retriers(path, &a.retry);
                self.transition(m, path, &a.transition);
            }
            State::Pass(p) => {
                if let Some(t) = &p.parameters {
                    self.parameters(path, "Parameters", t);
                }
                self.path_field(path, "InputPath", p.input_path.as_deref());
                self.result_path(path, "ResultPath", p.result_path.as_deref());
                self.transition(m, path, &p.transition);
            }
            State::ExpressionEval(e) => {
                self.parameters(path, "Parameters", &e.parameters);
                self.result_path(path, "ResultPath", e.result_path.as_deref());
                self.transition(m, path, &e.transition);
            }
            State::Choice(c) => {
                if c.choices.is_empty() {
                    self.error(path, "Choices", "lists no rules");
                }
                let mut problems = Vec::new();
                for (i, rule) in c.choices.iter().enumerate() {
                    choice::check(rule, true, &format!("Choices[{i}]."), &mut problems);
                    if let Some(next) = &rule.next {
                        self.target(m, path, &format!("Choices[{i}].Next"), next);
                    }
                }
                for (field, message) in problems {
                    self.error(path, field.trim_end_matches('.'), message);
                }
                match &c.default {
                    Some(d) => self.target(m, path, "Default", d),
                    None => self.warning(
                        path,
                        "Default",
                        "no Default: the run fails with States.NoChoiceMatched when no rule matches",
                    ),
                }
            }
            State::Wait(w) => {
                let set = [
                    w.seconds.is_some(),
                    w.seconds_path.is_some(),
                    w.timestamp.is_some(),
                    w.timestamp_path.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if set != 1 {
                    self.error(
                        path,
                        "Seconds",
                        "needs exactly one of Seconds, SecondsPath, Timestamp, TimestampPath",
                    );
                }
                if let Some(s) = &w.seconds {
                    if s.as_u64().is_none_or(|s| s > crate::run::MAX_WAIT_SECONDS) {
                        self.error(
                            path,
                            "Seconds",
                            format!(
                                "a whole number of seconds up to {}",
                                crate::run::MAX_WAIT_SECONDS
                            ),
                        );
                    }
                }
                if let Some(t) = &w.timestamp {
                    if chrono::DateTime::parse_from_rfc3339(t).is_err() {
                        self.error(path, "Timestamp", "not an RFC 3339 timestamp");
                    }
                }
                self.path_field(path, "SecondsPath", w.seconds_path.as_deref());
                self.path_field(path, "TimestampPath", w.timestamp_path.as_deref());
                self.transition(m, path, &w.transition);
            }
            State::Fail(_) | State::Succeed(_) => {}
            State::Parallel(p) => {
                if p.branches.is_empty() {
                    self.error(path, "Branches", "lists no branches");
                }
                if let Some(t) = &p.parameters {
                    self.parameters(path, "Parameters", t);
                }
                self.path_field(path, "InputPath", p.input_path.as_deref());
                self.result_path(path, "ResultPath", p.result_path.as_deref());
                self.catchers(m, path, &p.catch);
                self.retriers(path, &p.retry);
                self.transition(m, path, &p.transition);
                for (i, b) in p.branches.iter().enumerate() {
                    self.machine(b, &format!("{path}/branch {i}/"), depth + 1);
                }
            }
            State::Map(mp) => {
                if let Some(t) = &mp.parameters {
                    self.parameters(path, "Parameters", t);
                }
                self.path_field(path, "ItemsPath", mp.items_path.as_deref());
                self.path_field(path, "InputPath", mp.input_path.as_deref());
                self.result_path(path, "ResultPath", mp.result_path.as_deref());
                self.catchers(m, path, &mp.catch);
                self.retriers(path, &mp.retry);
                self.transition(m, path, &mp.transition);
                self.machine(&mp.iterator, &format!("{path}/iterator/"), depth + 1);
            }
        }
    }
}

/// Parses a definition document and validates it, also naming fields the
/// language does not have: `OutputPath` is an error (the anchor rejects it
/// and the flow would silently mean something else), any other unknown
/// field a warning (it is ignored; usually a typo such as `Nxt`).
pub fn validate_document(doc: &Value) -> Result<(FlowDefinition, Report), DefinitionError> {
    let definition = FlowDefinition::from_value(doc.clone())?;
    let mut report = validate(&definition);
    unknown_fields(doc, "", &mut report);
    Ok((definition, report))
}

fn fields_of(state_type: &str) -> &'static [&'static str] {
    match state_type {
        "Action" => &[
            "ActionUrl",
            "ActionScope",
            "Parameters",
            "InputPath",
            "ResultPath",
            "WaitTime",
            "ExceptionOnActionFailure",
            "RunAs",
            "Catch",
            "Retry",
            "Next",
            "End",
        ],
        "Pass" => &[
            "Parameters",
            "Result",
            "InputPath",
            "ResultPath",
            "Next",
            "End",
        ],
        "ExpressionEval" => &["Parameters", "ResultPath", "Next", "End"],
        "Choice" => &["Choices", "Default"],
        "Wait" => &[
            "Seconds",
            "SecondsPath",
            "Timestamp",
            "TimestampPath",
            "Next",
            "End",
        ],
        "Fail" => &["Error", "Cause"],
        "Parallel" => &[
            "Branches",
            "Parameters",
            "InputPath",
            "ResultPath",
            "Catch",
            "Retry",
            "Next",
            "End",
        ],
        "Map" => &[
            "ItemsPath",
            "Iterator",
            "ItemProcessor",
            "MaxConcurrency",
            "Parameters",
            "InputPath",
            "ResultPath",
            "Catch",
            "Retry",
            "Next",
            "End",
        ],
        _ => &[],
    }
}

fn unknown_fields(machine: &Value, prefix: &str, report: &mut Report) {
    let Some(map) = machine.as_object() else {
        return;
    };
    let state_at = prefix.trim_end_matches('/');
    for key in map.keys() {
        if !["StartAt", "States", "Comment"].contains(&key.as_str()) {
            report.warnings.push(Problem {
                state: state_at.to_string(),
                field: key.clone(),
                message: format!("unknown field {key:?} (ignored)"),
            });
        }
    }
    let Some(states) = map.get("States").and_then(Value::as_object) else {
        return;
    };
    for (name, state) in states {
        let path = format!("{prefix}{name}");
        let Some(fields) = state.as_object() else {
            continue;
        };
        let state_type = fields.get("Type").and_then(Value::as_str).unwrap_or("");
        let known = fields_of(state_type);
        for key in fields.keys() {
            if key == "Type" || key == "Comment" || known.contains(&key.as_str()) {
                continue;
            }
            let problem = |message: String| Problem {
                state: path.clone(),
                field: key.clone(),
                message,
            };
            if key == "OutputPath" {
                report.errors.push(problem(
                    "OutputPath is not part of the flow language: use ResultPath".into(),
                ));
            } else if key == "InputPath" && state_type == "ExpressionEval" {
                report.errors.push(problem(
                    "an ExpressionEval state has no InputPath: use a Pass state to move data"
                        .into(),
                ));
            } else {
                report.warnings.push(problem(format!(
                    "unknown field {key:?} for a {state_type} state (ignored)"
                )));
            }
        }
        for (list, allowed) in [
            ("Catch", &["ErrorEquals", "Next", "ResultPath"][..]),
            (
                "Retry",
                &[
                    "ErrorEquals",
                    "IntervalSeconds",
                    "MaxAttempts",
                    "BackoffRate",
                ][..],
            ),
        ] {
            let Some(entries) = fields.get(list).and_then(Value::as_array) else {
                continue;
            };
            for (i, entry) in entries.iter().enumerate() {
                let Some(entry) = entry.as_object() else {
                    continue;
                };
                for key in entry.keys().filter(|k| !allowed.contains(&k.as_str())) {
                    report.warnings.push(Problem {
                        state: path.clone(),
                        field: format!("{list}[{i}].{key}"),
                        message: format!("unknown field {key:?} (ignored)"),
                    });
                }
            }
        }
        if let Some(branches) = fields.get("Branches").and_then(Value::as_array) {
            for (i, b) in branches.iter().enumerate() {
                unknown_fields(b, &format!("{path}/branch {i}/"), report);
            }
        }
        if let Some(it) = fields
            .get("Iterator")
            .or_else(|| fields.get("ItemProcessor"))
        {
            unknown_fields(it, &format!("{path}/iterator/"), report);
        }
    }
}

/// The states a state can go to next.
pub(crate) fn targets(state: &State) -> Vec<&str> {
    let catch: &[Catcher] = match state {
        State::Action(a) => &a.catch,
        State::Parallel(p) => &p.catch,
        State::Map(m) => &m.catch,
        _ => &[],
    };
    let mut out: Vec<&str> = catch.iter().map(|c| c.next.as_str()).collect();
    let next = match state {
        State::Action(a) => a.transition.next.as_deref(),
        State::Pass(p) => p.transition.next.as_deref(),
        State::ExpressionEval(e) => e.transition.next.as_deref(),
        State::Wait(w) => w.transition.next.as_deref(),
        State::Parallel(p) => p.transition.next.as_deref(),
        State::Map(m) => m.transition.next.as_deref(),
        State::Choice(c) => {
            out.extend(c.choices.iter().filter_map(|r| r.next.as_deref()));
            c.default.as_deref()
        }
        State::Fail(_) | State::Succeed(_) => None,
    };
    out.extend(next);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(v: Value) -> FlowDefinition {
        FlowDefinition::from_value(v).unwrap()
    }

    fn fields(problems: &[Problem]) -> Vec<String> {
        problems
            .iter()
            .map(|p| format!("{}|{}", p.state, p.field))
            .collect()
    }

    #[test]
    fn a_good_definition_has_no_problems() {
        let d = def(json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "Parameters": {"x.=": "1 + 1"}, "ResultPath": "$.a", "Next": "B"},
                "B": {"Type": "Choice", "Choices": [{"Variable": "$.a.x", "NumericEquals": 2, "Next": "C"}], "Default": "D"},
                "C": {"Type": "Succeed"},
                "D": {"Type": "Fail", "Error": "E", "Cause": "c"}
            }
        }));
        assert_eq!(validate(&d), Report::default());
    }

    #[test]
    fn every_problem_is_reported_with_state_and_field() {
        let d = def(json!({
            "StartAt": "Nope",
            "States": {
                "A": {"Type": "Pass", "Next": "Missing", "End": true},
                "B": {"Type": "Pass"},
                "C": {"Type": "Action", "ActionUrl": "/v1/actions/x",
                      "Parameters": {"a.$": "$.[", "b.=": "1 +", "n": {"c.$": 3}},
                      "InputPath": "$$$",
                      "ResultPath": "$.x[*]",
                      "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Gone"}, {"ErrorEquals": [], "Next": "A"}],
                      "Retry": [{"ErrorEquals": ["X"], "BackoffRate": 0.5}],
                      "End": true},
                "D": {"Type": "Choice", "Choices": [{"Variable": "$.x", "StringEquals": "a", "Next": "Elsewhere"}]},
                "W": {"Type": "Wait", "Seconds": 5, "Timestamp": "2026-01-01T00:00:00Z", "End": true},
                "P": {"Type": "Parallel", "Branches": [
                    {"StartAt": "In", "States": {"In": {"Type": "Pass", "Next": "Out"}}}
                ], "End": true},
                "M": {"Type": "Map", "ItemsPath": "$.items", "Iterator":
                    {"StartAt": "I", "States": {"I": {"Type": "ExpressionEval", "Parameters": {"v.=": "x +* 2"}, "End": true}}},
                    "End": true}
            }
        }));
        let report = validate(&d);
        let errors = fields(&report.errors);
        for want in [
            "|StartAt",
            "A|End",
            "B|Next",
            "C|Parameters.a.$",
            "C|Parameters.b.=",
            "C|Parameters.n.c.$",
            "C|ResultPath",
            "C|InputPath",
            "C|InputPath",
            "C|Catch[0].ErrorEquals",
            "C|Catch[0].Next",
            "C|Catch[1].ErrorEquals",
            "C|Retry[0].BackoffRate",
            "D|Choices[0].Next",
            "W|Seconds",
            "P/branch 0/In|Next",
            "M/iterator/I|Parameters.v.=",
            "A|",
            "B|",
        ] {
            assert!(
                errors.contains(&want.to_string()),
                "missing {want}: {errors:#?}"
            );
        }
        assert_eq!(fields(&report.warnings), vec!["D|Default".to_string()]);
        let shown = report
            .errors
            .iter()
            .find(|p| p.field == "Parameters.b.=")
            .unwrap();
        assert!(shown.to_string().contains("position"), "{shown}");
    }

    #[test]
    fn unreachable_states_in_loops_and_inner_machines() {
        let d = def(json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Wait", "Seconds": 1, "Next": "A"},
                "Island": {"Type": "Pass", "Next": "Island"},
                "P": {"Type": "Parallel", "End": true, "Branches": [
                    {"StartAt": "X", "States": {"X": {"Type": "Succeed"}, "Y": {"Type": "Succeed"}}}
                ]}
            }
        }));
        let errors = fields(&validate(&d).errors);
        assert!(errors.contains(&"Island|".to_string()));
        assert!(errors.contains(&"P|".to_string()));
        assert!(errors.contains(&"P/branch 0/Y|".to_string()));
    }

    #[test]
    fn unknown_fields_are_named() {
        let doc = json!({
            "StartAt": "A",
            "Version": "1.0",
            "States": {
                "A": {"Type": "Pass", "Nxt": "B", "OutputPath": "$.x", "Next": "B", "ResultPath": "$._context"},
                "E": {"Type": "ExpressionEval", "InputPath": "$.a", "Parameters": {}, "End": true},
                "B": {"Type": "Action", "ActionUrl": "/x", "TimeoutSeconds": 5, "InputPath": "$",
                      "Retry": [{"ErrorEquals": ["E"], "MaxAttempt": 2}], "End": true}
            }
        });
        let (_, report) = validate_document(&doc).unwrap();
        let mut errors = fields(&report.errors);
        errors.sort();
        assert_eq!(
            errors,
            vec!["A|OutputPath", "A|ResultPath", "E|", "E|InputPath"]
        );
        let mut warned = fields(&report.warnings);
        warned.sort();
        assert_eq!(
            warned,
            vec![
                "A|Nxt",
                "B|Retry[0].MaxAttempt",
                "B|TimeoutSeconds",
                "|Version"
            ]
        );
    }

    #[test]
    fn hostile_definitions_do_not_panic() {
        // deep nesting of Parallel
        let mut inner = json!({"StartAt": "S", "States": {"S": {"Type": "Succeed"}}});
        for _ in 0..20 {
            inner = json!({"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true, "Branches": [inner]}}});
        }
        let report = validate(&def(inner));
        assert!(report
            .errors
            .iter()
            .any(|p| p.message.contains("nest deeper")));
        // empty things
        let report = validate(&def(json!({"StartAt": "", "States": {}})));
        assert!(!report.is_ok());
        let report = validate(&def(
            json!({"StartAt": "C", "States": {"C": {"Type": "Choice", "Choices": [{}]}}}),
        ));
        assert!(!report.is_ok());
        let report = validate(&def(
            json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": -1, "End": true}}}),
        ));
        assert!(!report.is_ok());
    }
}
