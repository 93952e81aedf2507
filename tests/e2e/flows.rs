//! Flows end to end: the service in-process with the real OpenID Connect
//! provider and three people (alice owns flows, bob starts them, carol is
//! a stranger unless named), on both back ends (`backend_suite!`), with an
//! external action provider written here (`Provider`: slow success,
//! failure, failure then success for `Retry`, INACTIVE until told,
//! a provider that never finishes, and a count of starts per request id).
//!
//! The pipeline through transfers and compute on `lattice dev`, with the
//! service killed mid-`Map`, is `cli/tests/flows_pipeline.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as AxPath, State as AxState};
use axum::routing::{get, post};
use axum::Json as AxJson;
use lattice_tests::Answer;
use reqwest::Method;
use serde_json::{json, Value};

use crate::scene::{Person, Trio};
use crate::Backend;

struct Scene {
    trio: Trio,
    provider: Provider,
}

impl std::ops::Deref for Scene {
    type Target = Trio;
    fn deref(&self) -> &Trio {
        &self.trio
    }
}

impl Scene {
    async fn start(backend: Backend, test: &str) -> Option<Self> {
        let trio = Trio::start(backend, test, |config| {
            config.flows.max_transitions = 500;
            config.flows.max_state_bytes = 64 * 1024;
            config.search.dir = config.data_dir.join("search");
        })
        .await?;
        let provider = Provider::start().await;
        Some(Self { trio, provider })
    }

    async fn cleanup(self) {
        self.trio.cleanup().await;
    }

    /// `who` creates a flow from `definition` plus extra fields; its id.
    async fn flow(&self, who: &Person, definition: Value, extra: Value) -> String {
        let mut body = json!({"definition": definition, "title": "test flow"});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let answer = self.post(Some(who), "/v1/flows", body).await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.str("id").to_owned()
    }

    /// `who` starts a run; the answer.
    async fn start_run(&self, who: Option<&Person>, flow: &str, body: Value) -> Answer {
        self.post(who, &format!("/v1/flows/{flow}/run"), body).await
    }

