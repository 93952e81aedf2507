//! Harness shared by the service's integration tests: a service on a
//! throwaway store (SQLite in a temporary directory, or PostgreSQL in a schema
//! of its own with RabbitMQ queues), requests through the router without a
//! socket, the service on a loopback port, and a fake agent that speaks the
//! real agent-channel frames.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use lattice_protocol::api::Identity;
use lattice_protocol::compute::{SessionEvent, StreamEvent, TaskInfo, TaskState};
use lattice_protocol::frames::{AgentFrame, ServiceFrame, TaskAssignment};
use lattice_protocol::framing;
use lattice_protocol::{EndpointId, FunctionId, TaskId};
use lattice_service::auth::tokens;
use lattice_service::testing::{
    amqp_addr, postgres_addr, require_service, tcp_reachable, test_amqp_url, TestSchema,
};
use lattice_service::{AppState, ServiceConfig};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tower::ServiceExt;

/// Longest wait for anything a test expects to happen: a hang guard, not a
/// performance bound.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

// ---- the service ---------------------------------------------------------

/// Where a test service keeps its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// SQLite in a temporary directory, the embedded queue.
    Sqlite,
    /// PostgreSQL in a schema of its own, RabbitMQ queues.
    PostgresRabbitmq,
}

impl Backend {
    /// Whether the back end's services are there; `false` means skip (the
    /// reason is printed), and with `LATTICE_REQUIRE_SERVICES=1` it panics.
    pub(crate) fn available(self, test: &str) -> bool {
        match self {
            Backend::Sqlite => true,
            Backend::PostgresRabbitmq => require_service(
                test,
                tcp_reachable(&postgres_addr()).and_then(|()| tcp_reachable(&amqp_addr())),
            ),
        }
    }
}

/// A service on a throwaway store; [`TestService::cleanup`] removes what it
/// left outside its temporary directory (a PostgreSQL schema, RabbitMQ queues).
pub(crate) struct TestService {
    pub(crate) state: AppState,
    backend: Backend,
    schema: Option<TestSchema>,
    /// Endpoints registered through [`TestService::endpoint`], whose queues
    /// cleanup deletes.
    endpoints: Mutex<Vec<EndpointId>>,
    _dir: tempfile::TempDir,
}

/// An HTTP answer: status and body (JSON, or the raw text as a JSON string).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
}

/// A service on SQLite with the default configuration.
pub(crate) async fn service() -> TestService {
    service_with(|_| {}).await
}

/// A service on SQLite; `adjust` edits the configuration before it opens.
pub(crate) async fn service_with(adjust: impl FnOnce(&mut ServiceConfig)) -> TestService {
    TestService::open(Backend::Sqlite, adjust).await
}

