//! Endpoints: registration (a name checked by `protocol::names`, an agent
//! secret stored as a hash), what the API shows of one (online, load,
//! blocks; a multi-user endpoint's children to its owner only), why a task
//! waits on its endpoint, and who may use an endpoint: for tasks, its owner
//! or anyone if it is multi-user.
//!
//! It must not know HTTP, and does not talk to agents: the [`relay`]
//! records what they report.
//!
//! [`relay`]: super::relay

use chrono::{Duration, Utc};
use lattice_protocol::compute::{EndpointInfo, EndpointStatus};
use lattice_protocol::{EndpointId, IdentityId};

use super::{ComputeError, ComputeResult};
use crate::auth::{hash_secret, new_secret, Caller};
use crate::sharing::grants::{self, Resource};
use crate::sharing::Viewer;
use crate::state::AppState;
use crate::store::EndpointRecord;

/// An agent that has not sent anything for this long is shown offline
/// (it heartbeats every few seconds).
pub(crate) const OFFLINE_AFTER_SECS: i64 = 20;

/// What the API shows of an endpoint (its owner's view).
pub(crate) async fn info(state: &AppState, record: EndpointRecord) -> ComputeResult<EndpointInfo> {
    info_for(state, record, None).await
}

/// [`info`] as `viewer` may see it: a multi-user endpoint's children (local
/// accounts, processes) are shown to its owner only.
pub(crate) async fn info_for(
    state: &AppState,
    record: EndpointRecord,
    viewer: Option<IdentityId>,
) -> ComputeResult<EndpointInfo> {
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

/// Loads an endpoint the caller may send tasks to: their own, or any
/// multi-user endpoint (its agent's policy and identity mapping decide who
/// runs there). Not found if unknown, forbidden otherwise.
pub(crate) async fn task_endpoint(
    state: &AppState,
    caller: &Caller,
    id: EndpointId,
) -> ComputeResult<EndpointRecord> {
    let endpoint = state
        .store
        .endpoint(id)
        .await?
        .ok_or_else(|| ComputeError::NotFound(format!("endpoint {id} does not exist")))?;
    if endpoint.owner_id == caller.identity_id {
        return Ok(endpoint);
    }
    // Someone else's: a grant lets them submit; a multi-user endpoint
    // without grants takes tasks from anyone (its agent maps identities
    // to accounts and applies its own policy), one with grants from its
    // grantees only.
    let resource = Resource::Endpoint(id);
    let viewer = Viewer::of(&state.store, caller.identity_id).await?;
    if viewer.is(endpoint.owner_id) || grants::allows(&state.store, &viewer, resource).await? {
        return Ok(endpoint);
    }
    if endpoint.multi_user && !grants::restricted(&state.store, resource).await? {
        return Ok(endpoint);
    }
    Err(ComputeError::Forbidden(if endpoint.multi_user {
        format!("multi-user endpoint {id} takes tasks only from the identities and groups it is shared with")
    } else {
        format!("endpoint {id} belongs to another identity and is not shared with you; you may not use it")
    }))
}

/// Creates an endpoint record named `name` for `owner` and returns it with
/// its new agent secret. A name the owner already uses gets a new secret
/// instead (the old one stops working). `POST /v1/endpoints` and `lattice
/// dev` (its `local` endpoint) both register through here.
pub async fn create_endpoint(
    state: &AppState,
    owner: IdentityId,
    name: &str,
) -> ComputeResult<(EndpointRecord, String)> {
    let name = name.trim();
    lattice_protocol::names::EndpointName::parse(name)
        .map_err(|e| ComputeError::Invalid(format!("name: {e}")))?;
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
            .ok_or_else(|| ComputeError::Internal("endpoint vanished".into()))?;
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

/// The caller's endpoints, as the API shows them.
pub(crate) async fn owned_by(
    state: &AppState,
    caller: &Caller,
) -> ComputeResult<Vec<EndpointInfo>> {
    let mut out = Vec::new();
    for record in state.store.endpoints_owned_by(caller.identity_id).await? {
        out.push(info(state, record).await?);
    }
    Ok(out)
}

/// An endpoint the caller may send tasks to, as the caller may see it.
pub(crate) async fn show(
    state: &AppState,
    caller: &Caller,
    id: EndpointId,
) -> ComputeResult<EndpointInfo> {
    let record = task_endpoint(state, caller, id).await?;
    info_for(state, record, Some(caller.identity_id)).await
}

/// The endpoint whose agent secret this is, if any (`secret` as the agent
/// presents it). The relay authenticates agents by it; `lattice dev` checks
/// whether its saved credential still works.
pub async fn endpoint_by_agent_secret(
    state: &AppState,
    secret: &str,
) -> ComputeResult<Option<EndpointRecord>> {
    Ok(state.store.endpoint_by_secret(&hash_secret(secret)).await?)
}
