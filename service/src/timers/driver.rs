//! The driver: one loop per replica that ticks due timers and follows
//! what the ticks started.
//!
//! Each pass: claim every due tick (the compare-and-set of
//! [`crate::store::TimerStore::save_timer`] lets one replica win each),
//! start what it starts on a task of its own, then look at open timer
//! runs whose `next_check_at` has passed: start the pending ones again
//! (after a transient error, or after the replica that claimed them died)
//! and poll the active ones until what they started ends. It then sleeps
//! until the earliest due tick or check, at most [`POLL`] (other replicas
//! may have created timers), or until a request here wakes it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lattice_protocol::api::Scope;
use lattice_protocol::flows::{ActionRequest, ActionState, RunStatus};
use lattice_protocol::timers::{InactiveReason, TimerKind, TimerRunStatus, TimerStatus};
use lattice_protocol::{ActionId, FlowRunId, TimerId};
use serde_json::{json, Value};

use super::{api, schedule};
use crate::flows::actions::{self, acting_as, Provider};
use crate::flows::FlowError;
use crate::state::AppState;
use crate::store::{TimerRecord, TimerRunRecord};

/// Longest sleep between passes.
const POLL: Duration = Duration::from_secs(1);
/// How long a replica that claimed a tick has to start it before another
/// replica may (the start is idempotent either way).
const CLAIM_SECS: i64 = 30;
/// The shortest sleep between passes.
const BUSY_WAIT: Duration = Duration::from_millis(20);
/// The wait before looking again at a run whose last look failed.
const RETRY_LOOK: chrono::Duration = chrono::Duration::seconds(10);
/// Most ticks or open runs one pass takes.
const BATCH: u32 = 256;

/// Timer runs a task of this replica is working on now.
type InFlight = Arc<Mutex<HashSet<(TimerId, u64)>>>;

/// Starts the driver; it stops when `shutdown` resolves.
pub(crate) fn spawn(
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        let in_flight: InFlight = Arc::default();
        loop {
            let wait = match pass(&state, &in_flight).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "timer driver pass failed; trying again");
                    POLL
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(wait) => {}
                _ = state.timers.wake.notified() => {}
            }
        }
    })
}

/// One pass; returns how long to sleep.
async fn pass(state: &AppState, in_flight: &InFlight) -> Result<Duration, FlowError> {
    let now = Utc::now();
    for timer in state.store.due_timers(now, BATCH).await? {
        if let Some(run) = tick(state, timer, now).await? {
            spawn_work(state, in_flight, run);
        }
    }
    for run in state.store.open_timer_runs(now, BATCH).await? {
        spawn_work(state, in_flight, run);
    }
    let next = [
        state.store.earliest_due().await?,
        state.store.earliest_check().await?,
    ]
    .into_iter()
    .flatten()
    .min();
    let now = Utc::now();
    Ok(match next {
        // Overdue still: a run a task of this replica is looking at (its
        // next check is written when the look ends), or a tick another
        // replica is claiming. Soon, but not in a spin.
        Some(at) if at <= now => BUSY_WAIT,
        Some(at) => (at - now).to_std().unwrap_or(POLL).min(POLL),
        None => POLL,
    })
}

/// Looks at (starts or polls) a timer run on its own task, unless a task
/// of this replica already does.
fn spawn_work(state: &AppState, in_flight: &InFlight, run: TimerRunRecord) {
    let key = (run.timer_id, run.seq);
    if !in_flight.lock().expect("timer in-flight set").insert(key) {
        return;
    }
    let state = state.clone();
    let in_flight = in_flight.clone();
    tokio::spawn(async move {
        if let Err(e) = look(&state, run).await {
            tracing::warn!(timer = %key.0, seq = key.1, error = %e, "timer run: trying again later");
            // Not at every pass: a lasting error would spin (and fill the log).
            if let Err(e) = look_later(&state, key).await {
                tracing::warn!(timer = %key.0, seq = key.1, error = %e, "timer run: cannot postpone");
            }
        }
        in_flight.lock().expect("timer in-flight set").remove(&key);
    });
}

