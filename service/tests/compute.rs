//! The compute API through the router, without a socket and without an
//! agent: functions, endpoints, submission, task queries and cancellation.

use axum::http::StatusCode;
use lattice_protocol::compute::{TaskInfo, TaskState};
use lattice_protocol::{EndpointId, FunctionId, TaskId};
use lattice_service::auth::hash_secret;
use serde_json::{json, Value};

mod common;

use common::{assert_error, id_field, service, service_with, str_field, TestService};

/// A user, a shell function `echo {greeting} {name}` and an endpoint of theirs.
struct Setup {
    service: TestService,
    token: String,
    function: FunctionId,
    endpoint: EndpointId,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(adjust: impl FnOnce(&mut lattice_service::ServiceConfig)) -> Setup {
    let service = service_with(adjust).await;
    let (_, token) = service.user("alice").await;
    let function = service
        .shell_function(&token, "echo {greeting} {name}")
        .await;
    let (endpoint, _) = service.endpoint(&token, "laptop").await;
    Setup {
        service,
        token,
        function,
        endpoint,
    }
}

impl Setup {
    async fn submit_one(&self, args: Value) -> common::Answer {
        self.post_task(
            json!({"function_id": self.function, "endpoint_id": self.endpoint, "args": args}),
        )
        .await
    }

    /// Submits `count` tasks with valid arguments; returns the batch id and task ids.
    async fn submit(&self, count: usize) -> (String, Vec<TaskId>) {
        let tasks = (0..count)
            .map(|i| json!({"greeting": "hello", "name": format!("n{i}")}))
            .collect();
        self.service
            .submit_batch(&self.token, self.function, self.endpoint, tasks, None)
            .await
    }

    /// Posts `body` to `/v1/tasks` as the setup's user.
    async fn post_task(&self, body: Value) -> common::Answer {
        self.service
            .post_json("/v1/tasks", Some(&self.token), body)
            .await
    }

    /// Posts a batch of `tasks` of the setup's function to its endpoint.
    async fn post_batch(&self, tasks: Value) -> common::Answer {
        self.service
            .post_json(
                "/v1/batches",
                Some(&self.token),
                json!({"function_id": self.function, "endpoint_id": self.endpoint, "tasks": tasks}),
            )
            .await
    }

    /// Posts `principals` to the grants at `path` as the holder of `token`.
    async fn grant(&self, path: &str, token: &str, principals: Value) -> common::Answer {
        self.service
            .post_json(path, Some(token), json!({ "principals": principals }))
            .await
    }