    /// Waits until the run's status is one of `statuses`; the run.
    async fn wait_run(&self, who: &Person, run: &str, statuses: &[&str]) -> Value {
        for _ in 0..1800 {
            let answer = self.get(Some(who), &format!("/v1/runs/{run}")).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            if statuses.contains(&answer.str("status")) {
                return answer.body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("run {run} did not reach {statuses:?}");
    }

    /// Starts a run as `who` and waits for its end.
    async fn run_to_end(&self, who: &Person, flow: &str, input: Value) -> Value {
        let answer = self
            .start_run(Some(who), flow, json!({"body": input}))
            .await;
        assert_eq!(answer.status, 201, "{answer:?}");
        self.wait_run(who, answer.str("run_id"), &["SUCCEEDED", "FAILED"])
            .await
    }

    async fn log_codes(&self, who: &Person, run: &str) -> Vec<String> {
        let answer = self
            .get(Some(who), &format!("/v1/runs/{run}/log?limit=1000"))
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["code"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

// ---------------------------------------------------- the external provider

#[derive(Default)]
struct ProviderState {
    /// request id -> (action id, behaviour, looks so far, ordinal among
    /// the actions of that behaviour)
    actions: HashMap<String, (String, String, u32, usize)>,
    /// action id -> request id
    ids: HashMap<String, String>,
    /// `/run` calls per request id.
    starts: HashMap<String, u32>,
    /// Actions told to go on (`inactive` ones).
    released: Vec<String>,
    cancelled: Vec<String>,
}

/// An action provider on a loopback port: what an action does is its
/// body's `behaviour` (`slow` succeeds after two looks, `fail` fails,
/// `fail_twice` fails its first two actions (a `Retry`'s attempts 1 and
/// 2 each have their own request id) and succeeds after, `inactive` waits until
/// [`Provider::release`], `hang` never finishes, `refuse` answers 400).
struct Provider {
    url: String,
    state: Arc<Mutex<ProviderState>>,
    _server: tokio::task::JoinHandle<()>,
}

type Shared = Arc<Mutex<ProviderState>>;

fn status_doc(action_id: &str, status: &str, details: Value) -> Value {
    json!({"action_id": action_id, "status": status, "details": details})
}

async fn ap_run(
    AxState(s): AxState<Shared>,
    AxJson(req): AxJson<Value>,
) -> (axum::http::StatusCode, AxJson<Value>) {
    let request_id = req["request_id"].as_str().unwrap_or_default().to_owned();
    let behaviour = req["body"]["behaviour"]
        .as_str()
        .unwrap_or("slow")
        .to_owned();
    if behaviour == "refuse" {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            AxJson(json!({"code": "BadRequest", "description": "refused on purpose"})),
        );
    }
    let mut s = s.lock().unwrap();
    *s.starts.entry(request_id.clone()).or_default() += 1;
    let action_id = match s.actions.get(&request_id) {
        Some((id, _, _, _)) => id.clone(),
        None => {
            let id = format!("ap-{}", s.actions.len());
            let ordinal = s.actions.values().filter(|a| a.1 == behaviour).count();
            s.actions.insert(
                request_id.clone(),
                (id.clone(), behaviour.clone(), 0, ordinal),
            );
            s.ids.insert(id.clone(), request_id.clone());
            id
        }
    };
    let status = match behaviour.as_str() {
        "inactive" => "INACTIVE",
        _ => "ACTIVE",
    };
    (
        axum::http::StatusCode::ACCEPTED,
        AxJson(status_doc(
            &action_id,
            status,
            json!({"behaviour": behaviour}),
        )),
    )
}

async fn ap_status(
    AxState(s): AxState<Shared>,
    AxPath(id): AxPath<String>,
) -> (axum::http::StatusCode, AxJson<Value>) {
    let mut s = s.lock().unwrap();
    let Some(request_id) = s.ids.get(&id).cloned() else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            AxJson(json!({"code": "NotFound"})),
        );
    };
    let released = s.released.contains(&request_id);
    let cancelled = s.cancelled.contains(&id);
    let entry = s.actions.get_mut(&request_id).expect("known");
    entry.2 += 1;
    let looks = entry.2;
    let attempt_failing = entry.3 < 2;
    let (status, details) = match entry.1.as_str() {
        _ if cancelled => ("FAILED", json!({"cancelled": true})),
        "slow" if looks >= 2 => ("SUCCEEDED", json!({"answer": 42, "looks": looks})),
        "slow" => ("ACTIVE", json!({})),
        "fail" => ("FAILED", json!({"reason": "it broke"})),
        "fail_twice" if attempt_failing => ("FAILED", json!({"reason": "not yet"})),
        "fail_twice" => ("SUCCEEDED", json!({"finally": true})),
        "inactive" if released => ("SUCCEEDED", json!({"resumed": true})),
        "inactive" => ("INACTIVE", json!({"waiting_for": "a person"})),
        _ => ("ACTIVE", json!({})),
    };
    (
        axum::http::StatusCode::OK,
        AxJson(status_doc(&id, status, details)),
    )
}

async fn ap_cancel(AxState(s): AxState<Shared>, AxPath(id): AxPath<String>) -> AxJson<Value> {
    s.lock().unwrap().cancelled.push(id.clone());
    AxJson(status_doc(&id, "FAILED", json!({"cancelled": true})))
}

impl Provider {
    async fn start() -> Self {
        let state: Shared = Arc::default();
        let app = axum::Router::new()
            .route("/ap/run", post(ap_run))
            .route("/ap/{id}/status", get(ap_status))
            .route("/ap/{id}/cancel", post(ap_cancel))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/ap", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            state,
            _server: server,
        }
    }

    fn starts(&self, request_id_prefix: &str) -> u32 {
        let s = self.state.lock().unwrap();
        s.starts
            .iter()
            .filter(|(k, _)| k.starts_with(request_id_prefix))
            .map(|(_, v)| v)
            .sum()
    }

    fn start_count(&self) -> usize {
        self.state.lock().unwrap().starts.len()
    }

    fn release_all(&self) {
        let mut s = self.state.lock().unwrap();
        let all: Vec<String> = s.actions.keys().cloned().collect();
        s.released.extend(all);
    }

    fn cancelled(&self) -> usize {
        self.state.lock().unwrap().cancelled.len()
    }
}

// --------------------------------------------------------------- scenarios

fn pass_flow() -> Value {
    json!({
        "StartAt": "Greet",
        "States": {
            "Greet": {"Type": "ExpressionEval", "Parameters": {"greeting.=": "'hello ' + name"},
                      "ResultPath": "$.out", "Next": "Check"},
            "Check": {"Type": "Choice", "Choices": [
                {"Variable": "$.name", "StringEquals": "nobody", "Next": "Reject"}],
                "Default": "Done"},
            "Reject": {"Type": "Fail", "Error": "Rejected", "Cause": "nobody is not welcome"},
            "Done": {"Type": "Pass", "End": true}
        }
    })
}

/// Who may see, start, change and manage flows and runs, with the
/// refusals as carefully as the successes.
async fn roles_and_refusals(scene: &Scene) {
    let (alice, bob, carol) = (&scene.alice, &scene.bob, &scene.carol);
    let flow = scene
        .flow(
            alice,
            pass_flow(),
            json!({
                "flow_starters": [format!("identity:{}", bob.id)],
                "input_schema": {"type": "object", "required": ["name"],
                                  "properties": {"name": {"type": "string"}}}
            }),
        )
        .await;

    // Strangers learn nothing; anonymous callers need a token to start.
    scene
        .get(Some(carol), &format!("/v1/flows/{flow}"))
        .await
        .assert_error(404, "not_found");
    scene
        .start_run(Some(carol), &flow, json!({"body": {"name": "x"}}))
        .await
        .assert_error(404, "not_found");
    scene
        .get(None, &format!("/v1/flows/{flow}"))
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        scene
            .start_run(None, &flow, json!({"body": {}}))
            .await
            .status,
        401
    );

