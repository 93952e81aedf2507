//! The destination's control loop: takes the source's control frames in
//! order (manifests, file ends, skips, finish) and answers them.
//!
//! It owns what a manifest means at the destination (directories created,
//! each file planned with [`super::plan::decide`] and remembered for the
//! data streams), ending a file (whole-file check, rename into place,
//! journal) and the end of the transfer (`--delete`, directory mtimes).
//! Frames that name a file the destination does not expect, or end a file
//! that does not match its partial file, are PROTOCOL_ERROR faults. It must
//! not receive data (the data streams do) nor block an async thread.

use std::collections::HashSet;
use std::sync::{Arc, Mutex as StdMutex};

use cap_std::fs::Dir;

use crate::checksum;
use crate::collection::CollectionPath;
use crate::error::{CollectionError, FaultCode, TransferError};
use crate::filters::Filters;
use crate::journal::{Resume, SourceVersion};
use crate::progress::Progress;
use crate::spec::FileChecksum;
use crate::wire::{PlanItem, ToDest, ToSource, WireEntry};

use super::extraneous::delete_extraneous;
use super::fs::{create_dir, hash_existing, meta_mtime_ns, set_mtime};
use super::plan::{decide, entry_target, Decision, Existing};
use super::resume::{journal_write_error, verify_partial};
use super::{blocking, Incoming, Shared};

/// What the source must send, and the directories seen (with their mtimes).
type Planned = (Vec<(u64, PlanItem)>, Vec<(CollectionPath, i64)>);

pub(super) struct Control {
    pub shared: Arc<Shared>,
    pub root: CollectionPath,
    pub recursive: bool,
    pub resume: Arc<StdMutex<Resume>>,
    /// Directories this attempt created: nothing in them needs a stat.
    pub created_dirs: Arc<StdMutex<HashSet<CollectionPath>>>,
    /// Every path the source listed (for delete_extraneous).
    pub seen: HashSet<Vec<u8>>,
    pub dir_mtimes: Vec<(CollectionPath, i64)>,
}

/// A `FileEnd` must end the generation the partial file holds, for the
/// version it was made for, once every chunk is in.
pub(super) fn check_end(
    id: u64,
    gen: u32,
    version: SourceVersion,
    partial: (u32, SourceVersion),
    complete: bool,
) -> Result<(), TransferError> {
    if partial != (gen, version) || !complete {
        return Err(TransferError::protocol(format!(
            "end of file {id} before all its chunks"
        )));
    }
    Ok(())
}

