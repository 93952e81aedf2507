//! Choice rules: which comparators exist, whether a rule is well formed
//! (for [`crate::validate`](mod@crate::validate)), and whether it matches a state's data.
//!
//! Semantics of the States Language: a comparison whose `Variable` (or
//! `...Path` operand) selects nothing is an error naming the path; a value
//! of the wrong type for the comparator does not match (`StringEquals` on a
//! number is false); `IsPresent` never errors. `StringMatches` takes `*` as
//! any run of characters, `\*` and `\\` as escapes.

use crate::model::ChoiceRule;
use crate::params;
use chrono::{DateTime, FixedOffset};
use serde_json::Value;
use std::cmp::Ordering;
use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq)]
#[error("{0}")]
pub struct ChoiceError(pub String);

const ORDERS: [&str; 5] = [
    "Equals",
    "LessThan",
    "GreaterThan",
    "LessThanEquals",
    "GreaterThanEquals",
];
const KINDS: [&str; 4] = ["String", "Numeric", "Boolean", "Timestamp"];
const TESTS: [&str; 6] = [
    "IsNull",
    "IsPresent",
    "IsNumeric",
    "IsString",
    "IsBoolean",
    "IsTimestamp",
];

/// Whether `name` is a comparator, with or without the `Path` suffix.
pub fn is_comparator(name: &str) -> bool {
    if TESTS.contains(&name) || name == "StringMatches" {
        return true;
    }
    let base = name.strip_suffix("Path").unwrap_or(name);
    KINDS.iter().any(|kind| {
        base.strip_prefix(kind).is_some_and(|order| {
            ORDERS.contains(&order) && !(*kind == "Boolean" && order != "Equals")
        })
    })
}

/// Problems with one rule, as `(field, message)`; `top` rules need `Next`,
/// nested ones must not have it. `at` prefixes the field names.
pub fn check(rule: &ChoiceRule, top: bool, at: &str, problems: &mut Vec<(String, String)>) {
    let push = |problems: &mut Vec<(String, String)>, field: &str, msg: String| {
        problems.push((format!("{at}{field}"), msg))
    };
    if top && rule.next.is_none() {
        push(
            problems,
            "Next",
            "a top-level Choice rule needs Next".into(),
        );
    }
    if !top && rule.next.is_some() {
        push(
            problems,
            "Next",
            "only top-level Choice rules have Next".into(),
        );
    }
    let combinators = [rule.and.is_some(), rule.or.is_some(), rule.not.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    for key in rule.comparison.keys() {
        if !is_comparator(key) {
            push(
                problems,
                key,
                format!("unknown field {key:?} in a Choice rule"),
            );
        }
    }
    let known: Vec<&String> = rule
        .comparison
        .keys()
        .filter(|k| is_comparator(k))
        .collect();
    match (combinators, known.len()) {
        (0, 0) => push(
            problems,
            "",
            "a Choice rule needs a comparator (StringEquals, NumericLessThan, IsPresent, ...) or And/Or/Not".into(),
        ),
        (0, 1) => {
            let op = known[0].as_str();
            let value = &rule.comparison[op];
            match &rule.variable {
                None => push(problems, "Variable", format!("{op} needs a Variable")),
                Some(v) => {
                    if let Err(e) = params::parse_path(v) {
                        push(problems, "Variable", e.to_string());
                    }
                }
            }
            if op.ends_with("Path") {
                match value.as_str() {
                    Some(p) => {
                        if let Err(e) = params::parse_path(p) {
                            push(problems, op, e.to_string());
                        }
                    }
                    None => push(problems, op, format!("{op} takes a JSONPath string")),
                }
            } else if let Some(msg) = operand_type_problem(op, value) {
                push(problems, op, msg);
            }
        }
        (0, _) => push(problems, "", "a Choice rule has exactly one comparator".into()),
        (1, 0) => {
            if rule.variable.is_some() {
                push(problems, "Variable", "And/Or/Not rules have no Variable".into());
            }
            for (name, list) in [("And", &rule.and), ("Or", &rule.or)] {
                if let Some(list) = list {
                    if list.is_empty() {
                        push(problems, name, format!("{name} needs at least one rule"));
                    }
                    for (i, r) in list.iter().enumerate() {
                        check(r, false, &format!("{at}{name}[{i}]."), problems);
                    }
                }
            }
            if let Some(r) = &rule.not {
                check(r, false, &format!("{at}Not."), problems);
            }
        }
        _ => push(
            problems,
            "",
            "a Choice rule has one of And, Or, Not or one comparator".into(),
        ),
    }
}

fn operand_type_problem(op: &str, value: &Value) -> Option<String> {
    let ok = if TESTS.contains(&op) {
        value.is_boolean()
    } else if op.starts_with("String") {
        value.is_string()
    } else if op.starts_with("Numeric") {
        value.is_number()
    } else if op.starts_with("Boolean") {
        value.is_boolean()
    } else {
        value.as_str().is_some_and(|s| parse_timestamp(s).is_some())
    };
    (!ok).then(|| format!("{op} takes {}", expected(op)))
}

fn expected(op: &str) -> &'static str {
    if TESTS.contains(&op) || op.starts_with("Boolean") {
        "true or false"
    } else if op.starts_with("String") {
        "a string"
    } else if op.starts_with("Numeric") {
        "a number"
    } else {
        "an RFC 3339 timestamp string"
    }
}

