//! A task's progress: the counters, their merge (two sides of one attempt)
//! and sum (over attempts), the mutable [`Progress`] state, and writing it
//! and the task's events to the store.
//!
//! Owns every write of the task row (`update_transfer`) and its events.
//! Must not talk to agents or decide what the runner does next
//! (`policy.rs` decides).

use std::time::Duration;

use chrono::Utc;
use lattice_protocol::transfer::{Side, TransferCounters, TransferStatus};
use tokio::time::Instant;

use super::policy::Stop;
use super::Runner;
use crate::store::{NewTransferEvent, StoreResult, TransferProgress};

/// Least time between two progress writes to the store.
const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_millis(500);

/// Mutable progress of the task, written to the store.
pub(super) struct Progress {
    pub(super) status: TransferStatus,
    pub(super) message: Option<String>,
    pub(super) items_done: u32,
    pub(super) attempts: u32,
    /// Sum over finished attempts.
    pub(super) done: TransferCounters,
    /// The current attempt's, per side.
    pub(super) live_source: TransferCounters,
    pub(super) live_destination: TransferCounters,
    pub(super) faults: u64,
    pub(super) last_write: Option<Instant>,
}

impl Progress {
    pub(super) fn counters(&self) -> TransferCounters {
        let mut total = add(&self.done, &self.live());
        total.faults = self.faults;
        total
    }

    /// What the current attempt reported so far, both sides merged.
    pub(super) fn live(&self) -> TransferCounters {
        merge(&self.live_source, &self.live_destination)
    }

    /// Forgets the current attempt's reports.
    pub(super) fn reset_live(&mut self) {
        self.live_source = TransferCounters::default();
        self.live_destination = TransferCounters::default();
    }
}

/// Field-wise maximum: the two sides count the same files and bytes (the
/// source reports the destination's counts at the end), and only the
/// source knows the totals.
pub(super) fn merge(a: &TransferCounters, b: &TransferCounters) -> TransferCounters {
    TransferCounters {
        files: a.files.max(b.files),
        directories: a.directories.max(b.directories),
        bytes_transferred: a.bytes_transferred.max(b.bytes_transferred),
        bytes_verified: a.bytes_verified.max(b.bytes_verified),
        files_skipped: a.files_skipped.max(b.files_skipped),
        files_resumed: a.files_resumed.max(b.files_resumed),
        faults: a.faults.max(b.faults),
        files_total: a.files_total.max(b.files_total),
        bytes_total: a.bytes_total.max(b.bytes_total),
        elapsed_ms: a.elapsed_ms.max(b.elapsed_ms),
        bytes_per_second: a.bytes_per_second.max(b.bytes_per_second),
    }
}

/// Sum over attempts (a retry counts from zero).
pub(super) fn add(a: &TransferCounters, b: &TransferCounters) -> TransferCounters {
    let elapsed_ms = a.elapsed_ms + b.elapsed_ms;
    let bytes = a.bytes_transferred + b.bytes_transferred;
    TransferCounters {
        files: a.files + b.files,
        directories: a.directories + b.directories,
        bytes_transferred: bytes,
        bytes_verified: a.bytes_verified + b.bytes_verified,
        files_skipped: a.files_skipped + b.files_skipped,
        files_resumed: a.files_resumed + b.files_resumed,
        faults: a.faults + b.faults,
        files_total: a.files_total + b.files_total,
        bytes_total: a.bytes_total + b.bytes_total,
        elapsed_ms,
        bytes_per_second: (bytes * 1000).checked_div(elapsed_ms).unwrap_or(0),
    }
}

impl Runner {
    /// Ends the task after a stop: a cancel was already recorded by the
    /// route; a deadline fails the task.
    pub(super) async fn stopped(&self, progress: &mut Progress, stop: Stop) -> StoreResult<()> {
        match stop {
            Stop::Cancelled => {
                // The route already recorded the cancel (status and event).
                Ok(())
            }
            Stop::Deadline => {
                self.finish(
                    progress,
                    TransferStatus::Failed,
                    "DEADLINE_EXCEEDED",
                    "the deadline passed before the transfer completed".into(),
                )
                .await
            }
        }
    }

