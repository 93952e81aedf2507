//! Action states: resolving the request body, starting the action under a
//! request id derived from the run, the state's path, its entry and its
//! attempt (so a repeated start starts nothing new), its `WaitTime`
//! timer, and what the action's end means for the state.
//!
//! It must not talk to providers: it only emits `StartAction` and reads
//! the status documents the driver reports.

use super::limits::Fatal;
use super::retry_catch::{raised, Raised, Step};
use super::threads::{PendingAction, PendingTimer, TimerPurpose, Waiting};
use super::{Command, Run, DEFAULT_WAIT_TIME, MAX_WAIT_SECONDS};
use crate::model::{ActionState, LogEvent, State};
use crate::params;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

impl Run {
    /// Enters an Action state: resolves the body, starts the action under a
    /// stable request id and sets its `WaitTime` timer.
    pub(super) fn start_action(
        &mut self,
        tid: &str,
        path: &str,
        a: &ActionState,
        view: &Value,
        now: DateTime<Utc>,
        cmds: &mut Vec<Command>,
    ) -> Result<(), Step> {
        let budget = self.limits.expression;
        let input = params::apply_input_path(a.input_path.as_deref(), view)?;
        let body = match &a.parameters {
            Some(t) => params::resolve(t, &input, budget)?,
            None => self.without_context(input),
        };
        self.check_size(&body, &format!("the body of action {path:?}"))?;
        let (visit, attempt) = {
            let t = &self.threads[tid];
            (t.visit, t.attempt)
        };
        let request_id = self.request_id(path, visit, attempt);
        let wait = a
            .wait_time
            .unwrap_or(DEFAULT_WAIT_TIME)
            .min(MAX_WAIT_SECONDS);
        let deadline = now + Duration::seconds(wait as i64);
        let timer_id = format!("{request_id}.timeout");
        let shown = params::redact_private(a.parameters.as_ref(), &body);
        let start = Command::StartAction {
            request_id: request_id.clone(),
            state: path.to_string(),
            action_url: a.action_url.clone(),
            action_scope: a.action_scope.clone(),
            run_as: a.run_as.clone(),
            body,
            deadline,
        };
        self.actions.insert(
            request_id.clone(),
            PendingAction {
                thread: tid.to_string(),
                action_url: a.action_url.clone(),
                inactive: false,
                start: start.clone(),
            },
        );
        self.timers.insert(
            timer_id.clone(),
            PendingTimer {
                thread: tid.to_string(),
                purpose: TimerPurpose::ActionTimeout {
                    request_id: request_id.clone(),
                },
                at: deadline,
            },
        );
        self.set_waiting(
            tid,
            Waiting::Action {
                request_id: request_id.clone(),
            },
        );
        self.log(
            now,
            path,
            LogEvent::ActionStarted {
                request_id: request_id.clone(),
                action_url: a.action_url.clone(),
                body: shown,
            },
        );
        cmds.push(start);
        cmds.push(Command::SetTimer {
            timer_id,
            at: deadline,
        });
        Ok(())
    }

    pub(super) fn action_done(
        &mut self,
        request_id: &str,
        outcome: Result<Value, Option<Value>>,
        now: DateTime<Utc>,
        cmds: &mut Vec<Command>,
    ) -> Result<(), Fatal> {
        let Some(a) = self.actions.remove(request_id) else {
            return Ok(());
        };
        self.timers.remove(&format!("{request_id}.timeout"));
        self.refresh_status();
        let tid = a.thread;
        let Some(State::Action(state)) = self.current_state(&tid) else {
            return Ok(());
        };
        let path = self.state_path(&tid);
        let status = match &outcome {
            Ok(s) | Err(Some(s)) => s.clone(),
            Err(None) => Value::Null,
        };
        self.log(
            now,
            &path,
            LogEvent::ActionCompleted {
                request_id: request_id.to_string(),
                status: status.clone(),
            },
        );
        if outcome.is_err() && state.exception_on_action_failure != Some(false) {
            let cause = status
                .get("display_status")
                .or_else(|| status.get("details"))
                .map(|d| match d {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_else(|| "the action failed".to_string());
            let Raised(error, _) = raised("ActionFailedException", cause);
            return self.raise(&tid, Raised(error, Some(status)), now, cmds);
        }
        let data = self.threads[&tid].data.clone();
        match params::apply_result_path(data, state.result_path.as_deref(), status) {
            Ok(output) => self.complete(&tid, output, &state.transition, now, cmds),
            Err(e) => self.raise(&tid, e.into(), now, cmds),
        }
    }

    pub(super) fn request_id(&self, path: &str, visit: u64, attempt: u32) -> String {
        let mut h = Sha256::new();
        for part in [self.id.as_bytes(), path.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(visit.to_be_bytes());
        h.update(attempt.to_be_bytes());
        let digest = h.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}
