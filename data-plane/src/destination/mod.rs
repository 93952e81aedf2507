//! The receiving side of a transfer: plans what to fetch (sync level,
//! restart journal), writes chunks and batches into temporary files beside
//! their targets, verifies blake3, renames into place, and keeps the journal.
//!
//! This module owns one attempt's lifetime: it prepares the root and the
//! journal, waits for the source's connections, runs the control loop
//! ([`control`]) beside one task per data stream ([`receive`], [`batch`]), and on the
//! way out answers the source and keeps or removes the journal. The sync
//! decisions are [`plan`]'s, restart state [`resume`]'s, file-system calls
//! [`fs`]'s and `--delete` [`extraneous`]'s. It must not block an async
//! thread: file writes, renames and hashing run on the blocking pool.

mod batch;
mod control;
mod extraneous;
mod fs;
mod plan;
mod receive;
mod resume;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info_span, Instrument};

use crate::collection::{Collection, CollectionPath};
use crate::endpoint::{Accepted, Registered, TransferEndpoint};
use crate::error::{CollectionError, FaultCode, TransferError, TransferFailure};
use crate::filters::Filters;
use crate::journal::{Journal, Resume};
use crate::progress::Progress;
use crate::spec::{
    Credential, Side, TransferEvent, TransferOptions, TransferReport, TransferSpec, TransferUpdate,
    Tuning, PROGRESS_INTERVAL,
};
use crate::tls::Fingerprint;
use crate::wire::{self, ToDest, ToSource};

use control::Control;
pub use resume::discard_destination;
use resume::PartialSlot;

/// Name prefix of partial files (`.lattice-part-<hash>`), kept beside their targets.
pub const PARTIAL_PREFIX: &str = ".lattice-part-";

/// The destination side of one transfer attempt. Cheap; build one per attempt.
pub struct DestinationTask {
    spec: TransferSpec,
    collection: Collection,
    source_fingerprint: Fingerprint,
    credential: Credential,
    state_dir: PathBuf,
}

impl DestinationTask {
    /// `source_fingerprint` and `credential` come from the service;
    /// `state_dir` is where the agent keeps restart journals (one file per
    /// transfer, removed when it ends).
    pub fn new(
        spec: TransferSpec,
        collection: Collection,
        source_fingerprint: Fingerprint,
        credential: Credential,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        DestinationTask {
            spec,
            collection,
            source_fingerprint,
            credential,
            state_dir: state_dir.into(),
        }
    }
}

/// Runs the destination side of one attempt: registers the transfer with the
/// endpoint, waits for the source (CONNECT_FAILED after the endpoint's
/// `accept_timeout`), receives, and returns once the source said it is done
/// (after deleting extraneous files if asked). Dropping the future cancels
/// the attempt; the journal stays for the next one.
pub async fn run_destination(
    endpoint: &TransferEndpoint,
    task: DestinationTask,
    updates: Option<mpsc::UnboundedSender<TransferUpdate>>,
) -> Result<TransferReport, TransferFailure> {
    let span = info_span!("transfer_destination", transfer_id = %task.spec.transfer_id);
    let progress = Arc::new(Progress::new(Side::Destination, updates));
    let transfer_id = task.spec.transfer_id.clone();
    match run(endpoint, task, progress.clone()).instrument(span).await {
        Ok(deleted) => Ok(progress.report(&transfer_id, None, deleted)),
        Err(error) => Err(TransferFailure {
            report: Box::new(progress.report(&transfer_id, None, 0)),
            error,
        }),
    }
}

/// A file the source will send.
#[derive(Clone)]
struct Incoming {
    /// Relative to the transfer root (what the journal and events use).
    rel: Arc<[u8]>,
    /// Where it goes in the collection.
    target: Arc<CollectionPath>,
}

struct Shared {
    transfer_id: String,
    collection: Collection,
    options: TransferOptions,
    tuning: Tuning,
    progress: Arc<Progress>,
    incoming: StdMutex<HashMap<u64, Incoming>>,
    partials: StdMutex<HashMap<u64, PartialSlot>>,
    journal: Arc<StdMutex<Journal>>,
    control: mpsc::UnboundedSender<ToSource>,
    fatal: mpsc::UnboundedSender<TransferError>,
}

impl Shared {
    fn event(&self, code: FaultCode, rel: &[u8], message: String) {
        let event = TransferEvent::new(
            Side::Destination,
            code,
            Some(String::from_utf8_lossy(rel).into_owned()),
            message,
        );
        self.progress.event(event.clone());
        let _ = self.control.send(ToSource::Event(event));
    }