/// Moves an open run's next look [`RETRY_LOOK`] ahead, as stored now
/// (the failed look may have recorded progress first).
async fn look_later(state: &AppState, (timer, seq): (TimerId, u64)) -> Result<(), FlowError> {
    if let Some(mut run) = state.store.timer_run(timer, seq).await? {
        if !run.status.is_final() {
            run.next_check_at = Some(Utc::now() + RETRY_LOOK);
            state.store.update_timer_run(&run).await?;
        }
    }
    Ok(())
}

/// Claims the due tick of `timer`: records it as a pending run (or as
/// skipped while the previous run still goes) and moves the schedule on,
/// in one compare-and-set. `None` if another replica claimed it first or
/// the tick was skipped.
async fn tick(
    state: &AppState,
    timer: TimerRecord,
    now: DateTime<Utc>,
) -> Result<Option<TimerRunRecord>, FlowError> {
    let Some(due) = timer.next_due else {
        return Ok(None);
    };
    // The run of an earlier tick (not necessarily the last tick: that may
    // have been skipped) that is still going holds this one back.
    let mut previous_open = false;
    for run in state.store.open_runs_of_timer(timer.id).await? {
        previous_open |= !look(state, run).await?.status.is_final();
    }
    let seq = timer.ticks + 1;
    let mut next = timer.clone();
    next.ticks = seq;
    next.updated_at = now;
    let run = if previous_open {
        next.skips += 1;
        TimerRunRecord {
            timer_id: timer.id,
            seq,
            due_at: due,
            ran_at: None,
            status: TimerRunStatus::Skipped,
            resource_id: None,
            details: json!({"skipped": format!("run {} was still going", seq - 1)}),
            error: None,
            attempts: 0,
            next_check_at: None,
            completed_at: Some(now),
        }
    } else {
        next.runs += 1;
        next.last_ran_at = Some(now);
        TimerRunRecord {
            timer_id: timer.id,
            seq,
            due_at: due,
            ran_at: None,
            status: TimerRunStatus::Pending,
            resource_id: None,
            details: json!({}),
            error: None,
            attempts: 0,
            next_check_at: Some(now + chrono::Duration::seconds(CLAIM_SECS)),
            completed_at: None,
        }
    };
    next.next_due = schedule::next_due(&next.schedule, next.created_at, now, next.runs);
    if next.next_due.is_none() {
        next.status = TimerStatus::Ended;
    }
    if !state
        .store
        .save_timer(&next, timer.version, Some(&run))
        .await?
    {
        // Another replica (or a pause, a delete) changed it first.
        return Ok(None);
    }
    let late_ms = (now - due).num_milliseconds();
    tracing::info!(timer = %timer.id, seq, late_ms, skipped = previous_open, "timer ticked");
    Ok((!previous_open).then_some(run))
}

/// Starts a pending run or polls an active one, and records what changed.
async fn look(state: &AppState, run: TimerRunRecord) -> Result<TimerRunRecord, FlowError> {
    match run.status {
        TimerRunStatus::Pending => start(state, run).await,
        TimerRunStatus::Active => poll(state, run).await,
        _ => Ok(run),
    }
}

/// What a started tick reports.
struct Started {
    resource_id: String,
    status: TimerRunStatus,
    details: Value,
}

fn of_action(state: ActionState) -> TimerRunStatus {
    match state {
        ActionState::Succeeded => TimerRunStatus::Succeeded,
        ActionState::Failed => TimerRunStatus::Failed,
        ActionState::Active | ActionState::Inactive => TimerRunStatus::Active,
    }
}

fn of_run(status: RunStatus) -> TimerRunStatus {
    match status {
        RunStatus::Succeeded => TimerRunStatus::Succeeded,
        RunStatus::Failed => TimerRunStatus::Failed,
        RunStatus::Active | RunStatus::Inactive => TimerRunStatus::Active,
    }
}

