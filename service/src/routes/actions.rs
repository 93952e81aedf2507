//! `/v1/actions/{name}`: the built-in action providers under the Globus
//! action-provider contract (introspection, run, status, cancel, release,
//! resume), so other engines, and flows anywhere, can use them.

use axum::extract::State;
use axum::http::StatusCode;
use lattice_protocol::flows::{ActionProviderInfo, ActionRequest, ActionStatus};
use lattice_protocol::{ActionId, ErrorBody};

use crate::auth::{AnyScope, Authorized};
use crate::error::{ApiError, Json, Path};
use crate::flows::actions::{self, Provider};
use crate::state::AppState;

/// What the provider does and the shape of its body.
#[utoipa::path(get, path = "/v1/actions/{name}", tag = "actions",
    params(("name" = String, Path, description = "transfer, delete, ls, mkdir, compute, search_ingest, search_delete, set_access_rule, approval, expression_eval, echo")),
    responses((status = 200, body = ActionProviderInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn introspect(
    Path(name): Path<String>,
) -> Result<Json<ActionProviderInfo>, ApiError> {
    Ok(Json(Provider::named(&name)?.info()))
}

/// Start an action as the caller; the same `request_id` again returns the
/// first action (200).
#[utoipa::path(post, path = "/v1/actions/{name}/run", tag = "actions", security(("bearer" = [])),
    params(("name" = String, Path)), request_body = ActionRequest,
    responses((status = 201, body = ActionStatus), (status = 200, body = ActionStatus, description = "a known request id"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn run(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(name): Path<String>,
    Json(request): Json<ActionRequest>,
) -> Result<(StatusCode, Json<ActionStatus>), ApiError> {
    let provider = Provider::named(&name)?;
    let (created, status) = actions::run(&state, &auth, provider, request, None).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(status)))
}

#[utoipa::path(get, path = "/v1/actions/{name}/{action_id}/status", tag = "actions", security(("bearer" = [])),
    params(("name" = String, Path), ("action_id" = ActionId, Path)),
    responses((status = 200, body = ActionStatus), (status = 404, body = ErrorBody)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path((name, id)): Path<(String, ActionId)>,
) -> Result<Json<ActionStatus>, ApiError> {
    let provider = Provider::named(&name)?;
    Ok(Json(actions::status(&state, &auth, provider, id).await?))
}

#[utoipa::path(post, path = "/v1/actions/{name}/{action_id}/cancel", tag = "actions", security(("bearer" = [])),
    params(("name" = String, Path), ("action_id" = ActionId, Path)),
    responses((status = 200, body = ActionStatus), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path((name, id)): Path<(String, ActionId)>,
) -> Result<Json<ActionStatus>, ApiError> {
    let provider = Provider::named(&name)?;
    Ok(Json(actions::cancel(&state, &auth, provider, id).await?))
}

#[utoipa::path(post, path = "/v1/actions/{name}/{action_id}/release", tag = "actions", security(("bearer" = [])),
    params(("name" = String, Path), ("action_id" = ActionId, Path)),
    responses((status = 200, body = ActionStatus), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn release(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path((name, id)): Path<(String, ActionId)>,
) -> Result<Json<ActionStatus>, ApiError> {
    let provider = Provider::named(&name)?;
    Ok(Json(actions::release(&state, &auth, provider, id).await?))
}

#[utoipa::path(post, path = "/v1/actions/{name}/{action_id}/resume", tag = "actions", security(("bearer" = [])),
    params(("name" = String, Path), ("action_id" = ActionId, Path)),
    responses((status = 200, body = ActionStatus), (status = 404, body = ErrorBody)))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path((name, id)): Path<(String, ActionId)>,
) -> Result<Json<ActionStatus>, ApiError> {
    let provider = Provider::named(&name)?;
    Ok(Json(actions::resume(&state, &auth, provider, id).await?))
}
