//! Storage and data movement for Lattice agents: collections confined to a
//! root, file operations, and the agent-to-agent transfer engine (QUIC +
//! TLS 1.3, blake3 verification, restart journals).
//!
//! What it owns:
//! - [`Collection`]: a root directory opened as a capability; every path is
//!   resolved beneath it by the kernel (`openat2(RESOLVE_BENEATH)` through
//!   `cap-std`), so `..`, absolute symlinks and symlinks swapped in during
//!   an operation cannot leave it. File operations return typed [`Entry`]s.
//! - [`TransferEndpoint`]: built once per agent (UDP socket, self-signed
//!   certificate, accept loop). The *destination* listens; the source
//!   connects, pins the destination's certificate fingerprint and presents
//!   the one-time [`Credential`]; the destination checks the credential and
//!   the source's fingerprint.
//! - [`run_source`] / [`run_destination`]: one attempt of a transfer, each
//!   returning a [`TransferReport`] (counters, fault events, checksums) or a
//!   [`TransferFailure`] whose [`TransferError`] says whether to retry.
//!   [`run_delete`] is one attempt of a delete task, reported the same way;
//!   [`discard_destination`] removes what a transfer the service gave up on
//!   left at its destination (partial files, journal).
//!
//! What it must not do: know about the service's store, queues, tokens or
//! compute; retry on its own across attempts (the service does, with backoff
//! and deadlines: the destination's journal makes a retry resume); block an
//! async thread (file I/O, walks and hashing run on the blocking pool).
//!
//! The types in [`spec`] are serde-serializable so they can travel in
//! protocol frames.

mod buffers;
mod checksum;
mod collection;
mod delete;
mod destination;
mod endpoint;
mod error;
mod filters;
mod hooks;
mod journal;
mod progress;
mod source;
pub mod spec;
mod tls;
mod wire;

pub use collection::{
    Collection, CollectionPath, DeleteControl, DeleteSummary, Entry, EntryKind, ListOptions,
};
pub use delete::{run_delete, DeleteTask};
pub use destination::{discard_destination, run_destination, DestinationTask, PARTIAL_PREFIX};
pub use endpoint::{EndpointConfig, TransferEndpoint};
pub use error::{CollectionError, EndpointError, FaultCode, TransferError, TransferFailure};
pub use hooks::TestHooks;
pub use source::{run_source, SourceTask};
pub use spec::{
    Credential, FileChecksum, Side, SyncLevel, TransferCounters, TransferEvent, TransferOptions,
    TransferReport, TransferSpec, TransferUpdate, Tuning,
};
pub use tls::{AgentIdentity, Fingerprint};
