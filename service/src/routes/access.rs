//! `/v1/collections/{c}/acl`, `/roles`, `/guests`, `/sharing` and
//! `/audit`: access rules, roles, guest collections and the sharing
//! policy of a collection, and its audit trail. The rules live in
//! `crate::sharing::access`; handlers extract, call, map.

use axum::extract::State;
use axum::http::StatusCode;
use lattice_protocol::sharing::{
    AclRuleCreate, AclRuleInfo, AclRuleUpdate, AuditEntry, GuestCollectionCreate, RoleCreate,
    RoleInfo, SharingPolicy,
};
use lattice_protocol::transfer::CollectionInfo;
use lattice_protocol::{AclRuleId, ErrorBody, RoleId};

use crate::auth::{Authorized, Transfer};
use crate::error::{ApiError, Json, Path, Query};
use crate::routes::AuditQuery;
use crate::sharing::{access, guests, Actor};
use crate::state::AppState;
use crate::store::CollectionRecord;

async fn load(
    state: &AppState,
    auth: &Authorized<Transfer>,
    collection: &str,
) -> Result<(Actor, CollectionRecord), ApiError> {
    let actor = Actor::of(&state.store, auth).await?;
    let record = access::usable_collection(&state.store, &actor.viewer, collection).await?;
    Ok((actor, record))
}

#[utoipa::path(get, path = "/v1/collections/{collection}/acl", tag = "sharing", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name")),
    responses((status = 200, body = Vec<AclRuleInfo>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_rules(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(collection): Path<String>,
) -> Result<Json<Vec<AclRuleInfo>>, ApiError> {
    let (actor, record) = load(&state, &auth, &collection).await?;
    Ok(Json(
        access::list_rules(&state.store, &actor, &record).await?,
    ))
}

/// Grant a principal `r` or `rw` under a path of the collection.
#[utoipa::path(post, path = "/v1/collections/{collection}/acl", tag = "sharing", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name")), request_body = AclRuleCreate,
    responses((status = 201, body = AclRuleInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the collection has the most rules allowed")))]
pub(crate) async fn create_rule(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(collection): Path<String>,
    Json(request): Json<AclRuleCreate>,
) -> Result<(StatusCode, Json<AclRuleInfo>), ApiError> {
    let (actor, record) = load(&state, &auth, &collection).await?;
    let rule = access::create_rule(&state, &actor, &record, request).await?;
    Ok((StatusCode::CREATED, Json(rule)))
}

#[utoipa::path(get, path = "/v1/collections/{collection}/acl/{rule}", tag = "sharing", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name"), ("rule" = AclRuleId, Path)),
    responses((status = 200, body = AclRuleInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn show_rule(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path((collection, rule)): Path<(String, AclRuleId)>,
) -> Result<Json<AclRuleInfo>, ApiError> {
    let (actor, record) = load(&state, &auth, &collection).await?;
    Ok(Json(
        access::show_rule(&state.store, &actor, &record, rule).await?,
    ))
}

#[utoipa::path(patch, path = "/v1/collections/{collection}/acl/{rule}", tag = "sharing", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name"), ("rule" = AclRuleId, Path)), request_body = AclRuleUpdate,
    responses((status = 200, body = AclRuleInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn update_rule(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path((collection, rule)): Path<(String, AclRuleId)>,
    Json(update): Json<AclRuleUpdate>,
) -> Result<Json<AclRuleInfo>, ApiError> {
    let (actor, record) = load(&state, &auth, &collection).await?;
    Ok(Json(
        access::update_rule(&state.store, &actor, &record, rule, update).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/collections/{collection}/acl/{rule}", tag = "sharing", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name"), ("rule" = AclRuleId, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_rule(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path((collection, rule)): Path<(String, AclRuleId)>,
) -> Result<StatusCode, ApiError> {
    let (actor, record) = load(&state, &auth, &collection).await?;
    access::delete_rule(&state.store, &actor, &record, rule).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/collections/{collection}/roles", tag = "sharing", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name")),
    responses((status = 200, body = Vec<RoleInfo>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_roles(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(collection): Path<String>,
) -> Result<Json<Vec<RoleInfo>>, ApiError> {
    let (actor, record) = load(&state, &auth, &collection).await?;
    Ok(Json(
        access::list_roles(&state.store, &actor, &record).await?,
    ))
}

#[utoipa::path(post, path = "/v1/collections/{collection}/roles", tag = "sharing", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name")), request_body = RoleCreate,
    responses((status = 201, body = RoleInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the principal already holds the role")))]
pub(crate) async fn create_role(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(collection): Path<String>,
    Json(request): Json<RoleCreate>,
) -> Result<(StatusCode, Json<RoleInfo>), ApiError> {
    let (actor, record) = load(&state, &auth, &collection).await?;
    let role = access::create_role(&state.store, &actor, &record, request).await?;
    Ok((StatusCode::CREATED, Json(role)))
}

#[utoipa::path(delete, path = "/v1/collections/{collection}/roles/{role}", tag = "sharing", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name"), ("role" = RoleId, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_role(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path((collection, role)): Path<(String, RoleId)>,
) -> Result<StatusCode, ApiError> {
    let (actor, record) = load(&state, &auth, &collection).await?;
    access::delete_role(&state.store, &actor, &record, role).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every change to the collection's rules and roles: who, when, what, and
/// from which client.
#[utoipa::path(get, path = "/v1/collections/{collection}/audit", tag = "sharing", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name"), AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(collection): Path<String>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let (actor, record) = load(&state, &auth, &collection).await?;
    Ok(Json(
        access::audit_trail(&state.store, &actor, &record, query.after, query.limit()).await?,
    ))
}

/// Create a guest collection rooted at a directory of this one; it is
/// yours, and reaches files with your access here.
#[utoipa::path(post, path = "/v1/collections/{collection}/guests", tag = "sharing", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "host collection id or name")), request_body = GuestCollectionCreate,
    responses((status = 201, body = CollectionInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "you already have a collection of that name")))]
pub(crate) async fn create_guest(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(collection): Path<String>,
    Json(request): Json<GuestCollectionCreate>,
) -> Result<(StatusCode, Json<CollectionInfo>), ApiError> {
    let (actor, host) = load(&state, &auth, &collection).await?;
    let guest = guests::create(&state.store, &actor, &host, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(crate::transfers::collection_info(&state, guest).await?),
    ))
}

/// What guest collections may share of this collection.
#[utoipa::path(get, path = "/v1/collections/{collection}/sharing", tag = "sharing", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name")),
    responses((status = 200, body = SharingPolicy), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn sharing_policy(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(collection): Path<String>,
) -> Result<Json<SharingPolicy>, ApiError> {
    let (_, record) = load(&state, &auth, &collection).await?;
    Ok(Json(guests::policy(&record)))
}

/// Replace the sharing policy (owner and administrators).
#[utoipa::path(put, path = "/v1/collections/{collection}/sharing", tag = "sharing", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name")), request_body = SharingPolicy,
    responses((status = 200, body = SharingPolicy), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn set_sharing_policy(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(collection): Path<String>,
    Json(policy): Json<SharingPolicy>,
) -> Result<Json<SharingPolicy>, ApiError> {
    let (actor, record) = load(&state, &auth, &collection).await?;
    Ok(Json(
        guests::set_policy(&state.store, &actor, &record, policy).await?,
    ))
}
