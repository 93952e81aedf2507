//! The sending side of a transfer: walks the source tree, asks the
//! destination what it needs, and streams chunks and batches over N QUIC
//! connections x M streams.
//!
//! One coordinator task owns all per-file state and selects over a closed
//! [`Event`] enum; workers only read, hash and send. File reads and hashing
//! run on the blocking pool.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use bytes::Bytes;
use quinn::{Connection, RecvStream, VarInt};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;
use tracing::{debug, info_span, Instrument};

use crate::buffers::BufferPool;
use crate::checksum::{self, chunk_count, chunk_len};
use crate::collection::{Collection, CollectionPath};
use crate::endpoint::TransferEndpoint;
use crate::error::{CollectionError, FaultCode, TransferError, TransferFailure};
use crate::filters::Filters;
use crate::hooks::{FileCallback, TestHooks};
use crate::progress::Progress;
use crate::spec::{
    Credential, FileChecksum, Side, TransferEvent, TransferReport, TransferSpec, TransferUpdate,
    Tuning, PROGRESS_INTERVAL,
};
use crate::tls::Fingerprint;
use crate::wire::{
    self, BatchFile, BatchResult, PlanItem, ToDest, ToSource, UnitHeader, WireEntry,
};

/// Bytes read (and written to a stream) at a time.
const PIECE: usize = 1 << 20;
/// Idle read buffers kept for reuse (at most this many MiB stay allocated).
const MAX_IDLE_BUFFERS: usize = 48;
/// Manifest entries per message.
const MANIFEST_BATCH: usize = 1024;
/// Manifest messages the destination may have unanswered.
const MAX_PENDING_PLANS: usize = 4;
/// How often a file that keeps changing is re-read before it counts as a source error.
const MAX_CHANGE_RETRIES: u32 = 3;

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

/// What workers need, shared read-only.
struct Shared {
    collection: Collection,
    tuning: Tuning,
    verify: bool,
    hooks: TestHooks,
    progress: Arc<Progress>,
    skip_source_errors: bool,
    /// Read buffers of `PIECE` bytes, back from quinn once acknowledged.
    buffers: Arc<BufferPool>,
}

#[derive(Debug)]
enum Unit {
    Chunk {
        id: u64,
        gen: u32,
        index: u32,
        path: Arc<CollectionPath>,
        rel: Arc<str>,
        size: u64,
        mtime_ns: i64,
        /// Resume: the destination holds this chunk with this value; send only if ours differs.
        expect: Option<[u8; 32]>,
    },
    Batch {
        unit: u64,
        files: Vec<BatchItem>,
    },
    Compare {
        id: u64,
        path: Arc<CollectionPath>,
        dest_hash: [u8; 32],
    },
}

#[derive(Debug, Clone)]
struct BatchItem {
    id: u64,
    path: Arc<CollectionPath>,
    rel: Arc<str>,
    size: u64,
    mtime_ns: i64,
}

enum Report {
    ChunkDone {
        id: u64,
        gen: u32,
        index: u32,
        cv: [u8; 32],
        sent: bool,
    },
    ChunkChanged {
        id: u64,
        gen: u32,
        index: u32,
    },
    BatchSent,
    Compared {
        id: u64,
        equal: bool,
    },
    SourceError {
        id: u64,
        error: TransferError,
    },
    Event(TransferEvent),
    Fatal(TransferError),
}

enum WalkMessage {
    Entries(Vec<(WireEntry, Arc<CollectionPath>)>),
    Error(TransferError),
    /// A directory that could not be read, skipped per the options.
    Skipped {
        path: String,
        error: TransferError,
    },
    End,
}

enum Event {
    Walk(Option<WalkMessage>),
    Control(Result<Option<ToSource>, TransferError>),
    Worker(Report),
    FinalCheck {
        id: u64,
        gen: u32,
        stat: Result<(u64, i64), CollectionError>,
    },
    Tick,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    AwaitPlan,
    Chunks,
    Batched,
    Comparing,
    Ending,
}

struct SrcFile {
    path: Arc<CollectionPath>,
    rel: Arc<str>,
    size: u64,
    mtime_ns: i64,
    gen: u32,
    phase: Phase,
    cvs: Vec<Option<[u8; 32]>>,
    acked: Vec<bool>,
    dirty: bool,
    retries: u32,
}

impl SrcFile {
    fn reset_chunks(&mut self, chunk_size: u64) {
        let n = chunk_count(self.size, chunk_size) as usize;
        self.cvs = vec![None; n];
        self.acked = vec![false; n];
        self.dirty = false;
    }

    fn complete(&self) -> bool {
        self.acked.iter().all(|a| *a) && self.cvs.iter().all(Option::is_some)
    }
}

