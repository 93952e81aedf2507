//! The agent channel on a real socket: a fake agent speaks the protocol's
//! frames to the service over `ws://127.0.0.1:PORT/v1/agent/connect`, while
//! the test drives the REST API. Every scenario runs on SQLite with the
//! embedded queue and on PostgreSQL with RabbitMQ (`agent_channel_suite!`).

use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;
use lattice_protocol::compute::{FunctionSpec, SessionEvent, TaskResult, TaskState};
use lattice_protocol::frames::{
    AgentFrame, OutcomeStatus, ServiceFrame, TaskAssignment, TaskOutcome, TaskStarted,
};
use lattice_protocol::{framing, EndpointId, FunctionId, TaskId};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod common;

use common::{FakeAgent, Running, TestService};

/// Small, so a test can exceed it cheaply.
const MAX_RESULT_BYTES: usize = 1000;
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(600);

/// The service every scenario runs against.
async fn suite_service(backend: common::Backend) -> TestService {
    TestService::open(backend, |config| {
        config.max_result_bytes = MAX_RESULT_BYTES;
    })
    .await
}

/// The service on a socket, a user, a function `echo {n}` and an endpoint.
struct Scene<'a> {
    service: &'a TestService,
    running: Running,
    token: String,
    function: FunctionId,
    endpoint: EndpointId,
    secret: String,
}

async fn scene(service: &TestService) -> Scene<'_> {
    let running = service.serve().await;
    let (_, token) = service.user("alice").await;
    let function = service.shell_function(&token, "echo {n}").await;
    let (endpoint, secret) = service.endpoint(&token, "hpc").await;
    Scene {
        service,
        running,
        token,
        function,
        endpoint,
        secret,
    }
}

impl Scene<'_> {
    /// Submits `count` tasks (`n` = 0, 1, ...) in one batch.
    async fn submit(&self, count: usize) -> (String, Vec<TaskId>) {
        self.submit_with_retries(count, None).await
    }

    async fn submit_with_retries(
        &self,
        count: usize,
        max_retries: Option<u32>,
    ) -> (String, Vec<TaskId>) {
        let tasks = (0..count).map(|n| json!({ "n": n })).collect();
        self.service
            .submit_batch(
                &self.token,
                self.function,
                self.endpoint,
                tasks,
                max_retries,
            )
            .await
    }

    /// Submits `tasks` of the scene's function to `endpoint` in one batch.
    async fn submit_to(&self, endpoint: EndpointId, tasks: Vec<Value>) -> (String, Vec<TaskId>) {
        self.service
            .submit_batch(&self.token, self.function, endpoint, tasks, None)
            .await
    }

    /// Cancels task `id` as the scene's user.
    async fn cancel(&self, id: TaskId) -> common::Answer {
        self.service.cancel(&self.token, id).await
    }

    /// An agent of the scene's endpoint, welcomed.
    async fn agent(&self) -> FakeAgent {
        self.running
            .agent(self.endpoint, &self.secret, "node1")
            .await
    }

    /// Opens the session stream with the scene's token.
    async fn session(&self) -> common::SessionStream {
        self.running
            .session(Some(&self.token))
            .await
            .expect("open the session stream")
    }

    /// Submits 3 tasks, hands them to an agent and finishes the first:
    /// (batch, task ids, the agent, the assignments not finished yet).
    async fn three_with_one_finished(
        &self,
    ) -> (String, Vec<TaskId>, FakeAgent, Vec<TaskAssignment>) {
        let (batch, ids) = self.submit(3).await;
        let mut agent = self.agent().await;
        agent.credit(3).await;
        let mut tasks = agent.assignments(3).await;
        let rest = tasks.split_off(1);
        finish(&mut agent, &tasks).await;
        (batch, ids, agent, rest)
    }

    async fn state_of(&self, id: TaskId) -> TaskState {
        self.service.task(&self.token, id).await.state
    }
}

fn outcome(task_id: TaskId, attempt: u32, status: OutcomeStatus, stdout: &str) -> TaskOutcome {
    TaskOutcome {
        task_id,
        attempt,
        status,
        result: Some(TaskResult {
            stdout: stdout.into(),
            stderr: String::new(),
            returncode: Some(if status == OutcomeStatus::Success {
                0
            } else {
                1
            }),
            value: None,
            exception: None,
        }),
        error: (status == OutcomeStatus::Failed).then(|| "exit status 1".to_owned()),
        worker: Some("node1:4242".into()),
        started_at: Some(Utc::now()),
        finished_at: Utc::now(),
    }
}

