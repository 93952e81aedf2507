//! `/v1/search/...`: indexes and their roles, ingest and delete tasks,
//! queries, scrolls and subjects. The rules live in `crate::search`;
//! handlers extract, call, map.

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use lattice_protocol::search::{
    DeleteTarget, IndexCreate, IndexInfo, IndexRole, IndexRoleCreate, IndexUpdate, IngestDocument,
    QueryMode, ScrollRequest, ScrollResult, SearchQuery, SearchRequest, SearchTaskInfo,
    SubjectResult, TaskSubmitted, MAX_INGEST_BYTES,
};
use lattice_protocol::{ErrorBody, ErrorCode, SearchIndexId, SearchTaskId};
use serde::Deserialize;

use crate::auth::{AnyScope, Authorized, MaybeAuthorized};
use crate::error::{ApiError, Json, Path, Query};
use crate::search::{indexes, queries, tasks, Asker};
use crate::state::AppState;

async fn asker(state: &AppState, auth: &Authorized<AnyScope>) -> Result<Asker, ApiError> {
    Ok(Asker::of(&state.store, Some(&auth.caller)).await?)
}

async fn maybe_asker(
    state: &AppState,
    auth: &MaybeAuthorized<AnyScope>,
) -> Result<Asker, ApiError> {
    Ok(Asker::of(&state.store, auth.0.as_ref().map(|a| &a.caller)).await?)
}

/// An ingest document of at most `MAX_INGEST_BYTES` (413 past it; 400 for
/// JSON that is not an ingest document).
pub(crate) struct IngestBody(IngestDocument);

impl<S: Send + Sync> FromRequest<S> for IngestBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_INGEST_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "an ingest request is at most {} MiB; split the entries into several requests",
                        MAX_INGEST_BYTES / (1024 * 1024)
                    ),
                )
            })?;
        serde_json::from_slice(&bytes)
            .map(IngestBody)
            .map_err(|e| ApiError::bad_request(format!("invalid ingest document: {e}")))
    }
}

