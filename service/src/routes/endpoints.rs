//! `/v1/endpoints`: extract, call [`compute::endpoints`], answer.

use axum::extract::State;
use axum::http::StatusCode;
use lattice_protocol::compute::{EndpointInfo, EndpointRegister, EndpointRegistered};
use lattice_protocol::{EndpointId, ErrorBody};

use crate::auth::{Authorized, Compute};
use crate::compute::endpoints;
use crate::error::{ApiError, Json, Path};
use crate::state::AppState;

/// Register an endpoint (done by `lattice agent` on first start). Registering
/// a name the caller already uses returns that endpoint with a new agent
/// secret (the old one stops working).
#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints", security(("bearer" = ["compute"])),
    request_body = EndpointRegister,
    responses((status = 201, body = EndpointRegistered), (status = 400, body = ErrorBody)))]
pub(crate) async fn register(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Json(request): Json<EndpointRegister>,
) -> Result<(StatusCode, Json<EndpointRegistered>), ApiError> {
    let (record, agent_secret) =
        endpoints::create_endpoint(&state, auth.identity_id, &request.name).await?;
    let endpoint = endpoints::info(&state, record).await?;
    Ok((
        StatusCode::CREATED,
        Json(EndpointRegistered {
            endpoint,
            agent_secret,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoints", security(("bearer" = ["compute"])),
    responses((status = 200, body = Vec<EndpointInfo>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
) -> Result<Json<Vec<EndpointInfo>>, ApiError> {
    Ok(Json(endpoints::owned_by(&state, &auth).await?))
}

#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints", security(("bearer" = ["compute"])),
    params(("id" = EndpointId, Path)),
    responses((status = 200, body = EndpointInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<EndpointId>,
) -> Result<Json<EndpointInfo>, ApiError> {
    Ok(Json(endpoints::show(&state, &auth, id).await?))
}