/// Reports `tasks` finished successfully and waits for the acknowledgement.
async fn finish(agent: &mut FakeAgent, tasks: &[TaskAssignment]) {
    let results = tasks
        .iter()
        .map(|t| outcome(t.task_id, t.attempt, OutcomeStatus::Success, "ok\n"))
        .collect();
    agent.send(&AgentFrame::Results { results }).await;
    match agent.recv().await {
        ServiceFrame::ResultsAck { task_ids } => {
            assert_eq!(
                task_ids,
                tasks.iter().map(|t| t.task_id).collect::<Vec<_>>()
            )
        }
        other => panic!("expected a results ack, got {other:?}"),
    }
}

fn sorted(mut ids: Vec<TaskId>) -> Vec<TaskId> {
    ids.sort();
    ids
}

fn ids_of(tasks: &[TaskAssignment]) -> Vec<TaskId> {
    sorted(tasks.iter().map(|t| t.task_id).collect())
}

/// Asserts that the service ended the agent's session, sending nothing but
/// an optional `Error` frame first.
async fn assert_session_ended(agent: &mut FakeAgent) -> Option<String> {
    let frames = agent.closed().await;
    match frames.as_slice() {
        [] => None,
        [ServiceFrame::Error { message }] => Some(message.clone()),
        other => panic!("expected at most an error frame before the close, got {other:?}"),
    }
}

// ---- authentication and hello ----------------------------------------------

async fn missing_agent_secret_is_401_on_upgrade(service: &TestService) {
    let scene = scene(service).await;
    let refused = scene.running.agent_connect(None).await;
    assert_upgrade_refused(refused, 401);
}

async fn unknown_agent_secret_is_401_on_upgrade(service: &TestService) {
    let scene = scene(service).await;
    let refused = scene.running.agent_connect(Some("lat_ep_wrong")).await;
    assert_upgrade_refused(refused, 401);
}

async fn agent_secret_stops_working_when_the_endpoint_is_re_registered(service: &TestService) {
    let scene = scene(service).await;
    let (_, new_secret) = service.endpoint(&scene.token, "hpc").await;
    let refused = scene.running.agent_connect(Some(&scene.secret)).await;
    assert_upgrade_refused(refused, 401);
    scene
        .running
        .agent(scene.endpoint, &new_secret, "node1")
        .await;
}

#[track_caller]
fn assert_upgrade_refused(
    result: Result<FakeAgent, tokio_tungstenite::tungstenite::Error>,
    status: u16,
) {
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), status, "{response:?}")
        }
        Err(other) => panic!("expected HTTP {status}, got {other}"),
        Ok(_) => panic!("expected HTTP {status}, the upgrade succeeded"),
    }
}

async fn hello_is_welcomed_and_the_endpoint_shows_online_with_its_hostname(service: &TestService) {
    let scene = scene(service).await;
    let _agent = scene.agent().await;
    let info = service
        .endpoint_until_status(&scene.token, scene.endpoint, "online")
        .await;
    assert_eq!(info["hostname"], "node1", "{info}");
    assert_eq!(info["agent_version"], "0.1.0-test", "{info}");
}

async fn endpoint_shows_offline_after_the_agent_leaves(service: &TestService) {
    let scene = scene(service).await;
    let agent = scene.agent().await;
    service
        .endpoint_until_status(&scene.token, scene.endpoint, "online")
        .await;
    agent.close().await;
    service
        .endpoint_until_status(&scene.token, scene.endpoint, "offline")
        .await;
}

async fn hello_naming_another_endpoint_gets_an_error_frame_and_a_close(service: &TestService) {
    let scene = scene(service).await;
    let mut agent = scene
        .running
        .agent_connect(Some(&scene.secret))
        .await
        .expect("upgrade");
    let other = EndpointId::new();
    agent
        .send(&AgentFrame::Hello {
            endpoint_id: other,
            agent_version: "0.1.0-test".into(),
            hostname: "node1".into(),
            multi_user: false,
        })
        .await;
    let message = assert_session_ended(&mut agent)
        .await
        .expect("an error frame saying why");
    assert!(message.contains(&other.to_string()), "{message}");
}

async fn second_hello_is_a_protocol_error(service: &TestService) {
    let scene = scene(service).await;
    let mut agent = scene.agent().await;
    agent
        .send(&AgentFrame::Hello {
            endpoint_id: scene.endpoint,
            agent_version: "0.1.0-test".into(),
            hostname: "node1".into(),
            multi_user: false,
        })
        .await;
    let message = assert_session_ended(&mut agent).await;
    assert!(
        message.as_deref().is_none_or(|m| m.contains("hello")),
        "{message:?}"
    );
}

