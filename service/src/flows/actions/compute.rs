//! The `compute` action: one task (`{"endpoint_id", "function_id",
//! "args"}`) or a batch (`"tasks": [{"args": {...}}, ...]`) of a
//! registered function, as the action's creator. `kwargs` and the
//! anchor's `endpoint`/`function` names are accepted too. The details list
//! every task in order (`results[i]`: `task_id`, `state`, `result`
//! with `stdout`/`stderr`/`returncode`, `error`); the action SUCCEEDS when
//! every task succeeded and FAILS as soon as all are final and one is not.
//!
//! The batch and task ids are chosen in the plan and stored before the
//! submission, so a crash between the two submits the same ids once.

use lattice_protocol::compute::{TaskArgs, TaskInfo};
use lattice_protocol::{BatchId, EndpointId, FunctionId, TaskId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Progress;
use crate::auth::Caller;
use crate::compute::submission::{self, Submission};
use crate::flows::{FlowError, FlowResult};
use crate::state::AppState;

pub(crate) fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "endpoint_id": {"type": "string"},
            "function_id": {"type": "string"},
            "args": {"type": "object"},
            "tasks": {"type": "array", "items": {"type": "object"}},
            "walltime_secs": {"type": "integer"},
            "max_retries": {"type": "integer"}
        }
    })
}

#[derive(Deserialize)]
struct Body {
    #[serde(alias = "endpoint")]
    endpoint_id: EndpointId,
    #[serde(alias = "function")]
    function_id: FunctionId,
    #[serde(default, alias = "kwargs")]
    args: Option<TaskArgs>,
    #[serde(default)]
    tasks: Option<Vec<Value>>,
    #[serde(default)]
    walltime_secs: Option<u32>,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default)]
    user_endpoint_config: Option<Value>,
}

struct Parsed {
    body: Body,
    tasks: Vec<TaskArgs>,
}

fn parse(body: &Value) -> FlowResult<Parsed> {
    let body: Body = serde_json::from_value(body.clone())
        .map_err(|e| FlowError::Invalid(format!("compute action body: {e}")))?;
    let tasks =
        match (&body.args, &body.tasks) {
            (Some(_), Some(_)) => return Err(FlowError::Invalid(
                "compute action body: give `args` for one task or `tasks` for a batch, not both"
                    .into(),
            )),
            (Some(args), None) => vec![args.clone()],
            (None, Some(tasks)) => tasks
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    // `{"args": {...}}` (or `kwargs`), or the argument map itself.
                    let args = t.get("args").or_else(|| t.get("kwargs")).unwrap_or(t);
                    serde_json::from_value::<TaskArgs>(args.clone()).map_err(|e| {
                        FlowError::Invalid(format!("compute action body: tasks[{i}]: {e}"))
                    })
                })
                .collect::<FlowResult<_>>()?,
            (None, None) => vec![TaskArgs::new()],
        };
    Ok(Parsed { body, tasks })
}

/// Checks the body and chooses the batch's ids.
pub(crate) fn plan(body: &Value) -> FlowResult<Value> {
    let parsed = parse(body)?;
    let task_ids: Vec<TaskId> = parsed.tasks.iter().map(|_| TaskId::new()).collect();
    Ok(json!({"batch_id": BatchId::new(), "task_ids": task_ids}))
}

fn ids(internal: &Value) -> FlowResult<(BatchId, Vec<TaskId>)> {
    let batch = internal
        .get("batch_id")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok());
    let tasks = internal
        .get("task_ids")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok());
    match (batch, tasks) {
        (Some(b), Some(t)) => Ok((b, t)),
        _ => Err(FlowError::Conflict(
            "the compute action's record lost its task ids".into(),
        )),
    }
}

