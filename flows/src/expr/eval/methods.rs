//! String methods (`lower`, `upper`, `strip`, `lstrip`, `rstrip`,
//! `startswith`, `endswith`, `split`, `partition`, `rpartition`, `replace`,
//! `join`) and dict methods (`get`, `keys`, `values`).
//!
//! Results go through the size budget like every other value.

use super::values::{to_str, type_name};
use super::{Evaluator, R};
use crate::expr::ExprError;
use serde_json::Value;

impl Evaluator<'_> {
    pub(super) fn method(&mut self, target: Value, method: &str, args: Vec<Value>) -> R {
        let str_arg = |i: usize| -> Result<Option<&str>, ExprError> {
            match args.get(i) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(other) => Err(ExprError::Type(format!(
                    "{method}() argument must be str, not '{}'",
                    type_name(other)
                ))),
            }
        };
        match &target {
            Value::String(s) => {
                self.step(1 + s.len() as u64 / 64)?;
                let out: Value = match method {
                    "lower" => s.to_lowercase().into(),
                    "upper" => s.to_uppercase().into(),
                    "strip" | "lstrip" | "rstrip" => {
                        let chars: Option<Vec<char>> = str_arg(0)?.map(|c| c.chars().collect());
                        let pred = |c: char| match &chars {
                            Some(set) => set.contains(&c),
                            None => c.is_whitespace(),
                        };
                        match method {
                            "strip" => s.trim_matches(pred),
                            "lstrip" => s.trim_start_matches(pred),
                            _ => s.trim_end_matches(pred),
                        }
                        .into()
                    }
                    "startswith" => s
                        .starts_with(str_arg(0)?.ok_or_else(|| need_arg(method))?)
                        .into(),
                    "endswith" => s
                        .ends_with(str_arg(0)?.ok_or_else(|| need_arg(method))?)
                        .into(),
                    "split" => {
                        let parts: Vec<Value> = match str_arg(0)? {
                            Some("") => return Err(ExprError::Value("empty separator".into())),
                            Some(sep) => s.split(sep).map(Value::from).collect(),
                            None => s.split_whitespace().map(Value::from).collect(),
                        };
                        self.sized(Value::Array(parts))?
                    }
                    "partition" | "rpartition" => {
                        let sep = str_arg(0)?.ok_or_else(|| need_arg(method))?;
                        if sep.is_empty() {
                            return Err(ExprError::Value("empty separator".into()));
                        }
                        let found = if method == "partition" {
                            s.find(sep)
                        } else {
                            s.rfind(sep)
                        };
                        let parts: [&str; 3] = match found {
                            Some(i) => [&s[..i], sep, &s[i + sep.len()..]],
                            None if method == "partition" => [s, "", ""],
                            None => ["", "", s],
                        };
                        Value::Array(parts.iter().map(|p| Value::from(*p)).collect())
                    }
                    "replace" => {
                        let from = str_arg(0)?.ok_or_else(|| need_arg(method))?;
                        let to = str_arg(1)?.ok_or_else(|| need_arg(method))?;
                        let count = if from.is_empty() {
                            s.chars().count() + 1
                        } else {
                            s.matches(from).count()
                        };
                        self.check_size(s.len() + count.saturating_mul(to.len()))?;
                        s.replace(from, to).into()
                    }
                    "join" => {
                        let Some(Value::Array(items)) = args.first() else {
                            return Err(ExprError::Type("join() needs a list".into()));
                        };
                        let mut parts = Vec::with_capacity(items.len());
                        for item in items {
                            match item {
                                Value::String(p) => parts.push(p.as_str()),
                                other => {
                                    return Err(ExprError::Type(format!(
                                        "join() expected str items, found '{}'",
                                        type_name(other)
                                    )))
                                }
                            }
                        }
                        let size = parts.iter().map(|p| p.len() + s.len()).sum();
                        self.check_size(size)?;
                        parts.join(s).into()
                    }
                    _ => return Err(no_method(&target, method)),
                };
                Ok(out)
            }
            Value::Object(o) => match method {
                "get" => {
                    let key = args.first().map(to_str).ok_or_else(|| need_arg(method))?;
                    Ok(o.get(&key)
                        .cloned()
                        .or_else(|| args.get(1).cloned())
                        .unwrap_or(Value::Null))
                }
                "keys" => Ok(Value::Array(o.keys().cloned().map(Value::from).collect())),
                "values" => Ok(Value::Array(o.values().cloned().collect())),
                _ => Err(no_method(&target, method)),
            },
            _ => Err(no_method(&target, method)),
        }
    }
}

pub(super) fn need_arg(method: &str) -> ExprError {
    ExprError::Type(format!("{method}() needs an argument"))
}

pub(super) fn no_method(target: &Value, method: &str) -> ExprError {
    ExprError::Type(format!(
        "'{}' object has no method '{method}'",
        type_name(target)
    ))
}
