//! The receiving side of a transfer: plans what to fetch (sync level,
//! restart journal), writes chunks and batches into temporary files beside
//! their targets, verifies blake3, renames into place, and keeps the journal.
//!
//! The control loop handles control frames in order; each data stream gets
//! its own task. File writes, renames and hashing run on the blocking pool.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime};

use cap_std::fs::{Dir, OpenOptions};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;
use tracing::{debug, info_span, Instrument};

use crate::buffers;
use crate::checksum::{self, chunk_count, chunk_len};
use crate::collection::{Collection, CollectionPath};
use crate::endpoint::{Accepted, TransferEndpoint};
use crate::error::{CollectionError, FaultCode, TransferError, TransferFailure};
use crate::filters::Filters;
use crate::journal::{Journal, Resume, SourceVersion};
use crate::progress::Progress;
use crate::spec::{
    Credential, FileChecksum, Side, SyncLevel, TransferEvent, TransferOptions, TransferReport,
    TransferSpec, TransferUpdate, Tuning, PROGRESS_INTERVAL,
};
use crate::tls::Fingerprint;
use crate::wire::{self, BatchResult, PlanItem, ToDest, ToSource, UnitHeader, WireEntry};

/// Name prefix of partial files (`.lattice-part-<hash>`), kept beside their targets.
pub const PARTIAL_PREFIX: &str = ".lattice-part-";
/// Largest batch a source may send in one stream.
const MAX_BATCH_BYTES: u64 = 256 << 20;
/// Bytes accumulated from the network before one blocking write.
const WRITE_BATCH: usize = 1 << 20;

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

struct Partial {
    gen: u32,
    version: SourceVersion,
    cvs: Vec<Option<[u8; 32]>>,
    file: Arc<std::fs::File>,
    parent: Arc<Dir>,
    temp: OsString,
    name: OsString,
}

type PartialSlot = Arc<Mutex<Option<Partial>>>;

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