async fn run(
    endpoint: &TransferEndpoint,
    task: SourceTask,
    progress: Arc<Progress>,
) -> Result<(crate::spec::TransferCounters, u64), TransferError> {
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
    let mut connections = Vec::new();
    let mut control = None;
    for index in 0..tuning.connections {
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
    let (mut control_send, control_recv) = control.expect("connection 0 exists");
    let close_all = |code: u32, reason: &[u8]| {
        for c in &connections {
            c.close(VarInt::from_u32(code), reason);
        }
    };

    let shared = Arc::new(Shared {
        collection: task.collection.clone(),
        tuning: tuning.clone(),
        verify: options.verify_checksum,
        hooks: task.hooks.clone(),
        progress: progress.clone(),
        skip_source_errors: options.skip_source_errors,
        buffers: BufferPool::new(PIECE, MAX_IDLE_BUFFERS),
    });
    let mut tasks = JoinSet::new();
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();

    // Walker (blocking pool) -> bounded channel -> coordinator.
    let (walk_tx, mut walk_rx) = mpsc::channel::<WalkMessage>(2);
    {
        let collection = task.collection.clone();
        let recursive = task.spec.recursive;
        let skip_errors = options.skip_source_errors;
        let root = root.clone();
        tokio::task::spawn_blocking(move || {
            walk(
                &collection,
                &root,
                recursive,
                &filters,
                skip_errors,
                &walk_tx,
            )
        });
    }
    // Control reader.
    {
        let tx = events_tx.clone();
        tasks.spawn(read_control(control_recv, tx));
    }
    // Workers.
    let (queue_tx, queue_rx) = mpsc::unbounded_channel::<Unit>();
    let queue_rx = Arc::new(Mutex::new(queue_rx));
    for connection in &connections {
        for _ in 0..tuning.streams_per_connection {
            let (shared, connection, queue, tx) = (
                shared.clone(),
                connection.clone(),
                queue_rx.clone(),
                events_tx.clone(),
            );
            tasks.spawn(worker(shared, connection, queue, tx));
        }
    }
    // Ticker.
    {
        let tx = events_tx.clone();
        tasks.spawn(async move {
            let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
            loop {
                interval.tick().await;
                if tx.send(Event::Tick).is_err() {
                    break;
                }
            }
        });
    }

    let mut coordinator = Coordinator::new(shared.clone(), queue_tx, events_tx.clone());

    let result = loop {
        let mut write_failed = None;
        for message in coordinator.outgoing.drain(..) {
            if let Err(e) = wire::write_frame(&mut control_send, &message).await {
                write_failed = Some(e);
                break;
            }
        }
        if let Some(e) = write_failed {
            break Err(e);
        }
        if !coordinator.finishing && coordinator.all_done() {
            coordinator.finishing = true;
            debug!("all files confirmed, finishing");
            if let Err(e) = wire::write_frame(&mut control_send, &ToDest::Finish).await {
                break Err(e);
            }
        }
        let can_walk = !coordinator.walk_done && coordinator.pending_plans < MAX_PENDING_PLANS;
        let event = tokio::select! {
            m = walk_rx.recv(), if can_walk => Event::Walk(m),
            e = events.recv() => e.expect("the coordinator holds a sender"),
        };
        match coordinator.handle(event) {
            Ok(Some(done)) => break Ok(done),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
    };
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
    match &result {
        Ok(_) => {
            let _ = control_send.finish();
            close_all(wire::CLOSE_DONE, b"done");
        }
        Err(e) => {
            if e.code != FaultCode::ConnectionReset {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    wire::write_frame(&mut control_send, &ToDest::Abort(e.clone())),
                )
                .await;
            }
            close_all(wire::CLOSE_ABORT, e.message.as_bytes());
        }
    }
    tasks.shutdown().await;
    result
}

struct Coordinator {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Unit>,
    events: mpsc::UnboundedSender<Event>,
    files: HashMap<u64, SrcFile>,
    pending_plans: usize,
    walk_done: bool,
    batch: Vec<BatchItem>,
    batch_bytes: u64,
    next_unit: u64,
    batches_in_flight: HashSet<u64>,
    outgoing: Vec<ToDest>,
    finishing: bool,
}

impl Coordinator {
    fn new(
        shared: Arc<Shared>,
        queue: mpsc::UnboundedSender<Unit>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        Coordinator {
            shared,
            queue,
            events,
            files: HashMap::new(),
            pending_plans: 0,
            walk_done: false,
            batch: Vec::new(),
            batch_bytes: 0,
            next_unit: 0,
            batches_in_flight: HashSet::new(),
            outgoing: Vec::new(),
            finishing: false,
        }
    }

    fn all_done(&self) -> bool {
        self.walk_done
            && self.pending_plans == 0
            && self.files.is_empty()
            && self.batch.is_empty()
            && self.batches_in_flight.is_empty()
    }

    fn event(&mut self, code: FaultCode, path: Option<&str>, message: String) {
        let event = TransferEvent::new(Side::Source, code, path.map(str::to_string), message);
        self.shared.progress.event(event.clone());
        self.outgoing.push(ToDest::Event(event));
    }

    /// Returns the destination's final counters once it confirmed the end.
    fn handle(
        &mut self,
        event: Event,
    ) -> Result<Option<(crate::spec::TransferCounters, u64)>, TransferError> {
        match event {
            Event::Tick => self.shared.progress.tick(),
            Event::Walk(None) => {
                return Err(TransferError::fatal(
                    FaultCode::IoError,
                    "the source walk stopped unexpectedly",
                ));
            }
            Event::Walk(Some(WalkMessage::End)) => {
                self.walk_done = true;
                self.outgoing.push(ToDest::ManifestEnd);
            }
            Event::Walk(Some(WalkMessage::Error(error))) => return Err(error),
            Event::Walk(Some(WalkMessage::Skipped { path, error })) => {
                self.event(
                    error.code,
                    Some(&path),
                    format!("skipped: {}", error.message),
                );
            }
            Event::Walk(Some(WalkMessage::Entries(entries))) => self.manifest(entries),
            Event::Control(Ok(Some(message))) => return self.control(message),
            Event::Control(Ok(None)) => {
                return Err(TransferError::new(
                    FaultCode::ConnectionReset,
                    "the destination closed the control stream",
                ));
            }
            Event::Control(Err(e)) => return Err(e),
            Event::Worker(report) => self.worker(report)?,
            Event::FinalCheck { id, gen, stat } => self.final_check(id, gen, stat)?,
        }
        Ok(None)
    }

    fn manifest(&mut self, entries: Vec<(WireEntry, Arc<CollectionPath>)>) {
        let progress = &self.shared.progress;
        let mut wire_entries = Vec::with_capacity(entries.len());
        for (entry, path) in entries {
            if !entry.dir {
                Progress::add(&progress.counters.files_total, 1);
                Progress::add(&progress.counters.bytes_total, entry.size);
                self.files.insert(
                    entry.id,
                    SrcFile {
                        path,
                        rel: Arc::from(String::from_utf8_lossy(&entry.path).as_ref()),
                        size: entry.size,
                        mtime_ns: entry.mtime_ns,
                        gen: 0,
                        phase: Phase::AwaitPlan,
                        cvs: Vec::new(),
                        acked: Vec::new(),
                        dirty: false,
                        retries: 0,
                    },
                );
            }
            wire_entries.push(entry);
        }
        self.pending_plans += 1;
        self.outgoing.push(ToDest::Manifest {
            entries: wire_entries,
        });
    }

    fn control(
        &mut self,
        message: ToSource,
    ) -> Result<Option<(crate::spec::TransferCounters, u64)>, TransferError> {
        match message {
            ToSource::Plan { items } => {
                self.pending_plans = self.pending_plans.saturating_sub(1);
                for (id, item) in items {
                    self.plan(id, item)?;
                }
                self.flush_batch();
            }
            ToSource::ChunkAck { id, gen, index, ok } => {
                let Some(file) = self.files.get_mut(&id) else {
                    return Ok(None);
                };
                if file.gen != gen || file.phase != Phase::Chunks {
                    return Ok(None);
                }
                // The peer names the chunk: one past the file is a lie, not
                // a reason to index out of bounds.
                if index as usize >= file.acked.len() {
                    return Err(TransferError::protocol(format!(
                        "the destination acknowledged chunk {index} of file {id}, which has {} chunks",
                        file.acked.len()
                    )));
                }
                if ok {
                    file.acked[index as usize] = true;
                    self.maybe_complete(id);
                } else {
                    // The destination recorded VERIFY_CHECKSUM; send the chunk again.
                    let unit = chunk_unit(id, file, index, None);
                    self.send_unit(unit);
                }
            }
            ToSource::BatchAck { unit, results } => {
                self.batches_in_flight.remove(&unit);
                for (id, result) in results {
                    match result {
                        BatchResult::Done { hash } => {
                            if let Some(file) = self.files.remove(&id) {
                                self.file_done(&file, hash);
                            }
                        }
                        BatchResult::Mismatch => {
                            if let Some(file) = self.files.get(&id) {
                                let item = BatchItem {
                                    id,
                                    path: file.path.clone(),
                                    rel: file.rel.clone(),
                                    size: file.size,
                                    mtime_ns: file.mtime_ns,
                                };
                                self.add_to_batch(item);
                            }
                        }
                    }
                }
                self.flush_batch();
            }
            ToSource::FileDone { id, hash } => {
                if let Some(file) = self.files.remove(&id) {
                    self.file_done(&file, hash);
                }
            }
            ToSource::FileFailed { id } => {
                if let Some(file) = self.files.get_mut(&id) {
                    file.gen += 1;
                    self.restart_chunks(id);
                }
            }
            ToSource::Event(event) => self.shared.progress.event(event),
            ToSource::Finished { counters, deleted } => {
                if !self.finishing {
                    return Err(TransferError::protocol("the destination finished early"));
                }
                return Ok(Some((counters, deleted)));
            }
            ToSource::Abort(error) => return Err(error),
        }
        Ok(None)
    }

    fn file_done(&mut self, file: &SrcFile, hash: [u8; 32]) {
        let progress = &self.shared.progress;
        Progress::add(&progress.counters.files, 1);
        if self.shared.verify {
            Progress::add(&progress.counters.bytes_verified, file.size);
            progress.checksum(FileChecksum {
                path: file.rel.to_string(),
                size: file.size,
                blake3: checksum::to_hex(&hash),
            });
        }
    }

    fn plan(&mut self, id: u64, item: PlanItem) -> Result<(), TransferError> {
        let small_limit = self.shared.tuning.small_file_limit;
        let chunk_size = self.shared.tuning.chunk_size;
        match item {
            PlanItem::Skip { .. } => {
                self.files.remove(&id);
            }
            PlanItem::SendUnlessHash { hash } => {
                let Some(file) = self.files.get_mut(&id) else {
                    return Err(TransferError::protocol(format!(
                        "plan for unknown file {id}"
                    )));
                };
                file.phase = Phase::Comparing;
                let unit = Unit::Compare {
                    id,
                    path: file.path.clone(),
                    dest_hash: hash,
                };
                self.send_unit(unit);
            }
            PlanItem::Send { have } => {
                let Some(file) = self.files.get_mut(&id) else {
                    return Err(TransferError::protocol(format!(
                        "plan for unknown file {id}"
                    )));
                };
                if file.size <= small_limit && have.is_empty() {
                    file.phase = Phase::Batched;
                    let item = BatchItem {
                        id,
                        path: file.path.clone(),
                        rel: file.rel.clone(),
                        size: file.size,
                        mtime_ns: file.mtime_ns,
                    };
                    self.add_to_batch(item);
                    return Ok(());
                }
                file.phase = Phase::Chunks;
                file.reset_chunks(chunk_size);
                let have: HashMap<u32, [u8; 32]> = have.into_iter().collect();
                let units: Vec<Unit> = (0..file.cvs.len() as u32)
                    .map(|index| chunk_unit(id, file, index, have.get(&index).copied()))
                    .collect();
                for unit in units {
                    self.send_unit(unit);
                }
            }
        }
        Ok(())
    }

    fn add_to_batch(&mut self, item: BatchItem) {
        let tuning = &self.shared.tuning;
        if !self.batch.is_empty()
            && (self.batch.len() as u32 >= tuning.batch_files
                || self.batch_bytes + item.size > tuning.batch_bytes)
        {
            self.flush_batch();
        }
        self.batch_bytes += item.size;
        self.batch.push(item);
    }

    fn flush_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let unit = self.next_unit;
        self.next_unit += 1;
        self.batches_in_flight.insert(unit);
        self.batch_bytes = 0;
        let files = std::mem::take(&mut self.batch);
        self.send_unit(Unit::Batch { unit, files });
    }

    fn send_unit(&self, unit: Unit) {
        let _ = self.queue.send(unit);
    }

    fn restart_chunks(&mut self, id: u64) {
        let chunk_size = self.shared.tuning.chunk_size;
        let Some(file) = self.files.get_mut(&id) else {
            return;
        };
        file.phase = Phase::Chunks;
        file.reset_chunks(chunk_size);
        let units: Vec<Unit> = (0..file.cvs.len() as u32)
            .map(|index| chunk_unit(id, file, index, None))
            .collect();
        for unit in units {
            self.send_unit(unit);
        }
    }

    fn maybe_complete(&mut self, id: u64) {
        let Some(file) = self.files.get_mut(&id) else {
            return;
        };
        if file.phase != Phase::Chunks || !file.complete() {
            return;
        }
        file.phase = Phase::Ending;
        let (collection, path, gen) = (self.shared.collection.clone(), file.path.clone(), file.gen);
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let stat = stat_file(&collection, &path);
            let _ = events.send(Event::FinalCheck { id, gen, stat });
        });
    }

    fn final_check(
        &mut self,
        id: u64,
        gen: u32,
        stat: Result<(u64, i64), CollectionError>,
    ) -> Result<(), TransferError> {
        let chunk_size = self.shared.tuning.chunk_size;
        let Some(file) = self.files.get_mut(&id) else {
            return Ok(());
        };
        if file.gen != gen {
            return Ok(());
        }
        let (size, mtime_ns) = match stat {
            Ok(s) => s,
            Err(e) => return self.source_error(id, TransferError::from_collection(&e)),
        };
        if !file.dirty && size == file.size && mtime_ns == file.mtime_ns {
            let cvs: Vec<[u8; 32]> = file.cvs.iter().map(|cv| cv.expect("complete")).collect();
            let hash = checksum::file_hash(file.size, chunk_size, &cvs);
            self.outgoing.push(ToDest::FileEnd {
                id,
                gen,
                size,
                mtime_ns,
                hash,
            });
            return Ok(());
        }
        let rel = file.rel.clone();
        file.retries += 1;
        let message = format!(
            "changed while it was read ({} -> {size} bytes); reading it again",
            file.size
        );
        if file.retries > MAX_CHANGE_RETRIES {
            let error = TransferError::new(
                FaultCode::FileSizeChanged,
                format!("`{rel}` keeps changing while it is read"),
            );
            return self.source_error(id, error);
        }
        file.gen += 1;
        file.size = size;
        file.mtime_ns = mtime_ns;
        self.event(FaultCode::FileSizeChanged, Some(&rel), message);
        self.restart_chunks(id);
        Ok(())
    }

    /// A source file that vanished or cannot be read: skipped (with an
    /// event) when the options say so, otherwise the attempt fails.
    fn source_error(&mut self, id: u64, error: TransferError) -> Result<(), TransferError> {
        let Some(file) = self.files.remove(&id) else {
            return Ok(());
        };
        if !self.skip_source_errors() {
            return Err(TransferError {
                message: format!("`{}`: {}", file.rel, error.message),
                ..error
            });
        }
        self.event(
            error.code,
            Some(&file.rel),
            format!("skipped: {}", error.message),
        );
        self.outgoing.push(ToDest::FileSkipped { id, equal: false });
        Ok(())
    }

    fn skip_source_errors(&self) -> bool {
        self.shared.skip_source_errors
    }

    fn worker(&mut self, report: Report) -> Result<(), TransferError> {
        match report {
            Report::ChunkDone {
                id,
                gen,
                index,
                cv,
                sent,
            } => {
                let Some(file) = self.files.get_mut(&id) else {
                    return Ok(());
                };
                if file.gen != gen || file.phase != Phase::Chunks {
                    return Ok(());
                }
                file.cvs[index as usize] = Some(cv);
                if !sent {
                    file.acked[index as usize] = true;
                }
                self.maybe_complete(id);
            }
            Report::ChunkChanged { id, gen, index } => {
                let Some(file) = self.files.get_mut(&id) else {
                    return Ok(());
                };
                if file.gen != gen || file.phase != Phase::Chunks {
                    return Ok(());
                }
                file.dirty = true;
                file.cvs[index as usize] = Some([0; 32]);
                file.acked[index as usize] = true;
                self.maybe_complete(id);
            }
            Report::BatchSent => {}
            Report::Compared { id, equal } => {
                if equal {
                    self.files.remove(&id);
                    self.outgoing.push(ToDest::FileSkipped { id, equal: true });
                } else {
                    self.plan(id, PlanItem::Send { have: Vec::new() })?;
                    self.flush_batch();
                }
            }
            Report::SourceError { id, error } => self.source_error(id, error)?,
            Report::Event(event) => {
                self.shared.progress.event(event.clone());
                self.outgoing.push(ToDest::Event(event));
            }
            Report::Fatal(error) => return Err(error),
        }
        Ok(())
    }
}

