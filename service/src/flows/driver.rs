//! The driver: carries runs forward. One task per run this replica holds
//! the lease of, plus one sweeper per service that claims runs whose
//! lease is free or expired (at start, after another replica died),
//! renews the leases held here, and turns finished compute tasks into
//! nudges for the runs that wait on them (built-in actions complete by
//! event, not by polling).
//!
//! A run's task loads the stored machine, carries out its outstanding
//! commands (each action start repeated with its stable request id, so
//! nothing starts twice), then loops: save the machine and its new log
//! entries (only while the lease is held), carry out the commands, wait
//! for a timer, a nudge or the next look at an action, and feed what
//! happened back as events. A provider that cannot be reached is tried
//! again with backoff; a refusal is `ActionUnableToRun`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lattice_flows::{Command, Event, Run};
use lattice_protocol::flows::{ActionRequest, ActionState, ActionStatus, RunStart, RunStatus};
use lattice_protocol::{ActionId, FlowId, FlowRunId, IdentityId};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::actions::{self, Provider};
use super::external::{self, Api, ExternalError};
use super::runs::{details_of, log_record, status_of};
use super::{FlowError, Nudge};
use crate::state::AppState;
use crate::store::{RunLogRecord, RunRecord};

/// How often the sweeper looks for runs to claim.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// First look at a built-in action that has not finished.
const FIRST_LOOK: Duration = Duration::from_millis(250);
/// Longest wait between looks at a built-in action (nudges come sooner).
const MAX_BUILTIN_LOOK: Duration = Duration::from_secs(5);
/// First and longest wait between looks at an external action.
const FIRST_EXTERNAL_LOOK: Duration = Duration::from_secs(1);
const MAX_EXTERNAL_LOOK: Duration = Duration::from_secs(60);
/// Longest wait before starting an action again after a transient failure.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Most action starts in flight at once for one run (a Map's items).
const MAX_CONCURRENT_STARTS: usize = 32;
/// Longest wait to save a step again after a store error.
const MAX_SAVE_RETRY: Duration = Duration::from_secs(10);

/// Starts the sweeper; it stops when `shutdown` resolves.
pub(crate) fn spawn(
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        let mut results = crate::compute::results::subscribe(&state);
        let renew_every = (state.flows.lease / 3).max(Duration::from_millis(200));
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        let mut renew = tokio::time::interval(renew_every);
        // A SQLite store serves one process: every lease in it belongs to
        // a process that is gone, so take them all at once.
        let mut first = state.store.kind() == "sqlite";
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = sweep.tick() => claim(&state, std::mem::take(&mut first)).await,
                _ = state.flows.wake.notified() => claim(&state, false).await,
                _ = renew.tick() => {
                    let until = Utc::now() + chrono::Duration::from_std(state.flows.lease).unwrap_or_default();
                    if let Err(e) = state.store.renew_run_leases(&state.flows.replica, until).await {
                        tracing::warn!(error = %e, "renewing run leases");
                    }
                }
                finished = results.recv() => match finished {
                    Ok(tasks) => {
                        for t in tasks.iter().filter(|t| t.state.is_final()) {
                            state.flows.nudge_watcher(&format!("task:{}", t.id));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let running: Vec<FlowRunId> = state.flows.running.lock().expect("flows running map").keys().copied().collect();
                        for run in running {
                            state.flows.nudge(run, Nudge::Look);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        results = crate::compute::results::subscribe(&state);
                    }
                },
            }
        }
    })
}

async fn claim(state: &AppState, all: bool) {
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(state.flows.lease).unwrap_or_default();
    // `all`: any lease counts as expired.
    let as_of = if all {
        now + chrono::Duration::days(36_500)
    } else {
        now
    };
    match state
        .store
        .claim_runs(&state.flows.replica, as_of, until, 100)
        .await
    {
        Ok(ids) => {
            for id in ids {
                tracing::info!(run_id = %id, "run claimed");
                drive(state.clone(), id);
            }
        }
        Err(e) => tracing::warn!(error = %e, "claiming runs"),
    }
}