    // The starter sees the flow but may not change it.
    let seen = scene.get(Some(bob), &format!("/v1/flows/{flow}")).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(
        seen.body["user_roles"],
        json!(["flow_starter", "flow_viewer"])
    );
    let change = scene
        .put(
            Some(bob),
            &format!("/v1/flows/{flow}"),
            json!({"title": "mine"}),
        )
        .await;
    change.assert_error(403, "forbidden");
    scene
        .call(
            Some(bob),
            Method::DELETE,
            &format!("/v1/flows/{flow}"),
            None,
        )
        .await
        .assert_error(403, "forbidden");

    // Input checked against the schema, naming the field.
    let bad = scene
        .start_run(Some(bob), &flow, json!({"body": {"name": 5}}))
        .await;
    let message = bad.assert_error(400, "bad_request");
    assert!(message.contains("name"), "{message}");

    // A run: its output, its log, and who sees it.
    let done = scene.run_to_end(bob, &flow, json!({"name": "Ada"})).await;
    assert_eq!(done["status"], json!("SUCCEEDED"), "{done}");
    assert_eq!(
        done["details"]["output"]["out"]["greeting"],
        json!("hello Ada"),
        "{done}"
    );
    let run = done["run_id"].as_str().unwrap().to_owned();
    let codes = scene.log_codes(bob, &run).await;
    assert_eq!(
        codes.first().map(String::as_str),
        Some("flow_started"),
        "{codes:?}"
    );
    assert_eq!(
        codes.last().map(String::as_str),
        Some("flow_succeeded"),
        "{codes:?}"
    );
    assert!(codes.iter().any(|c| c == "state_entered"), "{codes:?}");
    scene
        .get(Some(carol), &format!("/v1/runs/{run}"))
        .await
        .assert_error(404, "not_found");
    scene
        .get(Some(carol), &format!("/v1/runs/{run}/log"))
        .await
        .assert_error(404, "not_found");
    let owner_view = scene.get(Some(alice), &format!("/v1/runs/{run}")).await;
    assert_eq!(owner_view.status, 200, "{owner_view:?}");
    assert!(owner_view.body["user_roles"]
        .as_array()
        .unwrap()
        .contains(&json!("run_manager")));
    let carols = scene.get(Some(carol), "/v1/runs").await;
    assert_eq!(carols.body["runs"], json!([]), "{carols:?}");
    let bobs = scene
        .get(
            Some(bob),
            &format!("/v1/runs?flow_id={flow}&status=SUCCEEDED"),
        )
        .await;
    assert_eq!(bobs.body["runs"].as_array().unwrap().len(), 1, "{bobs:?}");
    scene
        .get(Some(bob), "/v1/runs?status=DONE")
        .await
        .assert_error(400, "bad_request");