async fn heartbeat_shows_the_endpoint_online_after_another_of_its_sessions_ended(
    service: &TestService,
) {
    let scene = scene(service).await;
    let old = scene.agent().await;
    let mut new = scene.agent().await;
    // The old connection ends after the new one started (an agent that
    // reconnected before the service noticed the old connection was gone).
    old.close().await;
    service
        .endpoint_until_status(&scene.token, scene.endpoint, "offline")
        .await;
    new.send(&AgentFrame::Heartbeat {
        workers: 2,
        idle_slots: 1,
        queue_depth: 0,
        blocks: Vec::new(),
        provider_error: None,
        provider: Some("slurm".into()),
        children: Vec::new(),
    })
    .await;
    let info = service
        .endpoint_until_status(&scene.token, scene.endpoint, "online")
        .await;
    assert_eq!(info["workers"], 2, "{info}");
    assert_eq!(info["provider"], "slurm", "{info}");
}

// ---- delivery within credits -------------------------------------------------

async fn tasks_queued_while_offline_are_delivered_only_within_credits(service: &TestService) {
    let scene = scene(service).await;
    let (_, ids) = scene.submit(5).await;
    let mut agent = scene.agent().await;
    agent.assert_quiet(QUIET).await;
    agent.credit(2).await;
    let first = agent.assignments(2).await;
    agent.assert_quiet(QUIET).await;
    agent.credit(3).await;
    let rest = agent.assignments(3).await;
    agent.assert_quiet(QUIET).await;
    let mut all = ids_of(&first);
    all.extend(ids_of(&rest));
    assert_eq!(sorted(all), sorted(ids));
    let info = service.endpoint_info(&scene.token, scene.endpoint).await;
    assert_eq!(info["waiting_tasks"], 0, "{info}");
}

async fn assignment_carries_spec_args_and_the_first_attempt(service: &TestService) {
    let scene = scene(service).await;
    let (_, ids) = scene.submit(1).await;
    let mut agent = scene.agent().await;
    agent.credit(1).await;
    let task = agent.assignments(1).await.remove(0);
    assert_eq!(task.task_id, ids[0]);
    assert_eq!(task.function_id, scene.function);
    assert_eq!(
        task.spec,
        FunctionSpec::Shell {
            command: "echo {n}".into()
        }
    );
    assert_eq!(task.args.get("n"), Some(&json!(0)));
    assert_eq!(task.attempt, 1);
    assert_eq!(task.max_retries, 2);
    assert_eq!(scene.state_of(ids[0]).await, TaskState::Dispatched);
}

// ---- results -------------------------------------------------------------------

async fn started_then_results_make_a_task_running_then_success(service: &TestService) {
    let scene = scene(service).await;
    let (_, ids) = scene.submit(1).await;
    let mut agent = scene.agent().await;
    agent.credit(1).await;
    let task = agent.assignments(1).await.remove(0);
    let started_at = Utc::now();
    agent
        .send(&AgentFrame::Started {
            tasks: vec![TaskStarted {
                task_id: task.task_id,
                worker: "node1:4242".into(),
                at: started_at,
            }],
        })
        .await;
    let running = service
        .task_in_state(&scene.token, ids[0], TaskState::Running)
        .await;
    assert_eq!(running.worker.as_deref(), Some("node1:4242"));
    assert!(running.started_at.is_some(), "{running:?}");

    finish(&mut agent, &[task]).await;
    let done = service.task(&scene.token, ids[0]).await;
    assert_eq!(done.state, TaskState::Success, "{done:?}");
    assert_eq!(
        done.result.as_ref().map(|r| r.stdout.as_str()),
        Some("ok\n")
    );
    assert_eq!(done.worker.as_deref(), Some("node1:4242"));
    assert_eq!(done.attempts, 1);
    assert!(done.dispatched_at.is_some(), "{done:?}");
    assert_eq!(
        done.started_at.map(|t| t.timestamp_millis()),
        Some(started_at.timestamp_millis())
    );
    assert!(done.finished_at.is_some(), "{done:?}");
    assert_eq!(done.error, None);
}

