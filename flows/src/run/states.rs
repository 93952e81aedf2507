//! Moving through states: running ready threads, entering each state
//! type (Pass, ExpressionEval, Choice, Wait, Fail, Succeed here; Action,
//! Parallel and Map handed to their modules), completing a state to its
//! `Next`, and ending the run.
//!
//! It must not block or read the clock: a `Wait` becomes a timer command.

use super::limits::Fatal;
use super::retry_catch::{raised, Step};
use super::threads::{PendingTimer, TimerPurpose, Waiting};
use super::{Command, Run, MAX_WAIT_SECONDS};
use crate::choice;
use crate::model::{LogEvent, RunError, RunStatus, State, Transition};
use crate::params;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

impl Run {
    /// Runs ready threads until every thread waits on something.
    pub(super) fn pump(&mut self, now: DateTime<Utc>, cmds: &mut Vec<Command>) {
        while let Some(tid) = self.ready.pop_front() {
            if self.status.is_final() {
                self.ready.clear();
                return;
            }
            let is_ready = self
                .threads
                .get(&tid)
                .is_some_and(|t| t.waiting == Waiting::Ready);
            if !is_ready {
                continue;
            }
            if let Err(Fatal(e)) = self.run_state(&tid, now, cmds) {
                self.finish(Err(e), now, cmds);
                return;
            }
        }
    }

    fn run_state(
        &mut self,
        tid: &str,
        now: DateTime<Utc>,
        cmds: &mut Vec<Command>,
    ) -> Result<(), Fatal> {
        self.transitions += 1;
        if self.transitions > self.limits.max_transitions {
            return Err(Fatal(RunError {
                error: "Lattice.TransitionLimitExceeded".into(),
                cause: format!(
                    "the run entered more than {} states",
                    self.limits.max_transitions
                ),
            }));
        }
        let path = self.state_path(tid);
        let Some(state) = self.current_state(tid) else {
            return self.thread_finished(
                tid,
                Err(RunError {
                    error: "States.Runtime".into(),
                    cause: format!("state {path:?} does not exist"),
                }),
                now,
                cmds,
            );
        };
        let (data, attempt) = {
            let t = &self.threads[tid];
            (t.data.clone(), t.attempt)
        };
        if attempt == 0 {
            self.log(
                now,
                &path,
                LogEvent::StateEntered {
                    input: params::hide_private_state(&data),
                },
            );
        }
        match self.execute(tid, &path, &state, data, now, cmds) {
            Ok(()) => Ok(()),
            Err(Step::Raised(r)) => self.raise(tid, r, now, cmds),
            Err(Step::Fatal(f)) => Err(f),
        }
    }

    fn execute(
        &mut self,
        tid: &str,
        path: &str,
        state: &State,
        data: Value,
        now: DateTime<Utc>,
        cmds: &mut Vec<Command>,
    ) -> Result<(), Step> {
        let budget = self.limits.expression;
        // What paths and expressions read: the data plus `$._context`.
        let view = self.view(&data);
        match state {
            State::Pass(p) => {
                let input = params::apply_input_path(p.input_path.as_deref(), &view)?;
                let result = match (&p.parameters, &p.result) {
                    (Some(t), _) => params::resolve(t, &input, budget)?,
                    (None, Some(r)) => r.clone(),
                    (None, None) => self.without_context(input),
                };
                let output = params::apply_result_path(data, p.result_path.as_deref(), result)?;
                self.complete(tid, output, &p.transition, now, cmds)?;
            }
            State::ExpressionEval(e) => {
                let result = params::resolve(&e.parameters, &view, budget)?;
                let output = params::apply_result_path(data, e.result_path.as_deref(), result)?;
                self.complete(tid, output, &e.transition, now, cmds)?;
            }
            State::Choice(c) => {
                for rule in &c.choices {
                    let hit = choice::matches(rule, &view)
                        .map_err(|e| Step::Raised(raised("States.Runtime", e.0)))?;
                    if hit {
                        let next = Transition {
                            next: rule.next.clone(),
                            end: None,
                        };
                        self.complete(tid, data, &next, now, cmds)?;
                        return Ok(());
                    }
                }
                match &c.default {
                    Some(d) => {
                        let next = Transition {
                            next: Some(d.clone()),
                            end: None,
                        };
                        self.complete(tid, data, &next, now, cmds)?;
                    }
                    None => {
                        return Err(Step::Raised(raised(
                            "States.NoChoiceMatched",
                            format!("no Choice rule of {path:?} matched and it has no Default"),
                        )))
                    }
                }
            }
            State::Wait(w) => {
                let until = wait_until(w, &view, now)?;
                let visit = self.threads[tid].visit;
                let timer_id = format!("{path}#{visit}.wait");
                self.timers.insert(
                    timer_id.clone(),
                    PendingTimer {
                        thread: tid.to_string(),
                        purpose: TimerPurpose::Wait,
                        at: until,
                    },
                );
                self.set_waiting(
                    tid,
                    Waiting::Wait {
                        timer_id: timer_id.clone(),
                    },
                );
                self.log(
                    now,
                    path,
                    LogEvent::WaitStarted {
                        until: until.to_rfc3339(),
                    },
                );
                cmds.push(Command::SetTimer {
                    timer_id,
                    at: until,
                });
            }
            State::Fail(f) => {
                // A Fail state ends its thread; the thread's own Catch does
                // not apply (a branch's failure reaches the Parallel's).
                let error = RunError {
                    error: f.error.clone().unwrap_or_else(|| "States.Fail".into()),
                    cause: f.cause.clone().unwrap_or_default(),
                };
                self.thread_finished(tid, Err(error), now, cmds)?;
            }
            State::Succeed(_) => {
                self.log(
                    now,
                    path,
                    LogEvent::StateExited {
                        output: data.clone(),
                    },
                );
                self.thread_finished(tid, Ok(data), now, cmds)?;
            }
            State::Action(a) => self.start_action(tid, path, a, &view, now, cmds)?,
            State::Parallel(p) => self.enter_parallel(tid, path, p, &view, now, cmds)?,
            State::Map(m) => self.enter_map(tid, path, m, &view, now, cmds)?,
        }
        Ok(())
    }

