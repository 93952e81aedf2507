//! Collections, file operations and managed transfers: the REST bodies of
//! `/v1/collections` and `/v1/transfers`, and the payloads of the agent
//! channel frames that carry them. An API boundary: fields may be added,
//! never renamed or removed.
//!
//! The transfer engine (`data-plane`) has its own serde types for a
//! transfer's spec, counters, events and checksums; the ones here have the
//! same serialized shape so the agent converts between them through serde,
//! and the service never depends on the engine.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{CollectionId, EndpointId, IdentityId, TransferId};

// ---------------------------------------------------------------- collections

/// A collection as an agent announces it (from its config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionAnnounce {
    /// Unique per endpoint owner; letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// The host directory it maps (shown to the owner only).
    pub root: String,
}

/// `GET /v1/collections/{id_or_name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CollectionInfo {
    pub id: CollectionId,
    pub name: String,
    pub owner_id: IdentityId,
    /// The owner's username, so that a collection shared with you says
    /// whose it is.
    #[serde(default)]
    pub owner_username: String,
    /// The endpoint whose agent hosts it.
    pub endpoint_id: EndpointId,
    pub endpoint_name: String,
    /// Whether the hosting agent is connected now.
    pub online: bool,
    /// The directory on the agent's host that the collection maps.
    pub root: String,
    pub created_at: DateTime<Utc>,
    /// When the agent last announced it.
    pub announced_at: DateTime<Utc>,
    /// For a guest collection: its host collection and the directory of it
    /// that is this collection's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_collection_id: Option<CollectionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
}

// ------------------------------------------------------------ file operations

/// What kind of entry a path is. Symlinks are reported, never followed by listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One file system entry in a collection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileEntry {
    /// Final path component (lossy UTF-8).
    pub name: String,
    /// Collection-absolute path, e.g. `/data/run 1/out.txt`.
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Modification time, milliseconds since the Unix epoch.
    pub modified_ms: i64,
    /// Permission bits (`0o755` is 493).
    pub permissions: u32,
    pub uid: u32,
    pub gid: u32,
    /// Where a symlink points (as stored; not resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// `POST /v1/collections/{id}/ls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListRequest {
    /// Collection path [default: `/`, the root].
    #[serde(default = "root_path")]
    pub path: String,
    /// 1 lists the directory's children, 2 adds grandchildren, ... (at most 64).
    #[serde(default = "one")]
    pub depth: u32,
    /// Stop after this many entries [default and maximum: 100000].
    #[serde(default)]
    pub max_entries: Option<u32>,
}

/// `POST /v1/collections/{id}/ls` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListResponse {
    pub collection: String,
    pub path: String,
    pub entries: Vec<FileEntry>,
}

/// `POST /v1/collections/{id}/stat`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatRequest {
    pub path: String,
}

/// `POST /v1/collections/{id}/mkdir`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MkdirRequest {
    pub path: String,
    /// Also create missing parents; an existing directory is then fine.
    #[serde(default)]
    pub parents: bool,
}

/// `POST /v1/collections/{id}/rename`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenameRequest {
    pub from: String,
    pub to: String,
}

/// `POST /v1/collections/{id}/delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteRequest {
    pub path: String,
    /// Delete a directory and everything in it.
    #[serde(default)]
    pub recursive: bool,
}

/// `POST /v1/collections/{id}/delete` answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteSummary {
    pub files: u64,
    pub directories: u64,
}

fn root_path() -> String {
    "/".to_owned()
}

fn one() -> u32 {
    1
}

/// A file operation the service asks a hosting agent to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FileOp {
    List {
        path: String,
        depth: u32,
        max_entries: u32,
    },
    Stat {
        path: String,
    },
    Mkdir {
        path: String,
        parents: bool,
    },
    Rename {
        from: String,
        to: String,
    },
    Delete {
        path: String,
        recursive: bool,
    },
}

/// What a file operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileOpOutcome {
    Entries { entries: Vec<FileEntry> },
    Entry { entry: FileEntry },
    Deleted { summary: DeleteSummary },
}

/// Why a file operation failed, as the agent classified it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileErrorKind {
    /// Refused before touching the file system (`..`, NUL, ...).
    InvalidPath,
    /// Resolution left the collection root (through a symlink).
    Escape,
    NotFound,
    PermissionDenied,
    AlreadyExists,
    DirectoryNotEmpty,
    IsADirectory,
    NotADirectory,
    NoSpace,
    /// An operation on the collection root itself (delete, rename).
    RootOperation,
    /// The agent does not host a collection of that name.
    UnknownCollection,
    Io,
}

