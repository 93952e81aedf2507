//! The hand-run check that flow definitions published by Globus users run
//! on Lattice unchanged. Their files are not in this repository (code and
//! files from public repositories stay out of our commits), so this test
//! reads them from the directory named by `LATTICE_PUBLISHED_FLOWS_DIR`
//! and skips, saying why, when that is unset. See
//! `globus_style/README.md` for how to run it.
//!
//! For every `NAME.json` there (other than `*.input_schema.json` and
//! `*.sample_input.json`): the definition parses and validates with no
//! errors; its warnings are printed. If `NAME.sample_input.json` exists,
//! it must satisfy `NAME.input_schema.json` when that exists, and a run of
//! the definition with only its action URLs mapped to Lattice's built-in
//! providers is played against a driver whose every action succeeds with
//! `NAME.replies.json`'s entry for the state (an object of state name to
//! status details; `{}` for a state not listed). That run must end
//! SUCCEEDED.

mod common;

use chrono::{TimeZone, Utc};
use common::with_lattice_urls;
use lattice_flows::sim::{succeeded, Reply, Simulator};
use lattice_flows::{validate, validate_input, FlowDefinition, Limits, Run, RunStatus};
use serde_json::{json, Value};
use std::path::Path;

const VAR: &str = "LATTICE_PUBLISHED_FLOWS_DIR";

fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

#[test]
fn published_definitions_run_unchanged() {
    let Some(dir) = std::env::var_os(VAR) else {
        eprintln!(
            "skipped: {VAR} is unset; point it at a directory of published Globus flow \
             definitions to check them (see flows/tests/globus_style/README.md)"
        );
        return;
    };
    let dir = Path::new(&dir);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.ends_with(".json")
                && !n.ends_with(".input_schema.json")
                && !n.ends_with(".sample_input.json")
                && !n.ends_with(".replies.json")
        })
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no definitions in {}", dir.display());
    let mut ran = 0;
    for name in &names {
        let stem = name.trim_end_matches(".json");
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let definition = FlowDefinition::from_json(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let report = validate(&definition);
        assert!(report.errors.is_empty(), "{name}: {:#?}", report.errors);
        for warning in &report.warnings {
            eprintln!("{name}: warning: {warning:?}");
        }
        let Some(input) = read_json(&dir.join(format!("{stem}.sample_input.json"))) else {
            eprintln!("{name}: parses and validates (no {stem}.sample_input.json, so no run)");
            continue;
        };
        if let Some(schema) = read_json(&dir.join(format!("{stem}.input_schema.json"))) {
            validate_input(&schema, &input).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let replies = read_json(&dir.join(format!("{stem}.replies.json"))).unwrap_or(json!({}));
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let (mut run, cmds) = Run::start(
            "published",
            with_lattice_urls(definition),
            input,
            Limits::default(),
            t0,
        );
        let mut sim = Simulator::new(t0, |s| {
            let state = s.state.rsplit('/').next().unwrap_or(&s.state);
            Reply::Succeed(succeeded(replies.get(state).cloned().unwrap_or(json!({}))))
        });
        sim.execute(cmds);
        sim.play(&mut run, 10_000);
        assert_eq!(run.status, RunStatus::Succeeded, "{name}: {:?}", run.error);
        eprintln!("{name}: ran to SUCCEEDED ({} actions)", sim.started.len());
        ran += 1;
    }
    eprintln!("{} definitions checked, {ran} run", names.len());
}
