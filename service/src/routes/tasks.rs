use std::collections::HashSet;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use lattice_protocol::compute::{
    BatchStatus, BatchSubmit, BatchSubmitted, StreamEvent, TaskArgs, TaskInfo, TaskState,
    TaskStatusRequest, TaskSubmit,
};
use lattice_protocol::frames::{OutcomeStatus, ServiceFrame, TaskOutcome};
use lattice_protocol::{template, BatchId, ErrorBody, ErrorCode, TaskId};
use serde::Deserialize;

use crate::auth::{Authorized, Caller, Compute};
use crate::error::{ApiError, Json, Path, Query};
use crate::routes::endpoints::usable_endpoint;
use crate::routes::functions::usable_function;
use crate::state::AppState;

/// Default retries of a task whose worker or agent dies.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Largest walltime a task may ask for (7 days).
pub const MAX_WALLTIME_SECS: u32 = 7 * 24 * 3600;
/// Most ids in one `POST /v1/tasks/status`.
pub const MAX_STATUS_IDS: usize = 10_000;

struct Submission<'a> {
    function_id: lattice_protocol::FunctionId,
    endpoint_id: lattice_protocol::EndpointId,
    tasks: Vec<TaskArgs>,
    walltime_secs: Option<u32>,
    max_retries: Option<u32>,
    caller: &'a Caller,
}

async fn submit(state: &AppState, s: Submission<'_>) -> Result<BatchSubmitted, ApiError> {
    if s.tasks.is_empty() {
        return Err(ApiError::bad_request(
            "tasks: a batch needs at least one task",
        ));
    }
    if s.tasks.len() > state.config.max_batch_tasks {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "tasks: {} tasks exceed the limit of {} per batch; split the submission",
                s.tasks.len(),
                state.config.max_batch_tasks
            ),
        ));
    }
    let walltime_secs = s.walltime_secs.unwrap_or(state.config.default_walltime);
    if walltime_secs == 0 || walltime_secs > MAX_WALLTIME_SECS {
        return Err(ApiError::bad_request(format!(
            "walltime_secs: must be between 1 and {MAX_WALLTIME_SECS}"
        )));
    }
    let max_retries = s.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);
    if max_retries > 100 {
        return Err(ApiError::bad_request("max_retries: must be at most 100"));
    }
    let function = usable_function(state, s.caller, s.function_id).await?;
    if function.deleted_at.is_some() {
        return Err(ApiError::bad_request(format!(
            "function {} was deleted; register it again",
            function.id
        )));
    }
    let endpoint = usable_endpoint(state, s.caller, s.endpoint_id).await?;
    for (index, args) in s.tasks.iter().enumerate() {
        template::check_args(&function.parameters, args).map_err(|e| {
            if s.tasks.len() == 1 {
                ApiError::bad_request(format!("args: {e}"))
            } else {
                ApiError::bad_request(format!("tasks[{index}]: {e}"))
            }
        })?;
    }
    let batch_id = BatchId::new();
    let now = Utc::now();
    let tasks: Vec<TaskInfo> = s
        .tasks
        .into_iter()
        .map(|args| TaskInfo {
            id: TaskId::new(),
            state: TaskState::Waiting,
            function_id: function.id,
            endpoint_id: endpoint.id,
            batch_id,
            owner_id: s.caller.identity_id,
            args,
            result: None,
            error: None,
            submitted_at: now,
            dispatched_at: None,
            started_at: None,
            finished_at: None,
            worker: None,
            attempts: 0,
            max_retries,
            walltime_secs,
            duplicate_results: 0,
        })
        .collect();
    let task_ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
    state.store.insert_tasks(&tasks).await?;
    if let Err(e) = state.broker.publish(endpoint.id, &task_ids).await {
        tracing::error!(endpoint_id = %endpoint.id, error = %e, "queueing tasks failed");
        let failed: Vec<TaskOutcome> = task_ids
            .iter()
            .map(|id| TaskOutcome {
                task_id: *id,
                attempt: 0,
                status: OutcomeStatus::Failed,
                result: None,
                error: Some(format!("the task queue was unavailable at submission: {e}")),
                worker: None,
                started_at: None,
                finished_at: Utc::now(),
            })
            .collect();
        state.store.record_outcomes(&failed).await?;
        return Err(ApiError::unavailable(format!(
            "the task queue is unavailable ({e}); nothing was queued, try again"
        )));
    }
    tracing::debug!(batch_id = %batch_id, endpoint_id = %endpoint.id, tasks = task_ids.len(), "tasks queued");
    Ok(BatchSubmitted { batch_id, task_ids })
}