fn temp_name(transfer_id: &str, rel: &[u8]) -> OsString {
    let mut hasher = blake3::Hasher::new();
    hasher.update(transfer_id.as_bytes());
    hasher.update(&[0]);
    hasher.update(rel);
    OsString::from(format!(
        "{PARTIAL_PREFIX}{}",
        &hasher.finalize().to_hex()[..24]
    ))
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
    {
        // The transfer root (or the single file's parent) must exist.
        let collection = task.collection.clone();
        let dir = if spec.recursive {
            root.clone()
        } else {
            root.split_last().map(|(p, _)| p).unwrap_or_default()
        };
        blocking(move || collection.mkdir_blocking(&dir, true))
            .await
            .map_err(|e| TransferError::from_collection(&e))?;
    }
    let (journal, resume) = {
        let (state_dir, id) = (task.state_dir.clone(), spec.transfer_id.clone());
        blocking(move || Journal::open(&state_dir, &id))
            .await
            .map_err(|e| {
                TransferError::new(
                    FaultCode::IoError,
                    format!("opening the restart journal: {e}"),
                )
            })?
    };
    let journal = Arc::new(StdMutex::new(journal));

    let mut registered =
        endpoint.register(&spec.transfer_id, task.credential, task.source_fingerprint)?;
    let accept_timeout = endpoint.config().accept_timeout;
    let mut connections: Vec<Connection> = Vec::new();
    let mut tasks = JoinSet::new();
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<TransferError>();
    let (control_tx, control_rx) = mpsc::unbounded_channel::<ToSource>();

    // Wait for connection 0 (the control stream); others are picked up as they come.
    let deadline = tokio::time::Instant::now() + accept_timeout;
    let mut early = Vec::new();
    let (control_send, control_recv) = loop {
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
        connections.push(connection.clone());
        early.push(connection);
        if let (0, Some(control)) = (index, control) {
            break control;
        }
    };

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
    for connection in early {
        tasks.spawn(accept_streams(shared.clone(), connection));
    }
    // Control frames are read by their own task: `read_frame` is not
    // cancel-safe, and in the select below a tick or a new connection would
    // drop it halfway through a frame (the next read then starts mid-frame).
    let (frames_tx, mut frames) = mpsc::channel(16);
    tasks.spawn(read_control(control_recv, frames_tx));

    let mut planner = Planner {
        shared: shared.clone(),
        root: root.clone(),
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
                match planner.handle(message).await {
                    Ok(Some(deleted)) => break Ok(deleted),
                    Ok(None) => {}
                    Err(e) => break Err(e),
                }
            }
            Some(error) = fatal_rx.recv() => break Err(error),
            Some(accepted) = registered.receiver.recv() => {
                connections.push(accepted.connection.clone());
                tasks.spawn(accept_streams(shared.clone(), accepted.connection));
            }
            _ = ticker.tick() => progress.tick(),
        }
    };
    drop(registered);

    match &outcome {
        Ok(deleted) => {
            let _ = shared.control.send(ToSource::Finished {
                counters: progress.snapshot(),
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
            for c in &connections {
                c.close(
                    VarInt::from_u32(wire::CLOSE_ABORT),
                    error.message.as_bytes(),
                );
            }
        }
    }
    tasks.shutdown().await;

    // Journal: gone on success or a final failure (and then so are partial
    // files: the transfer fails cleanly); kept for a retry.
    let final_failure = matches!(&outcome, Err(e) if !e.retryable);
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
    let journal = journal.clone();
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
    outcome
}

struct Planner {
    shared: Arc<Shared>,
    root: CollectionPath,
    recursive: bool,
    resume: Arc<StdMutex<Resume>>,
    /// Directories this attempt created: nothing in them needs a stat.
    created_dirs: Arc<StdMutex<HashSet<CollectionPath>>>,
    /// Every path the source listed (for delete_extraneous).
    seen: HashSet<Vec<u8>>,
    dir_mtimes: Vec<(CollectionPath, i64)>,
}

impl Planner {
    /// Returns `Some(deleted)` once the transfer is complete.
    async fn handle(&mut self, message: ToDest) -> Result<Option<u64>, TransferError> {
        match message {
            ToDest::Manifest { entries } => {
                let items = self.plan(entries).await?;
                let _ = self.shared.control.send(ToSource::Plan { items });
            }
            ToDest::ManifestEnd => {}
            ToDest::FileEnd {
                id,
                gen,
                size,
                mtime_ns,
                hash,
            } => {
                self.file_end(id, gen, SourceVersion { size, mtime_ns }, hash)
                    .await?
            }
            // Equal checksums (sync level checksum) or a skipped source error.
            ToDest::FileSkipped { id, equal: _ } => {
                self.shared
                    .incoming
                    .lock()
                    .expect("incoming lock")
                    .remove(&id);
                Progress::add(&self.shared.progress.counters.files_skipped, 1);
            }
            ToDest::Event(event) => self.shared.progress.event(event),
            ToDest::Finish => return self.finish().await.map(Some),
            ToDest::Abort(error) => return Err(error),
        }
        Ok(None)
    }

    async fn plan(
        &mut self,
        entries: Vec<WireEntry>,
    ) -> Result<Vec<(u64, PlanItem)>, TransferError> {
        if self.shared.options.delete_extraneous {
            self.seen.extend(entries.iter().map(|e| e.path.clone()));
        }
        let shared = self.shared.clone();
        let root = self.root.clone();
        let recursive = self.recursive;
        let resume = self.resume.clone();
        let created = self.created_dirs.clone();
        let (items, dirs) = blocking(move || {
            let mut created = created.lock().expect("created dirs lock");
            plan_entries(&shared, &root, recursive, &resume, &mut created, entries)
        })
        .await?;
        if self.shared.options.preserve_mtime {
            self.dir_mtimes.extend(dirs);
        }
        Ok(items)
    }

    async fn file_end(
        &mut self,
        id: u64,
        gen: u32,
        version: SourceVersion,
        hash: [u8; 32],
    ) -> Result<(), TransferError> {
        let shared = self.shared.clone();
        let incoming = shared
            .incoming
            .lock()
            .expect("incoming lock")
            .get(&id)
            .cloned()
            .ok_or_else(|| TransferError::protocol(format!("end of unknown file {id}")))?;
        let slot = shared.slot(id);
        let mut guard = slot.lock().await;
        let Some(partial) = guard.as_mut() else {
            return Err(TransferError::protocol(format!(
                "end of file {id} that has no data"
            )));
        };
        if partial.gen != gen
            || partial.version.size != version.size
            || partial.cvs.iter().any(Option::is_none)
        {
            return Err(TransferError::protocol(format!(
                "end of file {id} before all its chunks"
            )));
        }
        let cvs: Vec<[u8; 32]> = partial.cvs.iter().map(|c| c.expect("checked")).collect();
        let ours = checksum::file_hash(version.size, shared.tuning.chunk_size, &cvs);
        if shared.options.verify_checksum && ours != hash {
            shared.event(
                FaultCode::VerifyChecksum,
                &incoming.rel,
                format!(
                    "file checksum mismatch (source {}, destination {}); sending it again",
                    checksum::to_hex(&hash),
                    checksum::to_hex(&ours)
                ),
            );
            partial.cvs.iter_mut().for_each(|c| *c = None);
            let _ = shared.control.send(ToSource::FileFailed { id });
            return Ok(());
        }
        let partial = guard.take().expect("checked");
        drop(guard);
        shared.partials.lock().expect("partials lock").remove(&id);
        let preserve = shared.options.preserve_mtime;
        let journal = shared.journal.clone();
        let rel = incoming.rel.clone();
        let target = incoming.target.clone();
        let shared2 = shared.clone();
        blocking(move || -> Result<(), TransferError> {
            if preserve {
                set_mtime(&partial.file, version.mtime_ns)
                    .map_err(|e| shared2.write_error(&target, e))?;
            }
            partial
                .parent
                .rename(&partial.temp, &partial.parent, &partial.name)
                .map_err(|e| {
                    TransferError::from_collection(&CollectionError::from_io(
                        "rename",
                        target.to_string(),
                        e,
                    ))
                })?;
            let mut journal = journal.lock().expect("journal lock");
            journal
                .file_done(&rel, version)
                .and_then(|()| journal.flush())
                .map_err(journal_write_error)
        })
        .await?;
        shared.incoming.lock().expect("incoming lock").remove(&id);
        let counters = &shared.progress.counters;
        Progress::add(&counters.files, 1);
        if shared.options.verify_checksum {
            Progress::add(&counters.bytes_verified, version.size);
            shared.progress.checksum(FileChecksum {
                path: String::from_utf8_lossy(&incoming.rel).into_owned(),
                size: version.size,
                blake3: checksum::to_hex(&hash),
            });
        }
        let _ = shared.control.send(ToSource::FileDone { id, hash });
        Ok(())
    }

    async fn finish(&mut self) -> Result<u64, TransferError> {
        let shared = self.shared.clone();
        let root = self.root.clone();
        let seen = std::mem::take(&mut self.seen);
        let dir_mtimes = std::mem::take(&mut self.dir_mtimes);
        let delete = shared.options.delete_extraneous && self.recursive;
        let filters = Filters::new(&shared.options.include, &shared.options.exclude)?;
        blocking(move || -> Result<u64, TransferError> {
            let mut deleted = 0;
            if delete {
                delete_extraneous(
                    &shared.collection,
                    &root,
                    &CollectionPath::root(),
                    &seen,
                    &filters,
                    &mut deleted,
                )
                .map_err(|e| TransferError::from_collection(&e))?;
            }
            let mut dir_mtimes = dir_mtimes;
            dir_mtimes.sort_by_key(|(p, _)| {
                std::cmp::Reverse(p.as_bytes().iter().filter(|b| **b == b'/').count())
            });
            for (path, mtime_ns) in dir_mtimes {
                if let Ok(dir) = shared.collection.dir().open_dir(path.as_relative()) {
                    let _ = set_mtime(&dir.into_std_file(), mtime_ns);
                }
            }
            Ok(deleted)
        })
        .await
    }
}

fn set_mtime(file: &std::fs::File, mtime_ns: i64) -> std::io::Result<()> {
    let time = if mtime_ns >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(mtime_ns as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_nanos(mtime_ns.unsigned_abs())
    };
    file.set_modified(time)
}

fn meta_mtime_ns(m: &cap_std::fs::Metadata) -> i64 {
    use cap_std::fs::MetadataExt;
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// What the source must send, and the directories seen (with their mtimes).
type Planned = (Vec<(u64, PlanItem)>, Vec<(CollectionPath, i64)>);

/// Decides, for one manifest message, what the source must send (blocking).
fn plan_entries(
    shared: &Shared,
    root: &CollectionPath,
    recursive: bool,
    resume: &StdMutex<Resume>,
    created_dirs: &mut HashSet<CollectionPath>,
    entries: Vec<WireEntry>,
) -> Result<Planned, TransferError> {
    let dir = shared.collection.dir();
    let counters = &shared.progress.counters;
    let options = &shared.options;
    let chunk_size = shared.tuning.chunk_size;
    let mut items = Vec::with_capacity(entries.len());
    let mut dirs = Vec::new();
    let resume = resume.lock().expect("resume lock");
    for entry in entries {
        let rel = CollectionPath::from_bytes(&entry.path)
            .map_err(|e| TransferError::from_collection(&e))?;
        if rel.as_bytes() != entry.path.as_slice()
            || (recursive && rel.is_root())
            || (!recursive && !rel.is_root())
        {
            return Err(TransferError::fatal(
                FaultCode::InvalidPath,
                format!(
                    "the source sent a path that is not allowed: {:?}",
                    String::from_utf8_lossy(&entry.path)
                ),
            ));
        }
        let target = root.join(&rel);
        if entry.dir {
            Progress::add(&counters.directories, 1);
            match create_dir(dir, &target) {
                Ok(true) => {
                    created_dirs.insert(target.clone());
                }
                Ok(false) => {}
                Err(e) => {
                    let error = CollectionError::from_io("mkdir", target.to_string(), e);
                    return Err(TransferError::from_collection(&error));
                }
            }
            dirs.push((target, entry.mtime_ns));
            continue;
        }
        Progress::add(&counters.files_total, 1);
        Progress::add(&counters.bytes_total, entry.size);
        let version = SourceVersion {
            size: entry.size,
            mtime_ns: entry.mtime_ns,
        };
        // The source lists a directory before its contents: in a directory
        // this attempt created, nothing exists yet (one failed lookup saved
        // per file; a file someone else puts there is still replaced whole).
        let in_new_dir = target
            .split_last()
            .is_some_and(|(parent, _)| created_dirs.contains(&parent));
        let existing = match (!in_new_dir)
            .then(|| dir.symlink_metadata(target.as_relative()))
            .transpose()
        {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(TransferError::from_collection(&CollectionError::from_io(
                    "stat",
                    target.to_string(),
                    e,
                )))
            }
        };
        if existing.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(TransferError::fatal(
                FaultCode::IoError,
                format!("`{target}` is a directory at the destination, the source has a file"),
            ));
        }
        if resume.done.get(entry.path.as_slice()) == Some(&version)
            && existing.as_ref().is_some_and(|m| m.len() == entry.size)
        {
            Progress::add(&counters.files_resumed, 1);
            items.push((entry.id, PlanItem::Skip { resumed: true }));
            continue;
        }
        if let (Some(level), Some(existing)) = (options.sync_level, existing.as_ref()) {
            let same_size = existing.len() == entry.size;
            let skip = match level {
                SyncLevel::Exists => true,
                SyncLevel::Size => same_size,
                SyncLevel::Mtime => same_size && meta_mtime_ns(existing) >= entry.mtime_ns,
                SyncLevel::Checksum => false,
            };
            if skip {
                Progress::add(&counters.files_skipped, 1);
                items.push((entry.id, PlanItem::Skip { resumed: false }));
                continue;
            }
            if level == SyncLevel::Checksum && same_size {
                let hash = hash_existing(dir, &target)?;
                remember(shared, entry.id, &entry.path, &target);
                items.push((entry.id, PlanItem::SendUnlessHash { hash }));
                continue;
            }
        }
        remember(shared, entry.id, &entry.path, &target);
        let mut have = Vec::new();
        if let Some(partial) = resume.partial.get(entry.path.as_slice()) {
            if partial.version == Some((version, chunk_size)) && !partial.chunks.is_empty() {
                have = verify_partial(
                    shared,
                    entry.id,
                    &entry.path,
                    &target,
                    version,
                    &partial.chunks,
                );
            }
        }
        items.push((entry.id, PlanItem::Send { have }));
    }
    Ok((items, dirs))
}

