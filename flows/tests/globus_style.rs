//! Flow definitions we wrote in the style of published Globus flows (see
//! `globus_style/README.md`) parse and validate with no problem, and a run
//! of each, with only its action URLs mapped to Lattice's built-in
//! providers, reaches the expected end state when a scripted driver feeds
//! canned action results.

mod common;

use chrono::{TimeZone, Utc};
use common::with_lattice_urls;
use lattice_flows::model::LogEvent;
use lattice_flows::sim::{failed, succeeded, Reply, Simulator, Started};
use lattice_flows::{
    validate, validate_document, validate_input, FlowDefinition, Limits, Run, RunStatus,
};
use serde_json::{json, Value};

const FIXTURES: [&str; 4] = [
    "move.json",
    "looping_batched_move.json",
    "transfer_compute_pipeline.json",
    "genomics_fanout.json",
];

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/globus_style/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// Parses and validates a definition as written: no errors, no warnings.
fn load(name: &str) -> FlowDefinition {
    let definition =
        FlowDefinition::from_json(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        validate(&definition),
        validate_document(&fixture_json(name)).unwrap().1
    );
    let report = validate(&definition);
    assert!(report.errors.is_empty(), "{name}: {:#?}", report.errors);
    assert!(report.warnings.is_empty(), "{name}: {:#?}", report.warnings);
    definition
}

fn play(
    definition: FlowDefinition,
    input: Value,
    responder: impl FnMut(&Started) -> Reply,
) -> (Run, Vec<Started>) {
    let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let (mut run, cmds) = Run::start(
        "globus-style",
        with_lattice_urls(definition),
        input,
        Limits::default(),
        t0,
    );
    let mut sim = Simulator::new(t0, responder);
    sim.execute(cmds);
    sim.play(&mut run, 10_000);
    (run, sim.started)
}

fn urls(started: &[Started]) -> Vec<&str> {
    started.iter().map(|s| s.action_url.as_str()).collect()
}

fn states(started: &[Started]) -> Vec<&str> {
    started.iter().map(|s| s.state.as_str()).collect()
}

const SRC: &str = "6c54cade-bde5-45c1-bdea-f4bd71dba2cc";
const DST: &str = "31ce9ba0-176d-45a5-add3-f37d233ba47d";
const COMPUTE: &str = "4b116d3c-1703-4f8f-9f6f-39921e5864df";

fn move_input(source: &str, destination: &str) -> Value {
    json!({
        "source": {"id": SRC, "path": source},
        "destination": {"id": DST, "path": destination}
    })
}

#[test]
fn move_a_file_into_a_directory_keeps_its_name() {
    let input = move_input("/~/data/run7.h5", "/~/archive/");
    validate_input(&fixture_json("move.input_schema.json"), &input).unwrap();
    let (mut run, started) = play(load("move.json"), input, |s| match s.action_url.as_str() {
        "/v1/actions/stat" if s.body["path"] == "/~/data/run7.h5" => {
            Reply::Succeed(succeeded(json!({"type": "file", "name": "run7.h5"})))
        }
        "/v1/actions/stat" => Reply::Succeed(succeeded(json!({"type": "dir", "name": "archive"}))),
        _ => Reply::Succeed(succeeded(json!({"task_id": "t1"}))),
    });
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(
        urls(&started),
        [
            "/v1/actions/stat",
            "/v1/actions/stat",
            "/v1/actions/transfer",
            "/v1/actions/delete"
        ]
    );
    // `rstrip` + `rpartition` in a conditional expression, `pathsplit`
    assert_eq!(
        started[2].body,
        json!({
            "DATA": [{"source_path": "/~/data/run7.h5", "destination_path": "/~/archive/run7.h5", "recursive": false}],
            "source_endpoint": SRC,
            "destination_endpoint": DST,
            "label": "move run7.h5"
        })
    );
    assert_eq!(
        started[3].body,
        json!({"DATA": [{"path": "/~/data/run7.h5"}], "endpoint": SRC, "recursive": false})
    );
    let output = run.output.clone().unwrap();
    assert_eq!(
        output["result"],
        json!({"message": "moved", "moved_to": "/~/archive/run7.h5"})
    );
    assert_eq!(
        output["plan"],
        json!({"recursive": false, "destination_exists": true, "into_directory": true})
    );
    // `__Private_Parameters`: the provider got DATA, the run log did not
    let log = run.drain_log();
    let bodies: Vec<&Value> = log
        .iter()
        .filter_map(|e| match &e.event {
            LogEvent::ActionStarted { body, .. }
                if e.state == "CopyToDestination" || e.state == "RemoveSource" =>
            {
                Some(body)
            }
            _ => None,
        })
        .collect();
    assert_eq!(bodies.len(), 2);
    for body in bodies {
        assert!(body.get("DATA").is_none(), "{body}");
        assert!(body.get("__Private_Parameters").is_none(), "{body}");
    }
}

