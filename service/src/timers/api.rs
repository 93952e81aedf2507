//! What a timer's owner can do: create (the body is checked now, as far
//! as it can be without starting anything), list, show, rename, pause,
//! resume, delete, and read the record of its ticks. Only the owner (and
//! the owner's linked identities) see a timer; to anyone else it does not
//! exist.

use chrono::Utc;
use lattice_flows::FlowDefinition;
use lattice_protocol::api::Scope;
use lattice_protocol::flows::{FlowRoleName, RunStart};
use lattice_protocol::timers::{
    InactiveReason, Schedule, TimerCreate, TimerInfo, TimerKind, TimerList, TimerRunInfo,
    TimerRunList, TimerStatus, TimerUpdate, MAX_TIMER_BODY_BYTES, MAX_TIMER_NAME_CHARS,
};
use lattice_protocol::TimerId;
use serde_json::Value;

use super::{schedule, TimerError, TimerResult};
use crate::auth::Caller;
use crate::sharing::Viewer;
use crate::state::AppState;
use crate::store::{TimerRecord, TimerRunRecord};

/// Most runs one page of `runs` returns.
pub const MAX_RUNS_PAGE: u32 = 1000;

/// What a listing wants.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Empty: every status but `deleted`.
    pub statuses: Vec<TimerStatus>,
    /// Only timers whose name contains this (case-insensitive).
    pub name: Option<String>,
}

pub(crate) fn info(timer: TimerRecord) -> TimerInfo {
    TimerInfo {
        id: timer.id,
        name: timer.name,
        timer_type: timer.kind,
        owner: format!("identity:{}", timer.owner),
        schedule: timer.schedule,
        flow_id: timer.flow_id,
        body: timer.body,
        status: timer.status,
        inactive_reason: timer.inactive_reason,
        submitted_at: timer.created_at,
        last_ran_at: timer.last_ran_at,
        next_run: timer
            .next_due
            .filter(|_| timer.status == TimerStatus::Active),
        number_of_runs: timer.runs,
        number_of_errors: timer.errors,
        number_of_skips: timer.skips,
        last_error: timer.last_error,
    }
}

pub(crate) fn run_info(run: TimerRunRecord) -> TimerRunInfo {
    TimerRunInfo {
        seq: run.seq,
        due_at: run.due_at,
        ran_at: run.ran_at,
        status: run.status,
        resource_id: run.resource_id,
        details: run.details,
        error: run.error,
        attempts: run.attempts,
        completed_at: run.completed_at,
    }
}

fn check_name(name: &str) -> TimerResult<()> {
    if name.trim().is_empty() || name.chars().count() > MAX_TIMER_NAME_CHARS {
        return Err(TimerError::Invalid(format!(
            "name: use 1 to {MAX_TIMER_NAME_CHARS} characters"
        )));
    }
    Ok(())
}

fn needs_scope(caller: &Caller, scope: Scope, kind: TimerKind) -> TimerResult<()> {
    if caller.has_scope(scope) {
        return Ok(());
    }
    Err(TimerError::Denied(format!(
        "a {} timer needs a token with the `{}` scope; log in with it",
        kind.as_str(),
        scope.as_str()
    )))
}

/// The flow run a flow timer's body describes (`body`, `label`, `tags`,
/// `run_monitors`, `run_managers`; no `request_id`: each tick has its own).
pub(crate) fn run_start(body: &Value) -> TimerResult<RunStart> {
    let start: RunStart = serde_json::from_value(body.clone())
        .map_err(|e| TimerError::Invalid(format!("body: not a run start document: {e}")))?;
    if start.request_id.is_some() {
        return Err(TimerError::Invalid(
            "body.request_id: each tick gets its own request id; leave it out".into(),
        ));
    }
    Ok(start)
}

