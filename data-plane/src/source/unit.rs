//! The vocabulary between the coordinator and the workers: the units of
//! work it queues and the reports they send back.
//!
//! Plain data: it must not carry behaviour, so that both sides stay
//! testable on their own.

use std::sync::Arc;

use crate::collection::CollectionPath;
use crate::error::TransferError;
use crate::spec::TransferEvent;

/// Work for the workers: read, hash and send.
#[derive(Debug)]
pub(super) enum Unit {
    Chunk(ChunkUnit),
    Batch {
        unit: u64,
        files: Vec<BatchItem>,
    },
    Compare {
        id: u64,
        path: Arc<CollectionPath>,
        dest_hash: [u8; 32],
    },
}

/// One chunk of one generation of a file, as the file was when the generation began.
#[derive(Debug)]
pub(super) struct ChunkUnit {
    pub id: u64,
    pub gen: u32,
    pub index: u32,
    pub path: Arc<CollectionPath>,
    pub rel: Arc<str>,
    pub size: u64,
    pub mtime_ns: i64,
    /// Resume: the destination holds this chunk with this value; send only if ours differs.
    pub expect: Option<[u8; 32]>,
}

#[derive(Debug, Clone)]
pub(super) struct BatchItem {
    pub id: u64,
    pub path: Arc<CollectionPath>,
    pub rel: Arc<str>,
    pub size: u64,
    pub mtime_ns: i64,
}

/// What a worker found.
#[derive(Debug)]
pub(super) enum Report {
    ChunkDone {
        id: u64,
        gen: u32,
        index: u32,
        cv: [u8; 32],
        /// False: the destination already held it (resume), so no ack will come.
        sent: bool,
    },
    ChunkChanged {
        id: u64,
        gen: u32,
        index: u32,
    },
    BatchSent,
    Compared {
        id: u64,
        equal: bool,
    },
    SourceError {
        id: u64,
        error: TransferError,
    },
    Event(TransferEvent),
    Fatal(TransferError),
}
