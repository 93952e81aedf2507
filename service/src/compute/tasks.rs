//! Task lookups and cancellation, with their permission rule: a task or a
//! batch is its submitter's alone (someone else's looks forbidden, or is
//! left out of a listing). A task that still waits says why when its
//! endpoint is the reason (see [`endpoints::waiting_reason`]).
//!
//! It must not know HTTP. Cancelling tells the agents of this replica
//! through the [`AgentRegistry`](crate::state::AgentRegistry) and the
//! result streams through [`results::publish`].

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use chrono::Utc;
use lattice_protocol::compute::{BatchStatus, TaskInfo, TaskState};
use lattice_protocol::frames::ServiceFrame;
use lattice_protocol::{BatchId, EndpointId, TaskId};

use super::{endpoints, results, ComputeError, ComputeResult};
use crate::auth::Caller;
use crate::state::AppState;

/// Most ids in one `POST /v1/tasks/status`.
pub(crate) const MAX_STATUS_IDS: usize = 10_000;

/// Most tasks one listing returns; also its default when not asked.
const MAX_LIST: u32 = 10_000;
const DEFAULT_LIST: u32 = 100;

async fn owned_task(state: &AppState, caller: &Caller, id: TaskId) -> ComputeResult<TaskInfo> {
    let task = state
        .store
        .task(id)
        .await?
        .ok_or_else(|| ComputeError::NotFound(format!("task {id} does not exist")))?;
    if task.owner_id != caller.identity_id {
        return Err(ComputeError::Forbidden(format!(
            "task {id} belongs to another identity"
        )));
    }
    Ok(task)
}

/// One of the caller's tasks, saying why it waits if its endpoint is why.
pub(crate) async fn show(state: &AppState, caller: &Caller, id: TaskId) -> ComputeResult<TaskInfo> {
    let task = owned_task(state, caller, id).await?;
    let mut tasks = with_endpoint_problems(state, vec![task]).await?;
    Ok(tasks.remove(0))
}

/// Fills `endpoint_problem` of tasks that are not final and whose endpoint
/// is why they wait (offline, or its provider failing), so a waiting task
/// says why.
async fn with_endpoint_problems(
    state: &AppState,
    mut tasks: Vec<TaskInfo>,
) -> ComputeResult<Vec<TaskInfo>> {
    let mut problems: HashMap<EndpointId, Option<String>> = HashMap::new();
    for task in tasks.iter_mut().filter(|t| !t.state.is_final()) {
        if let Entry::Vacant(slot) = problems.entry(task.endpoint_id) {
            let problem = state
                .store
                .endpoint(task.endpoint_id)
                .await?
                .and_then(|e| endpoints::waiting_reason(&e));
            slot.insert(problem);
        }
        task.endpoint_problem = problems[&task.endpoint_id].clone();
    }
    Ok(tasks)
}

/// Many tasks in one round trip; unknown or foreign ids are left out.
pub(crate) async fn status(
    state: &AppState,
    caller: &Caller,
    task_ids: &[TaskId],
) -> ComputeResult<Vec<TaskInfo>> {
    if task_ids.len() > MAX_STATUS_IDS {
        return Err(ComputeError::TooLarge(format!(
            "task_ids: at most {MAX_STATUS_IDS} per request"
        )));
    }
    let tasks = state.store.tasks(task_ids).await?;
    let tasks = tasks
        .into_iter()
        .filter(|t| t.owner_id == caller.identity_id)
        .collect();
    with_endpoint_problems(state, tasks).await
}

/// The caller's tasks, newest first: optionally only those in `task_state`
/// (a state's name) or of `batch_id`, at most `limit` (default 100, at most
/// 10,000).
pub(crate) async fn list(
    state: &AppState,
    caller: &Caller,
    task_state: Option<&str>,
    batch_id: Option<BatchId>,
    limit: Option<u32>,
) -> ComputeResult<Vec<TaskInfo>> {
    let task_state = task_state
        .map(|s| {
            TaskState::parse(s).ok_or_else(|| {
                ComputeError::Invalid(format!(
                    "state: `{s}` is not one of waiting, dispatched, running, success, failed, cancelled"
                ))
            })
        })
        .transpose()?;
    let limit = limit.unwrap_or(DEFAULT_LIST).clamp(1, MAX_LIST);
    let tasks = state
        .store
        .list_tasks(caller.identity_id, task_state, batch_id, limit)
        .await?;
    with_endpoint_problems(state, tasks).await
}

/// Cancels one of the caller's tasks that has not finished; an agent of
/// this replica running it is told to stop, and result streams learn of it.
/// A finished task is a conflict.
pub(crate) async fn cancel(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
) -> ComputeResult<TaskInfo> {
    let task = owned_task(state, caller, id).await?;
    if !state.store.cancel_task(id, Utc::now()).await? {
        let current = state.store.task(id).await?.unwrap_or(task);
        return Err(ComputeError::Conflict(format!(
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
        .ok_or_else(|| ComputeError::Internal("task vanished".into()))?;
    results::publish(state, vec![task.clone()]);
    Ok(task)
}

/// Checks that the caller has tasks in batch `id` (not found otherwise:
/// someone else's batch is not revealed).
pub(crate) async fn owned_batch(
    state: &AppState,
    caller: &Caller,
    id: BatchId,
) -> ComputeResult<()> {
    let tasks = state
        .store
        .list_tasks(caller.identity_id, None, Some(id), 1)
        .await?;
    if tasks.is_empty() {
        return Err(ComputeError::NotFound(format!("batch {id} does not exist")));
    }
    Ok(())
}

/// Counts of one of the caller's batches' tasks per state.
pub(crate) async fn batch_status(
    state: &AppState,
    caller: &Caller,
    id: BatchId,
) -> ComputeResult<BatchStatus> {
    owned_batch(state, caller, id).await?;
    Ok(state.store.batch_status(id).await?)
}
