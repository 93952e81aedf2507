//! `/v1/collections`: the collections agents host, and file operations in
//! them (relayed to the hosting agent, which resolves every path beneath the
//! collection root). Every operation is checked first by
//! `crate::sharing::access::check` (owner, or an access rule); listing and
//! stat also serve anonymous callers where a rule grants `public`.

use axum::extract::State;
use lattice_protocol::transfer::{
    CollectionInfo, DeleteRequest, DeleteSummary, FileEntry, FileOp, FileOpOutcome, ListRequest,
    ListResponse, MkdirRequest, RenameRequest, StatRequest,
};
use lattice_protocol::{CollectionId, ErrorBody};

use crate::auth::{Authorized, MaybeAuthorized, Transfer};
use crate::error::{ApiError, Json, Path};
use crate::sharing::{access, Viewer};
use crate::state::AppState;
use crate::store::CollectionRecord;
use lattice_protocol::sharing::Permissions;

/// Deepest listing one request may ask for.
const MAX_DEPTH: u32 = 64;
/// Most entries one listing returns.
const MAX_ENTRIES: u32 = 100_000;

/// Loads a collection the viewer may know of, by id or by name (the
/// viewer's own names first, then the names of collections shared with
/// it, when one matches): 404 if unknown or withdrawn, 403 if it is
/// someone else's and not shared with the viewer.
pub(crate) async fn usable_collection(
    state: &AppState,
    viewer: &Viewer,
    given: &str,
) -> Result<CollectionRecord, ApiError> {
    let not_found = || {
        ApiError::not_found(format!(
            "collection `{given}` does not exist (list yours with `lattice collection list`)"
        ))
    };
    let record =
        match given.parse::<CollectionId>() {
            Ok(id) => state.store.collection(id).await?,
            Err(_) => match viewer.identity {
                Some(me) => match state.store.collection_by_name(me, given).await? {
                    Some(own) if own.withdrawn_at.is_none() => Some(own),
                    _ => {
                        let shared: Vec<_> = state
                            .store
                            .collections_shared_with(&viewer.principals())
                            .await?
                            .into_iter()
                            .filter(|c| c.name == given)
                            .collect();
                        if shared.len() > 1 {
                            return Err(ApiError::bad_request(format!(
                            "{} collections named `{given}` are shared with you; use an id ({})",
                            shared.len(),
                            shared.iter().map(|c| c.id.to_string()).collect::<Vec<_>>().join(", ")
                        )));
                        }
                        shared.into_iter().next()
                    }
                },
                None => None,
            },
        };
    let record = record
        .filter(|c| c.withdrawn_at.is_none())
        .ok_or_else(not_found)?;
    if !access::can_see(&state.store, viewer, &record).await? {
        if !viewer.is_authenticated() {
            return Err(ApiError::unauthorized(format!(
                "collection `{given}` is not shared publicly: send a token (`lattice login`)"
            )));
        }
        return Err(ApiError::forbidden(format!(
            "collection `{given}` belongs to another identity and is not shared with you"
        )));
    }
    Ok(record)
}

/// The viewer of a request that may be anonymous.
async fn viewer_of(state: &AppState, auth: &MaybeAuthorized<Transfer>) -> Result<Viewer, ApiError> {
    match &auth.0 {
        Some(caller) => Ok(Viewer::of(&state.store, caller.identity_id).await?),
        None => Ok(Viewer::anonymous()),
    }
}

pub(crate) async fn info(
    state: &AppState,
    record: CollectionRecord,
) -> Result<CollectionInfo, ApiError> {
    let endpoint_name = state
        .store
        .endpoint(record.endpoint_id)
        .await?
        .map(|e| e.name)
        .unwrap_or_default();
    let owner_username = state
        .store
        .identity(record.owner_id)
        .await?
        .map(|i| i.username)
        .unwrap_or_default();
    Ok(CollectionInfo {
        id: record.id,
        online: state.agents.connected(record.endpoint_id),
        name: record.name,
        owner_id: record.owner_id,
        owner_username,
        endpoint_id: record.endpoint_id,
        endpoint_name,
        root: record.root,
        created_at: record.created_at,
        announced_at: record.announced_at,
        host_collection_id: record.guest_of.as_ref().map(|g| g.host),
        host_path: record.guest_of.map(|g| g.path),
    })
}

