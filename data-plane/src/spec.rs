//! The serializable description of a transfer and of its outcome. These are
//! the types the service puts in protocol frames and task documents.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::FaultCode;

/// When an existing destination file counts as up to date (it is then skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncLevel {
    /// The destination file exists.
    Exists,
    /// ... and has the source's size.
    Size,
    /// ... and the same size, and is not older than the source.
    Mtime,
    /// ... and the same size and blake3 (both sides hash; nothing is sent if equal).
    Checksum,
}

impl std::str::FromStr for SyncLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exists" => Ok(SyncLevel::Exists),
            "size" => Ok(SyncLevel::Size),
            "mtime" => Ok(SyncLevel::Mtime),
            "checksum" => Ok(SyncLevel::Checksum),
            other => Err(format!(
                "unknown sync level `{other}`: expected exists, size, mtime or checksum"
            )),
        }
    }
}

/// What a transfer does, as the user asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferOptions {
    /// `None` copies every file; otherwise up-to-date files are skipped.
    pub sync_level: Option<SyncLevel>,
    /// blake3 of every file on both sides, compared (default on).
    pub verify_checksum: bool,
    pub preserve_mtime: bool,
    /// Remove destination files and directories the source does not have
    /// (recursive transfers only; excluded paths are left alone).
    pub delete_extraneous: bool,
    /// Skip source files that vanish or cannot be read, recording an event.
    pub skip_source_errors: bool,
    /// A full destination (ENOSPC/EDQUOT) fails the transfer instead of being retried.
    pub fail_on_quota: bool,
    /// Glob patterns; if any are given, only matching files are transferred.
    /// A pattern without `/` matches the file name, otherwise the path
    /// relative to the transfer's source root.
    pub include: Vec<String>,
    /// Glob patterns of files and directories to leave out (a directory
    /// prunes its subtree).
    pub exclude: Vec<String>,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            sync_level: None,
            verify_checksum: true,
            preserve_mtime: false,
            delete_extraneous: false,
            skip_source_errors: false,
            fail_on_quota: false,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

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

/// Which agent noticed an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Source,
    Destination,
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

/// Counts of one attempt (a retry starts from zero; the service adds them up).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransferCounters {
    /// Files copied (and verified, when verification is on) in this attempt.
    pub files: u64,
    /// Directories seen in the source tree (created at the destination if missing).
    pub directories: u64,
    /// Payload bytes written at the destination (re-sends included).
    pub bytes_transferred: u64,
    /// Bytes of files whose blake3 matched on both sides.
    pub bytes_verified: u64,
    /// Files left out: up to date per the sync level, or source errors skipped.
    pub files_skipped: u64,
    /// Files a previous attempt had already completed (from the restart journal).
    pub files_resumed: u64,
    /// Number of fault events.
    pub faults: u64,
    /// Files and bytes found by the source so far (grows during the walk).
    pub files_total: u64,
    pub bytes_total: u64,
    pub elapsed_ms: u64,
    /// `bytes_transferred / elapsed`.
    pub bytes_per_second: u64,
}

/// The recorded checksum of one transferred file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChecksum {
    /// Relative to the transfer's destination root ("" for a single file).
    pub path: String,
    pub size: u64,
    /// blake3, hex (what `b3sum` prints).
    pub blake3: String,
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
