//! The sending side of a transfer: walks the source tree, asks the
//! destination what it needs, and streams chunks and batches over N QUIC
//! connections x M streams.
//!
//! This module owns one attempt's tasks and the connections: it connects,
//! starts the walk ([`walk`]), the control reader and the workers
//! ([`send`]), and feeds everything they report to the [`coordinator`],
//! carrying out the actions it decides. It must not keep per-file state
//! itself (the coordinator does), and must not block an async thread: file
//! reads, stats and hashing run on the blocking pool.

mod coordinator;
mod send;
mod unit;
mod walk;

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;
use tracing::{debug, info_span, Instrument};

use crate::buffers::BufferPool;
use crate::collection::{Collection, CollectionPath};
use crate::endpoint::TransferEndpoint;
use crate::error::{CollectionError, FaultCode, TransferError, TransferFailure};
use crate::filters::Filters;
use crate::hooks::TestHooks;
use crate::progress::Progress;
use crate::spec::{
    Credential, Side, TransferReport, TransferSpec, TransferUpdate, PROGRESS_INTERVAL,
};
use crate::tls::Fingerprint;
use crate::wire::{self, ToDest, ToSource};

use coordinator::{Action, Coordinator, Finished};
use send::Shared;
use unit::{Report, Unit};
use walk::WalkMessage;

/// The source side of one transfer attempt. Cheap; build one per attempt.
pub struct SourceTask {
    spec: TransferSpec,
    collection: Collection,
    destination: SocketAddr,
    destination_fingerprint: Fingerprint,
    credential: Credential,
    hooks: TestHooks,
}

impl SourceTask {
    /// `destination` is the destination agent's transfer endpoint address,
    /// `destination_fingerprint` its certificate fingerprint, both from the service.
    pub fn new(
        spec: TransferSpec,
        collection: Collection,
        destination: SocketAddr,
        destination_fingerprint: Fingerprint,
        credential: Credential,
    ) -> Self {
        SourceTask {
            spec,
            collection,
            destination,
            destination_fingerprint,
            credential,
            hooks: TestHooks::default(),
        }
    }

    #[cfg(feature = "testsuite")]
    pub fn with_test_hooks(mut self, hooks: TestHooks) -> Self {
        self.hooks = hooks;
        self
    }
}

/// Runs the source side of one attempt to completion: `Ok` once the
/// destination confirmed every file. Dropping the future cancels the attempt
/// (connections close; the destination sees CONNECTION_RESET and keeps its
/// restart journal).
pub async fn run_source(
    endpoint: &TransferEndpoint,
    task: SourceTask,
    updates: Option<mpsc::UnboundedSender<TransferUpdate>>,
) -> Result<TransferReport, TransferFailure> {
    let span = info_span!("transfer_source", transfer_id = %task.spec.transfer_id);
    let progress = Arc::new(Progress::new(Side::Source, updates));
    let transfer_id = task.spec.transfer_id.clone();
    let result = run(endpoint, task, progress.clone()).instrument(span).await;
    match result {
        Ok((counters, deleted)) => Ok(progress.report(&transfer_id, Some(counters), deleted)),
        Err(error) => Err(TransferFailure {
            report: Box::new(progress.report(&transfer_id, None, 0)),
            error,
        }),
    }
}

/// What reaches the control loop (the walk has its own bounded channel).
enum Event {
    Control(Result<Option<ToSource>, TransferError>),
    Worker(Report),
    FinalCheck {
        id: u64,
        gen: u32,
        stat: Result<(u64, i64), CollectionError>,
    },
    Tick,
}

