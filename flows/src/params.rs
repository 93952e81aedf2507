//! Input and output processing of a state: selecting with JSONPath
//! (`InputPath`, `"key.$"` references, `ItemsPath`, Choice variables),
//! resolving `Parameters` templates (constants, `"key.$": "$.path"`,
//! `"key.=": "expression"`, nested objects and arrays), and storing a
//! state's result at its `ResultPath`.
//!
//! `ResultPath` semantics follow the States Language, as the anchor does:
//! absent or `"$"`, the result replaces the state's data; `"$.a.b"`, the
//! result is stored at `a.b` of the data, creating missing objects on the
//! way and replacing what was there. A `ResultPath` must be a reference
//! path (names and indices only, no wildcards or filters).
//!
//! `__Private_Parameters` (a list of keys of a `Parameters` object, at
//! any level) is removed from the resolved value; [`redact_private`] drops
//! those keys from what the run log shows, and [`hide_private_state`] the
//! `_private...` properties of state data.
//!
//! `$._context` (the run's context: flow and run ids, the starter's
//! identity) is read-only: no `ResultPath` may write under it.

use crate::expr::{Budget, ExprError, Expression};
use serde_json::{Map, Value};
use serde_json_path::JsonPath;
use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq)]
pub enum ParamError {
    #[error("invalid JSONPath {path:?}: {message}")]
    BadPath { path: String, message: String },
    /// A `.$` reference (or InputPath, ItemsPath...) selected nothing.
    #[error("no value at {path} (parameter {key:?})")]
    Missing { path: String, key: String },
    #[error("expression for {key:?} failed: {error}")]
    Expression { key: String, error: ExprError },
    #[error("cannot store a result at {path}: {message}")]
    ResultPath { path: String, message: String },
}

/// `ParamError` as the run reports it: `States.ParameterPathFailure` and
/// friends, matched by Catch and Retry.
impl ParamError {
    pub fn error_name(&self) -> &'static str {
        match self {
            ParamError::BadPath { .. } | ParamError::Missing { .. } => {
                "States.ParameterPathFailure"
            }
            ParamError::Expression { .. } => "States.ExpressionEvalFailure",
            ParamError::ResultPath { .. } => "States.ResultPathMatchFailure",
        }
    }
}

/// Parses a JSONPath as a flow uses it: RFC 9535, and `$$.` context paths
/// read like `$.` of the context object.
pub fn parse_path(path: &str) -> Result<JsonPath, ParamError> {
    let normal = path.strip_prefix('$').unwrap_or(path);
    let normal = format!("${}", normal.strip_prefix('$').unwrap_or(normal));
    JsonPath::parse(&normal).map_err(|e| ParamError::BadPath {
        path: path.to_string(),
        message: e.to_string(),
    })
}

/// Whether a path can select more than one node (then its value is the
/// list of the nodes).
fn is_multi(path: &str) -> bool {
    path.contains('*')
        || path.contains("..")
        || path.contains('?')
        || path.contains(':')
        || path.contains(',')
}

/// Selects `path` from `data`: the node for a singular path, the list of
/// nodes for a wildcard or filter path; nothing selected by a singular
/// path is [`ParamError::Missing`].
pub fn select(path: &str, data: &Value, key: &str) -> Result<Value, ParamError> {
    let jp = parse_path(path)?;
    let nodes = jp.query(data).all();
    if is_multi(path) {
        return Ok(Value::Array(nodes.into_iter().cloned().collect()));
    }
    nodes
        .first()
        .map(|v| (*v).clone())
        .ok_or_else(|| ParamError::Missing {
            path: path.to_string(),
            key: key.to_string(),
        })
}

/// Applies `InputPath`: absent means the whole data.
pub fn apply_input_path(input_path: Option<&str>, data: &Value) -> Result<Value, ParamError> {
    match input_path {
        None => Ok(data.clone()),
        Some(p) => select(p, data, "InputPath"),
    }
}

/// Resolves a `Parameters` template against `input` (the state's data
/// after `InputPath`); `.=` expressions see `input`'s top-level keys as
/// names.
pub fn resolve(template: &Value, input: &Value, budget: Budget) -> Result<Value, ParamError> {
    resolve_at(template, input, budget, "")
}

