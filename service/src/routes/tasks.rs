//! `/v1/tasks` and `/v1/batches`: extract, call [`compute`](crate::compute)
//! (submission, task lookups, the batch result stream), answer.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use lattice_protocol::compute::{
    BatchStatus, BatchSubmit, BatchSubmitted, TaskInfo, TaskStatusRequest, TaskSubmit,
};
use lattice_protocol::{BatchId, ErrorBody, TaskId};
use serde::Deserialize;

use crate::auth::{Authorized, Compute};
use crate::compute::submission::{self, Submission};
use crate::compute::{results, tasks};
use crate::error::{ApiError, Json, Path, Query};
use crate::state::AppState;

/// Submit one task. Queued even while the endpoint is offline.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", security(("bearer" = ["compute"])),
    request_body = TaskSubmit,
    responses((status = 201, body = BatchSubmitted), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn submit_one(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Json(request): Json<TaskSubmit>,
) -> Result<(StatusCode, Json<BatchSubmitted>), ApiError> {
    let submitted = submission::submit(
        &state,
        Submission {
            function_id: request.function_id,
            endpoint_id: request.endpoint_id,
            tasks: vec![request.args],
            walltime_secs: request.walltime_secs,
            max_retries: request.max_retries,
            user_endpoint_config: request.user_endpoint_config,
            caller: &auth,
            ids: None,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(submitted)))
}

/// Submit many tasks of one function in one request.
#[utoipa::path(post, path = "/v1/batches", tag = "tasks", security(("bearer" = ["compute"])),
    request_body = BatchSubmit,
    responses((status = 201, body = BatchSubmitted), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(crate) async fn submit_batch(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Json(request): Json<BatchSubmit>,
) -> Result<(StatusCode, Json<BatchSubmitted>), ApiError> {
    let submitted = submission::submit(
        &state,
        Submission {
            function_id: request.function_id,
            endpoint_id: request.endpoint_id,
            tasks: request.tasks,
            walltime_secs: request.walltime_secs,
            max_retries: request.max_retries,
            user_endpoint_config: request.user_endpoint_config,
            caller: &auth,
            ids: None,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(submitted)))
}

#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = ["compute"])),
    params(("id" = TaskId, Path)),
    responses((status = 200, body = TaskInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<TaskId>,
) -> Result<Json<TaskInfo>, ApiError> {
    Ok(Json(tasks::show(&state, &auth, id).await?))
}

/// Many tasks in one round trip; unknown or foreign ids are left out.
#[utoipa::path(post, path = "/v1/tasks/status", tag = "tasks", security(("bearer" = ["compute"])),
    request_body = TaskStatusRequest,
    responses((status = 200, body = Vec<TaskInfo>), (status = 413, body = ErrorBody)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Json(request): Json<TaskStatusRequest>,
) -> Result<Json<Vec<TaskInfo>>, ApiError> {
    Ok(Json(tasks::status(&state, &auth, &request.task_ids).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ListParams {
    /// Only tasks in this state.
    state: Option<String>,
    /// Only tasks of this batch.
    batch_id: Option<BatchId>,
    /// At most this many (newest first) [default: 100, max 10000].
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("bearer" = ["compute"])), params(ListParams),
    responses((status = 200, body = Vec<TaskInfo>), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<TaskInfo>>, ApiError> {
    let tasks = tasks::list(
        &state,
        &auth,
        params.state.as_deref(),
        params.batch_id,
        params.limit,
    )
    .await?;
    Ok(Json(tasks))
}

/// Cancel a task that has not finished. A running task is stopped on its agent.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks", security(("bearer" = ["compute"])),
    params(("id" = TaskId, Path)),
    responses((status = 200, body = TaskInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<TaskId>,
) -> Result<Json<TaskInfo>, ApiError> {
    Ok(Json(tasks::cancel(&state, &auth, id).await?))
}

/// Counts of a batch's tasks per state.
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "tasks", security(("bearer" = ["compute"])),
    params(("id" = BatchId, Path)),
    responses((status = 200, body = BatchStatus), (status = 404, body = ErrorBody)))]
pub(crate) async fn batch_status(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<BatchId>,
) -> Result<Json<BatchStatus>, ApiError> {
    Ok(Json(tasks::batch_status(&state, &auth, id).await?))
}

/// A WebSocket that pushes every final task of a batch as a JSON text frame
/// ([`StreamEvent`]), already-final ones first, then `done` and close.
#[utoipa::path(get, path = "/v1/batches/{id}/stream", tag = "tasks", security(("bearer" = ["compute"])),
    params(("id" = BatchId, Path)),
    responses((status = 101, description = "WebSocket of StreamEvent JSON messages"), (status = 404, body = ErrorBody)))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<BatchId>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    tasks::owned_batch(&state, &auth, id).await?;
    Ok(ws.on_upgrade(move |socket| async move {
        if let Err(e) = results::stream_batch(state, id, socket).await {
            tracing::debug!(batch_id = %id, error = %e, "result stream ended");
        }
    }))
}