async fn run(
    endpoint: &TransferEndpoint,
    task: SourceTask,
    progress: Arc<Progress>,
) -> Result<Finished, TransferError> {
    let tuning = task
        .spec
        .tuning
        .validated()
        .map_err(|m| TransferError::fatal(FaultCode::InvalidPath, m))?;
    let options = task.spec.options.clone();
    let filters = Filters::new(&options.include, &options.exclude)?;
    let root = CollectionPath::parse(&task.spec.source_path)
        .map_err(|e| TransferError::from_collection(&e))?;

    // Connections first: a destination that is not there is CONNECT_FAILED.
    let (connections, mut control_send, control_recv) =
        connect(endpoint, &task, tuning.connections).await?;

    let shared = Arc::new(Shared {
        collection: task.collection.clone(),
        tuning: tuning.clone(),
        verify: options.verify_checksum,
        hooks: task.hooks.clone(),
        progress: progress.clone(),
        buffers: BufferPool::new(send::PIECE, send::MAX_IDLE_BUFFERS),
    });
    let mut tasks = JoinSet::new();
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();

    // Walker (blocking pool) -> bounded channel -> coordinator.
    let (walk_tx, mut walk_rx) = mpsc::channel::<WalkMessage>(2);
    {
        let collection = task.collection.clone();
        let recursive = task.spec.recursive;
        let skip_errors = options.skip_source_errors;
        tokio::task::spawn_blocking(move || {
            walk::walk(
                &collection,
                &root,
                recursive,
                &filters,
                skip_errors,
                &walk_tx,
            )
        });
    }
    tasks.spawn(read_control(control_recv, events_tx.clone()));
    let queue_tx = start_workers(&mut tasks, &shared, &connections, &events_tx);
    tasks.spawn(tick(events_tx.clone()));

    let mut coordinator =
        Coordinator::new(tuning, options.verify_checksum, options.skip_source_errors);
    let result = loop {
        if let Err(e) = carry_out(
            coordinator.take_actions(),
            &shared,
            &queue_tx,
            &events_tx,
            &mut control_send,
        )
        .await
        {
            break Err(e);
        }
        let event = tokio::select! {
            m = walk_rx.recv(), if coordinator.wants_entries() => match m {
                Some(m) => coordinator.on_walk(m).map(|()| None),
                None => Err(TransferError::fatal(
                    FaultCode::IoError,
                    "the source walk stopped unexpectedly",
                )),
            },
            e = events.recv() => handle(&mut coordinator, &progress, e.expect("the loop holds a sender")),
        };
        match event {
            Ok(Some(done)) => break Ok(done),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
    };
    log_connection_stats(&connections);
    close(&connections, &mut control_send, &result).await;
    tasks.shutdown().await;
    result
}

/// Starts `streams_per_connection` workers on each connection, all taking
/// units from one queue; returns the queue's sender.
fn start_workers(
    tasks: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    connections: &[Connection],
    events: &mpsc::UnboundedSender<Event>,
) -> mpsc::UnboundedSender<Unit> {
    let (queue_tx, queue_rx) = mpsc::unbounded_channel::<Unit>();
    let queue_rx = Arc::new(Mutex::new(queue_rx));
    for connection in connections {
        for _ in 0..shared.tuning.streams_per_connection {
            let (shared, connection, queue, tx) = (
                shared.clone(),
                connection.clone(),
                queue_rx.clone(),
                events.clone(),
            );
            tasks.spawn(send::worker(shared, connection, queue, tx));
        }
    }
    queue_tx
}

/// Progress ticks for the control loop, until it is gone.
async fn tick(events: mpsc::UnboundedSender<Event>) {
    let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        interval.tick().await;
        if events.send(Event::Tick).is_err() {
            break;
        }
    }
}

/// Opens the attempt's connections; connection 0 carries the control stream.
async fn connect(
    endpoint: &TransferEndpoint,
    task: &SourceTask,
    count: u32,
) -> Result<(Vec<Connection>, SendStream, RecvStream), TransferError> {
    let mut connections = Vec::new();
    let mut control = None;
    for index in 0..count {
        let (connection, send, recv) = endpoint
            .connect(
                task.destination,
                task.destination_fingerprint,
                &task.spec.transfer_id,
                &task.credential,
                index,
            )
            .await?;
        if index == 0 {
            control = Some((send, recv));
        }
        connections.push(connection);
    }
    let (send, recv) = control.expect("connection 0 exists");
    Ok((connections, send, recv))
}