/// Checks what a timer would start as far as that is possible now: the
/// body's shape, and for a flow timer the starter role, the scopes the
/// flow's actions need and the input against the flow's schema.
async fn check_body(
    state: &AppState,
    caller: &Caller,
    viewer: &Viewer,
    request: &TimerCreate,
) -> TimerResult<()> {
    match request.timer_type {
        TimerKind::Transfer | TimerKind::Task if request.flow_id.is_some() => Err(
            TimerError::Invalid("flow_id: only a flow timer names a flow".into()),
        ),
        TimerKind::Transfer => {
            needs_scope(caller, Scope::Transfer, request.timer_type)?;
            crate::flows::actions::data::plan_transfer(&request.body)?;
            Ok(())
        }
        TimerKind::Task => {
            needs_scope(caller, Scope::Compute, request.timer_type)?;
            crate::flows::actions::compute::plan(&request.body)?;
            Ok(())
        }
        TimerKind::Flow => {
            let Some(flow_id) = request.flow_id else {
                return Err(TimerError::Invalid(
                    "flow_id: a flow timer names the flow it starts".into(),
                ));
            };
            let start = run_start(&request.body)?;
            let (flow, _) = crate::flows::definitions::with_role(
                &state.store,
                viewer,
                flow_id,
                FlowRoleName::Starter,
                "start it from a timer",
            )
            .await?;
            let definition = FlowDefinition::from_value(flow.definition.clone())
                .map_err(|e| TimerError::Conflict(format!("the flow's stored definition: {e}")))?;
            for scope in
                crate::flows::runs::scopes_needed(&definition, state.config.public_url.as_str())
            {
                needs_scope(caller, scope, request.timer_type)?;
            }
            lattice_flows::validate_input(&flow.input_schema, &start.body)
                .map_err(|e| TimerError::Invalid(format!("body.body: {e}")))?;
            Ok(())
        }
    }
}

fn default_name(kind: TimerKind, schedule: &Schedule) -> String {
    match schedule {
        Schedule::Once { .. } => format!("{} once", kind.as_str()),
        Schedule::Recurring {
            interval_seconds, ..
        } => format!(
            "{} every {}",
            kind.as_str(),
            lattice_protocol::timers::format_duration(*interval_seconds)
        ),
    }
}

/// `POST /v1/timers`: the timer acts as `caller` at every tick.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    request: TimerCreate,
) -> TimerResult<TimerInfo> {
    let size = request.body.to_string().len();
    if size > MAX_TIMER_BODY_BYTES {
        return Err(TimerError::TooLarge(format!(
            "body: {size} bytes; a timer's body may have at most {MAX_TIMER_BODY_BYTES}"
        )));
    }
    if !request.body.is_object() {
        return Err(TimerError::Invalid("body: must be a JSON object".into()));
    }
    let now = Utc::now();
    let schedule = schedule::normalize(
        request.schedule.clone(),
        now,
        state.config.timers.min_interval_secs,
    )
    .map_err(TimerError::Invalid)?;
    let name = match &request.name {
        Some(name) => {
            check_name(name)?;
            name.trim().to_owned()
        }
        None => default_name(request.timer_type, &schedule),
    };
    let viewer = Viewer::of(&state.store, caller.identity_id).await?;
    check_body(state, caller, &viewer, &request).await?;
    let record = TimerRecord {
        id: TimerId::new(),
        owner: caller.identity_id,
        name,
        kind: request.timer_type,
        next_due: Some(schedule::first_due(&schedule, now)),
        schedule,
        flow_id: request.flow_id,
        body: request.body,
        status: TimerStatus::Active,
        inactive_reason: None,
        ticks: 0,
        runs: 0,
        errors: 0,
        skips: 0,
        last_error: None,
        last_ran_at: None,
        version: 0,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_timer(&record).await?;
    state.timers.wake.notify_one();
    tracing::info!(timer = %record.id, kind = record.kind.as_str(), "timer created");
    Ok(info(record))
}

/// The timer if `caller` owns it (through any linked identity); 404 otherwise.
async fn owned(state: &AppState, caller: &Caller, id: TimerId) -> TimerResult<TimerRecord> {
    let not_found = || TimerError::NotFound(format!("timer {id} does not exist"));
    let timer = state.store.timer(id).await?.ok_or_else(not_found)?;
    if timer.owner == caller.identity_id {
        return Ok(timer);
    }
    let viewer = Viewer::of(&state.store, caller.identity_id).await?;
    if viewer.is(timer.owner) {
        Ok(timer)
    } else {
        Err(not_found())
    }
}

/// Reads, changes and saves a timer until the save wins (another replica
/// or request may change it in between); `change` may refuse.
pub(crate) async fn change<F>(
    state: &AppState,
    mut timer: TimerRecord,
    mut change: F,
) -> TimerResult<TimerRecord>
where
    F: FnMut(&mut TimerRecord) -> TimerResult<()>,
{
    loop {
        let expected = timer.version;
        change(&mut timer)?;
        timer.updated_at = Utc::now();
        if state.store.save_timer(&timer, expected, None).await? {
            timer.version = expected + 1;
            return Ok(timer);
        }
        timer =
            state.store.timer(timer.id).await?.ok_or_else(|| {
                TimerError::NotFound(format!("timer {} does not exist", timer.id))
            })?;
    }
}

fn not_deleted(timer: &TimerRecord) -> TimerResult<()> {
    if timer.status == TimerStatus::Deleted {
        return Err(TimerError::Conflict(format!(
            "timer {} is deleted",
            timer.id
        )));
    }
    Ok(())
}

pub async fn list(state: &AppState, caller: &Caller, query: ListQuery) -> TimerResult<TimerList> {
    let viewer = Viewer::of(&state.store, caller.identity_id).await?;
    let deleted = query.statuses.contains(&TimerStatus::Deleted);
    let name = query.name.map(|n| n.to_lowercase());
    let timers = state
        .store
        .timers_of(viewer.identities(), deleted)
        .await?
        .into_iter()
        .filter(|t| query.statuses.is_empty() || query.statuses.contains(&t.status))
        .filter(|t| {
            name.as_ref()
                .is_none_or(|n| t.name.to_lowercase().contains(n))
        })
        .map(info)
        .collect();
    Ok(TimerList { timers })
}

pub async fn show(state: &AppState, caller: &Caller, id: TimerId) -> TimerResult<TimerInfo> {
    Ok(info(owned(state, caller, id).await?))
}

/// `PATCH /v1/timers/{id}`: renames it.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    id: TimerId,
    update: TimerUpdate,
) -> TimerResult<TimerInfo> {
    let timer = owned(state, caller, id).await?;
    let Some(name) = update.name else {
        return Ok(info(timer));
    };
    check_name(&name)?;
    let timer = change(state, timer, |t| {
        not_deleted(t)?;
        t.name = name.trim().to_owned();
        Ok(())
    })
    .await?;
    Ok(info(timer))
}