/// Starts what the tick starts, as the timer's owner, with the request id
/// of the tick (so a second start of the same tick starts nothing new).
async fn begin(state: &AppState, timer: &TimerRecord, seq: u64) -> Result<Started, FlowError> {
    let request_id = format!("timer-{}-{seq}", timer.id);
    match timer.kind {
        TimerKind::Transfer | TimerKind::Task => {
            let provider = if timer.kind == TimerKind::Transfer {
                Provider::Transfer
            } else {
                Provider::Compute
            };
            let caller = acting_as(timer.owner, provider.scope());
            let mut body = timer.body.clone();
            // A transfer says which timer started it, unless labelled already.
            if timer.kind == TimerKind::Transfer && body.get("label").is_none_or(Value::is_null) {
                body["label"] = json!(timer.name.chars().take(128).collect::<String>());
            }
            let request = ActionRequest {
                request_id,
                body,
                label: Some(timer.name.clone()),
                monitor_by: Vec::new(),
                manage_by: Vec::new(),
                deadline: None,
                release_after: None,
            };
            let (_, status) = actions::run(state, &caller, provider, request, None).await?;
            Ok(Started {
                resource_id: format!("action:{}", status.action_id),
                status: of_action(status.status),
                details: status.details,
            })
        }
        TimerKind::Flow => {
            let flow_id = timer
                .flow_id
                .ok_or_else(|| FlowError::Invalid("the timer names no flow".into()))?;
            let mut start =
                api::run_start(&timer.body).map_err(|e| FlowError::Invalid(e.to_string()))?;
            start.request_id = Some(request_id);
            if start.label.is_none() {
                start.label = Some(timer.name.chars().take(256).collect());
            }
            let mut caller = acting_as(timer.owner, None);
            caller.scopes = vec![Scope::Transfer, Scope::Compute];
            let (_, info) = crate::flows::runs::start(state, &caller, flow_id, start).await?;
            Ok(Started {
                resource_id: format!("run:{}", info.id),
                status: of_run(info.status),
                details: json!({"run_id": info.id, "status": info.status, "display_status": info.display_status}),
            })
        }
    }
}

/// True for a refusal that means the owner may no longer start this work
/// (access taken away, the flow or function gone): the timer is paused
/// by the service rather than failing at every tick.
fn lost_access(e: &FlowError) -> bool {
    match e {
        FlowError::Denied(_) | FlowError::NotFound(_) => true,
        FlowError::Api(api) => matches!(api.code.http_status(), 401 | 403 | 404),
        _ => false,
    }
}

async fn start(state: &AppState, mut run: TimerRunRecord) -> Result<TimerRunRecord, FlowError> {
    let Some(timer) = state.store.timer(run.timer_id).await? else {
        return Ok(run);
    };
    run.attempts += 1;
    let now = Utc::now();
    match begin(state, &timer, run.seq).await {
        Ok(started) => {
            run.ran_at = Some(now);
            run.resource_id = Some(started.resource_id);
            run.details = started.details;
            run.error = None;
            run.status = started.status;
            finish_or_poll(state, timer, run, now).await
        }
        Err(e) if e.is_permanent() => {
            let message = e.client_message();
            run.status = TimerRunStatus::Failed;
            run.error = Some(message.clone());
            run.completed_at = Some(now);
            run.next_check_at = None;
            if state.store.update_timer_run(&run).await? {
                note_failure(state, timer, run.seq, &message, lost_access(&e)).await?;
            }
            Ok(run)
        }
        Err(e) => {
            let message = e.client_message();
            let retry_at = now + schedule::retry_backoff(run.attempts);
            if retry_at > run.due_at + schedule::retry_window(&timer.schedule) {
                let message = format!(
                    "could not start it after {} attempts: {message}",
                    run.attempts
                );
                run.status = TimerRunStatus::Failed;
                run.error = Some(message.clone());
                run.completed_at = Some(now);
                run.next_check_at = None;
                if state.store.update_timer_run(&run).await? {
                    note_failure(state, timer, run.seq, &message, false).await?;
                }
            } else {
                tracing::info!(timer = %timer.id, seq = run.seq, error = %message, "timer run: transient error, retrying");
                run.error = Some(message);
                run.next_check_at = Some(retry_at);
                state.store.update_timer_run(&run).await?;
            }
            Ok(run)
        }
    }
}

