//! The source walk: lists the transfer root on the blocking pool and hands
//! entries to the coordinator in manifest-sized batches, a directory always
//! before its contents.
//!
//! It owns the order and ids of entries and the decision which entries are
//! transferred at all (regular files and directories, not excluded by the
//! filters). It must not read file contents or talk to the destination, and
//! it runs only on the blocking pool (`blocking_send` into a bounded channel
//! is its back-pressure).

use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::collection::{Collection, CollectionPath};
use crate::error::{CollectionError, FaultCode, TransferError};
use crate::filters::Filters;
use crate::wire::WireEntry;

/// Manifest entries per message.
const MANIFEST_BATCH: usize = 1024;

/// What the walk tells the coordinator.
#[derive(Debug)]
pub(super) enum WalkMessage {
    Entries(Vec<(WireEntry, Arc<CollectionPath>)>),
    Error(TransferError),
    /// A directory that could not be read, skipped per the options.
    Skipped {
        path: String,
        error: TransferError,
    },
    End,
}

/// Walks the source (blocking pool), sending entries in manifest-sized
/// batches; a directory is always sent before its contents.
pub(super) fn walk(
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
            mtime_ns: meta_mtime_ns(&metadata),
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
    walk_tree(collection, root, filters, skip_errors, &send);
}

/// Walks a directory tree depth first, children sorted by name; ends with
/// [`WalkMessage::End`] unless the coordinator went away or the walk failed.
fn walk_tree(
    collection: &Collection,
    root: &CollectionPath,
    filters: &Filters,
    skip_errors: bool,
    send: &dyn Fn(WalkMessage) -> bool,
) {
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
                    mtime_ns: meta_mtime_ns(&meta),
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

fn meta_mtime_ns(m: &cap_std::fs::Metadata) -> i64 {
    use cap_std::fs::MetadataExt;
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}