#[test]
fn move_to_a_new_name_when_the_destination_does_not_exist() {
    let (run, started) = play(
        load("move.json"),
        move_input("/~/data/", "/~/renamed"),
        |s| match (s.state.as_str(), s.action_url.as_str()) {
            ("InspectSource", _) => Reply::Succeed(succeeded(json!({"type": "dir"}))),
            ("InspectDestination", _) => Reply::Fail(failed(json!({"code": "NotFound"}))),
            _ => Reply::Succeed(succeeded(json!({}))),
        },
    );
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(
        started[2].body["DATA"],
        json!([{"source_path": "/~/data/", "destination_path": "/~/renamed", "recursive": true}])
    );
    assert_eq!(started[2].body["label"], "move data");
    assert_eq!(started[3].body["recursive"], true);
    let output = run.output.unwrap();
    assert_eq!(
        output["destination_missing"]["Error"],
        "ActionFailedException"
    );
    assert_eq!(output["plan"]["destination_exists"], false);
}

#[test]
fn move_a_directory_onto_a_file_fails() {
    let (run, started) = play(
        load("move.json"),
        move_input("/~/data/", "/~/file.txt"),
        |s| {
            let kind = if s.body["path"] == "/~/data/" {
                "dir"
            } else {
                "file"
            };
            Reply::Succeed(succeeded(json!({"type": kind})))
        },
    );
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(urls(&started), ["/v1/actions/stat", "/v1/actions/stat"]);
    let error = run.error.unwrap();
    assert_eq!(error.error, "DirectoryOntoFile");
    assert!(
        error.cause.contains("cannot replace a file"),
        "{}",
        error.cause
    );
}

#[test]
fn looping_batched_move_moves_batches_until_none_are_left() {
    let input = json!({
        "source": {"id": SRC, "path": "/~/incoming/run-9/"},
        "destination": {"id": DST, "path": "/~/archive"},
        "batch_size": 2
    });
    validate_input(
        &fixture_json("looping_batched_move.input_schema.json"),
        &input,
    )
    .unwrap();
    let (run, started) = play(load("looping_batched_move.json"), input, |s| {
        match s.action_url.as_str() {
            "/v1/actions/ls" => Reply::Succeed(succeeded(json!({"DATA": [
                {"name": "a.dat", "type": "file"},
                {"name": "b.dat", "type": "file"},
                {"name": "upload.part", "type": "file"},
                {"name": "sub", "type": "dir"}
            ]}))),
            _ => Reply::Succeed(succeeded(json!({"task_id": "t"}))),
        }
    });
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(
        states(&started),
        [
            "ListSource",
            "TransferBatch",
            "DeleteBatch",
            "TransferBatch",
            "DeleteBatch"
        ]
    );
    // `pending[:size]`, then `pending[size:]` on the next turn of the loop
    assert_eq!(
        started[1].body["DATA"],
        json!([
            {"source_path": "/~/incoming/run-9/a.dat", "destination_path": "/~/archive/run-9/a.dat"},
            {"source_path": "/~/incoming/run-9/b.dat", "destination_path": "/~/archive/run-9/b.dat"}
        ])
    );
    assert_eq!(
        started[3].body["DATA"],
        json!([{"source_path": "/~/incoming/run-9/sub", "destination_path": "/~/archive/run-9/sub"}])
    );
    assert_eq!(
        started[4].body,
        json!({"DATA": [{"path": "/~/incoming/run-9/sub"}], "endpoint": SRC, "recursive": true})
    );
    let ids: std::collections::BTreeSet<_> = started.iter().map(|s| &s.request_id).collect();
    assert_eq!(
        ids.len(),
        5,
        "each turn of the loop has its own request ids"
    );
    let output = run.output.unwrap();
    assert_eq!(output["result"], json!({"moved_into": "/~/archive/run-9"}));
    assert_eq!(output["plan"]["pending"], json!([]));
}

#[test]
fn looping_batched_move_of_an_empty_directory_moves_nothing() {
    let input = json!({
        "source": {"id": SRC, "path": "/~/empty"},
        "destination": {"id": DST, "path": "/~/"}
    });
    let (run, started) = play(load("looping_batched_move.json"), input, |_| {
        Reply::Succeed(succeeded(json!({"DATA": []})))
    });
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(urls(&started), ["/v1/actions/ls"]);
    // the default batch size from `getattr`
    let output = run.output.unwrap();
    assert_eq!(output["plan"]["size"], 2);
    assert_eq!(output["result"]["moved_into"], "/~/empty");
}

