//! The run state machine, pure: a [`Run`] is started from a definition and
//! an input ([`Run::start`]), then fed [`Event`]s ([`Run::handle`]); each
//! call returns the [`Command`]s the driver must carry out (start or cancel
//! an action, set a timer, record the finish). Time is passed in; nothing
//! here does I/O. The driver stores the serialized `Run` after every call;
//! a driver restarted from the stored run repeats [`Run::outstanding`]
//! (every unfinished action start and unfired timer), and because every action
//! request id is derived from the run id, the state's path, its entry
//! number and the attempt, a provider sees the same request id twice and
//! starts one action.
//!
//! Events that name an unknown request or timer (duplicates, late timers of
//! a state already left) are ignored, so delivering an event twice is safe.
//!
//! Errors a state raises carry a name that `Retry` and `Catch` match
//! (`States.ALL` matches every name): `ActionFailedException` (the action
//! ended FAILED and `ExceptionOnActionFailure` is not false),
//! `ActionUnableToRun` (the provider refused to start it), `ActionTimeout`
//! (it did not finish within `WaitTime`, default 300 s), and the States
//! Language names `States.ParameterPathFailure`,
//! `States.ResultPathMatchFailure`, `States.NoChoiceMatched`,
//! `States.Runtime`, plus `States.ExpressionEvalFailure`. A `Catch` stores
//! `{"Error", "Cause"}` at its `ResultPath`, plus `"details"` (the action's
//! status document) for `ActionFailedException`.
//!
//! Log entries never show `__Private_Parameters` values or `_private...`
//! state properties; paths and expressions read `$._context` (given at
//! [`Run::start_with_context`]) but no state writes it. Limits end the
//! run at once, uncatchable: `Lattice.TransitionLimitExceeded`,
//! `Lattice.StateSizeLimitExceeded`, `Lattice.StateDepthLimitExceeded`,
//! `Lattice.MapFanOutLimitExceeded`, `Lattice.RunLifetimeExceeded`. A
//! cancelled run ends FAILED with `RunCancelled`.
//!
//! The run log (the `log` field) holds the entries written since the driver
//! last called [`Run::drain_log`]; `seq` numbers them over the whole run.
//!
//! `Parallel` runs every branch on the state's input (after `InputPath`
//! and `Parameters`); its result is the list of branch outputs in branch
//! order. `Map` runs its iterator once per item of `ItemsPath`, at most
//! `MaxConcurrency` at once; its result is the list of outputs in item
//! order. A failing branch or item cancels the others and raises its error
//! in the `Parallel`/`Map` state, where `Retry`/`Catch` apply.
//!
//! Modules: `threads` holds the internal bookkeeping, `events` what each
//! [`Event`] does, `states` entering and leaving states, `action` Action
//! states, `parallel_map` child threads, `retry_catch` errors, `limits`
//! the per-run limits.

mod action;
mod events;
mod limits;
mod parallel_map;
mod retry_catch;
mod states;
#[cfg(test)]
mod tests;
mod threads;

pub use limits::Limits;

use crate::model::{FlowDefinition, LogEntry, LogEvent, RunError, RunStatus};
use crate::params;
use chrono::{DateTime, Duration, Utc};
use limits::Fatal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use threads::{PendingAction, PendingTimer, Thread, TimerPurpose, Waiting};

/// Longest `Wait` or retry interval, in seconds (one year).
pub const MAX_WAIT_SECONDS: u64 = 365 * 24 * 3600;
/// `WaitTime` of an action that sets none (the anchor's default).
pub const DEFAULT_WAIT_TIME: u64 = 300;

/// What happened, as the driver reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The action ended SUCCEEDED; `status` is the provider's status
    /// document (`action_id`, `status`, `details`, ...), stored at the
    /// state's `ResultPath`.
    ActionSucceeded {
        request_id: String,
        status: Value,
    },
    /// The action ended FAILED.
    ActionFailed {
        request_id: String,
        status: Value,
    },
    /// The provider refused to start the action (bad body, no consent...).
    ActionUnableToRun {
        request_id: String,
        cause: String,
    },
    /// The action waits on a person or a consent.
    ActionInactive {
        request_id: String,
        details: Value,
    },
    /// An INACTIVE action is running again.
    ActionActive {
        request_id: String,
    },
    TimerFired {
        timer_id: String,
    },
    CancelRequested,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Start an action (`POST {action_url}/run`); the request id is stable,
    /// so repeating this command after a crash starts nothing new.
    StartAction {
        request_id: String,
        /// The state's path, for logs and authorization.
        state: String,
        action_url: String,
        action_scope: Option<String>,
        run_as: Option<String>,
        body: Value,
        /// When the action times out (the run also sets a timer for it).
        deadline: DateTime<Utc>,
    },
    CancelAction {
        request_id: String,
        action_url: String,
    },
    /// Deliver `Event::TimerFired { timer_id }` at `at` (or later).
    SetTimer { timer_id: String, at: DateTime<Utc> },
    /// The run is over: store the status, output or error.
    Finish {
        status: RunStatus,
        output: Option<Value>,
        error: Option<RunError>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub definition: FlowDefinition,
    pub limits: Limits,
    pub status: RunStatus,
    pub output: Option<Value>,
    pub error: Option<RunError>,
    /// State entries so far.
    pub transitions: u64,
    /// What `$._context` reads (null: no context).
    #[serde(default)]
    pub context: Value,
    /// Log entries not yet taken by [`Run::drain_log`].
    pub log: Vec<LogEntry>,
    /// The `seq` of the next log entry.
    #[serde(default)]
    log_seq: u64,
    threads: BTreeMap<String, Thread>,
    actions: BTreeMap<String, PendingAction>,
    timers: BTreeMap<String, PendingTimer>,
    #[serde(default)]
    ready: VecDeque<String>,
}

