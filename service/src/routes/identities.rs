use axum::extract::State;
use lattice_protocol::api::{Identity, LinkIdentityRequest, WhoAmI};
use lattice_protocol::{ErrorBody, IdentityId};

use crate::auth::{authenticate, AnyScope, Authorized, Manage};
use crate::error::{ApiError, Json, Path, Query};
use crate::state::AppState;

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub(crate) struct LookupQuery {
    /// A username or an email address (exact; email case-insensitive).
    name: String,
}

/// Identities by username or email, for naming people in grants.
#[utoipa::path(get, path = "/v1/identities", tag = "identities", security(("bearer" = [])), params(LookupQuery),
    responses((status = 200, body = Vec<Identity>), (status = 400, body = ErrorBody)))]
pub(crate) async fn lookup(
    State(state): State<AppState>,
    _auth: Authorized<AnyScope>,
    Query(query): Query<LookupQuery>,
) -> Result<Json<Vec<Identity>>, ApiError> {
    let name = query.name.trim();
    if name.is_empty() || name.len() > 254 {
        return Err(ApiError::bad_request("name: give a username or an email"));
    }
    let mut out = Vec::new();
    for id in state.store.identities_named(name).await? {
        if let Some(identity) = state.store.identity(id).await? {
            out.push(identity);
        }
    }
    Ok(Json(out))
}

/// Public profile of an identity.
#[utoipa::path(get, path = "/v1/identities/{id}", tag = "identities", security(("bearer" = [])),
    params(("id" = IdentityId, Path, description = "identity id")),
    responses((status = 200, body = Identity), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    _auth: Authorized<AnyScope>,
    Path(id): Path<IdentityId>,
) -> Result<Json<Identity>, ApiError> {
    state
        .store
        .identity(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("identity {id} does not exist")))
}

/// Link another identity of the same person (proved by a token of it) to the caller's.
#[utoipa::path(post, path = "/v1/identities/link", tag = "identities", security(("bearer" = ["manage"])),
    request_body = LinkIdentityRequest,
    responses((status = 200, body = WhoAmI), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn link(
    State(state): State<AppState>,
    auth: Authorized<Manage>,
    Json(request): Json<LinkIdentityRequest>,
) -> Result<Json<WhoAmI>, ApiError> {
    let other = authenticate(&state, &request.other_token)
        .await
        .map_err(|e| ApiError::bad_request(format!("other_token: {}", e.message)))?;
    let primary = state.store.primary_identity(auth.identity_id).await?;
    let other_primary = state.store.primary_identity(other.identity_id).await?;
    if other_primary != primary {
        state.store.link_identity(other_primary, primary).await?;
    }
    let identity = state
        .store
        .identity(auth.identity_id)
        .await?
        .ok_or_else(|| ApiError::internal("token refers to a missing identity"))?;
    let linked_identities = state
        .store
        .linked_identities(primary)
        .await?
        .into_iter()
        .filter(|i| i.id != identity.id)
        .collect();
    Ok(Json(WhoAmI {
        identity,
        linked_identities,
        scopes: auth.scopes.clone(),
        token_expires_at: auth.expires_at,
    }))
}