impl Control {
    /// Returns `Some(deleted)` once the transfer is complete.
    pub(super) async fn handle(&mut self, message: ToDest) -> Result<Option<u64>, TransferError> {
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
                let known = self
                    .shared
                    .incoming
                    .lock()
                    .expect("incoming lock")
                    .remove(&id);
                if known.is_none() {
                    return Err(TransferError::protocol(format!(
                        "the source skipped file {id}, which it was not sending"
                    )));
                }
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
        let complete = partial.cvs.iter().all(Option::is_some);
        check_end(id, gen, version, (partial.gen, partial.version), complete)?;
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

    /// The end of the transfer: `--delete`, then directory mtimes (deepest
    /// first, after their contents changed them). A source that finishes
    /// while files it planned to send are missing is lying about being done.
    async fn finish(&mut self) -> Result<u64, TransferError> {
        let shared = self.shared.clone();
        let missing = shared
            .incoming
            .lock()
            .expect("incoming lock")
            .keys()
            .min()
            .copied();
        if let Some(id) = missing {
            return Err(TransferError::protocol(format!(
                "the source finished without sending file {id}"
            )));
        }
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

/// Decides, for one manifest message, what the source must send (blocking):
/// creates the directories, looks at each file's target and carries out the
/// planner's decision.
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
    let chunk_size = shared.tuning.chunk_size;
    let mut items = Vec::with_capacity(entries.len());
    let mut dirs = Vec::new();
    let resume = resume.lock().expect("resume lock");
    for entry in entries {
        let target = entry_target(root, recursive, &entry)?;
        if entry.dir {
            Progress::add(&counters.directories, 1);
            let created = create_dir(dir, &target).map_err(|e| {
                TransferError::from_collection(&CollectionError::from_io(
                    "mkdir",
                    target.to_string(),
                    e,
                ))
            })?;
            if created {
                created_dirs.insert(target.clone());
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
        let existing = existing_at(dir, &target, created_dirs)?;
        let level = shared.options.sync_level;
        let item = match decide(&entry.path, version, existing, level, &resume, chunk_size) {
            Decision::DirectoryInTheWay => {
                return Err(TransferError::fatal(
                    FaultCode::IoError,
                    format!("`{target}` is a directory at the destination, the source has a file"),
                ))
            }
            Decision::Skip { resumed } => {
                let counter = if resumed {
                    &counters.files_resumed
                } else {
                    &counters.files_skipped
                };
                Progress::add(counter, 1);
                PlanItem::Skip { resumed }
            }
            Decision::CompareHash => {
                let hash = hash_existing(dir, &target)?;
                remember(shared, entry.id, &entry.path, &target)?;
                PlanItem::SendUnlessHash { hash }
            }
            Decision::Send { resume: reuse } => {
                remember(shared, entry.id, &entry.path, &target)?;
                let have = match resume.partial.get(entry.path.as_slice()) {
                    Some(partial) if reuse => verify_partial(
                        shared,
                        entry.id,
                        &entry.path,
                        &target,
                        version,
                        &partial.chunks,
                    ),
                    _ => Vec::new(),
                };
                PlanItem::Send { have }
            }
        };
        items.push((entry.id, item));
    }
    Ok((items, dirs))
}

/// What the destination holds at `target` (not following a symlink).
fn existing_at(
    dir: &Dir,
    target: &CollectionPath,
    created_dirs: &HashSet<CollectionPath>,
) -> Result<Option<Existing>, TransferError> {
    // The source lists a directory before its contents: in a directory
    // this attempt created, nothing exists yet (one failed lookup saved
    // per file; a file someone else puts there is still replaced whole).
    let in_new_dir = target
        .split_last()
        .is_some_and(|(parent, _)| created_dirs.contains(&parent));
    if in_new_dir {
        return Ok(None);
    }
    match dir.symlink_metadata(target.as_relative()) {
        Ok(m) => Ok(Some(Existing {
            is_dir: m.is_dir(),
            len: m.len(),
            mtime_ns: meta_mtime_ns(&m),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TransferError::from_collection(&CollectionError::from_io(
            "stat",
            target.to_string(),
            e,
        ))),
    }
}

/// Remembers a file the source will send, for its data streams; a manifest
/// that lists a file being sent a second time is a lie.
fn remember(
    shared: &Shared,
    id: u64,
    rel: &[u8],
    target: &CollectionPath,
) -> Result<(), TransferError> {
    let incoming = Incoming {
        rel: Arc::from(rel),
        target: Arc::new(target.clone()),
    };
    let mut all = shared.incoming.lock().expect("incoming lock");
    if all.insert(id, incoming).is_some() {
        return Err(TransferError::protocol(format!(
            "the manifest lists file {id}, which is already being sent"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tokio::sync::mpsc;

    use super::*;
    use crate::collection::Collection;
    use crate::journal::Journal;
    use crate::spec::{Side, SyncLevel, TransferOptions, Tuning};

    /// A control loop for a recursive transfer into `/dest` of `root`, and
    /// what it answers the source.
    fn control(
        root: &std::path::Path,
        state: &std::path::Path,
        options: TransferOptions,
    ) -> (Control, mpsc::UnboundedReceiver<ToSource>) {
        std::fs::create_dir_all(root.join("dest")).unwrap();
        let (journal, resume) = Journal::open(state, "t").unwrap();
        let (control, answers) = mpsc::unbounded_channel();
        let (fatal, _) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            transfer_id: "t".into(),
            collection: Collection::open(root).unwrap(),
            options,
            tuning: Tuning::default(),
            progress: Arc::new(Progress::new(Side::Destination, None)),
            incoming: StdMutex::new(HashMap::new()),
            partials: StdMutex::new(HashMap::new()),
            journal: Arc::new(StdMutex::new(journal)),
            control,
            fatal,
        });
        let control = Control {
            shared,
            root: CollectionPath::parse("/dest").unwrap(),
            recursive: true,
            resume: Arc::new(StdMutex::new(resume)),
            created_dirs: Arc::default(),
            seen: HashSet::new(),
            dir_mtimes: Vec::new(),
        };
        (control, answers)
    }

    fn manifest(entries: &[(u64, &str, bool, u64)]) -> ToDest {
        let entries = entries
            .iter()
            .map(|&(id, path, dir, size)| WireEntry {
                id,
                path: path.as_bytes().to_vec(),
                dir,
                size,
                mtime_ns: 0,
            })
            .collect();
        ToDest::Manifest { entries }
    }

    fn plan(answers: &mut mpsc::UnboundedReceiver<ToSource>) -> Vec<(u64, PlanItem)> {
        match answers.try_recv() {
            Ok(ToSource::Plan { items }) => items,
            other => panic!("{other:?}"),
        }
    }

    fn protocol_error(result: Result<Option<u64>, TransferError>, says: &str) {
        let err = result.unwrap_err();
        assert_eq!(err.code, FaultCode::ProtocolError, "{err:?}");
        assert!(err.message.contains(says), "{err}");
    }

    #[tokio::test]
    async fn a_manifest_is_planned_at_the_sync_level_and_the_transfer_finishes() {
        let (root, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let options = TransferOptions {
            sync_level: Some(SyncLevel::Size),
            ..TransferOptions::default()
        };
        let (mut c, mut answers) = control(root.path(), state.path(), options);
        std::fs::create_dir(root.path().join("dest/a")).unwrap();
        std::fs::write(root.path().join("dest/a/same"), b"12345").unwrap();
        let entries = [
            (1, "a", true, 0),
            (2, "a/same", false, 5),
            (3, "a/other", false, 6),
        ];
        assert_eq!(c.handle(manifest(&entries)).await.unwrap(), None);
        let items = plan(&mut answers);
        assert!(matches!(
            &items[..],
            [
                (2, PlanItem::Skip { resumed: false }),
                (3, PlanItem::Send { have })
            ] if have.is_empty()
        ));
        // The source skips the one it sends (say it vanished), then finishes.
        let skipped = ToDest::FileSkipped {
            id: 3,
            equal: false,
        };
        assert_eq!(c.handle(skipped).await.unwrap(), None);
        assert_eq!(c.handle(ToDest::Finish).await.unwrap(), Some(0));
    }

    #[tokio::test]
    async fn a_source_that_names_files_it_is_not_sending_is_a_protocol_error() {
        let (root, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut c, mut answers) = control(root.path(), state.path(), TransferOptions::default());
        c.handle(manifest(&[(1, "f", false, 10 << 20)]))
            .await
            .unwrap();
        assert_eq!(plan(&mut answers).len(), 1);

        let stray = ToDest::FileSkipped { id: 9, equal: true };
        protocol_error(c.handle(stray).await, "file 9");
        let end = ToDest::FileEnd {
            id: 1,
            gen: 0,
            size: 10 << 20,
            mtime_ns: 0,
            hash: [0; 32],
        };
        protocol_error(c.handle(end).await, "file 1 that has no data");
        let unknown_end = ToDest::FileEnd {
            id: 8,
            gen: 0,
            size: 1,
            mtime_ns: 0,
            hash: [0; 32],
        };
        protocol_error(c.handle(unknown_end).await, "unknown file 8");
        protocol_error(
            c.handle(manifest(&[(1, "g", false, 1)])).await,
            "file 1, which is already being sent",
        );
        protocol_error(c.handle(ToDest::Finish).await, "without sending file 1");
    }

    #[test]
    fn a_file_end_must_match_its_partial_file() {
        let v = SourceVersion {
            size: 10,
            mtime_ns: 5,
        };
        assert!(check_end(7, 2, v, (2, v), true).is_ok());
        let other_mtime = SourceVersion { mtime_ns: 6, ..v };
        let other_size = SourceVersion { size: 11, ..v };
        for (gen, version, complete) in [
            (2, v, false),
            (1, v, true),
            (3, v, true),
            (2, other_mtime, true),
            (2, other_size, true),
        ] {
            let err = check_end(7, gen, version, (2, v), complete).unwrap_err();
            assert_eq!(err.code, FaultCode::ProtocolError, "{gen} {version:?}");
            assert!(err.message.contains("file 7"), "{err}");
        }
    }
}