/// Creates the directory `target` and any missing parents; `true` if
/// `target` did not exist before.
fn create_dir(dir: &Dir, target: &CollectionPath) -> std::io::Result<bool> {
    match dir.create_dir(target.as_relative()) {
        Ok(()) => Ok(true),
        // create_dir_all still fails if it exists as something else.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            dir.create_dir_all(target.as_relative()).map(|()| false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            dir.create_dir_all(target.as_relative()).map(|()| true)
        }
        Err(e) => Err(e),
    }
}

fn remember(shared: &Shared, id: u64, rel: &[u8], target: &CollectionPath) {
    shared.incoming.lock().expect("incoming lock").insert(
        id,
        Incoming {
            rel: Arc::from(rel),
            target: Arc::new(target.clone()),
        },
    );
}

fn hash_existing(dir: &Dir, target: &CollectionPath) -> Result<[u8; 32], TransferError> {
    let io = |e| {
        TransferError::from_collection(&CollectionError::from_io("read", target.to_string(), e))
    };
    let mut file = dir.open(target.as_relative()).map_err(io)?.into_std();
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(&mut file).map_err(io)?;
    Ok(*hasher.finalize().as_bytes())
}

/// Re-hashes the chunks an earlier attempt wrote to the partial file and
/// keeps those that still match; installs the partial state.
fn verify_partial(
    shared: &Shared,
    id: u64,
    rel: &[u8],
    target: &CollectionPath,
    version: SourceVersion,
    chunks: &std::collections::BTreeMap<u32, [u8; 32]>,
) -> Vec<(u32, [u8; 32])> {
    let chunk_size = shared.tuning.chunk_size;
    let Ok(partial) = open_partial(shared, rel, target, version, 0, false) else {
        return Vec::new();
    };
    let mut have = Vec::new();
    let mut partial = partial;
    let mut buf = vec![0u8; 1 << 20];
    for (&index, &cv) in chunks {
        if index as usize >= partial.cvs.len() {
            continue;
        }
        let len = chunk_len(version.size, chunk_size, index);
        let mut hasher = checksum::chunk_hasher(version.size, chunk_size, index);
        let mut done = 0u64;
        let mut ok = true;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            if partial
                .file
                .read_exact_at(&mut buf[..n], index as u64 * chunk_size + done)
                .is_err()
            {
                ok = false;
                break;
            }
            hasher.update(&buf[..n]);
            done += n as u64;
        }
        if ok && checksum::finish_chunk(&hasher, version.size, chunk_size) == cv {
            partial.cvs[index as usize] = Some(cv);
            have.push((index, cv));
        }
    }
    debug!(file = %target, chunks = have.len(), "resuming a partial file");
    *shared.slot(id).blocking_lock() = Some(partial);
    have
}