/// A failed file operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOpError {
    pub kind: FileErrorKind,
    pub message: String,
}

// ------------------------------------------------------------------ transfers

/// When an existing destination file counts as up to date (and is skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SyncLevel {
    /// The destination file exists.
    Exists,
    /// ... and has the source's size.
    Size,
    /// ... and the same size, and is not older than the source.
    Mtime,
    /// ... and the same size and blake3.
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

/// What a transfer does (the engine uses this type as it is).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferOptions {
    /// None copies every file; otherwise up-to-date files are skipped.
    pub sync_level: Option<SyncLevel>,
    /// blake3 of every file on both sides, compared [default: true].
    pub verify_checksum: bool,
    pub preserve_mtime: bool,
    /// Remove destination files the source does not have (recursive items only).
    pub delete_extraneous: bool,
    /// Skip source files that vanish or cannot be read, recording an event.
    pub skip_source_errors: bool,
    /// A full destination fails the task instead of being retried.
    pub fail_on_quota: bool,
    /// Globs; if any, only matching files are transferred.
    pub include: Vec<String>,
    /// Globs of files and directories to leave out.
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

/// How the engine moves one task's bytes; every field left out takes the
/// engine's default (2 connections x 4 streams, 8 MiB chunks), which suits a
/// LAN. Raise `connections` on a long fat link: each QUIC connection has its
/// own congestion window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferTuning {
    /// QUIC connections between the two agents, 1 to 16 [default: 2].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Concurrent streams per connection, 1 to 64 [default: 4].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams_per_connection: Option<u32>,
    /// Bytes per chunk of a large file (the unit sent in parallel, verified
    /// and journaled for restart): a power of two from 64 KiB to 1 GiB
    /// [default: 8 MiB].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
}

impl TransferTuning {
    pub const MAX_CONNECTIONS: u32 = 16;
    pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
    pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
    pub const MAX_CHUNK_SIZE: u64 = 1 << 30;

    /// Checks the ranges above; the message names the field and its range.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(n) = self.connections {
            if !(1..=Self::MAX_CONNECTIONS).contains(&n) {
                return Err(format!(
                    "tuning.connections must be 1 to {}, not {n}",
                    Self::MAX_CONNECTIONS
                ));
            }
        }
        if let Some(n) = self.streams_per_connection {
            if !(1..=Self::MAX_STREAMS_PER_CONNECTION).contains(&n) {
                return Err(format!(
                    "tuning.streams_per_connection must be 1 to {}, not {n}",
                    Self::MAX_STREAMS_PER_CONNECTION
                ));
            }
        }
        if let Some(size) = self.chunk_size {
            if !size.is_power_of_two()
                || !(Self::MIN_CHUNK_SIZE..=Self::MAX_CHUNK_SIZE).contains(&size)
            {
                return Err(format!(
                    "tuning.chunk_size must be a power of two from 64 KiB (65536) to 1 GiB (1073741824), not {size}"
                ));
            }
        }
        Ok(())
    }

    pub fn is_default(&self) -> bool {
        *self == TransferTuning::default()
    }
}

/// One source -> destination pair of a transfer task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferItem {
    pub source_path: String,
    /// For a recursive item the source directory's contents go into this
    /// directory; otherwise it is the destination file's path.
    pub destination_path: String,
    #[serde(default)]
    pub recursive: bool,
}

/// `POST /v1/transfers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferSubmit {
    /// Collection id or name.
    pub source_collection: String,
    /// Collection id or name.
    pub destination_collection: String,
    /// At least one; run in order.
    pub items: Vec<TransferItem>,
    #[serde(default)]
    pub options: TransferOptions,
    /// Engine tuning for this task (defaults suit a LAN).
    #[serde(default, skip_serializing_if = "TransferTuning::is_default")]
    pub tuning: TransferTuning,
    #[serde(default)]
    pub label: Option<String>,
    /// Faults are retried until this time; then the task fails.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    /// Resubmitting with the same id returns the first task instead of a new one.
    #[serde(default)]
    pub submission_id: Option<String>,
    /// Tell the owner when the task succeeds (by their notification
    /// preferences) [default: true].
    #[serde(default = "yes")]
    pub notify_on_succeeded: bool,
    /// Tell the owner when the task fails [default: true].
    #[serde(default = "yes")]
    pub notify_on_failed: bool,
    /// Tell the owner when the task pauses (an endpoint offline) [default: true].
    #[serde(default = "yes")]
    pub notify_on_inactive: bool,
}