    /// Writes the final status and, if the task was not final yet, its
    /// closing event `code`.
    pub(super) async fn finish(
        &self,
        progress: &mut Progress,
        status: TransferStatus,
        code: &str,
        message: String,
    ) -> StoreResult<()> {
        progress.status = status;
        progress.message = Some(message.clone());
        let counters = progress.counters();
        let written = self
            .state
            .store
            .update_transfer(
                self.id,
                &TransferProgress {
                    status,
                    status_message: Some(&message),
                    items_done: progress.items_done,
                    attempts: progress.attempts,
                    counters: &counters,
                    completed_at: Some(Utc::now()),
                },
            )
            .await?;
        if written {
            self.event(
                progress.items_done as usize,
                progress.attempts,
                code,
                false,
                None,
                None,
                &message,
            )
            .await?;
            tracing::info!(transfer_id = %self.id, status = status.as_str(), message, "transfer finished");
            crate::notify::hooks::transfer_changed(&self.state, self.id, status, &message);
        }
        Ok(())
    }

    /// Writes progress (at most every [`PROGRESS_WRITE_INTERVAL`] unless `now`).
    pub(super) async fn write(&self, progress: &mut Progress, now: bool) -> StoreResult<()> {
        if !now
            && progress
                .last_write
                .is_some_and(|t| t.elapsed() < PROGRESS_WRITE_INTERVAL)
        {
            return Ok(());
        }
        progress.last_write = Some(Instant::now());
        self.state
            .store
            .update_transfer(
                self.id,
                &TransferProgress {
                    status: progress.status,
                    status_message: progress.message.as_deref(),
                    items_done: progress.items_done,
                    attempts: progress.attempts,
                    counters: &progress.counters(),
                    completed_at: None,
                },
            )
            .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn event(
        &self,
        item: usize,
        attempt: u32,
        code: &str,
        fault: bool,
        side: Option<Side>,
        path: Option<&str>,
        message: &str,
    ) -> StoreResult<()> {
        self.state
            .store
            .insert_transfer_event(&NewTransferEvent {
                transfer_id: self.id,
                time: Utc::now(),
                code: code.to_owned(),
                fault,
                side,
                path: path.map(str::to_owned),
                message: message.to_owned(),
                item: item as u32,
                attempt,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(files: u64, bytes: u64, elapsed_ms: u64) -> TransferCounters {
        TransferCounters {
            files,
            bytes_transferred: bytes,
            elapsed_ms,
            ..TransferCounters::default()
        }
    }

    #[test]
    fn merge_takes_the_larger_count_of_each_field() {
        let source = TransferCounters {
            files_total: 10,
            ..counters(3, 300, 40)
        };
        let destination = counters(4, 200, 50);
        let merged = merge(&source, &destination);
        assert_eq!(merged.files, 4);
        assert_eq!(merged.bytes_transferred, 300);
        assert_eq!(merged.elapsed_ms, 50);
        assert_eq!(merged.files_total, 10);
    }

    #[test]
    fn add_sums_attempts_and_recomputes_the_rate() {
        let sum = add(&counters(1, 1_000, 500), &counters(2, 3_000, 1_500));
        assert_eq!(sum.files, 3);
        assert_eq!(sum.bytes_transferred, 4_000);
        assert_eq!(sum.elapsed_ms, 2_000);
        assert_eq!(sum.bytes_per_second, 2_000);
        assert_eq!(
            add(&counters(0, 5, 0), &counters(0, 5, 0)).bytes_per_second,
            0
        );
    }

    #[test]
    fn progress_counts_finished_and_live_attempts_with_its_own_faults() {
        let progress = Progress {
            status: TransferStatus::Active,
            message: None,
            items_done: 0,
            attempts: 2,
            done: counters(2, 200, 100),
            live_source: counters(1, 50, 10),
            live_destination: counters(1, 80, 10),
            faults: 7,
            last_write: None,
        };
        let total = progress.counters();
        assert_eq!(total.files, 3);
        assert_eq!(total.bytes_transferred, 280);
        assert_eq!(total.faults, 7);
    }
}
