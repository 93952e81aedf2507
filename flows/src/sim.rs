//! A scripted, deterministic driver for tests: it carries out a run's
//! [`Command`]s against canned action replies and a simulated clock, so a
//! whole run can be played without I/O. The service's own driver does the
//! same with real action providers, a store and real timers.

use crate::model::RunStatus;
use crate::run::{Command, Event, Run};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How the fake provider answers one started action.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Ends SUCCEEDED with this status document.
    Succeed(Value),
    /// Ends FAILED with this status document.
    Fail(Value),
    UnableToRun(String),
    /// Goes INACTIVE and never answers again (the test resumes it).
    Inactive(Value),
    /// Never answers (for timeouts).
    Silent,
}

/// One action the run asked to start.
#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    pub request_id: String,
    pub state: String,
    pub action_url: String,
    pub body: Value,
    pub at: DateTime<Utc>,
}

/// The scripted driver.
pub struct Simulator<F> {
    responder: F,
    pub now: DateTime<Utc>,
    timers: BTreeMap<(DateTime<Utc>, u64), String>,
    timer_seq: u64,
    events: VecDeque<Event>,
    seen_requests: BTreeSet<String>,
    /// Every action started, in order (a repeated request id is not repeated here).
    pub started: Vec<Started>,
    /// Request ids the run cancelled.
    pub cancelled: Vec<String>,
    /// Timers set, with their due time.
    pub timers_set: Vec<(String, DateTime<Utc>)>,
    /// Events handled.
    pub handled: usize,
}

impl<F: FnMut(&Started) -> Reply> Simulator<F> {
    pub fn new(now: DateTime<Utc>, responder: F) -> Self {
        Self {
            responder,
            now,
            timers: BTreeMap::new(),
            timer_seq: 0,
            events: VecDeque::new(),
            seen_requests: BTreeSet::new(),
            started: Vec::new(),
            cancelled: Vec::new(),
            timers_set: Vec::new(),
            handled: 0,
        }
    }

    /// Carries out commands (queueing the replies they cause).
    pub fn execute(&mut self, cmds: Vec<Command>) {
        for cmd in cmds {
            match cmd {
                Command::StartAction {
                    request_id,
                    state,
                    action_url,
                    body,
                    ..
                } => {
                    if !self.seen_requests.insert(request_id.clone()) {
                        continue; // the same request id starts one action
                    }
                    let started = Started {
                        request_id: request_id.clone(),
                        state,
                        action_url,
                        body,
                        at: self.now,
                    };
                    let reply = (self.responder)(&started);
                    self.started.push(started);
                    match reply {
                        Reply::Succeed(status) => self
                            .events
                            .push_back(Event::ActionSucceeded { request_id, status }),
                        Reply::Fail(status) => self
                            .events
                            .push_back(Event::ActionFailed { request_id, status }),
                        Reply::UnableToRun(cause) => self
                            .events
                            .push_back(Event::ActionUnableToRun { request_id, cause }),
                        Reply::Inactive(details) => self.events.push_back(Event::ActionInactive {
                            request_id,
                            details,
                        }),
                        Reply::Silent => {}
                    }
                }
                Command::CancelAction { request_id, .. } => self.cancelled.push(request_id),
                Command::SetTimer { timer_id, at } => {
                    self.timer_seq += 1;
                    self.timers_set.push((timer_id.clone(), at));
                    self.timers.insert((at, self.timer_seq), timer_id);
                }
                Command::Finish { .. } => {}
            }
        }
    }

    /// Plays the run until it finishes, nothing more can happen, or
    /// `max_events` events were handled. Returns the run's status.
    pub fn play(&mut self, run: &mut Run, max_events: usize) -> RunStatus {
        while !run.status.is_final() && self.handled < max_events {
            let event = match self.events.pop_front() {
                Some(e) => e,
                None => {
                    let Some(((at, _), timer_id)) = self.timers.pop_first() else {
                        break;
                    };
                    self.now = self.now.max(at);
                    Event::TimerFired { timer_id }
                }
            };
            self.handled += 1;
            let cmds = run.handle(event, self.now);
            self.execute(cmds);
        }
        run.status
    }

    /// Queues an event from outside (a resume, a cancel).
    pub fn push(&mut self, event: Event) {
        self.events.push_back(event);
    }
}

/// A SUCCEEDED action status document like the anchor's providers send.
pub fn succeeded(details: Value) -> Value {
    serde_json::json!({"status": "SUCCEEDED", "details": details})
}

/// A FAILED action status document.
pub fn failed(details: Value) -> Value {
    serde_json::json!({"status": "FAILED", "details": details})
}
