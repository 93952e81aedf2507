//! `/v1/functions`: extract, call [`compute::functions`], answer.

use axum::extract::State;
use axum::http::StatusCode;
use lattice_protocol::compute::{FunctionInfo, FunctionRegister};
use lattice_protocol::{ErrorBody, FunctionId};

use crate::auth::{Authorized, Compute};
use crate::compute::functions;
use crate::error::{ApiError, Json, Path};
use crate::state::AppState;

/// Register a function. Registering the same spec under the same name again
/// returns the existing function (200) instead of a new one (201).
#[utoipa::path(post, path = "/v1/functions", tag = "functions", security(("bearer" = ["compute"])),
    request_body = FunctionRegister,
    responses((status = 201, body = FunctionInfo), (status = 200, body = FunctionInfo, description = "already registered"),
              (status = 400, body = ErrorBody)))]
pub(crate) async fn register(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Json(request): Json<FunctionRegister>,
) -> Result<(StatusCode, Json<FunctionInfo>), ApiError> {
    let (function, created) = functions::register(&state, &auth, request).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(function)))
}

/// The caller's functions.
#[utoipa::path(get, path = "/v1/functions", tag = "functions", security(("bearer" = ["compute"])),
    responses((status = 200, body = Vec<FunctionInfo>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
) -> Result<Json<Vec<FunctionInfo>>, ApiError> {
    Ok(Json(functions::owned_by(&state, &auth).await?))
}

#[utoipa::path(get, path = "/v1/functions/{id}", tag = "functions", security(("bearer" = ["compute"])),
    params(("id" = FunctionId, Path)),
    responses((status = 200, body = FunctionInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<FunctionId>,
) -> Result<Json<FunctionInfo>, ApiError> {
    Ok(Json(functions::usable(&state, &auth, id).await?))
}

/// Delete (soft): existing tasks keep running, new submissions are refused.
#[utoipa::path(delete, path = "/v1/functions/{id}", tag = "functions", security(("bearer" = ["compute"])),
    params(("id" = FunctionId, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<FunctionId>,
) -> Result<StatusCode, ApiError> {
    functions::delete(&state, &auth, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