    /// The current state of `tid` finished with `output`: go on or end.
    pub(super) fn complete(
        &mut self,
        tid: &str,
        output: Value,
        transition: &Transition,
        now: DateTime<Utc>,
        cmds: &mut Vec<Command>,
    ) -> Result<(), Fatal> {
        let path = self.state_path(tid);
        self.check_size(&output, &format!("the output of {path:?}"))?;
        self.log(
            now,
            &path,
            LogEvent::StateExited {
                output: params::hide_private_state(&output),
            },
        );
        match &transition.next {
            Some(next) => {
                let visit = self.transitions;
                if let Some(t) = self.threads.get_mut(tid) {
                    t.state = next.clone();
                    t.data = output;
                    t.attempt = 0;
                    t.visit = visit;
                    t.waiting = Waiting::Ready;
                }
                self.ready.push_back(tid.to_string());
                Ok(())
            }
            None => self.thread_finished(tid, Ok(output), now, cmds),
        }
    }

    pub(super) fn finish(
        &mut self,
        result: Result<Value, RunError>,
        now: DateTime<Utc>,
        cmds: &mut Vec<Command>,
    ) {
        if self.status.is_final() {
            return;
        }
        for (id, a) in std::mem::take(&mut self.actions) {
            cmds.push(Command::CancelAction {
                request_id: id,
                action_url: a.action_url,
            });
        }
        self.timers.clear();
        self.threads.clear();
        self.ready.clear();
        match result {
            Ok(output) => {
                self.log(
                    now,
                    "",
                    LogEvent::FlowSucceeded {
                        output: params::hide_private_state(&output),
                    },
                );
                self.status = RunStatus::Succeeded;
                self.output = Some(output.clone());
                cmds.push(Command::Finish {
                    status: RunStatus::Succeeded,
                    output: Some(output),
                    error: None,
                });
            }
            Err(error) => {
                self.log(
                    now,
                    "",
                    LogEvent::FlowFailed {
                        error: error.clone(),
                    },
                );
                self.status = RunStatus::Failed;
                self.error = Some(error.clone());
                cmds.push(Command::Finish {
                    status: RunStatus::Failed,
                    output: None,
                    error: Some(error),
                });
            }
        }
    }
}

fn wait_until(
    w: &crate::model::WaitState,
    data: &Value,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, Step> {
    let seconds = |v: &Value, what: &str| -> Result<DateTime<Utc>, Step> {
        let s = v
            .as_u64()
            .filter(|s| *s <= MAX_WAIT_SECONDS)
            .ok_or_else(|| {
                raised(
                    "States.Runtime",
                    format!("{what} must be a whole number of seconds up to {MAX_WAIT_SECONDS}, not {v}"),
                )
            })?;
        Ok(now + Duration::seconds(s as i64))
    };
    let timestamp = |v: &Value, what: &str| -> Result<DateTime<Utc>, Step> {
        let t = v
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .ok_or_else(|| {
                raised(
                    "States.Runtime",
                    format!("{what} is not an RFC 3339 timestamp: {v}"),
                )
            })?;
        Ok(t.with_timezone(&Utc))
    };
    if let Some(s) = &w.seconds {
        return seconds(s, "Seconds");
    }
    if let Some(p) = &w.seconds_path {
        return seconds(&params::select(p, data, "SecondsPath")?, "SecondsPath");
    }
    if let Some(t) = &w.timestamp {
        return timestamp(&Value::String(t.clone()), "Timestamp");
    }
    if let Some(p) = &w.timestamp_path {
        return timestamp(&params::select(p, data, "TimestampPath")?, "TimestampPath");
    }
    Err(Step::Raised(raised(
        "States.Runtime",
        "a Wait state without a duration",
    )))
}
