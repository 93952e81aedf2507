//! Timers through the real binary on `lattice dev` (which allows intervals
//! down to 1 s): a nightly-mirror style transfer timer that copies what
//! appeared in the source since the last tick, bad arguments refused with
//! the problem named, and the service killed (SIGKILL) across two due
//! times and started again: exactly one catch-up run, no tick twice.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lattice_tests::platform::{eventually, failed, succeeded, DevOptions, DevPlatform};
use serde_json::Value;

const LATTICE: &str = env!("CARGO_BIN_EXE_lattice");

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn timer(platform: &DevPlatform, name: &str) -> Value {
    json(&succeeded(
        platform.cli(&["timer", "show", name, "--format", "json"]),
    ))
}

/// The timer's ticks, oldest first.
fn ticks(platform: &DevPlatform, name: &str) -> Vec<Value> {
    let runs =
        json(&succeeded(platform.cli(&[
            "timer", "runs", name, "--limit", "1000", "--format", "json",
        ])));
    let mut list = runs["runs"].as_array().expect("runs").clone();
    list.reverse();
    list
}

/// Waits until the timer's ticks satisfy `condition`; fails showing them.
#[track_caller]
fn wait_ticks(
    platform: &DevPlatform,
    name: &str,
    what: &str,
    condition: impl Fn(&[Value]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = ticks(platform, name);
        if condition(&list) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not within 120 s: {what}; ticks: {list:#?}; timer: {:#}",
            timer(platform, name)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

#[test]
fn transfer_timer_mirrors_a_directory() {
    let platform = DevPlatform::start(
        LATTICE.as_ref(),
        DevOptions {
            local_workers: Some(0),
            ..Default::default()
        },
    );
    // The `local` collection exists once the dev agent announced it.
    eventually("the local collection is announced", || {
        succeeded(platform.cli(&["collection", "list"])).contains("local")
    });
    let root = platform.local_collection_root();
    std::fs::create_dir_all(root.join("instrument")).unwrap();
    std::fs::write(root.join("instrument/a.dat"), "first\n").unwrap();

    let created = json(&succeeded(platform.cli(&[
        "timer",
        "create",
        "transfer",
        "local:/instrument/",
        "local:/mirror/",
        "--recursive",
        "--sync-level",
        "mtime",
        "--interval",
        "3s",
        "--stop-after-runs",
        "2",
        "--name",
        "mirror",
        "--format",
        "json",
    ])));
    assert_eq!(created["timer_type"], "transfer");
    assert_eq!(created["schedule"]["interval_seconds"], 3);
    assert_eq!(
        created["body"]["options"]["sync_level"], "mtime",
        "{created}"
    );

    // The first tick copies what is there.
    wait_ticks(
        &platform,
        "mirror",
        "the first tick's transfer succeeded",
        |list| list.first().is_some_and(|t| t["status"] == "succeeded"),
    );
    assert_eq!(
        std::fs::read_to_string(root.join("mirror/a.dat")).unwrap(),
        "first\n"
    );
    // What lands before the next tick is mirrored by it.
    std::fs::write(root.join("instrument/b.dat"), "second\n").unwrap();
    eventually("the timer ended after two runs", || {
        timer(&platform, "mirror")["status"] == "ended"
    });
    wait_ticks(
        &platform,
        "mirror",
        "the second tick's transfer succeeded",
        |list| list.get(1).is_some_and(|t| t["status"] == "succeeded"),
    );
    assert_eq!(
        std::fs::read_to_string(root.join("mirror/b.dat")).unwrap(),
        "second\n"
    );
    let list = ticks(&platform, "mirror");
    assert_eq!(list.len(), 2, "{list:?}");
    for tick in &list {
        let resource = tick["resource_id"].as_str().unwrap();
        assert!(resource.starts_with("action:"), "{tick}");
        // The details name the transfer it started.
        let task = tick["details"]["task_id"].as_str().expect("a transfer id");
        let shown = json(&succeeded(
            platform.cli(&["transfer", "show", task, "--format", "json"]),
        ));
        assert_eq!(shown["status"], "succeeded", "{shown}");
        assert_eq!(shown["label"], "mirror");
    }
    let shown = succeeded(platform.cli(&["timer", "show", "mirror"]));
    assert!(shown.contains("every 3s"), "{shown}");
    assert!(shown.contains("ended"), "{shown}");
    let table = succeeded(platform.cli(&["timer", "runs", "mirror"]));
    assert!(table.contains("succeeded"), "{table}");
    let listed = succeeded(platform.cli(&["timer", "list", "--status", "ended"]));
    assert!(listed.contains("mirror"), "{listed}");

    // Arguments that cannot make a timer are refused before anything is sent.
    let (code, stderr) = failed(platform.cli(&[
        "timer",
        "create",
        "transfer",
        "local:/a/",
        "local:/b/",
        "--interval",
        "5x",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a duration"), "{stderr}");
    let (code, stderr) = failed(platform.cli(&[
        "timer",
        "create",
        "transfer",
        "local:/a/",
        "local:/b/",
        "--interval",
        "1h",
        "--deadline",
        "2h",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("a timer starts a new transfer"), "{stderr}");
    let (code, stderr) = failed(platform.cli(&[
        "timer",
        "create",
        "transfer",
        "local:/a/",
        "local:/b/",
        "--stop-after-runs",
        "3",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--interval"), "{stderr}");
    // The service's own rules come back in words.
    let (_, stderr) = failed(platform.cli(&[
        "timer",
        "create",
        "transfer",
        "local:/a/",
        "local:/b/",
        "--interval",
        "1h",
        "--start",
        "2001-01-01T00:00:00Z",
    ]));
    assert!(stderr.contains("in the past"), "{stderr}");
    let (_, stderr) = failed(platform.cli(&["timer", "show", "no-such-timer"]));
    assert!(stderr.contains("no timer of yours is named"), "{stderr}");
}

const PASS_FLOW: &str = r#"
StartAt: Done
States:
  Done:
    Type: Pass
    End: true
"#;

#[test]
fn a_restart_across_due_times_runs_one_catch_up() {
    let mut platform = DevPlatform::start(LATTICE.as_ref(), DevOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pass.yaml");
    std::fs::write(&file, PASS_FLOW).unwrap();
    succeeded(platform.cli(&["flow", "create", file.to_str().unwrap(), "--title", "tick"]));
    succeeded(platform.cli(&[
        "timer",
        "create",
        "flow",
        "tick",
        "--interval",
        "2s",
        "--name",
        "ticker",
    ]));
    eventually("the first tick ran", || {
        timer(&platform, "ticker")["number_of_runs"].as_u64() >= Some(1)
    });

    platform.kill();
    let killed_at = Utc::now();
    // Three due times pass while the service is down.
    std::thread::sleep(Duration::from_secs(6));
    let restarted_at = Utc::now();
    platform.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = ticks(&platform, "ticker");
        if list.iter().any(|t| time(&t["due_at"]) > restarted_at) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no tick after the restart: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let list = ticks(&platform, "ticker");
    let during: Vec<&Value> = list
        .iter()
        .filter(|t| {
            let due = time(&t["due_at"]);
            due > killed_at && due < restarted_at
        })
        .collect();
    assert_eq!(
        during.len(),
        1,
        "one catch-up for the ticks missed while down: {list:?}"
    );
    assert!(time(&during[0]["ran_at"]) >= restarted_at, "{list:?}");
    let mut due: Vec<DateTime<Utc>> = list.iter().map(|t| time(&t["due_at"])).collect();
    let count = due.len();
    due.dedup();
    assert_eq!(due.len(), count, "no tick twice: {list:?}");
    assert!(due.windows(2).all(|w| w[0] < w[1]), "{list:?}");
    // Every tick that ran started exactly one run.
    let ran = list.iter().filter(|t| t["status"] != "skipped").count();
    let runs = json(&succeeded(platform.cli(&[
        "flow", "run", "list", "--flow", "tick", "--all", "--format", "json",
    ])));
    let started = runs["runs"].as_array().expect("runs").len();
    // A tick may have been claimed after the list was read.
    assert!(
        started == ran || started == ran + 1,
        "{started} runs for {ran} ticks: {list:?}"
    );
    succeeded(platform.cli(&["timer", "delete", "ticker"]));
}
