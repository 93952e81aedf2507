//! The per-user config template: admin TOML text with `{{ name }}`
//! placeholders, user variables checked against a small JSON Schema subset,
//! and a renderer that inserts values only as TOML literals (strings are
//! quoted and escaped, numbers and booleans written as such), never raw text.

use serde_json::{Map, Value};

/// Why user variables or a template are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("user_endpoint_config: {0}")]
    Invalid(String),
    #[error("user config template: {0}")]
    Template(String),
}

fn invalid(message: impl Into<String>) -> TemplateError {
    TemplateError::Invalid(message.into())
}

/// Checks `vars` against `schema` (the documented subset of JSON Schema: a
/// top-level object with `properties`, `required`, `additionalProperties`
/// [default false]; per property `type`, `enum`, `minimum`, `maximum`,
/// `minLength`, `maxLength`, `pattern`, `default`) and returns the
/// variables with defaults filled in.
pub fn validate(schema: &Value, vars: Option<&Value>) -> Result<Map<String, Value>, TemplateError> {
    let empty = Map::new();
    let given = match vars {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => return Err(invalid("must be a JSON object")),
    };
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let additional = schema
        .get("additionalProperties")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut out = Map::new();
    for (name, value) in given {
        match properties.get(name) {
            Some(prop) => {
                check_property(name, prop, value)?;
                out.insert(name.clone(), value.clone());
            }
            None if additional => {
                check_scalar(name, value)?;
                out.insert(name.clone(), value.clone());
            }
            None => {
                return Err(invalid(format!(
                    "`{name}` is not an allowed variable (allowed: {})",
                    properties.keys().cloned().collect::<Vec<_>>().join(", ")
                )))
            }
        }
    }
    for (name, prop) in &properties {
        if !out.contains_key(name) {
            if let Some(default) = prop.get("default") {
                out.insert(name.clone(), default.clone());
            }
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !out.contains_key(name) {
                return Err(invalid(format!("`{name}` is required")));
            }
        }
    }
    Ok(out)
}

fn check_scalar(name: &str, value: &Value) -> Result<(), TemplateError> {
    match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(()),
        _ => Err(invalid(format!(
            "`{name}` must be a string, number or boolean"
        ))),
    }
}

fn check_property(name: &str, prop: &Value, value: &Value) -> Result<(), TemplateError> {
    check_scalar(name, value)?;
    if let Some(ty) = prop.get("type").and_then(Value::as_str) {
        let ok = match ty {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => {
                return Err(TemplateError::Template(format!(
                    "schema of `{name}`: unsupported type `{other}`"
                )))
            }
        };
        if !ok {
            return Err(invalid(format!(
                "`{name}`: {value} is not of type \"{ty}\""
            )));
        }
    }
    if let Some(options) = prop.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            return Err(invalid(format!(
                "`{name}`: {value} is not one of {}",
                Value::Array(options.clone())
            )));
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = prop.get("minimum").and_then(Value::as_f64) {
            if n < min {
                return Err(invalid(format!(
                    "`{name}`: {value} is less than the minimum of {min}"
                )));
            }
        }
        if let Some(max) = prop.get("maximum").and_then(Value::as_f64) {
            if n > max {
                return Err(invalid(format!(
                    "`{name}`: {value} is greater than the maximum of {max}"
                )));
            }
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = prop.get("minLength").and_then(Value::as_u64) {
            if len < min {
                return Err(invalid(format!(
                    "`{name}`: {value} is shorter than {min} characters"
                )));
            }
        }
        if let Some(max) = prop.get("maxLength").and_then(Value::as_u64) {
            if len > max {
                return Err(invalid(format!(
                    "`{name}`: {value} is longer than {max} characters"
                )));
            }
        }
        if let Some(pattern) = prop.get("pattern").and_then(Value::as_str) {
            let re = regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    TemplateError::Template(format!("schema of `{name}`: pattern: {e}"))
                })?;
            if !re.is_match(s) {
                return Err(invalid(format!(
                    "`{name}`: {value} does not match \"{pattern}\""
                )));
            }
        }
    }
    Ok(())
}

/// A value as a TOML literal.
fn literal(name: &str, value: &Value) -> Result<String, TemplateError> {
    Ok(match value {
        Value::String(s) => toml::Value::String(s.clone()).to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => toml::Value::Float(f).to_string(),
            _ => return Err(invalid(format!("`{name}`: not a finite number"))),
        },
        _ => {
            return Err(invalid(format!(
                "`{name}` must be a string, number or boolean"
            )))
        }
    })
}

