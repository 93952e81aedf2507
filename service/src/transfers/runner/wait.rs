//! Waiting in a runner: for the next input from its inbox, through a
//! backoff, and (paused) for both endpoints' agents to be online. Every
//! wait ends early on cancel or at the deadline, as a [`Stop`].
//!
//! Owns the inbox and the `PAUSED`/`RESUMED` events. Must not start or
//! judge attempts.

use std::time::Duration;

use chrono::Utc;
use lattice_protocol::transfer::TransferStatus;
use lattice_protocol::EndpointId;
use tokio::time::Instant;

use super::policy::Stop;
use super::progress::Progress;
use super::Runner;
use crate::store::{StoreResult, TransferRecord};
use crate::transfers::RunnerInput;

/// How often a paused task checks whether its endpoints are back.
const PAUSE_POLL: Duration = Duration::from_millis(250);

impl Runner {
    /// Waits until both endpoints' agents are connected (with data planes),
    /// pausing the task meanwhile.
    pub(super) async fn wait_online(
        &mut self,
        record: &TransferRecord,
        progress: &mut Progress,
        endpoints: [EndpointId; 2],
    ) -> StoreResult<Result<(), Stop>> {
        let mut paused = false;
        loop {
            if self.cancelled_in_store().await? {
                return Ok(Err(Stop::Cancelled));
            }
            if record.deadline.is_some_and(|d| d <= Utc::now()) {
                return Ok(Err(Stop::Deadline));
            }
            let offline: Vec<EndpointId> = endpoints
                .iter()
                .copied()
                .filter(|e| self.state.data.fingerprint(*e).is_none())
                .collect();
            if offline.is_empty() {
                if paused || progress.status == TransferStatus::Paused {
                    self.resume(progress).await?;
                }
                return Ok(Ok(()));
            }
            if !paused {
                paused = true;
                self.pause(progress, &offline).await?;
            }
            if let Err(stop) = self.sleep(PAUSE_POLL, record.deadline).await {
                return Ok(Err(stop));
            }
        }
    }

    /// Marks the task paused because of the `offline` endpoints.
    async fn pause(&self, progress: &mut Progress, offline: &[EndpointId]) -> StoreResult<()> {
        let mut labels = Vec::with_capacity(offline.len());
        for id in offline {
            labels.push(self.endpoint_label(*id).await);
        }
        let message = format!(
            "paused: endpoint {} is offline; the transfer resumes when its agent reconnects",
            labels.join(" and ")
        );
        if progress.status != TransferStatus::Paused {
            self.event(
                progress.items_done as usize,
                progress.attempts,
                "PAUSED",
                false,
                None,
                None,
                &message,
            )
            .await?;
            crate::notify::hooks::transfer_changed(
                &self.state,
                self.id,
                TransferStatus::Paused,
                &message,
            );
        }
        progress.status = TransferStatus::Paused;
        progress.message = Some(message);
        self.write(progress, true).await
    }

    /// Marks the task active again.
    async fn resume(&self, progress: &mut Progress) -> StoreResult<()> {
        progress.status = TransferStatus::Active;
        progress.message = None;
        self.event(
            progress.items_done as usize,
            progress.attempts,
            "RESUMED",
            false,
            None,
            None,
            "every endpoint is online again; resuming",
        )
        .await?;
        self.write(progress, true).await
    }

    /// Sleeps, ending early on cancel or deadline. Reports arriving
    /// meanwhile belong to finished attempts and are dropped.
    pub(super) async fn sleep(
        &mut self,
        duration: Duration,
        deadline: Option<chrono::DateTime<Utc>>,
    ) -> Result<(), Stop> {
        let until = Instant::now() + duration;
        loop {
            match self.next_input(until, deadline).await {
                Ok(None) => return Ok(()),
                Ok(Some(RunnerInput::Cancel)) => return Err(Stop::Cancelled),
                Ok(Some(_)) => continue,
                Err(stop) => return Err(stop),
            }
        }
    }

    /// The next input before `until` (`Ok(None)` then), or the deadline.
    pub(super) async fn next_input(
        &mut self,
        until: Instant,
        deadline: Option<chrono::DateTime<Utc>>,
    ) -> Result<Option<RunnerInput>, Stop> {
        let deadline_in = deadline.map(|d| (d - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        let deadline_at = deadline_in.map(|d| Instant::now() + d);
        tokio::select! {
            input = self.inbox.recv() => Ok(input),
            () = tokio::time::sleep_until(until) => Ok(None),
            () = sleep_until_opt(deadline_at) => Err(Stop::Deadline),
        }
    }

    async fn cancelled_in_store(&self) -> StoreResult<bool> {
        Ok(self
            .state
            .store
            .transfer(self.id)
            .await?
            .is_none_or(|t| t.status.is_final()))
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
