//! The run's internal bookkeeping: threads (the root machine, Parallel
//! branches, Map items), the actions and timers they wait on, the log, and
//! lookups from a thread to its state in the definition.
//!
//! It owns these types and their plain accessors; it must not decide what
//! a state does (`states`, `action`, `parallel_map`) or how errors are
//! handled (`retry_catch`).

use super::{Command, Run};
use crate::model::{FlowDefinition, LogEntry, LogEvent, RunStatus, State, Transition};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::VecDeque;

/// Where a thread's machine is in the definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum MachineStep {
    Branch { state: String, index: usize },
    Iterator { state: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum Waiting {
    /// Ready to run its current state.
    Ready,
    Action {
        request_id: String,
    },
    Wait {
        timer_id: String,
    },
    Retry {
        timer_id: String,
    },
    Children {
        results: Vec<Option<Value>>,
        /// Map items not yet started, with their index.
        queued: VecDeque<(usize, Value)>,
        running: usize,
    },
}

/// One line of execution: the root machine, a Parallel branch or a Map item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Thread {
    /// Prefix of its state paths: `""` for the root, `P/branch 0/`, `M/item 3/`.
    pub(super) prefix: String,
    pub(super) machine: Vec<MachineStep>,
    pub(super) state: String,
    pub(super) data: Value,
    /// Retries done of the current state.
    pub(super) attempt: u32,
    /// The run's transition count when the current state was entered.
    pub(super) visit: u64,
    pub(super) waiting: Waiting,
    /// The parent thread's prefix and this thread's index there.
    pub(super) parent: Option<(String, usize)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct PendingAction {
    pub(super) thread: String,
    pub(super) action_url: String,
    pub(super) inactive: bool,
    /// The `StartAction` command, repeated by [`Run::outstanding`].
    pub(super) start: Command,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum TimerPurpose {
    /// The run's lifetime limit.
    Lifetime,
    Wait,
    Retry,
    ActionTimeout {
        request_id: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct PendingTimer {
    pub(super) thread: String,
    pub(super) purpose: TimerPurpose,
    pub(super) at: DateTime<Utc>,
}

fn find_machine<'a>(root: &'a FlowDefinition, steps: &[MachineStep]) -> Option<&'a FlowDefinition> {
    let mut m = root;
    for step in steps {
        m = match step {
            MachineStep::Branch { state, index } => match m.states.get(state)? {
                State::Parallel(p) => p.branches.get(*index)?,
                _ => return None,
            },
            MachineStep::Iterator { state } => match m.states.get(state)? {
                State::Map(mp) => &mp.iterator,
                _ => return None,
            },
        };
    }
    Some(m)
}

impl Run {
    /// State data as paths and expressions see it: with `_context`.
    pub(super) fn view(&self, data: &Value) -> Value {
        let mut view = data.clone();
        if let (false, Value::Object(map)) = (self.context.is_null(), &mut view) {
            map.insert("_context".into(), self.context.clone());
        }
        view
    }

    /// A value selected from a view, without the `_context` the view added.
    pub(super) fn without_context(&self, mut value: Value) -> Value {
        if let (false, Value::Object(map)) = (self.context.is_null(), &mut value) {
            map.remove("_context");
        }
        value
    }

    pub(super) fn log(&mut self, now: DateTime<Utc>, state: &str, event: LogEvent) {
        let seq = self.log_seq;
        self.log_seq += 1;
        self.log.push(LogEntry {
            seq,
            time: now,
            state: state.to_string(),
            event,
        });
    }

    pub(super) fn state_path(&self, tid: &str) -> String {
        self.threads
            .get(tid)
            .map(|t| format!("{}{}", t.prefix, t.state))
            .unwrap_or_default()
    }

    pub(super) fn current_state(&self, tid: &str) -> Option<State> {
        let t = self.threads.get(tid)?;
        find_machine(&self.definition, &t.machine)?
            .states
            .get(&t.state)
            .cloned()
    }

    pub(super) fn transition_of(&self, tid: &str) -> Transition {
        match self.current_state(tid) {
            Some(State::Wait(w)) => w.transition,
            _ => Transition::default(),
        }
    }

    pub(super) fn set_waiting(&mut self, tid: &str, waiting: Waiting) {
        if let Some(t) = self.threads.get_mut(tid) {
            t.waiting = waiting;
        }
    }

    pub(super) fn refresh_status(&mut self) {
        if self.status.is_final() {
            return;
        }
        self.status = if self.actions.values().any(|a| a.inactive) {
            RunStatus::Inactive
        } else {
            RunStatus::Active
        };
    }
}
