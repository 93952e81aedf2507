use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use chrono::Utc;
use lattice_protocol::compute::{FunctionInfo, FunctionRegister, FunctionSpec};
use lattice_protocol::{template, ErrorBody, FunctionId};
use sha2::{Digest, Sha256};

use crate::auth::{Authorized, Compute};
use crate::error::{ApiError, Json, Path};
use crate::state::AppState;

/// Validates a spec and returns its template parameters.
fn validate(spec: &FunctionSpec) -> Result<Vec<String>, ApiError> {
    let bad =
        |field: &str, message: String| ApiError::bad_request(format!("spec.{field}: {message}"));
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
            if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
                return Err(bad(
                    "module",
                    "not a WebAssembly module (missing the \\0asm header)".into(),
                ));
            }
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
pub fn content_hash(spec: &FunctionSpec) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(spec).expect("spec serializes"),
    ))
}

/// Register a function. Registering the same spec under the same name again
/// returns the existing function (200) instead of a new one (201).
#[utoipa::path(post, path = "/v1/functions", tag = "functions", security(("bearer" = ["compute"])),
    request_body = FunctionRegister,
    responses((status = 201, body = FunctionInfo), (status = 200, body = FunctionInfo, description = "already registered"),
              (status = 400, body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Json(request): Json<FunctionRegister>,
) -> Result<(StatusCode, Json<FunctionInfo>), ApiError> {
    let parameters = validate(&request.spec)?;
    let name = request
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| default_name(&request.spec));
    if name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name: must be at most 200 characters without control characters",
        ));
    }
    let hash = content_hash(&request.spec);
    if let Some(existing) = state
        .store
        .function_by_hash(auth.identity_id, &hash, &name)
        .await?
    {
        return Ok((StatusCode::OK, Json(existing)));
    }
    let function = FunctionInfo {
        id: FunctionId::new(),
        name,
        description: request.description,
        owner_id: auth.identity_id,
        kind: request.spec.kind().to_owned(),
        content_hash: hash,
        parameters,
        spec: request.spec,
        created_at: Utc::now(),
        deleted_at: None,
    };
    state.store.insert_function(&function).await?;
    tracing::info!(function_id = %function.id, kind = %function.kind, "function registered");
    Ok((StatusCode::CREATED, Json(function)))
}

/// The caller's functions.
#[utoipa::path(get, path = "/v1/functions", tag = "functions", security(("bearer" = ["compute"])),
    responses((status = 200, body = Vec<FunctionInfo>)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
) -> Result<Json<Vec<FunctionInfo>>, ApiError> {
    Ok(Json(
        state.store.functions_owned_by(auth.identity_id).await?,
    ))
}

/// Loads a function the caller may use: 404 if unknown, 403 if not theirs.
pub async fn usable_function(
    state: &AppState,
    caller: &crate::auth::Caller,
    id: FunctionId,
) -> Result<FunctionInfo, ApiError> {
    let function = state
        .store
        .function(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("function {id} does not exist")))?;
    if function.owner_id != caller.identity_id {
        return Err(ApiError::forbidden(format!(
            "function {id} belongs to another identity and is not shared with you"
        )));
    }
    Ok(function)
}

#[utoipa::path(get, path = "/v1/functions/{id}", tag = "functions", security(("bearer" = ["compute"])),
    params(("id" = FunctionId, Path)),
    responses((status = 200, body = FunctionInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<FunctionId>,
) -> Result<Json<FunctionInfo>, ApiError> {
    Ok(Json(usable_function(&state, &auth, id).await?))
}

/// Delete (soft): existing tasks keep running, new submissions are refused.
#[utoipa::path(delete, path = "/v1/functions/{id}", tag = "functions", security(("bearer" = ["compute"])),
    params(("id" = FunctionId, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<FunctionId>,
) -> Result<StatusCode, ApiError> {
    usable_function(&state, &auth, id).await?;
    state.store.delete_function(id, Utc::now()).await?;
    Ok(StatusCode::NO_CONTENT)
}
