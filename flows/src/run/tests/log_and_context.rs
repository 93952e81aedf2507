//! The run log (draining, `seq`), `$._context`, and private values kept out
//! of the log.

use super::*;

#[test]
fn the_driver_drains_the_log_and_seq_keeps_counting() {
    let d = def(json!({
        "StartAt": "W",
        "States": {"W": {"Type": "Wait", "Seconds": 5, "Next": "P"}, "P": {"Type": "Pass", "End": true}}
    }));
    let (mut run, cmds) = Run::start("r", d, json!({}), Limits::default(), t0());
    let first = run.drain_log();
    assert!(run.log.is_empty());
    let Command::SetTimer { timer_id, .. } = &cmds[0] else {
        panic!("{cmds:?}")
    };
    let stored: Run = serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
    let mut run = stored;
    run.handle(
        Event::TimerFired {
            timer_id: timer_id.clone(),
        },
        t0() + Duration::seconds(5),
    );
    let second = run.drain_log();
    let seqs: Vec<u64> = first.iter().chain(&second).map(|e| e.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(run.status, RunStatus::Succeeded);
}

#[test]
fn context_is_readable_and_never_stored() {
    let d = def(json!({
        "StartAt": "Who",
        "States": {
            "Who": {"Type": "ExpressionEval", "Parameters": {
                "run.$": "$._context.run_id",
                "greeting.=": "'hi ' + _context.username"
            }, "ResultPath": "$.who", "Next": "Copy"},
            "Copy": {"Type": "Pass", "Next": "Tell"},
            "Tell": {"Type": "Action", "ActionUrl": "/x", "ResultPath": "$.told", "End": true}
        }
    }));
    let context = json!({"run_id": "r-9", "username": "ada@example.org"});
    let (mut run, cmds) =
        Run::start_with_context("r", d, json!({"n": 1}), context, Limits::default(), t0());
    let Command::StartAction {
        body, request_id, ..
    } = &cmds[0]
    else {
        panic!("{cmds:?}")
    };
    // the action body (the whole state, no Parameters) does not carry _context
    assert_eq!(
        body,
        &json!({"n": 1, "who": {"run": "r-9", "greeting": "hi ada@example.org"}})
    );
    run.handle(
        Event::ActionSucceeded {
            request_id: request_id.clone(),
            status: json!({}),
        },
        t0(),
    );
    let output = run.output.unwrap();
    assert!(output.get("_context").is_none(), "{output}");
}

#[test]
fn private_values_stay_out_of_the_log() {
    let d = def(json!({
        "StartAt": "Call",
        "States": {
            "Call": {"Type": "Action", "ActionUrl": "/x",
                "Parameters": {"user": "u", "auth": {"token.$": "$._private.token", "__Private_Parameters": ["token"]}},
                "ResultPath": "$.r", "End": true}
        }
    }));
    let input = json!({"_private": {"token": "s3cret"}, "n": 1});
    let (run, sim) = play(d, input, Limits::default(), |_| {
        Reply::Succeed(succeeded(json!({})))
    });
    assert_eq!(
        sim.started[0].body["auth"]["token"], "s3cret",
        "the action gets it"
    );
    let log = serde_json::to_string(&run.log).unwrap();
    assert!(!log.contains("s3cret"), "{log}");
    assert!(
        run.output.unwrap()["_private"]["token"] == "s3cret",
        "the state keeps it"
    );
}