    // A failing branch: FAILED with the state's error.
    let failed = scene
        .run_to_end(bob, &flow, json!({"name": "nobody"}))
        .await;
    assert_eq!(failed["status"], json!("FAILED"));
    assert_eq!(
        failed["details"]["error"]["Error"],
        json!("Rejected"),
        "{failed}"
    );

    // Run monitors: carol may watch bob's run, not cancel or release it.
    let watched = scene
        .start_run(Some(bob), &flow, json!({"body": {"name": "Bo"}, "run_monitors": [format!("identity:{}", carol.id)], "label": "watched"}))
        .await;
    assert_eq!(watched.status, 201, "{watched:?}");
    let watched = watched.str("run_id").to_owned();
    scene.wait_run(carol, &watched, &["SUCCEEDED"]).await;
    scene
        .post(
            Some(carol),
            &format!("/v1/runs/{watched}/release"),
            json!({}),
        )
        .await
        .assert_error(403, "forbidden");
    let released = scene
        .post(Some(bob), &format!("/v1/runs/{watched}/release"), json!({}))
        .await;
    assert_eq!(released.status, 204, "{released:?}");
    scene
        .get(Some(bob), &format!("/v1/runs/{watched}"))
        .await
        .assert_error(404, "not_found");

    // One run per request id.
    let first = scene
        .start_run(
            Some(bob),
            &flow,
            json!({"body": {"name": "R"}, "request_id": "nightly-1"}),
        )
        .await;
    let again = scene
        .start_run(
            Some(bob),
            &flow,
            json!({"body": {"name": "R"}, "request_id": "nightly-1"}),
        )
        .await;
    assert_eq!((first.status.as_u16(), again.status.as_u16()), (201, 200));
    assert_eq!(first.str("run_id"), again.str("run_id"));

    // A public viewer role: anyone may read the flow, still not start it.
    let shared = scene
        .put(
            Some(alice),
            &format!("/v1/flows/{flow}"),
            json!({"flow_viewers": ["public"]}),
        )
        .await;
    assert_eq!(shared.status, 200, "{shared:?}");
    assert_eq!(
        scene.get(None, &format!("/v1/flows/{flow}")).await.status,
        200
    );
    scene
        .start_run(Some(carol), &flow, json!({"body": {"name": "x"}}))
        .await
        .assert_error(403, "forbidden");
    // `public` may only view.
    let bad_role = scene
        .put(
            Some(alice),
            &format!("/v1/flows/{flow}"),
            json!({"flow_starters": ["public"]}),
        )
        .await;
    assert!(bad_role
        .assert_error(400, "bad_request")
        .contains("flow_starters"));

    // Deleting the flow leaves its runs to their starters.
    assert_eq!(
        scene
            .call(
                Some(alice),
                Method::DELETE,
                &format!("/v1/flows/{flow}"),
                None
            )
            .await
            .status,
        204
    );
    assert_eq!(
        scene
            .get(Some(bob), &format!("/v1/runs/{run}"))
            .await
            .status,
        200
    );
    scene
        .get(Some(bob), &format!("/v1/flows/{flow}"))
        .await
        .assert_error(404, "not_found");
}

