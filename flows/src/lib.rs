//! The pure core of Lattice Flows: durable JSON state machines whose steps
//! are the fabric's capabilities, in the Globus Flows definition language.
//!
//! This crate owns the language and the run semantics: reading definitions
//! ([`definition`], wire types in [`model`]), checking them
//! ([`validate`](mod@validate)), the expression language ([`expr`]), input and output
//! processing ([`params`]), Choice rules ([`choice`]) and the run state
//! machine ([`run`]): a [`run::Run`] value that takes [`run::Event`]s and
//! returns [`run::Command`]s. [`sim`] is a scripted driver (canned action
//! replies, a simulated clock) for tests here and in the service.
//!
//! Beyond the anchor, which rejects them: `Parallel` and `Map` states and
//! `Retry` on actions (also on `Parallel` and `Map`).
//!
//! It must not do I/O, spawn, sleep or read the clock: time is passed in,
//! actions are started by the caller (the service's run driver) from the
//! commands, and the run is a serde value the caller stores after every
//! call. No HTTP, no database, no async.
//!
//! How the service uses it:
//!
//! ```
//! use chrono::Utc;
//! use lattice_flows::{validate_document, validate_input, Command, Event, Limits, Run};
//! use serde_json::json;
//!
//! // at flow creation: every problem at once, each with its state and field
//! let doc = json!({
//!     "StartAt": "Hello",
//!     "States": {"Hello": {"Type": "Action", "ActionUrl": "/v1/actions/hello",
//!         "Parameters": {"echo_string.$": "$.name"}, "ResultPath": "$.hello", "End": true}}
//! });
//! let (definition, report) = validate_document(&doc).unwrap();
//! assert!(report.errors.is_empty());
//!
//! // at run start: check the input, start, carry out the commands
//! let input = json!({"name": "Ada"});
//! validate_input(&json!({"type": "object", "required": ["name"]}), &input).unwrap();
//! let (mut run, commands) = Run::start("run-1", definition, input, Limits::default(), Utc::now());
//! let Command::StartAction { request_id, body, .. } = &commands[0] else { unreachable!() };
//! assert_eq!(body, &json!({"echo_string": "Ada"}));
//!
//! // store `run` (serde), then feed back what happened
//! let done = Event::ActionSucceeded { request_id: request_id.clone(), status: json!({"status": "SUCCEEDED"}) };
//! let commands = run.handle(done, Utc::now());
//! assert!(matches!(commands.last(), Some(Command::Finish { .. })));
//! let log = run.drain_log(); // append to the run's stored log
//! assert!(!log.is_empty());
//! ```
//!
//! Crates: `serde_json_path` (RFC 9535 JSONPath), `jsonschema` with default
//! features off (no HTTP or file `$ref` resolution), and `serde_yaml_ng`
//! for YAML definitions: the maintained fork of the deprecated
//! `serde_yaml` with the same API; `serde-saphyr` (pure Rust) was the other
//! candidate but needs Rust 1.89 and the workspace builds on 1.88.

pub mod choice;
pub mod definition;
pub mod expr;
pub mod model;
pub mod params;
pub mod run;
pub mod sim;
pub mod validate;

pub use definition::{validate_input, DefinitionError, InputSchemaError};
pub use model::{FlowDefinition, RunError, RunStatus};
pub use run::{Command, Event, Limits, Run};
pub use validate::{validate, validate_document, Problem, Report};
