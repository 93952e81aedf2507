//! Functions: registration (spec validation, a Wasm module checked without
//! being compiled, content hashing, idempotent re-registration), who may use
//! a function, soft deletion, and the cache of specs the relay sends out.
//!
//! It owns the rule "a function is usable by its owner and those it is
//! shared with" ([`usable`]; grants are kept by `crate::sharing::grants`).
//! It must not know HTTP (no status codes, no extractors) nor run or
//! compile user code: the service only parses what it stores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use chrono::Utc;
use lattice_protocol::compute::{FunctionInfo, FunctionRegister, FunctionSpec};
use lattice_protocol::{template, FunctionId};
use sha2::{Digest, Sha256};

use super::{ComputeError, ComputeResult};
use crate::auth::Caller;
use crate::sharing::grants::{self, Resource};
use crate::sharing::Viewer;
use crate::state::AppState;
use crate::store::StoreResult;

/// Validates a spec and returns its template parameters.
fn validate(spec: &FunctionSpec) -> ComputeResult<Vec<String>> {
    let bad =
        |field: &str, message: String| ComputeError::Invalid(format!("spec.{field}: {message}"));
    let base64 = base64::engine::general_purpose::STANDARD;
    match spec {
        FunctionSpec::Shell { command } => {
            if command.trim().is_empty() {
                return Err(bad("command", "must not be empty".into()));
            }
            template::parameters(command).map_err(|e| bad("command", e.to_string()))
        }
        FunctionSpec::Container { image, command } => {
            if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
                return Err(bad(
                    "image",
                    "must be an image reference without spaces".into(),
                ));
            }
            template::parameters(command).map_err(|e| bad("command", e.to_string()))
        }
        FunctionSpec::Wasm { module } => {
            let bytes = base64
                .decode(module)
                .map_err(|e| bad("module", format!("not valid base64: {e}")))?;
            check_wasm_command(&bytes).map_err(|message| bad("module", message))?;
            Ok(Vec::new())
        }
        FunctionSpec::Python {
            payload,
            serializer,
            python_version,
            ..
        } => {
            base64
                .decode(payload)
                .map_err(|e| bad("payload", format!("not valid base64: {e}")))?;
            if !["source", "dill", "cloudpickle"].contains(&serializer.as_str()) {
                return Err(bad(
                    "serializer",
                    format!("`{serializer}` is not one of source, dill, cloudpickle"),
                ));
            }
            let mut parts = python_version.split('.');
            let valid = matches!((parts.next(), parts.next()), (Some(a), Some(b)) if a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok());
            if !valid {
                return Err(bad(
                    "python_version",
                    format!("`{python_version}` is not MAJOR.MINOR"),
                ));
            }
            Ok(Vec::new())
        }
    }
}

/// Import module of WASI preview 1, the only host API the workers provide.
const WASI_PREVIEW1: &str = "wasi_snapshot_preview1";

/// Checks that `bytes` are a module the workers can run: valid WebAssembly
/// (with the proposals their wasmtime enables), a core module importing
/// only WASI preview 1 and exporting `_start` (a WASI command). Parsing
/// only: the service never compiles or runs modules.
fn check_wasm_command(bytes: &[u8]) -> Result<(), String> {
    use wasmparser::{Encoding, Imports, Parser, Payload, Validator, WasmFeatures};
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly module (missing the \\0asm header)".into());
    }
    let features = WasmFeatures::WASM2
        | WasmFeatures::EXTENDED_CONST
        | WasmFeatures::TAIL_CALL
        | WasmFeatures::MULTI_MEMORY
        | WasmFeatures::RELAXED_SIMD;
    let mut has_start = false;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("not a valid WebAssembly module: {e}"))? {
            Payload::Version {
                encoding: Encoding::Component,
                ..
            } => {
                return Err(
                    "a WebAssembly component, not a core module: build a WASI preview 1 command (e.g. `--target wasm32-wasip1`)"
                        .into(),
                )
            }
            Payload::ImportSection(imports) => {
                for group in imports {
                    let group = group.map_err(|e| format!("not a valid WebAssembly module: {e}"))?;
                    let (module, name) = match group {
                        Imports::Single(_, import) => (import.module, import.name),
                        Imports::Compact1 { module, .. } | Imports::Compact2 { module, .. } => {
                            (module, "*")
                        }
                    };
                    if module != WASI_PREVIEW1 {
                        return Err(format!(
                            "imports `{module}.{name}`, but the sandbox provides only WASI preview 1 (`{WASI_PREVIEW1}`)"
                        ));
                    }
                }
            }
            Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export.map_err(|e| format!("not a valid WebAssembly module: {e}"))?;
                    has_start |= export.name == "_start";
                }
            }
            _ => {}
        }
    }
    Validator::new_with_features(features)
        .validate_all(bytes)
        .map_err(|e| format!("not a valid WebAssembly module: {e}"))?;
    if !has_start {
        return Err(
            "no `_start` export: a WASI command module is needed (e.g. `clang --target=wasm32-wasi`), not a library"
                .into(),
        );
    }
    Ok(())
}

