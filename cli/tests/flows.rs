//! Flows through the real binary: `lattice dev` and `lattice flow ...` as
//! its identity: a flow created from YAML (a Pass and a Choice), a broken
//! file validated (exit 2, the state and field named), runs started with
//! `--wait` that succeed (exit 0, the output printed) and fail (exit 6,
//! Error and Cause on stderr), the run list and log, the graph `flow show`
//! draws, an approval step answered with `run approve`, and delete.

use lattice_tests::platform::{eventually, failed, succeeded, DevOptions, DevPlatform};

const LATTICE: &str = env!("CARGO_BIN_EXE_lattice");

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

const GREETING: &str = r#"
StartAt: Greet
States:
  Greet:
    Type: Pass
    Parameters:
      greeting.$: $.name
    ResultPath: $.said
    Next: Size
  Size:
    Type: Choice
    Choices:
      - Variable: $.n
        NumericGreaterThan: 1
        Next: Big
    Default: Small
  Big:
    Type: Pass
    Result: big
    ResultPath: $.size
    End: true
  Small:
    Type: Pass
    Result: small
    ResultPath: $.size
    End: true
"#;

#[test]
fn flows_and_runs_through_the_cli() {
    let platform = DevPlatform::start(LATTICE.as_ref(), DevOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };

    // Create from YAML; the id alone on stdout, the title from the flag.
    let greeting = file("greeting.yaml", GREETING);
    let flow = succeeded(platform.cli(&[
        "flow",
        "create",
        &greeting,
        "--title",
        "greeting",
        "--keyword",
        "test",
    ]));
    let flow = flow.trim().to_owned();
    assert_eq!(flow.len(), 36, "{flow}");
    let valid = succeeded(platform.cli(&["flow", "validate", &greeting]));
    assert!(valid.contains("valid"), "{valid}");

    // A broken file: exit 2, every problem with its state and field.
    let broken = file(
        "broken.json",
        r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nowhere"}}}"#,
    );
    let output = platform.cli(&["flow", "validate", &broken]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (code, stderr) = failed(output);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.contains("state A, field Next"), "{stdout}");
    let (code, _) = failed(platform.cli(&["flow", "create", &broken]));
    assert_eq!(code, 4);
    // A file that is no flow at all is a usage error before any request.
    let junk = file("junk.json", r#"{"title": "no definition"}"#);
    let (code, stderr) = failed(platform.cli(&["flow", "create", &junk]));
    assert_eq!(code, 2, "{stderr}");

    // Start by title and wait: exit 0, the computed output printed.
    let done = succeeded(platform.cli(&[
        "flow",
        "start",
        "greeting",
        "--input",
        r#"{"name": "Ada", "n": 3}"#,
        "--label",
        "first",
        "--wait",
    ]));
    assert!(done.contains("SUCCEEDED"), "{done}");
    assert!(done.contains("\"greeting\": \"Ada\""), "{done}");
    assert!(done.contains("\"big\""), "{done}");
    let small = succeeded(platform.cli(&[
        "flow",
        "start",
        &flow,
        "--input",
        r#"{"name": "Bo", "n": 0}"#,
        "--wait",
        "--format",
        "json",
    ]));
    let small = json(&small);
    assert_eq!(small["status"], "SUCCEEDED", "{small}");
    assert_eq!(small["details"]["output"]["size"], "small", "{small}");
    let run = small["run_id"].as_str().unwrap().to_owned();

    // A Fail state: exit 6, its Error and Cause on stderr.
    let failing = file(
        "failing.json",
        r#"{"StartAt": "Boom", "States": {"Boom": {"Type": "Fail", "Error": "Exploded", "Cause": "on purpose"}}}"#,
    );
    let failing_flow = succeeded(platform.cli(&["flow", "create", &failing, "--title", "boom"]));
    let (code, stderr) = failed(platform.cli(&["flow", "start", "boom", "--wait"]));
    assert_eq!(code, 6, "{stderr}");
    assert!(
        stderr.contains("Exploded") && stderr.contains("on purpose"),
        "{stderr}"
    );

    // The run list: a table for people, the runs in JSON.
    let table = succeeded(platform.cli(&["flow", "run", "list"]));
    assert!(
        table.contains("STATUS") && table.contains("FLOW"),
        "{table}"
    );
    assert!(
        table.contains("first") && table.contains("greeting"),
        "{table}"
    );
    let listed = json(&succeeded(platform.cli(&[
        "flow", "run", "list", "--flow", "greeting", "--all", "--format", "json",
    ])));
    assert_eq!(listed["runs"].as_array().unwrap().len(), 2, "{listed}");
    let failed_runs = json(&succeeded(platform.cli(&[
        "flow", "run", "list", "--status", "failed", "--format", "json",
    ])));
    assert_eq!(
        failed_runs["runs"].as_array().unwrap().len(),
        1,
        "{failed_runs}"
    );
    assert_eq!(failed_runs["runs"][0]["flow_id"], failing_flow.trim());

    // The log names the states entered.
    let log = succeeded(platform.cli(&["flow", "run", "log", &run]));
    assert!(log.contains("Greet") && log.contains("Small"), "{log}");
    let followed = succeeded(platform.cli(&["flow", "run", "log", &run, "--follow"]));
    assert_eq!(followed.lines().count(), log.lines().count(), "{followed}");

    // The graph.
    let shown = succeeded(platform.cli(&["flow", "show", "greeting"]));
    assert!(shown.contains(&flow), "{shown}");
    assert!(shown.contains("Greet (Pass) -> Size"), "{shown}");
    assert!(
        shown.contains("Size (Choice) -> Big if $.n > 1, else Small"),
        "{shown}"
    );
    assert!(shown.contains("Big (Pass) -> end"), "{shown}");
    let info = json(&succeeded(
        platform.cli(&["flow", "show", &flow, "--format", "json"]),
    ));
    assert_eq!(info["title"], "greeting");
    assert_eq!(info["keywords"], serde_json::json!(["test"]));

    // Runs can be released once finished; flows deleted (then not found: 4).
    succeeded(platform.cli(&["flow", "run", "release", &run]));
    let (code, _) = failed(platform.cli(&["flow", "run", "show", &run]));
    assert_eq!(code, 4);
    succeeded(platform.cli(&["flow", "delete", "greeting"]));
    let (code, stderr) = failed(platform.cli(&["flow", "show", &flow]));
    assert_eq!(code, 4, "{stderr}");
    let (code, stderr) = failed(platform.cli(&["flow", "show", "greeting"]));
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("no flow named `greeting`"), "{stderr}");
}