/// Starts driving a run this replica holds the lease of (nothing if it is
/// driven here already).
pub(crate) fn drive(state: AppState, id: FlowRunId) {
    let rx = {
        let mut running = state.flows.running.lock().expect("flows running map");
        if running.contains_key(&id) {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        running.insert(id, tx);
        rx
    };
    tokio::spawn(async move {
        match Driver::load(&state, id).await {
            Ok(Some(mut driver)) => driver.main(rx).await,
            Ok(None) => {}
            Err(e) => tracing::error!(run_id = %id, error = %e, "loading a run"),
        }
        state
            .flows
            .running
            .lock()
            .expect("flows running map")
            .remove(&id);
        state.flows.unwatch_run(id);
        if let Err(e) = state
            .store
            .release_run_lease(id, &state.flows.replica)
            .await
        {
            tracing::debug!(run_id = %id, error = %e, "releasing a run lease");
        }
    });
}

/// Where a started action lives.
#[derive(Debug)]
enum Target {
    Builtin {
        action_id: ActionId,
    },
    Flow {
        run_id: FlowRunId,
    },
    External {
        api: Api,
        action_id: String,
    },
    /// Its start failed for now: start it again at `next_look`.
    Unstarted {
        command: Command,
    },
}

#[derive(Debug)]
struct Inflight {
    url: String,
    state: String,
    target: Target,
    next_look: tokio::time::Instant,
    backoff: Duration,
    max_backoff: Duration,
    /// The last state reported to the machine.
    reported: ActionState,
    details: Value,
}

struct Driver {
    state: AppState,
    record: RunRecord,
    run: Run,
    pending: VecDeque<Command>,
    events: Vec<Event>,
    timers: BTreeMap<String, DateTime<Utc>>,
    inflight: HashMap<String, Inflight>,
    /// Log entries taken from the machine but not yet saved.
    unsaved: Vec<RunLogRecord>,
    dirty: bool,
}

impl Driver {
    async fn load(state: &AppState, id: FlowRunId) -> Result<Option<Self>, FlowError> {
        let Some(mut record) = state.store.run(id).await? else {
            return Ok(None);
        };
        if record.status.is_final() {
            return Ok(None);
        }
        let run: Run = serde_json::from_str(&record.machine)
            .map_err(|e| FlowError::Conflict(format!("run {id}: stored machine: {e}")))?;
        record.machine.clear();
        let pending = run.outstanding().into();
        Ok(Some(Self {
            state: state.clone(),
            record,
            run,
            pending,
            events: Vec::new(),
            timers: BTreeMap::new(),
            inflight: HashMap::new(),
            unsaved: Vec::new(),
            dirty: false,
        }))
    }

    fn id(&self) -> FlowRunId {
        self.record.id
    }

    async fn main(&mut self, mut rx: mpsc::UnboundedReceiver<Nudge>) {
        loop {
            if self.dirty {
                match self.save().await {
                    Ok(true) => self.dirty = false,
                    Ok(false) => {
                        tracing::warn!(run_id = %self.id(), "lost the run's lease; another replica drives it");
                        return;
                    }
                    Err(()) => return,
                }
            }
            if self.run.status.is_final() {
                self.finished().await;
                return;
            }
            if matches!(self.pending.front(), Some(Command::StartAction { .. })) {
                let mut starts = Vec::new();
                while starts.len() < MAX_CONCURRENT_STARTS
                    && matches!(self.pending.front(), Some(Command::StartAction { .. }))
                {
                    starts.extend(self.pending.pop_front());
                }
                self.start_many(starts).await;
                continue;
            }
            if let Some(command) = self.pending.pop_front() {
                self.carry_out(command).await;
                continue;
            }
            if !self.events.is_empty() {
                let now = Utc::now();
                for event in std::mem::take(&mut self.events) {
                    let commands = self.run.handle(event, now);
                    self.pending.extend(commands);
                }
                self.dirty = true;
                continue;
            }
            let wake = self.next_wake();
            tokio::select! {
                nudge = rx.recv() => match nudge {
                    Some(Nudge::Look) => {
                        let now = tokio::time::Instant::now();
                        for a in self.inflight.values_mut() {
                            a.next_look = now;
                        }
                    }
                    Some(Nudge::LookAt(request_id)) => {
                        if let Some(a) = self.inflight.get_mut(&request_id) {
                            a.next_look = tokio::time::Instant::now();
                        }
                    }
                    Some(Nudge::Cancel) => self.events.push(Event::CancelRequested),
                    None => return,
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
            self.fire_timers();
            self.look().await;
        }
    }

    /// The earliest timer or look, at most 30 s away (the loop recomputes).
    fn next_wake(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let mut wake = now + Duration::from_secs(30);
        if let Some(at) = self.timers.values().min() {
            let until = (*at - Utc::now()).to_std().unwrap_or_default();
            wake = wake.min(now + until);
        }
        for a in self.inflight.values() {
            if a.reported != ActionState::Inactive || matches!(a.target, Target::Unstarted { .. }) {
                wake = wake.min(a.next_look);
            } else {
                // An INACTIVE action is looked at rarely; a nudge comes first.
                wake = wake.min(a.next_look.max(now + Duration::from_secs(2)));
            }
        }
        wake
    }

    fn fire_timers(&mut self) {
        let now = Utc::now();
        let due: Vec<String> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for timer_id in due {
            self.timers.remove(&timer_id);
            self.events.push(Event::TimerFired { timer_id });
        }
    }

    async fn save(&mut self) -> Result<bool, ()> {
        self.unsaved
            .extend(self.run.drain_log().into_iter().map(log_record));
        let now = Utc::now();
        let before = self.record.status;
        self.record.status = status_of(self.run.status);
        self.record.transitions = self.run.transitions;
        self.record.details = details_of(&self.run, self.waiting_on());
        self.record.updated_at = now;
        if self.record.status.is_final() && self.record.completed_at.is_none() {
            self.record.completed_at = Some(now);
        }
        let mut record = self.record.clone();
        record.machine = serde_json::to_string(&self.run).expect("a run serializes");
        let mut backoff = Duration::from_millis(100);
        loop {
            let until =
                Utc::now() + chrono::Duration::from_std(self.state.flows.lease).unwrap_or_default();
            match self
                .state
                .store
                .save_run(&record, &self.unsaved, &self.state.flows.replica, until)
                .await
            {
                Ok(saved) => {
                    if saved {
                        self.unsaved.clear();
                        if before != RunStatus::Inactive && record.status == RunStatus::Inactive {
                            crate::notify::hooks::run_changed(
                                &self.state,
                                &record,
                                Some(
                                    "it waits on an action (an approval, or an action that paused)",
                                ),
                            );
                        }
                    }
                    return Ok(saved);
                }
                Err(e) => {
                    tracing::warn!(run_id = %self.id(), error = %e, "saving a run step; trying again");
                    if self
                        .state
                        .flows
                        .running
                        .lock()
                        .expect("flows running map")
                        .get(&self.id())
                        .is_none()
                    {
                        return Err(());
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_SAVE_RETRY);
                }
            }
        }
    }

    fn waiting_on(&self) -> Value {
        Value::Array(
            self.inflight
                .iter()
                .filter(|(_, a)| a.reported == ActionState::Inactive)
                .map(|(request_id, a)| {
                    let mut entry = json!({
                        "request_id": request_id,
                        "state": a.state,
                        "action_url": a.url,
                    });
                    if let (Value::Object(e), Value::Object(d)) = (&mut entry, &a.details) {
                        for (k, v) in d {
                            e.entry(k.clone()).or_insert(v.clone());
                        }
                    }
                    entry
                })
                .collect(),
        )
    }

    async fn finished(&mut self) {
        let id = self.id();
        let reason = self
            .run
            .error
            .as_ref()
            .map(|e| format!("{}: {}", e.error, e.cause));
        crate::notify::hooks::run_changed(&self.state, &self.record, reason.as_deref());
        match self.record.status {
            RunStatus::Succeeded => tracing::info!(run_id = %id, "run succeeded"),
            _ => tracing::info!(run_id = %id, error = ?self.run.error, "run failed"),
        }
        // A flow started as another flow's action: its parent looks now.
        self.state.flows.nudge_watcher(&format!("run:{id}"));
    }

    async fn carry_out(&mut self, command: Command) {
        match command {
            Command::SetTimer { timer_id, at } => {
                self.timers.insert(timer_id, at);
            }
            Command::Finish { .. } => {}
            Command::CancelAction { request_id, .. } => {
                if let Some(a) = self.inflight.remove(&request_id) {
                    self.cancel(a).await;
                }
            }
            start @ Command::StartAction { .. } => self.start(start).await,
        }
    }

    fn starter(&self) -> IdentityId {
        self.record.starter
    }

    async fn start(&mut self, command: Command) {
        let started = self.launch(&command).await;
        self.settle(command, started);
    }

    /// Starts several actions at once (a Map's or a Parallel's items),
    /// then records each outcome in order.
    async fn start_many(&mut self, commands: Vec<Command>) {
        let started = futures::future::join_all(commands.iter().map(|c| self.launch(c))).await;
        for (command, started) in commands.into_iter().zip(started) {
            self.settle(command, started);
        }
    }

    /// Asks the action's provider to start it.
    async fn launch(&self, command: &Command) -> Started {
        let Command::StartAction {
            request_id,
            action_url,
            body,
            deadline,
            ..
        } = command
        else {
            return Started::Refused("not an action start".into());
        };
        let request = ActionRequest {
            request_id: request_id.clone(),
            body: body.clone(),
            label: self.record.label.clone(),
            monitor_by: vec![format!("identity:{}", self.starter())],
            manage_by: vec![format!("identity:{}", self.starter())],
            deadline: Some(*deadline),
            release_after: None,
        };
        let public_url = self.state.config.public_url.as_str().to_owned();
        if let Some(provider) = Provider::of_url(action_url, &public_url) {
            self.start_builtin(provider, request).await
        } else if let Some(flow) = flow_of_url(action_url, &public_url) {
            self.start_flow(flow, request).await
        } else {
            self.start_external(action_url, &request).await
        }
    }

    /// Records what starting an action did.
    fn settle(&mut self, command: Command, started: Started) {
        let Command::StartAction {
            request_id,
            state,
            action_url,
            ..
        } = &command
        else {
            return;
        };
        let mut inflight = Inflight {
            url: action_url.clone(),
            state: state.clone(),
            target: Target::Unstarted {
                command: command.clone(),
            },
            next_look: tokio::time::Instant::now(),
            backoff: Duration::from_secs(1),
            max_backoff: MAX_RETRY,
            reported: ActionState::Active,
            details: Value::Null,
        };
        match started {
            Started::Refused(cause) => self.events.push(Event::ActionUnableToRun {
                request_id: request_id.clone(),
                cause,
            }),
            Started::Later(why) => {
                tracing::info!(run_id = %self.id(), request_id, error = %why, "an action could not start now; trying again");
                inflight.next_look = tokio::time::Instant::now() + inflight.backoff;
                self.inflight.insert(request_id.clone(), inflight);
            }
            Started::Running(target, status) => {
                let (first, max) = match &target {
                    Target::External { .. } => (FIRST_EXTERNAL_LOOK, MAX_EXTERNAL_LOOK),
                    _ => (FIRST_LOOK, MAX_BUILTIN_LOOK),
                };
                inflight.target = target;
                inflight.backoff = first;
                inflight.max_backoff = max;
                inflight.next_look = tokio::time::Instant::now() + first;
                self.inflight.insert(request_id.clone(), inflight);
                self.report(request_id, *status);
            }
        }
    }

    async fn start_builtin(&self, provider: Provider, request: ActionRequest) -> Started {
        let caller = actions::acting_as(self.starter(), provider.scope());
        let request_id = request.request_id.clone();
        match actions::run(&self.state, &caller, provider, request, Some(self.id())).await {
            Ok((_, status)) => {
                if provider == Provider::Compute {
                    self.watch_tasks(&request_id, &status);
                }
                let action_id = status.action_id.parse().unwrap_or_default();
                Started::Running(Target::Builtin { action_id }, Box::new(status))
            }
            Err(e) if e.is_permanent() => Started::Refused(e.client_message()),
            Err(e) => Started::Later(e.client_message()),
        }
    }

    /// Asks to be nudged when the action's unfinished tasks end.
    fn watch_tasks(&self, request_id: &str, status: &ActionStatus) {
        let Some(results) = status.details.get("results").and_then(Value::as_array) else {
            return;
        };
        for r in results {
            let state = r.get("state").and_then(Value::as_str).unwrap_or_default();
            if matches!(state, "success" | "failed" | "cancelled") {
                continue;
            }
            if let Some(task) = r.get("task_id").and_then(Value::as_str) {
                self.state
                    .flows
                    .watch(format!("task:{task}"), self.id(), request_id);
            }
        }
    }

    async fn start_flow(&self, flow: FlowId, request: ActionRequest) -> Started {
        // The child acts with the scopes its own actions need.
        let scopes = match self.state.store.flow(flow).await {
            Ok(Some(f)) => lattice_flows::FlowDefinition::from_value(f.definition)
                .map(|d| super::runs::scopes_needed(&d, self.state.config.public_url.as_str()))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut caller = actions::acting_as(self.starter(), None);
        caller.scopes = scopes;
        let start_request_id = request.request_id.clone();
        let start = RunStart {
            body: request.body,
            request_id: Some(request.request_id),
            label: request.label,
            tags: Vec::new(),
            run_monitors: Vec::new(),
            run_managers: Vec::new(),
        };
        match super::runs::start(&self.state, &caller, flow, start).await {
            Ok((_, info)) => {
                self.state.flows.watch(
                    format!("run:{}", info.run_id),
                    self.id(),
                    &start_request_id,
                );
                let status = super::runs::as_action_status(&info);
                Started::Running(
                    Target::Flow {
                        run_id: info.run_id,
                    },
                    Box::new(status),
                )
            }
            Err(e) if e.is_permanent() => Started::Refused(e.client_message()),
            Err(e) => Started::Later(e.client_message()),
        }
    }

    async fn start_external(&self, url: &str, request: &ActionRequest) -> Started {
        if let Err(e) = external::check_url(url, &self.state.flows.action_hosts) {
            return Started::Refused(if url.starts_with('/') {
                format!(
                    "ActionUrl `{url}` names no built-in action provider or flow of this service"
                )
            } else {
                e
            });
        }
        match external::run(&self.state.flows.http, url, request).await {
            Ok((api, status)) => {
                let action_id = status.action_id.clone();
                Started::Running(Target::External { api, action_id }, Box::new(status))
            }
            Err(ExternalError::Refused(e)) => Started::Refused(e),
            Err(ExternalError::Transient(e)) => Started::Later(e),
        }
    }

    /// Turns a provider's status into the event the machine needs, once
    /// per change.
    fn report(&mut self, request_id: &str, status: ActionStatus) {
        let Some(a) = self.inflight.get_mut(request_id) else {
            return;
        };
        let previous = a.reported;
        let details_changed = a.details != status.details;
        a.reported = status.status;
        a.details = status.details.clone();
        let request_id = request_id.to_owned();
        match status.status {
            ActionState::Succeeded | ActionState::Failed => {
                self.inflight.remove(&request_id);
                let status_doc = serde_json::to_value(&status).unwrap_or(Value::Null);
                self.events
                    .push(if status.status == ActionState::Succeeded {
                        Event::ActionSucceeded {
                            request_id,
                            status: status_doc,
                        }
                    } else {
                        Event::ActionFailed {
                            request_id,
                            status: status_doc,
                        }
                    });
            }
            ActionState::Inactive if previous != ActionState::Inactive => {
                self.events.push(Event::ActionInactive {
                    request_id,
                    details: status.details,
                });
                // The stored details show what it waits on.
                self.dirty = true;
            }
            ActionState::Active if previous == ActionState::Inactive => {
                self.events.push(Event::ActionActive { request_id });
            }
            // Still INACTIVE, waiting on something else now: show it.
            ActionState::Inactive if details_changed => self.dirty = true,
            _ => {}
        }
    }

    /// Looks at every action whose time has come.
    async fn look(&mut self) {
        let now = tokio::time::Instant::now();
        let due: Vec<String> = self
            .inflight
            .iter()
            .filter(|(_, a)| a.next_look <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for request_id in due {
            let Some(a) = self.inflight.get(&request_id) else {
                continue;
            };
            let outcome = match &a.target {
                Target::Unstarted { command } => {
                    let command = command.clone();
                    self.inflight.remove(&request_id);
                    self.start(command).await;
                    continue;
                }
                Target::Builtin { action_id } => self.look_builtin(*action_id).await,
                Target::Flow { run_id } => self.look_flow(*run_id).await,
                Target::External { api, action_id } => {
                    external::status(&self.state.flows.http, &a.url, *api, action_id)
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            if let Some(a) = self.inflight.get_mut(&request_id) {
                a.backoff = (a.backoff * 2).min(a.max_backoff);
                a.next_look = tokio::time::Instant::now() + a.backoff;
            }
            match outcome {
                Ok(status) => self.report(&request_id, status),
                Err(e) => {
                    tracing::debug!(run_id = %self.id(), request_id, error = %e, "looking at an action")
                }
            }
        }
    }

    async fn look_builtin(&self, id: ActionId) -> Result<ActionStatus, String> {
        let record = self
            .state
            .store
            .action(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("action {id} is gone"))?;
        let record = actions::refreshed(&self.state, record)
            .await
            .map_err(|e| e.client_message())?;
        Ok(actions::status_of(&record))
    }

    async fn look_flow(&self, id: FlowRunId) -> Result<ActionStatus, String> {
        let record = self
            .state
            .store
            .run(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("run {id} is gone"))?;
        let roles = super::roles::RunRoles {
            owner: true,
            manager: true,
            monitor: true,
        };
        Ok(super::runs::as_action_status(&super::runs::info(
            record, &roles,
        )))
    }

    async fn cancel(&mut self, a: Inflight) {
        match a.target {
            Target::Builtin { action_id } => {
                if let Ok(Some(record)) = self.state.store.action(action_id).await {
                    if let Err(e) = actions::cancel_record(&self.state, record).await {
                        tracing::debug!(action_id = %action_id, error = %e, "cancelling an action");
                    }
                }
            }
            Target::Flow { run_id } => {
                self.state.flows.nudge(run_id, Nudge::Cancel);
            }
            Target::External { api, action_id } => {
                external::finish(&self.state.flows.http, &a.url, api, &action_id, "cancel").await;
            }
            Target::Unstarted { .. } => {}
        }
    }
}

enum Started {
    Running(Target, Box<ActionStatus>),
    Refused(String),
    Later(String),
}

/// The flow an `ActionUrl` names: `/v1/flows/<id>` (or under the public URL).
fn flow_of_url(url: &str, public_url: &str) -> Option<FlowId> {
    let path = url
        .strip_prefix(public_url.trim_end_matches('/'))
        .unwrap_or(url);
    let rest = path.strip_prefix("/v1/flows/")?.trim_end_matches('/');
    rest.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_urls_name_flows() {
        let id = FlowId::new();
        let base = "https://lattice.example.org";
        assert_eq!(flow_of_url(&format!("/v1/flows/{id}"), base), Some(id));
        assert_eq!(
            flow_of_url(&format!("{base}/v1/flows/{id}/"), base),
            Some(id)
        );
        assert_eq!(flow_of_url("/v1/flows/nope", base), None);
        assert_eq!(flow_of_url("/v1/actions/compute", base), None);
    }
}