#[utoipa::path(get, path = "/v1/collections", tag = "collections", security(("bearer" = ["transfer"])),
    responses((status = 200, body = Vec<CollectionInfo>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
) -> Result<Json<Vec<CollectionInfo>>, ApiError> {
    let viewer = Viewer::of(&state.store, auth.identity_id).await?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let own = state.store.collections_owned_by(auth.identity_id).await?;
    let shared = state
        .store
        .collections_shared_with(&viewer.principals())
        .await?;
    for record in own.into_iter().chain(shared) {
        if seen.insert(record.id) && access::can_see(&state.store, &viewer, &record).await? {
            out.push(info(&state, record).await?);
        }
    }
    Ok(Json(out))
}

#[utoipa::path(get, path = "/v1/collections/{collection}", tag = "collections", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name")),
    responses((status = 200, body = CollectionInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(collection): Path<String>,
) -> Result<Json<CollectionInfo>, ApiError> {
    let viewer = Viewer::of(&state.store, auth.identity_id).await?;
    let record = usable_collection(&state, &viewer, &collection).await?;
    Ok(Json(info(&state, record).await?))
}

/// Delete a guest collection (its creator or administrators); collections
/// hosted by agents are removed from the agent's configuration instead.
#[utoipa::path(delete, path = "/v1/collections/{collection}", tag = "collections", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_guest(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(collection): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    let actor = crate::sharing::Actor::of(&state.store, &auth).await?;
    let record = usable_collection(&state, &actor.viewer, &collection).await?;
    crate::sharing::guests::delete(&state.store, &actor, &record).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Checks the viewer's access for `op`, then relays it to the agent.
async fn run(
    state: &AppState,
    viewer: &Viewer,
    collection: &str,
    op: FileOp,
) -> Result<(CollectionRecord, FileOpOutcome), ApiError> {
    let record = usable_collection(state, viewer, collection).await?;
    let needs: Vec<(&str, Permissions)> = match &op {
        FileOp::List { path, .. } | FileOp::Stat { path } => vec![(path, Permissions::Read)],
        FileOp::Mkdir { path, .. } | FileOp::Delete { path, .. } => {
            vec![(path, Permissions::ReadWrite)]
        }
        FileOp::Rename { from, to } => {
            vec![(from, Permissions::ReadWrite), (to, Permissions::ReadWrite)]
        }
    };
    for (path, need) in needs {
        access::check(&state.store, viewer, &record, path, need).await?;
    }
    let outcome = crate::transfers::file_op(state, &record, op).await?;
    Ok((record, outcome))
}

/// [`run`] for an authenticated caller: the outcome alone.
async fn run_for(
    state: &AppState,
    auth: &Authorized<Transfer>,
    collection: &str,
    op: FileOp,
) -> Result<FileOpOutcome, ApiError> {
    let viewer = Viewer::of(&state.store, auth.identity_id).await?;
    let (_, outcome) = run(state, &viewer, collection, op).await?;
    Ok(outcome)
}

fn one_entry(outcome: FileOpOutcome) -> Result<FileEntry, ApiError> {
    match outcome {
        FileOpOutcome::Entry { entry } => Ok(entry),
        other => Err(ApiError::internal(format!(
            "agent answered with {other:?} where an entry was expected"
        ))),
    }
}

/// List a directory (a file lists as itself), down to `depth` levels.
#[utoipa::path(post, path = "/v1/collections/{collection}/ls", tag = "collections", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name")), request_body = ListRequest,
    responses((status = 200, body = ListResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the hosting agent is offline")))]
pub(crate) async fn ls(
    State(state): State<AppState>,
    auth: MaybeAuthorized<Transfer>,
    Path(collection): Path<String>,
    Json(request): Json<ListRequest>,
) -> Result<Json<ListResponse>, ApiError> {
    if request.depth == 0 || request.depth > MAX_DEPTH {
        return Err(ApiError::bad_request(format!(
            "depth: use 1 to {MAX_DEPTH}"
        )));
    }
    let max_entries = request
        .max_entries
        .unwrap_or(MAX_ENTRIES)
        .clamp(1, MAX_ENTRIES);
    let viewer = viewer_of(&state, &auth).await?;
    let (record, outcome) = run(
        &state,
        &viewer,
        &collection,
        FileOp::List {
            path: request.path.clone(),
            depth: request.depth,
            max_entries,
        },
    )
    .await?;
    match outcome {
        FileOpOutcome::Entries { entries } => Ok(Json(ListResponse {
            collection: record.name,
            path: request.path,
            entries,
        })),
        other => Err(ApiError::internal(format!(
            "agent answered a listing with {other:?}"
        ))),
    }
}

#[utoipa::path(post, path = "/v1/collections/{collection}/stat", tag = "collections", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name")), request_body = StatRequest,
    responses((status = 200, body = FileEntry), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn stat(
    State(state): State<AppState>,
    auth: MaybeAuthorized<Transfer>,
    Path(collection): Path<String>,
    Json(request): Json<StatRequest>,
) -> Result<Json<FileEntry>, ApiError> {
    let viewer = viewer_of(&state, &auth).await?;
    let (_, outcome) = run(
        &state,
        &viewer,
        &collection,
        FileOp::Stat { path: request.path },
    )
    .await?;
    Ok(Json(one_entry(outcome)?))
}

#[utoipa::path(post, path = "/v1/collections/{collection}/mkdir", tag = "collections", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name")), request_body = MkdirRequest,
    responses((status = 200, body = FileEntry), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn mkdir(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(collection): Path<String>,
    Json(request): Json<MkdirRequest>,
) -> Result<Json<FileEntry>, ApiError> {
    let op = FileOp::Mkdir {
        path: request.path,
        parents: request.parents,
    };
    let outcome = run_for(&state, &auth, &collection, op).await?;
    Ok(Json(one_entry(outcome)?))
}

#[utoipa::path(post, path = "/v1/collections/{collection}/rename", tag = "collections", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name")), request_body = RenameRequest,
    responses((status = 200, body = FileEntry), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rename(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(collection): Path<String>,
    Json(request): Json<RenameRequest>,
) -> Result<Json<FileEntry>, ApiError> {
    let op = FileOp::Rename {
        from: request.from,
        to: request.to,
    };
    let outcome = run_for(&state, &auth, &collection, op).await?;
    Ok(Json(one_entry(outcome)?))
}

#[utoipa::path(post, path = "/v1/collections/{collection}/delete", tag = "collections", security(("bearer" = ["transfer"])),
    params(("collection" = String, Path, description = "collection id or name")), request_body = DeleteRequest,
    responses((status = 200, body = DeleteSummary), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(collection): Path<String>,
    Json(request): Json<DeleteRequest>,
) -> Result<Json<DeleteSummary>, ApiError> {
    let op = FileOp::Delete {
        path: request.path,
        recursive: request.recursive,
    };
    let outcome = run_for(&state, &auth, &collection, op).await?;
    match outcome {
        FileOpOutcome::Deleted { summary } => Ok(Json(summary)),
        other => Err(ApiError::internal(format!(
            "agent answered a delete with {other:?}"
        ))),
    }
}