fn resolve_at(
    template: &Value,
    input: &Value,
    budget: Budget,
    at: &str,
) -> Result<Value, ParamError> {
    match template {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                if key == "__Private_Parameters" {
                    continue;
                }
                let full = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                if let Some(name) = key.strip_suffix(".$") {
                    let Value::String(path) = value else {
                        return Err(ParamError::BadPath {
                            path: value.to_string(),
                            message: format!("the value of {full:?} must be a JSONPath string"),
                        });
                    };
                    out.insert(name.to_string(), select(path, input, &full)?);
                } else if let Some(name) = key.strip_suffix(".=") {
                    let Value::String(src) = value else {
                        return Err(ParamError::Expression {
                            key: full,
                            error: ExprError::Type("an expression must be a string".into()),
                        });
                    };
                    let v = Expression::parse(src)
                        .and_then(|e| e.eval(input, budget))
                        .map_err(|error| ParamError::Expression {
                            key: full.clone(),
                            error,
                        })?;
                    out.insert(name.to_string(), v);
                } else {
                    out.insert(key.clone(), resolve_at(value, input, budget, &full)?);
                }
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| resolve_at(v, input, budget, &format!("{at}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// A copy of a resolved body without the values its template marks
/// private: `__Private_Parameters` at any level of the template names keys
/// of that level (`secret`, `secret.$` and `secret.=` all name `secret`).
/// This is what the run log shows of an action's body.
pub fn redact_private(template: Option<&Value>, body: &Value) -> Value {
    let mut out = body.clone();
    if let Some(t) = template {
        redact_into(t, &mut out);
    }
    out
}

fn simple_name(key: &str) -> &str {
    key.strip_suffix(".$")
        .or_else(|| key.strip_suffix(".="))
        .unwrap_or(key)
}

fn redact_into(template: &Value, body: &mut Value) {
    match (template, body) {
        (Value::Object(t), Value::Object(b)) => {
            if let Some(Value::Array(private)) = t.get("__Private_Parameters") {
                for name in private.iter().filter_map(Value::as_str) {
                    b.remove(simple_name(name));
                }
            }
            for (key, sub) in t {
                if let Some(inner) = b.get_mut(simple_name(key)) {
                    redact_into(sub, inner);
                }
            }
        }
        (Value::Array(t), Value::Array(b)) => {
            for (sub, inner) in t.iter().zip(b.iter_mut()) {
                redact_into(sub, inner);
            }
        }
        _ => {}
    }
}

/// A copy of state data without its `_private...` properties (at any
/// level), which the anchor never shows in a run's status or log; paths
/// may still read them.
pub fn hide_private_state(data: &Value) -> Value {
    match data {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with("_private"))
                .map(|(k, v)| (k.clone(), hide_private_state(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(hide_private_state).collect()),
        other => other.clone(),
    }
}

/// One step of a reference path.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Parses a reference path (`$`, `$.a.b`, `$['a b'][0]`), the only kind a
/// `ResultPath` may be.
pub fn parse_reference_path(path: &str) -> Result<Vec<Step>, ParamError> {
    let bad = |message: &str| ParamError::ResultPath {
        path: path.to_string(),
        message: message.to_string(),
    };
    let rest = path
        .strip_prefix('$')
        .ok_or_else(|| bad("must start with \"$\""))?;
    if rest == "._context"
        || rest.starts_with("._context.")
        || rest.starts_with("._context[")
        || rest.starts_with("['_context']")
    {
        return Err(bad("$._context is read-only"));
    }
    let b = rest.as_bytes();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'.' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'.' && b[j] != b'[' {
                    j += 1;
                }
                let name = &rest[start..j];
                if name.is_empty() || name.contains(['*', '?', '(', ')', ']', '\'', '"', ' ']) {
                    return Err(bad(
                        "names in a reference path are plain (no wildcards or filters)",
                    ));
                }
                steps.push(Step::Key(name.to_string()));
                i = j;
            }
            b'[' => {
                let close = rest[i..]
                    .find(']')
                    .map(|c| i + c)
                    .ok_or_else(|| bad("unclosed \"[\""))?;
                let inner = rest[i + 1..close].trim();
                if let Some(q) = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                {
                    steps.push(Step::Key(q.to_string()));
                } else if let Ok(n) = inner.parse::<usize>() {
                    steps.push(Step::Index(n));
                } else {
                    return Err(bad("brackets hold a quoted name or an index"));
                }
                i = close + 1;
            }
            _ => return Err(bad("expected \".\" or \"[\"")),
        }
    }
    Ok(steps)
}

/// Stores `result` at `result_path` of `data` (absent: replaces `data`).
pub fn apply_result_path(
    data: Value,
    result_path: Option<&str>,
    result: Value,
) -> Result<Value, ParamError> {
    let Some(path) = result_path else {
        return Ok(result);
    };
    let steps = parse_reference_path(path)?;
    if steps.is_empty() {
        return Ok(result);
    }
    let mut root = data;
    if !root.is_object() && !matches!(steps[0], Step::Index(_)) {
        root = Value::Object(Map::new());
    }
    let mut cur = &mut root;
    for (n, step) in steps.iter().enumerate() {
        let last = n + 1 == steps.len();
        match step {
            Step::Key(k) => {
                if !cur.is_object() {
                    *cur = Value::Object(Map::new());
                }
                let map = cur.as_object_mut().expect("made an object above");
                let slot = map.entry(k.clone()).or_insert(Value::Null);
                if last {
                    *slot = result;
                    return Ok(root);
                }
                cur = slot;
            }
            Step::Index(i) => {
                let Some(slot) = cur.as_array_mut().and_then(|a| a.get_mut(*i)) else {
                    return Err(ParamError::ResultPath {
                        path: path.to_string(),
                        message: format!("index {i} is not in a list of the state's data"),
                    });
                };
                if last {
                    *slot = result;
                    return Ok(root);
                }
                cur = slot;
            }
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_constants_references_expressions_nested() {
        let input = json!({"source": {"id": "c1", "path": "/a/b.txt"}, "n": 2, "xs": [1, 2]});
        let template = json!({
            "constant": 10,
            "id.$": "$.source.id",
            "name.=": "pathsplit(source.path)[1]",
            "nested": {"twice.=": "n * 2", "items": [{"p.$": "$.source.path"}, 3]},
            "all.$": "$.xs[*]",
            "secret": "pw",
            "__Private_Parameters": ["secret"]
        });
        let out = resolve(&template, &input, Budget::default()).unwrap();
        assert_eq!(
            out,
            json!({
                "constant": 10, "id": "c1", "name": "b.txt",
                "nested": {"twice": 4, "items": [{"p": "/a/b.txt"}, 3]},
                "all": [1, 2], "secret": "pw"
            })
        );
        let shown = redact_private(Some(&template), &out);
        assert!(shown.get("secret").is_none());
        assert_eq!(shown["id"], "c1");
    }

    #[test]
    fn private_parameters_at_any_level_and_private_state() {
        let template = json!({
            "server": {"url": "u", "password.$": "$.pw", "__Private_Parameters": ["password"]},
            "items": [{"token.=": "'t'", "__Private_Parameters": ["token.="]}]
        });
        let body = resolve(&template, &json!({"pw": "s3cret"}), Budget::default()).unwrap();
        assert_eq!(body["server"]["password"], "s3cret");
        assert_eq!(
            redact_private(Some(&template), &body),
            json!({"server": {"url": "u"}, "items": [{}]})
        );
        let data =
            json!({"a": 1, "_private": {"k": 1}, "b": {"_private_x": 2, "c": [{"_privateY": 3}]}});
        assert_eq!(hide_private_state(&data), json!({"a": 1, "b": {"c": [{}]}}));
    }

    #[test]
    fn a_missing_reference_names_the_path_and_key() {
        let e = resolve(
            &json!({"outer": {"id.$": "$.source.nope"}}),
            &json!({"source": {}}),
            Budget::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no value at $.source.nope (parameter \"outer.id.$\")"
        );
        assert_eq!(e.error_name(), "States.ParameterPathFailure");
        let e = resolve(&json!({"x.$": "$[["}), &json!({}), Budget::default()).unwrap_err();
        assert!(matches!(e, ParamError::BadPath { .. }));
        let e = resolve(&json!({"x.=": "nope + 1"}), &json!({}), Budget::default()).unwrap_err();
        assert!(e.to_string().contains("'nope' is not defined"), "{e}");
    }

    #[test]
    fn result_path_merges() {
        let data = json!({"a": 1});
        assert_eq!(
            apply_result_path(data.clone(), None, json!(5)).unwrap(),
            json!(5)
        );
        assert_eq!(
            apply_result_path(data.clone(), Some("$"), json!(5)).unwrap(),
            json!(5)
        );
        assert_eq!(
            apply_result_path(data.clone(), Some("$.r.s"), json!(5)).unwrap(),
            json!({"a": 1, "r": {"s": 5}})
        );
        assert_eq!(
            apply_result_path(data.clone(), Some("$['a']"), json!([0, 0])).unwrap(),
            json!({"a": [0, 0]})
        );
        assert_eq!(
            apply_result_path(json!({"a": [0, 0]}), Some("$.a[1]"), json!(7)).unwrap(),
            json!({"a": [0, 7]})
        );
        assert!(apply_result_path(data.clone(), Some("$.a[3]"), json!(7)).is_err());
        assert!(parse_reference_path("$.a[*]").is_err());
        assert!(parse_reference_path("a.b").is_err());
        assert!(parse_reference_path("$..a").is_err());
        assert!(parse_reference_path("$._context.run_id").is_err());
        assert!(parse_reference_path("$._contextual").is_ok());
    }

    #[test]
    fn context_paths_parse() {
        parse_path("$$.Map.Item.Value").unwrap();
        parse_path("$.a['b c'][0]").unwrap();
        assert!(parse_path("$.a[").is_err());
    }
}
