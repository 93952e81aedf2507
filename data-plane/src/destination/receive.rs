//! Data streams: accepts the source's unidirectional streams, hands batches
//! to [`super::batch`] and writes each chunk into its file's partial file.
//!
//! It owns the checks on every chunk header the source sends (an unknown
//! file, an index or length that does not fit the file, a header that
//! contradicts its generation: all PROTOCOL_ERROR faults, never a panic or a
//! write to the wrong place) and the chunk acknowledgements. It must not plan or end files (the
//! control loop does) and must not block an async thread: writes and hashing
//! run on the blocking pool.

use std::sync::Arc;

use quinn::{Connection, RecvStream, VarInt};
use tokio::task::JoinSet;

use crate::buffers;
use crate::checksum::{self, chunk_count, chunk_len};
use crate::error::{FaultCode, TransferError};
use crate::journal::SourceVersion;
use crate::progress::Progress;
use crate::wire::{self, ToSource, UnitHeader};

use super::resume::{journal_write_error, open_partial, PartialSlot};
use super::{blocking, join, Incoming, Shared};

/// Bytes accumulated from the network before one blocking write.
const WRITE_BATCH: usize = 1 << 20;

/// A chunk's header as the source sent it.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChunkHeader {
    pub id: u64,
    pub gen: u32,
    pub index: u32,
    /// The version of the file the source claims to be reading.
    pub version: SourceVersion,
    pub len: u64,
}

/// The partial file a chunk header is checked against.
#[derive(Debug, Clone, Copy)]
pub(super) struct PartialState {
    pub gen: u32,
    pub version: SourceVersion,
    pub chunks: usize,
}

/// What to do with a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Write it into the partial file of its generation.
    Write,
    /// The first chunk of its generation: (re)create the partial file,
    /// truncating the one of an older generation.
    Create { truncate: bool },
    /// Of an older generation than the partial file: drop the stream.
    Stale,
}

/// Checks a chunk header against the file's partial file (if any): the
/// index and length must fit the size the header claims, and a header of the
/// partial file's generation must claim the same version.
pub(super) fn admit(
    header: &ChunkHeader,
    partial: Option<PartialState>,
    chunk_size: u64,
) -> Result<Admission, TransferError> {
    let ChunkHeader {
        id,
        gen,
        index,
        version,
        len,
    } = *header;
    if index >= chunk_count(version.size, chunk_size)
        || len != chunk_len(version.size, chunk_size, index)
    {
        return Err(TransferError::protocol(format!(
            "bad chunk {index} of file {id}"
        )));
    }
    Ok(match partial {
        Some(p) if p.gen == gen => {
            same_generation(p.version, p.chunks, id, index, version)?;
            Admission::Write
        }
        Some(p) if p.gen > gen => Admission::Stale,
        Some(_) => Admission::Create { truncate: true },
        None => Admission::Create { truncate: false },
    })
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

/// Records a received chunk's chaining value in the partial file's table;
/// `false` if the partial file is of another generation by now (the chunk
/// is late and not recorded).
pub(super) fn record_chunk(
    cvs: &mut [Option<[u8; 32]>],
    partial: PartialState,
    header: &ChunkHeader,
    cv: [u8; 32],
) -> Result<bool, TransferError> {
    if partial.gen != header.gen {
        return Ok(false);
    }
    same_generation(
        partial.version,
        cvs.len(),
        header.id,
        header.index,
        header.version,
    )?;
    cvs[header.index as usize] = Some(cv);
    Ok(true)
}

pub(super) async fn accept_streams(shared: Arc<Shared>, connection: Connection) {
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
            let header = ChunkHeader {
                id,
                gen,
                index,
                version: SourceVersion {
                    size: file_size,
                    mtime_ns,
                },
                len,
            };
            receive_chunk(shared, stream, header).await
        }
        UnitHeader::Batch { unit, files } => {
            super::batch::receive_batch(shared, stream, unit, files).await
        }
    }
}

async fn receive_chunk(
    shared: &Arc<Shared>,
    mut stream: RecvStream,
    header: ChunkHeader,
) -> Result<(), TransferError> {
    let ChunkHeader { id, gen, index, .. } = header;
    let incoming = shared
        .incoming
        .lock()
        .expect("incoming lock")
        .get(&id)
        .cloned()
        .ok_or_else(|| TransferError::protocol(format!("data for unknown file {id}")))?;
    let slot = shared.slot(id);
    let Some(file) = partial_file(shared, &slot, &incoming, &header).await? else {
        let _ = stream.stop(VarInt::from_u32(0));
        return Ok(());
    };
    let Some((cv, ok)) = write_chunk(shared, &mut stream, &incoming, &header, file).await? else {
        return Ok(());
    };
    Progress::add(&shared.progress.counters.bytes_transferred, header.len);
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
        let Some(p) = guard.as_mut() else {
            return Ok(());
        };
        let state = PartialState {
            gen: p.gen,
            version: p.version,
            chunks: p.cvs.len(),
        };
        if !record_chunk(&mut p.cvs, state, &header, cv)? {
            return Ok(());
        }
    }
    let chunk_size = shared.tuning.chunk_size;
    let (journal, rel, version) = (shared.journal.clone(), incoming.rel.clone(), header.version);
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