/// Submits the planned batch unless it was stored already.
pub(crate) async fn begin(
    state: &AppState,
    caller: &Caller,
    body: &Value,
    internal: &Value,
) -> FlowResult<Progress> {
    let (batch_id, task_ids) = ids(internal)?;
    let first = task_ids.first().copied();
    let stored = match first {
        Some(id) => state.store.task(id).await?.is_some(),
        None => true,
    };
    if !stored {
        let parsed = parse(body)?;
        submission::submit(
            state,
            Submission {
                function_id: parsed.body.function_id,
                endpoint_id: parsed.body.endpoint_id,
                tasks: parsed.tasks,
                walltime_secs: parsed.body.walltime_secs,
                max_retries: parsed.body.max_retries,
                user_endpoint_config: parsed.body.user_endpoint_config,
                caller,
                ids: Some((batch_id, task_ids)),
            },
        )
        .await?;
    }
    refresh(state, internal).await
}

/// The tasks' states now.
pub(crate) async fn refresh(state: &AppState, internal: &Value) -> FlowResult<Progress> {
    let (batch_id, task_ids) = ids(internal)?;
    let found = state.store.tasks(&task_ids).await?;
    let mut by_id: std::collections::HashMap<TaskId, TaskInfo> =
        found.into_iter().map(|t| (t.id, t)).collect();
    let results: Vec<Value> = task_ids
        .iter()
        .map(|id| match by_id.remove(id) {
            Some(t) => json!({
                "task_id": t.id,
                "state": t.state,
                "result": t.result,
                "error": t.error,
            }),
            None => json!({"task_id": id, "state": "waiting", "result": null, "error": null}),
        })
        .collect();
    let state_of = |r: &Value| {
        r.get("state")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let finals = ["success", "failed", "cancelled"];
    let done = results
        .iter()
        .filter(|r| finals.contains(&state_of(r).as_str()))
        .count();
    let failed = results
        .iter()
        .filter(|r| matches!(state_of(r).as_str(), "failed" | "cancelled"))
        .count();
    let details = json!({
        "batch_id": batch_id,
        "total": results.len(),
        "completed": done,
        "failed": failed,
        "results": results,
    });
    Ok(if done < task_ids.len() {
        Progress::active(details)
    } else if failed == 0 {
        Progress::done(details)
    } else {
        Progress::failed(details)
    })
}

/// Cancels the tasks that are not final (best effort: a task finishing
/// meanwhile keeps its result).
pub(crate) async fn cancel(state: &AppState, caller: &Caller, internal: &Value) {
    let Ok((_, task_ids)) = ids(internal) else {
        return;
    };
    let Ok(tasks) = state.store.tasks(&task_ids).await else {
        return;
    };
    for t in tasks.into_iter().filter(|t| !t.state.is_final()) {
        if let Err(e) = crate::compute::tasks::cancel(state, caller, t.id).await {
            tracing::debug!(task_id = %t.id, error = %e, "cancelling a flow's task");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_for_one_task_or_a_batch() {
        let e = EndpointId::new();
        let f = FunctionId::new();
        let one = plan(&json!({"endpoint_id": e, "function_id": f, "args": {"x": 1}})).unwrap();
        assert_eq!(one["task_ids"].as_array().unwrap().len(), 1);
        let anchor = plan(&json!({"endpoint": e, "function": f, "kwargs": {"x": 1}})).unwrap();
        assert_eq!(anchor["task_ids"].as_array().unwrap().len(), 1);
        let batch = plan(&json!({"endpoint_id": e, "function_id": f,
            "tasks": [{"args": {"x": 1}}, {"x": 2}, {"kwargs": {"x": 3}}]}))
        .unwrap();
        assert_eq!(batch["task_ids"].as_array().unwrap().len(), 3);
        let both = plan(&json!({"endpoint_id": e, "function_id": f, "args": {}, "tasks": []}));
        assert!(both.unwrap_err().to_string().contains("not both"));
        let bad = plan(&json!({"endpoint_id": "nope", "function_id": f}));
        assert!(bad.unwrap_err().to_string().contains("compute action body"));
        let bad = plan(&json!({"endpoint_id": e, "function_id": f, "tasks": [5]}));
        assert!(bad.unwrap_err().to_string().contains("tasks[0]"));
    }
}
