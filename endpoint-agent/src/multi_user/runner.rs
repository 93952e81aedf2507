//! [`MultiUserRunner`]: what the root agent does with each task: route it
//! ([`MultiUser::route`]), refuse it with a failed outcome (nothing runs) or
//! hand it to its user's child ([`UserPool`]), and write the audit log.

use std::collections::HashMap;

use chrono::Utc;
use lattice_protocol::frames::{OutcomeStatus, TaskAssignment, TaskOutcome};
use lattice_protocol::TaskId;

use super::audit::{now, AuditLog, AuditRecord};
use super::mapping::Identity;
use super::pool::{PoolEvent, UserPool};
use super::MultiUser;

struct Held {
    identity: Identity,
    local_user: String,
    function_id: String,
    child_pid: Option<u32>,
}

/// Routes tasks to per-user children and audits them.
pub struct MultiUserRunner {
    router: std::sync::Arc<MultiUser>,
    pool: UserPool,
    audit: AuditLog,
    held: HashMap<TaskId, Held>,
}

impl std::fmt::Debug for MultiUserRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiUserRunner")
            .field("pool", &self.pool)
            .field("held", &self.held.len())
            .finish()
    }
}

impl MultiUserRunner {
    pub fn new(router: MultiUser, pool: UserPool, audit: AuditLog) -> Self {
        Self {
            router: std::sync::Arc::new(router),
            pool,
            audit,
            held: HashMap::new(),
        }
    }

    pub fn pool(&self) -> &UserPool {
        &self.pool
    }

    pub fn pool_mut(&mut self) -> &mut UserPool {
        &mut self.pool
    }

    fn audit(&mut self, event: &str, task_id: TaskId, held: &Held, outcome: Option<String>) {
        let record = AuditRecord {
            time: now(),
            event: event.to_owned(),
            identity_id: held.identity.identity_id.clone(),
            identity_username: held.identity.username.clone(),
            local_user: held.local_user.clone(),
            function_id: held.function_id.clone(),
            task_id: task_id.to_string(),
            child_pid: held.child_pid,
            outcome,
        };
        if let Err(e) = self.audit.write(&record) {
            tracing::error!(path = %self.audit.path().display(), "cannot write the audit log: {e}");
        }
    }

    /// Takes a task from `identity`. `Some(outcome)`: it was refused (the
    /// outcome is the failure to report; nothing ran).
    pub async fn submit(
        &mut self,
        identity: Identity,
        task: TaskAssignment,
        variables: Option<serde_json::Value>,
    ) -> Option<TaskOutcome> {
        let task_id = task.task_id;
        let function_id = task.function_id.to_string();
        let router = self.router.clone();
        let (ident, fid) = (identity.clone(), function_id.clone());
        let routed =
            tokio::task::spawn_blocking(move || router.route(&ident, &fid, variables.as_ref()))
                .await
                .unwrap_or_else(|e| Err(format!("mapping failed: {e}")));
        let mut held = Held {
            identity,
            local_user: String::new(),
            function_id,
            child_pid: None,
        };
        let refused = match routed {
            Ok(route) => {
                held.local_user = route.account.name.clone();
                match self.pool.submit(route, task.clone()).await {
                    Ok(pids) => {
                        held.child_pid = pids.first().copied();
                        self.audit("start", task_id, &held, None);
                        self.held.insert(task_id, held);
                        return None;
                    }
                    Err(e) => format!(
                        "cannot start the user's agent for `{}`: {e}",
                        held.local_user
                    ),
                }
            }
            Err(message) => message,
        };
        self.audit("end", task_id, &held, Some(format!("refused: {refused}")));
        Some(TaskOutcome {
            task_id,
            attempt: task.attempt,
            status: OutcomeStatus::Failed,
            result: None,
            error: Some(refused),
            worker: None,
            started_at: None,
            finished_at: Utc::now(),
        })
    }

    /// The next final outcome of a submitted task (starts are audited on
    /// the way). Cancel-safe.
    pub async fn next_outcome(&mut self) -> TaskOutcome {
        loop {
            match self.pool.next_event().await {
                PoolEvent::Started(_) => {}
                PoolEvent::Finished(outcome) => {
                    if let Some(held) = self.held.remove(&outcome.task_id) {
                        let result = match (&outcome.status, &outcome.error) {
                            (OutcomeStatus::Success, _) => "success".to_owned(),
                            (OutcomeStatus::Failed, Some(e)) => format!("failed: {e}"),
                            (OutcomeStatus::Failed, None) => "failed".to_owned(),
                        };
                        self.audit("end", outcome.task_id, &held, Some(result));
                    }
                    return outcome;
                }
            }
        }
    }
}
