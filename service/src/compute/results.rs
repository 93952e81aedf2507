//! Result fan-out: tasks that reached their final state on this replica
//! go, through one broadcast channel ([`publish`], [`subscribe`]), to every
//! result stream: the batch streams (`GET /v1/batches/{id}/stream`,
//! [`stream_batch`]) and the session streams ([`session`](super::session)).
//! Streams also poll the store, for results recorded by another replica and
//! after falling behind the channel.
//!
//! It owns the stream timings. It must not record results (the relay and
//! cancellation do, then publish) nor check who may follow a batch (the
//! caller does before upgrading).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use chrono::Utc;
use lattice_protocol::compute::{StreamEvent, TaskInfo};
use lattice_protocol::{BatchId, TaskId};
use tokio::sync::broadcast;

use crate::state::AppState;

/// Tells result streams about tasks that reached their final state.
pub(crate) fn publish(state: &AppState, tasks: Vec<TaskInfo>) {
    if !tasks.is_empty() {
        // No subscriber is not an error.
        let _ = state.results.send(Arc::new(tasks));
    }
}

/// Tasks published from now on.
pub(crate) fn subscribe(state: &AppState) -> broadcast::Receiver<Arc<Vec<TaskInfo>>> {
    state.results.subscribe()
}

/// How often a stream also looks at the store, for results recorded by
/// another service replica.
pub(crate) const STREAM_POLL: Duration = Duration::from_secs(1);
/// Overlap of successive polls, so a transaction that committed late with an
/// earlier `finished_at` is not missed.
pub(crate) const STREAM_OVERLAP_MS: i64 = 5_000;
/// Every this many polls, look at the whole batch (covers agent clock skew).
pub(crate) const STREAM_FULL_RESCAN_EVERY: u32 = 10;

/// Pushes a batch's final tasks: those already final, then each as this
/// replica records it (broadcast, no store query per result), with a periodic
/// store poll for other replicas and for a stream that fell behind.
pub(crate) async fn stream_batch(
    state: AppState,
    batch: BatchId,
    mut socket: WebSocket,
) -> Result<(), axum::Error> {
    // Subscribe before the first query so nothing lands in between unseen.
    let mut recorded = subscribe(&state);
    let total = match state.store.batch_status(batch).await {
        Ok(status) => status.total,
        Err(e) => {
            tracing::error!(batch_id = %batch, error = %e, "result stream status failed");
            return Ok(());
        }
    };
    let mut sent: HashSet<TaskId> = HashSet::new();
    let mut since = chrono::DateTime::<Utc>::MIN_UTC;
    let mut polls = 0u32;
    let mut poll_now = true;
    let mut poll = tokio::time::interval(STREAM_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        if poll_now {
            poll_now = false;
            let query_started = Utc::now();
            let finished = match state.store.batch_finished_since(batch, since).await {
                Ok(tasks) => tasks,
                Err(e) => {
                    tracing::error!(batch_id = %batch, error = %e, "result stream query failed");
                    return Ok(());
                }
            };
            for task in finished {
                send_task(&mut socket, &mut sent, task).await?;
            }
            polls += 1;
            since = if polls.is_multiple_of(STREAM_FULL_RESCAN_EVERY) {
                chrono::DateTime::<Utc>::MIN_UTC
            } else {
                query_started - chrono::Duration::milliseconds(STREAM_OVERLAP_MS)
            };
        }
        if sent.len() as u64 >= total {
            let status = match state.store.batch_status(batch).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(batch_id = %batch, error = %e, "result stream status failed");
                    return Ok(());
                }
            };
            let text =
                serde_json::to_string(&StreamEvent::Done { status }).expect("event serializes");
            socket.send(Message::Text(text.into())).await?;
            let _ = socket.send(Message::Close(None)).await;
            return Ok(());
        }
        tokio::select! {
            message = recorded.recv() => match message {
                Ok(tasks) => {
                    for task in tasks.iter().filter(|t| t.batch_id == batch) {
                        send_task(&mut socket, &mut sent, task.clone()).await?;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(batch_id = %batch, missed, "result stream fell behind; rescanning");
                    since = chrono::DateTime::<Utc>::MIN_UTC;
                    poll_now = true;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = poll.tick() => poll_now = true,
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send_task(
    socket: &mut WebSocket,
    sent: &mut HashSet<TaskId>,
    task: TaskInfo,
) -> Result<(), axum::Error> {
    if !sent.insert(task.id) {
        return Ok(());
    }
    let text = serde_json::to_string(&StreamEvent::Task {
        task: Box::new(task),
    })
    .expect("event serializes");
    socket.send(Message::Text(text.into())).await
}
