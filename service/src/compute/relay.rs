//! The agent channel: one WebSocket per connected agent. The service relays
//! the endpoint's queue to the agent within the credits the agent grants,
//! records what the agent reports, and settles queue deliveries once a
//! task's final state is recorded (so a lost agent's tasks are redelivered).
//!
//! A frame that cannot be decoded ends the session with a logged error; the
//! service and other agents carry on.
//!
//! It owns the agent protocol's compute side: hello, credits, dispatch
//! (attempts counted, `max_retries + 1` deliveries at most, then the task
//! fails with `worker lost` and its message is dead-lettered), results
//! (checked to be this endpoint's, size-limited, recorded, acked, then
//! [`results::publish`]ed) and endpoint load. Data-plane frames go to
//! [`crate::transfers`]. It must not authenticate the upgrade (the route
//! does, by the agent secret) nor apply submission rules.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use chrono::Utc;
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use lattice_protocol::frames::{
    AgentFrame, OutcomeStatus, ServiceFrame, Submitter, TaskAssignment, TaskOutcome,
};
use lattice_protocol::framing;
use lattice_protocol::{IdentityId, TaskId};
use tokio::sync::mpsc;

use super::{functions, results};
use crate::broker::{Delivery, Settle, Subscription};
use crate::state::AppState;
use crate::store::{AgentConnection, EndpointRecord, Recorded};

