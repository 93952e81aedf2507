use std::collections::HashSet;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use lattice_protocol::compute::{
    BatchStatus, BatchSubmit, BatchSubmitted, FunctionInfo, FunctionSpec, StreamEvent, TaskArgs,
    TaskInfo, TaskState, TaskStatusRequest, TaskSubmit, PYTHON_ARGS_KEY,
};
use lattice_protocol::frames::{OutcomeStatus, ServiceFrame, TaskOutcome};
use lattice_protocol::{template, BatchId, ErrorBody, ErrorCode, TaskId};
use serde::Deserialize;

use crate::auth::{Authorized, Caller, Compute};
use crate::error::{ApiError, Json, Path, Query};
use crate::routes::endpoints::task_endpoint;
use crate::routes::functions::usable_function;
use crate::state::AppState;

/// Default retries of a task whose worker or agent dies.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Largest walltime a task may ask for (7 days).
pub const MAX_WALLTIME_SECS: u32 = 7 * 24 * 3600;
/// Most ids in one `POST /v1/tasks/status`.
pub const MAX_STATUS_IDS: usize = 10_000;

pub(crate) struct Submission<'a> {
    pub(crate) function_id: lattice_protocol::FunctionId,
    pub(crate) endpoint_id: lattice_protocol::EndpointId,
    pub(crate) tasks: Vec<TaskArgs>,
    pub(crate) walltime_secs: Option<u32>,
    pub(crate) max_retries: Option<u32>,
    pub(crate) user_endpoint_config: Option<serde_json::Value>,
    pub(crate) caller: &'a Caller,
}

/// Largest `user_endpoint_config`, as JSON text.
pub const MAX_USER_ENDPOINT_CONFIG_BYTES: usize = 16 * 1024;

/// A JSON object of template variables, or nothing (`null` and `{}` are
/// nothing). The agent checks the values against its admin's schema.
fn check_user_endpoint_config(
    config: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>, ApiError> {
    match config {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(map)) if map.is_empty() => Ok(None),
        Some(value @ serde_json::Value::Object(_)) => {
            let size = value.to_string().len();
            if size > MAX_USER_ENDPOINT_CONFIG_BYTES {
                return Err(ApiError::bad_request(format!(
                    "user_endpoint_config: {size} bytes exceed the limit of {MAX_USER_ENDPOINT_CONFIG_BYTES}"
                )));
            }
            Ok(Some(value))
        }
        Some(_) => Err(ApiError::bad_request(
            "user_endpoint_config: must be a JSON object of template variables",
        )),
    }
}