fn pipeline_input() -> Value {
    let at = |id: &str, p: &str| json!({"id": id, "path": p});
    json!({
        "raw": at(SRC, "/detector/run-0042/"),
        "staging": at(DST, "/scratch/run-0042"),
        "results": at(SRC, "/published/"),
        "reduce": {
            "endpoint": COMPUTE,
            "function": "0d2d2b1e-6f3c-4a53-9a59-4f6f0e3f1a01",
            "threshold": 0.8
        },
        "sync_level": 3
    })
}

fn reduced(events: u64) -> Value {
    succeeded(json!({"results": [{"output": {
        "events": events,
        "summary": "/scratch/run-0042/summary.h5"
    }}]}))
}

#[test]
fn pipeline_makes_the_missing_staging_directory_and_publishes() {
    let input = pipeline_input();
    let schema = fixture_json("transfer_compute_pipeline.input_schema.json");
    if let Err(e) = validate_input(&schema, &input) {
        panic!("{e}");
    }
    let (run, started) = play(load("transfer_compute_pipeline.json"), input, |s| {
        match s.state.as_str() {
            "LookupStaging" => Reply::Fail(failed(json!({"code": "ClientError.NotFound"}))),
            "Reduce" => Reply::Succeed(reduced(17)),
            _ => Reply::Succeed(succeeded(json!({"ok": true}))),
        }
    });
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(
        states(&started),
        [
            "LookupStaging",
            "MakeStaging",
            "StageRawData",
            "Reduce",
            "PublishSummary"
        ]
    );
    assert_eq!(
        urls(&started),
        [
            "/v1/actions/ls",
            "/v1/actions/mkdir",
            "/v1/actions/transfer",
            "/v1/actions/compute",
            "/v1/actions/transfer"
        ]
    );
    assert_eq!(started[2].body["filter_rules"][0]["name"], "*.evt");
    assert_eq!(started[2].body["sync_level"], 3);
    assert_eq!(
        started[3].body["kwargs"],
        json!({"input_dir": "/scratch/run-0042", "threshold": 0.8})
    );
    // reading the compute action's output: `$.Reduce.details.results[0]...`
    assert_eq!(
        started[4].body["DATA"],
        json!([{"source_path": "/scratch/run-0042/summary.h5", "destination_path": "/published/summary.h5"}])
    );
    let output = run.output.unwrap();
    assert_eq!(
        output["staging_lookup_error"]["Error"],
        "ActionFailedException"
    );
    assert_eq!(output["published"]["status"], "SUCCEEDED");
}

#[test]
fn pipeline_retries_a_refused_transfer_and_skips_publishing_nothing() {
    let mut refusals = 0;
    let (run, started) = play(
        load("transfer_compute_pipeline.json"),
        pipeline_input(),
        |s| match s.state.as_str() {
            "StageRawData" if refusals == 0 => {
                refusals += 1;
                Reply::UnableToRun("endpoint paused".into())
            }
            "Reduce" => Reply::Succeed(reduced(0)),
            _ => Reply::Succeed(succeeded(json!({}))),
        },
    );
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(
        states(&started),
        ["LookupStaging", "StageRawData", "StageRawData", "Reduce"]
    );
    assert!(started[2].at - started[1].at >= chrono::Duration::seconds(60));
    let output = run.output.unwrap();
    assert_eq!(
        output["note"],
        "the reduction found no events above the threshold"
    );
}

#[test]
fn pipeline_compute_failure_is_caught_and_reported() {
    let (run, started) = play(
        load("transfer_compute_pipeline.json"),
        pipeline_input(),
        |s| {
            if s.state == "Reduce" {
                return Reply::Fail(failed(json!({"exception": "reduction crashed"})));
            }
            Reply::Succeed(succeeded(json!({})))
        },
    );
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(started.last().unwrap().state, "Reduce");
    let error = run.error.unwrap();
    assert_eq!(error.error, "ReductionFailed");
    assert!(error.cause.contains("$.reduce_error"), "{}", error.cause);
}

