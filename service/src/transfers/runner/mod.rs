//! One task per unfinished transfer: runs its items in order, each as a
//! series of attempts until it succeeds, fails for good, is cancelled or
//! passes the deadline.
//!
//! An attempt: a fresh one-time credential; `Listen` to the destination
//! agent (which answers with its address and certificate fingerprint);
//! `Send` to the source agent; progress and faults recorded as reported;
//! both sides' `Done` end it. The engine transfer id (`<task id>.<item>`)
//! is the same for every attempt of an item, so the destination's restart
//! journal makes a retry resume. While either endpoint is offline the task
//! is `paused`; it resumes when both are back. Before every attempt the
//! owner's access is checked again (`crate::sharing::access::check_item`):
//! a refusal ends the task with a `PERMISSION_DENIED` event.
//!
//! A delete task ([`TaskKind::Delete`]) has one collection: each attempt is
//! a `TransferCommand::Delete` to its agent, which reports like a
//! destination (progress, then `Done`).
//!
//! The module, by job:
//! - this file: [`spawn`], the engine transfer ids, and the loop over a
//!   task's items (load, wait online, check access, attempt, act on the
//!   decision, finish);
//! - `attempt.rs`: one transfer attempt (listen, send, collect reports);
//! - `delete.rs`: one delete attempt;
//! - `policy.rs`: the pure part: what an attempt came to, the next step
//!   and the backoff (`policy::decide`), the error that explains an
//!   attempt;
//! - `progress.rs`: the counters, the task's progress and writing it and
//!   its events;
//! - `wait.rs`: the inbox, sleeping, and pausing while an endpoint is
//!   offline.
//!
//! This file must not grow attempt or retry rules of its own: it runs what
//! `policy.rs` decides.

mod attempt;
mod delete;
mod policy;
mod progress;
mod wait;

use std::ops::ControlFlow;
use std::time::Duration;

use chrono::Utc;
use lattice_protocol::frames::ServiceFrame;
use lattice_protocol::transfer::{
    AttemptSpec, FaultCode, TaskKind, TransferCommand, TransferCounters, TransferItem,
    TransferStatus,
};
use lattice_protocol::{EndpointId, TransferId};
use tokio::sync::mpsc;

use super::{agent_target, AgentTarget, RunnerInput};
use crate::sharing::access;
use crate::sharing::{SharingError, Viewer};
use crate::state::AppState;
use crate::store::{CollectionRecord, StoreResult, TransferRecord};
use policy::{Attempt, Fault, Step, BACKOFF_INITIAL};
use progress::{add, Progress};

/// The engine's transfer id of one item (names the destination's journal).
pub fn engine_id(id: TransferId, item: usize) -> String {
    format!("{id}.{item}")
}

/// The task an engine transfer id belongs to.
pub fn transfer_of(engine_id: &str) -> Option<TransferId> {
    let (id, _) = engine_id.split_once('.')?;
    id.parse().ok()
}

/// Starts the runner of a transfer unless one already runs on this replica.
pub fn spawn(state: AppState, id: TransferId) {
    let (tx, inbox) = mpsc::unbounded_channel();
    if !state.data.add_runner(id, tx) {
        return;
    }
    tokio::spawn(async move {
        let mut runner = Runner {
            state: state.clone(),
            id,
            inbox,
        };
        if let Err(e) = runner.run().await {
            tracing::error!(transfer_id = %id, error = %e, "transfer runner stopped on a store error; it resumes at the next service start");
        }
        state.data.remove_runner(id);
    });
}

struct Runner {
    state: AppState,
    id: TransferId,
    inbox: mpsc::UnboundedReceiver<RunnerInput>,
}

/// A task's collections and where their agents find them.
struct Sides {
    source: CollectionRecord,
    destination: CollectionRecord,
    source_target: AgentTarget,
    destination_target: AgentTarget,
}