/// Stops ticking until resumed; a tick missed meanwhile runs once at resume.
pub async fn pause(state: &AppState, caller: &Caller, id: TimerId) -> TimerResult<TimerInfo> {
    let timer = owned(state, caller, id).await?;
    let timer = change(state, timer, |t| match t.status {
        TimerStatus::Active | TimerStatus::Inactive => {
            t.status = TimerStatus::Inactive;
            t.inactive_reason = Some(InactiveReason {
                cause: "user".into(),
                detail: None,
            });
            Ok(())
        }
        other => Err(TimerError::Conflict(format!(
            "timer {id} is {}; only an active timer can be paused",
            other.as_str()
        ))),
    })
    .await?;
    Ok(info(timer))
}

/// Ticks again (at once, if a tick was missed while it was inactive).
pub async fn resume(state: &AppState, caller: &Caller, id: TimerId) -> TimerResult<TimerInfo> {
    let timer = owned(state, caller, id).await?;
    let timer = change(state, timer, |t| match t.status {
        TimerStatus::Active | TimerStatus::Inactive if t.next_due.is_some() => {
            t.status = TimerStatus::Active;
            t.inactive_reason = None;
            Ok(())
        }
        other => Err(TimerError::Conflict(format!(
            "timer {id} is {}; it has no tick left to resume",
            other.as_str()
        ))),
    })
    .await?;
    state.timers.wake.notify_one();
    Ok(info(timer))
}

/// Deletes it: it never ticks again (what it started keeps going, and its
/// record stays readable).
pub async fn delete(state: &AppState, caller: &Caller, id: TimerId) -> TimerResult<TimerInfo> {
    let timer = owned(state, caller, id).await?;
    let timer = change(state, timer, |t| {
        t.status = TimerStatus::Deleted;
        t.next_due = None;
        t.inactive_reason = None;
        Ok(())
    })
    .await?;
    Ok(info(timer))
}

/// The record of a timer's ticks, newest first.
pub async fn runs(
    state: &AppState,
    caller: &Caller,
    id: TimerId,
    before: Option<u64>,
    limit: Option<u32>,
) -> TimerResult<TimerRunList> {
    let timer = owned(state, caller, id).await?;
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_RUNS_PAGE {
        return Err(TimerError::Invalid(format!(
            "limit: use 1 to {MAX_RUNS_PAGE}"
        )));
    }
    let runs = state.store.timer_runs(timer.id, before, limit).await?;
    let next_before = (runs.len() == limit as usize)
        .then(|| runs.last().map(|r| r.seq))
        .flatten()
        .filter(|seq| *seq > 1);
    Ok(TimerRunList {
        runs: runs.into_iter().map(run_info).collect(),
        next_before,
    })
}