pub(crate) async fn submit(
    state: &AppState,
    s: Submission<'_>,
) -> Result<BatchSubmitted, ApiError> {
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
    let endpoint = task_endpoint(state, s.caller, s.endpoint_id).await?;
    let user_endpoint_config = check_user_endpoint_config(s.user_endpoint_config)?;
    for (index, args) in s.tasks.iter().enumerate() {
        check_args(&function, args).map_err(|e| {
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
            endpoint_problem: None,
            user_endpoint_config: user_endpoint_config.clone(),
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

/// Wasm functions take any arguments (their values become the module's
/// argv, see `docs/runtime.md`), but the reserved `argv` must be an array or
/// a string and `stdin` a string, as the worker reads them.
fn check_wasm_args(args: &TaskArgs) -> Result<(), String> {
    if args
        .get("argv")
        .is_some_and(|v| !(v.is_array() || v.is_string()))
    {
        return Err("`argv` must be an array or a string (the module's arguments)".into());
    }
    if args.get("stdin").is_some_and(|v| !v.is_string()) {
        return Err("`stdin` must be a string (the module's standard input)".into());
    }
    Ok(())
}

/// Checks a task's arguments against its function: template parameters for
/// shell and container functions; for `python` functions nothing, or exactly
/// the reserved [`PYTHON_ARGS_KEY`] holding a string (the SDK's pickled
/// `(args, kwargs)`, opaque to the service).
fn check_args(function: &FunctionInfo, args: &TaskArgs) -> Result<(), String> {
    if matches!(function.spec, FunctionSpec::Wasm { .. }) {
        return check_wasm_args(args);
    }
    if !matches!(function.spec, FunctionSpec::Python { .. }) {
        return template::check_args(&function.parameters, args).map_err(|e| e.to_string());
    }
    match args.iter().find(|(key, _)| key.as_str() != PYTHON_ARGS_KEY) {
        Some((key, _)) => Err(format!(
            "unknown argument `{key}`: python functions take their arguments under `{PYTHON_ARGS_KEY}` (as the Lattice Python SDK writes them)"
        )),
        None if args.get(PYTHON_ARGS_KEY).is_some_and(|v| !v.is_string()) => Err(format!(
            "`{PYTHON_ARGS_KEY}` must be a string (base64 of the pickled arguments)"
        )),
        None => Ok(()),
    }
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
            user_endpoint_config: request.user_endpoint_config,
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
            user_endpoint_config: request.user_endpoint_config,
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
    let task = owned_task(&state, &auth, id).await?;
    let mut tasks = with_endpoint_problems(&state, vec![task]).await?;
    Ok(Json(tasks.remove(0)))
}

/// Fills `endpoint_problem` of tasks that are not final and whose endpoint
/// is why they wait (offline, or its provider failing), so a waiting task
/// says why.
async fn with_endpoint_problems(
    state: &AppState,
    mut tasks: Vec<TaskInfo>,
) -> Result<Vec<TaskInfo>, ApiError> {
    let mut problems: std::collections::HashMap<lattice_protocol::EndpointId, Option<String>> =
        std::collections::HashMap::new();
    for task in tasks.iter_mut().filter(|t| !t.state.is_final()) {
        if let std::collections::hash_map::Entry::Vacant(slot) = problems.entry(task.endpoint_id) {
            let problem = state
                .store
                .endpoint(task.endpoint_id)
                .await?
                .and_then(|e| crate::routes::endpoints::waiting_reason(&e));
            slot.insert(problem);
        }
        task.endpoint_problem = problems[&task.endpoint_id].clone();
    }
    Ok(tasks)
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
    let tasks = tasks
        .into_iter()
        .filter(|t| t.owner_id == auth.identity_id)
        .collect();
    Ok(Json(with_endpoint_problems(&state, tasks).await?))
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
    let tasks = state
        .store
        .list_tasks(auth.identity_id, task_state, params.batch_id, limit)
        .await?;
    Ok(Json(with_endpoint_problems(&state, tasks).await?))
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
    let task = state
        .store
        .task(id)
        .await?
        .ok_or_else(|| ApiError::internal("task vanished"))?;
    state.publish_results(vec![task.clone()]);
    Ok(Json(task))
}

pub(crate) async fn owned_batch(
    state: &AppState,
    caller: &Caller,
    id: BatchId,
) -> Result<(), ApiError> {
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

/// How often a stream also looks at the store, for results recorded by
/// another service replica.
pub(crate) const STREAM_POLL: Duration = Duration::from_secs(1);
/// Overlap of successive polls, so a transaction that committed late with an
/// earlier `finished_at` is not missed.
pub(crate) const STREAM_OVERLAP_MS: i64 = 5_000;
/// Every this many polls, look at the whole batch (covers agent clock skew).
pub(crate) const STREAM_FULL_RESCAN_EVERY: u32 = 10;

/// Pushes a batch's final tasks: those already final, then each as this
/// replica records it (broadcast, no store query per result), with a periodic
/// store poll for other replicas and for a stream that fell behind.
async fn stream_batch(
    state: AppState,
    batch: BatchId,
    mut socket: WebSocket,
) -> Result<(), axum::Error> {
    // Subscribe before the first query so nothing lands in between unseen.
    let mut recorded = state.results.subscribe();
    let total = match state.store.batch_status(batch).await {
        Ok(status) => status.total,
        Err(e) => {
            tracing::error!(batch_id = %batch, error = %e, "result stream status failed");
            return Ok(());
        }
    };
    let mut sent: HashSet<TaskId> = HashSet::new();
    let mut since = chrono::DateTime::<Utc>::MIN_UTC;
    let mut polls = 0u32;
    let mut poll_now = true;
    let mut poll = tokio::time::interval(STREAM_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        if poll_now {
            poll_now = false;
            let query_started = Utc::now();
            let finished = match state.store.batch_finished_since(batch, since).await {
                Ok(tasks) => tasks,
                Err(e) => {
                    tracing::error!(batch_id = %batch, error = %e, "result stream query failed");
                    return Ok(());
                }
            };
            for task in finished {
                send_task(&mut socket, &mut sent, task).await?;
            }
            polls += 1;
            since = if polls.is_multiple_of(STREAM_FULL_RESCAN_EVERY) {
                chrono::DateTime::<Utc>::MIN_UTC
            } else {
                query_started - chrono::Duration::milliseconds(STREAM_OVERLAP_MS)
            };
        }
        if sent.len() as u64 >= total {
            let status = match state.store.batch_status(batch).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(batch_id = %batch, error = %e, "result stream status failed");
                    return Ok(());
                }
            };
            let text =
                serde_json::to_string(&StreamEvent::Done { status }).expect("event serializes");
            socket.send(Message::Text(text.into())).await?;
            let _ = socket.send(Message::Close(None)).await;
            return Ok(());
        }
        tokio::select! {
            message = recorded.recv() => match message {
                Ok(tasks) => {
                    for task in tasks.iter().filter(|t| t.batch_id == batch) {
                        send_task(&mut socket, &mut sent, task.clone()).await?;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(batch_id = %batch, missed, "result stream fell behind; rescanning");
                    since = chrono::DateTime::<Utc>::MIN_UTC;
                    poll_now = true;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = poll.tick() => poll_now = true,
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send_task(
    socket: &mut WebSocket,
    sent: &mut HashSet<TaskId>,
    task: TaskInfo,
) -> Result<(), axum::Error> {
    if !sent.insert(task.id) {
        return Ok(());
    }
    let text = serde_json::to_string(&StreamEvent::Task {
        task: Box::new(task),
    })
    .expect("event serializes");
    socket.send(Message::Text(text.into())).await
}
