//! `/v1/groups`: groups, their memberships and their audit trail. The
//! rules live in `crate::sharing::groups`; handlers extract, call, map.

use axum::extract::State;
use axum::http::StatusCode;
use lattice_protocol::sharing::{
    AuditEntry, GroupCreate, GroupInfo, GroupUpdate, MembershipBatch, MembershipBatchResult,
};
use lattice_protocol::{ErrorBody, GroupId};
use serde::Deserialize;

use crate::auth::{Authorized, Manage};
use crate::error::{ApiError, Json, Path, Query};
use crate::routes::AuditQuery;
use crate::sharing::{groups, Actor};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ListQuery {
    /// Also list every group visible to all logged-in identities.
    #[serde(default)]
    all: bool,
}

#[utoipa::path(post, path = "/v1/groups", tag = "groups", security(("bearer" = ["manage"])), request_body = GroupCreate,
    responses((status = 201, body = GroupInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    auth: Authorized<Manage>,
    Json(request): Json<GroupCreate>,
) -> Result<(StatusCode, Json<GroupInfo>), ApiError> {
    let actor = Actor::of(&state.store, &auth).await?;
    let group = groups::create(&state.store, &actor, request).await?;
    Ok((StatusCode::CREATED, Json(group)))
}

#[utoipa::path(get, path = "/v1/groups", tag = "groups", security(("bearer" = ["manage"])), params(ListQuery),
    responses((status = 200, body = Vec<GroupInfo>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Authorized<Manage>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<GroupInfo>>, ApiError> {
    let actor = Actor::of(&state.store, &auth).await?;
    Ok(Json(
        groups::list(&state.store, &actor.viewer, query.all).await?,
    ))
}

#[utoipa::path(get, path = "/v1/groups/{group}", tag = "groups", security(("bearer" = ["manage"])),
    params(("group" = GroupId, Path, description = "group id")),
    responses((status = 200, body = GroupInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    auth: Authorized<Manage>,
    Path(id): Path<GroupId>,
) -> Result<Json<GroupInfo>, ApiError> {
    let actor = Actor::of(&state.store, &auth).await?;
    Ok(Json(groups::show(&state.store, &actor.viewer, id).await?))
}

#[utoipa::path(patch, path = "/v1/groups/{group}", tag = "groups", security(("bearer" = ["manage"])),
    params(("group" = GroupId, Path, description = "group id")), request_body = GroupUpdate,
    responses((status = 200, body = GroupInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the new parent would make a cycle")))]
pub(crate) async fn update(
    State(state): State<AppState>,
    auth: Authorized<Manage>,
    Path(id): Path<GroupId>,
    Json(update): Json<GroupUpdate>,
) -> Result<Json<GroupInfo>, ApiError> {
    let actor = Actor::of(&state.store, &auth).await?;
    Ok(Json(
        groups::update(&state.store, &actor, id, update).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/groups/{group}", tag = "groups", security(("bearer" = ["manage"])),
    params(("group" = GroupId, Path, description = "group id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    auth: Authorized<Manage>,
    Path(id): Path<GroupId>,
) -> Result<StatusCode, ApiError> {
    let actor = Actor::of(&state.store, &auth).await?;
    groups::delete(&state.store, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Membership actions, each applied on its own: the answer says per action
/// whether it succeeded and, if not, why (`failed` counts the failures).
#[utoipa::path(post, path = "/v1/groups/{group}/members", tag = "groups", security(("bearer" = ["manage"])),
    params(("group" = GroupId, Path, description = "group id")), request_body = MembershipBatch,
    responses((status = 200, body = MembershipBatchResult), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn members(
    State(state): State<AppState>,
    auth: Authorized<Manage>,
    Path(id): Path<GroupId>,
    Json(batch): Json<MembershipBatch>,
) -> Result<Json<MembershipBatchResult>, ApiError> {
    let actor = Actor::of(&state.store, &auth).await?;
    Ok(Json(
        groups::apply_batch(&state, &actor, id, batch.actions).await?,
    ))
}

#[utoipa::path(get, path = "/v1/groups/{group}/audit", tag = "groups", security(("bearer" = ["manage"])),
    params(("group" = GroupId, Path, description = "group id"), AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    auth: Authorized<Manage>,
    Path(id): Path<GroupId>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let actor = Actor::of(&state.store, &auth).await?;
    Ok(Json(
        groups::audit_trail(&state.store, &actor, id, query.after, query.limit()).await?,
    ))
}