impl Runner {
    async fn run(&mut self) -> StoreResult<()> {
        let Some(record) = self.state.store.transfer(self.id).await? else {
            return Ok(());
        };
        if record.status.is_final() {
            return Ok(());
        }
        let faults = self.state.store.count_transfer_faults(self.id).await?;
        let mut progress = Progress {
            status: record.status,
            message: record.status_message.clone(),
            items_done: record.items_done,
            attempts: record.attempts,
            done: record.counters.clone(),
            live_source: TransferCounters::default(),
            live_destination: TransferCounters::default(),
            faults,
            last_write: None,
        };
        let sides = match self.sides(&record).await? {
            Ok(sides) => sides,
            Err(message) => {
                return self
                    .finish(&mut progress, TransferStatus::Failed, "FAILED", message)
                    .await
            }
        };
        let mut backoff = BACKOFF_INITIAL;
        // Whether an attempt of the current item may have run. A runner
        // resuming a started task (after a service restart) cannot tell, and
        // assumes so.
        let mut item_retry = record.attempts > 0;
        while (progress.items_done as usize) < record.items.len() {
            let outcome = match self
                .next_attempt(&record, &mut progress, &sides, item_retry)
                .await?
            {
                ControlFlow::Continue(outcome) => outcome,
                ControlFlow::Break(()) => return Ok(()),
            };
            let attempt = progress.attempts;
            let flow = self
                .conclude(
                    &record,
                    &mut progress,
                    &sides,
                    attempt,
                    outcome,
                    &mut backoff,
                )
                .await?;
            match flow {
                ControlFlow::Continue(next_item) => item_retry = !next_item,
                ControlFlow::Break(()) => return Ok(()),
            }
        }
        let message = match record.kind {
            TaskKind::Transfer => format!("{} item(s) transferred", progress.items_done),
            TaskKind::Delete { .. } => {
                let counters = progress.counters();
                format!(
                    "{} path(s) deleted: {} file(s), {} directory(ies) removed",
                    progress.items_done, counters.files, counters.directories
                )
            }
        };
        self.finish(
            &mut progress,
            TransferStatus::Succeeded,
            "SUCCEEDED",
            message,
        )
        .await
    }

    /// The task's collections and their agent targets, or why the task
    /// cannot run.
    async fn sides(&self, record: &TransferRecord) -> StoreResult<Result<Sides, String>> {
        let (Some(source), Some(destination)) = (
            self.state
                .store
                .collection(record.source_collection)
                .await?,
            self.state
                .store
                .collection(record.destination_collection)
                .await?,
        ) else {
            return Ok(Err("a collection of this transfer no longer exists".into()));
        };
        // Where the agents find the collections (a guest collection's host
        // and subtree).
        let (Some(source_target), Some(destination_target)) = (
            agent_target(&self.state, &source).await?,
            agent_target(&self.state, &destination).await?,
        ) else {
            return Ok(Err(
                "the host collection of a guest collection of this transfer is no longer available"
                    .into(),
            ));
        };
        Ok(Ok(Sides {
            source,
            destination,
            source_target,
            destination_target,
        }))
    }