/// The fault for a failed write of the restart journal.
fn journal_write_error(e: std::io::Error) -> TransferError {
    TransferError::new(
        FaultCode::IoError,
        format!("writing the restart journal: {e}"),
    )
}

/// Removes what an abandoned transfer left at its destination: the partial
/// files its journal names (beside their targets under `destination_path`)
/// and the journal. For a transfer the service gave up on (cancelled, past
/// its deadline); a retry could no longer resume it. Blocking. Returns the
/// number of partial files removed; a transfer without a journal has none.
pub fn discard_destination(
    collection: &Collection,
    destination_path: &str,
    state_dir: &std::path::Path,
    transfer_id: &str,
) -> Result<u64, TransferError> {
    let io_error = |what: &str, e: std::io::Error| {
        TransferError::new(FaultCode::IoError, format!("{what}: {e}"))
    };
    if !crate::journal::journal_path(state_dir, transfer_id).exists() {
        return Ok(0);
    }
    let root =
        CollectionPath::parse(destination_path).map_err(|e| TransferError::from_collection(&e))?;
    let (mut journal, resume) = Journal::open(state_dir, transfer_id)
        .map_err(|e| io_error("opening the restart journal", e))?;
    let mut removed = 0;
    for rel in resume.partial.keys() {
        let Ok(rel_path) = CollectionPath::from_bytes(rel) else {
            continue;
        };
        let Some((parent, _)) = root.join(&rel_path).split_last() else {
            continue;
        };
        // Opened, never created: a directory that is gone holds no partial file.
        let Ok(parent) = collection.dir().open_dir(parent.as_relative()) else {
            continue;
        };
        match parent.remove_file(temp_name(transfer_id, rel)) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("removing a partial file", e)),
        }
    }
    journal
        .remove_file()
        .map_err(|e| io_error("removing the restart journal", e))?;
    Ok(removed)
}

