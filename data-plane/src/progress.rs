//! Counters and events shared by the tasks of one transfer attempt.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::spec::{
    FileChecksum, Side, TransferCounters, TransferEvent, TransferReport, TransferUpdate,
};

#[derive(Default)]
pub(crate) struct Counters {
    pub files: AtomicU64,
    pub directories: AtomicU64,
    pub bytes_transferred: AtomicU64,
    pub bytes_verified: AtomicU64,
    pub files_skipped: AtomicU64,
    pub files_resumed: AtomicU64,
    pub faults: AtomicU64,
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
}

/// Counters, events and checksums of one side of one attempt.
pub(crate) struct Progress {
    pub side: Side,
    pub counters: Counters,
    started: Instant,
    events: Mutex<Vec<TransferEvent>>,
    checksums: Mutex<Vec<FileChecksum>>,
    updates: Option<UnboundedSender<TransferUpdate>>,
}

impl Progress {
    pub(crate) fn new(side: Side, updates: Option<UnboundedSender<TransferUpdate>>) -> Self {
        Progress {
            side,
            counters: Counters::default(),
            started: Instant::now(),
            events: Mutex::new(Vec::new()),
            checksums: Mutex::new(Vec::new()),
            updates,
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Records an event (ours or the peer's) and passes it on.
    pub(crate) fn event(&self, event: TransferEvent) {
        tracing::warn!(code = %event.code, path = ?event.path, side = ?event.side, "{}", event.message);
        self.counters.faults.fetch_add(1, Relaxed);
        if let Some(updates) = &self.updates {
            let _ = updates.send(TransferUpdate::Event(event.clone()));
        }
        self.events.lock().expect("events lock").push(event);
    }

    pub(crate) fn checksum(&self, checksum: FileChecksum) {
        self.checksums
            .lock()
            .expect("checksums lock")
            .push(checksum);
    }

    pub(crate) fn snapshot(&self) -> TransferCounters {
        let c = &self.counters;
        let elapsed = self.started.elapsed();
        let bytes = c.bytes_transferred.load(Relaxed);
        TransferCounters {
            files: c.files.load(Relaxed),
            directories: c.directories.load(Relaxed),
            bytes_transferred: bytes,
            bytes_verified: c.bytes_verified.load(Relaxed),
            files_skipped: c.files_skipped.load(Relaxed),
            files_resumed: c.files_resumed.load(Relaxed),
            faults: c.faults.load(Relaxed),
            files_total: c.files_total.load(Relaxed),
            bytes_total: c.bytes_total.load(Relaxed),
            elapsed_ms: elapsed.as_millis() as u64,
            bytes_per_second: (bytes as f64 / elapsed.as_secs_f64().max(1e-3)) as u64,
        }
    }

    pub(crate) fn tick(&self) {
        if let Some(updates) = &self.updates {
            let _ = updates.send(TransferUpdate::Progress(self.snapshot()));
        }
    }

    pub(crate) fn report(
        &self,
        transfer_id: &str,
        counters: Option<TransferCounters>,
        deleted: u64,
    ) -> TransferReport {
        self.tick();
        let mut checksums = std::mem::take(&mut *self.checksums.lock().expect("checksums lock"));
        checksums.sort_by(|a, b| a.path.cmp(&b.path));
        TransferReport {
            transfer_id: transfer_id.to_string(),
            side: self.side,
            counters: counters.unwrap_or_else(|| self.snapshot()),
            events: self.events.lock().expect("events lock").clone(),
            checksums,
            deleted,
        }
    }
}
