//! The session stream (`GET /v1/stream`): one WebSocket per client session
//! (an SDK `Executor`) that carries its batch submissions and pushes the
//! results of every batch it follows, several tasks per frame.
//!
//! Why a stream rather than `POST /v1/batches` plus a stream per batch: a
//! notebook submitting one task at a time paid an HTTP request and a
//! WebSocket handshake per task; here it pays one frame each way.
//!
//! The connection authenticates once at the upgrade and checks its token
//! again (expiry, revocation) for every submission. A frame it cannot use
//! gets an `error` event and the connection stays open.
//!
//! It owns the session protocol ([`SessionRequest`] in, [`SessionEvent`]
//! out) and per-connection state (the batches followed, what was sent). It
//! must not apply submission rules itself (it calls
//! [`submission::submit`]) nor record results. Its refusals are
//! [`ComputeError`]s like everywhere in the domain; an error event carries
//! the code an HTTP request would get (`ApiError`'s `From<ComputeError>`,
//! and the token check's own `ApiError`).

use std::collections::{HashMap, HashSet};

use axum::extract::ws::{Message, WebSocket};
use chrono::{DateTime, Utc};
use lattice_protocol::api::Scope;
use lattice_protocol::compute::{SessionEvent, SessionRequest, TaskInfo};
use lattice_protocol::{BatchId, TaskId};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::results::{self, STREAM_FULL_RESCAN_EVERY, STREAM_OVERLAP_MS, STREAM_POLL};
use super::submission::{self, Submission};
use super::{tasks, ComputeError};
use crate::auth::{authenticate_hashed, Caller};
use crate::error::ApiError;
use crate::state::AppState;

/// Most tasks in one `tasks` frame.
const TASKS_PER_FRAME: usize = 1024;

/// Serves one session stream until the client leaves. `caller` upgraded the
/// connection with the token whose hash is `token_hash`; every submission
/// checks that token again.
pub(crate) async fn run(state: AppState, caller: Caller, token_hash: String, socket: WebSocket) {
    let identity = caller.identity_id;
    let mut session = Session {
        state,
        caller,
        token_hash,
        socket,
        followed: HashMap::new(),
    };
    if let Err(e) = session.run().await {
        tracing::debug!(identity_id = %identity, error = %e, "session stream ended");
    }
}

/// A batch this connection follows.
struct Followed {
    total: u64,
    sent: HashSet<TaskId>,
}

struct Session {
    state: AppState,
    caller: Caller,
    token_hash: String,
    socket: WebSocket,
    followed: HashMap<BatchId, Followed>,
}

