use axum::extract::State;
use axum::http::StatusCode;
use chrono::{Duration, Utc};
use lattice_protocol::compute::{
    EndpointInfo, EndpointRegister, EndpointRegistered, EndpointStatus,
};
use lattice_protocol::{EndpointId, ErrorBody};

use crate::auth::{hash_secret, new_secret, Authorized, Caller, Compute};
use crate::error::{ApiError, Json, Path};
use crate::state::AppState;
use crate::store::EndpointRecord;

/// An agent that has not sent anything for this long is shown offline
/// (it heartbeats every few seconds).
pub const OFFLINE_AFTER_SECS: i64 = 20;

pub async fn info(state: &AppState, record: EndpointRecord) -> Result<EndpointInfo, ApiError> {
    info_for(state, record, None).await
}

/// [`info`] as `viewer` may see it: a multi-user endpoint's children (local
/// accounts, processes) are shown to its owner only.
pub async fn info_for(
    state: &AppState,
    record: EndpointRecord,
    viewer: Option<lattice_protocol::IdentityId>,
) -> Result<EndpointInfo, ApiError> {
    let owner_view = viewer.is_none_or(|v| v == record.owner_id);
    let online = is_online(&record);
    let waiting_tasks = state.store.waiting_tasks(record.id).await?;
    Ok(EndpointInfo {
        id: record.id,
        name: record.name,
        owner_id: record.owner_id,
        status: if online {
            EndpointStatus::Online
        } else {
            EndpointStatus::Offline
        },
        created_at: record.created_at,
        last_seen: record.last_seen,
        agent_version: record.agent_version,
        hostname: record.hostname,
        workers: if online { record.workers } else { 0 },
        idle_slots: if online { record.idle_slots } else { 0 },
        agent_queue_depth: if online { record.queue_depth } else { 0 },
        waiting_tasks,
        blocks: if online && owner_view {
            record.blocks
        } else {
            Vec::new()
        },
        provider_error: if owner_view {
            record.provider_error
        } else {
            None
        },
        provider: record.provider,
        multi_user: record.multi_user,
        children: if online && owner_view {
            record.children
        } else {
            Vec::new()
        },
    })
}

/// Connected, and heard from within [`OFFLINE_AFTER_SECS`].
pub(crate) fn is_online(record: &EndpointRecord) -> bool {
    record.connected_at.is_some()
        && record
            .last_seen
            .is_some_and(|seen| Utc::now() - seen < Duration::seconds(OFFLINE_AFTER_SECS))
}

/// Why a task for this endpoint waits, if the endpoint is the reason: it
/// is offline (since when), or its provider cannot start workers.
pub(crate) fn waiting_reason(record: &EndpointRecord) -> Option<String> {
    let name = &record.name;
    if !is_online(record) {
        return Some(match record.last_seen {
            Some(seen) => format!(
                "endpoint `{name}` is offline (last seen {}); the task waits and runs when its agent reconnects",
                seen.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => format!(
                "endpoint `{name}` has never connected; the task waits and runs once its agent starts (`lattice agent --name {name}`)"
            ),
        });
    }
    record.provider_error.as_ref().map(|error| {
        format!(
            "endpoint `{name}` cannot start workers: {error}; the task waits until it can (fix the endpoint's [provider] config and restart it)"
        )
    })
}

/// Loads an endpoint the caller may use: 404 if unknown, 403 if not theirs.
pub async fn usable_endpoint(
    state: &AppState,
    caller: &Caller,
    id: EndpointId,
) -> Result<EndpointRecord, ApiError> {
    let endpoint = state
        .store
        .endpoint(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("endpoint {id} does not exist")))?;
    if endpoint.owner_id != caller.identity_id {
        return Err(ApiError::forbidden(format!(
            "endpoint {id} belongs to another identity; you may not use it"
        )));
    }
    Ok(endpoint)
}

/// Loads an endpoint the caller may send tasks to: their own, or any
/// multi-user endpoint (its agent's policy and identity mapping decide who
/// runs there). 404 if unknown, 403 otherwise.
pub async fn task_endpoint(
    state: &AppState,
    caller: &Caller,
    id: EndpointId,
) -> Result<EndpointRecord, ApiError> {
    let endpoint = state
        .store
        .endpoint(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("endpoint {id} does not exist")))?;
    if endpoint.owner_id != caller.identity_id && !endpoint.multi_user {
        return Err(ApiError::forbidden(format!(
            "endpoint {id} belongs to another identity and is not a multi-user endpoint; you may not use it"
        )));
    }
    Ok(endpoint)
}

/// Creates an endpoint record and its agent secret (also used by `lattice dev`).
pub async fn create_endpoint(
    state: &AppState,
    owner: lattice_protocol::IdentityId,
    name: &str,
) -> Result<(EndpointRecord, String), ApiError> {
    let name = name.trim();
    lattice_protocol::names::EndpointName::parse(name)
        .map_err(|e| ApiError::bad_request(format!("name: {e}")))?;
    let secret = new_secret("lat_ep_");
    if let Some(existing) = state.store.endpoint_by_name(owner, name).await? {
        state
            .store
            .rotate_endpoint_secret(existing.id, &hash_secret(&secret))
            .await?;
        tracing::info!(endpoint_id = %existing.id, "endpoint re-registered; agent secret rotated");
        let record = state
            .store
            .endpoint(existing.id)
            .await?
            .ok_or_else(|| ApiError::internal("endpoint vanished"))?;
        return Ok((record, secret));
    }
    let record = EndpointRecord {
        id: EndpointId::new(),
        owner_id: owner,
        name: name.to_owned(),
        secret_hash: hash_secret(&secret),
        created_at: Utc::now(),
        connected_at: None,
        last_seen: None,
        agent_version: None,
        hostname: None,
        workers: 0,
        idle_slots: 0,
        queue_depth: 0,
        blocks: Vec::new(),
        provider_error: None,
        provider: None,
        multi_user: false,
        children: Vec::new(),
    };
    state.store.insert_endpoint(&record).await?;
    tracing::info!(endpoint_id = %record.id, name, "endpoint registered");
    Ok((record, secret))
}

/// Register an endpoint (done by `lattice agent` on first start). Registering
/// a name the caller already uses returns that endpoint with a new agent
/// secret (the old one stops working).
#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints", security(("bearer" = ["compute"])),
    request_body = EndpointRegister,
    responses((status = 201, body = EndpointRegistered), (status = 400, body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Json(request): Json<EndpointRegister>,
) -> Result<(StatusCode, Json<EndpointRegistered>), ApiError> {
    let (record, agent_secret) = create_endpoint(&state, auth.identity_id, &request.name).await?;
    let endpoint = info(&state, record).await?;
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
pub async fn list(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
) -> Result<Json<Vec<EndpointInfo>>, ApiError> {
    let mut out = Vec::new();
    for record in state.store.endpoints_owned_by(auth.identity_id).await? {
        out.push(info(&state, record).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints", security(("bearer" = ["compute"])),
    params(("id" = EndpointId, Path)),
    responses((status = 200, body = EndpointInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<EndpointId>,
) -> Result<Json<EndpointInfo>, ApiError> {
    let record = task_endpoint(&state, &auth, id).await?;
    Ok(Json(
        info_for(&state, record, Some(auth.identity_id)).await?,
    ))
}