    /// Waits for both endpoints, checks access and runs one attempt of the
    /// current item; `Break` if the task ended before the attempt.
    async fn next_attempt(
        &mut self,
        record: &TransferRecord,
        progress: &mut Progress,
        sides: &Sides,
        item_retry: bool,
    ) -> StoreResult<ControlFlow<(), Attempt>> {
        let item_index = progress.items_done as usize;
        let item = &record.items[item_index];
        let endpoints = [
            sides.source_target.endpoint,
            sides.destination_target.endpoint,
        ];
        // Wait for both endpoints (paused meanwhile).
        if let Err(stop) = self.wait_online(record, progress, endpoints).await? {
            self.discard(record, progress, &sides.destination_target);
            self.stopped(progress, stop).await?;
            return Ok(ControlFlow::Break(()));
        }
        // Access is checked again before every attempt: a deleted or
        // expired rule, or a group membership that ended, stops the task
        // here, before anything more is copied.
        if let Err(denied) = self
            .check_access(record, (&sides.source, &sides.destination), item)
            .await?
        {
            self.event(
                item_index,
                progress.attempts,
                FaultCode::PermissionDenied.as_str(),
                true,
                None,
                None,
                &denied,
            )
            .await?;
            progress.faults += 1;
            self.discard(record, progress, &sides.destination_target);
            self.finish(
                progress,
                TransferStatus::Failed,
                "FAILED",
                format!("PERMISSION_DENIED: {denied}"),
            )
            .await?;
            return Ok(ControlFlow::Break(()));
        }
        progress.attempts += 1;
        let attempt = progress.attempts;
        let spec = AttemptSpec {
            transfer_id: engine_id(self.id, item_index),
            source_path: item.source_path.clone(),
            destination_path: item.destination_path.clone(),
            recursive: item.recursive,
            options: record.options.clone(),
            tuning: record.tuning,
        };
        progress.reset_live();
        self.write(progress, true).await?;
        tracing::info!(transfer_id = %self.id, item = item_index, attempt, "transfer attempt starting");
        let outcome = match record.kind {
            TaskKind::Transfer => {
                self.attempt(
                    record,
                    progress,
                    attempt,
                    spec,
                    &sides.source_target,
                    &sides.destination_target,
                )
                .await?
            }
            TaskKind::Delete { ignore_missing } => {
                // A retry may find the path gone: an earlier attempt of
                // this item removed it.
                self.delete_attempt(
                    record,
                    progress,
                    attempt,
                    spec,
                    ignore_missing || item_retry,
                    &sides.source_target,
                )
                .await?
            }
        };
        Ok(ControlFlow::Continue(outcome))
    }

    /// Counts what the attempt did and acts on [`policy::decide`]:
    /// `Continue(true)` on to the next item, `Continue(false)` to retry
    /// this one, `Break` when the task ended.
    async fn conclude(
        &mut self,
        record: &TransferRecord,
        progress: &mut Progress,
        sides: &Sides,
        attempt: u32,
        outcome: Attempt,
        backoff: &mut Duration,
    ) -> StoreResult<ControlFlow<(), bool>> {
        let item_index = progress.items_done as usize;
        // What the attempt reported so far: its total if it was stopped
        // (the agents' Done reports then never come).
        let reported = progress.live();
        progress.reset_live();
        let decision = policy::decide(&outcome, attempt, *backoff, record.deadline, Utc::now());
        *backoff = decision.backoff;
        match outcome {
            Attempt::Succeeded {
                counters,
                checksums,
            } => {
                progress.done = add(&progress.done, &counters);
                self.state
                    .store
                    .insert_checksums(self.id, item_index as u32, &checksums)
                    .await?;
            }
            Attempt::Failed { counters, .. } => progress.done = add(&progress.done, &counters),
            Attempt::Stopped(_) => progress.done = add(&progress.done, &reported),
        }
        let destination = &sides.destination_target;
        match decision.step {
            Step::NextItem => {
                progress.items_done += 1;
                self.write(progress, true).await?;
                return Ok(ControlFlow::Continue(true));
            }
            Step::Retry { fault, delay } => {
                self.fault(progress, item_index, attempt, fault).await?;
                if let Err(stop) = self.sleep(delay, record.deadline).await {
                    self.discard(record, progress, destination);
                    self.stopped(progress, stop).await?;
                    return Ok(ControlFlow::Break(()));
                }
                return Ok(ControlFlow::Continue(false));
            }
            Step::UntilDeadline { fault, wait } => {
                self.fault(progress, item_index, attempt, fault).await?;
                let stop = self
                    .sleep(wait, record.deadline)
                    .await
                    .err()
                    .unwrap_or(policy::Stop::Deadline);
                self.discard(record, progress, destination);
                self.stopped(progress, stop).await?;
            }
            Step::Fail { fault, message } => {
                self.event(
                    item_index,
                    attempt,
                    fault.code.as_str(),
                    true,
                    None,
                    None,
                    &fault.message,
                )
                .await?;
                progress.faults += 1;
                self.discard(record, progress, destination);
                self.finish(progress, TransferStatus::Failed, "FAILED", message)
                    .await?;
            }
            Step::Stop(stop) => {
                self.discard(record, progress, destination);
                self.stopped(progress, stop).await?;
            }
        }
        Ok(ControlFlow::Break(()))
    }