fn parse_timestamp(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok()
}

/// Whether `rule` matches `data`.
pub fn matches(rule: &ChoiceRule, data: &Value) -> Result<bool, ChoiceError> {
    if let Some(rules) = &rule.and {
        for r in rules {
            if !matches(r, data)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    if let Some(rules) = &rule.or {
        for r in rules {
            if matches(r, data)? {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    if let Some(r) = &rule.not {
        return Ok(!matches(r, data)?);
    }
    let Some((op, operand)) = rule.comparison.iter().find(|(k, _)| is_comparator(k)) else {
        return Err(ChoiceError("a Choice rule without a comparator".into()));
    };
    let variable = rule
        .variable
        .as_deref()
        .ok_or_else(|| ChoiceError(format!("{op} without a Variable")))?;
    let jp = params::parse_path(variable).map_err(|e| ChoiceError(e.to_string()))?;
    let found = jp.query(data).all().first().map(|v| (*v).clone());
    if op == "IsPresent" {
        return Ok(found.is_some() == operand.as_bool().unwrap_or(true));
    }
    let value = found.ok_or_else(|| {
        ChoiceError(format!(
            "Choice Variable {variable} selects nothing in the state's data"
        ))
    })?;
    if TESTS.contains(&op.as_str()) {
        let is = match op.as_str() {
            "IsNull" => value.is_null(),
            "IsNumeric" => value.is_number(),
            "IsString" => value.is_string(),
            "IsBoolean" => value.is_boolean(),
            _ => value.as_str().is_some_and(|s| parse_timestamp(s).is_some()),
        };
        return Ok(is == operand.as_bool().unwrap_or(true));
    }
    let (base, operand) = match op.strip_suffix("Path") {
        Some(base) => {
            let path = operand
                .as_str()
                .ok_or_else(|| ChoiceError(format!("{op} takes a JSONPath string")))?;
            let jp = params::parse_path(path).map_err(|e| ChoiceError(e.to_string()))?;
            let v = jp
                .query(data)
                .all()
                .first()
                .map(|v| (*v).clone())
                .ok_or_else(|| {
                    ChoiceError(format!("{op} {path} selects nothing in the state's data"))
                })?;
            (base, v)
        }
        None => (op.as_str(), operand.clone()),
    };
    if base == "StringMatches" {
        return Ok(match (value.as_str(), operand.as_str()) {
            (Some(s), Some(p)) => wildcard_match(p, s),
            _ => false,
        });
    }
    let ord = if base.starts_with("String") {
        match (value.as_str(), operand.as_str()) {
            (Some(a), Some(b)) => Some(a.cmp(b)),
            _ => None,
        }
    } else if base.starts_with("Numeric") {
        match (value.as_f64(), operand.as_f64()) {
            (Some(a), Some(b)) if value.is_number() => a.partial_cmp(&b),
            _ => None,
        }
    } else if base.starts_with("Boolean") {
        match (value.as_bool(), operand.as_bool()) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => None,
        }
    } else {
        match (
            value.as_str().and_then(parse_timestamp),
            operand.as_str().and_then(parse_timestamp),
        ) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => None,
        }
    };
    let Some(ord) = ord else { return Ok(false) };
    let order = KINDS
        .iter()
        .find_map(|k| base.strip_prefix(k))
        .unwrap_or("Equals");
    Ok(match order {
        "Equals" => ord == Ordering::Equal,
        "LessThan" => ord == Ordering::Less,
        "GreaterThan" => ord == Ordering::Greater,
        "LessThanEquals" => ord != Ordering::Greater,
        _ => ord != Ordering::Less,
    })
}

/// `*` matches any run of characters; `\*` a literal star.
fn wildcard_match(pattern: &str, s: &str) -> bool {
    #[derive(PartialEq)]
    enum P {
        Star,
        Ch(char),
    }
    let mut pat = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => pat.push(P::Ch(chars.next().unwrap_or('\\'))),
            '*' => pat.push(P::Star),
            c => pat.push(P::Ch(c)),
        }
    }
    let s: Vec<char> = s.chars().collect();
    // Greedy matching with backtracking to the last star: O(n * m) worst case.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < pat.len() && pat[pi] == P::Ch(s[si]) {
            pi += 1;
            si += 1;
        } else if pi < pat.len() && pat[pi] == P::Star {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    pat[pi..].iter().all(|p| *p == P::Star)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> ChoiceRule {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn comparators_match() {
        let data =
            json!({"s": "run-42.h5", "n": 3, "b": true, "t": "2026-01-02T00:00:00Z", "m": 5});
        for (r, want) in [
            (
                json!({"Variable": "$.s", "StringEquals": "run-42.h5"}),
                true,
            ),
            (
                json!({"Variable": "$.s", "StringMatches": "run-*.h5"}),
                true,
            ),
            (
                json!({"Variable": "$.s", "StringMatches": "run-*.txt"}),
                false,
            ),
            (json!({"Variable": "$.n", "NumericLessThan": 4}), true),
            (
                json!({"Variable": "$.n", "NumericGreaterThanEquals": 3}),
                true,
            ),
            (
                json!({"Variable": "$.n", "NumericLessThanPath": "$.m"}),
                true,
            ),
            (json!({"Variable": "$.s", "NumericEquals": 3}), false),
            (json!({"Variable": "$.b", "BooleanEquals": true}), true),
            (
                json!({"Variable": "$.t", "TimestampLessThan": "2026-06-01T00:00:00+02:00"}),
                true,
            ),
            (json!({"Variable": "$.zz", "IsPresent": false}), true),
            (json!({"Variable": "$.n", "IsNumeric": true}), true),
            (
                json!({"Not": {"Variable": "$.b", "BooleanEquals": true}}),
                false,
            ),
            (
                json!({"And": [{"Variable": "$.n", "NumericEquals": 3}, {"Variable": "$.b", "IsBoolean": true}]}),
                true,
            ),
            (
                json!({"Or": [{"Variable": "$.n", "NumericEquals": 4}, {"Variable": "$.s", "IsString": false}]}),
                false,
            ),
        ] {
            assert_eq!(matches(&rule(r.clone()), &data).unwrap(), want, "{r}");
        }
        let e = matches(
            &rule(json!({"Variable": "$.zz", "NumericEquals": 1})),
            &data,
        )
        .unwrap_err();
        assert!(e.to_string().contains("$.zz"), "{e}");
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxbyy"));
        assert!(wildcard_match("a\\*", "a*"));
        assert!(!wildcard_match("a\\*", "ab"));
    }

    #[test]
    fn malformed_rules_are_reported() {
        let mut problems = Vec::new();
        check(
            &rule(json!({"Variable": "$.x", "StringEquals": 1, "Next": "A"})),
            true,
            "Choices[0].",
            &mut problems,
        );
        check(
            &rule(json!({"StringEquals": "a", "NumericEquals": 1, "Next": "A"})),
            true,
            "Choices[1].",
            &mut problems,
        );
        check(
            &rule(json!({"Variable": "$.x", "StringEqual": "a"})),
            true,
            "Choices[2].",
            &mut problems,
        );
        check(
            &rule(json!({"And": [{"Variable": "$[", "IsNull": true, "Next": "B"}], "Next": "A"})),
            true,
            "Choices[3].",
            &mut problems,
        );
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"Choices[0].StringEquals"), "{problems:?}");
        assert!(fields.contains(&"Choices[1]."), "{problems:?}");
        assert!(fields.contains(&"Choices[2].StringEqual"), "{problems:?}");
        assert!(fields.contains(&"Choices[2].Next"), "{problems:?}");
        assert!(
            fields.contains(&"Choices[3].And[0].Variable"),
            "{problems:?}"
        );
        assert!(fields.contains(&"Choices[3].And[0].Next"), "{problems:?}");
    }
}
