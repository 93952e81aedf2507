//! Errors a state raises and what happens to them: `Retry` (a backoff
//! timer, then the state again), `Catch` (the error stored at its
//! `ResultPath`, then its `Next`), or the thread ends with the error.
//!
//! It owns the error values ([`Raised`], [`Step`]); limits are not errors
//! a flow can handle and never pass through here (`limits::Fatal`).

use super::limits::Fatal;
use super::threads::{PendingTimer, TimerPurpose, Waiting};
use super::{Command, Run, MAX_WAIT_SECONDS};
use crate::model::{LogEvent, RunError, State, Transition};
use crate::params::{self, ParamError};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

/// A state's failure, matched by Retry and Catch, with what a Catch
/// stores beside `Error` and `Cause` (the action's status document).
pub(super) struct Raised(pub(super) RunError, pub(super) Option<Value>);

pub(super) fn raised(error: &str, cause: impl Into<String>) -> Raised {
    Raised(
        RunError {
            error: error.to_string(),
            cause: cause.into(),
        },
        None,
    )
}

impl From<ParamError> for Raised {
    fn from(e: ParamError) -> Self {
        raised(e.error_name(), e.to_string())
    }
}

pub(super) enum Step {
    Raised(Raised),
    Fatal(Fatal),
}

impl From<ParamError> for Step {
    fn from(e: ParamError) -> Self {
        Step::Raised(e.into())
    }
}

impl From<Fatal> for Step {
    fn from(f: Fatal) -> Self {
        Step::Fatal(f)
    }
}

impl From<Raised> for Step {
    fn from(r: Raised) -> Self {
        Step::Raised(r)
    }
}

pub(super) fn matches_error(list: &[String], error: &str) -> bool {
    list.iter().any(|e| e == "States.ALL" || e == error)
}

/// The retry/catch lists and transition of states that have them.
pub(super) fn handlers(state: &State) -> (&[crate::model::Retrier], &[crate::model::Catcher]) {
    match state {
        State::Action(a) => (&a.retry, &a.catch),
        State::Parallel(p) => (&p.retry, &p.catch),
        State::Map(m) => (&m.retry, &m.catch),
        _ => (&[], &[]),
    }
}

impl Run {
    /// The current state of `tid` raised an error: retry, catch, or end the
    /// thread with it.
    pub(super) fn raise(
        &mut self,
        tid: &str,
        Raised(error, details): Raised,
        now: DateTime<Utc>,
        cmds: &mut Vec<Command>,
    ) -> Result<(), Fatal> {
        let Some(state) = self.current_state(tid) else {
            return self.thread_finished(tid, Err(error), now, cmds);
        };
        let path = self.state_path(tid);
        let (retry, catch) = handlers(&state);
        let (attempt, visit, data) = {
            let t = &self.threads[tid];
            (t.attempt, t.visit, t.data.clone())
        };
        if let Some(r) = retry
            .iter()
            .find(|r| matches_error(&r.error_equals, &error.error))
        {
            if attempt < r.max_attempts.unwrap_or(3) {
                let interval = r.interval_seconds.unwrap_or(1) as f64;
                let rate = r.backoff_rate.unwrap_or(2.0).max(1.0);
                let delay = (interval * rate.powi(attempt as i32)).min(MAX_WAIT_SECONDS as f64);
                let at = now + Duration::milliseconds((delay * 1000.0) as i64);
                let timer_id = format!("{path}#{visit}.retry{}", attempt + 1);
                if let Some(t) = self.threads.get_mut(tid) {
                    t.attempt += 1;
                    t.waiting = Waiting::Retry {
                        timer_id: timer_id.clone(),
                    };
                }
                self.timers.insert(
                    timer_id.clone(),
                    PendingTimer {
                        thread: tid.to_string(),
                        purpose: TimerPurpose::Retry,
                        at,
                    },
                );
                self.log(
                    now,
                    &path,
                    LogEvent::Retrying {
                        error,
                        attempt: attempt + 1,
                        at: at.to_rfc3339(),
                    },
                );
                cmds.push(Command::SetTimer { timer_id, at });
                return Ok(());
            }
        }
        if let Some(c) = catch
            .iter()
            .find(|c| matches_error(&c.error_equals, &error.error))
        {
            let mut error_value = serde_json::to_value(&error).unwrap_or(Value::Null);
            if let (Some(details), Value::Object(map)) = (details, &mut error_value) {
                map.insert("details".into(), details);
            }
            let output =
                match params::apply_result_path(data, c.result_path.as_deref(), error_value) {
                    Ok(o) => o,
                    Err(e) => return self.thread_finished(tid, Err(Raised::from(e).0), now, cmds),
                };
            self.log(
                now,
                &path,
                LogEvent::Caught {
                    error,
                    next: c.next.clone(),
                },
            );
            let next = Transition {
                next: Some(c.next.clone()),
                end: None,
            };
            return self.complete(tid, output, &next, now, cmds);
        }
        self.thread_finished(tid, Err(error), now, cmds)
    }
}
