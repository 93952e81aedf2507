//! Parallel and Map states: child threads (one per branch, one per item
//! with at most `MaxConcurrency` running), collecting their outputs in
//! branch or item order, and cancelling the rest when one fails.
//!
//! It owns the parent/child bookkeeping; a child's failure is raised in
//! the parent state through `retry_catch`, never handled here.

use super::limits::Fatal;
use super::retry_catch::{raised, Raised, Step};
use super::threads::{MachineStep, Thread, Waiting};
use super::{Command, Run};
use crate::model::{MapState, ParallelState, RunError, State};
use crate::params;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::VecDeque;

impl Run {
    /// Enters a Parallel state: one child thread per branch, all on the
    /// state's input.
    pub(super) fn enter_parallel(
        &mut self,
        tid: &str,
        path: &str,
        p: &ParallelState,
        view: &Value,
        now: DateTime<Utc>,
        cmds: &mut Vec<Command>,
    ) -> Result<(), Step> {
        let budget = self.limits.expression;
        let input = params::apply_input_path(p.input_path.as_deref(), view)?;
        let input = match &p.parameters {
            Some(t) => params::resolve(t, &input, budget)?,
            None => self.without_context(input),
        };
        let n = p.branches.len();
        self.set_waiting(
            tid,
            Waiting::Children {
                results: vec![None; n],
                queued: VecDeque::new(),
                running: n,
            },
        );
        if n == 0 {
            return self.children_done(tid, now, cmds).map_err(Step::Fatal);
        }
        let state_name = self.threads[tid].state.clone();
        for (i, branch) in p.branches.iter().enumerate() {
            let mut machine = self.threads[tid].machine.clone();
            machine.push(MachineStep::Branch {
                state: state_name.clone(),
                index: i,
            });
            let prefix = format!("{path}/branch {i}/");
            self.spawn(
                tid,
                i,
                prefix,
                machine,
                branch.start_at.clone(),
                input.clone(),
            );
        }
        Ok(())
    }

    /// Enters a Map state: one child thread per item, at most
    /// `MaxConcurrency` running, the rest queued.
    pub(super) fn enter_map(
        &mut self,
        tid: &str,
        path: &str,
        m: &MapState,
        view: &Value,
        now: DateTime<Utc>,
        cmds: &mut Vec<Command>,
    ) -> Result<(), Step> {
        let budget = self.limits.expression;
        let input = params::apply_input_path(m.input_path.as_deref(), view)?;
        let items = params::select(m.items_path.as_deref().unwrap_or("$"), &input, "ItemsPath")?;
        let Value::Array(items) = items else {
            return Err(Step::Raised(raised(
                "States.Runtime",
                format!(
                    "ItemsPath {} of {path:?} is not a list",
                    m.items_path.as_deref().unwrap_or("$")
                ),
            )));
        };
        if items.len() > self.limits.max_map_items {
            return Err(Step::Fatal(Fatal(RunError {
                error: "Lattice.MapFanOutLimitExceeded".into(),
                cause: format!(
                    "Map {path:?} has {} items, more than the limit of {}",
                    items.len(),
                    self.limits.max_map_items
                ),
            })));
        }
        let mut queued = VecDeque::new();
        let state_input = self.without_context(input);
        for (i, item) in items.into_iter().enumerate() {
            let item_input = match &m.parameters {
                Some(t) => params::resolve(
                    t,
                    &json!({"item": item, "index": i, "input": state_input}),
                    budget,
                )?,
                None => item,
            };
            queued.push_back((i, item_input));
        }
        let n = queued.len();
        let limit = match m.max_concurrency {
            None | Some(0) => n,
            Some(c) => (c as usize).min(n),
        };
        let first: Vec<(usize, Value)> = queued.drain(..limit).collect();
        self.set_waiting(
            tid,
            Waiting::Children {
                results: vec![None; n],
                queued,
                running: first.len(),
            },
        );
        if n == 0 {
            return self.children_done(tid, now, cmds).map_err(Step::Fatal);
        }
        for (i, item) in first {
            self.spawn_item(tid, path, i, item);
        }
        Ok(())
    }

    pub(super) fn spawn_item(&mut self, tid: &str, path: &str, i: usize, item: Value) {
        let Some(State::Map(m)) = self.current_state(tid) else {
            return;
        };
        let mut machine = self.threads[tid].machine.clone();
        machine.push(MachineStep::Iterator {
            state: self.threads[tid].state.clone(),
        });
        let prefix = format!("{path}/item {i}/");
        self.spawn(tid, i, prefix, machine, m.iterator.start_at.clone(), item);
    }

