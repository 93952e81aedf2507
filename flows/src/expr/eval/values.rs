//! Python value semantics over JSON values: type names, truthiness,
//! `str()`, numbers (int or float), ordering and equality, indexing and
//! slice bounds, and the size a value counts against the budget.
//!
//! Pure functions of their arguments; no evaluator state, no budget.

use super::R;
use crate::expr::ExprError;
use serde_json::{Number, Value};
use std::cmp::Ordering;

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "None",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's `str()` of a JSON value.
pub(super) fn to_str(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn num(v: &Value) -> Option<Num> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(Num::Int)
            .or_else(|| n.as_f64().map(Num::Float)),
        Value::Bool(b) => Some(Num::Int(i64::from(*b))),
        _ => None,
    }
}

#[derive(Clone, Copy)]
pub(super) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub(super) fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

pub(super) fn float(f: f64) -> R {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| ExprError::Value(format!("{f} is not a finite number")))
}

/// Rough size of a value in bytes, for the value budget.
pub(super) fn size_of(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(|x| 8 + size_of(x)).sum(),
        Value::Object(o) => o.iter().map(|(k, x)| 8 + k.len() + size_of(x)).sum(),
        _ => 8,
    }
}

pub(super) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                match compare(p, q)? {
                    Ordering::Equal => continue,
                    o => return Some(o),
                }
            }
            Some(x.len().cmp(&y.len()))
        }
        _ => {
            let (x, y) = (num(a)?, num(b)?);
            match (x, y) {
                (Num::Int(i), Num::Int(j)) => Some(i.cmp(&j)),
                _ => x.f().partial_cmp(&y.f()),
            }
        }
    }
}

pub(super) fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_) | Value::Bool(_), Value::Number(_) | Value::Bool(_)) => {
            compare(a, b) == Some(Ordering::Equal)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q))
        }
        _ => a == b,
    }
}

/// Python index normalisation: negative counts from the end.
pub(super) fn norm_index(i: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if i < 0 { i + len } else { i };
    (0..len).contains(&i).then_some(i as usize)
}

pub(super) fn slice_bounds(lo: Option<i64>, hi: Option<i64>, len: usize) -> (usize, usize) {
    let clamp = |i: i64| -> usize {
        let l = len as i64;
        let i = if i < 0 { (i + l).max(0) } else { i.min(l) };
        i as usize
    };
    let lo = lo.map_or(0, clamp);
    let hi = hi.map_or(len, clamp);
    (lo, hi.max(lo))
}

pub(super) fn index(v: &Value, i: &Value) -> R {
    match (v, i) {
        (Value::Array(a), Value::Number(n)) if n.is_i64() => {
            let i = n.as_i64().unwrap_or_default();
            norm_index(i, a.len())
                .map(|i| a[i].clone())
                .ok_or_else(|| ExprError::Missing(format!("list index {i} out of range")))
        }
        (Value::String(s), Value::Number(n)) if n.is_i64() => {
            let chars: Vec<char> = s.chars().collect();
            let i = n.as_i64().unwrap_or_default();
            norm_index(i, chars.len())
                .map(|i| Value::String(chars[i].into()))
                .ok_or_else(|| ExprError::Missing(format!("string index {i} out of range")))
        }
        (Value::Object(o), key) => {
            let key = to_str(key);
            o.get(&key)
                .cloned()
                .ok_or_else(|| ExprError::Missing(format!("no key '{key}' in the dict")))
        }
        (v, i) => Err(ExprError::Type(format!(
            "'{}' indices must be integers, not '{}'",
            type_name(v),
            type_name(i)
        ))),
    }
}
