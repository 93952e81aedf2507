//! What each driver [`Event`] does to a run: cancellation, an action going
//! INACTIVE or ACTIVE again, an action's end, a refused start, a timer
//! (a `Wait`, a retry's backoff, an action's `WaitTime`, the lifetime).
//!
//! It dispatches only: an event naming an unknown request or timer is
//! ignored (so duplicates are harmless), and the work is done by the
//! modules that own it.

use super::limits::Fatal;
use super::retry_catch::raised;
use super::threads::{TimerPurpose, Waiting};
use super::{Command, Event, Run};
use crate::model::{LogEvent, RunError};
use chrono::{DateTime, Utc};

impl Run {
    pub(super) fn apply(
        &mut self,
        event: Event,
        now: DateTime<Utc>,
        cmds: &mut Vec<Command>,
    ) -> Result<(), Fatal> {
        match event {
            Event::CancelRequested => {
                self.log(now, "", LogEvent::FlowCancelled);
                self.finish(
                    Err(RunError {
                        error: "RunCancelled".into(),
                        cause: "the run was cancelled".into(),
                    }),
                    now,
                    cmds,
                );
                Ok(())
            }
            Event::ActionInactive {
                request_id,
                details,
            } => {
                let Some(a) = self.actions.get_mut(&request_id) else {
                    return Ok(());
                };
                if !a.inactive {
                    a.inactive = true;
                    let thread = a.thread.clone();
                    let state = self.state_path(&thread);
                    self.log(
                        now,
                        &state,
                        LogEvent::ActionInactive {
                            request_id,
                            details,
                        },
                    );
                }
                self.refresh_status();
                Ok(())
            }
            Event::ActionActive { request_id } => {
                let Some(a) = self.actions.get_mut(&request_id) else {
                    return Ok(());
                };
                if a.inactive {
                    a.inactive = false;
                    let thread = a.thread.clone();
                    let state = self.state_path(&thread);
                    self.log(now, &state, LogEvent::ActionActive { request_id });
                }
                self.refresh_status();
                Ok(())
            }
            Event::ActionSucceeded { request_id, status } => {
                self.action_done(&request_id, Ok(status), now, cmds)
            }
            Event::ActionFailed { request_id, status } => {
                self.action_done(&request_id, Err(Some(status)), now, cmds)
            }
            Event::ActionUnableToRun { request_id, cause } => {
                let Some(a) = self.actions.remove(&request_id) else {
                    return Ok(());
                };
                self.timers.remove(&format!("{request_id}.timeout"));
                self.refresh_status();
                self.raise(&a.thread, raised("ActionUnableToRun", cause), now, cmds)
            }
            Event::TimerFired { timer_id } => {
                let Some(t) = self.timers.remove(&timer_id) else {
                    return Ok(());
                };
                if t.purpose == TimerPurpose::Lifetime {
                    return Err(Fatal(RunError {
                        error: "Lattice.RunLifetimeExceeded".into(),
                        cause: format!(
                            "the run did not finish within {} seconds",
                            self.limits.max_lifetime_seconds
                        ),
                    }));
                }
                let Some(thread) = self.threads.get(&t.thread) else {
                    return Ok(());
                };
                match (t.purpose, &thread.waiting) {
                    (TimerPurpose::Wait, Waiting::Wait { timer_id: w }) if *w == timer_id => {
                        let data = thread.data.clone();
                        let transition = self.transition_of(&t.thread);
                        self.complete(&t.thread, data, &transition, now, cmds)
                    }
                    (TimerPurpose::Retry, Waiting::Retry { timer_id: w }) if *w == timer_id => {
                        self.set_waiting(&t.thread, Waiting::Ready);
                        self.ready.push_back(t.thread);
                        Ok(())
                    }
                    (
                        TimerPurpose::ActionTimeout { request_id },
                        Waiting::Action { request_id: r },
                    ) if *r == request_id => {
                        let Some(a) = self.actions.remove(&request_id) else {
                            return Ok(());
                        };
                        self.refresh_status();
                        cmds.push(Command::CancelAction {
                            request_id: request_id.clone(),
                            action_url: a.action_url,
                        });
                        self.raise(
                            &t.thread,
                            raised(
                                "ActionTimeout",
                                format!("action {request_id} did not finish within its WaitTime"),
                            ),
                            now,
                            cmds,
                        )
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}