fn chunk_unit(id: u64, file: &SrcFile, index: u32, expect: Option<[u8; 32]>) -> Unit {
    Unit::Chunk {
        id,
        gen: file.gen,
        index,
        path: file.path.clone(),
        rel: file.rel.clone(),
        size: file.size,
        mtime_ns: file.mtime_ns,
        expect,
    }
}

fn std_mtime_ns(metadata: &std::fs::Metadata) -> i64 {
    metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec()
}

fn open_file(
    collection: &Collection,
    path: &CollectionPath,
) -> Result<std::fs::File, CollectionError> {
    collection
        .dir()
        .open(path.as_relative())
        .map(|f| f.into_std())
        .map_err(|e| CollectionError::from_io("open", path.to_string(), e))
}

fn stat_file(
    collection: &Collection,
    path: &CollectionPath,
) -> Result<(u64, i64), CollectionError> {
    let file = open_file(collection, path)?;
    let metadata = file
        .metadata()
        .map_err(|e| CollectionError::from_io("stat", path.to_string(), e))?;
    Ok((metadata.len(), std_mtime_ns(&metadata)))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
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

async fn worker(
    shared: Arc<Shared>,
    connection: Connection,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Unit>>>,
    events: mpsc::UnboundedSender<Event>,
) {
    loop {
        let unit = { queue.lock().await.recv().await };
        let Some(unit) = unit else { break };
        let report = |r: Report| {
            let _ = events.send(Event::Worker(r));
        };
        let result = match unit {
            Unit::Chunk {
                id,
                gen,
                index,
                path,
                rel,
                size,
                mtime_ns,
                expect,
            } => {
                send_chunk(
                    &shared,
                    &connection,
                    id,
                    gen,
                    index,
                    &path,
                    &rel,
                    size,
                    mtime_ns,
                    expect,
                    &report,
                )
                .await
            }
            Unit::Batch { unit, files } => {
                send_batch(&shared, &connection, unit, files, &report).await
            }
            Unit::Compare {
                id,
                path,
                dest_hash,
            } => {
                let collection = shared.collection.clone();
                match blocking(move || hash_file(&collection, &path)).await {
                    Ok(hash) => report(Report::Compared {
                        id,
                        equal: hash == dest_hash,
                    }),
                    Err(e) => report(Report::SourceError {
                        id,
                        error: TransferError::from_collection(&e),
                    }),
                }
                Ok(())
            }
        };
        if let Err(error) = result {
            report(Report::Fatal(error));
            break;
        }
    }
}

fn hash_file(collection: &Collection, path: &CollectionPath) -> Result<[u8; 32], CollectionError> {
    let mut file = open_file(collection, path)?;
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(&mut file)
        .map_err(|e| CollectionError::from_io("read", path.to_string(), e))?;
    Ok(*hasher.finalize().as_bytes())
}

#[allow(clippy::too_many_arguments)]
async fn send_chunk(
    shared: &Shared,
    connection: &Connection,
    id: u64,
    gen: u32,
    index: u32,
    path: &Arc<CollectionPath>,
    rel: &Arc<str>,
    size: u64,
    mtime_ns: i64,
    expect: Option<[u8; 32]>,
    report: &impl Fn(Report),
) -> Result<(), TransferError> {
    let chunk_size = shared.tuning.chunk_size;
    let len = chunk_len(size, chunk_size, index);
    let offset = index as u64 * chunk_size;
    let (collection, open_path) = (shared.collection.clone(), path.clone());
    let before_read = shared
        .hooks
        .before_read
        .as_ref()
        .map(|hook| (hook.clone(), rel.clone()));
    let opened = blocking(
        move || -> Result<(std::fs::File, u64, i64), CollectionError> {
            if let Some((hook, rel)) = &before_read {
                hook(rel);
            }
            let file = open_file(&collection, &open_path)?;
            let metadata = file
                .metadata()
                .map_err(|e| CollectionError::from_io("stat", open_path.to_string(), e))?;
            Ok((file, metadata.len(), std_mtime_ns(&metadata)))
        },
    )
    .await;
    let file = match opened {
        Ok((file, now_size, now_mtime)) if now_size == size && now_mtime == mtime_ns => {
            Arc::new(file)
        }
        Ok(_) => {
            report(Report::ChunkChanged { id, gen, index });
            return Ok(());
        }
        Err(e) => {
            report(Report::SourceError {
                id,
                error: TransferError::from_collection(&e),
            });
            return Ok(());
        }
    };

    if let Some(expected) = expect {
        let file = file.clone();
        let local = blocking(move || -> std::io::Result<[u8; 32]> {
            let mut hasher = checksum::chunk_hasher(size, chunk_size, index);
            let mut buf = vec![0u8; PIECE];
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(PIECE as u64) as usize;
                file.read_exact_at(&mut buf[..n], offset + done)?;
                hasher.update(&buf[..n]);
                done += n as u64;
            }
            Ok(checksum::finish_chunk(&hasher, size, chunk_size))
        })
        .await;
        if let Ok(cv) = local {
            if cv == expected {
                report(Report::ChunkDone {
                    id,
                    gen,
                    index,
                    cv,
                    sent: false,
                });
                return Ok(());
            }
        }
    }

    let mut stream = connection
        .open_uni()
        .await
        .map_err(|e| wire::connection_error(&e))?;
    wire::write_frame(
        &mut stream,
        &UnitHeader::Chunk {
            id,
            gen,
            index,
            file_size: size,
            mtime_ns,
            len,
        },
    )
    .await?;
    let verify = shared.verify;
    let mut hasher = verify.then(|| checksum::chunk_hasher(size, chunk_size, index));
    let corrupt = shared
        .hooks
        .corrupt_chunk
        .as_ref()
        .is_some_and(|f| f(rel, index));
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(PIECE as u64) as usize;
        let file = file.clone();
        let at = offset + done;
        let pool = shared.buffers.clone();
        let (result, returned) = blocking(move || {
            let mut buf = pool.take();
            let result = file.read_exact_at(&mut buf[..n], at).map(|()| {
                if let Some(h) = hasher.as_mut() {
                    h.update(&buf[..n]);
                }
                pool.freeze(buf, n)
            });
            (result, hasher)
        })
        .await;
        hasher = returned;
        let mut piece = match result {
            Ok(piece) => piece,
            Err(_) => {
                // The file shrank under us.
                let _ = stream.reset(VarInt::from_u32(wire::RESET_SOURCE_CHANGED));
                report(Report::ChunkChanged { id, gen, index });
                return Ok(());
            }
        };
        if corrupt && done == 0 {
            let mut bad = piece.to_vec();
            bad[0] ^= 0xff;
            piece = Bytes::from(bad);
        }
        stream.write_chunk(piece).await.map_err(wire::write_error)?;
        Progress::add(&shared.progress.counters.bytes_transferred, n as u64);
        done += n as u64;
    }
    let cv = hasher
        .map(|h| checksum::finish_chunk(&h, size, chunk_size))
        .unwrap_or([0; 32]);
    stream.write_all(&cv).await.map_err(wire::write_error)?;
    let _ = stream.finish();
    if let Some(hook) = &shared.hooks.after_chunk_sent {
        hook(rel, index);
    }
    report(Report::ChunkDone {
        id,
        gen,
        index,
        cv,
        sent: true,
    });
    Ok(())
}