/// Submit one task. Queued even while the endpoint is offline.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", security(("bearer" = ["compute"])),
    request_body = TaskSubmit,
    responses((status = 201, body = BatchSubmitted), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn submit_one(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Json(request): Json<TaskSubmit>,
) -> Result<(StatusCode, Json<BatchSubmitted>), ApiError> {
    let submitted = submit(
        &state,
        Submission {
            function_id: request.function_id,
            endpoint_id: request.endpoint_id,
            tasks: vec![request.args],
            walltime_secs: request.walltime_secs,
            max_retries: request.max_retries,
            caller: &auth,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(submitted)))
}

/// Submit many tasks of one function in one request.
#[utoipa::path(post, path = "/v1/batches", tag = "tasks", security(("bearer" = ["compute"])),
    request_body = BatchSubmit,
    responses((status = 201, body = BatchSubmitted), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn submit_batch(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Json(request): Json<BatchSubmit>,
) -> Result<(StatusCode, Json<BatchSubmitted>), ApiError> {
    let submitted = submit(
        &state,
        Submission {
            function_id: request.function_id,
            endpoint_id: request.endpoint_id,
            tasks: request.tasks,
            walltime_secs: request.walltime_secs,
            max_retries: request.max_retries,
            caller: &auth,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(submitted)))
}

async fn owned_task(state: &AppState, caller: &Caller, id: TaskId) -> Result<TaskInfo, ApiError> {
    let task = state
        .store
        .task(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {id} does not exist")))?;
    if task.owner_id != caller.identity_id {
        return Err(ApiError::forbidden(format!(
            "task {id} belongs to another identity"
        )));
    }
    Ok(task)
}

#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = ["compute"])),
    params(("id" = TaskId, Path)),
    responses((status = 200, body = TaskInfo), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<TaskId>,
) -> Result<Json<TaskInfo>, ApiError> {
    Ok(Json(owned_task(&state, &auth, id).await?))
}

/// Many tasks in one round trip; unknown or foreign ids are left out.
#[utoipa::path(post, path = "/v1/tasks/status", tag = "tasks", security(("bearer" = ["compute"])),
    request_body = TaskStatusRequest,
    responses((status = 200, body = Vec<TaskInfo>), (status = 413, body = ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Json(request): Json<TaskStatusRequest>,
) -> Result<Json<Vec<TaskInfo>>, ApiError> {
    if request.task_ids.len() > MAX_STATUS_IDS {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("task_ids: at most {MAX_STATUS_IDS} per request"),
        ));
    }
    let tasks = state.store.tasks(&request.task_ids).await?;
    Ok(Json(
        tasks
            .into_iter()
            .filter(|t| t.owner_id == auth.identity_id)
            .collect(),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    /// Only tasks in this state.
    state: Option<String>,
    /// Only tasks of this batch.
    batch_id: Option<BatchId>,
    /// At most this many (newest first) [default: 100, max 10000].
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("bearer" = ["compute"])), params(ListParams),
    responses((status = 200, body = Vec<TaskInfo>), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<TaskInfo>>, ApiError> {
    let task_state = params
        .state
        .as_deref()
        .map(|s| {
            TaskState::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "state: `{s}` is not one of waiting, dispatched, running, success, failed, cancelled"
                ))
            })
        })
        .transpose()?;
    let limit = params.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(
        state
            .store
            .list_tasks(auth.identity_id, task_state, params.batch_id, limit)
            .await?,
    ))
}