impl Session {
    async fn run(&mut self) -> Result<(), axum::Error> {
        // Subscribed before any batch is followed, so that no result
        // recorded in between goes unseen.
        let mut recorded = results::subscribe(&self.state);
        let mut since = DateTime::<Utc>::MIN_UTC;
        let mut polls = 0u32;
        let mut poll = tokio::time::interval(STREAM_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            let mut rescan_since = None;
            tokio::select! {
                message = recorded.recv() => match message {
                    Ok(tasks) => {
                        let mut out = Vec::new();
                        self.collect(&tasks, &mut out);
                        // Results recorded meanwhile go out in the same frame.
                        loop {
                            match recorded.try_recv() {
                                Ok(more) => self.collect(&more, &mut out),
                                Err(TryRecvError::Lagged(_)) => {
                                    rescan_since = Some(DateTime::<Utc>::MIN_UTC);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.send_tasks(out).await?;
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "session stream fell behind; rescanning");
                        rescan_since = Some(DateTime::<Utc>::MIN_UTC);
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
                _ = poll.tick(), if !self.followed.is_empty() => {
                    polls += 1;
                    rescan_since = Some(if polls.is_multiple_of(STREAM_FULL_RESCAN_EVERY) {
                        DateTime::<Utc>::MIN_UTC
                    } else {
                        since
                    });
                }
                incoming = self.socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(Message::Text(text))) => self.request(text.as_str()).await?,
                    Some(Ok(Message::Binary(_))) => {
                        self.send(&error_event(None, None, ComputeError::Invalid(
                            "the session stream takes JSON text frames".into(),
                        ).into()))
                        .await?
                    }
                    Some(Ok(_)) => {}
                },
            }
            if let Some(from) = rescan_since {
                let query_started = Utc::now();
                self.rescan(from).await?;
                since = query_started - chrono::Duration::milliseconds(STREAM_OVERLAP_MS);
            }
            self.finish_done().await?;
        }
    }

    /// The not yet sent final tasks of followed batches among `tasks`.
    fn collect(&mut self, tasks: &[TaskInfo], out: &mut Vec<TaskInfo>) {
        for task in tasks {
            if let Some(followed) = self.followed.get_mut(&task.batch_id) {
                if followed.sent.insert(task.id) {
                    out.push(task.clone());
                }
            }
        }
    }

    /// Looks in the store for final tasks of followed batches (results
    /// recorded by another replica, or missed by a stream that fell behind).
    async fn rescan(&mut self, since: DateTime<Utc>) -> Result<(), axum::Error> {
        let batches: Vec<BatchId> = self.followed.keys().copied().collect();
        let mut out = Vec::new();
        for batch in batches {
            match self.state.store.batch_finished_since(batch, since).await {
                Ok(tasks) => self.collect(&tasks, &mut out),
                Err(e) => {
                    tracing::error!(batch_id = %batch, error = %e, "session stream query failed")
                }
            }
        }
        self.send_tasks(out).await
    }

    /// Sends `done` for every followed batch whose tasks were all sent.
    async fn finish_done(&mut self) -> Result<(), axum::Error> {
        let complete: Vec<BatchId> = self
            .followed
            .iter()
            .filter(|(_, f)| f.sent.len() as u64 >= f.total)
            .map(|(id, _)| *id)
            .collect();
        for batch in complete {
            self.followed.remove(&batch);
            match self.state.store.batch_status(batch).await {
                Ok(status) => self.send(&SessionEvent::Done { status }).await?,
                Err(e) => {
                    tracing::error!(batch_id = %batch, error = %e, "session stream status failed");
                }
            }
        }
        Ok(())
    }

    async fn request(&mut self, text: &str) -> Result<(), axum::Error> {
        let limit = self.state.config.max_body_bytes;
        if text.len() > limit {
            let request_id = request_id_of(text);
            let message = format!(
                "the request is {} bytes, over the limit of {limit}; submit fewer or smaller tasks per batch",
                text.len()
            );
            return self
                .send(&error_event(
                    request_id,
                    None,
                    ComputeError::TooLarge(message).into(),
                ))
                .await;
        }
        let request: SessionRequest = {
            let de = &mut serde_json::Deserializer::from_str(text);
            match serde_path_to_error::deserialize(de) {
                Ok(request) => request,
                Err(e) => {
                    let request_id = request_id_of(text);
                    let path = e.path().to_string();
                    let message = if path == "." {
                        format!("invalid session request: {}", e.inner())
                    } else {
                        format!("invalid session request: {path}: {}", e.inner())
                    };
                    return self
                        .send(&error_event(
                            request_id,
                            None,
                            ComputeError::Invalid(message).into(),
                        ))
                        .await;
                }
            }
        };
        match request {
            SessionRequest::Submit { request_id, batch } => {
                let submitted = match authorized(&self.state, &self.token_hash, &self.caller).await
                {
                    Ok(caller) => submission::submit(
                        &self.state,
                        Submission {
                            function_id: batch.function_id,
                            endpoint_id: batch.endpoint_id,
                            tasks: batch.tasks,
                            walltime_secs: batch.walltime_secs,
                            max_retries: batch.max_retries,
                            user_endpoint_config: batch.user_endpoint_config,
                            caller: &caller,
                            ids: None,
                        },
                    )
                    .await
                    .map_err(ApiError::from),
                    Err(e) => Err(e),
                };
                match submitted {
                    Ok(submitted) => {
                        self.followed.insert(
                            submitted.batch_id,
                            Followed {
                                total: submitted.task_ids.len() as u64,
                                sent: HashSet::new(),
                            },
                        );
                        self.send(&SessionEvent::Submitted {
                            request_id,
                            batch_id: submitted.batch_id,
                            task_ids: submitted.task_ids,
                        })
                        .await
                    }
                    Err(e) => self.send(&error_event(Some(request_id), None, e)).await,
                }
            }
            SessionRequest::Subscribe { batch_id } => {
                if self.followed.contains_key(&batch_id) {
                    return Ok(());
                }
                if let Err(e) = tasks::owned_batch(&self.state, &self.caller, batch_id).await {
                    return self
                        .send(&error_event(None, Some(batch_id), e.into()))
                        .await;
                }
                let total = match self.state.store.batch_status(batch_id).await {
                    Ok(status) => status.total,
                    Err(e) => {
                        return self
                            .send(&error_event(None, Some(batch_id), e.into()))
                            .await
                    }
                };
                self.followed.insert(
                    batch_id,
                    Followed {
                        total,
                        sent: HashSet::new(),
                    },
                );
                match self
                    .state
                    .store
                    .batch_finished_since(batch_id, DateTime::<Utc>::MIN_UTC)
                    .await
                {
                    Ok(tasks) => {
                        let mut out = Vec::new();
                        self.collect(&tasks, &mut out);
                        self.send_tasks(out).await
                    }
                    // The periodic rescan tries again.
                    Err(e) => {
                        tracing::error!(batch_id = %batch_id, error = %e, "session stream query failed");
                        Ok(())
                    }
                }
            }
        }
    }

    async fn send_tasks(&mut self, mut tasks: Vec<TaskInfo>) -> Result<(), axum::Error> {
        while !tasks.is_empty() {
            let rest = tasks.split_off(tasks.len().min(TASKS_PER_FRAME));
            self.send(&SessionEvent::Tasks { tasks }).await?;
            tasks = rest;
        }
        Ok(())
    }

    async fn send(&mut self, event: &SessionEvent) -> Result<(), axum::Error> {
        let text = serde_json::to_string(event).expect("session events serialize");
        self.socket.send(Message::Text(text.into())).await
    }
}

/// The caller, if its token is still valid and has the compute scope
/// (a free function: a future holding `&Session` is not `Send`).
async fn authorized(
    state: &AppState,
    token_hash: &str,
    upgraded: &Caller,
) -> Result<Caller, ApiError> {
    let caller = authenticate_hashed(state, token_hash).await?;
    if caller.identity_id != upgraded.identity_id || !caller.has_scope(Scope::Compute) {
        return Err(ApiError::forbidden(
            "this token no longer has the `compute` scope",
        ));
    }
    Ok(caller)
}

/// The `request_id` of a request that is otherwise unusable, if it can be read.
fn request_id_of(text: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Id {
        request_id: Option<u64>,
    }
    serde_json::from_str::<Id>(text).ok()?.request_id
}

fn error_event(request_id: Option<u64>, batch_id: Option<BatchId>, e: ApiError) -> SessionEvent {
    if let Some(detail) = e.internal_detail() {
        tracing::error!(error = %detail, "session stream request failed");
    }
    SessionEvent::Error {
        request_id,
        batch_id,
        code: e.code,
        message: e.message,
    }
}