/// Reads every file of a batch (re-reading a file that changed meanwhile)
/// and sends them on one stream.
async fn send_batch(
    shared: &Shared,
    connection: &Connection,
    unit: u64,
    files: Vec<BatchItem>,
    report: &impl Fn(Report),
) -> Result<(), TransferError> {
    let collection = shared.collection.clone();
    let verify = shared.verify;
    let before_read = shared.hooks.before_read.clone();
    let (header, data, reports) =
        blocking(move || read_batch(&collection, files, verify, before_read.as_ref())).await;
    for r in reports {
        report(r);
    }
    let total: u64 = header.iter().map(|f| f.size).sum();
    let mut stream = connection
        .open_uni()
        .await
        .map_err(|e| wire::connection_error(&e))?;
    wire::write_frame(
        &mut stream,
        &UnitHeader::Batch {
            unit,
            files: header,
        },
    )
    .await?;
    for piece in data {
        stream.write_chunk(piece).await.map_err(wire::write_error)?;
    }
    let _ = stream.finish();
    Progress::add(&shared.progress.counters.bytes_transferred, total);
    report(Report::BatchSent);
    Ok(())
}

fn read_batch(
    collection: &Collection,
    files: Vec<BatchItem>,
    verify: bool,
    before_read: Option<&FileCallback>,
) -> (Vec<BatchFile>, Vec<Bytes>, Vec<Report>) {
    let mut header = Vec::with_capacity(files.len());
    let mut data = Vec::with_capacity(files.len());
    let mut reports = Vec::new();
    for item in files {
        if let Some(hook) = before_read {
            hook(&item.rel);
        }
        match read_stable(collection, &item, &mut reports) {
            Ok((bytes, size, mtime_ns)) => {
                let hash = if verify {
                    *blake3::hash(&bytes).as_bytes()
                } else {
                    [0; 32]
                };
                header.push(BatchFile {
                    id: item.id,
                    size,
                    mtime_ns,
                    hash,
                });
                data.push(bytes);
            }
            Err(error) => reports.push(Report::SourceError { id: item.id, error }),
        }
    }
    (header, data, reports)
}