#[utoipa::path(post, path = "/v1/search/indexes", tag = "search", security(("bearer" = [])), request_body = IndexCreate,
    responses((status = 201, body = IndexInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn create_index(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Json(request): Json<IndexCreate>,
) -> Result<(StatusCode, Json<IndexInfo>), ApiError> {
    let asker = asker(&state, &auth).await?;
    let index = indexes::create(&state.store, &state.search, &asker, request).await?;
    Ok((StatusCode::CREATED, Json(index)))
}

/// Indexes on which the caller has a role (deleted ones too, until purged).
#[utoipa::path(get, path = "/v1/search/indexes", tag = "search", security(("bearer" = [])),
    responses((status = 200, body = Vec<IndexInfo>), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_indexes(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
) -> Result<Json<Vec<IndexInfo>>, ApiError> {
    let asker = asker(&state, &auth).await?;
    Ok(Json(
        indexes::list(&state.store, &state.search, &asker).await?,
    ))
}

#[utoipa::path(get, path = "/v1/search/indexes/{index}", tag = "search", security((), ("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id")),
    responses((status = 200, body = IndexInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn show_index(
    State(state): State<AppState>,
    auth: MaybeAuthorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
) -> Result<Json<IndexInfo>, ApiError> {
    let asker = maybe_asker(&state, &auth).await?;
    Ok(Json(
        indexes::show(&state.store, &state.search, &asker, index).await?,
    ))
}

#[utoipa::path(patch, path = "/v1/search/indexes/{index}", tag = "search", security(("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id")), request_body = IndexUpdate,
    responses((status = 200, body = IndexInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn update_index(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
    Json(update): Json<IndexUpdate>,
) -> Result<Json<IndexInfo>, ApiError> {
    let asker = asker(&state, &auth).await?;
    Ok(Json(
        indexes::update(&state.store, &state.search, &asker, index, update).await?,
    ))
}

/// Deletes the index: restorable until `purge_after`, purged after.
#[utoipa::path(delete, path = "/v1/search/indexes/{index}", tag = "search", security(("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id")),
    responses((status = 200, body = IndexInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete_index(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
) -> Result<Json<IndexInfo>, ApiError> {
    let asker = asker(&state, &auth).await?;
    Ok(Json(
        indexes::delete(&state.store, &state.search, &asker, index).await?,
    ))
}

#[utoipa::path(post, path = "/v1/search/indexes/{index}/restore", tag = "search", security(("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id")),
    responses((status = 200, body = IndexInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn restore_index(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
) -> Result<Json<IndexInfo>, ApiError> {
    let asker = asker(&state, &auth).await?;
    Ok(Json(
        indexes::restore(&state.store, &state.search, &asker, index).await?,
    ))
}

#[utoipa::path(get, path = "/v1/search/indexes/{index}/roles", tag = "search", security(("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id")),
    responses((status = 200, body = Vec<IndexRole>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_roles(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
) -> Result<Json<Vec<IndexRole>>, ApiError> {
    let asker = asker(&state, &auth).await?;
    Ok(Json(indexes::roles(&state.store, &asker, index).await?))
}

#[utoipa::path(post, path = "/v1/search/indexes/{index}/roles", tag = "search", security(("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id")), request_body = IndexRoleCreate,
    responses((status = 201, body = IndexRole), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn add_role(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
    Json(request): Json<IndexRoleCreate>,
) -> Result<(StatusCode, Json<IndexRole>), ApiError> {
    let asker = asker(&state, &auth).await?;
    let role = indexes::add_role(&state.store, &asker, index, request).await?;
    Ok((StatusCode::CREATED, Json(role)))
}

#[utoipa::path(delete, path = "/v1/search/indexes/{index}/roles/{role}", tag = "search", security(("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id"), ("role" = uuid::Uuid, Path, description = "role id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete_role(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path((index, role)): Path<(SearchIndexId, uuid::Uuid)>,
) -> Result<StatusCode, ApiError> {
    let asker = asker(&state, &auth).await?;
    indexes::delete_role(&state.store, &asker, index, role).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queues an ingest (one `GMetaEntry` or a `GMetaList`, at most 10 MiB);
/// the task reports every rejected entry.
#[utoipa::path(post, path = "/v1/search/indexes/{index}/ingest", tag = "search", security(("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id")), request_body = IngestDocument,
    responses((status = 202, body = TaskSubmitted), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the index is deleted"),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn ingest(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
    IngestBody(document): IngestBody,
) -> Result<(StatusCode, Json<TaskSubmitted>), ApiError> {
    let asker = asker(&state, &auth).await?;
    let task = tasks::submit_ingest(&state.store, &state.search, &asker, index, document).await?;
    Ok((StatusCode::ACCEPTED, Json(task)))
}

async fn submit_delete(
    state: &AppState,
    auth: &Authorized<AnyScope>,
    index: SearchIndexId,
    target: DeleteTarget,
) -> Result<(StatusCode, Json<TaskSubmitted>), ApiError> {
    let asker = asker(state, auth).await?;
    let task = tasks::submit_delete(&state.store, &state.search, &asker, index, target).await?;
    Ok((StatusCode::ACCEPTED, Json(task)))
}

/// Queues the deletion of every entry matching the query, whatever its visibility.
#[utoipa::path(post, path = "/v1/search/indexes/{index}/delete_by_query", tag = "search", security(("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id")), request_body = SearchQuery,
    responses((status = 202, body = TaskSubmitted), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_by_query(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
    Json(query): Json<SearchQuery>,
) -> Result<(StatusCode, Json<TaskSubmitted>), ApiError> {
    submit_delete(&state, &auth, index, DeleteTarget::Query { query }).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct SubjectsDelete {
    subjects: Vec<String>,
}

/// Queues the deletion of every entry of these subjects.
#[utoipa::path(post, path = "/v1/search/indexes/{index}/subjects/delete", tag = "search", security(("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id")), request_body = SubjectsDelete,
    responses((status = 202, body = TaskSubmitted), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_subjects(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
    Json(request): Json<SubjectsDelete>,
) -> Result<(StatusCode, Json<TaskSubmitted>), ApiError> {
    let target = DeleteTarget::Subjects {
        subjects: request.subjects,
    };
    submit_delete(&state, &auth, index, target).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct EntryParams {
    /// The entry's subject.
    subject: String,
    /// The entry's id (absent: the subject's id-less entry).
    #[serde(default)]
    entry_id: Option<String>,
}

/// Queues the deletion of one entry.
#[utoipa::path(delete, path = "/v1/search/indexes/{index}/entry", tag = "search", security(("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id"), EntryParams),
    responses((status = 202, body = TaskSubmitted), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_entry(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
    Query(params): Query<EntryParams>,
) -> Result<(StatusCode, Json<TaskSubmitted>), ApiError> {
    let target = DeleteTarget::Entry {
        subject: params.subject,
        entry_id: params.entry_id,
    };
    submit_delete(&state, &auth, index, target).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct SubjectParams {
    /// The subject.
    subject: String,
    /// Index admins only: ignore `visible_to`.
    #[serde(default)]
    bypass_visibility: bool,
}

/// Every entry of one subject the caller may see.
#[utoipa::path(get, path = "/v1/search/indexes/{index}/subject", tag = "search", security((), ("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id"), SubjectParams),
    responses((status = 200, body = SubjectResult), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn show_subject(
    State(state): State<AppState>,
    auth: MaybeAuthorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
    Query(params): Query<SubjectParams>,
) -> Result<Json<SubjectResult>, ApiError> {
    let asker = maybe_asker(&state, &auth).await?;
    Ok(Json(
        queries::subject(
            &state.store,
            &state.search,
            &asker,
            index,
            &params.subject,
            params.bypass_visibility,
        )
        .await?,
    ))
}

/// Queues the deletion of every entry of one subject.
#[utoipa::path(delete, path = "/v1/search/indexes/{index}/subject", tag = "search", security(("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id"), SubjectParams),
    responses((status = 202, body = TaskSubmitted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_subject(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
    Query(params): Query<SubjectParams>,
) -> Result<(StatusCode, Json<TaskSubmitted>), ApiError> {
    let target = DeleteTarget::Subjects {
        subjects: vec![params.subject],
    };
    submit_delete(&state, &auth, index, target).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct QueryParams {
    /// Free text (or the advanced syntax with `advanced=true`).
    #[serde(default)]
    q: Option<String>,
    /// Read `q` in the advanced syntax (`field:value`, `AND`/`OR`/`NOT`, ranges).
    #[serde(default)]
    advanced: bool,
    /// Page size (default 10, at most 1000).
    #[serde(default)]
    limit: Option<usize>,
    /// Entries to skip (offset + limit at most 10000; scroll past that).
    #[serde(default)]
    offset: usize,
    /// Index admins only: ignore `visible_to`.
    #[serde(default)]
    bypass_visibility: bool,
}

/// A simple query in the URL; `POST` takes filters, facets, sorts and boosts.
#[utoipa::path(get, path = "/v1/search/indexes/{index}/query", tag = "search", security((), ("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id"), QueryParams),
    responses((status = 200, body = lattice_protocol::search::SearchResult), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn query_get(
    State(state): State<AppState>,
    auth: MaybeAuthorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
    Query(params): Query<QueryParams>,
) -> Result<Json<lattice_protocol::search::SearchResult>, ApiError> {
    let asker = maybe_asker(&state, &auth).await?;
    let request = SearchRequest {
        query: SearchQuery {
            q: params.q,
            mode: if params.advanced {
                QueryMode::Advanced
            } else {
                QueryMode::Simple
            },
            filters: Vec::new(),
        },
        offset: params.offset,
        limit: params.limit,
        bypass_visibility: params.bypass_visibility,
        ..Default::default()
    };
    Ok(Json(
        queries::search(&state.store, &state.search, &asker, index, request).await?,
    ))
}

#[utoipa::path(post, path = "/v1/search/indexes/{index}/query", tag = "search", security((), ("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id")), request_body = SearchRequest,
    responses((status = 200, body = lattice_protocol::search::SearchResult), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn query_post(
    State(state): State<AppState>,
    auth: MaybeAuthorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
    Json(request): Json<SearchRequest>,
) -> Result<Json<lattice_protocol::search::SearchResult>, ApiError> {
    let asker = maybe_asker(&state, &auth).await?;
    Ok(Json(
        queries::search(&state.store, &state.search, &asker, index, request).await?,
    ))
}

/// Every matching entry, page by page (pass each page's `marker` back).
#[utoipa::path(post, path = "/v1/search/indexes/{index}/scroll", tag = "search", security((), ("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id")), request_body = ScrollRequest,
    responses((status = 200, body = ScrollResult), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn scroll(
    State(state): State<AppState>,
    auth: MaybeAuthorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
    Json(request): Json<ScrollRequest>,
) -> Result<Json<ScrollResult>, ApiError> {
    let asker = maybe_asker(&state, &auth).await?;
    Ok(Json(
        queries::scroll(&state.store, &state.search, &asker, index, request).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct TaskListParams {
    /// At most this many tasks, newest first (default 100, at most 1000).
    #[serde(default)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/search/indexes/{index}/tasks", tag = "search", security(("bearer" = [])),
    params(("index" = SearchIndexId, Path, description = "index id"), TaskListParams),
    responses((status = 200, body = Vec<SearchTaskInfo>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_tasks(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(index): Path<SearchIndexId>,
    Query(params): Query<TaskListParams>,
) -> Result<Json<Vec<SearchTaskInfo>>, ApiError> {
    let asker = asker(&state, &auth).await?;
    let limit = params.limit.unwrap_or(100);
    Ok(Json(tasks::list(&state.store, &asker, index, limit).await?))
}

/// A task's state and every entry it rejected (its submitter and the index's writers and up).
#[utoipa::path(get, path = "/v1/search/tasks/{task}", tag = "search", security(("bearer" = [])),
    params(("task" = SearchTaskId, Path, description = "task id")),
    responses((status = 200, body = SearchTaskInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn show_task(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(task): Path<SearchTaskId>,
) -> Result<Json<SearchTaskInfo>, ApiError> {
    let asker = asker(&state, &auth).await?;
    Ok(Json(tasks::show(&state.store, &asker, task).await?))
}
