//! Parallel and Map: output order, concurrency, restarts, a failing child.

use super::*;

#[test]
fn parallel_outputs_are_in_branch_order() {
    let branch = |name: &str| {
        json!({
            "StartAt": name,
            "States": {name: {"Type": "Action", "ActionUrl": format!("/v1/actions/{name}"), "End": true}}
        })
    };
    let d = def(json!({
        "StartAt": "Both",
        "States": {
            "Both": {"Type": "Parallel", "Branches": [branch("slow"), branch("fast")], "ResultPath": "$.both", "End": true}
        }
    }));
    let (mut run, cmds) = Run::start("r", d, json!({"x": 1}), Limits::default(), t0());
    let starts: Vec<(String, String)> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::StartAction {
                request_id, state, ..
            } => Some((request_id.clone(), state.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0].1, "Both/branch 0/slow");
    // the fast branch finishes first
    run.handle(
        Event::ActionSucceeded {
            request_id: starts[1].0.clone(),
            status: json!("F"),
        },
        t0(),
    );
    assert_eq!(run.status, RunStatus::Active);
    // still in force: the slow branch's start, its timeout, the lifetime
    let again = run.outstanding();
    assert_eq!(again.len(), 3, "{again:?}");
    assert!(
        matches!(&again[0], Command::StartAction { request_id, .. } if *request_id == starts[0].0)
    );
    run.handle(
        Event::ActionSucceeded {
            request_id: starts[0].0.clone(),
            status: json!("S"),
        },
        t0(),
    );
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.output.unwrap()["both"], json!(["S", "F"]));
}

#[test]
fn map_respects_max_concurrency_and_keeps_item_order() {
    let d = def(json!({
        "StartAt": "Each",
        "States": {
            "Each": {"Type": "Map", "ItemsPath": "$.files", "MaxConcurrency": 2, "ResultPath": "$.results",
                "Iterator": {"StartAt": "Work", "States": {
                    "Work": {"Type": "Action", "ActionUrl": "/v1/actions/compute",
                             "Parameters": {"file.$": "$.name"}, "End": true}
                }},
                "End": true}
        }
    }));
    let files: Vec<Value> = (0..5).map(|i| json!({"name": format!("f{i}")})).collect();
    let (mut run, cmds) = Run::start("r", d, json!({"files": files}), Limits::default(), t0());
    let mut running: Vec<(String, Value)> = Vec::new();
    let collect = |cmds: &[Command], running: &mut Vec<(String, Value)>| {
        for c in cmds {
            if let Command::StartAction {
                request_id, body, ..
            } = c
            {
                running.push((request_id.clone(), body.clone()));
            }
        }
    };
    collect(&cmds, &mut running);
    assert_eq!(running.len(), 2);
    let mut max_running = running.len();
    // finish the newest first, so completion order differs from item order
    while let Some((id, body)) = running.pop() {
        let status = json!({"done": body["file"]});
        let cmds = run.handle(
            Event::ActionSucceeded {
                request_id: id,
                status,
            },
            t0(),
        );
        collect(&cmds, &mut running);
        max_running = max_running.max(running.len());
    }
    assert!(max_running <= 2);
    assert_eq!(run.status, RunStatus::Succeeded);
    let names: Vec<Value> = run.output.unwrap()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["done"].clone())
        .collect();
    assert_eq!(names, vec!["f0", "f1", "f2", "f3", "f4"]);
}

#[test]
fn a_map_survives_a_restart_after_every_event_without_repeating_work() {
    let d = def(json!({
        "StartAt": "Each",
        "States": {
            "Each": {"Type": "Map", "ItemsPath": "$.files", "MaxConcurrency": 2, "ResultPath": "$.out",
                "Iterator": {"StartAt": "Work", "States": {
                    "Work": {"Type": "Action", "ActionUrl": "/v1/actions/compute", "Parameters": {"f.$": "$"}, "End": true}
                }},
                "Next": "Done"},
            "Done": {"Type": "Succeed"}
        }
    }));
    let files = json!(["a", "b", "c", "d", "e"]);
    let (mut run, cmds) = Run::start("r", d, json!({"files": files}), Limits::default(), t0());
    let mut outstanding: BTreeMap<String, Value> = BTreeMap::new();
    let mut provider_started: BTreeSet<String> = BTreeSet::new();
    let mut provider_calls = 0;
    let collect = |cmds: &[Command], outstanding: &mut BTreeMap<String, Value>| {
        for c in cmds {
            if let Command::StartAction {
                request_id, body, ..
            } = c
            {
                outstanding.insert(request_id.clone(), body.clone());
            }
        }
    };
    collect(&cmds, &mut outstanding);
    while !run.status.is_final() {
        // the driver crashes: reload the stored run and repeat every
        // outstanding start; the provider dedupes by request id
        run = serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
        let again = run.outstanding();
        let starts: BTreeSet<String> = again
            .iter()
            .filter_map(|c| match c {
                Command::StartAction { request_id, .. } => Some(request_id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(starts, outstanding.keys().cloned().collect::<BTreeSet<_>>());
        assert!(again.iter().any(
            |c| matches!(c, Command::SetTimer { timer_id, .. } if timer_id.ends_with(".lifetime"))
        ));
        for id in starts {
            provider_calls += 1;
            provider_started.insert(id);
        }
        let (id, body) = outstanding.pop_first().expect("work outstanding");
        let done = Event::ActionSucceeded {
            request_id: id,
            status: json!({"done": body["f"]}),
        };
        let cmds = run.handle(done.clone(), t0());
        collect(&cmds, &mut outstanding);
        // the same completion delivered twice changes nothing
        assert!(run.handle(done, t0()).is_empty());
    }
    assert!(provider_calls > 5, "starts were repeated");
    assert_eq!(
        provider_started.len(),
        5,
        "but each file was processed once"
    );
    assert_eq!(run.status, RunStatus::Succeeded);
    let done: Vec<Value> = run.output.unwrap()["out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["done"].clone())
        .collect();
    assert_eq!(done, vec!["a", "b", "c", "d", "e"]);
}

#[test]
fn a_failing_map_item_cancels_the_rest_and_is_caught() {
    let d = def(json!({
        "StartAt": "Each",
        "States": {
            "Each": {"Type": "Map", "ItemsPath": "$.xs",
                "Iterator": {"StartAt": "Work", "States": {
                    "Work": {"Type": "Action", "ActionUrl": "/w", "End": true}
                }},
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.err", "Next": "Recover"}],
                "End": true},
            "Recover": {"Type": "Pass", "End": true}
        }
    }));
    let (run, sim) = play(d, json!({"xs": [1, 2, 3]}), Limits::default(), |s| {
        if s.state == "Each/item 1/Work" {
            Reply::Fail(failed(json!("bad item")))
        } else {
            Reply::Silent
        }
    });
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(
        run.output.as_ref().unwrap()["err"]["Error"],
        "ActionFailedException"
    );
    assert_eq!(
        sim.cancelled.len(),
        2,
        "the two silent items were cancelled"
    );
}
