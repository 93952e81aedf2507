//! Reading flow definitions (JSON or YAML text, or an already parsed JSON
//! value) into [`FlowDefinition`], and checking a run's input against the
//! flow's `input_schema` (JSON Schema).
//!
//! This module only parses: whether the definition makes sense (targets
//! exist, paths and expressions parse, states are reachable) is
//! [`crate::validate`](mod@crate::validate)'s job.

use crate::model::{FlowDefinition, State};
use serde_json::Value;
use thiserror::Error;

/// Why a definition document could not be read.
#[derive(Debug, Error, PartialEq)]
pub enum DefinitionError {
    #[error("definition is not valid JSON: {0}")]
    Json(String),
    #[error("definition is not valid YAML: {0}")]
    Yaml(String),
    /// The document parsed but does not have the definition's shape
    /// (missing `StartAt`, unknown state `Type`, a field of the wrong type).
    #[error("definition has the wrong shape: {0}")]
    Shape(String),
    #[error("definition is larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// Largest definition text accepted, in bytes.
pub const MAX_DEFINITION_BYTES: usize = 1024 * 1024;

/// The state types a definition may use.
pub const STATE_TYPES: [&str; 9] = [
    "Action",
    "Pass",
    "Choice",
    "Wait",
    "Fail",
    "Succeed",
    "ExpressionEval",
    "Parallel",
    "Map",
];

impl FlowDefinition {
    /// Parses JSON text.
    pub fn from_json(text: &str) -> Result<Self, DefinitionError> {
        check_size(text)?;
        let value: Value =
            serde_json::from_str(text).map_err(|e| DefinitionError::Json(e.to_string()))?;
        Self::from_value(value)
    }

    /// Parses YAML text (a JSON document is also YAML).
    pub fn from_yaml(text: &str) -> Result<Self, DefinitionError> {
        check_size(text)?;
        let value: Value =
            serde_yaml_ng::from_str(text).map_err(|e| DefinitionError::Yaml(e.to_string()))?;
        Self::from_value(value)
    }

    /// Parses JSON if the text starts like a JSON object, YAML otherwise.
    pub fn from_text(text: &str) -> Result<Self, DefinitionError> {
        if text.trim_start().starts_with('{') {
            Self::from_json(text)
        } else {
            Self::from_yaml(text)
        }
    }

    /// Converts a parsed document; errors name the state at fault.
    pub fn from_value(value: Value) -> Result<Self, DefinitionError> {
        // Name the state whose shape is wrong before serde's generic message.
        if let Some(states) = value.get("States").and_then(Value::as_object) {
            for (name, state) in states {
                if let Err(e) = serde_json::from_value::<State>(state.clone()) {
                    let type_hint = match state.get("Type").and_then(Value::as_str) {
                        Some(t) if !STATE_TYPES.contains(&t) => {
                            format!("unknown Type {t:?} (known: {})", STATE_TYPES.join(", "))
                        }
                        _ => e.to_string(),
                    };
                    return Err(DefinitionError::Shape(format!(
                        "state {name:?}: {type_hint}"
                    )));
                }
            }
        }
        serde_json::from_value(value).map_err(|e| DefinitionError::Shape(e.to_string()))
    }
}

fn check_size(text: &str) -> Result<(), DefinitionError> {
    if text.len() > MAX_DEFINITION_BYTES {
        return Err(DefinitionError::TooLarge {
            limit: MAX_DEFINITION_BYTES,
        });
    }
    Ok(())
}

/// One way a run's input breaks the flow's input schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputProblem {
    /// JSON Pointer to the failing field of the input (`/source/id`; `""`
    /// for the whole input).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for InputProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let field = if self.field.is_empty() {
            "input"
        } else {
            &self.field
        };
        write!(f, "{field}: {}", self.message)
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum InputSchemaError {
    /// The schema itself is not a valid JSON Schema (a problem with the
    /// flow, reported at creation).
    #[error("input_schema is not a valid JSON Schema: {0}")]
    BadSchema(String),
    /// The input does not match; every problem, each naming its field.
    #[error("input does not match the flow's input_schema: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<InputProblem>),
}

