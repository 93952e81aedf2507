//! Each state type, actions (request ids, results, retry, catch, timeouts,
//! INACTIVE, cancel) and waits.

use super::*;

#[test]
fn pass_expression_choice_succeed() {
    let d = def(json!({
        "StartAt": "Set",
        "States": {
            "Set": {"Type": "Pass", "Parameters": {"n.$": "$.n", "k": 1}, "ResultPath": "$.set", "Next": "Eval"},
            "Eval": {"Type": "ExpressionEval", "Parameters": {"double.=": "set.n * 2"}, "ResultPath": "$.calc", "Next": "Pick"},
            "Pick": {"Type": "Choice", "Choices": [
                {"Variable": "$.calc.double", "NumericGreaterThan": 10, "Next": "Big"}
            ], "Default": "Small"},
            "Big": {"Type": "Pass", "Result": "big", "ResultPath": "$.size", "End": true},
            "Small": {"Type": "Pass", "Result": "small", "ResultPath": "$.size", "Next": "Done"},
            "Done": {"Type": "Succeed"}
        }
    }));
    let (run, _) = play(d, json!({"n": 3}), Limits::default(), |_| Reply::Silent);
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(
        run.output,
        Some(json!({"n": 3, "set": {"n": 3, "k": 1}, "calc": {"double": 6}, "size": "small"}))
    );
    assert_eq!(run.transitions, 5);
    let log = codes(&run);
    assert_eq!(log.first().unwrap(), "flow_started:");
    assert_eq!(log.last().unwrap(), "flow_succeeded:");
    assert!(log.contains(&"state_entered:Eval".to_string()));
    assert!(log.contains(&"state_exited:Small".to_string()));
}