/// Replaces every `{{ name }}` with the variable's TOML literal; a
/// placeholder without a value is an error, and the result must parse as
/// TOML.
pub fn render(template: &str, vars: &Map<String, Value>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Template("unclosed `{{`".to_owned()))?;
        let name = after[..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(TemplateError::Template(format!(
                "bad placeholder `{{{{{}}}}}`",
                &after[..end]
            )));
        }
        let value = vars
            .get(name)
            .ok_or_else(|| invalid(format!("`{name}` is required by the template")))?;
        out.push_str(&literal(name, value)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    toml::from_str::<toml::Table>(&out)
        .map_err(|e| TemplateError::Template(format!("rendered config is not TOML: {e}")))?;
    Ok(out)
}

/// The canonical text of a variable set (keys sorted): one child per key.
pub fn canonical(vars: &Map<String, Value>) -> String {
    let sorted: std::collections::BTreeMap<_, _> = vars.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "account": {"type": "string", "pattern": "^[a-z][a-z0-9]{1,15}$"},
                "walltime": {"type": "integer", "minimum": 60, "maximum": 86400, "default": 3600},
                "partition": {"type": "string", "enum": ["debug", "batch"]},
                "exclusive": {"type": "boolean"}
            },
            "required": ["account"]
        })
    }

    const TEMPLATE: &str = "workers = 1\naccount = {{ account }}\nwalltime = {{walltime}}\n";

    #[test]
    fn valid_variables_render_as_toml_literals() {
        let vars = validate(&schema(), Some(&json!({"account": "proj1"}))).unwrap();
        let text = render(TEMPLATE, &vars).unwrap();
        assert_eq!(text, "workers = 1\naccount = \"proj1\"\nwalltime = 3600\n");
    }

    #[test]
    fn invalid_variables_get_the_schema_message() {
        let s = schema();
        let err = |v: Value| validate(&s, Some(&v)).unwrap_err().to_string();
        assert!(err(json!({})).contains("`account` is required"));
        assert!(
            err(json!({"account": "p1", "walltime": 10})).contains("less than the minimum of 60")
        );
        assert!(err(json!({"account": "p1", "walltime": 100000}))
            .contains("greater than the maximum of 86400"));
        assert!(err(json!({"account": "p1", "walltime": "1h"})).contains("not of type \"integer\""));
        assert!(err(json!({"account": "p1", "partition": "gpu"})).contains("is not one of"));
        assert!(err(json!({"account": "Bad!"})).contains("does not match"));
        assert!(err(json!({"account": "p1", "qos": "high"})).contains("not an allowed variable"));
        assert!(err(json!({"account": {"a": 1}})).contains("string, number or boolean"));
        assert!(err(json!([1])).contains("JSON object"));
    }

    #[test]
    fn injection_attempts_stay_inside_the_string() {
        let vars: Map<String, Value> = serde_json::from_value(json!({
            "account": "x\"\nprovider = \"evil\"\n[evil]\nk = \"",
            "walltime": 1
        }))
        .unwrap();
        let text = render(TEMPLATE, &vars).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert!(!table.contains_key("provider"));
        assert!(!table.contains_key("evil"));
        assert_eq!(
            table["account"].as_str().unwrap(),
            "x\"\nprovider = \"evil\"\n[evil]\nk = \""
        );
    }

    #[test]
    fn template_errors() {
        let vars = Map::new();
        assert!(matches!(
            render("a = {{ b", &vars),
            Err(TemplateError::Template(_))
        ));
        assert!(matches!(
            render("a = {{ b c }}", &vars),
            Err(TemplateError::Template(_))
        ));
        assert!(matches!(
            render("a = {{ b }}", &vars),
            Err(TemplateError::Invalid(_))
        ));
        let mut v = Map::new();
        v.insert("b".into(), json!("x"));
        // A placeholder in a bare position that would not be valid TOML.
        assert!(matches!(
            render("{{ b }} = 1\n[", &v),
            Err(TemplateError::Template(_))
        ));
    }

    #[test]
    fn canonical_is_order_independent() {
        let a: Map<String, Value> = serde_json::from_str(r#"{"x":1,"y":"2"}"#).unwrap();
        let b: Map<String, Value> = serde_json::from_str(r#"{"y":"2","x":1}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
    }
}
