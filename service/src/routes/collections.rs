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
use lattice_protocol::ErrorBody;

use crate::auth::{Authorized, MaybeAuthorized, Transfer};
use crate::error::{ApiError, Json, Path};
use crate::sharing::{access, Viewer};
use crate::state::AppState;
use crate::transfers::files;

/// Deepest listing one request may ask for.
const MAX_DEPTH: u32 = 64;
/// Most entries one listing returns.
const MAX_ENTRIES: u32 = 100_000;

/// The viewer of a request that may be anonymous.
async fn viewer_of(state: &AppState, auth: &MaybeAuthorized<Transfer>) -> Result<Viewer, ApiError> {
    match &auth.0 {
        Some(caller) => Ok(Viewer::of(&state.store, caller.identity_id).await?),
        None => Ok(Viewer::anonymous()),
    }
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
            out.push(crate::transfers::collection_info(&state, record).await?);
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
    let record = access::usable_collection(&state.store, &viewer, &collection).await?;
    Ok(Json(
        crate::transfers::collection_info(&state, record).await?,
    ))
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
    let record = access::usable_collection(&state.store, &actor.viewer, &collection).await?;
    crate::sharing::guests::delete(&state.store, &actor, &record).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// [`files::checked`] for an authenticated caller: the outcome alone.
async fn run_for(
    state: &AppState,
    auth: &Authorized<Transfer>,
    collection: &str,
    op: FileOp,
) -> Result<FileOpOutcome, ApiError> {
    let viewer = Viewer::of(&state.store, auth.identity_id).await?;
    let (_, outcome) = files::checked(state, &viewer, collection, op).await?;
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
    let (record, outcome) = files::checked(
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
    let (_, outcome) = files::checked(
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
