//! The source's workers: each takes units from the shared queue, reads and
//! hashes on the blocking pool, and sends on its own QUIC stream.
//!
//! They own reading a file consistently (a file that changes under a read is
//! reported, not sent half-old) and the byte layout of a data stream. They
//! must not keep per-file state or decide what to send: they report to the
//! coordinator, which does.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use bytes::Bytes;
use quinn::{Connection, VarInt};
use tokio::sync::{mpsc, Mutex};

use crate::buffers::BufferPool;
use crate::checksum::{self, chunk_len};
use crate::collection::{Collection, CollectionPath};
use crate::error::{CollectionError, FaultCode, TransferError};
use crate::hooks::{FileCallback, TestHooks};
use crate::progress::Progress;
use crate::spec::{Side, TransferEvent, Tuning};
use crate::wire::{self, BatchFile, UnitHeader};

use super::coordinator::MAX_CHANGE_RETRIES;
use super::unit::{BatchItem, ChunkUnit, Report, Unit};
use super::Event;

/// Bytes read (and written to a stream) at a time.
pub(super) const PIECE: usize = 1 << 20;
/// Idle read buffers kept for reuse (at most this many MiB stay allocated).
pub(super) const MAX_IDLE_BUFFERS: usize = 48;

/// What workers need, shared read-only.
pub(super) struct Shared {
    pub collection: Collection,
    pub tuning: Tuning,
    pub verify: bool,
    pub hooks: TestHooks,
    pub progress: Arc<Progress>,
    /// Read buffers of `PIECE` bytes, back from quinn once acknowledged.
    pub buffers: Arc<BufferPool>,
}

pub(super) fn std_mtime_ns(metadata: &std::fs::Metadata) -> i64 {
    metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec()
}

pub(super) fn open_file(
    collection: &Collection,
    path: &CollectionPath,
) -> Result<std::fs::File, CollectionError> {
    collection
        .dir()
        .open(path.as_relative())
        .map(|f| f.into_std())
        .map_err(|e| CollectionError::from_io("open", path.to_string(), e))
}

pub(super) fn stat_file(
    collection: &Collection,
    path: &CollectionPath,
) -> Result<(u64, i64), CollectionError> {
    let file = open_file(collection, path)?;
    let metadata = file
        .metadata()
        .map_err(|e| CollectionError::from_io("stat", path.to_string(), e))?;
    Ok((metadata.len(), std_mtime_ns(&metadata)))
}

pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

/// Takes units until the queue closes; a failed stream ends the worker with
/// [`Report::Fatal`].
pub(super) async fn worker(
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
            Unit::Chunk(chunk) => send_chunk(&shared, &connection, &chunk, &report).await,
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

/// Sends one chunk: unless the destination already holds it (resume), its
/// header, its bytes and its chaining value on a stream of its own. A file
/// that changed since the generation began is reported, not sent.
async fn send_chunk(
    shared: &Shared,
    connection: &Connection,
    chunk: &ChunkUnit,
    report: &impl Fn(Report),
) -> Result<(), TransferError> {
    let (id, gen, index) = (chunk.id, chunk.gen, chunk.index);
    let file = match open_unchanged(shared, chunk).await {
        Ok(Some(file)) => file,
        Ok(None) => {
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
    if let Some(expected) = chunk.expect {
        let chunk_size = shared.tuning.chunk_size;
        let (size, file) = (chunk.size, file.clone());
        let local = blocking(move || hash_chunk(&file, size, chunk_size, index)).await;
        if local.is_ok_and(|cv| cv == expected) {
            report(Report::ChunkDone {
                id,
                gen,
                index,
                cv: expected,
                sent: false,
            });
            return Ok(());
        }
    }
    let Some(cv) = stream_chunk(shared, connection, chunk, file).await? else {
        // The file shrank under us.
        report(Report::ChunkChanged { id, gen, index });
        return Ok(());
    };
    if let Some(hook) = &shared.hooks.after_chunk_sent {
        hook(&chunk.rel, index);
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

/// Opens the chunk's file; `None` if its size or mtime is no longer the
/// generation's.
async fn open_unchanged(
    shared: &Shared,
    chunk: &ChunkUnit,
) -> Result<Option<Arc<std::fs::File>>, CollectionError> {
    let (collection, path) = (shared.collection.clone(), chunk.path.clone());
    let before_read = shared
        .hooks
        .before_read
        .as_ref()
        .map(|hook| (hook.clone(), chunk.rel.clone()));
    let (file, size, mtime_ns) = blocking(
        move || -> Result<(std::fs::File, u64, i64), CollectionError> {
            if let Some((hook, rel)) = &before_read {
                hook(rel);
            }
            let file = open_file(&collection, &path)?;
            let metadata = file
                .metadata()
                .map_err(|e| CollectionError::from_io("stat", path.to_string(), e))?;
            Ok((file, metadata.len(), std_mtime_ns(&metadata)))
        },
    )
    .await?;
    Ok((size == chunk.size && mtime_ns == chunk.mtime_ns).then(|| Arc::new(file)))
}

/// The chaining value of chunk `index` as it is on disk (blocking).
fn hash_chunk(
    file: &std::fs::File,
    size: u64,
    chunk_size: u64,
    index: u32,
) -> std::io::Result<[u8; 32]> {
    let len = chunk_len(size, chunk_size, index);
    let offset = index as u64 * chunk_size;
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
}

/// Writes the chunk on a new stream; its chaining value (zero without
/// verification), or `None` if the file shrank while it was read (the
/// stream is then reset).
async fn stream_chunk(
    shared: &Shared,
    connection: &Connection,
    chunk: &ChunkUnit,
    file: Arc<std::fs::File>,
) -> Result<Option<[u8; 32]>, TransferError> {
    let (size, index) = (chunk.size, chunk.index);
    let chunk_size = shared.tuning.chunk_size;
    let len = chunk_len(size, chunk_size, index);
    let offset = index as u64 * chunk_size;
    let mut stream = connection
        .open_uni()
        .await
        .map_err(|e| wire::connection_error(&e))?;
    let header = UnitHeader::Chunk {
        id: chunk.id,
        gen: chunk.gen,
        index,
        file_size: size,
        mtime_ns: chunk.mtime_ns,
        len,
    };
    wire::write_frame(&mut stream, &header).await?;
    let mut hasher = shared
        .verify
        .then(|| checksum::chunk_hasher(size, chunk_size, index));
    let corrupt = shared
        .hooks
        .corrupt_chunk
        .as_ref()
        .is_some_and(|f| f(&chunk.rel, index));
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
        let Ok(mut piece) = result else {
            let _ = stream.reset(VarInt::from_u32(wire::RESET_SOURCE_CHANGED));
            return Ok(None);
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
    Ok(Some(cv))
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