#[test]
fn an_approval_step_waits_for_run_approve() {
    let platform = DevPlatform::start(LATTICE.as_ref(), DevOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("approval.json");
    std::fs::write(
        &path,
        serde_json::json!({
            "definition": {"StartAt": "Ask", "States": {"Ask": {
                "Type": "Action", "ActionUrl": "/v1/actions/approval",
                "Parameters": {"message": "publish?", "options": ["yes", "no"]},
                "ResultPath": "$.approval", "End": true
            }}},
            "title": "publish",
        })
        .to_string(),
    )
    .unwrap();
    succeeded(platform.cli(&["flow", "create", path.to_str().unwrap()]));

    // --wait says what it waits on, and gives up with 7.
    let (code, stderr) =
        failed(platform.cli(&["flow", "start", "publish", "--wait", "--timeout", "1"]));
    assert_eq!(code, 7, "{stderr}");
    assert!(stderr.contains("waiting for approval"), "{stderr}");

    let run = succeeded(platform.cli(&["flow", "start", "publish", "--label", "second"]));
    let run = run.trim().to_owned();
    assert_eq!(run.len(), 36, "{run}");
    let status = || {
        let out = platform.cli(&[
            "flow",
            "run",
            "show",
            &run,
            "--format",
            "json",
            "--jmespath",
            "status",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    eventually("the run waits for its approval", || {
        status() == "\"INACTIVE\""
    });
    let shown = succeeded(platform.cli(&["flow", "run", "show", &run]));
    assert!(
        shown.contains(&format!("lattice flow run approve {run}")),
        "{shown}"
    );

    succeeded(platform.cli(&["flow", "run", "approve", &run, "--option", "yes"]));
    eventually("the approved run succeeds", || status() == "\"SUCCEEDED\"");
    let finished = json(&succeeded(
        platform.cli(&["flow", "run", "show", &run, "--format", "json"]),
    ));
    assert_eq!(
        finished["details"]["output"]["approval"]["details"]["option"], "yes",
        "{finished}"
    );

    // The first run still waits: cancel it.
    let waiting = json(&succeeded(platform.cli(&[
        "flow", "run", "list", "--status", "inactive", "--format", "json",
    ])));
    let first = waiting["runs"][0]["run_id"].as_str().unwrap().to_owned();
    let cancelled = json(&succeeded(
        platform.cli(&["flow", "run", "cancel", &first, "--format", "json"]),
    ));
    assert!(
        cancelled["status"] == "FAILED" || cancelled["status"] == "ACTIVE",
        "{cancelled}"
    );
}
