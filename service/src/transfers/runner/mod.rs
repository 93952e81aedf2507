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

use std::time::Duration;

use chrono::Utc;
use lattice_protocol::frames::ServiceFrame;
use lattice_protocol::transfer::{
    AttemptError, AttemptSpec, FaultCode, FileChecksum, Side, TaskKind, TransferCommand,
    TransferCounters, TransferItem, TransferReport, TransferStatus,
};
use lattice_protocol::{EndpointId, TransferId};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{agent_target, AgentTarget, RunnerInput};
use crate::sharing::access;
use crate::sharing::{SharingError, Viewer};
use crate::state::AppState;
use crate::store::{
    CollectionRecord, NewTransferEvent, StoreResult, TransferProgress, TransferRecord,
};

/// First retry delay; doubles up to [`BACKOFF_MAX`].
const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long the destination has to say it listens.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// After one side failed, how long the other may take to end by itself
/// before it is told to abort.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// After one side failed, how long the other has to report its end.
const PEER_DONE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a paused task checks whether its endpoints are back.
const PAUSE_POLL: Duration = Duration::from_millis(250);
/// Least time between two progress writes to the store.
const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_millis(500);

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

/// How a runner's wait ended.
enum Stop {
    Cancelled,
    Deadline,
}

/// What one attempt came to.
enum Attempt {
    Succeeded {
        counters: TransferCounters,
        checksums: Vec<FileChecksum>,
    },
    Failed {
        error: AttemptError,
        counters: TransferCounters,
    },
    Stopped(Stop),
}

struct Runner {
    state: AppState,
    id: TransferId,
    inbox: mpsc::UnboundedReceiver<RunnerInput>,
}

/// Mutable progress of the task, written to the store.
struct Progress {
    status: TransferStatus,
    message: Option<String>,
    items_done: u32,
    attempts: u32,
    /// Sum over finished attempts.
    done: TransferCounters,
    /// The current attempt's, per side.
    live_source: TransferCounters,
    live_destination: TransferCounters,
    faults: u64,
    last_write: Option<Instant>,
}

