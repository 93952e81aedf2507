//! The expression language of `"key.=": "expr"` parameters and
//! `ExpressionEval` states.
//!
//! It owns parsing ([`Expression::parse`], errors carry the byte position)
//! and evaluation against a JSON object whose top-level keys are the names
//! an expression may use ([`Expression::eval`]). It must not do I/O, read
//! the clock or loop without bound: every evaluation runs under a
//! [`Budget`] of steps and of produced value size, and hitting either is an
//! [`ExprError::Budget`] naming the budget.
//!
//! The language is the Python subset Globus flow definitions use:
//! literals (numbers, `'strings'`, `True`/`False`/`None`, lists, dicts),
//! names and dotted access (`a.b.c`), indexing (`xs[0]`, `d['k']`, negative
//! indices), slicing (`xs[1:]`, `s[:3]`), arithmetic (`+ - * / // % **`,
//! `+` also concatenates strings and lists, `*` repeats them),
//! comparisons (chained, `in`, `not in`, `is`, `is not`), `and`/`or`/`not`
//! (Python truthiness, short-circuit), `a if c else b`, and list
//! comprehensions over an existing list (`[f(x) for x in xs if c]`, bounded
//! by the list's length and the step budget).
//!
//! A backtick-quoted JSONPath reads the names as a document:
//! `` 'file ' + `$.source.path` ``.
//!
//! Functions: `len(x)`, `str(x)`, `int(x)`, `float(x)`, `bool(x)`, `abs(x)`,
//! `min(...)`, `max(...)`, `lower(s)`, `upper(s)`, `pathsplit(p)` (Python's
//! `os.path.split`: `[head, tail]`, except that the Globus Transfer root
//! `/~/` is never split), `is_present('a.b')` (whether a dotted name
//! exists; given an expression instead of a string, whether it evaluates
//! without a missing name or key; never an error), `getattr('a.b'[,
//! default])` (the anchor's form: the named value, else the default, else
//! null) and `getattr(obj, key[, default])` (Python's). String methods: `lower`,
//! `upper`, `strip`, `lstrip`, `rstrip`, `startswith`, `endswith`, `split`,
//! `partition`, `rpartition`, `replace`, `join`; dict methods `get`, `keys`,
//! `values`.
//!
//! Written by hand (lexer, precedence-climbing parser, tree evaluator):
//! the Rust expression crates (evalexpr, rhai, jmespath, cel) each differ
//! from these Python semantics (slicing, `in`, truthiness, comprehensions,
//! `x if c else y`), and matching Globus definitions unchanged matters more
//! than saving the few hundred lines.

mod eval;
mod parse;

use serde_json::Value;
use thiserror::Error;

/// Limits of one evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Budget {
    /// Most evaluation operations (nodes visited, items iterated).
    pub max_steps: u64,
    /// Largest string or serialized list/dict an operation may produce, in
    /// bytes (lists and dicts are measured by item count times 8 bytes plus
    /// their strings, an upper bound that is cheap to keep).
    pub max_value_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_steps: 100_000,
            max_value_bytes: 1024 * 1024,
        }
    }
}

/// Why an expression did not parse or evaluate.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum ExprError {
    #[error("syntax error at position {position}: {message}")]
    Syntax { position: usize, message: String },
    /// A name that is not in the input (`name 'x' is not defined`), or a
    /// key or index that is not there.
    #[error("{0}")]
    Missing(String),
    #[error("type error: {0}")]
    Type(String),
    #[error("{0}")]
    Value(String),
    #[error("expression budget exceeded: {0}")]
    Budget(String),
}

impl ExprError {
    pub(crate) fn syntax(position: usize, message: impl Into<String>) -> Self {
        ExprError::Syntax {
            position,
            message: message.into(),
        }
    }
}

/// A parsed expression; cheap to evaluate many times.
#[derive(Clone, Debug, PartialEq)]
pub struct Expression {
    ast: parse::Expr,
}

impl Expression {
    pub fn parse(src: &str) -> Result<Self, ExprError> {
        Ok(Self {
            ast: parse::parse(src)?,
        })
    }

    /// Evaluates against `names` (a JSON object whose keys are the names
    /// the expression may use; anything else has no names).
    pub fn eval(&self, names: &Value, budget: Budget) -> Result<Value, ExprError> {
        eval::Evaluator::new(names, budget).eval(&self.ast)
    }
}

/// Parses and evaluates in one call.
pub fn evaluate(src: &str, names: &Value, budget: Budget) -> Result<Value, ExprError> {
    Expression::parse(src)?.eval(names, budget)
}