/// Reads a whole small file, retrying while its size or mtime changes under us.
///
/// The walk's size and mtime are the expectation: read that many bytes, then
/// one `fstat`. Any change before or during the read shows as another size
/// or mtime afterwards (or a short read), so no `fstat` before the read and
/// no read to EOF are needed (four system calls per file, not six).
fn read_stable(
    collection: &Collection,
    item: &BatchItem,
    reports: &mut Vec<Report>,
) -> Result<(Bytes, u64, i64), TransferError> {
    use std::io::Read;
    let io_error = |e: std::io::Error| {
        TransferError::from_collection(&CollectionError::from_io("read", item.path.to_string(), e))
    };
    let (mut expect_size, mut expect_mtime) = (item.size, item.mtime_ns);
    for _ in 0..=MAX_CHANGE_RETRIES {
        let mut file =
            open_file(collection, &item.path).map_err(|e| TransferError::from_collection(&e))?;
        let mut buf = Vec::with_capacity(expect_size as usize);
        // `Take` stops at the limit without another system call.
        (&mut file)
            .take(expect_size)
            .read_to_end(&mut buf)
            .map_err(io_error)?;
        let after = file.metadata().map_err(io_error)?;
        if buf.len() as u64 == expect_size
            && after.len() == expect_size
            && std_mtime_ns(&after) == expect_mtime
        {
            return Ok((Bytes::from(buf), expect_size, expect_mtime));
        }
        reports.push(Report::Event(TransferEvent::new(
            Side::Source,
            FaultCode::FileSizeChanged,
            Some(item.rel.to_string()),
            format!(
                "changed while it was read ({expect_size} -> {} bytes); reading it again",
                after.len()
            ),
        )));
        expect_size = after.len();
        expect_mtime = std_mtime_ns(&after);
    }
    Err(TransferError::new(
        FaultCode::FileSizeChanged,
        format!("`{}` keeps changing while it is read", item.rel),
    ))
}