#[test]
fn actions_store_their_status_at_result_path_with_stable_request_ids() {
    let d = def(json!({
        "StartAt": "Hello",
        "States": {
            "Hello": {"Type": "Action", "ActionUrl": "/v1/actions/hello",
                "Parameters": {"echo.$": "$.msg", "password": "pw", "__Private_Parameters": ["password"]},
                "ResultPath": "$.hello", "End": true}
        }
    }));
    let (run_a, cmds_a) = Run::start(
        "r",
        d.clone(),
        json!({"msg": "hi"}),
        Limits::default(),
        t0(),
    );
    let (_, cmds_b) = Run::start(
        "r",
        d.clone(),
        json!({"msg": "hi"}),
        Limits::default(),
        t0(),
    );
    let (_, cmds_c) = Run::start("other", d, json!({"msg": "hi"}), Limits::default(), t0());
    let id = |cmds: &[Command]| match &cmds[0] {
        Command::StartAction {
            request_id, body, ..
        } => {
            assert_eq!(body, &json!({"echo": "hi", "password": "pw"}));
            request_id.clone()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(id(&cmds_a), id(&cmds_b));
    assert_ne!(id(&cmds_a), id(&cmds_c));
    assert!(
        matches!(&cmds_a[1], Command::SetTimer { at, .. } if *at == t0() + Duration::seconds(300))
    );
    // the log hides private parameters
    let logged = run_a
        .log
        .iter()
        .find_map(|e| match &e.event {
            LogEvent::ActionStarted { body, .. } => Some(body.clone()),
            _ => None,
        })
        .unwrap();
    assert!(logged.get("password").is_none(), "{logged}");

    // a stored run restored after a crash continues; a duplicate event is ignored
    let stored = serde_json::to_string(&run_a).unwrap();
    let mut restored: Run = serde_json::from_str(&stored).unwrap();
    assert_eq!(restored, run_a);
    let request_id = id(&cmds_a);
    let done = Event::ActionSucceeded {
        request_id: request_id.clone(),
        status: succeeded(json!({"echo": "hi"})),
    };
    let cmds = restored.handle(done.clone(), t0());
    assert!(matches!(
        &cmds[..],
        [Command::Finish {
            status: RunStatus::Succeeded,
            ..
        }]
    ));
    assert_eq!(
        restored.output.as_ref().unwrap()["hello"]["details"]["echo"],
        "hi"
    );
    assert!(restored.handle(done, t0()).is_empty());
}

#[test]
fn retry_backs_off_then_succeeds() {
    let d = def(json!({
        "StartAt": "Flaky",
        "States": {
            "Flaky": {"Type": "Action", "ActionUrl": "/v1/actions/flaky", "ResultPath": "$.r",
                "Retry": [{"ErrorEquals": ["ActionFailedException"], "IntervalSeconds": 2, "BackoffRate": 3, "MaxAttempts": 3}],
                "End": true}
        }
    }));
    let mut calls = 0;
    let (run, sim) = play(d, json!({}), Limits::default(), move |_| {
        calls += 1;
        if calls < 3 {
            Reply::Fail(failed(json!({"why": "busy"})))
        } else {
            Reply::Succeed(succeeded(json!({"ok": true})))
        }
    });
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(sim.started.len(), 3);
    let ids: BTreeSet<_> = sim.started.iter().map(|s| s.request_id.clone()).collect();
    assert_eq!(ids.len(), 3, "each attempt has its own request id");
    let offsets: Vec<i64> = sim
        .started
        .iter()
        .map(|s| (s.at - t0()).num_seconds())
        .collect();
    assert_eq!(offsets, vec![0, 2, 8]);
    assert_eq!(
        codes(&run)
            .iter()
            .filter(|c| c.starts_with("retrying"))
            .count(),
        2
    );
}

use std::collections::BTreeSet;

#[test]
fn retries_exhausted_then_caught() {
    let d = def(json!({
        "StartAt": "Try",
        "States": {
            "Try": {"Type": "Action", "ActionUrl": "/v1/actions/x",
                "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 1}],
                "Catch": [{"ErrorEquals": ["ActionFailedException"], "ResultPath": "$.error", "Next": "Handle"}],
                "End": true},
            "Handle": {"Type": "Pass", "End": true}
        }
    }));
    let (run, sim) = play(d, json!({"keep": 1}), Limits::default(), |_| {
        Reply::Fail(json!({"status": "FAILED", "display_status": "disk full"}))
    });
    assert_eq!(sim.started.len(), 2);
    assert_eq!(run.status, RunStatus::Succeeded);
    let out = run.output.clone().unwrap();
    assert_eq!(out["keep"], 1);
    assert_eq!(out["error"]["Error"], "ActionFailedException");
    assert_eq!(out["error"]["Cause"], "disk full");
    assert!(codes(&run).contains(&"caught:Try".to_string()));
}

#[test]
fn exception_on_action_failure_false_continues() {
    let d = def(json!({
        "StartAt": "A",
        "States": {
            "A": {"Type": "Action", "ActionUrl": "/x", "ExceptionOnActionFailure": false, "ResultPath": "$.a", "End": true}
        }
    }));
    let (run, _) = play(d, json!({}), Limits::default(), |_| {
        Reply::Fail(failed(json!("no")))
    });
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.output.unwrap()["a"]["status"], "FAILED");
}

#[test]
fn unable_to_run_and_timeout_fail_the_run() {
    let d = def(json!({
        "StartAt": "A",
        "States": {"A": {"Type": "Action", "ActionUrl": "/x", "WaitTime": 10, "End": true}}
    }));
    let (run, sim) = play(d.clone(), json!({}), Limits::default(), |_| Reply::Silent);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_ref().unwrap().error, "ActionTimeout");
    assert_eq!(sim.cancelled.len(), 1);
    assert_eq!(sim.now, t0() + Duration::seconds(10));

    let (run, _) = play(d, json!({}), Limits::default(), |_| {
        Reply::UnableToRun("bad body".into())
    });
    assert_eq!(
        run.error,
        Some(RunError {
            error: "ActionUnableToRun".into(),
            cause: "bad body".into()
        })
    );
}

#[test]
fn inactive_then_resumed() {
    let d = def(json!({
        "StartAt": "Approve",
        "States": {"Approve": {"Type": "Action", "ActionUrl": "/v1/actions/approval", "WaitTime": 86400, "End": true}}
    }));
    let (mut run, cmds) = Run::start("r", d, json!({}), Limits::default(), t0());
    let mut sim = Simulator::new(t0(), |_: &Started| {
        Reply::Inactive(json!({"reason": "approval"}))
    });
    sim.execute(cmds);
    // handle just the INACTIVE event (not the timeout timer)
    sim.play(&mut run, 1);
    assert_eq!(run.status, RunStatus::Inactive);
    let request_id = sim.started[0].request_id.clone();
    run.handle(
        Event::ActionActive {
            request_id: request_id.clone(),
        },
        t0(),
    );
    assert_eq!(run.status, RunStatus::Active);
    let cmds = run.handle(
        Event::ActionSucceeded {
            request_id,
            status: succeeded(json!({"approved": true})),
        },
        t0(),
    );
    assert!(matches!(
        &cmds[..],
        [Command::Finish {
            status: RunStatus::Succeeded,
            ..
        }]
    ));
}