impl TransferSubmit {
    /// The submission's `notify_on_*` flags.
    pub fn notify_on(&self) -> TransferNotifyOn {
        TransferNotifyOn {
            succeeded: self.notify_on_succeeded,
            failed: self.notify_on_failed,
            inactive: self.notify_on_inactive,
        }
    }
}

fn yes() -> bool {
    true
}

/// Which ends of a transfer its owner is told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferNotifyOn {
    #[serde(default = "yes")]
    pub succeeded: bool,
    #[serde(default = "yes")]
    pub failed: bool,
    #[serde(default = "yes")]
    pub inactive: bool,
}

impl Default for TransferNotifyOn {
    /// All three, as the anchor.
    fn default() -> Self {
        TransferNotifyOn {
            succeeded: true,
            failed: true,
            inactive: true,
        }
    }
}

/// What a task does: copy between two collections, or delete paths in one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskKind {
    #[default]
    Transfer,
    /// Each item's `source_path` (= `destination_path`) is deleted from the
    /// one collection (source = destination); `counters.files` and
    /// `counters.directories` count what was removed.
    Delete {
        /// A path that does not exist counts as deleted instead of failing
        /// the task with FILE_NOT_FOUND.
        #[serde(default)]
        ignore_missing: bool,
    },
}

/// One path of a delete task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteItem {
    pub path: String,
}

/// `POST /v1/deletes`: a delete task, run by the collection's agent in the
/// background and reported like a transfer (`/v1/transfers/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteSubmit {
    /// Collection id or name.
    pub collection: String,
    /// At least one; deleted in order.
    pub items: Vec<DeleteItem>,
    /// Directories are deleted with everything in them (otherwise only empty ones).
    #[serde(default)]
    pub recursive: bool,
    #[serde(default)]
    pub ignore_missing: bool,
    #[serde(default)]
    pub label: Option<String>,
    /// Faults are retried until this time; then the task fails.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    /// Resubmitting with the same id returns the first task instead of a new one.
    #[serde(default)]
    pub submission_id: Option<String>,
}

/// Where a transfer task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TransferStatus {
    /// Running, or waiting to retry after a fault.
    Active,
    /// Waiting for an offline endpoint to come back.
    Paused,
    Succeeded,
    Failed,
    Cancelled,
}

impl TransferStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Active => "active",
            TransferStatus::Paused => "paused",
            TransferStatus::Succeeded => "succeeded",
            TransferStatus::Failed => "failed",
            TransferStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "active" => TransferStatus::Active,
            "paused" => TransferStatus::Paused,
            "succeeded" => TransferStatus::Succeeded,
            "failed" => TransferStatus::Failed,
            "cancelled" => TransferStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            TransferStatus::Succeeded | TransferStatus::Failed | TransferStatus::Cancelled
        )
    }
}

/// Counters of a transfer (the engine's, same shape). In a task document
/// they are summed over items and attempts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferCounters {
    /// Files copied (and verified).
    pub files: u64,
    /// Directories seen in the source tree.
    pub directories: u64,
    /// Payload bytes written at the destination (re-sends included).
    pub bytes_transferred: u64,
    /// Bytes of files whose blake3 matched on both sides.
    pub bytes_verified: u64,
    /// Files left out: up to date per the sync level, or source errors skipped.
    pub files_skipped: u64,
    /// Files an earlier attempt had already completed.
    pub files_resumed: u64,
    /// Fault events.
    pub faults: u64,
    /// Files and bytes the source found.
    pub files_total: u64,
    pub bytes_total: u64,
    pub elapsed_ms: u64,
    pub bytes_per_second: u64,
}

