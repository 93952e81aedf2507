//! Batches: many small files on one data stream, each written whole (temp
//! file or O_TMPFILE, verified, renamed or linked into place) and journaled
//! together.
//!
//! It owns the checks on a batch header (the size limit, each file named
//! once and known) and the batch's acknowledgement. It must not touch chunked
//! files' partial state, and must not block an async thread: the writes run
//! on the blocking pool.

use std::collections::HashSet;
use std::sync::Arc;

use cap_std::fs::Dir;
use quinn::RecvStream;

use crate::buffers;
use crate::checksum;
use crate::collection::CollectionPath;
use crate::error::{FaultCode, TransferError};
use crate::journal::SourceVersion;
use crate::progress::Progress;
use crate::spec::FileChecksum;
use crate::wire::{self, BatchFile, BatchResult, ToSource};

use super::fs::{open_parent, set_mtime, write_whole_file};
use super::resume::{journal_write_error, temp_name};
use super::{blocking, Incoming, Shared};

/// Largest batch a source may send in one stream.
const MAX_BATCH_BYTES: u64 = 256 << 20;

/// A batch header's total size: within the limit (summed without
/// overflow), each file named once.
fn check_batch(files: &[BatchFile]) -> Result<u64, TransferError> {
    let total = files
        .iter()
        .try_fold(0u64, |total, f| total.checked_add(f.size))
        .filter(|total| *total <= MAX_BATCH_BYTES)
        .ok_or_else(|| TransferError::protocol("batch is over the size limit"))?;
    let mut ids = HashSet::with_capacity(files.len());
    if let Some(f) = files.iter().find(|f| !ids.insert(f.id)) {
        return Err(TransferError::protocol(format!(
            "batch names file {} twice",
            f.id
        )));
    }
    Ok(total)
}

pub(super) async fn receive_batch(
    shared: &Arc<Shared>,
    mut stream: RecvStream,
    unit: u64,
    files: Vec<BatchFile>,
) -> Result<(), TransferError> {
    let total = check_batch(&files)?;
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
    files: &[BatchFile],
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

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol_error<T: std::fmt::Debug>(result: Result<T, TransferError>, says: &str) {
        let err = result.unwrap_err();
        assert_eq!(err.code, FaultCode::ProtocolError, "{err:?}");
        assert!(err.message.contains(says), "{err}");
    }

    #[test]
    fn batch_headers_must_fit_the_limit_and_name_each_file_once() {
        let file = |id, size| BatchFile {
            id,
            size,
            mtime_ns: 0,
            hash: [0; 32],
        };
        assert_eq!(check_batch(&[file(1, 10), file(2, 20)]).unwrap(), 30);
        protocol_error(check_batch(&[file(1, MAX_BATCH_BYTES + 1)]), "size limit");
        protocol_error(check_batch(&[file(1, u64::MAX), file(2, 2)]), "size limit");
        protocol_error(check_batch(&[file(1, 10), file(1, 10)]), "file 1 twice");
    }
}