async fn duplicate_result_is_dropped_and_counted(service: &TestService) {
    let scene = scene(service).await;
    let (_, ids) = scene.submit(1).await;
    let mut agent = scene.agent().await;
    agent.credit(1).await;
    let task = agent.assignments(1).await.remove(0);
    finish(&mut agent, std::slice::from_ref(&task)).await;
    agent
        .send(&AgentFrame::Results {
            results: vec![outcome(task.task_id, 1, OutcomeStatus::Failed, "second")],
        })
        .await;
    match agent.recv().await {
        ServiceFrame::ResultsAck { task_ids } => assert_eq!(task_ids, vec![task.task_id]),
        other => panic!("expected a results ack, got {other:?}"),
    }
    let done = service.task(&scene.token, ids[0]).await;
    assert_eq!(done.state, TaskState::Success, "{done:?}");
    assert_eq!(
        done.result.as_ref().map(|r| r.stdout.as_str()),
        Some("ok\n")
    );
    assert_eq!(done.duplicate_results, 1);
}

async fn result_over_max_result_bytes_fails_the_task(service: &TestService) {
    let scene = scene(service).await;
    let (_, ids) = scene.submit(1).await;
    let mut agent = scene.agent().await;
    agent.credit(1).await;
    let task = agent.assignments(1).await.remove(0);
    let big = "x".repeat(MAX_RESULT_BYTES + 1);
    agent
        .send(&AgentFrame::Results {
            results: vec![outcome(task.task_id, 1, OutcomeStatus::Success, &big)],
        })
        .await;
    assert!(matches!(
        agent.recv().await,
        ServiceFrame::ResultsAck { .. }
    ));
    let done = service.task(&scene.token, ids[0]).await;
    assert_eq!(done.state, TaskState::Failed, "{done:?}");
    let error = done.error.unwrap_or_default();
    assert!(error.starts_with("result too large"), "{error}");
    assert_eq!(done.result, None);
}

async fn result_for_another_endpoints_task_is_ignored(service: &TestService) {
    let scene = scene(service).await;
    let (other_endpoint, _) = service.endpoint(&scene.token, "other").await;
    let (_, others) = scene.submit_to(other_endpoint, vec![json!({"n": 1})]).await;
    let mut agent = scene.agent().await;
    agent
        .send(&AgentFrame::Results {
            results: vec![outcome(others[0], 1, OutcomeStatus::Success, "forged")],
        })
        .await;
    assert!(matches!(
        agent.recv().await,
        ServiceFrame::ResultsAck { .. }
    ));
    let task = service.task(&scene.token, others[0]).await;
    assert_eq!(task.state, TaskState::Waiting, "{task:?}");
    assert_eq!(task.result, None);
}

async fn batch_stream_yields_every_task_then_done(service: &TestService) {
    let scene = scene(service).await;
    // One final before the stream opens, the others while it is open.
    let (batch, ids, mut agent, rest) = scene.three_with_one_finished().await;
    let stream = scene.running.batch_stream(&scene.token, &batch).await;
    finish(&mut agent, &rest).await;
    let (streamed, status) = stream.until_done().await;
    assert_eq!(sorted(streamed.iter().map(|t| t.id).collect()), sorted(ids));
    assert!(streamed.iter().all(|t| t.state == TaskState::Success));
    assert_eq!(status["total"], 3, "{status}");
    assert_eq!(status["success"], 3, "{status}");
}

// ---- the session stream ---------------------------------------------------------

/// The `submitted` answer to request `request_id`: (batch id, task ids).
fn submitted(event: SessionEvent, request_id: u64) -> (String, Vec<TaskId>) {
    match event {
        SessionEvent::Submitted {
            request_id: answered,
            batch_id,
            task_ids,
        } => {
            assert_eq!(answered, request_id);
            (batch_id.to_string(), task_ids)
        }
        other => panic!("expected submitted {request_id}, got {other:?}"),
    }
}

/// The `error` event: (request id, batch id, code, message).
fn session_error(event: SessionEvent) -> (Option<u64>, Option<String>, String, String) {
    match event {
        SessionEvent::Error {
            request_id,
            batch_id,
            code,
            message,
        } => (
            request_id,
            batch_id.map(|b| b.to_string()),
            serde_json::to_value(code)
                .expect("code")
                .as_str()
                .expect("a code")
                .to_owned(),
            message,
        ),
        other => panic!("expected an error event, got {other:?}"),
    }
}