/// Unsettled deliveries per agent session.
const PREFETCH: u16 = 2048;
/// Most tasks in one `Tasks` frame.
const MAX_TASKS_PER_FRAME: usize = 256;
/// Most results recorded in one store write when several frames wait.
const MAX_COALESCED_RESULTS: usize = 1024;
/// An agent silent for this long is considered gone.
const AGENT_SILENCE: Duration = Duration::from_secs(30);
/// Time an agent has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one agent's channel on `socket` until it ends; `endpoint` is the
/// endpoint whose agent secret opened it.
pub(crate) async fn run(state: AppState, endpoint: EndpointRecord, socket: WebSocket) {
    let endpoint_id = endpoint.id;
    match Session::run(state, endpoint, socket).await {
        Ok(()) => tracing::info!(endpoint_id = %endpoint_id, "agent disconnected"),
        Err(e) => {
            tracing::warn!(endpoint_id = %endpoint_id, error = %e, "agent session ended")
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("websocket: {0}")]
    Socket(#[from] axum::Error),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("queue: {0}")]
    Broker(#[from] crate::broker::BrokerError),
}

struct Session {
    state: AppState,
    endpoint: EndpointRecord,
    sink: SplitSink<WebSocket, Message>,
    credits: u64,
    /// Delivery tag of every task handed to this agent and not yet final.
    in_flight: HashMap<TaskId, u64>,
    /// A multi-user agent gets each task's submitter.
    multi_user: bool,
    /// Submitters looked up for this session (identities do not change
    /// what a multi-user agent maps them by while it is connected).
    submitters: HashMap<IdentityId, Submitter>,
}

impl Session {
    async fn run(
        state: AppState,
        endpoint: EndpointRecord,
        socket: WebSocket,
    ) -> Result<(), SessionError> {
        let (sink, mut stream) = socket.split();
        let mut session = Session {
            state,
            endpoint,
            sink,
            credits: 0,
            in_flight: HashMap::new(),
            multi_user: false,
            submitters: HashMap::new(),
        };
        let agent = match session.hello(&mut stream).await {
            Ok(hello) => hello,
            Err(e) => {
                // Tell the agent why (e.g. a hello naming another endpoint).
                let result = Err(e);
                session.goodbye(&result).await;
                return result;
            }
        };
        let endpoint_id = session.endpoint.id;
        session
            .state
            .store
            .set_endpoint_connected(endpoint_id, Some(agent.clone()), Utc::now())
            .await?;
        session.multi_user = agent.multi_user;
        let (hostname, version) = (agent.hostname, agent.agent_version);
        // Welcome only once the endpoint is recorded online, so that an agent
        // that has been welcomed is never shown offline by this session.
        if let Err(e) = session.send(&ServiceFrame::Welcome { endpoint_id }).await {
            let _ = session
                .state
                .store
                .set_endpoint_connected(endpoint_id, None, Utc::now())
                .await;
            return Err(e);
        }
        tracing::info!(endpoint_id = %endpoint_id, hostname, version, "agent connected");
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let registration = session.state.agents.add(endpoint_id, control_tx);
        let result = match session.state.broker.subscribe(endpoint_id, PREFETCH).await {
            Ok(subscription) => session.serve(&mut stream, subscription, control_rx).await,
            Err(e) => Err(e.into()),
        };
        session.state.agents.remove(endpoint_id, registration);
        crate::transfers::agent_gone(&session.state, endpoint_id);
        if let Err(e) = session
            .state
            .store
            .set_endpoint_connected(endpoint_id, None, Utc::now())
            .await
        {
            tracing::error!(endpoint_id = %endpoint_id, error = %e, "recording agent disconnect failed");
        }
        session.goodbye(&result).await;
        result
    }

    /// Closes the channel, first saying why if the agent broke the protocol.
    async fn goodbye(&mut self, result: &Result<(), SessionError>) {
        if let Err(SessionError::Protocol(message)) = result {
            let _ = self
                .send(&ServiceFrame::Error {
                    message: message.clone(),
                })
                .await;
        }
        let _ = self.sink.send(Message::Close(None)).await;
    }

    async fn hello(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
    ) -> Result<AgentConnection, SessionError> {
        let frame = tokio::time::timeout(HELLO_TIMEOUT, next_frame(stream))
            .await
            .map_err(|_| SessionError::Protocol("no hello within 10 s".into()))??
            .ok_or_else(|| SessionError::Protocol("closed before hello".into()))?;
        match frame {
            AgentFrame::Hello {
                endpoint_id,
                agent_version,
                hostname,
                multi_user,
            } => {
                if endpoint_id != self.endpoint.id {
                    return Err(SessionError::Protocol(format!(
                        "hello names endpoint {endpoint_id} but the secret belongs to {}",
                        self.endpoint.id
                    )));
                }
                Ok(AgentConnection {
                    hostname: truncate(&hostname, 255),
                    agent_version: truncate(&agent_version, 64),
                    multi_user,
                })
            }
            other => Err(SessionError::Protocol(format!(
                "expected hello, got {}",
                frame_name(&other)
            ))),
        }
    }

    async fn send(&mut self, frame: &ServiceFrame) -> Result<(), SessionError> {
        let bytes = framing::encode(frame).map_err(|e| SessionError::Protocol(e.to_string()))?;
        self.sink.send(Message::Binary(bytes.into())).await?;
        Ok(())
    }

    async fn serve(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        mut subscription: Subscription,
        mut control: mpsc::UnboundedReceiver<ServiceFrame>,
    ) -> Result<(), SessionError> {
        loop {
            let silence = tokio::time::sleep(AGENT_SILENCE);
            tokio::select! {
                frame = next_frame(stream) => {
                    let Some(mut frame) = frame? else { return Ok(()) };
                    // Results frames already received are recorded with this
                    // one: one store write for all of them. Under load the
                    // batches grow by themselves; idle, nothing waits.
                    let mut after = None;
                    if let AgentFrame::Results { results } = &mut frame {
                        while results.len() < MAX_COALESCED_RESULTS {
                            match next_frame(stream).now_or_never() {
                                Some(Ok(Some(AgentFrame::Results { results: more }))) => results.extend(more),
                                Some(next) => {
                                    after = Some(next);
                                    break;
                                }
                                None => break,
                            }
                        }
                    }
                    self.handle(frame, &subscription).await?;
                    if let Some(next) = after {
                        let Some(frame) = next? else { return Ok(()) };
                        self.handle(frame, &subscription).await?;
                    }
                }
                delivery = subscription.deliveries.recv(), if self.credits > 0 => {
                    let Some(first) = delivery else {
                        return Err(SessionError::Protocol("the task queue subscription ended".into()));
                    };
                    let mut batch = vec![first];
                    let room = (self.credits as usize).min(MAX_TASKS_PER_FRAME);
                    while batch.len() < room {
                        match subscription.deliveries.try_recv() {
                            Ok(d) => batch.push(d),
                            Err(_) => break,
                        }
                    }
                    self.dispatch(batch, &subscription).await?;
                }
                frame = control.recv() => {
                    if let Some(frame) = frame {
                        if let ServiceFrame::Cancel { task_ids } = &frame {
                            for id in task_ids {
                                if let Some(tag) = self.in_flight.remove(id) {
                                    let _ = subscription.settle.send(Settle::Ack(tag));
                                }
                            }
                        }
                        self.send(&frame).await?;
                    }
                }
                _ = silence => {
                    return Err(SessionError::Protocol(format!("agent silent for {} s", AGENT_SILENCE.as_secs())));
                }
            }
        }
    }

    async fn handle(
        &mut self,
        frame: AgentFrame,
        subscription: &Subscription,
    ) -> Result<(), SessionError> {
        let store = &self.state.store;
        match frame {
            AgentFrame::Credit { credits } => {
                self.credits = self.credits.saturating_add(u64::from(credits))
            }
            AgentFrame::Heartbeat {
                workers,
                idle_slots,
                queue_depth,
                blocks,
                provider_error,
                provider,
                children,
            } => {
                store
                    .update_endpoint_blocks(
                        self.endpoint.id,
                        &blocks,
                        provider_error.as_deref(),
                        provider.as_deref(),
                        &children,
                    )
                    .await?;
                store
                    .update_endpoint_load(
                        self.endpoint.id,
                        workers,
                        idle_slots,
                        queue_depth,
                        Utc::now(),
                    )
                    .await?;
            }
            AgentFrame::Started { tasks } => {
                let ours: Vec<_> = tasks
                    .into_iter()
                    .filter(|t| self.in_flight.contains_key(&t.task_id))
                    .collect();
                if !ours.is_empty() {
                    store.mark_started(&ours).await?;
                }
            }
            AgentFrame::Results { results } => {
                let task_ids: Vec<TaskId> = results.iter().map(|r| r.task_id).collect();
                let foreign = self.foreign_tasks(&task_ids).await?;
                let results: Vec<TaskOutcome> = results
                    .into_iter()
                    .filter(|r| !foreign.contains(&r.task_id))
                    .map(|r| self.enforce_result_limit(r))
                    .collect();
                let recorded = store.record_outcomes(&results).await?;
                let mut finished = Vec::with_capacity(recorded.len());
                let mut duplicates = 0;
                for (outcome, recorded) in results.iter().zip(&recorded) {
                    match recorded {
                        Recorded::First(task) => finished.push((**task).clone()),
                        Recorded::Duplicate => duplicates += 1,
                        Recorded::Unknown => {}
                    }
                    if *recorded == Recorded::Unknown {
                        tracing::warn!(endpoint_id = %self.endpoint.id, task_id = %outcome.task_id, "result for an unknown task dropped");
                    }
                    if let Some(tag) = self.in_flight.remove(&outcome.task_id) {
                        let _ = subscription.settle.send(Settle::Ack(tag));
                    }
                }
                if duplicates > 0 {
                    tracing::debug!(endpoint_id = %self.endpoint.id, duplicates, "duplicate results dropped");
                }
                results::publish(&self.state, finished);
                self.send(&ServiceFrame::ResultsAck { task_ids }).await?;
            }
            AgentFrame::Hello { .. } => {
                return Err(SessionError::Protocol("second hello on one channel".into()))
            }
            frame @ (AgentFrame::Collections { .. }
            | AgentFrame::FileOpResult { .. }
            | AgentFrame::Transfer { .. }) => {
                crate::transfers::agent_frame(&self.state, &self.endpoint, frame).await?
            }
        }
        Ok(())
    }

    /// Who submitted a task, for a multi-user agent's mapping (`None` for an
    /// identity that no longer exists: the agent refuses the task).
    async fn submitter(&mut self, id: IdentityId) -> Result<Option<Submitter>, SessionError> {
        if let Some(known) = self.submitters.get(&id) {
            return Ok(Some(known.clone()));
        }
        let Some(identity) = self.state.store.identity(id).await? else {
            return Ok(None);
        };
        let submitter = Submitter {
            identity_id: identity.id,
            username: identity.username,
            email: identity.email,
            identity_provider: identity.identity_provider,
        };
        self.submitters.insert(id, submitter.clone());
        Ok(Some(submitter))
    }

    /// The tasks among `ids` that belong to another endpoint: an agent may
    /// only report on its own endpoint's tasks. Tasks this session holds are
    /// known to be its own; only the others are looked up.
    async fn foreign_tasks(&self, ids: &[TaskId]) -> Result<HashSet<TaskId>, SessionError> {
        let unknown: Vec<TaskId> = ids
            .iter()
            .copied()
            .filter(|id| !self.in_flight.contains_key(id))
            .collect();
        if unknown.is_empty() {
            return Ok(HashSet::new());
        }
        let foreign: HashSet<TaskId> = self
            .state
            .store
            .tasks(&unknown)
            .await?
            .into_iter()
            .filter(|t| t.endpoint_id != self.endpoint.id)
            .map(|t| t.id)
            .collect();
        for task_id in &foreign {
            tracing::warn!(endpoint_id = %self.endpoint.id, task_id = %task_id, "result for another endpoint's task dropped");
        }
        Ok(foreign)
    }

    /// Results over the inline limit fail the task with a clear error.
    fn enforce_result_limit(&self, mut outcome: TaskOutcome) -> TaskOutcome {
        let limit = self.state.config.max_result_bytes;
        let size = outcome
            .result
            .as_ref()
            .map(|r| r.stdout.len() + r.stderr.len() + r.value.as_ref().map_or(0, String::len))
            .unwrap_or(0);
        if size > limit {
            outcome.status = OutcomeStatus::Failed;
            outcome.result = None;
            outcome.error = Some(format!(
                "result too large: {size} bytes exceed the inline limit of {limit} bytes; write large outputs to a file or collection instead"
            ));
        }
        outcome
    }

    async fn dispatch(
        &mut self,
        batch: Vec<Delivery>,
        subscription: &Subscription,
    ) -> Result<(), SessionError> {
        let ids: Vec<TaskId> = batch.iter().map(|d| d.task_id).collect();
        let dispatched = self.state.store.dispatch_tasks(&ids, Utc::now()).await?;
        let mut by_id: HashMap<TaskId, _> =
            dispatched.into_iter().map(|d| (d.task_id, d)).collect();
        let mut assignments = Vec::with_capacity(batch.len());
        let mut exhausted = Vec::new();
        for delivery in batch {
            let Some(task) = by_id.remove(&delivery.task_id) else {
                // Final already (cancelled, or a stale redelivery): drop the message.
                let _ = subscription.settle.send(Settle::Ack(delivery.tag));
                continue;
            };
            if task.attempts > task.max_retries + 1 {
                exhausted.push((task, delivery.tag));
                continue;
            }
            let Some(spec) = functions::spec(&self.state, task.function_id).await? else {
                exhausted.push((task, delivery.tag));
                continue;
            };
            if let Some(previous) = self.in_flight.insert(task.task_id, delivery.tag) {
                // Redelivered while this agent holds it: keep one delivery.
                let _ = subscription.settle.send(Settle::Ack(previous));
            }
            let submitter = if self.multi_user {
                self.submitter(task.owner_id).await?
            } else {
                None
            };
            assignments.push(TaskAssignment {
                task_id: task.task_id,
                function_id: task.function_id,
                spec: (*spec).clone(),
                args: task.args,
                walltime_secs: task.walltime_secs,
                attempt: task.attempts,
                max_retries: task.max_retries,
                user_config: if self.multi_user {
                    task.user_config
                } else {
                    None
                },
                submitter,
            });
        }
        if !exhausted.is_empty() {
            let outcomes: Vec<TaskOutcome> = exhausted
                .iter()
                .map(|(task, _)| TaskOutcome {
                    task_id: task.task_id,
                    attempt: task.attempts,
                    status: OutcomeStatus::Failed,
                    result: None,
                    error: Some(format!(
                        "worker lost: the task was delivered {} times and its agent or worker was lost each time (max_retries = {})",
                        task.attempts - 1,
                        task.max_retries
                    )),
                    worker: None,
                    started_at: None,
                    finished_at: Utc::now(),
                })
                .collect();
            let recorded = self.state.store.record_outcomes(&outcomes).await?;
            for (_, tag) in exhausted {
                let _ = subscription.settle.send(Settle::DeadLetter(tag));
            }
            results::publish(
                &self.state,
                recorded
                    .into_iter()
                    .filter_map(|r| match r {
                        Recorded::First(task) => Some(*task),
                        _ => None,
                    })
                    .collect(),
            );
        }
        if assignments.is_empty() {
            return Ok(());
        }
        self.credits = self.credits.saturating_sub(assignments.len() as u64);
        self.send(&ServiceFrame::Tasks { tasks: assignments }).await
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn frame_name(frame: &AgentFrame) -> &'static str {
    match frame {
        AgentFrame::Hello { .. } => "hello",
        AgentFrame::Credit { .. } => "credit",
        AgentFrame::Heartbeat { .. } => "heartbeat",
        AgentFrame::Started { .. } => "started",
        AgentFrame::Results { .. } => "results",
        AgentFrame::Collections { .. } => "collections",
        AgentFrame::FileOpResult { .. } => "file_op_result",
        AgentFrame::Transfer { .. } => "transfer",
    }
}

/// The next agent frame; `None` when the agent closed the channel.
async fn next_frame(
    stream: &mut SplitStream<WebSocket>,
) -> Result<Option<AgentFrame>, SessionError> {
    loop {
        match stream.next().await {
            None | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Binary(bytes))) => {
                return framing::decode::<AgentFrame>(&bytes)
                    .map(Some)
                    .map_err(|e| SessionError::Protocol(e.to_string()));
            }
            Some(Ok(Message::Text(_))) => {
                return Err(SessionError::Protocol(
                    "text frame on the agent channel; frames are binary MessagePack".into(),
                ))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        }
    }
}
