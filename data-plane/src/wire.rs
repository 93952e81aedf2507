//! Frames of the data channel (agent to agent; not part of `protocol`,
//! because only two data planes of the same version speak it).
//!
//! Every connection starts with a bidirectional stream on which the source
//! sends [`Hello`] and the destination answers [`Welcome`]. On connection 0
//! that stream then carries the control messages ([`ToDest`], [`ToSource`]);
//! file data travels on unidirectional streams, one per [`UnitHeader`].
//! Frames are a u32 little-endian length and a MessagePack body.

use quinn::{RecvStream, SendStream};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{FaultCode, TransferError};
use crate::spec::{TransferCounters, TransferEvent};

pub(crate) const PROTOCOL_VERSION: u32 = 1;
const MAX_FRAME: usize = 64 << 20;

/// QUIC application close codes.
pub(crate) const CLOSE_DONE: u32 = 0;
pub(crate) const CLOSE_REJECTED: u32 = 1;
pub(crate) const CLOSE_ABORT: u32 = 2;
/// Stream reset code of a chunk whose source changed while being read.
pub(crate) const RESET_SOURCE_CHANGED: u32 = 3;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub version: u32,
    pub transfer_id: String,
    pub credential: String,
    pub connection_index: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Welcome {
    Accepted,
    Rejected { reason: String },
}

/// A file or directory found by the source walk. `path` is relative to the
/// transfer root, `/`-separated raw bytes (empty: the root itself, i.e. a
/// single-file transfer).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireEntry {
    pub id: u64,
    #[serde(with = "serde_bytes_vec")]
    pub path: Vec<u8>,
    pub dir: bool,
    pub size: u64,
    pub mtime_ns: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PlanItem {
    /// Up to date (sync level) or done by an earlier attempt.
    Skip { resumed: bool },
    /// Send the file; the destination already holds these chunks (index,
    /// chaining value) from an earlier attempt.
    Send { have: Vec<(u32, [u8; 32])> },
    /// Sync level checksum: same size; skip if the source's blake3 is this.
    SendUnlessHash { hash: [u8; 32] },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToDest {
    Manifest {
        entries: Vec<WireEntry>,
    },
    ManifestEnd,
    /// All chunks of generation `gen` are acknowledged; here is the source's
    /// view of the file as read.
    FileEnd {
        id: u64,
        gen: u32,
        size: u64,
        mtime_ns: i64,
        hash: [u8; 32],
    },
    /// The source skips the file (sync checksum equal, or a skipped source error).
    FileSkipped {
        id: u64,
        equal: bool,
    },
    Event(TransferEvent),
    Finish,
    Abort(TransferError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum BatchResult {
    Done { hash: [u8; 32] },
    Mismatch,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToSource {
    Plan {
        items: Vec<(u64, PlanItem)>,
    },
    ChunkAck {
        id: u64,
        gen: u32,
        index: u32,
        ok: bool,
    },
    BatchAck {
        unit: u64,
        results: Vec<(u64, BatchResult)>,
    },
    FileDone {
        id: u64,
        hash: [u8; 32],
    },
    /// The whole-file check failed: send the file again with a new generation.
    FileFailed {
        id: u64,
    },
    Event(TransferEvent),
    Finished {
        counters: TransferCounters,
        deleted: u64,
    },
    Abort(TransferError),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BatchFile {
    pub id: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub hash: [u8; 32],
}

/// The first frame of a data stream.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum UnitHeader {
    /// `len` bytes of chunk `index` follow, then its 32-byte chaining value.
    Chunk {
        id: u64,
        gen: u32,
        index: u32,
        file_size: u64,
        mtime_ns: i64,
        len: u64,
    },
    /// The files' contents follow back to back.
    Batch { unit: u64, files: Vec<BatchFile> },
}

pub(crate) async fn write_frame<T: Serialize>(
    stream: &mut SendStream,
    message: &T,
) -> Result<(), TransferError> {
    let body = rmp_serde::to_vec(message).map_err(|e| {
        TransferError::fatal(FaultCode::ProtocolError, format!("encoding frame: {e}"))
    })?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await.map_err(write_error)
}

/// Reads one frame; `None` when the peer finished the stream cleanly.
pub(crate) async fn read_frame<T: DeserializeOwned>(
    stream: &mut RecvStream,
) -> Result<Option<T>, TransferError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(read_exact_error(e)),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(TransferError::protocol(format!(
            "frame of {len} bytes is over the limit"
        )));
    }
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(read_exact_error)?;
    rmp_serde::from_slice(&body)
        .map(Some)
        .map_err(|e| TransferError::protocol(format!("decoding frame: {e}")))
}

pub(crate) fn connection_error(e: &quinn::ConnectionError) -> TransferError {
    match e {
        quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code == quinn::VarInt::from_u32(CLOSE_DONE) =>
        {
            TransferError::new(
                FaultCode::ConnectionReset,
                "the peer closed the data connection",
            )
        }
        _ => TransferError::new(
            FaultCode::ConnectionReset,
            format!("data connection lost: {e}"),
        ),
    }
}

pub(crate) fn write_error(e: quinn::WriteError) -> TransferError {
    match e {
        quinn::WriteError::ConnectionLost(c) => connection_error(&c),
        other => TransferError::new(FaultCode::ConnectionReset, format!("data stream: {other}")),
    }
}

pub(crate) fn read_error(e: quinn::ReadError) -> TransferError {
    match e {
        quinn::ReadError::ConnectionLost(c) => connection_error(&c),
        other => TransferError::new(FaultCode::ConnectionReset, format!("data stream: {other}")),
    }
}

pub(crate) fn read_exact_error(e: quinn::ReadExactError) -> TransferError {
    match e {
        quinn::ReadExactError::ReadError(e) => read_error(e),
        quinn::ReadExactError::FinishedEarly(n) => TransferError::new(
            FaultCode::ConnectionReset,
            format!("data stream ended early after {n} bytes"),
        ),
    }
}

/// Paths as MessagePack binaries rather than arrays of integers.
mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_msgpack() {
        let entry = WireEntry {
            id: 7,
            path: b"a dir/new\nline \xff".to_vec(),
            dir: false,
            size: 12,
            mtime_ns: -5,
        };
        let bytes = rmp_serde::to_vec(&ToDest::Manifest {
            entries: vec![entry],
        })
        .unwrap();
        let ToDest::Manifest { entries } = rmp_serde::from_slice(&bytes).unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(entries[0].path, b"a dir/new\nline \xff");
        assert_eq!(entries[0].mtime_ns, -5);
    }
}