/// Opens (creating if needed) the partial file of `target`; `truncate` starts over.
fn open_partial(
    shared: &Shared,
    rel: &[u8],
    target: &CollectionPath,
    version: SourceVersion,
    gen: u32,
    truncate: bool,
) -> Result<Partial, TransferError> {
    let (parent_path, name) = target.split_last().ok_or_else(|| {
        TransferError::fatal(FaultCode::InvalidPath, "the collection root is not a file")
    })?;
    let parent = open_parent(&shared.collection, &parent_path)?;
    let temp = temp_name(&shared.transfer_id, rel);
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate);
    let file = parent
        .open_with(&temp, &options)
        .map_err(|e| shared.write_error(target, e))?
        .into_std();
    let current = file
        .metadata()
        .map_err(|e| shared.write_error(target, e))?
        .len();
    if current != version.size {
        file.set_len(version.size)
            .map_err(|e| shared.write_error(target, e))?;
    }
    Ok(Partial {
        gen,
        version,
        cvs: vec![None; chunk_count(version.size, shared.tuning.chunk_size) as usize],
        file: Arc::new(file),
        parent: Arc::new(parent),
        temp,
        name: name.to_os_string(),
    })
}

fn open_parent(collection: &Collection, parent: &CollectionPath) -> Result<Dir, TransferError> {
    let dir = collection.dir();
    match dir.open_dir(parent.as_relative()) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => dir
            .create_dir_all(parent.as_relative())
            .and_then(|()| dir.open_dir(parent.as_relative()))
            .map_err(|e| {
                TransferError::from_collection(&CollectionError::from_io(
                    "mkdir",
                    parent.to_string(),
                    e,
                ))
            }),
        Err(e) => Err(TransferError::from_collection(&CollectionError::from_io(
            "open",
            parent.to_string(),
            e,
        ))),
    }
}

