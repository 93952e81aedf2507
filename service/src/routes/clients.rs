use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use lattice_protocol::api::{ClientCreateRequest, ClientCreated, ClientInfo, Identity};
use lattice_protocol::{ClientId, ErrorBody, IdentityId};

use crate::auth::{hash_secret, new_secret, Authorized, Manage};
use crate::error::{ApiError, Json};
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
pub async fn create(
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
pub async fn list(
    State(state): State<AppState>,
    auth: Authorized<Manage>,
) -> Result<Json<Vec<ClientInfo>>, ApiError> {
    let clients = state.store.clients_owned_by(auth.identity_id).await?;
    Ok(Json(clients.into_iter().map(info).collect()))
}