/// The partial file the chunk goes to, created for the first chunk of a
/// generation; `None` for a chunk of an older generation.
async fn partial_file(
    shared: &Arc<Shared>,
    slot: &PartialSlot,
    incoming: &Incoming,
    header: &ChunkHeader,
) -> Result<Option<Arc<std::fs::File>>, TransferError> {
    let mut guard = slot.lock().await;
    let state = guard.as_ref().map(|p| PartialState {
        gen: p.gen,
        version: p.version,
        chunks: p.cvs.len(),
    });
    let truncate = match admit(header, state, shared.tuning.chunk_size)? {
        Admission::Write => {
            return Ok(guard.as_ref().map(|p| p.file.clone()));
        }
        Admission::Stale => return Ok(None),
        Admission::Create { truncate } => truncate,
    };
    let (shared, incoming) = (shared.clone(), incoming.clone());
    let (version, gen) = (header.version, header.gen);
    let partial = blocking(move || {
        // Recorded first: a partial file the journal does not
        // name could not be found to discard an abandoned transfer.
        shared
            .journal
            .lock()
            .expect("journal lock")
            .partial_created(&incoming.rel)
            .map_err(journal_write_error)?;
        open_partial(
            &shared,
            &incoming.rel,
            &incoming.target,
            version,
            gen,
            truncate,
        )
    })
    .await?;
    let file = partial.file.clone();
    *guard = Some(partial);
    Ok(Some(file))
}

/// Writes the chunk's bytes into `file` and reads its chaining value:
/// `(cv, whether our hash matches it)`, or `None` if the source reset the
/// stream (its file changed; it will tell us what next).
async fn write_chunk(
    shared: &Arc<Shared>,
    stream: &mut RecvStream,
    incoming: &Incoming,
    header: &ChunkHeader,
    file: Arc<std::fs::File>,
) -> Result<Option<([u8; 32], bool)>, TransferError> {
    let ChunkHeader {
        id,
        index,
        version,
        len,
        ..
    } = *header;
    let chunk_size = shared.tuning.chunk_size;
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
                Err(quinn::ReadError::Reset(_)) => return Ok(None),
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
        Err(quinn::ReadExactError::ReadError(quinn::ReadError::Reset(_))) => return Ok(None),
        Err(e) => return Err(wire::read_exact_error(e)),
    }
    let ok = match &mut hasher {
        Some(h) => checksum::finish_chunk(h.flushed(), version.size, chunk_size) == cv,
        None => true,
    };
    Ok(Some((cv, ok)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 64 << 10;
    /// Two chunks, the second short.
    const MADE_FOR: SourceVersion = SourceVersion {
        size: CHUNK + 10,
        mtime_ns: 5,
    };

    fn header(gen: u32, index: u32, version: SourceVersion) -> ChunkHeader {
        ChunkHeader {
            id: 7,
            gen,
            index,
            version,
            len: chunk_len(version.size, CHUNK, index),
        }
    }

    fn partial(gen: u32) -> Option<PartialState> {
        Some(PartialState {
            gen,
            version: MADE_FOR,
            chunks: 2,
        })
    }

    fn protocol_error<T: std::fmt::Debug>(result: Result<T, TransferError>, says: &str) {
        let err = result.unwrap_err();
        assert_eq!(err.code, FaultCode::ProtocolError, "{err:?}");
        assert!(err.message.contains(says), "{err}");
    }

    #[test]
    fn chunk_headers_of_each_generation_are_written_created_or_dropped() {
        let at = |gen, partial| admit(&header(gen, 1, MADE_FOR), partial, CHUNK).unwrap();
        assert_eq!(at(1, partial(1)), Admission::Write);
        assert_eq!(at(0, partial(1)), Admission::Stale);
        assert_eq!(at(2, partial(1)), Admission::Create { truncate: true });
        assert_eq!(at(0, None), Admission::Create { truncate: false });
    }

    #[test]
    fn a_header_that_changes_the_generations_version_is_a_protocol_error() {
        // A later header of the same generation claiming a bigger file, so
        // that its index fits the claim but not the partial file's table.
        let bigger = SourceVersion {
            size: 1 << 40,
            ..MADE_FOR
        };
        protocol_error(
            admit(&header(1, 5, bigger), partial(1), CHUNK),
            "chunk 5 of file 7 claims",
        );
        let touched = SourceVersion {
            mtime_ns: 6,
            ..MADE_FOR
        };
        protocol_error(admit(&header(1, 0, touched), partial(1), CHUNK), "claims");
        // The same claim in a new generation is a new version: accepted.
        assert_eq!(
            admit(&header(2, 5, bigger), partial(1), CHUNK).unwrap(),
            Admission::Create { truncate: true }
        );
    }

    #[test]
    fn a_chunk_outside_the_size_its_header_claims_is_a_protocol_error() {
        protocol_error(
            admit(&header(1, 2, MADE_FOR), partial(1), CHUNK),
            "bad chunk 2",
        );
        protocol_error(admit(&header(0, 2, MADE_FOR), None, CHUNK), "bad chunk 2");
        let mut long = header(1, 1, MADE_FOR);
        long.len = CHUNK;
        protocol_error(admit(&long, partial(1), CHUNK), "bad chunk 1");
    }

    #[test]
    fn recording_a_chunk_checks_the_generation_it_is_recorded_in() {
        let mut cvs = vec![None; 2];
        let state = partial(1).unwrap();
        assert!(record_chunk(&mut cvs, state, &header(1, 1, MADE_FOR), [9; 32]).unwrap());
        assert_eq!(cvs[1], Some([9; 32]));
        // Late: the partial file is of another generation by now.
        assert!(!record_chunk(&mut cvs, state, &header(0, 0, MADE_FOR), [9; 32]).unwrap());
        assert_eq!(cvs[0], None);
        // A header whose claim would index past the table.
        let bigger = SourceVersion {
            size: 1 << 40,
            ..MADE_FOR
        };
        protocol_error(
            record_chunk(&mut cvs, state, &header(1, 5, bigger), [9; 32]),
            "chunk 5 of file 7",
        );
    }
}