async fn session_stream_submits_batches_and_streams_their_results(service: &TestService) {
    let scene = scene(service).await;
    let mut session = scene.session().await;
    let batch = |tasks: serde_json::Value| json!({"function_id": scene.function, "endpoint_id": scene.endpoint, "tasks": tasks});
    session
        .send_json(
            json!({"type": "submit", "request_id": 1, "batch": batch(json!([{"n": 1}, {"n": 2}]))}),
        )
        .await;
    let (first, first_ids) = submitted(session.next().await, 1);
    session
        .send_json(json!({"type": "submit", "request_id": 2, "batch": batch(json!([{"n": 3}]))}))
        .await;
    let (second, second_ids) = submitted(session.next().await, 2);
    assert_eq!((first_ids.len(), second_ids.len()), (2, 1));
    assert_ne!(first, second);

    let mut agent = scene.agent().await;
    agent.credit(3).await;
    let tasks = agent.assignments(3).await;
    finish(&mut agent, &tasks).await;
    let (streamed, statuses) = session.until_done(&[&first, &second]).await;
    let mut expected = first_ids.clone();
    expected.extend(&second_ids);
    assert_eq!(
        sorted(streamed.iter().map(|t| t.id).collect()),
        sorted(expected)
    );
    assert!(
        streamed.iter().all(|t| t.state == TaskState::Success),
        "{streamed:?}"
    );
    assert!(
        statuses.iter().all(|s| s["success"] == s["total"]),
        "{statuses:?}"
    );

    // The connection stays open for more work.
    session
        .send_json(json!({"type": "submit", "request_id": 3, "batch": batch(json!([{"n": 4}]))}))
        .await;
    let (third, _) = submitted(session.next().await, 3);
    agent.credit(1).await;
    let tasks = agent.assignments(1).await;
    finish(&mut agent, &tasks).await;
    let (streamed, _) = session.until_done(&[&third]).await;
    assert_eq!(streamed.len(), 1);
}

async fn session_stream_follows_a_batch_submitted_earlier(service: &TestService) {
    let scene = scene(service).await;
    // One final before the subscription, the others after it.
    let (batch, ids, mut agent, rest) = scene.three_with_one_finished().await;
    let mut session = scene.session().await;
    session
        .send_json(json!({"type": "subscribe", "batch_id": batch}))
        .await;
    finish(&mut agent, &rest).await;
    let (streamed, statuses) = session.until_done(&[&batch]).await;
    assert_eq!(sorted(streamed.iter().map(|t| t.id).collect()), sorted(ids));
    assert_eq!(statuses[0]["total"], 3, "{statuses:?}");
}

async fn session_stream_answers_bad_requests_with_errors_and_stays_open(service: &TestService) {
    let scene = scene(service).await;
    let (_, mallory) = service.user("mallory").await;
    let mut session = scene
        .running
        .session(Some(&mallory))
        .await
        .expect("open the session stream");

    session
        .send_message(Message::Text("{not json".into()))
        .await;
    let (request_id, _, code, message) = session_error(session.next().await);
    assert_eq!((request_id, code.as_str()), (None, "bad_request"));
    assert!(message.contains("invalid session request"), "{message}");

    session
        .send_json(
            json!({"type": "submit", "request_id": 7, "batch": {"function_id": scene.function}}),
        )
        .await;
    let (request_id, _, code, message) = session_error(session.next().await);
    assert_eq!((request_id, code.as_str()), (Some(7), "bad_request"));
    assert!(
        message.contains("endpoint_id"),
        "names the missing field: {message}"
    );

    session
        .send_json(json!({"type": "submit", "request_id": 8, "batch": {
            "function_id": scene.function, "endpoint_id": scene.endpoint, "tasks": [{"n": 1}]}}))
        .await;
    let (request_id, _, code, _) = session_error(session.next().await);
    assert_eq!(request_id, Some(8));
    assert!(
        code == "forbidden" || code == "not_found",
        "alice's function and endpoint: {code}"
    );

    let (batch, _) = scene.submit(1).await;
    session
        .send_json(json!({"type": "subscribe", "batch_id": batch}))
        .await;
    let (_, refused_batch, code, _) = session_error(session.next().await);
    assert_eq!(
        (refused_batch.as_deref(), code.as_str()),
        (Some(batch.as_str()), "not_found")
    );

    session
        .send_message(Message::Binary(vec![1, 2, 3].into()))
        .await;
    let (_, _, code, message) = session_error(session.next().await);
    assert_eq!(code, "bad_request");
    assert!(message.contains("JSON text"), "{message}");

    // Still open: mallory's own work goes through.
    let function = service.shell_function(&mallory, "echo {n}").await;
    let (endpoint, _) = service.endpoint(&mallory, "mine").await;
    session
        .send_json(json!({"type": "submit", "request_id": 9, "batch": {
            "function_id": function, "endpoint_id": endpoint, "tasks": [{"n": 1}]}}))
        .await;
    submitted(session.next().await, 9);
}

