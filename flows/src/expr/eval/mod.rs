//! Tree-walking evaluation of [`Expr`] over JSON values, under a [`Budget`].
//!
//! This module owns the evaluator and the step and size accounting: every
//! node costs a step (loops and bulk operations charge per element), and
//! every list, dict or string an expression builds is checked against the
//! size budget. Python value semantics are in `values`,
//! operators in `operators`, built-in functions in `functions`, string,
//! list and dict methods in `methods`. Nothing here may recurse without
//! the parser's depth bound or loop without charging steps.

mod functions;
mod methods;
mod operators;
#[cfg(test)]
mod tests;
mod values;

pub(crate) use values::truthy;

use super::parse::Expr;
use super::{Budget, ExprError};
use serde_json::{Map, Value};
use values::{float, index, num, size_of, slice_bounds, to_str, type_name, Num};

pub(crate) struct Evaluator<'a> {
    names: &'a Value,
    /// Comprehension variables, innermost last.
    locals: Vec<(String, Value)>,
    budget: Budget,
    steps: u64,
}

type R = Result<Value, ExprError>;

impl<'a> Evaluator<'a> {
    pub(crate) fn new(names: &'a Value, budget: Budget) -> Self {
        Self {
            names,
            locals: Vec::new(),
            budget,
            steps: 0,
        }
    }

    fn step(&mut self, n: u64) -> Result<(), ExprError> {
        self.steps = self.steps.saturating_add(n);
        if self.steps > self.budget.max_steps {
            return Err(ExprError::Budget(format!(
                "more than {} evaluation steps",
                self.budget.max_steps
            )));
        }
        Ok(())
    }

    fn sized(&self, v: Value) -> R {
        let size = size_of(&v);
        if size > self.budget.max_value_bytes {
            return Err(ExprError::Budget(format!(
                "a value of about {size} bytes is larger than the {} byte limit",
                self.budget.max_value_bytes
            )));
        }
        Ok(v)
    }

    /// The size a result would have, checked before it is built.
    fn check_size(&self, size: usize) -> Result<(), ExprError> {
        if size > self.budget.max_value_bytes {
            return Err(ExprError::Budget(format!(
                "a value of about {size} bytes is larger than the {} byte limit",
                self.budget.max_value_bytes
            )));
        }
        Ok(())
    }

