//! Calls: the built-in functions (`len`, `str`, `int`, `float`, `bool`,
//! `abs`, `min`, `max`, `lower`, `upper`, `pathsplit`, `is_present`,
//! `getattr`) and dispatch of `obj.method(...)` calls to `methods`.
//!
//! There are no user-defined functions; an unknown name is an error that
//! lists the known ones.

use super::values::{compare, float, num, to_str, truthy, type_name, Num};
use super::{Evaluator, R};
use crate::expr::parse::Expr;
use crate::expr::ExprError;
use serde_json::Value;
use std::cmp::Ordering;

impl Evaluator<'_> {
    pub(super) fn call(&mut self, callee: &Expr, args: &[Expr]) -> R {
        match callee {
            Expr::Name(name) if name == "is_present" => {
                let [arg] = args else {
                    return Err(ExprError::Type("is_present() takes one argument".into()));
                };
                if let Expr::Const(Value::String(path)) = arg {
                    return Ok(Value::Bool(self.lookup_dotted(path).is_some()));
                }
                match self.eval(arg) {
                    Ok(v) => Ok(Value::Bool(!v.is_null())),
                    Err(ExprError::Missing(_)) => Ok(Value::Bool(false)),
                    Err(e) => Err(e),
                }
            }
            Expr::Name(name) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(self.eval(a)?);
                }
                self.function(name, vals)
            }
            Expr::Attr(obj, method) => {
                let target = self.eval(obj)?;
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(self.eval(a)?);
                }
                self.method(target, method, vals)
            }
            _ => Err(ExprError::Type("only named functions can be called".into())),
        }
    }

    pub(super) fn function(&mut self, name: &str, args: Vec<Value>) -> R {
        let arity = |n: usize| -> Result<(), ExprError> {
            if args.len() != n {
                return Err(ExprError::Type(format!(
                    "{name}() takes {n} argument(s) ({} given)",
                    args.len()
                )));
            }
            Ok(())
        };
        match name {
            "len" => {
                arity(1)?;
                match &args[0] {
                    Value::String(s) => Ok(s.chars().count().into()),
                    Value::Array(a) => Ok(a.len().into()),
                    Value::Object(o) => Ok(o.len().into()),
                    other => Err(ExprError::Type(format!(
                        "object of type '{}' has no len()",
                        type_name(other)
                    ))),
                }
            }
            "str" => {
                arity(1)?;
                self.sized(Value::String(to_str(&args[0])))
            }
            "int" => {
                arity(1)?;
                match &args[0] {
                    Value::String(s) => {
                        s.trim().parse::<i64>().map(Value::from).map_err(|_| {
                            ExprError::Value(format!("invalid literal for int(): {s:?}"))
                        })
                    }
                    v => match num(v) {
                        Some(Num::Int(i)) => Ok(i.into()),
                        Some(Num::Float(f)) if f.is_finite() && f.abs() < 9.2e18 => {
                            Ok((f.trunc() as i64).into())
                        }
                        _ => Err(ExprError::Type(format!(
                            "int() argument must be a string or a number, not '{}'",
                            type_name(v)
                        ))),
                    },
                }
            }
            "float" => {
                arity(1)?;
                match &args[0] {
                    Value::String(s) => s
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| {
                            ExprError::Value(format!("could not convert string to float: {s:?}"))
                        })
                        .and_then(float),
                    v => num(v).map(|n| float(n.f())).unwrap_or_else(|| {
                        Err(ExprError::Type(format!(
                            "float() argument must be a string or a number, not '{}'",
                            type_name(v)
                        )))
                    }),
                }
            }
            "bool" => {
                arity(1)?;
                Ok(Value::Bool(truthy(&args[0])))
            }
            "abs" => {
                arity(1)?;
                match num(&args[0]) {
                    Some(Num::Int(i)) => i
                        .checked_abs()
                        .map(Value::from)
                        .ok_or_else(|| ExprError::Value("integer overflow".into())),
                    Some(Num::Float(f)) => float(f.abs()),
                    None => Err(ExprError::Type("abs() needs a number".into())),
                }
            }
            "min" | "max" => {
                let items = match args.as_slice() {
                    [Value::Array(xs)] => xs.clone(),
                    _ => args.clone(),
                };
                self.step(items.len() as u64)?;
                let want = if name == "min" {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
                let mut best: Option<Value> = None;
                for x in items {
                    best = Some(match best {
                        None => x,
                        Some(b) => {
                            let ord = compare(&x, &b).ok_or_else(|| {
                                ExprError::Type(format!("{name}() of values that do not compare"))
                            })?;
                            if ord == want {
                                x
                            } else {
                                b
                            }
                        }
                    });
                }
                best.ok_or_else(|| ExprError::Value(format!("{name}() of an empty sequence")))
            }
            "lower" | "upper" => {
                arity(1)?;
                self.method(args[0].clone(), name, Vec::new())
            }
            "pathsplit" => {
                arity(1)?;
                let Value::String(p) = &args[0] else {
                    return Err(ExprError::Type("pathsplit() needs a string".into()));
                };
                // os.path.split, except that the Globus Transfer root
                // `/~/` is never split
                let (head, tail) = match p.rfind('/') {
                    Some(i) => {
                        let head = &p[..=i];
                        let trimmed = head.trim_end_matches('/');
                        let head = if trimmed.is_empty() || head == "/~/" {
                            head
                        } else {
                            trimmed
                        };
                        (head.to_string(), p[i + 1..].to_string())
                    }
                    None => (String::new(), p.clone()),
                };
                Ok(Value::Array(vec![head.into(), tail.into()]))
            }
            "getattr" => {
                // The anchor's form: getattr('name'[, default]) reads a
                // (dotted) name of the state, null when absent.
                if let Some(Value::String(name)) = args.first() {
                    if args.len() <= 2 {
                        return Ok(self
                            .lookup_dotted(name)
                            .cloned()
                            .or_else(|| args.get(1).cloned())
                            .unwrap_or(Value::Null));
                    }
                }
                // Python's form: getattr(obj, key[, default]).
                if !(2..=3).contains(&args.len()) {
                    return Err(ExprError::Type("getattr() takes 1 to 3 arguments".into()));
                }
                let key = to_str(&args[1]);
                match (args[0].get(&key), args.get(2)) {
                    (Some(v), _) => Ok(v.clone()),
                    (None, Some(default)) => Ok(default.clone()),
                    (None, None) => Err(ExprError::Missing(format!(
                        "'{}' object has no attribute '{key}'",
                        type_name(&args[0])
                    ))),
                }
            }
            other => Err(ExprError::Missing(format!(
                "unknown function '{other}' (known: len, str, int, float, bool, abs, min, max, \
                 lower, upper, pathsplit, is_present, getattr)"
            ))),
        }
    }
}