async fn session_stream_checks_its_token_on_every_submission(service: &TestService) {
    let scene = scene(service).await;
    let refused = scene.running.session(None).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == StatusCode::UNAUTHORIZED),
        "no token: {:?}",
        refused.as_ref().map(|_| ())
    );
    let mut session = scene.session().await;
    let revoked = service
        .post_json("/v1/auth/revoke", None, json!({ "token": scene.token }))
        .await;
    assert!(revoked.status.is_success(), "{revoked:?}");
    session
        .send_json(json!({"type": "submit", "request_id": 1, "batch": {
            "function_id": scene.function, "endpoint_id": scene.endpoint, "tasks": [{"n": 1}]}}))
        .await;
    let (request_id, _, code, message) = session_error(session.next().await);
    assert_eq!((request_id, code.as_str()), (Some(1), "unauthorized"));
    assert!(message.contains("revoked"), "{message}");
}

// ---- lost agents -----------------------------------------------------------------

async fn tasks_in_flight_when_the_agent_leaves_are_redelivered_with_attempt_2(
    service: &TestService,
) {
    let scene = scene(service).await;
    let (_, ids) = scene.submit(2).await;
    let mut agent = scene.agent().await;
    agent.credit(2).await;
    let first = agent.assignments(2).await;
    assert!(first.iter().all(|t| t.attempt == 1), "{first:?}");
    agent.close().await;

    let mut again = scene.agent().await;
    again.credit(2).await;
    let second = again.assignments(2).await;
    assert_eq!(ids_of(&second), sorted(ids.clone()));
    assert!(second.iter().all(|t| t.attempt == 2), "{second:?}");
    finish(&mut again, &second).await;
    for id in ids {
        assert_eq!(scene.state_of(id).await, TaskState::Success);
    }
}

async fn task_fails_with_worker_lost_after_max_retries_plus_one_lost_deliveries(
    service: &TestService,
) {
    let scene = scene(service).await;
    let (_, ids) = scene.submit_with_retries(1, Some(1)).await;
    for attempt in 1..=2 {
        let mut agent = scene.agent().await;
        agent.credit(1).await;
        let task = agent.assignments(1).await.remove(0);
        assert_eq!(task.attempt, attempt);
        agent.close().await;
    }
    let mut agent = scene.agent().await;
    agent.credit(1).await;
    let failed = service
        .task_in_state(&scene.token, ids[0], TaskState::Failed)
        .await;
    let error = failed.error.unwrap_or_default();
    assert!(error.starts_with("worker lost"), "{error}");
    agent.assert_quiet(QUIET).await;
}

// ---- protocol errors ---------------------------------------------------------------

/// Another endpoint's agent still gets its tasks, and health is 200.
async fn assert_service_carries_on(scene: &Scene<'_>) {
    assert_eq!(scene.running.health().await, 200);
    let (endpoint, secret) = scene.service.endpoint(&scene.token, "second").await;
    let (_, ids) = scene.submit_to(endpoint, vec![json!({"n": 7})]).await;
    let mut agent = scene.running.agent(endpoint, &secret, "node2").await;
    agent.credit(1).await;
    assert_eq!(ids_of(&agent.assignments(1).await), ids);
}

/// Sends `message` as `agent`: the session ends and the service carries on.
async fn assert_frame_ends_the_session(scene: &Scene<'_>, agent: &mut FakeAgent, message: Message) {
    agent.send_message(message).await;
    assert_session_ended(agent).await;
    assert_service_carries_on(scene).await;
}

async fn garbage_frame_ends_the_session_and_the_service_carries_on(service: &TestService) {
    let scene = scene(service).await;
    let mut agent = scene.agent().await;
    let garbage = Message::Binary(b"\xff\x00garbage".to_vec().into());
    assert_frame_ends_the_session(&scene, &mut agent, garbage).await;
}

async fn truncated_frame_ends_the_session_and_the_service_carries_on(service: &TestService) {
    let scene = scene(service).await;
    let mut agent = scene.agent().await;
    let bytes = framing::encode(&AgentFrame::Heartbeat {
        workers: 1,
        idle_slots: 1,
        queue_depth: 0,
        blocks: Vec::new(),
        provider_error: None,
        provider: None,
        children: Vec::new(),
    })
    .unwrap();
    let truncated = Message::Binary(bytes[..bytes.len() - 3].to_vec().into());
    assert_frame_ends_the_session(&scene, &mut agent, truncated).await;
}

async fn garbage_before_hello_ends_the_session(service: &TestService) {
    let scene = scene(service).await;
    let mut agent = scene
        .running
        .agent_connect(Some(&scene.secret))
        .await
        .expect("upgrade");
    let garbage = Message::Binary(b"\xff\x00garbage".to_vec().into());
    assert_frame_ends_the_session(&scene, &mut agent, garbage).await;
}

