//! `/v1/functions/{id}/grants` and `/v1/endpoints/{id}/grants`: who else
//! may run a function or submit to an endpoint. The rules live in
//! `crate::sharing::grants`; handlers extract, call, map.

use axum::extract::State;
use axum::http::StatusCode;
use lattice_protocol::sharing::{GrantsAdd, Principal};
use lattice_protocol::{EndpointId, ErrorBody, FunctionId, IdentityId};

use crate::auth::{Authorized, Compute};
use crate::error::{ApiError, Json, Path};
use crate::sharing::grants::{self, Resource};
use crate::sharing::Actor;
use crate::state::AppState;

/// The resource and its owner (404 if unknown).
async fn owner_of(state: &AppState, resource: Resource) -> Result<IdentityId, ApiError> {
    let owner = match resource {
        Resource::Function(id) => state.store.function(id).await?.map(|f| f.owner_id),
        Resource::Endpoint(id) => state.store.endpoint(id).await?.map(|e| e.owner_id),
    };
    owner.ok_or_else(|| {
        ApiError::not_found(match resource {
            Resource::Function(id) => format!("function {id} does not exist"),
            Resource::Endpoint(id) => format!("endpoint {id} does not exist"),
        })
    })
}

async fn list(
    state: &AppState,
    auth: &Authorized<Compute>,
    resource: Resource,
) -> Result<Json<Vec<Principal>>, ApiError> {
    let owner = owner_of(state, resource).await?;
    let actor = Actor::of(&state.store, auth).await?;
    Ok(Json(
        grants::list(&state.store, &actor, resource, owner).await?,
    ))
}

async fn add(
    state: &AppState,
    auth: &Authorized<Compute>,
    resource: Resource,
    request: GrantsAdd,
) -> Result<Json<Vec<Principal>>, ApiError> {
    let owner = owner_of(state, resource).await?;
    let actor = Actor::of(&state.store, auth).await?;
    Ok(Json(
        grants::add(&state.store, &actor, resource, owner, request.principals).await?,
    ))
}

async fn remove(
    state: &AppState,
    auth: &Authorized<Compute>,
    resource: Resource,
    principal: &str,
) -> Result<StatusCode, ApiError> {
    let principal: Principal =
        principal
            .parse()
            .map_err(|e: lattice_protocol::sharing::PrincipalError| {
                ApiError::bad_request(e.to_string())
            })?;
    let owner = owner_of(state, resource).await?;
    let actor = Actor::of(&state.store, auth).await?;
    grants::remove(&state.store, &actor, resource, owner, principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/functions/{id}/grants", tag = "sharing", security(("bearer" = ["compute"])),
    params(("id" = FunctionId, Path)),
    responses((status = 200, body = Vec<String>, description = "principals"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn function_grants(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<FunctionId>,
) -> Result<Json<Vec<Principal>>, ApiError> {
    list(&state, &auth, Resource::Function(id)).await
}

/// Share a function: the principals may run it on endpoints they may use.
#[utoipa::path(post, path = "/v1/functions/{id}/grants", tag = "sharing", security(("bearer" = ["compute"])),
    params(("id" = FunctionId, Path)), request_body = GrantsAdd,
    responses((status = 200, body = Vec<String>, description = "all principals now"), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn share_function(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<FunctionId>,
    Json(request): Json<GrantsAdd>,
) -> Result<Json<Vec<Principal>>, ApiError> {
    add(&state, &auth, Resource::Function(id), request).await
}

#[utoipa::path(delete, path = "/v1/functions/{id}/grants/{principal}", tag = "sharing", security(("bearer" = ["compute"])),
    params(("id" = FunctionId, Path), ("principal" = String, Path, description = "identity:ID, group:ID, all_authenticated_users or public")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn unshare_function(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path((id, principal)): Path<(FunctionId, String)>,
) -> Result<StatusCode, ApiError> {
    remove(&state, &auth, Resource::Function(id), &principal).await
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/grants", tag = "sharing", security(("bearer" = ["compute"])),
    params(("id" = EndpointId, Path)),
    responses((status = 200, body = Vec<String>, description = "principals"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn endpoint_grants(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<EndpointId>,
) -> Result<Json<Vec<Principal>>, ApiError> {
    list(&state, &auth, Resource::Endpoint(id)).await
}

/// Share an endpoint: the principals may submit tasks to it. On a
/// multi-user endpoint, the first grant restricts submission to grantees.
#[utoipa::path(post, path = "/v1/endpoints/{id}/grants", tag = "sharing", security(("bearer" = ["compute"])),
    params(("id" = EndpointId, Path)), request_body = GrantsAdd,
    responses((status = 200, body = Vec<String>, description = "all principals now"), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn share_endpoint(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<EndpointId>,
    Json(request): Json<GrantsAdd>,
) -> Result<Json<Vec<Principal>>, ApiError> {
    add(&state, &auth, Resource::Endpoint(id), request).await
}

#[utoipa::path(delete, path = "/v1/endpoints/{id}/grants/{principal}", tag = "sharing", security(("bearer" = ["compute"])),
    params(("id" = EndpointId, Path), ("principal" = String, Path, description = "identity:ID, group:ID or all_authenticated_users")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn unshare_endpoint(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path((id, principal)): Path<(EndpointId, String)>,
) -> Result<StatusCode, ApiError> {
    remove(&state, &auth, Resource::Endpoint(id), &principal).await
}
