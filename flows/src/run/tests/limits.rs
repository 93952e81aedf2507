//! Every per-run limit ends the run, uncatchable, instead of looping or
//! growing without bound.

use super::*;

#[test]
fn endless_wait_and_choice_loops_hit_the_transition_limit() {
    let limits = Limits {
        max_transitions: 50,
        ..Limits::default()
    };
    let wait_loop = def(json!({
        "StartAt": "W",
        "States": {"W": {"Type": "Wait", "Seconds": 0, "Next": "W"}}
    }));
    let (run, _) = play(wait_loop, json!({}), limits, |_| Reply::Silent);
    assert_eq!(run.error.unwrap().error, "Lattice.TransitionLimitExceeded");

    let choice_loop = def(json!({
        "StartAt": "C",
        "States": {
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.go", "BooleanEquals": true, "Next": "P"}], "Default": "End"},
            "P": {"Type": "Pass", "Next": "C"},
            "End": {"Type": "Succeed"}
        }
    }));
    let (run, _) = play(choice_loop, json!({"go": true}), limits, |_| Reply::Silent);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.transitions, 51);
    assert_eq!(run.error.unwrap().error, "Lattice.TransitionLimitExceeded");
}

#[test]
fn a_growing_state_hits_the_size_limit() {
    let limits = Limits {
        max_state_bytes: 10_000,
        ..Limits::default()
    };
    let d = def(json!({
        "StartAt": "Grow",
        "States": {
            "Grow": {"Type": "ExpressionEval", "Parameters": {"s.=": "s + s"}, "Next": "Grow"}
        }
    }));
    let (run, _) = play(d, json!({"s": "x"}), limits, |_| Reply::Silent);
    let e = run.error.unwrap();
    assert_eq!(e.error, "Lattice.StateSizeLimitExceeded");
    assert!(e.cause.contains("Grow"), "{}", e.cause);
    // an input over the limit fails at once
    let d = def(json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}));
    let (run, _) = play(d, json!({"s": "x".repeat(20_000)}), limits, |_| {
        Reply::Silent
    });
    assert_eq!(run.error.unwrap().error, "Lattice.StateSizeLimitExceeded");
}

#[test]
fn a_state_nesting_ever_deeper_hits_the_depth_limit() {
    let d = def(json!({
        "StartAt": "Nest",
        "States": {"Nest": {"Type": "ExpressionEval", "Parameters": {"s.=": "[[[s]]]"}, "Next": "Nest"}}
    }));
    let (run, _) = play(d, json!({"s": 1}), Limits::default(), |_| Reply::Silent);
    assert_eq!(run.error.unwrap().error, "Lattice.StateDepthLimitExceeded");
    // far below the transition limit: the depth limit stopped it
    assert!(run.transitions < 30, "{}", run.transitions);
}

#[test]
fn a_run_that_outlives_its_lifetime_fails() {
    let limits = Limits {
        max_lifetime_seconds: 3600,
        ..Limits::default()
    };
    let d = def(json!({
        "StartAt": "Approve",
        "States": {"Approve": {"Type": "Action", "ActionUrl": "/v1/actions/approval", "WaitTime": 86400, "End": true}}
    }));
    let (run, sim) = play(d, json!({}), limits, |_| Reply::Inactive(json!({})));
    assert_eq!(run.error.unwrap().error, "Lattice.RunLifetimeExceeded");
    assert_eq!(sim.now, t0() + Duration::hours(1));
    assert_eq!(sim.cancelled.len(), 1, "the pending action is cancelled");
}

#[test]
fn map_fan_out_limit() {
    let limits = Limits {
        max_map_items: 3,
        ..Limits::default()
    };
    let d = def(json!({
        "StartAt": "M",
        "States": {"M": {"Type": "Map", "Iterator": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}, "End": true}}
    }));
    let (run, _) = play(d.clone(), json!([1, 2, 3]), limits, |_| Reply::Silent);
    assert_eq!(run.output, Some(json!([1, 2, 3])));
    let (run, _) = play(d, json!([1, 2, 3, 4]), limits, |_| Reply::Silent);
    assert_eq!(run.error.unwrap().error, "Lattice.MapFanOutLimitExceeded");
}

#[test]
fn a_hostile_expression_fails_the_state_not_the_process() {
    let d = def(json!({
        "StartAt": "E",
        "States": {"E": {"Type": "ExpressionEval", "Parameters": {"x.=": "'a' * 100000000000"}, "End": true}}
    }));
    let (run, _) = play(d, json!({}), Limits::default(), |_| Reply::Silent);
    let e = run.error.unwrap();
    assert_eq!(e.error, "States.ExpressionEvalFailure");
    assert!(e.cause.contains("budget"), "{}", e.cause);
}