async fn text_frame_is_a_protocol_error(service: &TestService) {
    let scene = scene(service).await;
    let mut agent = scene.agent().await;
    agent
        .send_message(Message::Text(r#"{"type":"credit","credits":1}"#.into()))
        .await;
    let message = assert_session_ended(&mut agent).await;
    assert!(
        message.as_deref().is_none_or(|m| m.contains("text")),
        "{message:?}"
    );
}

// ---- cancellation -----------------------------------------------------------------

async fn cancelling_a_dispatched_task_sends_cancel_to_its_agent(service: &TestService) {
    let scene = scene(service).await;
    let (_, ids) = scene.submit(1).await;
    let mut agent = scene.agent().await;
    agent.credit(1).await;
    agent.assignments(1).await;
    let answer = scene.cancel(ids[0]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["state"], "cancelled");
    match agent.recv().await {
        ServiceFrame::Cancel { task_ids } => assert_eq!(task_ids, ids),
        other => panic!("expected cancel, got {other:?}"),
    }
}

async fn cancelled_waiting_task_is_not_delivered_and_costs_no_credit(service: &TestService) {
    let scene = scene(service).await;
    let (_, ids) = scene.submit(2).await;
    let answer = scene.cancel(ids[0]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let mut agent = scene.agent().await;
    agent.credit(1).await;
    assert_eq!(ids_of(&agent.assignments(1).await), vec![ids[1]]);
    agent.assert_quiet(QUIET).await;
    assert_eq!(scene.state_of(ids[0]).await, TaskState::Cancelled);
}

// ---- the suite, per back end -----------------------------------------------------

macro_rules! agent_channel_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let service = super::suite_service(crate::common::Backend::Sqlite).await;
                    super::$name(&service).await;
                    service.cleanup().await;
                }
            )*
        }
        mod postgres_rabbitmq {
            $(
                #[tokio::test]
                async fn $name() {
                    let backend = crate::common::Backend::PostgresRabbitmq;
                    if !backend.available(concat!("agent_channel::postgres_rabbitmq::", stringify!($name))) {
                        return;
                    }
                    let service = super::suite_service(backend).await;
                    super::$name(&service).await;
                    service.cleanup().await;
                }
            )*
        }
    };
}

/// A multi-user endpoint takes tasks from other identities; each assignment
/// names its submitter and carries the submitted user config. A plain
/// endpoint refuses other identities and its agent gets neither.
async fn multi_user_endpoint_takes_any_identity_and_names_the_submitter(service: &TestService) {
    let scene = scene(service).await;
    let (bob, bob_token) = service.user("bob").await;
    let bob_function = service.shell_function(&bob_token, "id -u").await;
    let submit = |token: String, function: FunctionId, config: serde_json::Value| {
        let endpoint = scene.endpoint;
        async move {
            service
                .post_json(
                    "/v1/batches",
                    Some(&token),
                    json!({
                        "function_id": function,
                        "endpoint_id": endpoint,
                        "tasks": [{}],
                        "user_endpoint_config": config,
                    }),
                )
                .await
        }
    };
    // Before its agent announces multi-user mode, the endpoint is alice's alone.
    let refused = submit(bob_token.clone(), bob_function, json!(null)).await;
    common::assert_error(&refused, StatusCode::FORBIDDEN, "forbidden");

    let mut agent = scene
        .running
        .agent_connect(Some(&scene.secret))
        .await
        .unwrap();
    agent.hello_as(scene.endpoint, "login1", true).await;
    let info = service.endpoint_info(&bob_token, scene.endpoint).await;
    assert_eq!(info["multi_user"], true, "{info}");

    // Bad user configs are refused before anything is queued.
    let not_object = submit(bob_token.clone(), bob_function, json!(["p1"])).await;
    let message = common::assert_error(&not_object, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("user_endpoint_config"), "{message}");
    let huge = submit(
        bob_token.clone(),
        bob_function,
        json!({ "account": "x".repeat(20_000) }),
    )
    .await;
    common::assert_error(&huge, StatusCode::BAD_REQUEST, "bad_request");

    let accepted = submit(bob_token.clone(), bob_function, json!({"account": "p42"})).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{:?}", accepted.body);
    agent.credit(4).await;
    let tasks = agent.assignments(1).await;
    let submitter = tasks[0].submitter.clone().expect("the submitter");
    assert_eq!(submitter.identity_id, bob.id);
    assert_eq!(submitter.username, "bob");
    assert_eq!(tasks[0].user_config, Some(json!({"account": "p42"})));
    let task_id: TaskId = accepted.body["task_ids"][0]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a task id");
    let shown = service.task(&bob_token, task_id).await;
    assert_eq!(shown.user_endpoint_config, Some(json!({"account": "p42"})));
    // The task is bob's: alice (the endpoint's owner) does not see it.
    let peek = service
        .get(&format!("/v1/tasks/{task_id}"), Some(&scene.token))
        .await;
    assert_eq!(peek.status, StatusCode::FORBIDDEN);

    // The children the agent reports are shown to the owner only.
    agent
        .send(&AgentFrame::Heartbeat {
            workers: 1,
            idle_slots: 0,
            queue_depth: 0,
            blocks: Vec::new(),
            provider_error: None,
            provider: None,
            children: vec![lattice_protocol::compute::ChildReport {
                local_user: "bob".into(),
                variables: r#"{"account":"p42"}"#.into(),
                pid: Some(777),
                tasks: 1,
                workers: 1,
                blocks: Vec::new(),
                provider_error: None,
            }],
        })
        .await;
    let owner_view = service
        .endpoint_until(&scene.token, scene.endpoint, |e| {
            e["children"].as_array().is_some_and(|c| !c.is_empty())
        })
        .await;
    assert_eq!(owner_view["children"][0]["local_user"], "bob");
    assert_eq!(owner_view["children"][0]["pid"], 777);
    let other_view = service.endpoint_info(&bob_token, scene.endpoint).await;
    assert_eq!(other_view["children"], json!([]), "{other_view}");

    // Once alice shares the endpoint with someone, only grantees submit:
    // carol is refused before anything is queued, bob (a grantee) is not.
    let (_, carol_token) = service.user("carol").await;
    let carol_function = service.shell_function(&carol_token, "id -u").await;
    let grants = format!("/v1/endpoints/{}/grants", scene.endpoint);
    let shared = service
        .post_json(
            &grants,
            Some(&scene.token),
            json!({"principals": [format!("identity:{}", bob.id)]}),
        )
        .await;
    assert_eq!(shared.status, StatusCode::OK, "{shared:?}");
    let refused = submit(carol_token, carol_function, json!(null)).await;
    let message = common::assert_error(&refused, StatusCode::FORBIDDEN, "forbidden");
    assert!(message.contains("shared with"), "{message}");
    let accepted = submit(bob_token, bob_function, json!({"account": "p42"})).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{:?}", accepted.body);
    agent.close().await;
}