/// Cancel a task that has not finished. A running task is stopped on its agent.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks", security(("bearer" = ["compute"])),
    params(("id" = TaskId, Path)),
    responses((status = 200, body = TaskInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<TaskId>,
) -> Result<Json<TaskInfo>, ApiError> {
    let task = owned_task(&state, &auth, id).await?;
    if !state.store.cancel_task(id, Utc::now()).await? {
        let current = state.store.task(id).await?.unwrap_or(task);
        return Err(ApiError::conflict(format!(
            "task {id} already finished ({})",
            current.state.as_str()
        )));
    }
    state.agents.send(
        task.endpoint_id,
        ServiceFrame::Cancel { task_ids: vec![id] },
    );
    state.notify_results();
    let task = state
        .store
        .task(id)
        .await?
        .ok_or_else(|| ApiError::internal("task vanished"))?;
    Ok(Json(task))
}

async fn owned_batch(state: &AppState, caller: &Caller, id: BatchId) -> Result<(), ApiError> {
    let tasks = state
        .store
        .list_tasks(caller.identity_id, None, Some(id), 1)
        .await?;
    if tasks.is_empty() {
        return Err(ApiError::not_found(format!("batch {id} does not exist")));
    }
    Ok(())
}

/// Counts of a batch's tasks per state.
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "tasks", security(("bearer" = ["compute"])),
    params(("id" = BatchId, Path)),
    responses((status = 200, body = BatchStatus), (status = 404, body = ErrorBody)))]
pub async fn batch_status(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<BatchId>,
) -> Result<Json<BatchStatus>, ApiError> {
    owned_batch(&state, &auth, id).await?;
    Ok(Json(state.store.batch_status(id).await?))
}

/// A WebSocket that pushes every final task of a batch as a JSON text frame
/// ([`StreamEvent`]), already-final ones first, then `done` and close.
#[utoipa::path(get, path = "/v1/batches/{id}/stream", tag = "tasks", security(("bearer" = ["compute"])),
    params(("id" = BatchId, Path)),
    responses((status = 101, description = "WebSocket of StreamEvent JSON messages"), (status = 404, body = ErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    Path(id): Path<BatchId>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    owned_batch(&state, &auth, id).await?;
    Ok(ws.on_upgrade(move |socket| async move {
        if let Err(e) = stream_batch(state, id, socket).await {
            tracing::debug!(batch_id = %id, error = %e, "result stream ended");
        }
    }))
}

/// Results recorded by another replica are seen within this interval.
const STREAM_POLL: Duration = Duration::from_millis(500);
/// Overlap of successive queries, so a transaction that committed late with
/// an earlier `finished_at` is not missed.
const STREAM_OVERLAP_MS: i64 = 5_000;

async fn stream_batch(
    state: AppState,
    batch: BatchId,
    mut socket: WebSocket,
) -> Result<(), axum::Error> {
    let mut wake = state.results.subscribe();
    let mut sent: HashSet<TaskId> = HashSet::new();
    let mut since = chrono::DateTime::<Utc>::MIN_UTC;
    loop {
        wake.mark_unchanged();
        let query_started = Utc::now();
        let finished = match state.store.batch_finished_since(batch, since).await {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::error!(batch_id = %batch, error = %e, "result stream query failed");
                return Ok(());
            }
        };
        for task in finished {
            if sent.insert(task.id) {
                let text = serde_json::to_string(&StreamEvent::Task {
                    task: Box::new(task),
                })
                .expect("event serializes");
                socket.send(Message::Text(text.into())).await?;
            }
        }
        since = query_started - chrono::Duration::milliseconds(STREAM_OVERLAP_MS);
        let status = match state.store.batch_status(batch).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(batch_id = %batch, error = %e, "result stream status failed");
                return Ok(());
            }
        };
        if status.finished() == status.total && (sent.len() as u64) < status.total {
            // Something finished outside the query window (e.g. an agent's
            // clock is behind): look at the whole batch once more.
            since = chrono::DateTime::<Utc>::MIN_UTC;
            continue;
        }
        if status.finished() == status.total {
            let text =
                serde_json::to_string(&StreamEvent::Done { status }).expect("event serializes");
            socket.send(Message::Text(text.into())).await?;
            let _ = socket.send(Message::Close(None)).await;
            return Ok(());
        }
        tokio::select! {
            _ = wake.changed() => {}
            _ = tokio::time::sleep(STREAM_POLL) => {}
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}