fn genomics_input() -> Value {
    json!({
        "run_name": "cohort-7",
        "sequencer": {"id": SRC, "results_path": "/results/"},
        "cluster": {"id": DST, "path": "/g/data/lab/"},
        "compute": {
            "endpoint": COMPUTE,
            "align_function": "0d2d2b1e-6f3c-4a53-9a59-4f6f0e3f1a02",
            "call_function": "0d2d2b1e-6f3c-4a53-9a59-4f6f0e3f1a03"
        },
        "samples": [
            {"name": "S1", "reads": "/runs/17/S1.fastq.gz"},
            {"name": "S2", "reads": "/runs/17/S2.fastq.gz"},
            {"name": "S3", "reads": "/runs/17/S3.fastq.gz"}
        ]
    })
}

fn genomics_responder(s: &Started) -> Reply {
    let kwargs = &s.body["tasks"][0]["kwargs"];
    if s.state.ends_with("/Align") {
        let bam = format!("{}/aligned.bam", kwargs["out_dir"].as_str().unwrap());
        return Reply::Succeed(succeeded(json!({"results": [{"output": {"bam": bam}}]})));
    }
    if s.state.ends_with("/CallVariants") {
        let vcf = kwargs["bam"]
            .as_str()
            .unwrap()
            .replace("aligned.bam", "calls.vcf.gz");
        return Reply::Succeed(succeeded(json!({"results": [{"output": {"vcf": vcf}}]})));
    }
    Reply::Succeed(succeeded(json!({"task_id": "t"})))
}

#[test]
fn genomics_fans_out_per_sample_and_returns_every_call() {
    let input = genomics_input();
    validate_input(&fixture_json("genomics_fanout.input_schema.json"), &input).unwrap();
    let (run, started) = play(load("genomics_fanout.json"), input, genomics_responder);
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(started.len(), 1 + 3 * 2 + 1);
    // MaxConcurrency 2: sample 3 starts only after sample 1 or 2 finished
    let first_done = started
        .iter()
        .position(|s| s.state.ends_with("/CallVariants"))
        .unwrap();
    let third = started
        .iter()
        .position(|s| s.state == "PerSample/item 2/Align")
        .unwrap();
    assert!(first_done < third, "{:?}", states(&started));
    assert_eq!(started[0].state, "StageReads");
    assert_eq!(
        started[0].body["DATA"][2],
        json!({"source_path": "/runs/17/S3.fastq.gz", "destination_path": "/g/data/lab/cohort-7/reads/S3.fastq.gz"})
    );
    let aligns: Vec<&str> = started
        .iter()
        .filter(|s| s.state.ends_with("/Align"))
        .map(|s| s.state.as_str())
        .collect();
    assert_eq!(
        aligns,
        [
            "PerSample/item 0/Align",
            "PerSample/item 1/Align",
            "PerSample/item 2/Align"
        ]
    );
    assert_eq!(started[1].action_url, "/v1/actions/compute");
    assert_eq!(
        started[1].body["tasks"][0]["kwargs"],
        json!({"reads": "/g/data/lab/cohort-7/reads/S1.fastq.gz", "out_dir": "/g/data/lab/cohort-7/calls/S1"})
    );
    let last = started.last().unwrap();
    assert_eq!(last.state, "ReturnCalls");
    assert_eq!(
        last.body["DATA"],
        json!([
            {"source_path": "/g/data/lab/cohort-7/calls/S1/calls.vcf.gz", "destination_path": "/results/S1.vcf.gz"},
            {"source_path": "/g/data/lab/cohort-7/calls/S2/calls.vcf.gz", "destination_path": "/results/S2.vcf.gz"},
            {"source_path": "/g/data/lab/cohort-7/calls/S3/calls.vcf.gz", "destination_path": "/results/S3.vcf.gz"}
        ])
    );
    let output = run.output.unwrap();
    assert_eq!(output["settings"]["sample_count"], 3);
    assert_eq!(output["calls"][1]["sample"], "S2");
}

#[test]
fn genomics_a_failing_sample_is_caught() {
    let (run, started) = play(load("genomics_fanout.json"), genomics_input(), |s| {
        if s.state == "PerSample/item 1/CallVariants" {
            return Reply::Fail(failed(json!({"exception": "out of memory"})));
        }
        genomics_responder(s)
    });
    assert_eq!(run.status, RunStatus::Failed);
    assert!(started.iter().all(|s| s.state != "ReturnCalls"));
    assert_eq!(run.error.unwrap().error, "SampleFailed");
}

#[test]
fn globus_style_definitions_survive_a_yaml_round_trip() {
    for name in FIXTURES {
        let definition = load(name);
        let value = serde_json::to_value(&definition).unwrap();
        let yaml = serde_yaml_ng::to_string(&value).unwrap();
        assert_eq!(
            FlowDefinition::from_yaml(&yaml).unwrap(),
            definition,
            "{name}"
        );
    }
}