async fn plain_agent_gets_no_submitter(service: &TestService) {
    let scene = scene(service).await;
    let mut agent = scene.agent().await;
    scene.submit(1).await;
    agent.credit(1).await;
    let tasks = agent.assignments(1).await;
    assert_eq!(tasks[0].submitter, None);
    assert_eq!(tasks[0].user_config, None);
    agent.close().await;
}

agent_channel_suite!(
    missing_agent_secret_is_401_on_upgrade,
    unknown_agent_secret_is_401_on_upgrade,
    agent_secret_stops_working_when_the_endpoint_is_re_registered,
    hello_is_welcomed_and_the_endpoint_shows_online_with_its_hostname,
    endpoint_shows_offline_after_the_agent_leaves,
    hello_naming_another_endpoint_gets_an_error_frame_and_a_close,
    second_hello_is_a_protocol_error,
    heartbeat_shows_the_endpoint_online_after_another_of_its_sessions_ended,
    tasks_queued_while_offline_are_delivered_only_within_credits,
    assignment_carries_spec_args_and_the_first_attempt,
    started_then_results_make_a_task_running_then_success,
    duplicate_result_is_dropped_and_counted,
    result_over_max_result_bytes_fails_the_task,
    result_for_another_endpoints_task_is_ignored,
    batch_stream_yields_every_task_then_done,
    session_stream_submits_batches_and_streams_their_results,
    session_stream_follows_a_batch_submitted_earlier,
    session_stream_answers_bad_requests_with_errors_and_stays_open,
    session_stream_checks_its_token_on_every_submission,
    tasks_in_flight_when_the_agent_leaves_are_redelivered_with_attempt_2,
    task_fails_with_worker_lost_after_max_retries_plus_one_lost_deliveries,
    garbage_frame_ends_the_session_and_the_service_carries_on,
    truncated_frame_ends_the_session_and_the_service_carries_on,
    garbage_before_hello_ends_the_session,
    text_frame_is_a_protocol_error,
    cancelling_a_dispatched_task_sends_cancel_to_its_agent,
    cancelled_waiting_task_is_not_delivered_and_costs_no_credit,
    multi_user_endpoint_takes_any_identity_and_names_the_submitter,
    plain_agent_gets_no_submitter,
);