impl Run {
    /// Starts a run: `id` is the run's id (the service's), `input` the
    /// already schema-checked input. The definition should have passed
    /// [`crate::validate()`]; if it did not, the run fails cleanly.
    pub fn start(
        id: impl Into<String>,
        definition: FlowDefinition,
        input: Value,
        limits: Limits,
        now: DateTime<Utc>,
    ) -> (Run, Vec<Command>) {
        Self::start_with_context(id, definition, input, Value::Null, limits, now)
    }

    /// [`Run::start`] with the run's context, which paths and expressions
    /// read (never write) at `$._context`: the anchor puts `flow_id`,
    /// `run_id`, `username`, `email`, `user_id`, `identities` and
    /// `token_info` there.
    pub fn start_with_context(
        id: impl Into<String>,
        definition: FlowDefinition,
        input: Value,
        context: Value,
        limits: Limits,
        now: DateTime<Utc>,
    ) -> (Run, Vec<Command>) {
        let start_at = definition.start_at.clone();
        let mut run = Run {
            id: id.into(),
            definition,
            limits,
            status: RunStatus::Active,
            output: None,
            error: None,
            transitions: 0,
            context,
            log: Vec::new(),
            log_seq: 0,
            threads: BTreeMap::new(),
            actions: BTreeMap::new(),
            timers: BTreeMap::new(),
            ready: VecDeque::new(),
        };
        let mut cmds = Vec::new();
        run.log(
            now,
            "",
            LogEvent::FlowStarted {
                input: params::hide_private_state(&input),
            },
        );
        if let Err(Fatal(e)) = run.check_size(&input, "the run's input") {
            run.finish(Err(e), now, &mut cmds);
            return (run, cmds);
        }
        run.threads.insert(
            String::new(),
            Thread {
                prefix: String::new(),
                machine: Vec::new(),
                state: start_at,
                data: input,
                attempt: 0,
                visit: 0,
                waiting: Waiting::Ready,
                parent: None,
            },
        );
        run.ready.push_back(String::new());
        run.pump(now, &mut cmds);
        if !run.status.is_final() {
            let timer_id = format!("{}.lifetime", run.id);
            let lifetime = run.limits.max_lifetime_seconds.min(10 * MAX_WAIT_SECONDS);
            let at = now + Duration::seconds(lifetime as i64);
            run.timers.insert(
                timer_id.clone(),
                PendingTimer {
                    thread: String::new(),
                    purpose: TimerPurpose::Lifetime,
                    at,
                },
            );
            cmds.push(Command::SetTimer { timer_id, at });
        }
        (run, cmds)
    }

    /// Applies one event; returns what the driver must do next.
    pub fn handle(&mut self, event: Event, now: DateTime<Utc>) -> Vec<Command> {
        let mut cmds = Vec::new();
        if self.status.is_final() {
            return cmds;
        }
        let result = self.apply(event, now, &mut cmds);
        if let Err(Fatal(e)) = result {
            self.finish(Err(e), now, &mut cmds);
            return cmds;
        }
        self.pump(now, &mut cmds);
        cmds
    }

    /// Every command still in force: a `StartAction` for each action not
    /// yet finished and a `SetTimer` for each timer not yet fired. A driver
    /// restarted from the stored run carries these out again; providers
    /// see the same request ids, so nothing starts twice.
    pub fn outstanding(&self) -> Vec<Command> {
        let starts = self.actions.values().map(|a| a.start.clone());
        let timers = self.timers.iter().map(|(id, t)| Command::SetTimer {
            timer_id: id.clone(),
            at: t.at,
        });
        starts.chain(timers).collect()
    }

    /// Request ids of the actions running now (for a driver that polls).
    pub fn running_actions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.actions
            .iter()
            .map(|(id, a)| (id.as_str(), a.action_url.as_str()))
    }

    /// Takes the log entries written since the last call, so the driver
    /// can append them to its store and keep the stored run small.
    pub fn drain_log(&mut self) -> Vec<LogEntry> {
        std::mem::take(&mut self.log)
    }
}