fn default_name(spec: &FunctionSpec) -> String {
    let name = match spec {
        FunctionSpec::Shell { command } | FunctionSpec::Container { command, .. } => command
            .split_whitespace()
            .next()
            .unwrap_or("command")
            .to_owned(),
        FunctionSpec::Python { entry_point, .. } => {
            entry_point.clone().unwrap_or_else(|| "python".into())
        }
        FunctionSpec::Wasm { .. } => "wasm".into(),
    };
    name.chars().take(100).collect()
}

/// Content hash of a spec: SHA-256 of its canonical JSON.
pub(crate) fn content_hash(spec: &FunctionSpec) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(spec).expect("spec serializes"),
    ))
}

/// Registers a function for `caller`. The same spec under the same name
/// again returns the existing function; the flag says whether it is new.
pub(crate) async fn register(
    state: &AppState,
    caller: &Caller,
    request: FunctionRegister,
) -> ComputeResult<(FunctionInfo, bool)> {
    let parameters = validate(&request.spec)?;
    let name = request
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| default_name(&request.spec));
    if name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ComputeError::Invalid(
            "name: must be at most 200 characters without control characters".into(),
        ));
    }
    let hash = content_hash(&request.spec);
    if let Some(existing) = state
        .store
        .function_by_hash(caller.identity_id, &hash, &name)
        .await?
    {
        return Ok((existing, false));
    }
    let function = FunctionInfo {
        id: FunctionId::new(),
        name,
        description: request.description,
        owner_id: caller.identity_id,
        kind: request.spec.kind().to_owned(),
        content_hash: hash,
        parameters,
        spec: request.spec,
        created_at: Utc::now(),
        deleted_at: None,
    };
    state.store.insert_function(&function).await?;
    tracing::info!(function_id = %function.id, kind = %function.kind, "function registered");
    Ok((function, true))
}

/// The caller's functions.
pub(crate) async fn owned_by(
    state: &AppState,
    caller: &Caller,
) -> ComputeResult<Vec<FunctionInfo>> {
    Ok(state.store.functions_owned_by(caller.identity_id).await?)
}

/// A function the caller may use: its owner's, or one shared with the
/// caller (`crate::sharing::grants`). Not found if unknown, forbidden
/// otherwise. The owner's own submissions need no grant lookup.
pub(crate) async fn usable(
    state: &AppState,
    caller: &Caller,
    id: FunctionId,
) -> ComputeResult<FunctionInfo> {
    let function = state
        .store
        .function(id)
        .await?
        .ok_or_else(|| ComputeError::NotFound(format!("function {id} does not exist")))?;
    if function.owner_id != caller.identity_id {
        let viewer = Viewer::of(&state.store, caller.identity_id).await?;
        if !viewer.is(function.owner_id)
            && !grants::allows(&state.store, &viewer, Resource::Function(id)).await?
        {
            return Err(ComputeError::Forbidden(format!(
                "function {id} belongs to another identity and is not shared with you"
            )));
        }
    }
    Ok(function)
}

