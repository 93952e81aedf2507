//! The agent against a mock service that speaks the real frames over a real
//! WebSocket, with in-process workers on the real dispatcher.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use lattice_protocol::frames::{AgentFrame, OutcomeStatus, ServiceFrame, TaskAssignment};
use lattice_protocol::framing;
use lattice_protocol::EndpointId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::*;
use crate::channel::BackoffPolicy;
use crate::credits::PREFETCH_INITIAL;
use crate::dispatcher::tests::shell_task;
use crate::provider::WorkerLaunch;

const SECRET: &str = "lat_agent_test_secret";

struct MockService {
    listener: TcpListener,
}

struct MockConn {
    ws: WebSocketStream<TcpStream>,
}

impl MockService {
    async fn start() -> Self {
        Self {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.listener.local_addr().unwrap())
    }

    /// Accepts the agent's next connection, checks its path and bearer
    /// token, and answers its Hello with a Welcome.
    async fn accept(&self, endpoint_id: EndpointId) -> MockConn {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(10), self.listener.accept())
            .await
            .expect("the agent connects within 10 s")
            .unwrap();
        let (auth_tx, auth_rx) = oneshot::channel();
        // The callback's signature is tungstenite's.
        #[allow(clippy::result_large_err)]
        let ws =
            tokio_tungstenite::accept_hdr_async(stream, |request: &Request, response: Response| {
                let auth = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let _ = auth_tx.send((request.uri().path().to_owned(), auth));
                Ok(response)
            })
            .await
            .unwrap();
        let (path, auth) = auth_rx.await.unwrap();
        assert_eq!(path, "/v1/agent/connect");
        assert_eq!(auth.as_deref(), Some(format!("Bearer {SECRET}").as_str()));
        let mut conn = MockConn { ws };
        match conn.recv().await {
            AgentFrame::Hello {
                endpoint_id: id,
                agent_version,
                hostname,
                multi_user,
            } => {
                assert!(
                    !multi_user,
                    "a plain agent does not announce multi-user mode"
                );
                assert_eq!(id, endpoint_id);
                assert_eq!(agent_version, lattice_protocol::VERSION);
                assert!(!hostname.is_empty());
            }
            other => panic!("expected Hello first, got {other:?}"),
        }
        conn.send(ServiceFrame::Welcome { endpoint_id }).await;
        conn
    }
}

impl MockConn {
    async fn recv(&mut self) -> AgentFrame {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a frame within 10 s")
                .expect("connection open")
                .unwrap();
            if let Message::Binary(bytes) = message {
                return framing::decode(&bytes).unwrap();
            }
        }
    }

    /// (idle slots, queue depth, workers) of the next heartbeat.
    async fn next_heartbeat(&mut self) -> (u32, u32, u32) {
        loop {
            if let AgentFrame::Heartbeat {
                idle_slots,
                queue_depth,
                workers,
                ..
            } = self.recv().await
            {
                return (idle_slots, queue_depth, workers);
            }
        }
    }

    /// The next frame that is not a heartbeat.
    async fn recv_work(&mut self) -> AgentFrame {
        loop {
            match self.recv().await {
                AgentFrame::Heartbeat { .. } => continue,
                frame => return frame,
            }
        }
    }

    /// Asserts the next frame that is not a heartbeat grants `credits`.
    async fn expect_credit(&mut self, credits: u32) {
        assert_eq!(self.recv_work().await, AgentFrame::Credit { credits });
    }

    /// Frames (heartbeats excluded) up to and including the first results.
    async fn frames_until_results(&mut self) -> Vec<AgentFrame> {
        let mut frames = Vec::new();
        while results_of(&frames).is_empty() {
            frames.push(self.recv_work().await);
        }
        frames
    }

    /// Frames (heartbeats excluded) arriving within `window`.
    async fn collect_for(&mut self, window: Duration) -> Vec<AgentFrame> {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            if let Message::Binary(bytes) = message {
                match framing::decode::<AgentFrame>(&bytes).unwrap() {
                    AgentFrame::Heartbeat { .. } => {}
                    frame => frames.push(frame),
                }
            }
        }
        frames
    }

    async fn send(&mut self, frame: ServiceFrame) {
        let bytes = framing::encode(&frame).unwrap();
        self.ws.send(Message::Binary(bytes.into())).await.unwrap();
    }

    async fn send_tasks(&mut self, tasks: &[TaskAssignment]) {
        self.send(ServiceFrame::Tasks {
            tasks: tasks.to_vec(),
        })
        .await;
    }
}