/// A transfer task as the service reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferInfo {
    pub id: TransferId,
    /// A transfer, or a delete task (whose counters count removed files).
    #[serde(default)]
    pub kind: TaskKind,
    pub owner_id: IdentityId,
    pub label: Option<String>,
    pub status: TransferStatus,
    /// Why it is paused, waiting or failed, in one sentence.
    pub status_message: Option<String>,
    pub source_collection: CollectionId,
    pub source_collection_name: String,
    pub destination_collection: CollectionId,
    pub destination_collection_name: String,
    pub items: Vec<TransferItem>,
    pub options: TransferOptions,
    /// What the task asked of the engine (`{}`: its defaults).
    #[serde(default)]
    pub tuning: TransferTuning,
    pub deadline: Option<DateTime<Utc>>,
    pub submission_id: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Items finished so far.
    pub items_done: u32,
    /// Attempts started (over all items).
    pub attempts: u32,
    /// Summed over items and attempts; `faults` counts fault events.
    pub counters: TransferCounters,
    /// `bytes_transferred` over the time from submission to completion (or now).
    pub effective_bytes_per_second: u64,
    /// blake3 of every file transferred (in `GET /v1/transfers/{id}` only).
    #[serde(default)]
    pub checksums: Vec<FileChecksum>,
}

/// The recorded checksum of one transferred file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileChecksum {
    /// Relative to the item's destination path ("" for a single file).
    pub path: String,
    pub size: u64,
    /// blake3, hex (what `b3sum` prints).
    pub blake3: String,
}

/// Which agent noticed an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Side {
    Source,
    Destination,
}

/// The closed set of fault codes a transfer reports (as events and as the
/// reason an attempt failed). Serialized as `SCREAMING_SNAKE_CASE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FaultCode {
    /// The source could not reach the destination (or it never showed up).
    ConnectFailed,
    /// An established data connection was lost.
    ConnectionReset,
    FileNotFound,
    PermissionDenied,
    /// Data did not match its blake3 checksum; the data was re-sent.
    VerifyChecksum,
    /// A source file changed while it was read; it was re-read.
    FileSizeChanged,
    /// ENOSPC or EDQUOT at the destination.
    NoSpaceLeft,
    /// A path from the peer or the plan was refused.
    InvalidPath,
    /// The peer presented a wrong credential or certificate.
    AuthFailed,
    /// The peer broke the protocol (bad frame, unknown file id).
    ProtocolError,
    /// Any other I/O error.
    IoError,
    /// The run was cancelled by its caller.
    Cancelled,
    /// A code this build does not know (from a newer agent): kept as a
    /// fault, never a reason to drop the whole frame.
    #[serde(other)]
    Unknown,
}

impl FaultCode {
    /// The wire spelling, e.g. `NO_SPACE_LEFT`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultCode::ConnectFailed => "CONNECT_FAILED",
            FaultCode::ConnectionReset => "CONNECTION_RESET",
            FaultCode::FileNotFound => "FILE_NOT_FOUND",
            FaultCode::PermissionDenied => "PERMISSION_DENIED",
            FaultCode::VerifyChecksum => "VERIFY_CHECKSUM",
            FaultCode::FileSizeChanged => "FILE_SIZE_CHANGED",
            FaultCode::NoSpaceLeft => "NO_SPACE_LEFT",
            FaultCode::InvalidPath => "INVALID_PATH",
            FaultCode::AuthFailed => "AUTH_FAILED",
            FaultCode::ProtocolError => "PROTOCOL_ERROR",
            FaultCode::IoError => "IO_ERROR",
            FaultCode::Cancelled => "CANCELLED",
            FaultCode::Unknown => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for FaultCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fault seen by an agent during an attempt (the engine's `TransferEvent`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEvent {
    pub code: FaultCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub message: String,
    pub side: Side,
    pub time_ms: i64,
}

/// One entry of `GET /v1/transfers/{id}/events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferEventInfo {
    pub seq: i64,
    pub time: DateTime<Utc>,
    /// A fault code (`CONNECTION_RESET`, `FILE_NOT_FOUND`, ...) or a status
    /// change (`STARTED`, `PAUSED`, `RESUMED`, `SUCCEEDED`, `FAILED`, `CANCELLED`).
    pub code: String,
    /// Whether `code` is a fault.
    pub fault: bool,
    pub side: Option<Side>,
    pub path: Option<String>,
    pub message: String,
    /// Item index (0-based) and attempt number it happened in.
    pub item: u32,
    pub attempt: u32,
}

// ------------------------------------------------------------ agent channel

/// What both agents are told about one attempt: the engine's `TransferSpec`
/// (same shape; tuning fields left out take the engine's defaults).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSpec {
    /// Stable across attempts of one item: names the destination's journal.
    pub transfer_id: String,
    pub source_path: String,
    pub destination_path: String,
    pub recursive: bool,
    pub options: TransferOptions,
    #[serde(default, skip_serializing_if = "TransferTuning::is_default")]
    pub tuning: TransferTuning,
}