/// Feeds one event to the coordinator; `Some` once the destination confirmed the end.
fn handle(
    coordinator: &mut Coordinator,
    progress: &Progress,
    event: Event,
) -> Result<Option<Finished>, TransferError> {
    match event {
        Event::Tick => progress.tick(),
        Event::Control(Ok(Some(message))) => return coordinator.on_control(message),
        Event::Control(Ok(None)) => {
            return Err(TransferError::new(
                FaultCode::ConnectionReset,
                "the destination closed the control stream",
            ));
        }
        Event::Control(Err(e)) => return Err(e),
        Event::Worker(report) => coordinator.on_report(report)?,
        Event::FinalCheck { id, gen, stat } => {
            let stat = stat.map_err(|e| TransferError::from_collection(&e));
            coordinator.on_stat(id, gen, stat)?
        }
    }
    Ok(None)
}

/// Carries out the coordinator's actions: units and stats are handed off at
/// once, frames are written in order.
async fn carry_out(
    actions: Vec<Action>,
    shared: &Shared,
    queue: &mpsc::UnboundedSender<Unit>,
    events: &mpsc::UnboundedSender<Event>,
    control: &mut SendStream,
) -> Result<(), TransferError> {
    let progress = &shared.progress;
    let counters = &progress.counters;
    let mut frames = Vec::new();
    for action in actions {
        match action {
            Action::Send(unit) => {
                let _ = queue.send(unit);
            }
            Action::Stat { id, gen, path } => {
                let (collection, events) = (shared.collection.clone(), events.clone());
                tokio::task::spawn_blocking(move || {
                    let stat = send::stat_file(&collection, &path);
                    let _ = events.send(Event::FinalCheck { id, gen, stat });
                });
            }
            Action::Frame(frame) => frames.push(frame),
            Action::Listed { size } => {
                Progress::add(&counters.files_total, 1);
                Progress::add(&counters.bytes_total, size);
            }
            Action::Done { size, checksum } => {
                Progress::add(&counters.files, 1);
                if let Some(checksum) = checksum {
                    Progress::add(&counters.bytes_verified, size);
                    progress.checksum(checksum);
                }
            }
            Action::Event(event) => progress.event(event),
        }
    }
    for frame in frames {
        wire::write_frame(control, &frame).await?;
    }
    Ok(())
}

fn log_connection_stats(connections: &[Connection]) {
    for (index, c) in connections.iter().enumerate() {
        let stats = c.stats();
        debug!(
            index,
            mtu = stats.path.current_mtu,
            sent_packets = stats.path.sent_packets,
            lost_packets = stats.path.lost_packets,
            congestion_events = stats.path.congestion_events,
            probes = stats.path.sent_plpmtud_probes,
            lost_probes = stats.path.lost_plpmtud_probes,
            black_holes = stats.path.black_holes_detected,
            cwnd = stats.path.cwnd,
            rtt_us = stats.path.rtt.as_micros() as u64,
            datagrams = stats.udp_tx.datagrams,
            ios = stats.udp_tx.ios,
            "connection stats"
        );
    }
}

/// Ends the attempt on the wire: a clean close after success; otherwise the
/// error is sent to the destination (unless the connection is what failed)
/// before the connections are closed.
async fn close(
    connections: &[Connection],
    control_send: &mut SendStream,
    result: &Result<Finished, TransferError>,
) {
    let close_all = |code: u32, reason: &[u8]| {
        for c in connections {
            c.close(VarInt::from_u32(code), reason);
        }
    };
    match result {
        Ok(_) => {
            let _ = control_send.finish();
            close_all(wire::CLOSE_DONE, b"done");
        }
        Err(e) => {
            if e.code != FaultCode::ConnectionReset {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    wire::write_frame(control_send, &ToDest::Abort(e.clone())),
                )
                .await;
            }
            close_all(wire::CLOSE_ABORT, e.message.as_bytes());
        }
    }
}

async fn read_control(mut recv: RecvStream, events: mpsc::UnboundedSender<Event>) {
    loop {
        let message = wire::read_frame::<ToSource>(&mut recv).await;
        let stop = !matches!(message, Ok(Some(_)));
        if events.send(Event::Control(message)).is_err() || stop {
            break;
        }
    }
}