/// Removes what the source did not list (blocking). Partial files and
/// excluded paths are left alone.
fn delete_extraneous(
    collection: &Collection,
    root: &CollectionPath,
    rel_dir: &CollectionPath,
    seen: &HashSet<Vec<u8>>,
    filters: &Filters,
    deleted: &mut u64,
) -> Result<(), CollectionError> {
    let dir_path = root.join(rel_dir);
    let read = collection
        .dir()
        .read_dir(dir_path.as_relative())
        .map_err(|e| CollectionError::from_io("list", dir_path.to_string(), e))?;
    for child in read {
        let child = child.map_err(|e| CollectionError::from_io("list", dir_path.to_string(), e))?;
        let name = child.file_name();
        if name.as_bytes().starts_with(PARTIAL_PREFIX.as_bytes()) {
            continue;
        }
        let rel = rel_dir.join_name(&name);
        let is_dir = child.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if filters.excludes(Path::new(OsStr::from_bytes(rel.as_bytes())), is_dir) {
            continue;
        }
        if seen.contains(rel.as_bytes()) {
            if is_dir {
                delete_extraneous(collection, root, &rel, seen, filters, deleted)?;
            }
            continue;
        }
        let summary = collection.delete_blocking(
            &root.join(&rel),
            true,
            &crate::collection::DeleteControl::default(),
        )?;
        *deleted += summary.files + summary.directories;
    }
    Ok(())
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

async fn accept_streams(shared: Arc<Shared>, connection: Connection) {
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            stream = connection.accept_uni() => {
                match stream {
                    Ok(stream) => {
                        let shared = shared.clone();
                        streams.spawn(async move {
                            if let Err(e) = receive_unit(&shared, stream).await {
                                let _ = shared.fatal.send(e);
                            }
                        });
                    }
                    Err(e) => {
                        let _ = shared.fatal.send(wire::connection_error(&e));
                        break;
                    }
                }
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
}

async fn receive_unit(shared: &Arc<Shared>, mut stream: RecvStream) -> Result<(), TransferError> {
    let header = match wire::read_frame::<UnitHeader>(&mut stream).await {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(()),
        Err(e) => return Err(e),
    };
    match header {
        UnitHeader::Chunk {
            id,
            gen,
            index,
            file_size,
            mtime_ns,
            len,
        } => {
            receive_chunk(
                shared,
                stream,
                id,
                gen,
                index,
                SourceVersion {
                    size: file_size,
                    mtime_ns,
                },
                len,
            )
            .await
        }
        UnitHeader::Batch { unit, files } => receive_batch(shared, stream, unit, files).await,
    }
}

/// A chunk header of a generation whose partial file exists: the same
/// version the partial file was made for, and an index inside it. One
/// generation is one version of the file, so a header that says otherwise
/// is a lying peer; its index was only checked against the size it claims
/// now, and would index past the partial's chunk table.
fn same_generation(
    made_for: SourceVersion,
    chunks: usize,
    id: u64,
    index: u32,
    claimed: SourceVersion,
) -> Result<(), TransferError> {
    if claimed != made_for {
        return Err(TransferError::protocol(format!(
            "chunk {index} of file {id} claims {claimed:?}, but its generation is {made_for:?}"
        )));
    }
    if index as usize >= chunks {
        return Err(TransferError::protocol(format!(
            "chunk {index} of file {id} is past its {chunks} chunks"
        )));
    }
    Ok(())
}

async fn receive_chunk(
    shared: &Arc<Shared>,
    mut stream: RecvStream,
    id: u64,
    gen: u32,
    index: u32,
    version: SourceVersion,
    len: u64,
) -> Result<(), TransferError> {
    let chunk_size = shared.tuning.chunk_size;
    let incoming = shared
        .incoming
        .lock()
        .expect("incoming lock")
        .get(&id)
        .cloned()
        .ok_or_else(|| TransferError::protocol(format!("data for unknown file {id}")))?;
    if index >= chunk_count(version.size, chunk_size)
        || len != chunk_len(version.size, chunk_size, index)
    {
        return Err(TransferError::protocol(format!(
            "bad chunk {index} of file {id}"
        )));
    }
    let slot = shared.slot(id);
    let file = {
        let mut guard = slot.lock().await;
        match guard.as_ref() {
            Some(p) if p.gen == gen => {
                same_generation(p.version, p.cvs.len(), id, index, version)?;
                p.file.clone()
            }
            Some(p) if p.gen > gen => {
                let _ = stream.stop(VarInt::from_u32(0));
                return Ok(());
            }
            _ => {
                // First chunk of this generation: (re)create the partial file.
                let fresh = guard.as_ref().is_some();
                let (shared2, incoming2) = (shared.clone(), incoming.clone());
                let partial = blocking(move || {
                    // Recorded first: a partial file the journal does not
                    // name could not be found to discard an abandoned transfer.
                    shared2
                        .journal
                        .lock()
                        .expect("journal lock")
                        .partial_created(&incoming2.rel)
                        .map_err(journal_write_error)?;
                    open_partial(
                        &shared2,
                        &incoming2.rel,
                        &incoming2.target,
                        version,
                        gen,
                        fresh,
                    )
                })
                .await?;
                let file = partial.file.clone();
                *guard = Some(partial);
                file
            }
        }
    };

    let verify = shared.options.verify_checksum;
    let mut hasher = verify.then(|| {
        checksum::PieceHasher::new(checksum::chunk_hasher(version.size, chunk_size, index))
    });
    let mut offset = index as u64 * chunk_size;
    let mut remaining = len;
    // quinn's received pieces go to the file as they are (one pwritev per
    // WRITE_BATCH bytes, no copy into a contiguous buffer) and are hashed on
    // the blocking pool while the next batch arrives.
    type Written = (Result<(), TransferError>, Option<checksum::PieceHasher>);
    let mut writing: Option<tokio::task::JoinHandle<Written>> = None;
    while remaining > 0 {
        let n = remaining.min(WRITE_BATCH as u64);
        let mut pieces = Vec::new();
        let mut got = 0u64;
        while got < n {
            match stream.read_chunk((n - got) as usize, true).await {
                Ok(Some(chunk)) => {
                    got += chunk.bytes.len() as u64;
                    pieces.push(chunk.bytes);
                }
                Ok(None) => {
                    return Err(TransferError::new(
                        FaultCode::ConnectionReset,
                        format!("data stream ended early in chunk {index} of file {id}"),
                    ))
                }
                // The source reset the stream: its file changed; it will tell us what next.
                Err(quinn::ReadError::Reset(_)) => return Ok(()),
                Err(e) => return Err(wire::read_error(e)),
            }
        }
        if let Some(previous) = writing.take() {
            let (result, returned) = join(previous).await;
            hasher = returned;
            result?;
        }
        let (file, target, shared2) = (file.clone(), incoming.target.clone(), shared.clone());
        let at = offset;
        let mut h = hasher.take();
        writing = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = buffers::write_all_vectored_at(&file, &pieces, at) {
                return (Err(shared2.write_error(&target, e)), h);
            }
            if let Some(h) = h.as_mut() {
                for piece in &pieces {
                    h.update(piece);
                }
            }
            (Ok(()), h)
        }));
        offset += n;
        remaining -= n;
    }
    if let Some(previous) = writing.take() {
        let (result, returned) = join(previous).await;
        hasher = returned;
        result?;
    }
    let mut cv = [0u8; 32];
    match stream.read_exact(&mut cv).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::ReadError(quinn::ReadError::Reset(_))) => return Ok(()),
        Err(e) => return Err(wire::read_exact_error(e)),
    }
    Progress::add(&shared.progress.counters.bytes_transferred, len);
    let ok = match &mut hasher {
        Some(h) => checksum::finish_chunk(h.flushed(), version.size, chunk_size) == cv,
        None => true,
    };
    if !ok {
        shared.event(
            FaultCode::VerifyChecksum,
            &incoming.rel,
            format!("chunk {index} arrived with a wrong blake3; sending it again"),
        );
        let _ = shared.control.send(ToSource::ChunkAck {
            id,
            gen,
            index,
            ok: false,
        });
        return Ok(());
    }
    {
        let mut guard = slot.lock().await;
        match guard.as_mut() {
            Some(p) if p.gen == gen => {
                same_generation(p.version, p.cvs.len(), id, index, version)?;
                p.cvs[index as usize] = Some(cv);
            }
            _ => return Ok(()),
        }
    }
    let (journal, rel) = (shared.journal.clone(), incoming.rel.clone());
    blocking(move || {
        let mut journal = journal.lock().expect("journal lock");
        journal
            .chunk_done(&rel, version, chunk_size, index, cv)
            .and_then(|()| journal.flush())
    })
    .await
    .map_err(journal_write_error)?;
    let _ = shared.control.send(ToSource::ChunkAck {
        id,
        gen,
        index,
        ok: true,
    });
    Ok(())
}