/// Records a started run: final (and a failure noted on the timer), or
/// polled again later.
async fn finish_or_poll(
    state: &AppState,
    timer: TimerRecord,
    mut run: TimerRunRecord,
    now: DateTime<Utc>,
) -> Result<TimerRunRecord, FlowError> {
    if run.status.is_final() {
        run.completed_at = Some(now);
        run.next_check_at = None;
        let failed = run.status == TimerRunStatus::Failed;
        if failed {
            run.error = Some(failure_of(&run.details));
        }
        // Only the replica whose update ends the run counts the failure.
        if state.store.update_timer_run(&run).await? && failed {
            let message = run.error.clone().unwrap_or_default();
            note_failure(state, timer, run.seq, &message, false).await?;
        }
    } else {
        run.next_check_at = Some(now + schedule::poll_after(run.ran_at.unwrap_or(now), now));
        state.store.update_timer_run(&run).await?;
    }
    Ok(run)
}

/// A few words on why what a tick started failed.
fn failure_of(details: &Value) -> String {
    let cause = ["cause", "error", "description", "message"]
        .iter()
        .find_map(|k| match &details[*k] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        });
    cause.unwrap_or_else(|| "it failed".into())
}

/// Looks at what an active run started.
async fn poll(state: &AppState, mut run: TimerRunRecord) -> Result<TimerRunRecord, FlowError> {
    let Some(timer) = state.store.timer(run.timer_id).await? else {
        return Ok(run);
    };
    let resource = run.resource_id.clone().unwrap_or_default();
    let now = Utc::now();
    if let Some(id) = resource.strip_prefix("action:") {
        let id: ActionId = id
            .parse()
            .map_err(|_| FlowError::Invalid(format!("bad resource id {resource}")))?;
        match state.store.action(id).await? {
            Some(record) => {
                let record = actions::refreshed(state, record).await?;
                run.status = of_action(record.status);
                run.details = record.details;
            }
            None => {
                run.status = TimerRunStatus::Failed;
                run.details = json!({"error": "the action was released before it was seen to end"});
            }
        }
    } else if let Some(id) = resource.strip_prefix("run:") {
        let id: FlowRunId = id
            .parse()
            .map_err(|_| FlowError::Invalid(format!("bad resource id {resource}")))?;
        match state.store.run(id).await? {
            Some(record) => {
                run.status = of_run(record.status);
                run.details = json!({"run_id": record.id, "status": record.status});
                if record.status == RunStatus::Failed {
                    run.details["error"] = record.details["error"].clone();
                }
            }
            None => {
                run.status = TimerRunStatus::Failed;
                run.details =
                    json!({"error": "the flow run was deleted before it was seen to end"});
            }
        }
    }
    finish_or_poll(state, timer, run, now).await
}

/// Counts a failed tick on the timer; a lost permission pauses the timer
/// (status `inactive`, cause `access`) so it stops failing every tick.
async fn note_failure(
    state: &AppState,
    timer: TimerRecord,
    seq: u64,
    message: &str,
    access: bool,
) -> Result<(), FlowError> {
    let id = timer.id;
    // Whether this failure (not an earlier pause) made the timer inactive.
    let paused_now = std::sync::atomic::AtomicBool::new(false);
    let changed = api::change(state, timer, |t| {
        t.errors += 1;
        t.last_error = Some(format!("run {seq}: {message}"));
        paused_now.store(false, std::sync::atomic::Ordering::Relaxed);
        if access && t.status == TimerStatus::Active {
            paused_now.store(true, std::sync::atomic::Ordering::Relaxed);
            t.status = TimerStatus::Inactive;
            t.inactive_reason = Some(InactiveReason {
                cause: "access".into(),
                detail: Some(message.to_owned()),
            });
        }
        Ok(())
    })
    .await;
    match changed {
        Ok(t) if paused_now.load(std::sync::atomic::Ordering::Relaxed) => {
            tracing::warn!(timer = %id, error = message, "timer paused: its owner may no longer start its work");
            crate::notify::notify(
                state,
                t.owner,
                crate::notify::Event::TimerInactive {
                    timer_id: id,
                    name: t.name.clone(),
                    reason: message.to_owned(),
                },
            );
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(super::TimerError::Store(e)) => Err(e.into()),
        Err(e) => {
            tracing::warn!(timer = %id, error = %e, "cannot record a timer's failure");
            Ok(())
        }
    }
}