#[test]
fn cancel_cancels_running_actions() {
    let d = def(json!({
        "StartAt": "A",
        "States": {"A": {"Type": "Action", "ActionUrl": "/x", "End": true}}
    }));
    let (mut run, cmds) = Run::start("r", d, json!({}), Limits::default(), t0());
    let Command::StartAction { request_id, .. } = &cmds[0] else {
        panic!()
    };
    let out = run.handle(Event::CancelRequested, t0());
    assert!(out.contains(&Command::CancelAction {
        request_id: request_id.clone(),
        action_url: "/x".into()
    }));
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_ref().unwrap().error, "RunCancelled");
    assert!(run.handle(Event::CancelRequested, t0()).is_empty());
}

#[test]
fn waits_on_seconds_path_and_timestamp() {
    let d = def(json!({
        "StartAt": "W1",
        "States": {
            "W1": {"Type": "Wait", "SecondsPath": "$.delay", "Next": "W2"},
            "W2": {"Type": "Wait", "Timestamp": "2026-01-01T01:00:00Z", "End": true}
        }
    }));
    let (run, sim) = play(d, json!({"delay": 30}), Limits::default(), |_| {
        Reply::Silent
    });
    assert_eq!(run.status, RunStatus::Succeeded);
    let ats: Vec<_> = sim
        .timers_set
        .iter()
        .filter(|(id, _)| !id.ends_with(".lifetime"))
        .map(|(_, at)| *at)
        .collect();
    assert_eq!(
        ats,
        vec![t0() + Duration::seconds(30), t0() + Duration::hours(1)]
    );
}

#[test]
fn parameters_into_missing_keys_fail_with_the_path() {
    let d = def(json!({
        "StartAt": "A",
        "States": {"A": {"Type": "Action", "ActionUrl": "/x", "Parameters": {"id.$": "$.source.id"}, "End": true}}
    }));
    let (run, sim) = play(d, json!({"source": {}}), Limits::default(), |_| {
        Reply::Silent
    });
    assert!(sim.started.is_empty());
    let e = run.error.unwrap();
    assert_eq!(e.error, "States.ParameterPathFailure");
    assert!(e.cause.contains("$.source.id"), "{}", e.cause);
}

#[test]
fn a_caught_action_failure_carries_the_action_status() {
    let d = def(json!({
        "StartAt": "A",
        "States": {
            "A": {"Type": "Action", "ActionUrl": "/x", "Parameters": {},
                  "Catch": [{"ErrorEquals": ["ActionFailedException"], "ResultPath": "$.e", "Next": "B"}], "End": true},
            "B": {"Type": "Pass", "End": true}
        }
    }));
    let (run, _) = play(d, json!({}), Limits::default(), |_| {
        Reply::Fail(failed(json!({"code": "NotFound"})))
    });
    let e = &run.output.as_ref().unwrap()["e"];
    assert_eq!(e["Error"], "ActionFailedException");
    assert_eq!(e["details"]["details"]["code"], "NotFound");
}

#[test]
fn fail_state_and_no_choice_matched() {
    let d = def(json!({
        "StartAt": "C",
        "States": {
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "StringEquals": "a", "Next": "F"}]},
            "F": {"Type": "Fail", "Error": "Bad", "Cause": "x was a"}
        }
    }));
    let (run, _) = play(d.clone(), json!({"x": "a"}), Limits::default(), |_| {
        Reply::Silent
    });
    assert_eq!(
        run.error,
        Some(RunError {
            error: "Bad".into(),
            cause: "x was a".into()
        })
    );
    let (run, _) = play(d, json!({"x": "b"}), Limits::default(), |_| Reply::Silent);
    assert_eq!(run.error.unwrap().error, "States.NoChoiceMatched");
}