    pub(crate) fn eval(&mut self, e: &Expr) -> R {
        self.step(1)?;
        match e {
            Expr::Const(v) => Ok(v.clone()),
            Expr::Name(n) => self.lookup(n),
            Expr::Path(p) => {
                let jp = serde_json_path::JsonPath::parse(p)
                    .map_err(|e| ExprError::Value(format!("bad JSONPath `{p}`: {e}")))?;
                let nodes = jp.query(self.names).all();
                match nodes.as_slice() {
                    [one] => Ok((*one).clone()),
                    [] => Err(ExprError::Missing(format!("no value at `{p}`"))),
                    many => self.sized(Value::Array(many.iter().map(|v| (*v).clone()).collect())),
                }
            }
            Expr::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.eval(i)?);
                }
                self.sized(Value::Array(out))
            }
            Expr::Dict(pairs) => {
                let mut out = Map::new();
                for (k, v) in pairs {
                    let key = match self.eval(k)? {
                        Value::String(s) => s,
                        other => to_str(&other),
                    };
                    out.insert(key, self.eval(v)?);
                }
                self.sized(Value::Object(out))
            }
            Expr::Comprehension {
                elem,
                var,
                iter,
                cond,
            } => {
                let items = match self.eval(iter)? {
                    Value::Array(a) => a,
                    Value::Object(o) => o.keys().map(|k| Value::String(k.clone())).collect(),
                    Value::String(s) => s.chars().map(|c| Value::String(c.into())).collect(),
                    other => {
                        return Err(ExprError::Type(format!(
                            "'{}' object is not iterable",
                            type_name(&other)
                        )))
                    }
                };
                let mut out = Vec::new();
                let mut size = 0usize;
                for item in items {
                    self.step(1)?;
                    self.locals.push((var.clone(), item));
                    let r = (|| {
                        if let Some(c) = cond {
                            if !truthy(&self.eval(c)?) {
                                return Ok(None);
                            }
                        }
                        self.eval(elem).map(Some)
                    })();
                    self.locals.pop();
                    if let Some(v) = r? {
                        size += 8 + size_of(&v);
                        self.check_size(size)?;
                        out.push(v);
                    }
                }
                Ok(Value::Array(out))
            }
            Expr::Attr(obj, name) => {
                let v = self.eval(obj)?;
                match &v {
                    Value::Object(o) => o
                        .get(name)
                        .cloned()
                        .ok_or_else(|| ExprError::Missing(format!("no key '{name}' in the dict"))),
                    other => Err(ExprError::Type(format!(
                        "'{}' object has no attribute '{name}'",
                        type_name(other)
                    ))),
                }
            }
            Expr::Index(obj, idx) => {
                let v = self.eval(obj)?;
                let i = self.eval(idx)?;
                index(&v, &i)
            }
            Expr::Slice(obj, lo, hi) => {
                let v = self.eval(obj)?;
                let lo = self.opt_int(lo.as_deref())?;
                let hi = self.opt_int(hi.as_deref())?;
                match v {
                    Value::Array(a) => {
                        let (l, h) = slice_bounds(lo, hi, a.len());
                        Ok(Value::Array(a[l..h].to_vec()))
                    }
                    Value::String(s) => {
                        let chars: Vec<char> = s.chars().collect();
                        let (l, h) = slice_bounds(lo, hi, chars.len());
                        Ok(Value::String(chars[l..h].iter().collect()))
                    }
                    other => Err(ExprError::Type(format!(
                        "'{}' object is not sliceable",
                        type_name(&other)
                    ))),
                }
            }
            Expr::Call(callee, args) => self.call(callee, args),
            Expr::Unary(op, x) => {
                let v = self.eval(x)?;
                let n = num(&v).ok_or_else(|| {
                    ExprError::Type(format!(
                        "bad operand type for unary {op}: '{}'",
                        type_name(&v)
                    ))
                })?;
                match (op, n) {
                    (&"+", Num::Int(i)) => Ok(i.into()),
                    (&"+", Num::Float(f)) => float(f),
                    (_, Num::Int(i)) => i
                        .checked_neg()
                        .map(Value::from)
                        .ok_or_else(|| ExprError::Value("integer overflow".into())),
                    (_, Num::Float(f)) => float(-f),
                }
            }
            Expr::Binary(op, a, b) => {
                let a = self.eval(a)?;
                let b = self.eval(b)?;
                self.binary(op, a, b)
            }
            Expr::Compare(operands, ops) => {
                let mut left = self.eval(&operands[0])?;
                for (op, right) in ops.iter().zip(&operands[1..]) {
                    let right = self.eval(right)?;
                    if !self.compare_op(op, &left, &right)? {
                        return Ok(Value::Bool(false));
                    }
                    left = right;
                }
                Ok(Value::Bool(true))
            }
            Expr::And(a, b) => {
                let a = self.eval(a)?;
                if !truthy(&a) {
                    return Ok(a);
                }
                self.eval(b)
            }
            Expr::Or(a, b) => {
                let a = self.eval(a)?;
                if truthy(&a) {
                    return Ok(a);
                }
                self.eval(b)
            }
            Expr::Not(x) => Ok(Value::Bool(!truthy(&self.eval(x)?))),
            Expr::IfElse {
                then,
                cond,
                otherwise,
            } => {
                if truthy(&self.eval(cond)?) {
                    self.eval(then)
                } else {
                    self.eval(otherwise)
                }
            }
        }
    }

    fn lookup(&self, name: &str) -> R {
        if let Some((_, v)) = self.locals.iter().rev().find(|(n, _)| n == name) {
            return Ok(v.clone());
        }
        self.names
            .get(name)
            .cloned()
            .ok_or_else(|| ExprError::Missing(format!("name '{name}' is not defined")))
    }

    /// A dotted name (`a.b.c`, optionally written `$.a.b.c`) in the names.
    fn lookup_dotted(&self, path: &str) -> Option<&'a Value> {
        let path = path.strip_prefix("$.").unwrap_or(path);
        let mut cur = self.names;
        for part in path.split('.') {
            cur = match cur {
                Value::Object(o) => o.get(part)?,
                Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    fn opt_int(&mut self, e: Option<&Expr>) -> Result<Option<i64>, ExprError> {
        let Some(e) = e else { return Ok(None) };
        match self.eval(e)? {
            Value::Null => Ok(None),
            Value::Number(n) if n.is_i64() => Ok(n.as_i64()),
            other => Err(ExprError::Type(format!(
                "slice indices must be integers, not '{}'",
                type_name(&other)
            ))),
        }
    }
}