    fn slot(&self, id: u64) -> PartialSlot {
        self.partials
            .lock()
            .expect("partials lock")
            .entry(id)
            .or_default()
            .clone()
    }

    /// Maps a write error: a full disk is NO_SPACE_LEFT, retryable unless `fail_on_quota`.
    fn write_error(&self, target: &CollectionPath, e: std::io::Error) -> TransferError {
        let error = CollectionError::from_io("write", target.to_string(), e);
        let mut transfer_error = TransferError::from_collection(&error);
        if transfer_error.code == FaultCode::NoSpaceLeft && self.options.fail_on_quota {
            transfer_error.retryable = false;
        }
        transfer_error
    }
}

async fn join<T>(handle: tokio::task::JoinHandle<T>) -> T {
    match handle.await {
        Ok(value) => value,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

async fn run(
    endpoint: &TransferEndpoint,
    task: DestinationTask,
    progress: Arc<Progress>,
) -> Result<u64, TransferError> {
    let spec = task.spec;
    let (root, tuning) = check_spec(&spec)?;
    let (journal, resume) = prepare(&task.collection, &root, &spec, &task.state_dir).await?;
    let journal = Arc::new(StdMutex::new(journal));

    let mut registered =
        endpoint.register(&spec.transfer_id, task.credential, task.source_fingerprint)?;
    let accept_timeout = endpoint.config().accept_timeout;
    let mut tasks = JoinSet::new();
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<TransferError>();
    let (control_tx, control_rx) = mpsc::unbounded_channel::<ToSource>();
    let (mut connections, (control_send, control_recv)) =
        await_control(&mut registered, accept_timeout).await?;

    let shared = Arc::new(Shared {
        transfer_id: spec.transfer_id.clone(),
        collection: task.collection.clone(),
        options: spec.options.clone(),
        tuning,
        progress: progress.clone(),
        incoming: StdMutex::new(HashMap::new()),
        partials: StdMutex::new(HashMap::new()),
        journal: journal.clone(),
        control: control_tx,
        fatal: fatal_tx,
    });
    tasks.spawn(write_control(
        control_send,
        control_rx,
        shared.fatal.clone(),
    ));
    for connection in &connections {
        tasks.spawn(receive::accept_streams(shared.clone(), connection.clone()));
    }
    // Control frames are read by their own task: `read_frame` is not
    // cancel-safe, and in the select below a tick or a new connection would
    // drop it halfway through a frame (the next read then starts mid-frame).
    let (frames_tx, mut frames) = mpsc::channel(16);
    tasks.spawn(read_control(control_recv, frames_tx));

    let mut control = Control {
        shared: shared.clone(),
        root,
        recursive: spec.recursive,
        resume: Arc::new(StdMutex::new(resume)),
        created_dirs: Arc::default(),
        seen: HashSet::new(),
        dir_mtimes: Vec::new(),
    };
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    let outcome: Result<u64, TransferError> = loop {
        tokio::select! {
            frame = frames.recv() => {
                let message = match frame {
                    Some(Ok(Some(m))) => m,
                    Some(Ok(None)) | None => break Err(TransferError::new(FaultCode::ConnectionReset, "the source closed the control stream")),
                    Some(Err(e)) => break Err(e),
                };
                match control.handle(message).await {
                    Ok(Some(deleted)) => break Ok(deleted),
                    Ok(None) => {}
                    Err(e) => break Err(e),
                }
            }
            Some(error) = fatal_rx.recv() => break Err(error),
            Some(accepted) = registered.receiver.recv() => {
                connections.push(accepted.connection.clone());
                tasks.spawn(receive::accept_streams(shared.clone(), accepted.connection));
            }
            _ = ticker.tick() => progress.tick(),
        }
    };
    drop(registered);
    close(&shared, &connections, &outcome).await;
    tasks.shutdown().await;
    clean_up(&shared, &outcome).await;
    outcome
}

/// The destination root and the validated tuning.
fn check_spec(spec: &TransferSpec) -> Result<(CollectionPath, Tuning), TransferError> {
    let tuning = spec
        .tuning
        .validated()
        .map_err(|m| TransferError::fatal(FaultCode::InvalidPath, m))?;
    // Validate the filters up front (they are applied when deleting extraneous files).
    Filters::new(&spec.options.include, &spec.options.exclude)?;
    let root = CollectionPath::parse(&spec.destination_path)
        .map_err(|e| TransferError::from_collection(&e))?;
    if !spec.recursive && root.is_root() {
        return Err(TransferError::fatal(
            FaultCode::InvalidPath,
            "a file cannot be written over the collection root",
        ));
    }
    Ok((root, tuning))
}

/// Creates the transfer root (or the single file's parent) and opens the
/// restart journal.
async fn prepare(
    collection: &Collection,
    root: &CollectionPath,
    spec: &TransferSpec,
    state_dir: &std::path::Path,
) -> Result<(Journal, Resume), TransferError> {
    let collection = collection.clone();
    let dir = if spec.recursive {
        root.clone()
    } else {
        root.split_last().map(|(p, _)| p).unwrap_or_default()
    };
    blocking(move || collection.mkdir_blocking(&dir, true))
        .await
        .map_err(|e| TransferError::from_collection(&e))?;
    let (state_dir, id) = (state_dir.to_path_buf(), spec.transfer_id.clone());
    blocking(move || Journal::open(&state_dir, &id))
        .await
        .map_err(|e| {
            TransferError::new(
                FaultCode::IoError,
                format!("opening the restart journal: {e}"),
            )
        })
}

/// Waits for connection 0 (the control stream), CONNECT_FAILED after
/// `accept_timeout`; returns it and the other connections that came first
/// (later ones are picked up as they come).
async fn await_control(
    registered: &mut Registered,
    accept_timeout: Duration,
) -> Result<(Vec<Connection>, (SendStream, RecvStream)), TransferError> {
    let deadline = tokio::time::Instant::now() + accept_timeout;
    let mut connections = Vec::new();
    loop {
        let accepted = tokio::time::timeout_at(deadline, registered.receiver.recv())
            .await
            .map_err(|_| {
                TransferError::new(
                    FaultCode::ConnectFailed,
                    format!("the source did not connect within {accept_timeout:?}"),
                )
            })?
            .ok_or_else(|| {
                TransferError::new(FaultCode::ConnectFailed, "the transfer endpoint closed")
            })?;
        let Accepted {
            connection,
            index,
            control,
        } = accepted;
        debug!(index, "source connected");
        connections.push(connection);
        if let (0, Some(control)) = (index, control) {
            return Ok((connections, control));
        }
    }
}

/// Ends the attempt on the wire: after success, `Finished` and time for the
/// source to close; after a failure, the error (unless the connection is
/// what failed) and a close.
async fn close(shared: &Shared, connections: &[Connection], outcome: &Result<u64, TransferError>) {
    match outcome {
        Ok(deleted) => {
            let _ = shared.control.send(ToSource::Finished {
                counters: shared.progress.snapshot(),
                deleted: *deleted,
            });
            // Let the source read Finished and close the connections itself.
            if let Some(c) = connections.first() {
                let _ = tokio::time::timeout(Duration::from_secs(5), c.closed()).await;
            }
        }
        Err(error) => {
            if error.code != FaultCode::ConnectionReset {
                let _ = shared.control.send(ToSource::Abort(error.clone()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for c in connections {
                c.close(
                    VarInt::from_u32(wire::CLOSE_ABORT),
                    error.message.as_bytes(),
                );
            }
        }
    }
}

/// Journal: gone on success or a final failure (and then so are partial
/// files: the transfer fails cleanly); kept for a retry.
async fn clean_up(shared: &Shared, outcome: &Result<u64, TransferError>) {
    let final_failure = matches!(outcome, Err(e) if !e.retryable);
    let partials: Vec<PartialSlot> = shared
        .partials
        .lock()
        .expect("partials lock")
        .drain()
        .map(|(_, s)| s)
        .collect();
    let mut temps = Vec::new();
    for slot in partials {
        if let Some(p) = slot.lock().await.take() {
            temps.push((p.parent, p.temp));
        }
    }
    let journal = shared.journal.clone();
    let success = outcome.is_ok();
    blocking(move || {
        let mut journal = journal.lock().expect("journal lock");
        let _ = journal.flush();
        if success || final_failure {
            for (parent, temp) in temps.iter().filter(|_| final_failure) {
                let _ = parent.remove_file(temp);
            }
            let _ = journal.remove_file();
        }
    })
    .await;
}

async fn read_control(
    mut recv: RecvStream,
    frames: mpsc::Sender<Result<Option<ToDest>, TransferError>>,
) {
    loop {
        let frame = wire::read_frame::<ToDest>(&mut recv).await;
        let stop = !matches!(frame, Ok(Some(_)));
        if frames.send(frame).await.is_err() || stop {
            break;
        }
    }
}

async fn write_control(
    mut send: SendStream,
    mut messages: mpsc::UnboundedReceiver<ToSource>,
    fatal: mpsc::UnboundedSender<TransferError>,
) {
    while let Some(message) = messages.recv().await {
        if let Err(e) = wire::write_frame(&mut send, &message).await {
            let _ = fatal.send(e);
            return;
        }
    }
    let _ = send.finish();
}