/// A function the caller owns (to delete or share it).
pub(crate) async fn owned(
    state: &AppState,
    caller: &Caller,
    id: FunctionId,
) -> ComputeResult<FunctionInfo> {
    let function = state
        .store
        .function(id)
        .await?
        .ok_or_else(|| ComputeError::NotFound(format!("function {id} does not exist")))?;
    if function.owner_id != caller.identity_id {
        return Err(ComputeError::Forbidden(format!(
            "function {id} belongs to another identity; only its owner may change it"
        )));
    }
    Ok(function)
}

/// Deletes (soft) a function the caller owns: existing tasks keep
/// running, new submissions are refused.
pub(crate) async fn delete(state: &AppState, caller: &Caller, id: FunctionId) -> ComputeResult<()> {
    owned(state, caller, id).await?;
    state.store.delete_function(id, Utc::now()).await?;
    Ok(())
}

/// A function's spec; functions are immutable, so it is cached forever.
pub(crate) async fn spec(
    state: &AppState,
    id: FunctionId,
) -> StoreResult<Option<Arc<FunctionSpec>>> {
    if let Some(spec) = state.functions.get(id) {
        return Ok(Some(spec));
    }
    let Some(function) = state.store.function(id).await? else {
        return Ok(None);
    };
    let spec = Arc::new(function.spec);
    state.functions.insert(id, spec.clone());
    Ok(Some(spec))
}

/// Most specs kept; beyond it the cache starts over (specs are cheap to reload).
const FUNCTION_CACHE_ENTRIES: usize = 10_000;

/// Specs by function id, for [`spec`] (held by [`AppState`]).
#[derive(Default)]
pub(crate) struct FunctionCache {
    specs: Mutex<HashMap<FunctionId, Arc<FunctionSpec>>>,
}

impl FunctionCache {
    fn get(&self, id: FunctionId) -> Option<Arc<FunctionSpec>> {
        self.specs.lock().expect("cache lock").get(&id).cloned()
    }

    fn insert(&self, id: FunctionId, spec: Arc<FunctionSpec>) {
        let mut specs = self.specs.lock().expect("cache lock");
        if specs.len() >= FUNCTION_CACHE_ENTRIES {
            specs.clear();
        }
        specs.insert(id, spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(wat: &str) -> Result<(), String> {
        check_wasm_command(&wat::parse_str(wat).unwrap())
    }

    #[test]
    fn a_wasi_command_is_accepted() {
        check(
            r#"(module
                 (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
                 (memory (export "memory") 1)
                 (func (export "_start")))"#,
        )
        .unwrap();
    }

    #[test]
    fn bad_modules_are_refused_with_the_reason() {
        let error = check_wasm_command(b"hello, world").unwrap_err();
        assert!(error.contains("\\0asm header"), "{error}");

        // The header alone, then garbage.
        let error = check_wasm_command(b"\0asm\x01\0\0\0\x01\xff\xff").unwrap_err();
        assert!(
            error.starts_with("not a valid WebAssembly module"),
            "{error}"
        );

        // Type-incorrect code: the validator, not just the parser, ran.
        let error = check(r#"(module (func (export "_start") (drop (i32.add (i32.const 1)))))"#)
            .unwrap_err();
        assert!(
            error.starts_with("not a valid WebAssembly module"),
            "{error}"
        );

        let error = check(r#"(module (import "env" "socket" (func)) (func (export "_start")))"#)
            .unwrap_err();
        assert!(error.starts_with("imports `env.socket`"), "{error}");

        let error = check(r#"(module (func (export "main")))"#).unwrap_err();
        assert!(error.starts_with("no `_start` export"), "{error}");

        let error = check("(component)").unwrap_err();
        assert!(error.starts_with("a WebAssembly component"), "{error}");
    }

    #[test]
    fn validate_reports_the_field() {
        let spec = FunctionSpec::Wasm {
            module: base64::engine::general_purpose::STANDARD.encode(b"\0asm\x01\0\0\0"),
        };
        let error = validate(&spec).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("spec.module"), "{text}");
        assert!(text.contains("_start"), "{text}");
    }
}