async fn receive_batch(
    shared: &Arc<Shared>,
    mut stream: RecvStream,
    unit: u64,
    files: Vec<wire::BatchFile>,
) -> Result<(), TransferError> {
    let total: u64 = files.iter().map(|f| f.size).sum();
    if total > MAX_BATCH_BYTES {
        return Err(TransferError::protocol(format!(
            "batch of {total} bytes is over the limit"
        )));
    }
    // The batch as quinn received it (no zeroed buffer, no copy); files are
    // cut out of these pieces without copying either.
    let mut data = buffers::Pieces::default();
    while (data.len() as u64) < total {
        match stream
            .read_chunk((total - data.len() as u64) as usize, true)
            .await
        {
            Ok(Some(chunk)) => data.push(chunk.bytes),
            Ok(None) => {
                return Err(TransferError::new(
                    FaultCode::ConnectionReset,
                    format!("batch {unit} ended early"),
                ))
            }
            Err(e) => return Err(wire::read_error(e)),
        }
    }
    let targets: Vec<Option<Incoming>> = {
        let incoming = shared.incoming.lock().expect("incoming lock");
        files.iter().map(|f| incoming.get(&f.id).cloned()).collect()
    };
    if targets.iter().any(Option::is_none) {
        return Err(TransferError::protocol("batch names an unknown file"));
    }
    let shared2 = shared.clone();
    let results = blocking(move || write_batch(&shared2, &files, targets, data)).await?;
    for (id, result) in &results {
        if matches!(result, BatchResult::Done { .. }) {
            shared.incoming.lock().expect("incoming lock").remove(id);
        }
    }
    let _ = shared.control.send(ToSource::BatchAck { unit, results });
    Ok(())
}

/// Writes the files of a batch (blocking): temp file, verify, mtime, rename, journal.
fn write_batch(
    shared: &Shared,
    files: &[wire::BatchFile],
    targets: Vec<Option<Incoming>>,
    mut data: buffers::Pieces,
) -> Result<Vec<(u64, BatchResult)>, TransferError> {
    let verify = shared.options.verify_checksum;
    let counters = &shared.progress.counters;
    let mut results = Vec::with_capacity(files.len());
    let mut parent_cache: Option<(CollectionPath, Dir)> = None;
    let mut done_records = Vec::with_capacity(files.len());
    for (file, incoming) in files.iter().zip(targets) {
        let incoming = incoming.expect("checked");
        let bytes = data.take(file.size as usize);
        Progress::add(&counters.bytes_transferred, file.size);
        let hash = if verify {
            let mut hasher = checksum::PieceHasher::new(blake3::Hasher::new());
            for piece in &bytes {
                hasher.update(piece);
            }
            *hasher.flushed().finalize().as_bytes()
        } else {
            file.hash
        };
        if verify && hash != file.hash {
            shared.event(
                FaultCode::VerifyChecksum,
                &incoming.rel,
                "file arrived with a wrong blake3; sending it again".to_string(),
            );
            results.push((file.id, BatchResult::Mismatch));
            continue;
        }
        let target = &incoming.target;
        let (parent_path, name) = target.split_last().ok_or_else(|| {
            TransferError::fatal(FaultCode::InvalidPath, "the collection root is not a file")
        })?;
        if parent_cache.as_ref().map(|(p, _)| p) != Some(&parent_path) {
            parent_cache = Some((
                parent_path.clone(),
                open_parent(&shared.collection, &parent_path)?,
            ));
        }
        let parent = &parent_cache.as_ref().expect("just set").1;
        let temp = temp_name(&shared.transfer_id, &incoming.rel);
        let fill = |out: &std::fs::File| -> std::io::Result<()> {
            buffers::write_all_vectored_at(out, &bytes, 0)?;
            if shared.options.preserve_mtime {
                set_mtime(out, file.mtime_ns)?;
            }
            Ok(())
        };
        if let Err(e) = write_whole_file(parent, name, &temp, &fill) {
            let _ = parent.remove_file(&temp);
            return Err(shared.write_error(target, e));
        }
        Progress::add(&counters.files, 1);
        if verify {
            Progress::add(&counters.bytes_verified, file.size);
            shared.progress.checksum(FileChecksum {
                path: String::from_utf8_lossy(&incoming.rel).into_owned(),
                size: file.size,
                blake3: checksum::to_hex(&hash),
            });
        }
        done_records.push((
            incoming.rel.clone(),
            SourceVersion {
                size: file.size,
                mtime_ns: file.mtime_ns,
            },
        ));
        results.push((file.id, BatchResult::Done { hash }));
    }
    let mut journal = shared.journal.lock().expect("journal lock");
    for (rel, version) in done_records {
        journal
            .file_done(&rel, version)
            .map_err(journal_write_error)?;
    }
    journal.flush().map_err(journal_write_error)?;
    Ok(results)
}