/// Checks that `schema` is a usable JSON Schema (at flow creation).
pub fn check_input_schema(schema: &Value) -> Result<(), InputSchemaError> {
    jsonschema::validator_for(schema)
        .map(|_| ())
        .map_err(|e| InputSchemaError::BadSchema(e.to_string()))
}

/// Validates a run's input against the flow's input schema; `$ref`s to
/// other documents are not fetched (no I/O).
pub fn validate_input(schema: &Value, input: &Value) -> Result<(), InputSchemaError> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| InputSchemaError::BadSchema(e.to_string()))?;
    let problems: Vec<InputProblem> = validator
        .iter_errors(input)
        .map(|e| InputProblem {
            field: e.instance_path().to_string(),
            message: e.to_string(),
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InputSchemaError::Invalid(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::State;
    use serde_json::json;

    const YAML: &str = r#"
Comment: two steps
StartAt: Hello
States:
  Hello:
    Type: Action
    ActionUrl: /v1/actions/hello
    Parameters:
      echo_string.$: $.name
    ResultPath: $.hello
    Retry:
      - ErrorEquals: [ActionFailedException]
        MaxAttempts: 2
    Next: Done
  Done:
    Type: Succeed
"#;

    #[test]
    fn yaml_and_json_give_the_same_definition() {
        let from_yaml = FlowDefinition::from_yaml(YAML).unwrap();
        let json = serde_json::to_string(&from_yaml).unwrap();
        let from_json = FlowDefinition::from_json(&json).unwrap();
        assert_eq!(from_yaml, from_json);
        assert_eq!(FlowDefinition::from_text(&json).unwrap(), from_yaml);
        let State::Action(a) = &from_yaml.states["Hello"] else {
            panic!("not an action")
        };
        assert_eq!(a.retry[0].max_attempts, Some(2));
        assert_eq!(a.transition.next.as_deref(), Some("Done"));
    }

    #[test]
    fn shape_errors_name_the_state() {
        let e = FlowDefinition::from_value(json!({
            "StartAt": "A", "States": {"A": {"Type": "Task", "End": true}}
        }))
        .unwrap_err();
        assert!(
            e.to_string().contains("\"A\"") && e.to_string().contains("Task"),
            "{e}"
        );
        let e = FlowDefinition::from_value(json!({
            "StartAt": "A", "States": {"A": {"Type": "Action", "End": true}}
        }))
        .unwrap_err();
        assert!(e.to_string().contains("ActionUrl"), "{e}");
        let e = FlowDefinition::from_value(json!({"States": {}})).unwrap_err();
        assert!(e.to_string().contains("StartAt"), "{e}");
        assert!(FlowDefinition::from_json("{").is_err());
        assert!(FlowDefinition::from_yaml(": : :\n  - [").is_err());
        assert!(FlowDefinition::from_json("[]").is_err());
    }

    #[test]
    fn input_schema_errors_name_the_field() {
        let schema = json!({
            "type": "object",
            "required": ["source"],
            "properties": {
                "source": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {"id": {"type": "string"}, "path": {"type": "string"}}
                }
            }
        });
        check_input_schema(&schema).unwrap();
        validate_input(&schema, &json!({"source": {"id": "x"}})).unwrap();
        let Err(InputSchemaError::Invalid(problems)) =
            validate_input(&schema, &json!({"source": {"id": 3, "path": 4}}))
        else {
            panic!("expected problems")
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields.len(), 2);
        assert!(fields.contains(&"/source/id") && fields.contains(&"/source/path"));
        let e = validate_input(&schema, &json!({})).unwrap_err();
        assert!(e.to_string().contains("source"), "{e}");
        assert!(matches!(
            check_input_schema(&json!({"type": 12})),
            Err(InputSchemaError::BadSchema(_))
        ));
    }
}