/// Walks the source (blocking pool), sending entries in manifest-sized
/// batches; a directory is always sent before its contents.
fn walk(
    collection: &Collection,
    root: &CollectionPath,
    recursive: bool,
    filters: &Filters,
    skip_errors: bool,
    out: &mpsc::Sender<WalkMessage>,
) {
    let send = |m: WalkMessage| out.blocking_send(m).is_ok();
    let metadata = match collection.dir().metadata(root.as_relative()) {
        Ok(m) => m,
        Err(e) => {
            let error = CollectionError::from_io("stat", root.to_string(), e);
            send(WalkMessage::Error(TransferError::fatal(
                error.fault_code(),
                error.to_string(),
            )));
            return;
        }
    };
    let mtime = |m: &cap_std::fs::Metadata| {
        use cap_std::fs::MetadataExt;
        m.mtime() * 1_000_000_000 + m.mtime_nsec()
    };
    if !recursive {
        if !metadata.is_file() {
            send(WalkMessage::Error(TransferError::fatal(
                FaultCode::InvalidPath,
                format!("`{root}` is not a regular file: use a recursive transfer for directories"),
            )));
            return;
        }
        let entry = WireEntry {
            id: 0,
            path: Vec::new(),
            dir: false,
            size: metadata.len(),
            mtime_ns: mtime(&metadata),
        };
        send(WalkMessage::Entries(vec![(entry, Arc::new(root.clone()))]));
        send(WalkMessage::End);
        return;
    }
    if !metadata.is_dir() {
        send(WalkMessage::Error(TransferError::fatal(
            FaultCode::InvalidPath,
            format!("`{root}` is not a directory: a recursive transfer needs one"),
        )));
        return;
    }
    let mut next_id = 0u64;
    let mut batch = Vec::with_capacity(MANIFEST_BATCH);
    let mut stack = vec![CollectionPath::root()];
    while let Some(rel_dir) = stack.pop() {
        let dir_path = root.join(&rel_dir);
        let read = match collection.dir().read_dir(dir_path.as_relative()) {
            Ok(r) => r,
            Err(e) => {
                let error = CollectionError::from_io("list", dir_path.to_string(), e);
                if !skip_errors || rel_dir.is_root() {
                    send(WalkMessage::Error(TransferError::new(
                        error.fault_code(),
                        error.to_string(),
                    )));
                    return;
                }
                let skipped = WalkMessage::Skipped {
                    path: String::from_utf8_lossy(rel_dir.as_bytes()).into_owned(),
                    error: TransferError::new(error.fault_code(), error.to_string()),
                };
                if !send(skipped) {
                    return;
                }
                continue;
            }
        };
        let mut children: Vec<_> = read.filter_map(Result::ok).collect();
        children.sort_by_key(|c| c.file_name());
        let mut subdirs = Vec::new();
        for child in children {
            let rel = rel_dir.join_name(&child.file_name());
            let Ok(meta) = child.metadata() else { continue };
            let is_dir = meta.is_dir();
            if !(is_dir || meta.is_file()) {
                continue; // symlinks and special files are not transferred
            }
            if filters.excludes(
                std::path::Path::new(std::ffi::OsStr::from_bytes(rel.as_bytes())),
                is_dir,
            ) {
                continue;
            }
            next_id += 1;
            batch.push((
                WireEntry {
                    id: next_id,
                    path: rel.as_bytes().to_vec(),
                    dir: is_dir,
                    size: if is_dir { 0 } else { meta.len() },
                    mtime_ns: mtime(&meta),
                },
                Arc::new(root.join(&rel)),
            ));
            if is_dir {
                subdirs.push(rel);
            }
            if batch.len() >= MANIFEST_BATCH
                && !send(WalkMessage::Entries(std::mem::take(&mut batch)))
            {
                return;
            }
        }
        subdirs.reverse();
        stack.extend(subdirs);
    }
    if !batch.is_empty() && !send(WalkMessage::Entries(batch)) {
        return;
    }
    send(WalkMessage::End);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A coordinator with one file of two chunks waiting for their acks.
    fn coordinator(root: &std::path::Path) -> Coordinator {
        let (queue, _) = mpsc::unbounded_channel();
        let (events, _) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            collection: Collection::open(root).unwrap(),
            tuning: Tuning::default(),
            verify: true,
            hooks: TestHooks::default(),
            progress: Arc::new(Progress::new(Side::Source, None)),
            skip_source_errors: false,
            buffers: BufferPool::new(PIECE, MAX_IDLE_BUFFERS),
        });
        let chunk_size = shared.tuning.chunk_size;
        let mut file = SrcFile {
            path: Arc::new(CollectionPath::parse("/f").unwrap()),
            rel: Arc::from("f"),
            size: chunk_size + 1,
            mtime_ns: 0,
            gen: 1,
            phase: Phase::Chunks,
            cvs: Vec::new(),
            acked: Vec::new(),
            dirty: false,
            retries: 0,
        };
        file.reset_chunks(chunk_size);
        assert_eq!(file.acked.len(), 2);
        let mut coordinator = Coordinator::new(shared, queue, events);
        coordinator.files.insert(7, file);
        coordinator
    }

    #[test]
    fn an_ack_past_the_file_is_a_protocol_error_not_a_panic() {
        let root = tempfile::tempdir().unwrap();
        for ok in [true, false] {
            let mut c = coordinator(root.path());
            let lie = ToSource::ChunkAck {
                id: 7,
                gen: 1,
                index: 2,
                ok,
            };
            let err = c.control(lie).unwrap_err();
            assert_eq!(err.code, FaultCode::ProtocolError, "{err:?}");
            assert!(err.to_string().contains("chunk 2 of file 7"), "{err}");
        }
        // A true ack is taken.
        let mut c = coordinator(root.path());
        let ack = ToSource::ChunkAck {
            id: 7,
            gen: 1,
            index: 1,
            ok: true,
        };
        assert!(c.control(ack).unwrap().is_none());
        assert!(c.files[&7].acked[1]);
    }
}