/// Writes a small file so that it appears under its name only complete:
/// preferably as an unnamed `O_TMPFILE` inode linked in once written (one
/// directory update instead of three for create + rename); where that is not
/// available, or to replace an existing file, through the temp name and a rename.
fn write_whole_file(
    parent: &Dir,
    name: &OsStr,
    temp: &OsStr,
    fill: &dyn Fn(&std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Some(out) = open_tmpfile(parent) {
        fill(&out)?;
        match link_into(&out, parent, name) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = parent.remove_file(temp);
                link_into(&out, parent, temp)?;
                return parent.rename(temp, parent, name);
            }
            // Neither CAP_DAC_READ_SEARCH nor /proc: the portable way.
            Err(_) => {}
        }
    }
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    let out = parent.open_with(temp, &options)?.into_std();
    fill(&out)?;
    drop(out);
    parent.rename(temp, parent, name)
}

/// An unnamed file in `parent` (None where the file system lacks O_TMPFILE).
fn open_tmpfile(parent: &Dir) -> Option<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: openat on an open directory descriptor with a NUL-terminated
    // path; a non-negative result is a new descriptor we own.
    let fd = unsafe {
        libc::openat(
            parent.as_raw_fd(),
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
            0o666 as libc::c_uint,
        )
    };
    // SAFETY: `fd` was just opened and is owned by nothing else.
    (fd >= 0).then(|| unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Gives the `O_TMPFILE` inode `file` the name `name` in `parent` (a single
/// component: it cannot leave the directory; an existing name is EEXIST).
fn link_into(file: &std::fs::File, parent: &Dir, name: &OsStr) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let name = std::ffi::CString::new(name.as_bytes())?;
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc/self/fd works without it.
    // SAFETY: linkat with open descriptors and NUL-terminated paths.
    let linked = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            parent.as_raw_fd(),
            name.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if linked == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.kind() == std::io::ErrorKind::AlreadyExists {
        return Err(error);
    }
    let proc_path = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    // SAFETY: as above.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            parent.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if linked == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_that_changes_the_generations_version_is_a_protocol_error() {
        let made_for = SourceVersion {
            size: 10,
            mtime_ns: 5,
        };
        assert!(same_generation(made_for, 2, 7, 1, made_for).is_ok());
        // A later header claiming a bigger file, to reach past the table.
        let bigger = SourceVersion {
            size: 1 << 40,
            ..made_for
        };
        let err = same_generation(made_for, 2, 7, 5, bigger).unwrap_err();
        assert_eq!(err.code, FaultCode::ProtocolError);
        assert!(err.to_string().contains("chunk 5 of file 7"), "{err}");
        let err = same_generation(made_for, 2, 7, 2, made_for).unwrap_err();
        assert_eq!(err.code, FaultCode::ProtocolError);
        assert!(err.to_string().contains("past its 2 chunks"), "{err}");
    }

    #[test]
    fn discarding_removes_the_partial_files_the_journal_names_and_the_journal() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let collection = Collection::open(root.path()).unwrap();
        let id = "task.0";
        let version = SourceVersion {
            size: 10,
            mtime_ns: 1,
        };
        {
            let (mut journal, _) = Journal::open(state.path(), id).unwrap();
            journal.partial_created(b"a/big").unwrap();
            journal
                .chunk_done(b"a/big", version, 4, 0, [1; 32])
                .unwrap();
            journal.partial_created(b"no chunk yet").unwrap();
            journal.partial_created(b"done").unwrap();
            journal.file_done(b"done", version).unwrap();
            journal.partial_created(b"gone/dir/x").unwrap();
            journal.flush().unwrap();
        }
        let dest = root.path().join("dest");
        std::fs::create_dir_all(dest.join("a")).unwrap();
        let partial = |rel: &str| temp_name(id, rel.as_bytes());
        std::fs::write(dest.join("a").join(partial("a/big")), b"x").unwrap();
        std::fs::write(dest.join(partial("no chunk yet")), b"x").unwrap();
        std::fs::write(dest.join("done"), b"complete").unwrap();
        std::fs::write(dest.join("unrelated"), b"mine").unwrap();

        let removed = discard_destination(&collection, "/dest", state.path(), id).unwrap();
        assert_eq!(removed, 2);
        let mut left: Vec<_> = walk_names(&dest);
        left.sort();
        assert_eq!(left, ["a/", "done", "unrelated"]);
        assert!(!crate::journal::journal_path(state.path(), id).exists());
        // Nothing left to discard: a second call (or one for another id) is a no-op.
        assert_eq!(
            discard_destination(&collection, "/dest", state.path(), id).unwrap(),
            0
        );
        assert!(!crate::journal::journal_path(state.path(), id).exists());
    }

    fn walk_names(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                out.push(format!("{name}/"));
                out.extend(
                    walk_names(&entry.path())
                        .into_iter()
                        .map(|n| format!("{name}/{n}")),
                );
            } else {
                out.push(name);
            }
        }
        out
    }

    #[test]
    fn whole_files_appear_complete_and_replace_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let parent = Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let temp = OsString::from(format!("{PARTIAL_PREFIX}x"));
        let fill =
            |data: &'static [u8]| move |out: &std::fs::File| out.write_all_at(data, 0).map(|_| ());
        write_whole_file(&parent, OsStr::new("a"), &temp, &fill(b"first")).unwrap();
        write_whole_file(&parent, OsStr::new("a"), &temp, &fill(b"second")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [OsString::from("a")]);
        // A directory in the way is an error, and leaves nothing behind.
        std::fs::create_dir(dir.path().join("d")).unwrap();
        assert!(write_whole_file(&parent, OsStr::new("d"), &temp, &fill(b"x")).is_err());
        let _ = parent.remove_file(&temp);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
