//! Unit tests of the run state machine, played with the scripted driver
//! ([`crate::sim`]); helpers here, tests by concept in the submodules.

mod limits;
mod log_and_context;
mod parallel_map;
mod states_and_actions;

use super::*;
use crate::model::LogEvent;
use crate::sim::{failed, succeeded, Reply, Simulator, Started};
use chrono::{Duration, TimeZone};
use serde_json::json;
use std::collections::BTreeSet;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn def(v: Value) -> FlowDefinition {
    let d = FlowDefinition::from_value(v).unwrap();
    let report = crate::validate::validate(&d);
    assert!(report.is_ok(), "{:#?}", report.errors);
    d
}

fn play(
    d: FlowDefinition,
    input: Value,
    limits: Limits,
    responder: impl FnMut(&Started) -> Reply,
) -> (Run, Simulator<impl FnMut(&Started) -> Reply>) {
    let (mut run, cmds) = Run::start("run-1", d, input, limits, t0());
    let mut sim = Simulator::new(t0(), responder);
    sim.execute(cmds);
    sim.play(&mut run, 100_000);
    (run, sim)
}

fn codes(run: &Run) -> Vec<String> {
    run.log
        .iter()
        .map(|e| {
            let v = serde_json::to_value(&e.event).unwrap();
            format!("{}:{}", v["code"].as_str().unwrap(), e.state)
        })
        .collect()
}
