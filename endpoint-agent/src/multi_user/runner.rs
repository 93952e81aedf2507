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

    /// The next final outcome of a submitted task. Cancel-safe.
    pub async fn next_outcome(&mut self) -> TaskOutcome {
        loop {
            if let PoolEvent::Finished(outcome) = self.next_event().await {
                return outcome;
            }
        }
    }

    /// The next start or final outcome of a submitted task; ends are
    /// audited. Cancel-safe.
    pub async fn next_event(&mut self) -> PoolEvent {
        let event = self.pool.next_event().await;
        if let PoolEvent::Finished(outcome) = &event {
            if let Some(held) = self.held.remove(&outcome.task_id) {
                let result = match (&outcome.status, &outcome.error) {
                    (OutcomeStatus::Success, _) => "success".to_owned(),
                    (OutcomeStatus::Failed, Some(e)) => format!("failed: {e}"),
                    (OutcomeStatus::Failed, None) => "failed".to_owned(),
                };
                self.audit("end", outcome.task_id, &held, Some(result));
            }
        }
        event
    }

    /// Stops these tasks; each is audited as cancelled.
    pub fn cancel(&mut self, task_ids: &[TaskId]) {
        self.pool.cancel(task_ids);
        for id in task_ids {
            if let Some(held) = self.held.remove(id) {
                self.audit("end", *id, &held, Some("cancelled".to_owned()));
            }
        }
    }
}

/// What the agent loop tells a running [`MultiUserRunner`].
#[derive(Debug)]
pub(crate) enum RunnerCommand {
    Submit(Box<TaskAssignment>),
    Cancel(Vec<TaskId>),
}

/// What a running [`MultiUserRunner`] tells the agent loop.
// One event exists at a time (sent, handled, dropped): its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum RunnerEvent {
    Started(lattice_protocol::frames::TaskStarted),
    Finished(TaskOutcome),
    /// The children now (after each change and periodically).
    Children(Vec<lattice_protocol::compute::ChildReport>),
}

/// How often idle children are looked for and children reported.
const REAP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `runner` on its own task until `commands` closes, then stops every
/// child (waiting for them to cancel their blocks).
pub(crate) fn spawn_runner(
    mut runner: MultiUserRunner,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<RunnerCommand>,
    events: tokio::sync::mpsc::UnboundedSender<RunnerEvent>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REAP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(RunnerCommand::Submit(task)) => {
                        let task = *task;
                        let Some(submitter) = task.submitter.clone() else {
                            let _ = events.send(RunnerEvent::Finished(refusal(
                                &task,
                                "the service did not say who submitted this task (a service older than this multi-user agent?)",
                            )));
                            continue;
                        };
                        let variables = task.user_config.clone();
                        let children = runner.pool().len();
                        if let Some(refused) = runner.submit(Identity::from(&submitter), task, variables).await {
                            let _ = events.send(RunnerEvent::Finished(refused));
                        }
                        if runner.pool().len() != children {
                            let _ = events.send(RunnerEvent::Children(runner.pool().reports()));
                        }
                    }
                    Some(RunnerCommand::Cancel(ids)) => runner.cancel(&ids),
                    None => break,
                },
                event = runner.next_event() => {
                    let sent = match event {
                        PoolEvent::Started(started) => events.send(RunnerEvent::Started(started)),
                        PoolEvent::Finished(outcome) => events.send(RunnerEvent::Finished(outcome)),
                    };
                    if sent.is_err() {
                        break;
                    }
                }
                _ = tick.tick() => {
                    let stopped = runner.pool_mut().reap_idle();
                    for user in &stopped {
                        tracing::info!(user, "stopped an idle user's agent");
                    }
                    let _ = events.send(RunnerEvent::Children(runner.pool().reports()));
                }
            }
        }
        runner.pool_mut().shutdown_gracefully().await;
    })
}

fn refusal(task: &TaskAssignment, message: &str) -> TaskOutcome {
    TaskOutcome {
        task_id: task.task_id,
        attempt: task.attempt,
        status: OutcomeStatus::Failed,
        result: None,
        error: Some(message.to_owned()),
        worker: None,
        started_at: None,
        finished_at: Utc::now(),
    }
}