struct TestAgent {
    endpoint_id: EndpointId,
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), AgentError>>,
    _state: tempfile::TempDir,
}

impl TestAgent {
    fn start(service: &MockService, workers: u32) -> Self {
        Self::start_with(service, workers, |_| {})
    }

    fn start_with(
        service: &MockService,
        workers: u32,
        adjust: impl FnOnce(&mut AgentConfig),
    ) -> Self {
        let state = tempfile::tempdir().unwrap();
        let endpoint_id = EndpointId::new();
        let mut config = AgentConfig::new(
            Credentials::Preset(EndpointCredential {
                endpoint_id,
                agent_secret: SECRET.to_owned(),
                service_url: service.url(),
            }),
            state.path(),
        );
        config.workers = workers;
        config.launch = WorkerLaunch::InProcess;
        config.shutdown_grace = Duration::from_secs(3);
        config.backoff = BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
        };
        adjust(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(run_agent(config, async move {
            let _ = stopped.await;
        }));
        Self {
            endpoint_id,
            stop,
            handle,
            _state: state,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("the agent stops within 10 s")
            .unwrap()
            .unwrap();
    }
}

fn results_of(frames: &[AgentFrame]) -> Vec<lattice_protocol::frames::TaskOutcome> {
    frames
        .iter()
        .filter_map(|f| match f {
            AgentFrame::Results { results } => Some(results.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn credits_of(frames: &[AgentFrame]) -> u32 {
    frames
        .iter()
        .map(|f| match f {
            AgentFrame::Credit { credits } => *credits,
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn runs_a_task_end_to_end_with_credits_and_cancel() {
    let service = MockService::start().await;
    let agent = TestAgent::start(&service, 1);
    let mut conn = service.accept(agent.endpoint_id).await;

    // 1 slot x PREFETCH_INITIAL.
    conn.expect_credit(PREFETCH_INITIAL).await;

    let mut task = shell_task("echo {greeting}", 0);
    task.args
        .insert("greeting".into(), serde_json::json!("hello; id"));
    conn.send_tasks(std::slice::from_ref(&task)).await;

    let mut frames = conn.frames_until_results().await;
    // The start is reported: in a Started frame, or, when the task started
    // and finished within one flush, only by the result's start time.
    let result = &results_of(&frames)[0];
    assert!(
        result.started_at.is_some()
            && (frames.iter().any(
                |f| matches!(f, AgentFrame::Started { tasks } if tasks[0].task_id == task.task_id)
            ) || !frames
                .iter()
                .any(|f| matches!(f, AgentFrame::Started { .. }))),
        "{frames:?}"
    );
    assert_eq!(result.task_id, task.task_id);
    assert_eq!(result.status, OutcomeStatus::Success, "{result:?}");
    assert_eq!(result.result.as_ref().unwrap().stdout, "hello; id\n");
    assert!(result.worker.as_deref().unwrap().contains(':'));
    conn.send(ServiceFrame::ResultsAck {
        task_ids: vec![task.task_id],
    })
    .await;
    // The finished task's credit comes back (with more: the window has
    // adapted to the task's short run time).
    // Waited for as a condition: under load the grant may take longer
    // than any fixed window.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while credits_of(&frames) < 1 && std::time::Instant::now() < deadline {
        frames.extend(conn.collect_for(Duration::from_millis(100)).await);
    }
    assert!(credits_of(&frames) >= 1, "{frames:?}");

    // A cancelled running task reports nothing and frees its slot: the
    // next task runs at once (the only slot would be busy for 30 s).
    let long = shell_task("sleep 30", 0);
    conn.send_tasks(std::slice::from_ref(&long)).await;
    assert!(matches!(conn.recv_work().await, AgentFrame::Started { .. }));
    conn.send(ServiceFrame::Cancel {
        task_ids: vec![long.task_id],
    })
    .await;
    let mut frames = conn.collect_for(Duration::from_millis(500)).await;
    assert!(results_of(&frames).is_empty(), "{frames:?}");
    let next = shell_task("echo next", 0);
    conn.send_tasks(std::slice::from_ref(&next)).await;
    frames.extend(conn.frames_until_results().await);
    let results = results_of(&frames);
    assert_eq!(results.len(), 1, "{frames:?}");
    assert_eq!(results[0].task_id, next.task_id);
    assert_eq!(results[0].result.as_ref().unwrap().stdout, "next\n");

    agent.stop().await;
}

#[tokio::test]
async fn the_last_result_is_followed_by_an_idle_heartbeat() {
    let service = MockService::start().await;
    // Periodic heartbeats an hour apart: only the prompt one can arrive.
    let agent = TestAgent::start_with(&service, 1, |config| {
        config.heartbeat_interval = Duration::from_secs(3600);
    });
    let mut conn = service.accept(agent.endpoint_id).await;
    let task = shell_task("sleep 3", 0);
    conn.send_tasks(std::slice::from_ref(&task)).await;
    while !matches!(conn.recv_work().await, AgentFrame::Started { .. }) {}
    // A new connection's heartbeat reports the running task: busy.
    drop(conn);
    let mut conn = service.accept(agent.endpoint_id).await;
    assert_eq!(conn.next_heartbeat().await, (0, 0, 1), "busy");
    conn.frames_until_results().await;
    assert_eq!(
        conn.next_heartbeat().await,
        (1, 0, 1),
        "idle right after the task finished, not an hour later"
    );
    agent.stop().await;
}

#[tokio::test]
async fn unacknowledged_results_are_resent_after_a_reconnect() {
    let service = MockService::start().await;
    let agent = TestAgent::start(&service, 1);
    let mut conn = service.accept(agent.endpoint_id).await;
    conn.expect_credit(PREFETCH_INITIAL).await;
    let task = shell_task("echo once", 0);
    conn.send_tasks(std::slice::from_ref(&task)).await;
    conn.frames_until_results().await;
    // No ack; the connection drops.
    drop(conn);

    let mut conn = service.accept(agent.endpoint_id).await;
    let mut frames = conn.frames_until_results().await;
    let resent = results_of(&frames);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].task_id, task.task_id);
    assert_eq!(resent[0].result.as_ref().unwrap().stdout, "once\n");
    // Credits restart from zero on a new connection: the whole window again.
    frames.extend(conn.collect_for(Duration::from_millis(200)).await);
    // (The window itself has adapted to the task's run time by now.)
    assert!(credits_of(&frames) >= 2, "{frames:?}");

    conn.send(ServiceFrame::ResultsAck {
        task_ids: vec![task.task_id],
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(conn);
    // Acknowledged: not sent again on the next connection.
    let mut conn = service.accept(agent.endpoint_id).await;
    let frames = conn.collect_for(Duration::from_millis(500)).await;
    assert!(results_of(&frames).is_empty(), "{frames:?}");
    agent.stop().await;
}

#[tokio::test]
async fn redelivered_assignments_run_once() {
    let service = MockService::start().await;
    let agent = TestAgent::start(&service, 1);
    let mut conn = service.accept(agent.endpoint_id).await;
    conn.expect_credit(PREFETCH_INITIAL).await;
    let task = shell_task("sleep 1; echo ran", 0);
    // Delivered twice on the same connection...
    conn.send_tasks(&[task.clone(), task.clone()]).await;
    let mut frames = Vec::new();
    while !frames
        .iter()
        .any(|f| matches!(f, AgentFrame::Started { .. }))
    {
        frames.push(conn.recv_work().await);
    }
    // The duplicate used a credit without being held: it comes back with
    // the next grant (grants wait for a quarter of the window, see
    // credits.rs), and the regrant below counts it.
    drop(conn);

    // ...and again after a reconnect while it is still running.
    let mut conn = service.accept(agent.endpoint_id).await;
    // The window (1 slot x PREFETCH_INITIAL) minus the one task held.
    conn.expect_credit(PREFETCH_INITIAL - 1).await;
    conn.send_tasks(std::slice::from_ref(&task)).await;

    let frames = conn.collect_for(Duration::from_millis(2500)).await;
    let results = results_of(&frames);
    assert_eq!(results.len(), 1, "{frames:?}");
    assert_eq!(results[0].task_id, task.task_id);
    assert_eq!(results[0].result.as_ref().unwrap().stdout, "ran\n");
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f, AgentFrame::Started { .. })),
        "the duplicate never started: {frames:?}"
    );
    conn.send(ServiceFrame::ResultsAck {
        task_ids: vec![task.task_id],
    })
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn a_task_whose_worker_dies_is_retried_then_reported_lost() {
    // Workers connect on their own (none local); they die mid-task.
    let service = MockService::start().await;
    let state = tempfile::tempdir().unwrap();
    let endpoint_id = EndpointId::new();
    let mut config = AgentConfig::new(
        Credentials::Preset(EndpointCredential {
            endpoint_id,
            agent_secret: SECRET.to_owned(),
            service_url: service.url(),
        }),
        state.path(),
    );
    config.workers = 0;
    config.shutdown_grace = Duration::from_secs(2);
    let (ready_tx, ready_rx) = oneshot::channel();
    config.ready = Some(ready_tx);
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(run_agent(config, async move {
        let _ = stopped.await;
    }));
    let ready = ready_rx.await.unwrap();
    assert_eq!(ready.endpoint_id, endpoint_id);
    let mut conn = service.accept(endpoint_id).await;

    // A worker process that dies: a `lattice worker`-like loop in a task we abort.
    let spawn_worker = || {
        let mut options = crate::WorkerOptions::new(ready.dispatcher.to_string(), 1);
        options.runtime = lattice_function_runtime::Runtime::new(state.path().join("scratch"));
        tokio::spawn(crate::run_worker(options))
    };
    let first = spawn_worker();
    // No local slots: credits follow connected workers (1 slot x 2).
    conn.expect_credit(PREFETCH_INITIAL).await;
    let task = shell_task("sleep 30", 1);
    conn.send_tasks(std::slice::from_ref(&task)).await;
    assert!(matches!(conn.recv_work().await, AgentFrame::Started { .. }));
    first.abort();

    let second = spawn_worker();
    assert!(matches!(conn.recv_work().await, AgentFrame::Started { .. }));
    second.abort();

    let frames = conn.frames_until_results().await;
    let lost = &results_of(&frames)[0];
    assert_eq!(lost.task_id, task.task_id);
    assert_eq!(lost.attempt, 2);
    let error = lost.error.as_deref().unwrap();
    assert!(error.starts_with("worker lost: worker "), "{error}");
    assert!(
        error.ends_with("disconnected while running the task (after 2 attempts)"),
        "{error}"
    );
    conn.send(ServiceFrame::ResultsAck {
        task_ids: vec![task.task_id],
    })
    .await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Local worker processes: needs a `lattice` binary (or anything with its
/// `worker` subcommand) in `LATTICE_TEST_WORKER_COMMAND`; skipped otherwise.
#[tokio::test]
async fn local_worker_processes_run_tasks_and_stop_with_the_agent() {
    let Some(command) = std::env::var_os("LATTICE_TEST_WORKER_COMMAND") else {
        eprintln!("skipped: set LATTICE_TEST_WORKER_COMMAND to a `lattice` binary");
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_test_writer()
        .try_init();
    let service = MockService::start().await;
    let state = tempfile::tempdir().unwrap();
    let endpoint_id = EndpointId::new();
    let mut config = AgentConfig::new(
        Credentials::Preset(EndpointCredential {
            endpoint_id,
            agent_secret: SECRET.to_owned(),
            service_url: service.url(),
        }),
        state.path(),
    );
    config.workers = 2;
    config.launch = WorkerLaunch::Processes {
        command: Some(command.into()),
    };
    config.shutdown_grace = Duration::from_secs(3);
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(run_agent(config, async move {
        let _ = stopped.await;
    }));
    let mut conn = service.accept(endpoint_id).await;
    let tasks: Vec<_> = (0..4)
        .map(|i| shell_task(&format!("sleep 0.3; echo {i}"), 0))
        .collect();
    conn.send_tasks(&tasks).await;
    let mut frames = Vec::new();
    while results_of(&frames).len() < 4 {
        frames.push(conn.recv_work().await);
    }
    let results = results_of(&frames);
    assert!(
        results.iter().all(|r| r.status == OutcomeStatus::Success),
        "{results:?}"
    );
    let pids: std::collections::BTreeSet<i32> = results
        .iter()
        .map(|r| {
            r.worker
                .as_deref()
                .unwrap()
                .rsplit_once(':')
                .unwrap()
                .1
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        pids.len(),
        2,
        "two worker processes shared the tasks: {pids:?}"
    );
    conn.send(ServiceFrame::ResultsAck {
        task_ids: tasks.iter().map(|t| t.task_id).collect(),
    })
    .await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    for pid in pids {
        // SAFETY: signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "worker {pid} outlived the agent");
    }
}

impl MockService {
    /// Answers one `POST /v1/endpoints` (checking the user's token) on the
    /// same listener, as the service's REST API would.
    async fn answer_register(&self, endpoint_id: EndpointId, user_token: &str) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), self.listener.accept())
            .await
            .unwrap()
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&request).contains("\"name\"") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "request ended early");
            request.extend_from_slice(&buf[..n]);
        }
        let request = String::from_utf8_lossy(&request).to_lowercase();
        assert!(request.starts_with("post /v1/endpoints "), "{request}");
        assert!(request.contains(&format!(
            "authorization: bearer {}",
            user_token.to_lowercase()
        )));
        let body = serde_json::json!({
            "endpoint": {
                "id": endpoint_id,
                "name": "laptop",
                "owner_id": lattice_protocol::IdentityId::new(),
                "status": "offline",
                "created_at": chrono::Utc::now(),
                "last_seen": null,
                "agent_version": null,
                "hostname": null,
                "workers": 0,
                "idle_slots": 0,
                "agent_queue_depth": 0,
                "waiting_tasks": 0
            },
            "agent_secret": SECRET,
        })
        .to_string();
        let response = format!(
            "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn registers_on_first_start_and_reuses_the_saved_credential() {
    use std::os::unix::fs::PermissionsExt;
    let service = MockService::start().await;
    let state = tempfile::tempdir().unwrap();
    let endpoint_id = EndpointId::new();
    let start = |client: lattice_client::Client| {
        let mut config = AgentConfig::new(
            Credentials::Register {
                name: "laptop".into(),
                client,
            },
            state.path(),
        );
        config.workers = 0;
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(run_agent(config, async move {
            let _ = stopped.await;
        }));
        (stop, handle)
    };

    let client =
        lattice_client::Client::new(&service.url(), Some("lat_user_token".into())).unwrap();
    let (stop, handle) = start(client);
    service.answer_register(endpoint_id, "lat_user_token").await;
    let conn = service.accept(endpoint_id).await;
    let saved = EndpointCredential::load(state.path()).unwrap().unwrap();
    assert_eq!(saved.endpoint_id, endpoint_id);
    assert_eq!(saved.agent_secret, SECRET);
    let mode = std::fs::metadata(state.path().join(crate::CREDENTIAL_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(conn);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Second start: no registration (the client points nowhere and has no token).
    let (stop, handle) = start(lattice_client::Client::new("http://127.0.0.1:9", None).unwrap());
    let _conn = service.accept(endpoint_id).await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