    async fn cancel(&self, id: TaskId) -> common::Answer {
        self.service.cancel(&self.token, id).await
    }
}

/// Registers a function of `spec` as a new user of a new service; asserts it
/// is refused as a bad request and returns the message.
async fn refused_function(spec: Value) -> String {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let answer = service
        .post_json("/v1/functions", Some(&token), json!({ "spec": spec }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request")
}

fn tasks_of(body: &Value) -> Vec<TaskInfo> {
    serde_json::from_value(body.clone()).expect("a list of tasks")
}

// ---- functions -----------------------------------------------------------

#[tokio::test]
async fn registering_a_shell_function_is_201_with_its_parameters() {
    let service = service().await;
    let (alice, token) = service.user("alice").await;
    let answer = service
        .post_json(
            "/v1/functions",
            Some(&token),
            json!({"name": "greet", "spec": {"kind": "shell", "command": "echo {greeting} {name} {name}"}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    assert_eq!(answer.body["parameters"], json!(["greeting", "name"]));
    assert_eq!(answer.body["kind"], "shell");
    assert_eq!(answer.body["name"], "greet");
    assert_eq!(answer.body["owner_id"], json!(alice.id));
    assert_eq!(str_field(&answer.body, "content_hash").len(), 64);
}

#[tokio::test]
async fn registering_the_same_spec_and_name_again_returns_the_same_function() {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let body = json!({"name": "greet", "spec": {"kind": "shell", "command": "echo {name}"}});
    let first = service
        .post_json("/v1/functions", Some(&token), body.clone())
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let again = service.post_json("/v1/functions", Some(&token), body).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(again.body["id"], first.body["id"]);
}

#[tokio::test]
async fn the_same_spec_under_another_name_is_another_function() {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let spec = json!({"kind": "shell", "command": "echo {name}"});
    let first = service
        .post_json(
            "/v1/functions",
            Some(&token),
            json!({"name": "a", "spec": spec}),
        )
        .await;
    let second = service
        .post_json(
            "/v1/functions",
            Some(&token),
            json!({"name": "b", "spec": spec}),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{second:?}");
    assert_ne!(second.body["id"], first.body["id"]);
    assert_eq!(second.body["content_hash"], first.body["content_hash"]);
}

#[tokio::test]
async fn shell_function_with_an_empty_command_is_400() {
    let message = refused_function(json!({"kind": "shell", "command": "   "})).await;
    assert!(message.contains("spec.command"), "{message}");
}

#[tokio::test]
async fn shell_function_with_a_bad_template_is_400_naming_spec_command() {
    let message = refused_function(json!({"kind": "shell", "command": "echo {"})).await;
    assert!(message.contains("spec.command"), "{message}");
    assert!(message.contains("unclosed"), "{message}");
}

#[tokio::test]
async fn wasm_function_with_non_wasm_bytes_is_400() {
    // base64 of "hello, world!!"
    let message = refused_function(json!({"kind": "wasm", "module": "aGVsbG8sIHdvcmxkISE="})).await;
    assert!(message.contains("spec.module"), "{message}");
}

#[tokio::test]
async fn python_function_with_an_unknown_serializer_is_400() {
    let message = refused_function(json!({"kind": "python", "payload": "cHJpbnQoMSk=", "serializer": "marshal", "python_version": "3.11"})).await;
    assert!(message.contains("spec.serializer"), "{message}");
    assert!(message.contains("marshal"), "{message}");
}

#[tokio::test]
async fn unknown_function_is_404() {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let answer = service
        .get(
            &format!("/v1/functions/{}", FunctionId::new()),
            Some(&token),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn malformed_function_id_is_400() {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let answer = service.get("/v1/functions/not-an-id", Some(&token)).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn another_identitys_function_is_403() {
    let service = service().await;
    let (_, alice) = service.user("alice").await;
    let (_, bob) = service.user("bob").await;
    let function = service.shell_function(&alice, "true").await;
    let answer = service
        .get(&format!("/v1/functions/{function}"), Some(&bob))
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn function_list_shows_only_the_callers_live_functions() {
    let service = service().await;
    let (_, alice) = service.user("alice").await;
    let (_, bob) = service.user("bob").await;
    let kept = service.shell_function(&alice, "echo kept").await;
    let deleted = service.shell_function(&alice, "echo deleted").await;
    service.shell_function(&bob, "echo bob").await;
    let answer = service
        .delete(&format!("/v1/functions/{deleted}"), Some(&alice))
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{answer:?}");
    let answer = service.get("/v1/functions", Some(&alice)).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let ids: Vec<FunctionId> = answer
        .body
        .as_array()
        .expect("a list")
        .iter()
        .map(|f| id_field(f, "id"))
        .collect();
    assert_eq!(ids, vec![kept]);
}

#[tokio::test]
async fn submitting_to_a_deleted_function_is_400() {
    let s = setup().await;
    let answer = s
        .service
        .delete(&format!("/v1/functions/{}", s.function), Some(&s.token))
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{answer:?}");
    let answer = s.submit_one(json!({"greeting": "hi", "name": "x"})).await;
    let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("deleted"), "{message}");
}

// ---- endpoints -----------------------------------------------------------

#[tokio::test]
async fn registering_an_endpoint_is_201_with_an_agent_secret() {
    let service = service().await;
    let (alice, token) = service.user("alice").await;
    let answer = service
        .post_json("/v1/endpoints", Some(&token), json!({"name": "laptop"}))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    assert!(!str_field(&answer.body, "agent_secret").is_empty());
    assert_eq!(answer.body["endpoint"]["name"], "laptop");
    assert_eq!(answer.body["endpoint"]["owner_id"], json!(alice.id));
}

#[tokio::test]
async fn endpoint_with_an_invalid_name_is_400() {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let answer = service
        .post_json(
            "/v1/endpoints",
            Some(&token),
            json!({"name": "my laptop/1"}),
        )
        .await;
    let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("name"), "{message}");
}

#[tokio::test]
async fn endpoint_names_follow_the_agents_rule() {
    // The agent keeps an endpoint's state in a directory named after it:
    // the service accepts exactly the names the agent can use.
    let service = service().await;
    let (_, token) = service.user("alice").await;
    for bad in ["..", ".hidden", &"e".repeat(65)] {
        let answer = service
            .post_json("/v1/endpoints", Some(&token), json!({ "name": bad }))
            .await;
        let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.contains("not first"), "{bad}: {message}");
    }
    service.endpoint(&token, &"e".repeat(64)).await;
}

#[tokio::test]
async fn listed_endpoint_without_an_agent_is_offline() {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let (endpoint, _) = service.endpoint(&token, "laptop").await;
    let answer = service.get("/v1/endpoints", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let list = answer.body.as_array().expect("a list");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], json!(endpoint));
    assert_eq!(list[0]["status"], "offline");
    assert_eq!(list[0]["waiting_tasks"], 0);
}

#[tokio::test]
async fn re_registering_an_endpoint_name_rotates_its_secret() {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let (first_id, first_secret) = service.endpoint(&token, "laptop").await;
    let (second_id, second_secret) = service.endpoint(&token, "laptop").await;
    assert_eq!(second_id, first_id);
    assert_ne!(second_secret, first_secret);
    let store = &service.state.store;
    assert!(store
        .endpoint_by_secret(&hash_secret(&first_secret))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .endpoint_by_secret(&hash_secret(&second_secret))
            .await
            .unwrap()
            .map(|e| e.id),
        Some(first_id)
    );
}

// ---- submission ----------------------------------------------------------

#[tokio::test]
async fn submitting_one_task_is_201_with_its_batch() {
    let s = setup().await;
    let answer = s.submit_one(json!({"greeting": "hi", "name": "ada"})).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    assert!(answer.body["batch_id"].is_string(), "{answer:?}");
    assert_eq!(answer.body["task_ids"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn task_missing_a_template_argument_is_400_naming_it() {
    let s = setup().await;
    let answer = s.submit_one(json!({"greeting": "hi"})).await;
    let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("`name`"), "{message}");
}

#[tokio::test]
async fn wasm_tasks_take_any_arguments_but_argv_and_stdin_have_a_shape() {
    let s = setup().await;
    // `(module (memory (export "memory") 1) (func (export "_start")))`
    let noop = "AGFzbQEAAAABBAFgAAADAgEABQMBAAEHEwIGbWVtb3J5AgAGX3N0YXJ0AAAKBAECAAs=";
    let answer = s
        .service
        .post_json(
            "/v1/functions",
            Some(&s.token),
            json!({"spec": {"kind": "wasm", "module": noop}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    let function: FunctionId = id_field(&answer.body, "id");
    let submit = |args: Value| {
        s.service.post_json(
            "/v1/tasks",
            Some(&s.token),
            json!({"function_id": function, "endpoint_id": s.endpoint, "args": args}),
        )
    };
    for args in [
        json!({"argv": ["-n", 3], "stdin": "data"}),
        json!({"argv": "-n 3"}),
        json!({"anything": 1, "else": "x"}),
    ] {
        let answer = submit(args).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    }
    let message = assert_error(
        &submit(json!({"argv": {"n": 3}})).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert!(
        message.contains("`argv` must be an array or a string"),
        "{message}"
    );
    let message = assert_error(
        &submit(json!({"stdin": 5})).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert!(message.contains("`stdin` must be a string"), "{message}");
}

#[tokio::test]
async fn task_with_an_unknown_argument_is_400_naming_it() {
    let s = setup().await;
    let answer = s
        .submit_one(json!({"greeting": "hi", "name": "x", "colour": "red"}))
        .await;
    let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("`colour`"), "{message}");
}

#[tokio::test]
async fn batch_with_a_bad_task_is_400_naming_its_index() {
    let s = setup().await;
    let answer = s
        .post_batch(json!([{"greeting": "hi", "name": "a"}, {"greeting": "hi"}]))
        .await;
    let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("tasks[1]"), "{message}");
}

#[tokio::test]
async fn task_of_an_unknown_function_is_404() {
    let s = setup().await;
    let answer = s
        .post_task(json!({"function_id": FunctionId::new(), "endpoint_id": s.endpoint, "args": {}}))
        .await;
    let message = assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("function"), "{message}");
}

#[tokio::test]
async fn task_for_an_unknown_endpoint_is_404() {
    let s = setup().await;
    let answer = s
        .post_task(
            json!({"function_id": s.function, "endpoint_id": EndpointId::new(),
                          "args": {"greeting": "hi", "name": "x"}}),
        )
        .await;
    let message = assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("endpoint"), "{message}");
}

#[tokio::test]
async fn task_for_another_identitys_endpoint_is_403() {
    let s = setup().await;
    let (_, bob) = s.service.user("bob").await;
    let (bobs_endpoint, _) = s.service.endpoint(&bob, "bobs").await;
    let answer = s
        .post_task(
            json!({"function_id": s.function, "endpoint_id": bobs_endpoint,
                          "args": {"greeting": "hi", "name": "x"}}),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn batch_over_max_batch_tasks_is_413() {
    let s = setup_with(|config| config.max_batch_tasks = 3).await;
    let tasks: Vec<Value> = (0..4)
        .map(|_| json!({"greeting": "hi", "name": "x"}))
        .collect();
    let answer = s.post_batch(json!(tasks)).await;
    let message = assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(message.contains('3'), "{message}");
}

#[tokio::test]
async fn empty_batch_is_400() {
    let s = setup().await;
    let answer = s.post_batch(json!([])).await;
    let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("tasks"), "{message}");
}

#[tokio::test]
async fn walltime_of_zero_is_400() {
    let s = setup().await;
    let answer = s
        .post_task(json!({"function_id": s.function, "endpoint_id": s.endpoint,
                          "args": {"greeting": "hi", "name": "x"}, "walltime_secs": 0}))
        .await;
    let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("walltime_secs"), "{message}");
}

// ---- tasks without an agent ----------------------------------------------

#[tokio::test]
async fn tasks_wait_and_are_counted_while_no_agent_is_connected() {
    let s = setup().await;
    let (_, ids) = s.submit(3).await;
    for id in &ids {
        let task = s.service.task(&s.token, *id).await;
        assert_eq!(task.state, TaskState::Waiting, "{task:?}");
        assert_eq!(task.attempts, 0);
        assert_eq!(task.endpoint_id, s.endpoint);
    }
    let endpoint = s.service.endpoint_info(&s.token, s.endpoint).await;
    assert_eq!(endpoint["status"], "offline", "{endpoint}");
    assert_eq!(endpoint["waiting_tasks"], 3, "{endpoint}");
}

#[tokio::test]
async fn task_status_returns_the_callers_requested_tasks() {
    let s = setup().await;
    let (_, ids) = s.submit(3).await;
    let unknown = TaskId::new();
    let answer = s
        .service
        .post_json(
            "/v1/tasks/status",
            Some(&s.token),
            json!({"task_ids": [ids[0], ids[2], unknown]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let mut got: Vec<TaskId> = tasks_of(&answer.body).iter().map(|t| t.id).collect();
    got.sort();
    let mut expected = vec![ids[0], ids[2]];
    expected.sort();
    assert_eq!(got, expected);

    let (_, bob) = s.service.user("bob").await;
    let answer = s
        .service
        .post_json("/v1/tasks/status", Some(&bob), json!({"task_ids": ids}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body, json!([]), "another identity sees none");
}

#[tokio::test]
async fn another_identitys_task_is_403() {
    let s = setup().await;
    let (_, ids) = s.submit(1).await;
    let (_, bob) = s.service.user("bob").await;
    let answer = s
        .service
        .get(&format!("/v1/tasks/{}", ids[0]), Some(&bob))
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn listing_tasks_by_state_shows_the_waiting_ones() {
    let s = setup().await;
    let (_, ids) = s.submit(3).await;
    let answer = s.cancel(ids[1]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let answer = s
        .service
        .get("/v1/tasks?state=waiting", Some(&s.token))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let tasks = tasks_of(&answer.body);
    assert!(
        tasks.iter().all(|t| t.state == TaskState::Waiting),
        "{tasks:?}"
    );
    let mut got: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
    got.sort();
    let mut expected = vec![ids[0], ids[2]];
    expected.sort();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn listing_tasks_by_an_unknown_state_is_400() {
    let s = setup().await;
    let answer = s
        .service
        .get("/v1/tasks?state=sleeping", Some(&s.token))
        .await;
    let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("sleeping"), "{message}");
}

#[tokio::test]
async fn cancelling_a_waiting_task_cancels_it() {
    let s = setup().await;
    let (_, ids) = s.submit(1).await;
    let answer = s.cancel(ids[0]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["state"], "cancelled");
    assert!(answer.body["finished_at"].is_string(), "{answer:?}");
    let endpoint = s.service.endpoint_info(&s.token, s.endpoint).await;
    assert_eq!(endpoint["waiting_tasks"], 0, "{endpoint}");
}

#[tokio::test]
async fn cancelling_a_cancelled_task_is_409() {
    let s = setup().await;
    let (_, ids) = s.submit(1).await;
    assert_eq!(s.cancel(ids[0]).await.status, StatusCode::OK);
    let answer = s.cancel(ids[0]).await;
    let message = assert_error(&answer, StatusCode::CONFLICT, "conflict");
    assert!(message.contains("cancelled"), "{message}");
}

#[tokio::test]
async fn batch_status_counts_tasks_per_state() {
    let s = setup().await;
    let (batch, ids) = s.submit(3).await;
    assert_eq!(s.cancel(ids[0]).await.status, StatusCode::OK);
    let answer = s
        .service
        .get(&format!("/v1/batches/{batch}"), Some(&s.token))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(
        answer.body,
        json!({"batch_id": batch, "total": 3, "waiting": 2, "dispatched": 0, "running": 0,
               "success": 0, "failed": 0, "cancelled": 1})
    );
}

#[tokio::test]
async fn another_identitys_batch_is_404() {
    let s = setup().await;
    let (batch, _) = s.submit(1).await;
    let (_, bob) = s.service.user("bob").await;
    let answer = s
        .service
        .get(&format!("/v1/batches/{batch}"), Some(&bob))
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
}

/// Functions and endpoints are shared by grant: refused before, accepted
/// after, refused again once revoked; only the owner manages grants; bad
/// principals are 4xx and change nothing.
#[tokio::test]
async fn functions_and_endpoints_are_shared_by_grant() {
    let s = setup().await;
    let (bob, bob_token) = s.service.user("bob").await;
    let (carol, carol_token) = s.service.user("carol").await;
    let (bob_endpoint, _) = s.service.endpoint(&bob_token, "bobs-laptop").await;
    let (carol_endpoint, _) = s.service.endpoint(&carol_token, "carols-laptop").await;
    let args = json!({"greeting": "hi", "name": "x"});
    let submit = |token: String, endpoint: EndpointId| {
        let body = json!({"function_id": s.function, "endpoint_id": endpoint, "args": args});
        let service = &s.service;
        async move { service.post_json("/v1/tasks", Some(&token), body).await }
    };
    let grants = |what: &str, id: String| format!("/v1/{what}/{id}/grants");
    let function_grants = grants("functions", s.function.to_string());
    let endpoint_grants = grants("endpoints", s.endpoint.to_string());

    // Not shared: alice's function on bob's own endpoint, and bob's
    // function... on alice's endpoint.
    let refused = submit(bob_token.clone(), bob_endpoint).await;
    let message = assert_error(&refused, StatusCode::FORBIDDEN, "forbidden");
    assert!(message.contains("not shared with you"), "{message}");

    // alice shares the function with bob.
    let shared = s
        .grant(
            &function_grants,
            &s.token,
            json!([format!("identity:{}", bob.id)]),
        )
        .await;
    assert_eq!(shared.status, StatusCode::OK, "{shared:?}");
    assert_eq!(shared.body, json!([format!("identity:{}", bob.id)]));
    let accepted = submit(bob_token.clone(), bob_endpoint).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{accepted:?}");
    assert_error(
        &submit(carol_token.clone(), carol_endpoint).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // ... but not her endpoint.
    assert_error(
        &submit(bob_token.clone(), s.endpoint).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let shared = s
        .grant(
            &endpoint_grants,
            &s.token,
            json!([format!("identity:{}", bob.id)]),
        )
        .await;
    assert_eq!(shared.status, StatusCode::OK, "{shared:?}");
    assert_eq!(
        submit(bob_token.clone(), s.endpoint).await.status,
        StatusCode::CREATED
    );

    // Only the owner manages grants or deletes the function.
    for path in [&function_grants, &endpoint_grants] {
        let answer = s
            .grant(path, &bob_token, json!([format!("identity:{}", carol.id)]))
            .await;
        assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
        assert_error(
            &s.service.get(path, Some(&bob_token)).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    let delete = s
        .service
        .delete(&format!("/v1/functions/{}", s.function), Some(&bob_token))
        .await;
    assert_error(&delete, StatusCode::FORBIDDEN, "forbidden");

    // Bad principals: malformed, unknown, public on an endpoint.
    for (path, principal, status) in [
        (&function_grants, json!("user:bob"), StatusCode::BAD_REQUEST),
        (
            &function_grants,
            json!("identity:00000000-0000-4000-8000-000000000000"),
            StatusCode::NOT_FOUND,
        ),
        (&endpoint_grants, json!("public"), StatusCode::BAD_REQUEST),
    ] {
        let answer = s.grant(path, &s.token, json!([principal])).await;
        assert_eq!(answer.status, status, "{principal}: {answer:?}");
    }
    let listed = s.service.get(&function_grants, Some(&s.token)).await;
    assert_eq!(
        listed.body,
        json!([format!("identity:{}", bob.id)]),
        "unchanged"
    );

    // Public: anyone with a token may run the function (on endpoints they may use).
    let public = s.grant(&function_grants, &s.token, json!(["public"])).await;
    assert_eq!(public.status, StatusCode::OK, "{public:?}");
    assert_eq!(
        submit(carol_token.clone(), carol_endpoint).await.status,
        StatusCode::CREATED
    );

    // Revoked: refused again at the next submission.
    for (path, principal) in [
        (&function_grants, format!("identity:{}", bob.id)),
        (&function_grants, "public".to_owned()),
        (&endpoint_grants, format!("identity:{}", bob.id)),
    ] {
        let answer = s
            .service
            .delete(&format!("{path}/{principal}"), Some(&s.token))
            .await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{answer:?}");
    }
    assert_error(
        &submit(bob_token.clone(), bob_endpoint).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &submit(carol_token, carol_endpoint).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let again = s
        .service
        .delete(
            &format!("{function_grants}/identity:{}", bob.id),
            Some(&s.token),
        )
        .await;
    assert_error(&again, StatusCode::NOT_FOUND, "not_found");
}
