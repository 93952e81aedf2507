//! The link of a per-user child agent to its multi-user root agent: instead
//! of a WebSocket to the service, one TCP connection to the dispatcher the
//! root runs for this user, on which the child speaks the worker channel as
//! one large worker ([`UPSTREAM_CAPACITY`] task slots).
//!
//! It is translated to the agent loop's [`ChannelEvent`]s, so the child runs
//! the ordinary agent (its own dispatcher, local workers, scheduler blocks
//! submitted as its user): `Run` arrives as `ServiceFrame::Tasks`, `Cancel`
//! as `ServiceFrame::Cancel`; `AgentFrame::Started` and `Results` go up as
//! worker frames and are acknowledged at once (the root keeps results until
//! the service has them), heartbeats go up as `WorkerFrame::Status`.
//!
//! When the root closes the connection or sends `Shutdown`, the child stops:
//! it exists only for its root.

use std::net::SocketAddr;

use lattice_protocol::frames::{AgentFrame, DispatcherFrame, ServiceFrame, WorkerFrame};
use lattice_protocol::WorkerId;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::channel::ChannelEvent;
use crate::wire::{read_frame, write_frame};

/// Tasks the root may hand a child at once; the child queues them and its
/// own dispatcher and scheduler blocks decide when they run.
pub(crate) const UPSTREAM_CAPACITY: u32 = 256;

/// Connects to the root's dispatcher at `address` and serves the link until
/// either side ends it; `lost` fires then (the child should stop).
pub(crate) async fn spawn(
    address: SocketAddr,
    events: mpsc::UnboundedSender<ChannelEvent>,
    lost: oneshot::Sender<String>,
) -> std::io::Result<JoinHandle<()>> {
    let stream = TcpStream::connect(address).await?;
    let _ = stream.set_nodelay(true);
    let (read_half, mut write_half) = stream.into_split();
    let hostname = crate::hostname();
    let pid = std::process::id();
    write_frame(
        &mut write_half,
        &WorkerFrame::Hello {
            worker_id: WorkerId::new(),
            capacity: UPSTREAM_CAPACITY,
            hostname,
            pid,
            block_id: None,
        },
    )
    .await
    .map_err(std::io::Error::other)?;
    tracing::info!(root = %address, "connected to the multi-user root agent");

    Ok(tokio::spawn(async move {
        let (up_tx, mut up_rx) = mpsc::unbounded_channel::<AgentFrame>();
        if events.send(ChannelEvent::Up { sender: up_tx }).is_err() {
            return;
        }
        let ack_events = events.clone();
        let writer = tokio::spawn(async move {
            while let Some(frame) = up_rx.recv().await {
                let (frames, acked) = translate_up(frame);
                for frame in &frames {
                    if let Err(e) = write_frame(&mut write_half, frame).await {
                        return format!("writing to the root agent: {e}");
                    }
                }
                if !acked.is_empty() {
                    // Written to the root, which keeps them until the service
                    // has them; if the root goes, so does this child.
                    let _ = ack_events.send(ChannelEvent::Frame(ServiceFrame::ResultsAck {
                        task_ids: acked,
                    }));
                }
            }
            let _ = write_half.shutdown().await;
            "the agent stopped".to_owned()
        });
        let mut reader = BufReader::new(read_half);
        let mut lost = Some(lost);
        let reason = loop {
            match read_frame::<DispatcherFrame>(&mut reader).await {
                Ok(Some(DispatcherFrame::Run { task })) => {
                    let frame = ServiceFrame::Tasks { tasks: vec![task] };
                    if events.send(ChannelEvent::Frame(frame)).is_err() {
                        break "the agent stopped".to_owned();
                    }
                }
                Ok(Some(DispatcherFrame::Cancel { task_id })) => {
                    let frame = ServiceFrame::Cancel {
                        task_ids: vec![task_id],
                    };
                    if events.send(ChannelEvent::Frame(frame)).is_err() {
                        break "the agent stopped".to_owned();
                    }
                }
                Ok(Some(DispatcherFrame::Shutdown)) => {
                    // Stop taking tasks, but keep the link so that results of
                    // running ones still go up during the shutdown grace.
                    if let Some(lost) = lost.take() {
                        let _ =
                            lost.send("the root agent asked this user agent to stop".to_owned());
                    }
                }
                Ok(None) => break "the root agent closed the connection".to_owned(),
                Err(e) => break format!("reading from the root agent: {e}"),
            }
        };
        writer.abort();
        tracing::info!("{reason}; stopping");
        let _ = events.send(ChannelEvent::Down {
            reason: reason.clone(),
        });
        if let Some(lost) = lost {
            let _ = lost.send(reason);
        }
    }))
}

/// The worker frames an agent frame becomes upstream, and the ids of the
/// results among them (acknowledged once written).
fn translate_up(frame: AgentFrame) -> (Vec<WorkerFrame>, Vec<lattice_protocol::TaskId>) {
    match frame {
        AgentFrame::Started { tasks } => (
            tasks
                .into_iter()
                .map(|t| WorkerFrame::Started {
                    task_id: t.task_id,
                    at: t.at,
                })
                .collect(),
            Vec::new(),
        ),
        AgentFrame::Results { results } => {
            let ids = results.iter().map(|r| r.task_id).collect();
            (
                results
                    .into_iter()
                    .map(|outcome| WorkerFrame::Result { outcome })
                    .collect(),
                ids,
            )
        }
        AgentFrame::Heartbeat {
            workers,
            blocks,
            provider_error,
            ..
        } => (
            vec![WorkerFrame::Status {
                workers,
                blocks,
                provider_error,
            }],
            Vec::new(),
        ),
        // Flow control is the root dispatcher's (by capacity); the hello was
        // the worker hello above.
        AgentFrame::Credit { .. } | AgentFrame::Hello { .. } => (Vec::new(), Vec::new()),
        // A user agent hosts no collections (its config has none).
        AgentFrame::Collections { .. }
        | AgentFrame::FileOpResult { .. }
        | AgentFrame::Transfer { .. } => {
            tracing::debug!("a user agent does not relay data-plane frames");
            (Vec::new(), Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use lattice_protocol::frames::{OutcomeStatus, TaskOutcome, TaskStarted};
    use lattice_protocol::TaskId;

    #[test]
    fn results_go_up_one_by_one_and_are_acknowledged() {
        let id = TaskId::new();
        let outcome = TaskOutcome {
            task_id: id,
            attempt: 1,
            status: OutcomeStatus::Success,
            result: None,
            error: None,
            worker: None,
            started_at: None,
            finished_at: Utc::now(),
        };
        let (frames, acked) = translate_up(AgentFrame::Results {
            results: vec![outcome.clone()],
        });
        assert_eq!(frames, vec![WorkerFrame::Result { outcome }]);
        assert_eq!(acked, vec![id]);
        let at = Utc::now();
        let (frames, acked) = translate_up(AgentFrame::Started {
            tasks: vec![TaskStarted {
                task_id: id,
                worker: "w".into(),
                at,
            }],
        });
        assert_eq!(frames, vec![WorkerFrame::Started { task_id: id, at }]);
        assert!(acked.is_empty());
        let (frames, _) = translate_up(AgentFrame::Credit { credits: 8 });
        assert!(frames.is_empty());
    }
}