impl TestService {
    /// Opens a service on `backend`; check [`Backend::available`] first.
    pub(crate) async fn open(backend: Backend, adjust: impl FnOnce(&mut ServiceConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = ServiceConfig::for_data_dir(dir.path());
        let schema = match backend {
            Backend::Sqlite => None,
            Backend::PostgresRabbitmq => {
                let schema = TestSchema::create().await.expect("create a test schema");
                config.database_url = schema.url_with_search_path();
                config.amqp_url = Some(test_amqp_url());
                Some(schema)
            }
        };
        adjust(&mut config);
        let state = lattice_service::open(config)
            .await
            .expect("open the service");
        Self {
            state,
            backend,
            schema,
            endpoints: Mutex::new(Vec::new()),
            _dir: dir,
        }
    }

    /// Drops the PostgreSQL schema and the RabbitMQ queues of the test's endpoints.
    pub(crate) async fn cleanup(self) {
        let endpoints = std::mem::take(&mut *self.endpoints.lock().expect("endpoints lock"));
        let Self { state, schema, .. } = self;
        drop(state);
        if let Some(schema) = schema {
            schema.drop_schema().await.expect("drop the test schema");
            if let Err(e) = delete_rabbitmq_queues(&endpoints).await {
                eprintln!("could not delete the test's queues: {e}");
            }
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn app(&self) -> Router {
        lattice_service::app(self.state.clone())
    }

    pub(crate) async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .app()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("read the body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer { status, body }
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send(
            request(Method::GET, path, token)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    pub(crate) async fn delete(&self, path: &str, token: Option<&str>) -> Answer {
        self.send(
            request(Method::DELETE, path, token)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    pub(crate) async fn post_json(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.post_raw(path, token, Some("application/json"), body.to_string())
            .await
    }

    pub(crate) async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Answer {
        let mut builder = request(Method::POST, path, token);
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        self.send(builder.body(body.into()).unwrap()).await
    }

    /// A local identity `username` and an access token with every scope.
    pub(crate) async fn user(&self, username: &str) -> (Identity, String) {
        let (identity, token) = tokens::bootstrap_local_identity(
            &self.state.store,
            username,
            chrono::Duration::hours(1),
        )
        .await
        .expect("bootstrap identity");
        (identity, token.access_token)
    }

    // ---- compute resources -------------------------------------------------

    /// Registers a function; panics unless it is created (201) or found (200).
    pub(crate) async fn function(&self, token: &str, spec: Value) -> FunctionId {
        let answer = self
            .post_json("/v1/functions", Some(token), json!({ "spec": spec }))
            .await;
        assert!(
            answer.status == StatusCode::CREATED || answer.status == StatusCode::OK,
            "{answer:?}"
        );
        id_field(&answer.body, "id")
    }

    /// Registers a shell function running `command`.
    pub(crate) async fn shell_function(&self, token: &str, command: &str) -> FunctionId {
        self.function(token, json!({"kind": "shell", "command": command}))
            .await
    }

    /// Registers an endpoint; returns its id and agent secret.
    pub(crate) async fn endpoint(&self, token: &str, name: &str) -> (EndpointId, String) {
        let answer = self
            .post_json("/v1/endpoints", Some(token), json!({ "name": name }))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        let id: EndpointId = id_field(&answer.body["endpoint"], "id");
        self.endpoints.lock().expect("endpoints lock").push(id);
        (id, str_field(&answer.body, "agent_secret").to_owned())
    }

    /// Submits a batch (one argument map per task); returns the batch id and
    /// the task ids.
    pub(crate) async fn submit_batch(
        &self,
        token: &str,
        function: FunctionId,
        endpoint: EndpointId,
        tasks: Vec<Value>,
        max_retries: Option<u32>,
    ) -> (String, Vec<TaskId>) {
        let mut body = json!({
            "function_id": function,
            "endpoint_id": endpoint,
            "tasks": tasks,
        });
        if let Some(max_retries) = max_retries {
            body["max_retries"] = json!(max_retries);
        }
        let answer = self.post_json("/v1/batches", Some(token), body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        let task_ids = serde_json::from_value(answer.body["task_ids"].clone()).expect("task ids");
        (str_field(&answer.body, "batch_id").to_owned(), task_ids)
    }

    /// Submits `count` tasks of a parameterless function.
    pub(crate) async fn submit_n(
        &self,
        token: &str,
        function: FunctionId,
        endpoint: EndpointId,
        count: usize,
    ) -> (String, Vec<TaskId>) {
        self.submit_batch(token, function, endpoint, vec![json!({}); count], None)
            .await
    }

    /// Cancels task `id` as the holder of `token`.
    pub(crate) async fn cancel(&self, token: &str, id: TaskId) -> Answer {
        self.post_json(&format!("/v1/tasks/{id}/cancel"), Some(token), json!({}))
            .await
    }

    pub(crate) async fn task(&self, token: &str, id: TaskId) -> TaskInfo {
        let answer = self.get(&format!("/v1/tasks/{id}"), Some(token)).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        serde_json::from_value(answer.body).expect("a task")
    }

    /// Polls a task until `done` holds for it (panics after [`PATIENCE`]).
    pub(crate) async fn task_until(
        &self,
        token: &str,
        id: TaskId,
        what: &str,
        done: impl Fn(&TaskInfo) -> bool,
    ) -> TaskInfo {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let task = self.task(token, id).await;
            if done(&task) {
                return task;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} never got {what}: {task:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn task_in_state(
        &self,
        token: &str,
        id: TaskId,
        state: TaskState,
    ) -> TaskInfo {
        self.task_until(token, id, state.as_str(), |t| t.state == state)
            .await
    }

    pub(crate) async fn endpoint_info(&self, token: &str, id: EndpointId) -> Value {
        let answer = self.get(&format!("/v1/endpoints/{id}"), Some(token)).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        answer.body
    }

    /// Polls an endpoint until its `status` is `status` (panics after [`PATIENCE`]).
    pub(crate) async fn endpoint_until_status(
        &self,
        token: &str,
        id: EndpointId,
        status: &str,
    ) -> Value {
        self.endpoint_until(token, id, |info| info["status"] == status)
            .await
    }

    /// Polls an endpoint until `done` holds (panics after [`PATIENCE`]).
    pub(crate) async fn endpoint_until(
        &self,
        token: &str,
        id: EndpointId,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let info = self.endpoint_info(token, id).await;
            if done(&info) {
                return info;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "endpoint {id} never got there: {info}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ---- on a socket ---------------------------------------------------------

    /// Serves the service on a free loopback port until the value is dropped.
    pub(crate) async fn serve(&self) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(lattice_service::serve(
            listener,
            self.state.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        Running {
            addr,
            _stop: stop,
            server,
        }
    }
}

/// The service serving on a loopback port; stops when dropped.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Running {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Opens the agent channel with `secret` (as is, `None` for no header).
    pub(crate) async fn agent_connect(
        &self,
        secret: Option<&str>,
    ) -> Result<FakeAgent, tokio_tungstenite::tungstenite::Error> {
        let ws = ws_connect(self.addr, "/v1/agent/connect", secret).await?;
        Ok(FakeAgent { ws })
    }

    /// Opens the agent channel of `endpoint` and says hello as `hostname`;
    /// returns once the service welcomed it.
    pub(crate) async fn agent(
        &self,
        endpoint: EndpointId,
        secret: &str,
        hostname: &str,
    ) -> FakeAgent {
        let mut agent = self
            .agent_connect(Some(secret))
            .await
            .expect("open the agent channel");
        agent.hello(endpoint, hostname).await;
        agent
    }

    /// Opens a batch's result stream (`GET /v1/batches/{id}/stream`).
    pub(crate) async fn batch_stream(&self, token: &str, batch: &str) -> ResultStream {
        let ws = ws_connect(
            self.addr,
            &format!("/v1/batches/{batch}/stream"),
            Some(token),
        )
        .await
        .expect("open the result stream");
        ResultStream { ws }
    }

    /// Opens the session stream (`GET /v1/stream`).
    pub(crate) async fn session(
        &self,
        token: Option<&str>,
    ) -> Result<SessionStream, tokio_tungstenite::tungstenite::Error> {
        Ok(SessionStream {
            ws: ws_connect(self.addr, "/v1/stream", token).await?,
        })
    }

    /// `GET /v1/health` over the socket; returns the status code.
    pub(crate) async fn health(&self) -> u16 {
        let response = tokio::time::timeout(PATIENCE, reqwest::get(self.url("/v1/health")))
            .await
            .expect("a health answer in time")
            .expect("a health answer");
        response.status().as_u16()
    }
}

/// A batch's result stream: JSON text [`StreamEvent`]s.
pub(crate) struct ResultStream {
    ws: Socket,
}

impl ResultStream {
    /// Reads until `done`; returns the tasks pushed before it and the final status.
    pub(crate) async fn until_done(mut self) -> (Vec<TaskInfo>, Value) {
        let mut tasks = Vec::new();
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a stream event in time")
                .expect("the stream stays open until done")
                .expect("a stream message");
            let text = match message {
                Message::Text(text) => text,
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected stream message {other:?}"),
            };
            match serde_json::from_str::<StreamEvent>(&text).expect("a stream event") {
                StreamEvent::Task { task } => tasks.push(*task),
                StreamEvent::Done { status } => {
                    return (tasks, serde_json::to_value(status).expect("status"))
                }
            }
        }
    }
}

/// The session stream: JSON requests in, [`SessionEvent`]s out.
pub(crate) struct SessionStream {
    ws: Socket,
}

impl SessionStream {
    pub(crate) async fn send_json(&mut self, request: Value) {
        self.send_message(Message::Text(request.to_string().into()))
            .await;
    }

    pub(crate) async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send a session request");
    }

    /// The next event.
    pub(crate) async fn next(&mut self) -> SessionEvent {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a session event in time")
                .expect("the session stays open")
                .expect("a session message");
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(&text).expect("a session event")
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected session message {other:?}"),
            }
        }
    }

    /// Waits for the service to close the connection.
    pub(crate) async fn closed(&mut self) {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("the session closes in time");
            match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("expected the session to close, got {other:?}"),
            }
        }
    }

    /// Reads until `done` came for every batch in `batches`; returns the
    /// tasks pushed meanwhile and the final statuses in the order they came.
    pub(crate) async fn until_done(&mut self, batches: &[&str]) -> (Vec<TaskInfo>, Vec<Value>) {
        let mut tasks = Vec::new();
        let mut statuses = Vec::new();
        while statuses.len() < batches.len() {
            match self.next().await {
                SessionEvent::Tasks { tasks: more } => tasks.extend(more),
                SessionEvent::Done { status } => {
                    assert!(
                        batches.contains(&status.batch_id.to_string().as_str()),
                        "done for a batch not asked about: {status:?}"
                    );
                    statuses.push(serde_json::to_value(status).expect("status"));
                }
                other => panic!("expected tasks or done, got {other:?}"),
            }
        }
        (tasks, statuses)
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("a websocket request");
    if let Some(bearer) = bearer {
        request.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {bearer}").parse().expect("a header value"),
        );
    }
    let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request))
        .await
        .expect("the websocket handshake in time")?;
    Ok(ws)
}

/// What the service did next on an agent channel.
#[derive(Debug)]
pub(crate) enum Next {
    Frame(ServiceFrame),
    /// The service closed the channel (or dropped the connection).
    Closed,
}

/// An agent as far as the service can tell: a WebSocket speaking frames.
pub(crate) struct FakeAgent {
    ws: Socket,
}

impl FakeAgent {
    pub(crate) async fn send(&mut self, frame: &AgentFrame) {
        let bytes = framing::encode(frame).expect("encode a frame");
        self.send_message(Message::Binary(bytes.into())).await;
    }

    pub(crate) async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send to the service");
    }

    pub(crate) async fn hello(&mut self, endpoint: EndpointId, hostname: &str) {
        self.hello_as(endpoint, hostname, false).await;
    }

    /// Hello from a multi-user agent (`multi_user`) or a plain one.
    pub(crate) async fn hello_as(
        &mut self,
        endpoint: EndpointId,
        hostname: &str,
        multi_user: bool,
    ) {
        self.send(&AgentFrame::Hello {
            endpoint_id: endpoint,
            agent_version: "0.1.0-test".into(),
            hostname: hostname.into(),
            multi_user,
        })
        .await;
        match self.recv().await {
            ServiceFrame::Welcome { endpoint_id } => assert_eq!(endpoint_id, endpoint),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub(crate) async fn credit(&mut self, credits: u32) {
        self.send(&AgentFrame::Credit { credits }).await;
    }

    /// The next frame or the end of the channel, within [`PATIENCE`].
    pub(crate) async fn next(&mut self) -> Next {
        self.next_within(PATIENCE)
            .await
            .expect("a frame or a close from the service in time")
    }

    /// Like [`FakeAgent::next`], `None` if nothing came within `wait`.
    pub(crate) async fn next_within(&mut self, wait: Duration) -> Option<Next> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Some(Next::Closed),
                Some(Ok(Message::Binary(bytes))) => {
                    let frame = framing::decode::<ServiceFrame>(&bytes).expect("a service frame");
                    return Some(Next::Frame(frame));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Text(text))) => panic!("text message from the service: {text}"),
            }
        }
    }

    /// The next service frame; panics if the channel closes first.
    pub(crate) async fn recv(&mut self) -> ServiceFrame {
        match self.next().await {
            Next::Frame(frame) => frame,
            Next::Closed => panic!("the service closed the agent channel"),
        }
    }

    /// Asserts the service sends nothing for `wait`.
    pub(crate) async fn assert_quiet(&mut self, wait: Duration) {
        if let Some(next) = self.next_within(wait).await {
            panic!("expected nothing from the service, got {next:?}");
        }
    }

    /// Collects exactly `count` task assignments (from one or more `Tasks` frames).
    pub(crate) async fn assignments(&mut self, count: usize) -> Vec<TaskAssignment> {
        let mut out = Vec::new();
        while out.len() < count {
            match self.recv().await {
                ServiceFrame::Tasks { tasks } => out.extend(tasks),
                other => panic!("expected tasks, got {other:?}"),
            }
        }
        assert_eq!(out.len(), count, "more assignments than expected: {out:?}");
        out
    }

    /// Waits until the service ends the channel; returns the frames it sent before.
    pub(crate) async fn closed(&mut self) -> Vec<ServiceFrame> {
        let mut frames = Vec::new();
        loop {
            match self.next().await {
                Next::Frame(frame) => frames.push(frame),
                Next::Closed => return frames,
            }
        }
    }

    /// Closes the channel from the agent's side and waits for the close to finish.
    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(PATIENCE, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

// ---- assertions ----------------------------------------------------------

pub(crate) fn request(
    method: Method,
    path: &str,
    token: Option<&str>,
) -> axum::http::request::Builder {
    let builder = Request::builder().method(method).uri(path);
    match token {
        Some(token) => builder.header(header::AUTHORIZATION, format!("Bearer {token}")),
        None => builder,
    }
}

/// Asserts an error answer: `status`, and a body that is exactly
/// `{"code": code, "message": non-empty}`. Returns the message.
#[track_caller]
pub(crate) fn assert_error(answer: &Answer, status: StatusCode, code: &str) -> String {
    assert_eq!(answer.status, status, "{answer:?}");
    lattice_service::testing::assert_error_body(&answer.body, code, answer)
}

#[track_caller]
pub(crate) fn str_field<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string `{field}` in {body}"))
}

/// A typed id from a string field.
#[track_caller]
pub(crate) fn id_field<T: std::str::FromStr>(body: &Value, field: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    str_field(body, field).parse().expect("an id")
}

// ---- RabbitMQ clean-up ---------------------------------------------------

/// Deletes the queues of `endpoints` and takes their dead letters off the
/// shared dead-letter queue.
async fn delete_rabbitmq_queues(endpoints: &[EndpointId]) -> lapin::Result<()> {
    use lattice_service::testing::endpoint_queue;
    if endpoints.is_empty() {
        return Ok(());
    }
    let queues: Vec<String> = endpoints.iter().copied().map(endpoint_queue).collect();
    lattice_service::testing::delete_rabbitmq_queues(&queues).await
}