/// Service -> agent: run or stop one side of a transfer attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum TransferCommand {
    /// Be the destination: register the attempt and wait for the source;
    /// answer with [`TransferReport::Listening`].
    Listen {
        attempt: u32,
        collection: String,
        /// For a guest collection: the directory of `collection` that is
        /// its root; the attempt's paths are resolved beneath it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subtree: Option<String>,
        spec: AttemptSpec,
        /// The source agent's certificate fingerprint (hex SHA-256).
        source_fingerprint: String,
        /// One-time credential of this attempt.
        credential: String,
    },
    /// Be the source: connect to the destination and send.
    Send {
        attempt: u32,
        collection: String,
        /// For a guest collection: the directory of `collection` that is
        /// its root; the attempt's paths are resolved beneath it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subtree: Option<String>,
        spec: AttemptSpec,
        /// `IP:PORT` of the destination's transfer endpoint.
        destination: String,
        destination_fingerprint: String,
        credential: String,
    },
    /// Delete `path` (an attempt of a delete task) in a blocking thread,
    /// reporting [`TransferReport::Progress`] and `Done` as the destination
    /// side; `Abort` stops it between two entries.
    Delete {
        attempt: u32,
        collection: String,
        /// For a guest collection: the directory of `collection` that is
        /// its root; the attempt's paths are resolved beneath it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subtree: Option<String>,
        transfer_id: String,
        path: String,
        recursive: bool,
        ignore_missing: bool,
    },
    /// Stop any attempt of this transfer (its journal stays).
    Abort { transfer_id: String },
    /// The service gave up on this transfer (cancelled, past its deadline,
    /// failed for good): as its destination, stop any attempt and remove
    /// the partial files and the journal it left under `destination_path`
    /// of `collection`. Nothing is reported back.
    Discard {
        transfer_id: String,
        collection: String,
        /// For a guest collection: the directory of `collection` that is
        /// its root; the attempt's paths are resolved beneath it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subtree: Option<String>,
        destination_path: String,
    },
}

/// How one side's attempt ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    pub code: FaultCode,
    pub message: String,
    /// Whether retrying (same transfer id, new attempt) may succeed.
    pub retryable: bool,
}

/// Agent -> service: what one side of an attempt is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub enum TransferReport {
    /// The destination registered the attempt and listens here.
    Listening {
        transfer_id: String,
        attempt: u32,
        /// `IP:PORT` the source should connect to.
        address: String,
        fingerprint: String,
    },
    Progress {
        transfer_id: String,
        attempt: u32,
        side: Side,
        counters: TransferCounters,
    },
    Fault {
        transfer_id: String,
        attempt: u32,
        event: FaultEvent,
    },
    /// The side's attempt ended (`error` None: success).
    Done {
        transfer_id: String,
        attempt: u32,
        side: Side,
        counters: TransferCounters,
        #[serde(default)]
        checksums: Vec<FileChecksum>,
        error: Option<AttemptError>,
    },
}

impl TransferReport {
    pub fn transfer_id(&self) -> &str {
        match self {
            TransferReport::Listening { transfer_id, .. }
            | TransferReport::Progress { transfer_id, .. }
            | TransferReport::Fault { transfer_id, .. }
            | TransferReport::Done { transfer_id, .. } => transfer_id,
        }
    }

    pub fn attempt(&self) -> u32 {
        match self {
            TransferReport::Listening { attempt, .. }
            | TransferReport::Progress { attempt, .. }
            | TransferReport::Fault { attempt, .. }
            | TransferReport::Done { attempt, .. } => *attempt,
        }
    }
}