/// Bad definitions and bad requests: every problem named, nothing stored.
async fn bad_input_is_refused_clearly(scene: &Scene) {
    let alice = &scene.alice;
    let broken = json!({
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Next": "Nowhere", "End": true},
            "B": {"Type": "Pass", "Parameters": {"x.$": "$$$bad"}, "End": true}
        }
    });
    let answer = scene
        .post(Some(alice), "/v1/flows", json!({"definition": broken}))
        .await;
    let message = answer.assert_error(400, "bad_request");
    assert!(
        message.contains("Nowhere") && message.contains('A'),
        "{message}"
    );
    let report = scene
        .post(
            Some(alice),
            "/v1/flows/validate",
            json!({"definition": broken}),
        )
        .await;
    assert_eq!(report.status, 200, "{report:?}");
    assert_eq!(report.body["valid"], json!(false));
    let states: Vec<&str> = report.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert!(states.contains(&"A") && states.contains(&"B"), "{report:?}");
    let schema = scene
        .post(
            Some(alice),
            "/v1/flows",
            json!({"definition": pass_flow(), "input_schema": {"type": "nonsense"}}),
        )
        .await;
    assert!(schema
        .assert_error(400, "bad_request")
        .contains("input_schema"));
    let listed = scene.get(Some(alice), "/v1/flows").await;
    assert_eq!(
        listed.body["flows"],
        json!([]),
        "nothing was stored: {listed:?}"
    );

    scene
        .post(Some(alice), "/v1/flows", json!({"nope": 1}))
        .await
        .assert_error(400, "bad_request");
    let unknown = uuid_like();
    scene
        .get(Some(alice), &format!("/v1/flows/{unknown}"))
        .await
        .assert_error(404, "not_found");
    scene
        .get(Some(alice), &format!("/v1/runs/{unknown}"))
        .await
        .assert_error(404, "not_found");
    scene
        .get(Some(alice), "/v1/flows/not-a-uuid")
        .await
        .assert_error(400, "bad_request");
    scene
        .get(Some(alice), "/v1/actions/teleport")
        .await
        .assert_error(404, "not_found");
    let big = "x".repeat(3 * 1024 * 1024);
    let huge = scene
        .post(
            Some(alice),
            "/v1/flows",
            json!({"definition": pass_flow(), "description": big}),
        )
        .await;
    assert_eq!(huge.status, 413, "{huge:?}");
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000001".to_owned()
}

/// Hostile definitions end cleanly at the limits, with named errors.
async fn hostile_definitions_hit_the_limits(scene: &Scene) {
    let alice = &scene.alice;
    let endless = scene
        .flow(alice, json!({"StartAt": "Loop", "States": {
            "Loop": {"Type": "Pass", "Next": "Again"},
            "Again": {"Type": "Choice", "Choices": [{"Variable": "$.stop", "IsPresent": true, "Next": "End"}], "Default": "Loop"},
            "End": {"Type": "Succeed"}}}), json!({}))
        .await;
    let run = scene.run_to_end(alice, &endless, json!({})).await;
    assert_eq!(
        run["details"]["error"]["Error"],
        json!("Lattice.TransitionLimitExceeded"),
        "{run}"
    );

    let growing = scene
        .flow(alice, json!({"StartAt": "Grow", "States": {
            "Grow": {"Type": "ExpressionEval", "Parameters": {"v.=": "v + v"}, "ResultPath": "$", "Next": "Grow"}}}), json!({}))
        .await;
    let run = scene
        .run_to_end(alice, &growing, json!({"v": "0123456789abcdef"}))
        .await;
    assert_eq!(
        run["details"]["error"]["Error"],
        json!("Lattice.StateSizeLimitExceeded"),
        "{run}"
    );

    let missing = scene
        .flow(
            alice,
            json!({"StartAt": "Read", "States": {
            "Read": {"Type": "Pass", "Parameters": {"x.$": "$.not.there"}, "End": true}}}),
            json!({}),
        )
        .await;
    let run = scene.run_to_end(alice, &missing, json!({})).await;
    assert_eq!(
        run["details"]["error"]["Error"],
        json!("States.ParameterPathFailure"),
        "{run}"
    );
    assert!(
        run["details"]["error"]["Cause"]
            .as_str()
            .unwrap()
            .contains("$.not.there"),
        "{run}"
    );

    let unknown_action = scene
        .flow(alice, json!({"StartAt": "Go", "States": {
            "Go": {"Type": "Action", "ActionUrl": "/v1/actions/teleport", "Parameters": {}, "End": true}}}), json!({}))
        .await;
    let run = scene.run_to_end(alice, &unknown_action, json!({})).await;
    assert_eq!(
        run["details"]["error"]["Error"],
        json!("ActionUnableToRun"),
        "{run}"
    );
}

