//! How commands print: `--format text|json` and `--jmespath EXPR`. JSON
//! output is an API boundary: scripts rely on its field names.

use anyhow::Context as _;
use clap::ValueEnum;
use serde::Serialize;
use std::io::Write;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON (stable, for scripts).
    Json,
}

/// Output settings shared by every command.
#[derive(Clone, Debug, Default)]
pub(crate) struct Output {
    pub(crate) format: Format,
    pub(crate) jmespath: Option<String>,
}

impl Output {
    /// Prints `value` as JSON (filtered by `--jmespath`), or as text via `text`.
    pub(crate) fn emit<T: Serialize>(
        &self,
        value: &T,
        text: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        let json_wanted = self.format == Format::Json || self.jmespath.is_some();
        let rendered = if json_wanted {
            let json = serde_json::to_value(value).context("serializing output")?;
            let json = match &self.jmespath {
                Some(expr) => apply_jmespath(expr, &json)?,
                None => json,
            };
            if json.is_null() && self.jmespath.is_some() {
                return Err(NothingMatched(self.jmespath.clone().unwrap_or_default()).into());
            }
            serde_json::to_string_pretty(&json)? + "\n"
        } else {
            let mut t = text(value);
            if !t.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
            t
        };
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(rendered.as_bytes())?;
        stdout.flush()?;
        Ok(())
    }
}

/// Filters a JSON value with a JMESPath expression.
pub(crate) fn apply_jmespath(
    expr: &str,
    value: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let compiled = jmespath::compile(expr)
        .map_err(|e| anyhow::anyhow!(UsageError(format!("invalid --jmespath expression: {e}"))))?;
    let data = jmespath::Variable::from_json(&value.to_string())
        .map_err(|e| anyhow::anyhow!("cannot filter output: {e}"))?;
    let result = compiled
        .search(data)
        .map_err(|e| anyhow::anyhow!(UsageError(format!("--jmespath failed: {e}"))))?;
    Ok(serde_json::to_value(&*result)?)
}

/// A mistake in how the command was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// Something named that does not exist, or names several things (exit code
/// 4, as the service's own not-found and conflict answers).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub(crate) String);

/// A `--jmespath` expression that selected nothing (exit code 1, nothing
/// printed): a script's `$(...)` must not receive `null`.
#[derive(Debug, thiserror::Error)]
#[error("--jmespath `{0}` matched nothing")]
pub(crate) struct NothingMatched(pub(crate) String);

/// Resolves a name among the caller's things of one kind: exactly one must
/// carry it. `kind` is `endpoint`, `function`, ...
pub(crate) fn one_named<T, I: Copy>(
    kind: &str,
    given: &str,
    all: &[T],
    name: impl Fn(&T) -> &str,
    id: impl Fn(&T) -> I,
) -> Result<I, Refused> {
    let matching: Vec<&T> = all.iter().filter(|t| name(t) == given).collect();
    match matching.as_slice() {
        [one] => Ok(id(one)),
        [] => {
            let names: Vec<&str> = all.iter().map(&name).collect();
            Err(Refused(format!(
                "no {kind} named `{given}` (yours: {}); give a {kind} id or name",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )))
        }
        _ => Err(Refused(format!(
            "{} {kind}s are named `{given}`; give the id (`lattice {kind} list`)",
            matching.len()
        ))),
    }
}

/// A clap value parser for an id type that says in words what is wrong.
pub(crate) fn id_of<T: std::str::FromStr>(
    kind: &'static str,
    listed_by: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        text.parse::<T>().map_err(|_| {
            format!("`{text}` is not a {kind} id (ids look like 0d6f6a3e-5c1b-4b7e-9a62-3f1c2d4e5f60; {listed_by} shows them)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jmespath_filters_json() {
        let value = serde_json::json!({"identity": {"username": "ada"}, "scopes": ["compute"]});
        assert_eq!(
            apply_jmespath("identity.username", &value).unwrap(),
            serde_json::json!("ada")
        );
        assert_eq!(
            apply_jmespath("length(scopes)", &value).unwrap(),
            serde_json::json!(1)
        );
        assert!(apply_jmespath("identity.[", &value).is_err());
    }
}
