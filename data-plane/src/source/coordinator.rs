//! The source's coordinator: all per-file state of one attempt, as a pure
//! state machine. Inputs are the walk's entries, the destination's control
//! frames, the workers' reports and the results of final stats; outputs are
//! [`Action`]s the caller carries out (queue a unit, stat a file, write a
//! frame, count progress).
//!
//! It owns which files are listed and planned, which chunks are outstanding
//! and acknowledged, what to send next, when a file is complete, and the
//! checks on every frame the destination sends: a frame that names a chunk,
//! batch or file the source never offered, or that does not fit where the
//! file is, is a PROTOCOL_ERROR fault, never a panic or a silently wrong count.
//!
//! It must not do I/O, spawn tasks, read a clock or touch shared counters:
//! that is the caller's job (`super::run`), which keeps it testable with
//! scripted peers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::checksum::{self, chunk_count};
use crate::collection::CollectionPath;
use crate::error::{FaultCode, TransferError};
use crate::spec::{FileChecksum, Side, TransferCounters, TransferEvent, Tuning};
use crate::wire::{BatchResult, PlanItem, ToDest, ToSource, WireEntry};

use super::unit::{BatchItem, ChunkUnit, Report, Unit};
use super::walk::WalkMessage;

/// Manifest messages the destination may have unanswered.
const MAX_PENDING_PLANS: usize = 4;
/// How often a file that keeps changing is re-read before it counts as a source error.
pub(super) const MAX_CHANGE_RETRIES: u32 = 3;

/// The destination's final counters and how many files it deleted.
pub(super) type Finished = (TransferCounters, u64);

/// What the caller must do, in order.
#[derive(Debug)]
pub(super) enum Action {
    /// Queue a unit for the workers.
    Send(Unit),
    /// Stat the file again and answer with [`Coordinator::on_stat`]: the last
    /// check that it did not change while its chunks were read.
    Stat {
        id: u64,
        gen: u32,
        path: Arc<CollectionPath>,
    },
    /// Write a frame on the control stream.
    Frame(ToDest),
    /// The walk listed a file of `size` bytes (progress totals).
    Listed { size: u64 },
    /// The destination confirmed a file; `checksum` when verifying.
    Done {
        size: u64,
        checksum: Option<FileChecksum>,
    },
    /// An event for the report (ours are also sent as a [`ToDest::Event`] frame).
    Event(TransferEvent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitPlan,
    Chunks,
    Batched,
    Comparing,
    /// Every chunk acknowledged; the final stat is under way.
    Stat,
    /// `FileEnd` sent with this hash; waiting for `FileDone` or `FileFailed`.
    AwaitEnd {
        hash: [u8; 32],
    },
}

#[derive(Debug)]
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

    fn batch_item(&self, id: u64) -> BatchItem {
        BatchItem {
            id,
            path: self.path.clone(),
            rel: self.rel.clone(),
            size: self.size,
            mtime_ns: self.mtime_ns,
        }
    }

    fn chunk_unit(&self, id: u64, index: u32, expect: Option<[u8; 32]>) -> Unit {
        Unit::Chunk(ChunkUnit {
            id,
            gen: self.gen,
            index,
            path: self.path.clone(),
            rel: self.rel.clone(),
            size: self.size,
            mtime_ns: self.mtime_ns,
            expect,
        })
    }
}

pub(super) struct Coordinator {
    tuning: Tuning,
    verify: bool,
    skip_source_errors: bool,
    files: HashMap<u64, SrcFile>,
    /// The files of each manifest the destination has not planned yet, oldest first.
    unplanned: VecDeque<Vec<u64>>,
    walk_done: bool,
    batch: Vec<BatchItem>,
    batch_bytes: u64,
    next_unit: u64,
    /// Batches sent and not acknowledged, with the files each carries.
    batches_in_flight: HashMap<u64, HashSet<u64>>,
    actions: Vec<Action>,
    finishing: bool,
}

impl Coordinator {
    pub(super) fn new(tuning: Tuning, verify: bool, skip_source_errors: bool) -> Self {
        Coordinator {
            tuning,
            verify,
            skip_source_errors,
            files: HashMap::new(),
            unplanned: VecDeque::new(),
            walk_done: false,
            batch: Vec::new(),
            batch_bytes: 0,
            next_unit: 0,
            batches_in_flight: HashMap::new(),
            actions: Vec::new(),
            finishing: false,
        }
    }

