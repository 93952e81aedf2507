use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use lattice_protocol::api::{ClientCreateRequest, ClientCreated, ClientInfo, Identity};
use lattice_protocol::{ClientId, ErrorBody, IdentityId};

use crate::auth::{hash_secret, new_secret, Authorized, Manage};
use crate::error::{ApiError, Json, Path};
use crate::state::AppState;
use crate::store::ClientRecord;

fn info(record: ClientRecord) -> ClientInfo {
    ClientInfo {
        client_id: record.id,
        name: record.name,
        identity_id: record.identity_id,
        owner_id: record.owner_id,
        scopes: record.scopes,
        created_at: record.created_at,
    }
}

/// Register a client application for automation. The secret is returned
/// once and stored only as a hash.
#[utoipa::path(post, path = "/v1/clients", tag = "clients", security(("bearer" = ["manage"])),
    request_body = ClientCreateRequest,
    responses((status = 201, body = ClientCreated), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    auth: Authorized<Manage>,
    Json(request): Json<ClientCreateRequest>,
) -> Result<(StatusCode, Json<ClientCreated>), ApiError> {
    let name = request.name.trim();
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name: must be 1-200 characters without control characters",
        ));
    }
    let scopes = request.scopes.unwrap_or_else(|| auth.scopes.clone());
    if let Some(extra) = scopes.iter().find(|s| !auth.has_scope(**s)) {
        return Err(ApiError::forbidden(format!(
            "scopes: a client cannot get the `{extra}` scope your token lacks"
        )));
    }
    let id = ClientId::new();
    let identity = Identity {
        id: IdentityId::new(),
        username: format!("{id}@clients.lattice"),
        display_name: Some(name.to_owned()),
        email: None,
        identity_provider: "client".into(),
        subject: id.to_string(),
        created_at: Utc::now(),
    };
    state.store.insert_identity(&identity).await?;
    let secret = new_secret("lat_cs_");
    let record = ClientRecord {
        id,
        name: name.to_owned(),
        secret_hash: hash_secret(&secret),
        identity_id: identity.id,
        owner_id: auth.identity_id,
        scopes,
        created_at: Utc::now(),
    };
    state.store.insert_client(&record).await?;
    tracing::info!(client_id = %id, owner_id = %auth.identity_id, "client created");
    Ok((
        StatusCode::CREATED,
        Json(ClientCreated {
            client: info(record),
            client_secret: secret,
        }),
    ))
}

/// Clients the caller owns.
#[utoipa::path(get, path = "/v1/clients", tag = "clients", security(("bearer" = ["manage"])),
    responses((status = 200, body = Vec<ClientInfo>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Authorized<Manage>,
) -> Result<Json<Vec<ClientInfo>>, ApiError> {
    let clients = state.store.clients_owned_by(auth.identity_id).await?;
    Ok(Json(clients.into_iter().map(info).collect()))
}

/// The caller's client `id`; someone else's is as unknown as a missing one.
async fn owned_client(
    state: &AppState,
    auth: &Authorized<Manage>,
    id: ClientId,
) -> Result<ClientRecord, ApiError> {
    match state.store.client(id).await? {
        Some(client) if client.owner_id == auth.identity_id => Ok(client),
        _ => Err(ApiError::not_found(format!("no client {id} of yours"))),
    }
}

/// Delete a client: its secret stops working and every token issued to it
/// is revoked at once. Its identity stays as the owner of what it submitted.
#[utoipa::path(delete, path = "/v1/clients/{id}", tag = "clients", security(("bearer" = ["manage"])),
    params(("id" = ClientId, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    auth: Authorized<Manage>,
    Path(id): Path<ClientId>,
) -> Result<StatusCode, ApiError> {
    owned_client(&state, &auth, id).await?;
    if !state.store.delete_client(id, Utc::now()).await? {
        return Err(ApiError::not_found(format!("no client {id} of yours")));
    }
    tracing::info!(client_id = %id, owner_id = %auth.identity_id, "client deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Give a client a new secret (returned once): the old secret stops working
/// and every token issued to the client is revoked.
#[utoipa::path(post, path = "/v1/clients/{id}/secret", tag = "clients", security(("bearer" = ["manage"])),
    params(("id" = ClientId, Path)),
    responses((status = 200, body = ClientCreated), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    auth: Authorized<Manage>,
    Path(id): Path<ClientId>,
) -> Result<Json<ClientCreated>, ApiError> {
    let mut client = owned_client(&state, &auth, id).await?;
    let secret = new_secret("lat_cs_");
    client.secret_hash = hash_secret(&secret);
    if !state
        .store
        .replace_client_secret(id, &client.secret_hash, Utc::now())
        .await?
    {
        return Err(ApiError::not_found(format!("no client {id} of yours")));
    }
    tracing::info!(client_id = %id, owner_id = %auth.identity_id, "client secret rotated");
    Ok(Json(ClientCreated {
        client: info(client),
        client_secret: secret,
    }))
}