impl Progress {
    fn counters(&self) -> TransferCounters {
        let live = merge(&self.live_source, &self.live_destination);
        let mut total = add(&self.done, &live);
        total.faults = self.faults;
        total
    }
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
            return self
                .finish(
                    &mut progress,
                    TransferStatus::Failed,
                    "FAILED",
                    "a collection of this transfer no longer exists".into(),
                )
                .await;
        };
        // Where the agents find the collections (a guest collection's host
        // and subtree).
        let (Some(source_target), Some(destination_target)) = (
            agent_target(&self.state, &source).await?,
            agent_target(&self.state, &destination).await?,
        ) else {
            return self
                .finish(
                    &mut progress,
                    TransferStatus::Failed,
                    "FAILED",
                    "the host collection of a guest collection of this transfer is no longer available".into(),
                )
                .await;
        };
        let endpoints = [source_target.endpoint, destination_target.endpoint];
        let mut backoff = BACKOFF_INITIAL;
        // Whether an attempt of the current item may have run. A runner
        // resuming a started task (after a service restart) cannot tell, and
        // assumes so.
        let mut item_retry = record.attempts > 0;
        while (progress.items_done as usize) < record.items.len() {
            let item_index = progress.items_done as usize;
            let item = &record.items[item_index];
            // Wait for both endpoints (paused meanwhile).
            match self.wait_online(&record, &mut progress, endpoints).await? {
                Ok(()) => {}
                Err(stop) => {
                    self.discard(&record, &progress, &destination_target);
                    return self.stopped(&mut progress, stop).await;
                }
            }
            // Access is checked again before every attempt: a deleted or
            // expired rule, or a group membership that ended, stops the
            // task here, before anything more is copied.
            if let Err(denied) = self
                .check_access(&record, (&source, &destination), item)
                .await?
            {
                self.event(
                    item_index,
                    progress.attempts,
                    "PERMISSION_DENIED",
                    true,
                    None,
                    None,
                    &denied,
                )
                .await?;
                progress.faults += 1;
                self.discard(&record, &progress, &destination_target);
                return self
                    .finish(
                        &mut progress,
                        TransferStatus::Failed,
                        "FAILED",
                        format!("PERMISSION_DENIED: {denied}"),
                    )
                    .await;
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
            progress.live_source = TransferCounters::default();
            progress.live_destination = TransferCounters::default();
            self.write(&mut progress, true).await?;
            tracing::info!(transfer_id = %self.id, item = item_index, attempt, "transfer attempt starting");
            let outcome = match record.kind {
                TaskKind::Transfer => {
                    self.attempt(
                        &record,
                        &mut progress,
                        attempt,
                        spec,
                        &source_target,
                        &destination_target,
                    )
                    .await?
                }
                TaskKind::Delete { ignore_missing } => {
                    // A retry may find the path gone: an earlier attempt of
                    // this item removed it.
                    self.delete_attempt(
                        &record,
                        &mut progress,
                        attempt,
                        spec,
                        ignore_missing || item_retry,
                        &source_target,
                    )
                    .await?
                }
            };
            item_retry = true;
            // What the attempt reported so far: its total if it was stopped
            // (the agents' Done reports then never come).
            let reported = merge(&progress.live_source, &progress.live_destination);
            progress.live_source = TransferCounters::default();
            progress.live_destination = TransferCounters::default();
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
                    progress.items_done += 1;
                    backoff = BACKOFF_INITIAL;
                    item_retry = false;
                    self.write(&mut progress, true).await?;
                }
                Attempt::Failed { error, counters } => {
                    progress.done = add(&progress.done, &counters);
                    let retry = error.retryable;
                    let message = if retry {
                        format!(
                            "attempt {attempt} failed: {}; retrying in {} ms",
                            error.message,
                            backoff.as_millis()
                        )
                    } else {
                        format!("attempt {attempt} failed: {}", error.message)
                    };
                    self.event(
                        item_index,
                        attempt,
                        error.code.as_str(),
                        true,
                        None,
                        None,
                        &message,
                    )
                    .await?;
                    progress.faults += 1;
                    if !retry {
                        self.discard(&record, &progress, &destination_target);
                        return self
                            .finish(
                                &mut progress,
                                TransferStatus::Failed,
                                "FAILED",
                                format!("{}: {}", error.code, error.message),
                            )
                            .await;
                    }
                    progress.message = Some(message);
                    self.write(&mut progress, true).await?;
                    if let Err(stop) = self.sleep(backoff, record.deadline).await {
                        self.discard(&record, &progress, &destination_target);
                        return self.stopped(&mut progress, stop).await;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Attempt::Stopped(stop) => {
                    progress.done = add(&progress.done, &reported);
                    self.discard(&record, &progress, &destination_target);
                    return self.stopped(&mut progress, stop).await;
                }
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

    /// Runs one attempt of one item.
    async fn attempt(
        &mut self,
        record: &TransferRecord,
        progress: &mut Progress,
        attempt: u32,
        spec: AttemptSpec,
        source_target: &AgentTarget,
        destination_target: &AgentTarget,
    ) -> StoreResult<Attempt> {
        let (source, destination) = (source_target.endpoint, destination_target.endpoint);
        let item = progress.items_done as usize;
        let transfer_id = spec.transfer_id.clone();
        let credential = new_credential();
        let Some(source_fingerprint) = self.state.data.fingerprint(source) else {
            return Ok(retryable(
                FaultCode::ConnectFailed,
                "the source agent went offline",
            ));
        };
        let listen = TransferCommand::Listen {
            attempt,
            collection: destination_target.name.clone(),
            subtree: destination_target.subtree.clone(),
            spec: spec.clone(),
            source_fingerprint,
            credential: credential.clone(),
        };
        if !self.state.agents.send_one(
            destination,
            ServiceFrame::Transfer {
                command: Box::new(listen),
            },
        ) {
            return Ok(retryable(
                FaultCode::ConnectFailed,
                "the destination agent went offline",
            ));
        }
        // 1. The destination listens.
        let listen_deadline = Instant::now() + LISTEN_TIMEOUT;
        let (address, fingerprint) = loop {
            let input = match self.next_input(listen_deadline, record.deadline).await {
                Ok(Some(input)) => input,
                Ok(None) => {
                    self.abort(&transfer_id, &[destination]);
                    return Ok(retryable(
                        FaultCode::ConnectFailed,
                        "the destination agent did not start listening in time",
                    ));
                }
                Err(stop) => {
                    self.abort(&transfer_id, &[destination]);
                    return Ok(Attempt::Stopped(stop));
                }
            };
            match input {
                RunnerInput::Cancel => {
                    self.abort(&transfer_id, &[destination]);
                    return Ok(Attempt::Stopped(Stop::Cancelled));
                }
                RunnerInput::EndpointGone(e) if e == destination || e == source => {
                    self.abort(&transfer_id, &[source, destination]);
                    return Ok(retryable(
                        FaultCode::ConnectionReset,
                        &format!("endpoint {e} went offline"),
                    ));
                }
                RunnerInput::EndpointGone(_) => {}
                RunnerInput::Report { from, report } => {
                    if report.attempt() != attempt || report.transfer_id() != transfer_id {
                        continue;
                    }
                    match report {
                        TransferReport::Listening {
                            address,
                            fingerprint,
                            ..
                        } if from == destination => break (address, fingerprint),
                        TransferReport::Done {
                            error: Some(error),
                            counters,
                            ..
                        } if from == destination => {
                            return Ok(Attempt::Failed { error, counters });
                        }
                        other => {
                            self.report(progress, item, attempt, from, [source, destination], other)
                                .await?
                        }
                    }
                }
            }
        };
        // 2. The source sends.
        let send = TransferCommand::Send {
            attempt,
            collection: source_target.name.clone(),
            subtree: source_target.subtree.clone(),
            spec,
            destination: address,
            destination_fingerprint: fingerprint,
            credential,
        };
        if !self.state.agents.send_one(
            source,
            ServiceFrame::Transfer {
                command: Box::new(send),
            },
        ) {
            self.abort(&transfer_id, &[destination]);
            return Ok(retryable(
                FaultCode::ConnectFailed,
                "the source agent went offline",
            ));
        }
        // 3. Both sides report their end.
        let mut source_done: Option<(TransferCounters, Vec<FileChecksum>, Option<AttemptError>)> =
            None;
        let mut destination_done: Option<(TransferCounters, Option<AttemptError>)> = None;
        let mut peer_deadline: Option<Instant> = None;
        // After one side failed, the other usually ends by itself (it saw the
        // same fault on the connection); it is aborted only if it has not
        // after ABORT_GRACE, so that it can finish its clean-up (a final
        // failure removes its partial files and journal).
        let mut abort_peer_at: Option<(Instant, EndpointId)> = None;
        loop {
            if let (Some(s), Some(d)) = (&source_done, &destination_done) {
                let counters = merge(&s.0, &d.0);
                return Ok(match (&s.2, &d.1) {
                    (None, None) => Attempt::Succeeded {
                        counters,
                        checksums: s.1.clone(),
                    },
                    (s_err, d_err) => Attempt::Failed {
                        error: pick_error(s_err.as_ref(), d_err.as_ref()),
                        counters,
                    },
                });
            }
            let wait_until = abort_peer_at
                .map(|(at, _)| at)
                .or(peer_deadline)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let input = match self.next_input(wait_until, record.deadline).await {
                Ok(Some(input)) => input,
                Ok(None) if abort_peer_at.is_some() => {
                    if let Some((_, peer)) = abort_peer_at.take() {
                        self.abort(&transfer_id, &[peer]);
                    }
                    continue;
                }
                Ok(None) => {
                    // One side failed and the other never reported: give up on it.
                    self.abort(&transfer_id, &[source, destination]);
                    let error = source_done
                        .as_ref()
                        .and_then(|s| s.2.clone())
                        .or_else(|| destination_done.as_ref().and_then(|d| d.1.clone()))
                        .unwrap_or_else(|| AttemptError {
                            code: FaultCode::ConnectionReset,
                            message: "an agent stopped reporting".into(),
                            retryable: true,
                        });
                    let counters = merge(
                        &source_done.map(|s| s.0).unwrap_or_default(),
                        &destination_done.map(|d| d.0).unwrap_or_default(),
                    );
                    return Ok(Attempt::Failed { error, counters });
                }
                Err(stop) => {
                    self.abort(&transfer_id, &[source, destination]);
                    return Ok(Attempt::Stopped(stop));
                }
            };
            match input {
                RunnerInput::Cancel => {
                    self.abort(&transfer_id, &[source, destination]);
                    return Ok(Attempt::Stopped(Stop::Cancelled));
                }
                RunnerInput::EndpointGone(e) if e == destination || e == source => {
                    self.abort(&transfer_id, &[source, destination]);
                    let counters = merge(&progress.live_source, &progress.live_destination);
                    return Ok(Attempt::Failed {
                        error: AttemptError {
                            code: FaultCode::ConnectionReset,
                            message: format!(
                                "endpoint {} went offline; the transfer resumes when it reconnects",
                                self.endpoint_label(e).await
                            ),
                            retryable: true,
                        },
                        counters,
                    });
                }
                RunnerInput::EndpointGone(_) => {}
                RunnerInput::Report { from, report } => {
                    if report.attempt() != attempt || report.transfer_id() != transfer_id {
                        continue;
                    }
                    match report {
                        TransferReport::Done {
                            side: Side::Source,
                            counters,
                            checksums,
                            error,
                            ..
                        } if from == source => {
                            if error.is_some() && destination_done.is_none() {
                                abort_peer_at = Some((Instant::now() + ABORT_GRACE, destination));
                                peer_deadline = Some(Instant::now() + PEER_DONE_TIMEOUT);
                            }
                            progress.live_source = counters.clone();
                            source_done = Some((counters, checksums, error));
                        }
                        TransferReport::Done {
                            side: Side::Destination,
                            counters,
                            error,
                            ..
                        } if from == destination => {
                            if error.is_some() && source_done.is_none() {
                                abort_peer_at = Some((Instant::now() + ABORT_GRACE, source));
                                peer_deadline = Some(Instant::now() + PEER_DONE_TIMEOUT);
                            }
                            progress.live_destination = counters.clone();
                            destination_done = Some((counters, error));
                        }
                        other => {
                            self.report(progress, item, attempt, from, [source, destination], other)
                                .await?
                        }
                    }
                }
            }
        }
    }

    /// Runs one attempt of one item of a delete task on the collection's
    /// agent. No timeout: a large tree takes as long as it takes, and the
    /// agent going away ends the attempt.
    async fn delete_attempt(
        &mut self,
        record: &TransferRecord,
        progress: &mut Progress,
        attempt: u32,
        spec: AttemptSpec,
        ignore_missing: bool,
        target: &AgentTarget,
    ) -> StoreResult<Attempt> {
        let endpoint = target.endpoint;
        let transfer_id = spec.transfer_id.clone();
        let command = TransferCommand::Delete {
            attempt,
            collection: target.name.clone(),
            subtree: target.subtree.clone(),
            transfer_id: transfer_id.clone(),
            path: spec.source_path,
            recursive: spec.recursive,
            ignore_missing,
        };
        if !self.state.agents.send_one(
            endpoint,
            ServiceFrame::Transfer {
                command: Box::new(command),
            },
        ) {
            return Ok(retryable(
                FaultCode::ConnectFailed,
                "the collection's agent went offline",
            ));
        }
        loop {
            let input = match self
                .next_input(Instant::now() + Duration::from_secs(3600), record.deadline)
                .await
            {
                Ok(Some(input)) => input,
                Ok(None) => continue,
                Err(stop) => {
                    self.abort(&transfer_id, &[endpoint]);
                    return Ok(Attempt::Stopped(stop));
                }
            };
            match input {
                RunnerInput::Cancel => {
                    self.abort(&transfer_id, &[endpoint]);
                    return Ok(Attempt::Stopped(Stop::Cancelled));
                }
                RunnerInput::EndpointGone(e) if e == endpoint => {
                    return Ok(Attempt::Failed {
                        error: AttemptError {
                            code: FaultCode::ConnectionReset,
                            message: format!(
                                "endpoint {} went offline; the delete resumes when it reconnects",
                                self.endpoint_label(e).await
                            ),
                            retryable: true,
                        },
                        counters: progress.live_destination.clone(),
                    });
                }
                RunnerInput::EndpointGone(_) => {}
                RunnerInput::Report { from, report } => {
                    if from != endpoint
                        || report.attempt() != attempt
                        || report.transfer_id() != transfer_id
                    {
                        continue;
                    }
                    match report {
                        TransferReport::Done {
                            counters, error, ..
                        } => {
                            return Ok(match error {
                                None => Attempt::Succeeded {
                                    counters,
                                    checksums: Vec::new(),
                                },
                                Some(error) => Attempt::Failed { error, counters },
                            })
                        }
                        TransferReport::Progress { counters, .. } => {
                            progress.live_destination = counters;
                            self.write(progress, false).await?;
                        }
                        TransferReport::Fault { .. } | TransferReport::Listening { .. } => {}
                    }
                }
            }
        }
    }

    /// Records a progress or fault report.
    async fn report(
        &self,
        progress: &mut Progress,
        item: usize,
        attempt: u32,
        from: EndpointId,
        [source, destination]: [EndpointId; 2],
        report: TransferReport,
    ) -> StoreResult<()> {
        match report {
            TransferReport::Progress { side, counters, .. } => {
                match side {
                    Side::Source if from == source => progress.live_source = counters,
                    Side::Destination if from == destination => {
                        progress.live_destination = counters
                    }
                    _ => return Ok(()),
                }
                self.write(progress, false).await
            }
            TransferReport::Fault { event, .. } => {
                // Each side passes on its peer's events too: record an event
                // once, from the side that saw it.
                let reporter = if from == source {
                    Side::Source
                } else {
                    Side::Destination
                };
                if event.side != reporter || (from != source && from != destination) {
                    return Ok(());
                }
                progress.faults += 1;
                self.event(
                    item,
                    attempt,
                    event.code.as_str(),
                    true,
                    Some(event.side),
                    event.path.as_deref(),
                    &event.message,
                )
                .await?;
                self.write(progress, false).await
            }
            TransferReport::Listening { .. } | TransferReport::Done { .. } => Ok(()),
        }
    }

    /// Waits until both endpoints' agents are connected (with data planes),
    /// pausing the task meanwhile.
    async fn wait_online(
        &mut self,
        record: &TransferRecord,
        progress: &mut Progress,
        endpoints: [EndpointId; 2],
    ) -> StoreResult<Result<(), Stop>> {
        let mut paused = false;
        loop {
            if self.cancelled_in_store().await? {
                return Ok(Err(Stop::Cancelled));
            }
            if record.deadline.is_some_and(|d| d <= Utc::now()) {
                return Ok(Err(Stop::Deadline));
            }
            let offline: Vec<EndpointId> = endpoints
                .iter()
                .copied()
                .filter(|e| self.state.data.fingerprint(*e).is_none())
                .collect();
            if offline.is_empty() {
                if paused || progress.status == TransferStatus::Paused {
                    progress.status = TransferStatus::Active;
                    progress.message = None;
                    self.event(
                        progress.items_done as usize,
                        progress.attempts,
                        "RESUMED",
                        false,
                        None,
                        None,
                        "every endpoint is online again; resuming",
                    )
                    .await?;
                    self.write(progress, true).await?;
                }
                return Ok(Ok(()));
            }
            if !paused {
                paused = true;
                let mut labels = Vec::with_capacity(offline.len());
                for id in &offline {
                    labels.push(self.endpoint_label(*id).await);
                }
                let message = format!(
                    "paused: endpoint {} is offline; the transfer resumes when its agent reconnects",
                    labels.join(" and ")
                );
                if progress.status != TransferStatus::Paused {
                    self.event(
                        progress.items_done as usize,
                        progress.attempts,
                        "PAUSED",
                        false,
                        None,
                        None,
                        &message,
                    )
                    .await?;
                }
                progress.status = TransferStatus::Paused;
                progress.message = Some(message);
                self.write(progress, true).await?;
            }
            if let Err(stop) = self.sleep(PAUSE_POLL, record.deadline).await {
                return Ok(Err(stop));
            }
        }
    }

    /// Sleeps, ending early on cancel or deadline. Reports arriving
    /// meanwhile belong to finished attempts and are dropped.
    async fn sleep(
        &mut self,
        duration: Duration,
        deadline: Option<chrono::DateTime<Utc>>,
    ) -> Result<(), Stop> {
        let until = Instant::now() + duration;
        loop {
            match self.next_input(until, deadline).await {
                Ok(None) => return Ok(()),
                Ok(Some(RunnerInput::Cancel)) => return Err(Stop::Cancelled),
                Ok(Some(_)) => continue,
                Err(stop) => return Err(stop),
            }
        }
    }

    /// The next input before `until` (`Ok(None)` then), or the deadline.
    async fn next_input(
        &mut self,
        until: Instant,
        deadline: Option<chrono::DateTime<Utc>>,
    ) -> Result<Option<RunnerInput>, Stop> {
        let deadline_in = deadline.map(|d| (d - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        let deadline_at = deadline_in.map(|d| Instant::now() + d);
        tokio::select! {
            input = self.inbox.recv() => Ok(input),
            () = tokio::time::sleep_until(until) => Ok(None),
            () = sleep_until_opt(deadline_at) => Err(Stop::Deadline),
        }
    }

    async fn cancelled_in_store(&self) -> StoreResult<bool> {
        Ok(self
            .state
            .store
            .transfer(self.id)
            .await?
            .is_none_or(|t| t.status.is_final()))
    }

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

    async fn stopped(&self, progress: &mut Progress, stop: Stop) -> StoreResult<()> {
        match stop {
            Stop::Cancelled => {
                // The route already recorded the cancel (status and event).
                Ok(())
            }
            Stop::Deadline => {
                self.finish(
                    progress,
                    TransferStatus::Failed,
                    "DEADLINE_EXCEEDED",
                    "the deadline passed before the transfer completed".into(),
                )
                .await
            }
        }
    }

    async fn finish(
        &self,
        progress: &mut Progress,
        status: TransferStatus,
        code: &str,
        message: String,
    ) -> StoreResult<()> {
        progress.status = status;
        progress.message = Some(message.clone());
        let counters = progress.counters();
        let written = self
            .state
            .store
            .update_transfer(
                self.id,
                &TransferProgress {
                    status,
                    status_message: Some(&message),
                    items_done: progress.items_done,
                    attempts: progress.attempts,
                    counters: &counters,
                    completed_at: Some(Utc::now()),
                },
            )
            .await?;
        if written {
            self.event(
                progress.items_done as usize,
                progress.attempts,
                code,
                false,
                None,
                None,
                &message,
            )
            .await?;
            tracing::info!(transfer_id = %self.id, status = status.as_str(), message, "transfer finished");
        }
        Ok(())
    }

    /// Writes progress (at most every [`PROGRESS_WRITE_INTERVAL`] unless `now`).
    async fn write(&self, progress: &mut Progress, now: bool) -> StoreResult<()> {
        if !now
            && progress
                .last_write
                .is_some_and(|t| t.elapsed() < PROGRESS_WRITE_INTERVAL)
        {
            return Ok(());
        }
        progress.last_write = Some(Instant::now());
        self.state
            .store
            .update_transfer(
                self.id,
                &TransferProgress {
                    status: progress.status,
                    status_message: progress.message.as_deref(),
                    items_done: progress.items_done,
                    attempts: progress.attempts,
                    counters: &progress.counters(),
                    completed_at: None,
                },
            )
            .await?;
        Ok(())
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
        let viewer = Viewer::of(&self.state.store, record.owner_id).await?;
        match access::check_item(&self.state.store, &viewer, &record.kind, collections, item).await
        {
            Ok(()) => Ok(Ok(())),
            Err(SharingError::Store(e)) => Err(e),
            Err(refused) => Ok(Err(refused.to_string())),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn event(
        &self,
        item: usize,
        attempt: u32,
        code: &str,
        fault: bool,
        side: Option<Side>,
        path: Option<&str>,
        message: &str,
    ) -> StoreResult<()> {
        self.state
            .store
            .insert_transfer_event(&NewTransferEvent {
                transfer_id: self.id,
                time: Utc::now(),
                code: code.to_owned(),
                fault,
                side,
                path: path.map(str::to_owned),
                message: message.to_owned(),
                item: item as u32,
                attempt,
            })
            .await
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn retryable(code: FaultCode, message: &str) -> Attempt {
    Attempt::Failed {
        error: AttemptError {
            code,
            message: message.to_owned(),
            retryable: true,
        },
        counters: TransferCounters::default(),
    }
}

/// The error that explains a failed attempt best: a final one over a
/// retryable one, and a side's own error over the `CANCELLED` it reports
/// after being told to abort.
fn pick_error(source: Option<&AttemptError>, destination: Option<&AttemptError>) -> AttemptError {
    let mut errors: Vec<&AttemptError> = source.into_iter().chain(destination).collect();
    errors.sort_by_key(|e| (e.code == FaultCode::Cancelled, e.retryable));
    errors
        .first()
        .map(|e| (*e).clone())
        .unwrap_or_else(|| AttemptError {
            code: FaultCode::ProtocolError,
            message: "the attempt failed without an error".into(),
            retryable: true,
        })
}

/// 256 random bits, hex.
fn new_credential() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Field-wise maximum: the two sides count the same files and bytes (the
/// source reports the destination's counts at the end), and only the
/// source knows the totals.
fn merge(a: &TransferCounters, b: &TransferCounters) -> TransferCounters {
    TransferCounters {
        files: a.files.max(b.files),
        directories: a.directories.max(b.directories),
        bytes_transferred: a.bytes_transferred.max(b.bytes_transferred),
        bytes_verified: a.bytes_verified.max(b.bytes_verified),
        files_skipped: a.files_skipped.max(b.files_skipped),
        files_resumed: a.files_resumed.max(b.files_resumed),
        faults: a.faults.max(b.faults),
        files_total: a.files_total.max(b.files_total),
        bytes_total: a.bytes_total.max(b.bytes_total),
        elapsed_ms: a.elapsed_ms.max(b.elapsed_ms),
        bytes_per_second: a.bytes_per_second.max(b.bytes_per_second),
    }
}

/// Sum over attempts (a retry counts from zero).
fn add(a: &TransferCounters, b: &TransferCounters) -> TransferCounters {
    let elapsed_ms = a.elapsed_ms + b.elapsed_ms;
    let bytes = a.bytes_transferred + b.bytes_transferred;
    TransferCounters {
        files: a.files + b.files,
        directories: a.directories + b.directories,
        bytes_transferred: bytes,
        bytes_verified: a.bytes_verified + b.bytes_verified,
        files_skipped: a.files_skipped + b.files_skipped,
        files_resumed: a.files_resumed + b.files_resumed,
        faults: a.faults + b.faults,
        files_total: a.files_total + b.files_total,
        bytes_total: a.bytes_total + b.bytes_total,
        elapsed_ms,
        bytes_per_second: (bytes * 1000).checked_div(elapsed_ms).unwrap_or(0),
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

    #[test]
    fn a_final_error_explains_better_than_a_cancel() {
        let cancelled = AttemptError {
            code: FaultCode::Cancelled,
            message: "aborted".into(),
            retryable: true,
        };
        let missing = AttemptError {
            code: FaultCode::FileNotFound,
            message: "gone".into(),
            retryable: false,
        };
        assert_eq!(pick_error(Some(&missing), Some(&cancelled)), missing);
        assert_eq!(pick_error(Some(&cancelled), Some(&missing)), missing);
    }
}
