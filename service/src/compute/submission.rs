//! Task submission: the rules a batch must pass before anything is stored
//! or queued, and the one path that stores and queues tasks. `POST
//! /v1/tasks`, `POST /v1/batches` and a session stream's `submit` all come
//! through [`submit`].
//!
//! It owns the submission limits (batch size, walltime, retries, the
//! `user_endpoint_config` object) and the argument rules per function kind
//! (template parameters for shell and container, `argv`/`stdin` for Wasm,
//! the one opaque key for Python). It must not know HTTP, and does not
//! dispatch: the [`relay`](super::relay) hands queued tasks to agents.

use chrono::Utc;
use lattice_protocol::compute::{
    BatchSubmitted, FunctionInfo, FunctionSpec, TaskArgs, TaskInfo, TaskState, PYTHON_ARGS_KEY,
};
use lattice_protocol::frames::{OutcomeStatus, TaskOutcome};
use lattice_protocol::{template, BatchId, TaskId};

use super::{endpoints, functions, ComputeError, ComputeResult};
use crate::auth::Caller;
use crate::state::AppState;

/// Default retries of a task whose worker or agent dies.
pub(crate) const DEFAULT_MAX_RETRIES: u32 = 2;
/// Largest walltime a task may ask for (7 days).
pub(crate) const MAX_WALLTIME_SECS: u32 = 7 * 24 * 3600;

/// A batch to submit: tasks of one function for one endpoint, on behalf
/// of `caller` (whose rights are checked here, not by the caller).
pub(crate) struct Submission<'a> {
    pub(crate) function_id: lattice_protocol::FunctionId,
    pub(crate) endpoint_id: lattice_protocol::EndpointId,
    pub(crate) tasks: Vec<TaskArgs>,
    pub(crate) walltime_secs: Option<u32>,
    pub(crate) max_retries: Option<u32>,
    pub(crate) user_endpoint_config: Option<serde_json::Value>,
    pub(crate) caller: &'a Caller,
    /// Ids chosen beforehand (one per task), so a caller that recorded
    /// them first can tell after a crash whether the batch was stored
    /// (the flows' compute action); `None` draws fresh ids.
    pub(crate) ids: Option<(BatchId, Vec<TaskId>)>,
}

/// Largest `user_endpoint_config`, as JSON text.
pub(crate) const MAX_USER_ENDPOINT_CONFIG_BYTES: usize = 16 * 1024;

/// A JSON object of template variables, or nothing (`null` and `{}` are
/// nothing). The agent checks the values against its admin's schema.
fn check_user_endpoint_config(
    config: Option<serde_json::Value>,
) -> ComputeResult<Option<serde_json::Value>> {
    match config {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(map)) if map.is_empty() => Ok(None),
        Some(value @ serde_json::Value::Object(_)) => {
            let size = value.to_string().len();
            if size > MAX_USER_ENDPOINT_CONFIG_BYTES {
                return Err(ComputeError::Invalid(format!(
                    "user_endpoint_config: {size} bytes exceed the limit of {MAX_USER_ENDPOINT_CONFIG_BYTES}"
                )));
            }
            Ok(Some(value))
        }
        Some(_) => Err(ComputeError::Invalid(
            "user_endpoint_config: must be a JSON object of template variables".into(),
        )),
    }
}

/// Checks a submission (limits, the function usable and not deleted, the
/// endpoint open to the caller, each task's arguments), inserts its tasks
/// as `waiting` in one transaction and publishes their ids to the
/// endpoint's queue. If the queue refuses them, the tasks are failed and
/// the caller is told to try again.
pub(crate) async fn submit(state: &AppState, s: Submission<'_>) -> ComputeResult<BatchSubmitted> {
    if s.tasks.is_empty() {
        return Err(ComputeError::Invalid(
            "tasks: a batch needs at least one task".into(),
        ));
    }
    if s.tasks.len() > state.config.max_batch_tasks {
        return Err(ComputeError::TooLarge(format!(
            "tasks: {} tasks exceed the limit of {} per batch; split the submission",
            s.tasks.len(),
            state.config.max_batch_tasks
        )));
    }
    let walltime_secs = s.walltime_secs.unwrap_or(state.config.default_walltime);
    if walltime_secs == 0 || walltime_secs > MAX_WALLTIME_SECS {
        return Err(ComputeError::Invalid(format!(
            "walltime_secs: must be between 1 and {MAX_WALLTIME_SECS}"
        )));
    }
    let max_retries = s.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);
    if max_retries > 100 {
        return Err(ComputeError::Invalid(
            "max_retries: must be at most 100".into(),
        ));
    }
    let function = functions::usable(state, s.caller, s.function_id).await?;
    if function.deleted_at.is_some() {
        return Err(ComputeError::Invalid(format!(
            "function {} was deleted; register it again",
            function.id
        )));
    }
    let endpoint = endpoints::task_endpoint(state, s.caller, s.endpoint_id).await?;
    let user_endpoint_config = check_user_endpoint_config(s.user_endpoint_config)?;
    for (index, args) in s.tasks.iter().enumerate() {
        check_args(&function, args).map_err(|e| {
            if s.tasks.len() == 1 {
                ComputeError::Invalid(format!("args: {e}"))
            } else {
                ComputeError::Invalid(format!("tasks[{index}]: {e}"))
            }
        })?;
    }
    let (batch_id, mut ids) = match s.ids {
        Some((batch_id, ids)) if ids.len() == s.tasks.len() => (batch_id, ids.into_iter()),
        Some(_) => {
            return Err(ComputeError::Invalid(
                "one id per task is needed when ids are chosen beforehand".into(),
            ))
        }
        None => (
            BatchId::new(),
            (0..s.tasks.len())
                .map(|_| TaskId::new())
                .collect::<Vec<_>>()
                .into_iter(),
        ),
    };
    let now = Utc::now();
    let tasks: Vec<TaskInfo> = s
        .tasks
        .into_iter()
        .map(|args| TaskInfo {
            id: ids.next().unwrap_or_default(),
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
        return Err(ComputeError::Unavailable(format!(
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