/// An external provider: slow success, failure caught, Retry with
/// backoff, INACTIVE then resumed, a timeout, a refusal; one action per
/// request id.
async fn external_action_providers(scene: &Scene) {
    let alice = &scene.alice;
    let url = &scene.provider.url;
    let action = |behaviour: &str, extra: Value| {
        let mut state = json!({"Type": "Action", "ActionUrl": url, "Parameters": {"behaviour": behaviour}, "ResultPath": format!("$.{behaviour}")});
        if let (Value::Object(s), Value::Object(e)) = (&mut state, extra) {
            s.extend(e);
        }
        state
    };
    let flow = scene
        .flow(alice, json!({"StartAt": "Slow", "States": {
            "Slow": action("slow", json!({"Next": "Fail"})),
            "Fail": action("fail", json!({"Next": "Retry", "Catch": [{"ErrorEquals": ["ActionFailedException"], "ResultPath": "$.caught", "Next": "Retry"}]})),
            "Retry": action("fail_twice", json!({"Next": "Wait", "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 3, "BackoffRate": 1.5}]})),
            "Wait": action("inactive", json!({"Next": "Hang"})),
            "Hang": action("hang", json!({"WaitTime": 2, "Next": "Refused", "Catch": [{"ErrorEquals": ["ActionTimeout"], "ResultPath": "$.timeout", "Next": "Refused"}]})),
            "Refused": action("refuse", json!({"End": true, "Catch": [{"ErrorEquals": ["ActionUnableToRun"], "ResultPath": "$.refused", "Next": "Done"}]})),
            "Done": {"Type": "Succeed"}
        }}), json!({}))
        .await;
    let started = scene
        .start_run(Some(alice), &flow, json!({"body": {}}))
        .await;
    assert_eq!(started.status, 201, "{started:?}");
    let run = started.str("run_id").to_owned();
    let waiting = scene.wait_run(alice, &run, &["INACTIVE", "FAILED"]).await;
    assert_eq!(waiting["status"], json!("INACTIVE"), "{waiting}");
    assert_eq!(waiting["details"]["waiting_on"][0]["state"], json!("Wait"));
    // What it waits on, as the provider's latest status says, once the
    // driver has looked again.
    let mut seen = waiting;
    for _ in 0..200 {
        if seen["details"]["waiting_on"][0]["waiting_for"] == json!("a person") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = scene
            .get(Some(alice), &format!("/v1/runs/{run}"))
            .await
            .body;
    }
    assert_eq!(
        seen["details"]["waiting_on"][0]["waiting_for"],
        json!("a person"),
        "{seen}"
    );
    scene.provider.release_all();
    let resumed = scene
        .post(Some(alice), &format!("/v1/runs/{run}/resume"), json!({}))
        .await;
    assert_eq!(resumed.status, 200, "{resumed:?}");
    let done = scene.wait_run(alice, &run, &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["status"], json!("SUCCEEDED"), "{done}");
    let out = &done["details"]["output"];
    assert_eq!(out["slow"]["details"]["answer"], json!(42), "{out}");
    assert_eq!(
        out["caught"]["Error"],
        json!("ActionFailedException"),
        "{out}"
    );
    assert_eq!(
        out["caught"]["details"]["details"]["reason"],
        json!("it broke"),
        "{out}"
    );
    assert_eq!(
        out["fail_twice"]["details"]["finally"],
        json!(true),
        "{out}"
    );
    assert_eq!(out["inactive"]["details"]["resumed"], json!(true), "{out}");
    assert_eq!(out["timeout"]["Error"], json!("ActionTimeout"), "{out}");
    assert!(
        out["refused"]["Cause"]
            .as_str()
            .unwrap()
            .contains("refused on purpose"),
        "{out}"
    );
    assert!(
        scene.provider.cancelled() >= 1,
        "the timed-out action was cancelled"
    );
    // Three attempts of the retried step, each its own request id, each started once.
    let codes = scene.log_codes(alice, &run).await;
    assert_eq!(
        codes.iter().filter(|c| *c == "retrying").count(),
        2,
        "{codes:?}"
    );
    assert_eq!(
        scene.provider.starts(""),
        scene.provider.start_count() as u32,
        "one start per request id"
    );
}

/// Approval: only its approvers answer, only with an offered option;
/// cancel and release.
async fn approval_cancel_and_release(scene: &Scene) {
    let (alice, bob, carol) = (&scene.alice, &scene.bob, &scene.carol);
    let flow = scene
        .flow(alice, json!({"StartAt": "Ask", "States": {
            "Ask": {"Type": "Action", "ActionUrl": "/v1/actions/approval",
                    "Parameters": {"message": "publish?", "options": ["yes", "no"],
                                   "approvers": [format!("identity:{}", bob.id)]},
                    "ResultPath": "$.approval", "Next": "Decide"},
            "Decide": {"Type": "Choice", "Choices": [{"Variable": "$.approval.details.option", "StringEquals": "yes", "Next": "Publish"}], "Default": "Stop"},
            "Publish": {"Type": "Pass", "Result": "published", "ResultPath": "$.result", "End": true},
            "Stop": {"Type": "Fail", "Error": "NotApproved"}
        }}), json!({"flow_starters": ["all_authenticated_users"]}))
        .await;
    let started = scene
        .start_run(Some(alice), &flow, json!({"body": {}}))
        .await;
    let run = started.str("run_id").to_owned();
    let waiting = scene.wait_run(alice, &run, &["INACTIVE"]).await;
    assert_eq!(
        waiting["display_status"],
        json!("AWAITING APPROVAL"),
        "{waiting}"
    );
    assert_eq!(
        waiting["details"]["waiting_on"][0]["message"],
        json!("publish?"),
        "{waiting}"
    );
    // alice started it but is not an approver; carol cannot even see it.
    scene
        .post(Some(alice), &format!("/v1/runs/{run}/approve"), json!({}))
        .await
        .assert_error(403, "forbidden");
    scene
        .post(Some(carol), &format!("/v1/runs/{run}/approve"), json!({}))
        .await
        .assert_error(404, "not_found");
    let wrong = scene
        .post(
            Some(bob),
            &format!("/v1/runs/{run}/approve"),
            json!({"option": "maybe"}),
        )
        .await;
    assert!(wrong.assert_error(400, "bad_request").contains("yes"));
    let approved = scene
        .post(
            Some(bob),
            &format!("/v1/runs/{run}/approve"),
            json!({"option": "yes"}),
        )
        .await;
    assert_eq!(approved.status, 200, "{approved:?}");
    let done = scene.wait_run(alice, &run, &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(
        done["details"]["output"]["result"],
        json!("published"),
        "{done}"
    );
    assert_eq!(
        done["details"]["output"]["approval"]["details"]["approved_by"],
        json!(format!("identity:{}", bob.id))
    );
    scene
        .post(Some(bob), &format!("/v1/runs/{run}/approve"), json!({}))
        .await
        .assert_error(404, "not_found");

    // A long Wait, cancelled by its starter.
    let waits = scene
        .flow(alice, json!({"StartAt": "Nap", "States": {"Nap": {"Type": "Wait", "Seconds": 3600, "End": true}}}), json!({}))
        .await;
    let started = scene
        .start_run(Some(alice), &waits, json!({"body": {}}))
        .await;
    let run = started.str("run_id").to_owned();
    scene
        .post(Some(alice), &format!("/v1/runs/{run}/release"), json!({}))
        .await
        .assert_error(409, "conflict");
    scene
        .post(Some(bob), &format!("/v1/runs/{run}/cancel"), json!({}))
        .await
        .assert_error(404, "not_found");
    let cancelled = scene
        .post(Some(alice), &format!("/v1/runs/{run}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    let ended = scene.wait_run(alice, &run, &["FAILED"]).await;
    assert_eq!(
        ended["details"]["error"]["Error"],
        json!("RunCancelled"),
        "{ended}"
    );
    scene
        .post(Some(alice), &format!("/v1/runs/{run}/cancel"), json!({}))
        .await
        .assert_error(409, "conflict");
}

/// A flow as another flow's action, and the built-in providers over HTTP
/// (one action per request id, visible to its creator only).
async fn nested_flows_and_the_action_api(scene: &Scene) {
    let (alice, bob) = (&scene.alice, &scene.bob);
    let inner = scene
        .flow(alice, json!({"StartAt": "Double", "States": {
            "Double": {"Type": "ExpressionEval", "Parameters": {"n.=": "n * 2"}, "ResultPath": "$", "End": true}}}), json!({}))
        .await;
    let outer = scene
        .flow(alice, json!({"StartAt": "Call", "States": {
            "Call": {"Type": "Action", "ActionUrl": format!("/v1/flows/{inner}"), "Parameters": {"n.$": "$.n"}, "ResultPath": "$.inner", "End": true}}}), json!({}))
        .await;
    let done = scene.run_to_end(alice, &outer, json!({"n": 21})).await;
    assert_eq!(
        done["details"]["output"]["inner"]["details"]["output"]["n"],
        json!(42),
        "{done}"
    );

    let request = json!({"request_id": "r-1", "body": {"hello": "world"}});
    let first = scene
        .post(Some(alice), "/v1/actions/echo/run", request.clone())
        .await;
    let again = scene
        .post(Some(alice), "/v1/actions/echo/run", request)
        .await;
    assert_eq!(
        (first.status.as_u16(), again.status.as_u16()),
        (201, 200),
        "{first:?} {again:?}"
    );
    assert_eq!(first.str("action_id"), again.str("action_id"));
    assert_eq!(first.body["details"]["hello"], json!("world"));
    let id = first.str("action_id");
    assert_eq!(
        scene
            .get(Some(alice), &format!("/v1/actions/echo/{id}/status"))
            .await
            .status,
        200
    );
    scene
        .get(Some(bob), &format!("/v1/actions/echo/{id}/status"))
        .await
        .assert_error(404, "not_found");
    scene
        .get(Some(alice), &format!("/v1/actions/compute/{id}/status"))
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        scene
            .post(
                Some(alice),
                &format!("/v1/actions/echo/{id}/release"),
                json!({})
            )
            .await
            .status,
        200
    );
    scene
        .get(Some(alice), &format!("/v1/actions/echo/{id}/status"))
        .await
        .assert_error(404, "not_found");
    let intro = scene.get(None, "/v1/actions/transfer").await;
    assert_eq!(intro.status, 200, "{intro:?}");
    assert_eq!(intro.body["synchronous"], json!(false));
    let bad = scene
        .post(
            Some(alice),
            "/v1/actions/compute/run",
            json!({"request_id": "c-1", "body": {"endpoint_id": "x"}}),
        )
        .await;
    assert!(bad
        .assert_error(400, "bad_request")
        .contains("compute action body"));
}

backend_suite!(
    "flows";
    roles_and_refusals,
    bad_input_is_refused_clearly,
    hostile_definitions_hit_the_limits,
    external_action_providers,
    approval_cancel_and_release,
    nested_flows_and_the_action_api,
);
