//! Restart state: the partial file of each file being received (beside its
//! target, named from the transfer and the path), re-verified chunks from an
//! earlier attempt's journal, and discarding what an abandoned transfer left.
//!
//! It owns the partial files' names and their per-chunk state. It must not
//! decide whether a file is resumed (the sync planner does) nor accept chunk
//! headers (the receiver does); its functions block: call them on the
//! blocking pool.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use cap_std::fs::{Dir, OpenOptions};
use tokio::sync::Mutex;
use tracing::debug;

use crate::checksum::{self, chunk_count, chunk_len};
use crate::collection::{Collection, CollectionPath};
use crate::error::{FaultCode, TransferError};
use crate::journal::{Journal, SourceVersion};

use super::fs::open_parent;
use super::{Shared, PARTIAL_PREFIX};

/// The partial file of one generation of a file being received.
pub(super) struct Partial {
    pub gen: u32,
    /// The version of the source file this generation is.
    pub version: SourceVersion,
    /// The chaining value of each chunk received and verified.
    pub cvs: Vec<Option<[u8; 32]>>,
    pub file: Arc<std::fs::File>,
    pub parent: Arc<Dir>,
    pub temp: OsString,
    pub name: OsString,
}

pub(super) type PartialSlot = Arc<Mutex<Option<Partial>>>;

pub(super) fn temp_name(transfer_id: &str, rel: &[u8]) -> OsString {
    let mut hasher = blake3::Hasher::new();
    hasher.update(transfer_id.as_bytes());
    hasher.update(&[0]);
    hasher.update(rel);
    OsString::from(format!(
        "{PARTIAL_PREFIX}{}",
        &hasher.finalize().to_hex()[..24]
    ))
}

/// Re-hashes the chunks an earlier attempt wrote to the partial file and
/// keeps those that still match; installs the partial state.
pub(super) fn verify_partial(
    shared: &Shared,
    id: u64,
    rel: &[u8],
    target: &CollectionPath,
    version: SourceVersion,
    chunks: &BTreeMap<u32, [u8; 32]>,
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
pub(super) fn journal_write_error(e: std::io::Error) -> TransferError {
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
pub(super) fn open_partial(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