    /// Records a failed attempt that will be retried: its fault event, and
    /// its message as the task's.
    async fn fault(
        &self,
        progress: &mut Progress,
        item: usize,
        attempt: u32,
        fault: Fault,
    ) -> StoreResult<()> {
        self.event(
            item,
            attempt,
            fault.code.as_str(),
            true,
            None,
            None,
            &fault.message,
        )
        .await?;
        progress.faults += 1;
        progress.message = Some(fault.message);
        self.write(progress, true).await
    }

    /// Tells the agents of `endpoints` to abort `transfer_id`.
    fn abort(&self, transfer_id: &str, endpoints: &[EndpointId]) {
        for endpoint in endpoints {
            self.state.agents.send_one(
                *endpoint,
                ServiceFrame::Transfer {
                    command: Box::new(TransferCommand::Abort {
                        transfer_id: transfer_id.to_owned(),
                    }),
                },
            );
        }
    }

    /// The task ends without the current item: the destination agent
    /// removes what its attempts left (partial files, journal), which no
    /// retry will resume. Sent after any `Abort`, on the same connection.
    /// An offline destination keeps them.
    fn discard(&self, record: &TransferRecord, progress: &Progress, destination: &AgentTarget) {
        if record.kind != TaskKind::Transfer || progress.attempts == 0 {
            return;
        }
        let index = progress.items_done as usize;
        let Some(item) = record.items.get(index) else {
            return;
        };
        let command = TransferCommand::Discard {
            transfer_id: engine_id(self.id, index),
            collection: destination.name.clone(),
            subtree: destination.subtree.clone(),
            destination_path: item.destination_path.clone(),
        };
        let sent = self.state.agents.send_one(
            destination.endpoint,
            ServiceFrame::Transfer {
                command: Box::new(command),
            },
        );
        if !sent {
            tracing::info!(transfer_id = %self.id, item = index, "the destination is offline: what the item's attempts left there stays");
        }
    }

    /// `` `name` (id) `` of an endpoint for messages; the id alone if the
    /// store cannot say.
    async fn endpoint_label(&self, id: EndpointId) -> String {
        match self.state.store.endpoint(id).await {
            Ok(Some(endpoint)) => format!("`{}` ({id})", endpoint.name),
            _ => id.to_string(),
        }
    }

    /// Whether the task's owner may still do `item`: `Err` with the reason
    /// if not.
    async fn check_access(
        &self,
        record: &TransferRecord,
        collections: (&CollectionRecord, &CollectionRecord),
        item: &TransferItem,
    ) -> StoreResult<Result<(), String>> {
        // The owner of agent-hosted collections may always use them: a
        // task between one's own collections costs no query per attempt.
        let (source, destination) = collections;
        if access::owns_outright(record.owner_id, source)
            && access::owns_outright(record.owner_id, destination)
        {
            return Ok(Ok(()));
        }
        let viewer = Viewer::of(&self.state.store, record.owner_id).await?;
        match access::check_item(&self.state.store, &viewer, &record.kind, collections, item).await
        {
            Ok(()) => Ok(Ok(())),
            Err(SharingError::Store(e)) => Err(e),
            Err(refused) => Ok(Err(refused.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_ids_name_their_task() {
        let id = TransferId::new();
        assert_eq!(transfer_of(&engine_id(id, 3)), Some(id));
        assert_eq!(transfer_of("nonsense"), None);
    }
}