/// Request id of a file operation on the agent channel.
pub type FileOpRequestId = Uuid;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_payloads_round_trip_through_msgpack() {
        let command = TransferCommand::Send {
            attempt: 2,
            collection: "data".into(),
            subtree: Some("/shared/".into()),
            spec: AttemptSpec {
                transfer_id: "t-0".into(),
                source_path: "/a b".into(),
                destination_path: "/ü\n".into(),
                recursive: true,
                options: TransferOptions {
                    sync_level: Some(SyncLevel::Checksum),
                    ..Default::default()
                },
                tuning: TransferTuning {
                    streams_per_connection: Some(3),
                    chunk_size: Some(1 << 20),
                    ..Default::default()
                },
            },
            destination: "127.0.0.1:4000".into(),
            destination_fingerprint: "ab".into(),
            credential: "cd".into(),
        };
        let bytes = rmp_serde::to_vec_named(&command).unwrap();
        let back: TransferCommand = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, command);
        // Default tuning is left out on the wire and comes back as default.
        let TransferCommand::Send { spec, .. } = &command else {
            unreachable!()
        };
        let untuned = AttemptSpec {
            tuning: TransferTuning::default(),
            ..spec.clone()
        };
        let bytes = rmp_serde::to_vec_named(&untuned).unwrap();
        let back: AttemptSpec = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, untuned);
        let result: Result<FileOpOutcome, FileOpError> = Err(FileOpError {
            kind: FileErrorKind::Escape,
            message: "no".into(),
        });
        let bytes = rmp_serde::to_vec_named(&result).unwrap();
        let back: Result<FileOpOutcome, FileOpError> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, result);
    }

    /// The frames nest internally tagged enums; they must survive the
    /// channel's MessagePack framing.
    #[test]
    fn data_frames_round_trip_through_the_agent_channel_framing() {
        use crate::frames::{AgentFrame, ServiceFrame};
        use crate::framing::{decode, encode};
        let frames = vec![
            AgentFrame::Transfer {
                report: TransferReport::Done {
                    transfer_id: "t.0".into(),
                    attempt: 3,
                    side: Side::Destination,
                    counters: TransferCounters {
                        files: 1,
                        bytes_transferred: u64::MAX,
                        ..Default::default()
                    },
                    checksums: vec![FileChecksum {
                        path: "a\nb".into(),
                        size: 1,
                        blake3: "00".into(),
                    }],
                    error: Some(AttemptError {
                        code: FaultCode::ConnectionReset,
                        message: "lost".into(),
                        retryable: true,
                    }),
                },
            },
            AgentFrame::FileOpResult {
                request_id: Uuid::new_v4(),
                result: Ok(FileOpOutcome::Entries {
                    entries: vec![FileEntry {
                        name: "ü".into(),
                        path: "/ü".into(),
                        kind: EntryKind::File,
                        size: 3,
                        modified_ms: -5,
                        permissions: 0o644,
                        uid: 0,
                        gid: 0,
                        link_target: None,
                    }],
                }),
            },
            AgentFrame::Collections {
                collections: vec![CollectionAnnounce {
                    name: "data".into(),
                    root: "/srv".into(),
                }],
                data_fingerprint: Some("ab".into()),
            },
        ];
        for frame in frames {
            let back: AgentFrame = decode(&encode(&frame).unwrap()).unwrap();
            assert_eq!(back, frame);
        }
        // Codes travel in their wire spelling; one this build does not know
        // (a newer agent's) is kept as a fault instead of failing the frame.
        let known: FaultCode = serde_json::from_str("\"NO_SPACE_LEFT\"").unwrap();
        assert_eq!(known, FaultCode::NoSpaceLeft);
        assert_eq!(serde_json::to_string(&known).unwrap(), "\"NO_SPACE_LEFT\"");
        let newer: FaultCode = serde_json::from_str("\"QUANTUM_DECOHERENCE\"").unwrap();
        assert_eq!(newer, FaultCode::Unknown);
        let newer: FaultCode =
            rmp_serde::from_slice(&rmp_serde::to_vec("QUANTUM_DECOHERENCE").unwrap()).unwrap();
        assert_eq!(newer, FaultCode::Unknown, "in frames too");
        let sent: FaultCode =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&FaultCode::Cancelled).unwrap())
                .unwrap();
        assert_eq!(sent, FaultCode::Cancelled);
        let down = ServiceFrame::FileOp {
            request_id: Uuid::new_v4(),
            collection: "data".into(),
            subtree: None,
            op: FileOp::List {
                path: "/".into(),
                depth: 2,
                max_entries: 10,
            },
        };
        let back: ServiceFrame = decode(&encode(&down).unwrap()).unwrap();
        assert_eq!(back, down);
        let guest = ServiceFrame::FileOp {
            request_id: Uuid::new_v4(),
            collection: "data".into(),
            subtree: Some("/shared/".into()),
            op: FileOp::Stat { path: "/a".into() },
        };
        let back: ServiceFrame = decode(&encode(&guest).unwrap()).unwrap();
        assert_eq!(back, guest, "a guest collection's subtree crosses the wire");
    }
}
