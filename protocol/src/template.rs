//! Command templates: `{name}` placeholders filled with shell-quoted values.
//! Shared by the service (to check that a task supplies every parameter at
//! submission) and the runtime (to build the command line).

use std::collections::BTreeSet;

use crate::compute::TaskArgs;

/// A template that cannot be parsed or filled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{` at byte {0} (write `{{{{` for a literal brace)")]
    Unclosed(usize),
    #[error("stray `}}` at byte {0} (write `}}}}` for a literal brace)")]
    StrayClose(usize),
    #[error(
        "invalid parameter name `{0}`: use letters, digits and `_`, not starting with a digit"
    )]
    BadName(String),
    #[error("missing argument `{0}`")]
    Missing(String),
    #[error("unknown argument `{0}`: the template has no such parameter")]
    Unknown(String),
}

enum Piece<'a> {
    Text(&'a str),
    Literal(char),
    Param(&'a str),
}

fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let bytes = template.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                out.push(Piece::Text(&template[start..i]));
                out.push(Piece::Literal('{'));
                i += 2;
                start = i;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                out.push(Piece::Text(&template[start..i]));
                out.push(Piece::Literal('}'));
                i += 2;
                start = i;
            }
            b'{' => {
                let close = template[i + 1..]
                    .find('}')
                    .map(|j| i + 1 + j)
                    .ok_or(TemplateError::Unclosed(i))?;
                let name = &template[i + 1..close];
                if !is_identifier(name) {
                    return Err(TemplateError::BadName(name.to_owned()));
                }
                out.push(Piece::Text(&template[start..i]));
                out.push(Piece::Param(name));
                i = close + 1;
                start = i;
            }
            b'}' => return Err(TemplateError::StrayClose(i)),
            _ => i += 1,
        }
    }
    out.push(Piece::Text(&template[start..]));
    Ok(out)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The parameter names of a template, sorted and unique.
pub fn parameters(template: &str) -> Result<Vec<String>, TemplateError> {
    let names: BTreeSet<String> = pieces(template)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Param(name) => Some(name.to_owned()),
            _ => None,
        })
        .collect();
    Ok(names.into_iter().collect())
}

/// Checks that `args` supply exactly the template's parameters.
pub fn check_args(parameters: &[String], args: &TaskArgs) -> Result<(), TemplateError> {
    if let Some(missing) = parameters.iter().find(|p| !args.contains_key(p.as_str())) {
        return Err(TemplateError::Missing(missing.clone()));
    }
    if let Some(unknown) = args.keys().find(|k| !parameters.contains(k)) {
        return Err(TemplateError::Unknown(unknown.clone()));
    }
    Ok(())
}

/// The text an argument value stands for: strings as they are, other JSON
/// values as JSON.
pub fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Fills a template; every value is shell-quoted, so it is always one
/// literal word however many metacharacters it holds.
pub fn render_shell(template: &str, args: &TaskArgs) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 16);
    for piece in pieces(template)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Literal(c) => out.push(c),
            Piece::Param(name) => {
                let value = args
                    .get(name)
                    .ok_or_else(|| TemplateError::Missing(name.to_owned()))?;
                out.push_str(&shell_quote(&value_text(value)));
            }
        }
    }
    Ok(out)
}

/// POSIX shell quoting: `'...'` with embedded quotes as `'\''`.
pub fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return value.to_owned();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(pairs: &[(&str, serde_json::Value)]) -> TaskArgs {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn parameters_are_found_and_braces_escaped() {
        assert_eq!(parameters("echo {x} {y} {x}").unwrap(), vec!["x", "y"]);
        assert_eq!(
            parameters("awk '{{print $1}}' {file}").unwrap(),
            vec!["file"]
        );
        assert_eq!(
            parameters("echo {").unwrap_err(),
            TemplateError::Unclosed(5)
        );
        assert_eq!(
            parameters("echo }").unwrap_err(),
            TemplateError::StrayClose(5)
        );
        assert!(matches!(
            parameters("echo {1x}"),
            Err(TemplateError::BadName(_))
        ));
        assert!(matches!(
            parameters("echo {a b}"),
            Err(TemplateError::BadName(_))
        ));
    }

    #[test]
    fn values_are_quoted_never_interpolated() {
        let rendered = render_shell(
            "echo {a} {b}",
            &args(&[
                ("a", json!("; rm -rf ~")),
                ("b", json!("it's $(id) `id`\nnext")),
            ]),
        )
        .unwrap();
        assert_eq!(rendered, "echo '; rm -rf ~' 'it'\\''s $(id) `id`\nnext'");
        assert_eq!(
            render_shell("echo {n}", &args(&[("n", json!(42))])).unwrap(),
            "echo 42"
        );
        assert_eq!(
            render_shell("echo {e}", &args(&[("e", json!(""))])).unwrap(),
            "echo ''"
        );
        assert_eq!(
            render_shell("awk '{{print}}' {f}", &args(&[("f", json!("a b"))])).unwrap(),
            "awk '{print}' 'a b'"
        );
    }

    #[test]
    fn arguments_must_match_parameters() {
        let params = vec!["x".to_owned()];
        assert_eq!(
            check_args(&params, &args(&[])).unwrap_err(),
            TemplateError::Missing("x".into())
        );
        assert_eq!(
            check_args(&params, &args(&[("x", json!(1)), ("y", json!(2))])).unwrap_err(),
            TemplateError::Unknown("y".into())
        );
        assert!(check_args(&params, &args(&[("x", json!(1))])).is_ok());
    }
}
