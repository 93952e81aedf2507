//! Comparison (`== != < <= > >= in not in is is not`) and arithmetic
//! (`+ - * / // % **`, concatenation and repetition) operators.
//!
//! Repetition and concatenation check the size budget before building the
//! result, so `'a' * 10**9` fails without allocating.

use super::values::{compare, equal, float, num, size_of, to_str, type_name, Num};
use super::{Evaluator, R};
use crate::expr::ExprError;
use serde_json::Value;
use std::cmp::Ordering;

impl Evaluator<'_> {
    pub(super) fn compare_op(&mut self, op: &str, a: &Value, b: &Value) -> Result<bool, ExprError> {
        Ok(match op {
            "==" => equal(a, b),
            "!=" => !equal(a, b),
            "is" => a == b,
            "is not" => a != b,
            "in" | "not in" => {
                let found = match b {
                    Value::Array(xs) => {
                        self.step(xs.len() as u64)?;
                        xs.iter().any(|x| equal(x, a))
                    }
                    Value::Object(o) => o.contains_key(&to_str(a)),
                    Value::String(s) => match a {
                        Value::String(sub) => s.contains(sub.as_str()),
                        other => {
                            return Err(ExprError::Type(format!(
                                "'in <string>' requires string as left operand, not {}",
                                type_name(other)
                            )))
                        }
                    },
                    other => {
                        return Err(ExprError::Type(format!(
                            "argument of type '{}' is not iterable",
                            type_name(other)
                        )))
                    }
                };
                found == (op == "in")
            }
            _ => {
                let ord = compare(a, b).ok_or_else(|| {
                    ExprError::Type(format!(
                        "'{op}' not supported between instances of '{}' and '{}'",
                        type_name(a),
                        type_name(b)
                    ))
                })?;
                match op {
                    "<" => ord == Ordering::Less,
                    "<=" => ord != Ordering::Greater,
                    ">" => ord == Ordering::Greater,
                    _ => ord != Ordering::Less,
                }
            }
        })
    }

    pub(super) fn binary(&mut self, op: &str, a: Value, b: Value) -> R {
        let unsupported = |a: &Value, b: &Value| {
            ExprError::Type(format!(
                "unsupported operand type(s) for {op}: '{}' and '{}'",
                type_name(a),
                type_name(b)
            ))
        };
        match (op, &a, &b) {
            ("+", Value::String(x), Value::String(y)) => {
                self.check_size(x.len() + y.len())?;
                return Ok(Value::String(format!("{x}{y}")));
            }
            ("+", Value::Array(x), Value::Array(y)) => {
                self.check_size(size_of(&a) + size_of(&b))?;
                self.step((x.len() + y.len()) as u64)?;
                let mut out = x.clone();
                out.extend(y.iter().cloned());
                return Ok(Value::Array(out));
            }
            ("*", Value::String(_) | Value::Array(_), Value::Number(_))
            | ("*", Value::Number(_), Value::String(_) | Value::Array(_)) => {
                let (seq, n) = if matches!(a, Value::Number(_)) {
                    (&b, &a)
                } else {
                    (&a, &b)
                };
                let n = n.as_i64().ok_or_else(|| unsupported(&a, &b))?.max(0) as usize;
                // an empty sequence repeated is empty, however large n is
                let n = if size_of(seq) == 0 { 0 } else { n };
                self.check_size(size_of(seq).saturating_mul(n))?;
                return Ok(match seq {
                    Value::String(s) => Value::String(s.repeat(n)),
                    Value::Array(xs) => {
                        self.step((xs.len().saturating_mul(n)) as u64)?;
                        let mut out = Vec::with_capacity(xs.len().saturating_mul(n));
                        for _ in 0..n {
                            out.extend(xs.iter().cloned());
                        }
                        Value::Array(out)
                    }
                    _ => unreachable!("matched above"),
                });
            }
            _ => {}
        }
        let (Some(x), Some(y)) = (num(&a), num(&b)) else {
            return Err(unsupported(&a, &b));
        };
        let overflow = || ExprError::Value("integer overflow".into());
        let zero = || ExprError::Value("division by zero".into());
        match (op, x, y) {
            ("+", Num::Int(i), Num::Int(j)) => {
                i.checked_add(j).map(Value::from).ok_or_else(overflow)
            }
            ("-", Num::Int(i), Num::Int(j)) => {
                i.checked_sub(j).map(Value::from).ok_or_else(overflow)
            }
            ("*", Num::Int(i), Num::Int(j)) => {
                i.checked_mul(j).map(Value::from).ok_or_else(overflow)
            }
            ("//", Num::Int(i), Num::Int(j)) => {
                if j == 0 {
                    return Err(zero());
                }
                i.checked_div_euclid(j)
                    .map(|q| {
                        if j < 0 && i.rem_euclid(j) != 0 {
                            q - 1
                        } else {
                            q
                        }
                    })
                    .map(Value::from)
                    .ok_or_else(overflow)
            }
            ("%", Num::Int(i), Num::Int(j)) => {
                if j == 0 {
                    return Err(zero());
                }
                let r = i.checked_rem(j).ok_or_else(overflow)?;
                Ok(Value::from(if r != 0 && ((r < 0) != (j < 0)) {
                    r + j
                } else {
                    r
                }))
            }
            ("**", Num::Int(i), Num::Int(j)) if j >= 0 => u32::try_from(j)
                .ok()
                .and_then(|j| i.checked_pow(j))
                .map(Value::from)
                .ok_or_else(overflow),
            (_, x, y) => {
                let (x, y) = (x.f(), y.f());
                match op {
                    "+" => float(x + y),
                    "-" => float(x - y),
                    "*" => float(x * y),
                    "/" if y == 0.0 => Err(zero()),
                    "/" => float(x / y),
                    "//" if y == 0.0 => Err(zero()),
                    "//" => float((x / y).floor()),
                    "%" if y == 0.0 => Err(zero()),
                    "%" => float(x - y * (x / y).floor()),
                    "**" => float(x.powf(y)),
                    _ => Err(unsupported(&a, &b)),
                }
            }
        }
    }
}