    pub(super) fn spawn(
        &mut self,
        parent: &str,
        index: usize,
        prefix: String,
        machine: Vec<MachineStep>,
        start_at: String,
        input: Value,
    ) {
        let visit = self.transitions;
        self.threads.insert(
            prefix.clone(),
            Thread {
                prefix: prefix.clone(),
                machine,
                state: start_at,
                data: input,
                attempt: 0,
                visit,
                waiting: Waiting::Ready,
                parent: Some((parent.to_string(), index)),
            },
        );
        self.ready.push_back(prefix);
    }

    /// A thread ended: the run ends (root), or its parent collects it.
    pub(super) fn thread_finished(
        &mut self,
        tid: &str,
        result: Result<Value, RunError>,
        now: DateTime<Utc>,
        cmds: &mut Vec<Command>,
    ) -> Result<(), Fatal> {
        let Some(thread) = self.threads.remove(tid) else {
            return Ok(());
        };
        let Some((parent, index)) = thread.parent else {
            self.finish(result, now, cmds);
            return Ok(());
        };
        match result {
            Err(e) => {
                self.cancel_children(&parent, cmds);
                if let Some(t) = self.threads.get_mut(&parent) {
                    t.waiting = Waiting::Ready; // no longer waiting on children
                }
                self.raise(&parent, Raised(e, None), now, cmds)
            }
            Ok(output) => {
                let path = self.state_path(&parent);
                let mut next_item = None;
                let mut all_done = false;
                if let Some(Thread {
                    waiting:
                        Waiting::Children {
                            results,
                            queued,
                            running,
                        },
                    ..
                }) = self.threads.get_mut(&parent)
                {
                    if let Some(slot) = results.get_mut(index) {
                        *slot = Some(output);
                    }
                    *running = running.saturating_sub(1);
                    next_item = queued.pop_front();
                    if next_item.is_some() {
                        *running += 1;
                    }
                    all_done = *running == 0 && queued.is_empty();
                }
                if let Some((i, item)) = next_item {
                    self.spawn_item(&parent, &path, i, item);
                }
                if all_done {
                    return self.children_done(&parent, now, cmds);
                }
                Ok(())
            }
        }
    }

    /// Every child of a Parallel or Map state succeeded.
    pub(super) fn children_done(
        &mut self,
        tid: &str,
        now: DateTime<Utc>,
        cmds: &mut Vec<Command>,
    ) -> Result<(), Fatal> {
        let Some(t) = self.threads.get_mut(tid) else {
            return Ok(());
        };
        let Waiting::Children { results, .. } = std::mem::replace(&mut t.waiting, Waiting::Ready)
        else {
            return Ok(());
        };
        let data = t.data.clone();
        let list = Value::Array(results.into_iter().map(Option::unwrap_or_default).collect());
        let (result_path, transition) = match self.current_state(tid) {
            Some(State::Parallel(p)) => (p.result_path, p.transition),
            Some(State::Map(m)) => (m.result_path, m.transition),
            _ => return Ok(()),
        };
        match params::apply_result_path(data, result_path.as_deref(), list) {
            Ok(output) => self.complete(tid, output, &transition, now, cmds),
            Err(e) => self.raise(tid, e.into(), now, cmds),
        }
    }

    /// Removes every descendant of `tid`, cancelling their actions.
    pub(super) fn cancel_children(&mut self, tid: &str, cmds: &mut Vec<Command>) {
        let children: Vec<String> = self
            .threads
            .iter()
            .filter(|(_, t)| t.parent.as_ref().is_some_and(|(p, _)| p == tid))
            .map(|(id, _)| id.clone())
            .collect();
        for child in children {
            self.cancel_children(&child, cmds);
            self.threads.remove(&child);
            let ids: Vec<String> = self
                .actions
                .iter()
                .filter(|(_, a)| a.thread == child)
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                if let Some(a) = self.actions.remove(&id) {
                    cmds.push(Command::CancelAction {
                        request_id: id,
                        action_url: a.action_url,
                    });
                }
            }
            self.timers.retain(|_, t| t.thread != child);
        }
        self.refresh_status();
    }
}