    /// The actions decided since the last call, in order.
    pub(super) fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Whether to take more entries from the walk (back-pressure: at most
    /// `MAX_PENDING_PLANS` manifests unanswered).
    pub(super) fn wants_entries(&self) -> bool {
        !self.walk_done && self.unplanned.len() < MAX_PENDING_PLANS
    }

    fn all_done(&self) -> bool {
        self.walk_done
            && self.unplanned.is_empty()
            && self.files.is_empty()
            && self.batch.is_empty()
            && self.batches_in_flight.is_empty()
    }

    /// Sends `Finish` once, when everything is confirmed.
    fn settle(&mut self) {
        if !self.finishing && self.all_done() {
            self.finishing = true;
            tracing::debug!("all files confirmed, finishing");
            self.actions.push(Action::Frame(ToDest::Finish));
        }
    }

    fn event(&mut self, code: FaultCode, path: Option<&str>, message: String) {
        let event = TransferEvent::new(Side::Source, code, path.map(str::to_string), message);
        self.actions.push(Action::Event(event.clone()));
        self.actions.push(Action::Frame(ToDest::Event(event)));
    }

    fn send(&mut self, unit: Unit) {
        self.actions.push(Action::Send(unit));
    }

    pub(super) fn on_walk(&mut self, message: WalkMessage) -> Result<(), TransferError> {
        match message {
            WalkMessage::End => {
                self.walk_done = true;
                self.actions.push(Action::Frame(ToDest::ManifestEnd));
            }
            WalkMessage::Error(error) => return Err(error),
            WalkMessage::Skipped { path, error } => {
                self.event(
                    error.code,
                    Some(&path),
                    format!("skipped: {}", error.message),
                );
            }
            WalkMessage::Entries(entries) => self.manifest(entries),
        }
        self.settle();
        Ok(())
    }

    fn manifest(&mut self, entries: Vec<(WireEntry, Arc<CollectionPath>)>) {
        let mut wire_entries = Vec::with_capacity(entries.len());
        let mut ids = Vec::new();
        for (entry, path) in entries {
            if !entry.dir {
                self.actions.push(Action::Listed { size: entry.size });
                ids.push(entry.id);
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
        self.unplanned.push_back(ids);
        self.actions.push(Action::Frame(ToDest::Manifest {
            entries: wire_entries,
        }));
    }

    /// Takes one control frame from the destination; `Some` once it confirmed the end.
    pub(super) fn on_control(
        &mut self,
        message: ToSource,
    ) -> Result<Option<Finished>, TransferError> {
        match message {
            ToSource::Plan { items } => self.plan(items)?,
            ToSource::ChunkAck { id, gen, index, ok } => self.chunk_ack(id, gen, index, ok)?,
            ToSource::BatchAck { unit, results } => self.batch_ack(unit, results)?,
            ToSource::FileDone { id, hash } => {
                let sent = self.awaiting_end(id, "confirmed")?;
                if hash != sent {
                    return Err(TransferError::protocol(format!(
                        "the destination confirmed file {id} with another hash than the source sent"
                    )));
                }
                let file = self.files.remove(&id).expect("awaiting its end");
                self.file_done(&file, hash);
            }
            ToSource::FileFailed { id } => {
                self.awaiting_end(id, "failed")?;
                let file = self.files.get_mut(&id).expect("awaiting its end");
                file.gen += 1;
                self.restart_chunks(id);
            }
            ToSource::Event(event) => self.actions.push(Action::Event(event)),
            ToSource::Finished { counters, deleted } => {
                if !self.finishing {
                    return Err(TransferError::protocol("the destination finished early"));
                }
                return Ok(Some((counters, deleted)));
            }
            ToSource::Abort(error) => return Err(error),
        }
        self.settle();
        Ok(None)
    }

    /// The hash sent in the `FileEnd` of file `id`: a `FileDone` or
    /// `FileFailed` for a file that has not ended is a lie.
    fn awaiting_end(&self, id: u64, what: &str) -> Result<[u8; 32], TransferError> {
        match self.files.get(&id).map(|f| f.phase) {
            Some(Phase::AwaitEnd { hash }) => Ok(hash),
            _ => Err(TransferError::protocol(format!(
                "the destination {what} file {id}, which the source has not ended"
            ))),
        }
    }

    /// A plan answers the oldest unanswered manifest, once for each of its files.
    fn plan(&mut self, items: Vec<(u64, PlanItem)>) -> Result<(), TransferError> {
        let Some(ids) = self.unplanned.pop_front() else {
            return Err(TransferError::protocol(
                "the destination sent a plan for no manifest",
            ));
        };
        let mut unanswered: HashSet<u64> = ids.into_iter().collect();
        for (id, item) in items {
            if !unanswered.remove(&id) {
                return Err(TransferError::protocol(format!(
                    "plan for file {id}, which is not waiting for one"
                )));
            }
            self.plan_file(id, item)?;
        }
        if let Some(id) = unanswered.iter().min() {
            return Err(TransferError::protocol(format!(
                "the plan left file {id} of its manifest unanswered"
            )));
        }
        self.flush_batch();
        Ok(())
    }

    fn plan_file(&mut self, id: u64, item: PlanItem) -> Result<(), TransferError> {
        match item {
            PlanItem::Skip { .. } => {
                self.files.remove(&id);
            }
            PlanItem::SendUnlessHash { hash } => {
                let file = self.files.get_mut(&id).expect("listed in its manifest");
                file.phase = Phase::Comparing;
                let unit = Unit::Compare {
                    id,
                    path: file.path.clone(),
                    dest_hash: hash,
                };
                self.send(unit);
            }
            PlanItem::Send { have } => {
                let file = &self.files[&id];
                let chunks = chunk_count(file.size, self.tuning.chunk_size);
                if let Some((index, _)) = have.iter().find(|(index, _)| *index >= chunks) {
                    return Err(TransferError::protocol(format!(
                        "the destination holds chunk {index} of file {id}, which has {chunks} chunks"
                    )));
                }
                self.send_file(id, have);
            }
        }
        Ok(())
    }

    /// Sends a whole file: small ones in a batch, others as chunks, except
    /// the chunks the destination `have`s (which are checked, not sent).
    fn send_file(&mut self, id: u64, have: Vec<(u32, [u8; 32])>) {
        let chunk_size = self.tuning.chunk_size;
        let small_limit = self.tuning.small_file_limit;
        let Some(file) = self.files.get_mut(&id) else {
            return;
        };
        if file.size <= small_limit && have.is_empty() {
            file.phase = Phase::Batched;
            let item = file.batch_item(id);
            self.add_to_batch(item);
            return;
        }
        file.phase = Phase::Chunks;
        file.reset_chunks(chunk_size);
        let have: HashMap<u32, [u8; 32]> = have.into_iter().collect();
        let units: Vec<Unit> = (0..file.cvs.len() as u32)
            .map(|index| file.chunk_unit(id, index, have.get(&index).copied()))
            .collect();
        for unit in units {
            self.send(unit);
        }
    }

    fn chunk_ack(&mut self, id: u64, gen: u32, index: u32, ok: bool) -> Result<(), TransferError> {
        // Acks of a file given up on or of an older generation are late, not lies.
        let Some(file) = self.files.get_mut(&id) else {
            return Ok(());
        };
        if file.gen != gen || file.phase != Phase::Chunks {
            return Ok(());
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
            let unit = file.chunk_unit(id, index, None);
            self.send(unit);
        }
        Ok(())
    }

    fn batch_ack(
        &mut self,
        unit: u64,
        results: Vec<(u64, BatchResult)>,
    ) -> Result<(), TransferError> {
        let Some(mut carried) = self.batches_in_flight.remove(&unit) else {
            return Err(TransferError::protocol(format!(
                "the destination acknowledged batch {unit}, which is not in flight"
            )));
        };
        for (id, result) in results {
            if !carried.remove(&id) {
                return Err(TransferError::protocol(format!(
                    "the destination acknowledged file {id} in batch {unit}, which does not carry it"
                )));
            }
            match result {
                BatchResult::Done { hash } => {
                    if let Some(file) = self.files.remove(&id) {
                        self.file_done(&file, hash);
                    }
                }
                BatchResult::Mismatch => {
                    if let Some(file) = self.files.get(&id) {
                        let item = file.batch_item(id);
                        self.add_to_batch(item);
                    }
                }
            }
        }
        self.flush_batch();
        Ok(())
    }

    fn file_done(&mut self, file: &SrcFile, hash: [u8; 32]) {
        let checksum = self.verify.then(|| FileChecksum {
            path: file.rel.to_string(),
            size: file.size,
            blake3: checksum::to_hex(&hash),
        });
        self.actions.push(Action::Done {
            size: file.size,
            checksum,
        });
    }

    fn add_to_batch(&mut self, item: BatchItem) {
        if !self.batch.is_empty()
            && (self.batch.len() as u32 >= self.tuning.batch_files
                || self.batch_bytes + item.size > self.tuning.batch_bytes)
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
        self.batches_in_flight
            .insert(unit, self.batch.iter().map(|item| item.id).collect());
        self.batch_bytes = 0;
        let files = std::mem::take(&mut self.batch);
        self.send(Unit::Batch { unit, files });
    }

    fn restart_chunks(&mut self, id: u64) {
        let chunk_size = self.tuning.chunk_size;
        let Some(file) = self.files.get_mut(&id) else {
            return;
        };
        file.phase = Phase::Chunks;
        file.reset_chunks(chunk_size);
        let units: Vec<Unit> = (0..file.cvs.len() as u32)
            .map(|index| file.chunk_unit(id, index, None))
            .collect();
        for unit in units {
            self.send(unit);
        }
    }

    fn maybe_complete(&mut self, id: u64) {
        let Some(file) = self.files.get_mut(&id) else {
            return;
        };
        if file.phase != Phase::Chunks || !file.complete() {
            return;
        }
        file.phase = Phase::Stat;
        let (path, gen) = (file.path.clone(), file.gen);
        self.actions.push(Action::Stat { id, gen, path });
    }

    /// The final stat of a file whose chunks are all acknowledged: unchanged,
    /// it ends; changed, it is read again (a new generation), up to
    /// `MAX_CHANGE_RETRIES` times.
    pub(super) fn on_stat(
        &mut self,
        id: u64,
        gen: u32,
        stat: Result<(u64, i64), TransferError>,
    ) -> Result<(), TransferError> {
        self.final_check(id, gen, stat)?;
        self.settle();
        Ok(())
    }

    fn final_check(
        &mut self,
        id: u64,
        gen: u32,
        stat: Result<(u64, i64), TransferError>,
    ) -> Result<(), TransferError> {
        let chunk_size = self.tuning.chunk_size;
        let Some(file) = self.files.get_mut(&id) else {
            return Ok(());
        };
        if file.gen != gen {
            return Ok(());
        }
        let (size, mtime_ns) = match stat {
            Ok(s) => s,
            Err(e) => return self.source_error(id, e),
        };
        if !file.dirty && size == file.size && mtime_ns == file.mtime_ns {
            let cvs: Vec<[u8; 32]> = file.cvs.iter().map(|cv| cv.expect("complete")).collect();
            let hash = checksum::file_hash(file.size, chunk_size, &cvs);
            file.phase = Phase::AwaitEnd { hash };
            self.actions.push(Action::Frame(ToDest::FileEnd {
                id,
                gen,
                size,
                mtime_ns,
                hash,
            }));
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
        if !self.skip_source_errors {
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
        self.actions
            .push(Action::Frame(ToDest::FileSkipped { id, equal: false }));
        Ok(())
    }

    /// Takes one worker report.
    pub(super) fn on_report(&mut self, report: Report) -> Result<(), TransferError> {
        self.worker(report)?;
        self.settle();
        Ok(())
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
                let Some(file) = self.current_chunks(id, gen) else {
                    return Ok(());
                };
                file.cvs[index as usize] = Some(cv);
                if !sent {
                    file.acked[index as usize] = true;
                }
                self.maybe_complete(id);
            }
            Report::ChunkChanged { id, gen, index } => {
                let Some(file) = self.current_chunks(id, gen) else {
                    return Ok(());
                };
                file.dirty = true;
                file.cvs[index as usize] = Some([0; 32]);
                file.acked[index as usize] = true;
                self.maybe_complete(id);
            }
            Report::BatchSent => {}
            Report::Compared { id, equal } => {
                if equal {
                    self.files.remove(&id);
                    self.actions
                        .push(Action::Frame(ToDest::FileSkipped { id, equal: true }));
                } else {
                    self.send_file(id, Vec::new());
                    self.flush_batch();
                }
            }
            Report::SourceError { id, error } => self.source_error(id, error)?,
            Report::Event(event) => {
                self.actions.push(Action::Event(event.clone()));
                self.actions.push(Action::Frame(ToDest::Event(event)));
            }
            Report::Fatal(error) => return Err(error),
        }
        Ok(())
    }

    /// The file, if it is sending chunks of generation `gen` (a worker's
    /// report of an older generation is late, and dropped).
    fn current_chunks(&mut self, id: u64, gen: u32) -> Option<&mut SrcFile> {
        self.files
            .get_mut(&id)
            .filter(|f| f.gen == gen && f.phase == Phase::Chunks)
    }
}

#[cfg(test)]
mod tests;
