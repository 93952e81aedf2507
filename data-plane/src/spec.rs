//! The serializable description of a transfer and of its outcome. These are
//! the types the service puts in protocol frames and task documents.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::FaultCode;

// The protocol's own types: the service, the agent and the engine share one
// definition (a count or a checksum cannot be lost converting between two).
// A retry's counters start from zero; the service adds them up. A
// checksum's path is relative to the item's destination root ("" for a
// single file).
pub use lattice_protocol::transfer::{
    FileChecksum, Side, SyncLevel, TransferCounters, TransferOptions,
};

/// How the engine moves bytes. Defaults suit a LAN or loopback; raise
/// `connections` for long fat links (one congestion window per connection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tuning {
    /// QUIC connections between the two agents.
    pub connections: u32,
    /// Concurrent streams (workers) per connection.
    pub streams_per_connection: u32,
    /// Chunk size for large files; a power of two, at least 64 KiB.
    pub chunk_size: u64,
    /// Files up to this size are pipelined many per stream.
    pub small_file_limit: u64,
    /// Upper bounds of one pipelined batch.
    pub batch_files: u32,
    pub batch_bytes: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            connections: 2,
            streams_per_connection: 4,
            chunk_size: 8 << 20,
            small_file_limit: 1 << 20,
            batch_files: 512,
            batch_bytes: 4 << 20,
        }
    }
}

impl Tuning {
    pub(crate) fn validated(&self) -> Result<Tuning, String> {
        if !self.chunk_size.is_power_of_two() || self.chunk_size < 64 << 10 {
            return Err(format!(
                "chunk_size {} must be a power of two of at least 64 KiB",
                self.chunk_size
            ));
        }
        let mut t = self.clone();
        t.connections = t.connections.clamp(1, 16);
        t.streams_per_connection = t.streams_per_connection.clamp(1, 64);
        t.small_file_limit = t.small_file_limit.min(t.chunk_size);
        t.batch_files = t.batch_files.max(1);
        t.batch_bytes = t.batch_bytes.max(t.small_file_limit);
        Ok(t)
    }
}

/// One transfer, identical on both sides (the service sends the same spec
/// to the source and the destination agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSpec {
    /// Unique per transfer task and stable across its retries: it names the
    /// destination's restart journal.
    pub transfer_id: String,
    /// Path in the source collection (collection-absolute, e.g. `/data/run1`).
    pub source_path: String,
    /// Path in the destination collection. For a recursive transfer the
    /// source directory's contents go into this directory; otherwise it is
    /// the destination file's path.
    pub destination_path: String,
    pub recursive: bool,
    #[serde(default)]
    pub options: TransferOptions,
    #[serde(default)]
    pub tuning: Tuning,
}

/// The one-time secret the service gives both sides of one transfer attempt;
/// the source presents it first thing on every connection.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential(pub String);

impl Credential {
    /// 256 random bits, hex.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Credential(hex::encode(bytes))
    }

    /// Constant-time comparison.
    pub(crate) fn matches(&self, other: &str) -> bool {
        let a = self.0.as_bytes();
        let b = other.as_bytes();
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// A fault, recorded as it happens (most are recovered from: the data is
/// re-sent, the file re-read, the file skipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferEvent {
    pub code: FaultCode,
    /// Path relative to the transfer's root, if the fault concerns a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub message: String,
    pub side: Side,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
}

impl TransferEvent {
    pub(crate) fn new(
        side: Side,
        code: FaultCode,
        path: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        TransferEvent {
            code,
            path,
            message: message.into(),
            side,
            time_ms: now_ms(),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What an attempt did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferReport {
    pub transfer_id: String,
    pub side: Side,
    pub counters: TransferCounters,
    pub events: Vec<TransferEvent>,
    /// Checksums of the files this attempt transferred (empty without verification).
    pub checksums: Vec<FileChecksum>,
    /// Destination entries removed by `delete_extraneous`.
    pub deleted: u64,
}

/// Live updates while a transfer runs (send them on as progress frames).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TransferUpdate {
    /// Sent at most every `PROGRESS_INTERVAL` and once at the end.
    Progress(TransferCounters),
    /// Sent as soon as the fault is seen (by either side).
    Event(TransferEvent),
}

/// How often [`TransferUpdate::Progress`] is sent.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// What the service sends both agents, as the engine runs it: fields the
/// task's tuning leaves out take the engine's defaults. Every field is
/// named, so one added to either side fails to compile here instead of
/// being dropped.
impl From<lattice_protocol::transfer::AttemptSpec> for TransferSpec {
    fn from(spec: lattice_protocol::transfer::AttemptSpec) -> Self {
        let lattice_protocol::transfer::AttemptSpec {
            transfer_id,
            source_path,
            destination_path,
            recursive,
            options,
            tuning,
        } = spec;
        let lattice_protocol::transfer::TransferTuning {
            connections,
            streams_per_connection,
            chunk_size,
        } = tuning;
        let defaults = Tuning::default();
        TransferSpec {
            transfer_id,
            source_path,
            destination_path,
            recursive,
            options,
            tuning: Tuning {
                connections: connections.unwrap_or(defaults.connections),
                streams_per_connection: streams_per_connection
                    .unwrap_or(defaults.streams_per_connection),
                chunk_size: chunk_size.unwrap_or(defaults.chunk_size),
                ..defaults
            },
        }
    }
}

/// A fault as the service records it.
impl From<TransferEvent> for lattice_protocol::transfer::FaultEvent {
    fn from(event: TransferEvent) -> Self {
        let TransferEvent {
            code,
            path,
            message,
            side,
            time_ms,
        } = event;
        lattice_protocol::transfer::FaultEvent {
            code,
            path,
            message,
            side,
            time_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_protocol::transfer::{AttemptSpec, TransferTuning};

    #[test]
    fn an_attempt_spec_keeps_every_field_and_defaults_what_tuning_leaves_out() {
        let spec = AttemptSpec {
            transfer_id: "t.0".into(),
            source_path: "/a".into(),
            destination_path: "/b".into(),
            recursive: true,
            options: TransferOptions {
                sync_level: Some(SyncLevel::Checksum),
                include: vec!["*.h5".into()],
                ..TransferOptions::default()
            },
            tuning: TransferTuning {
                chunk_size: Some(1 << 20),
                ..TransferTuning::default()
            },
        };
        let engine = TransferSpec::from(spec.clone());
        assert_eq!(engine.transfer_id, "t.0");
        assert_eq!(engine.destination_path, "/b");
        assert!(engine.recursive);
        assert_eq!(engine.options, spec.options);
        assert_eq!(engine.tuning.chunk_size, 1 << 20);
        assert_eq!(engine.tuning.connections, Tuning::default().connections);
    }

    #[test]
    fn a_fault_event_carries_the_wire_spelling_of_its_code() {
        let event = TransferEvent {
            code: FaultCode::NoSpaceLeft,
            path: Some("a/b".into()),
            message: "full".into(),
            side: Side::Destination,
            time_ms: 7,
        };
        let fault = lattice_protocol::transfer::FaultEvent::from(event);
        assert_eq!(fault.code, FaultCode::NoSpaceLeft);
        assert_eq!(fault.code.as_str(), "NO_SPACE_LEFT");
        assert_eq!(fault.path.as_deref(), Some("a/b"));
        assert_eq!(fault.time_ms, 7);
    }
}
