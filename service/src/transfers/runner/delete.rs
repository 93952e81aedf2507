//! One attempt of one item of a delete task ([`TaskKind::Delete`]): a
//! `TransferCommand::Delete` to the collection's agent, which reports like
//! a destination (progress, then `Done`).
//!
//! Owns that exchange only. Must not decide about retries (`policy.rs`) or
//! end the task.
//!
//! [`TaskKind::Delete`]: lattice_protocol::transfer::TaskKind::Delete

use std::time::Duration;

use lattice_protocol::frames::ServiceFrame;
use lattice_protocol::transfer::{
    AttemptError, AttemptSpec, FaultCode, TransferCommand, TransferReport,
};
use tokio::time::Instant;

use super::policy::{Attempt, Stop};
use super::progress::Progress;
use super::Runner;
use crate::store::{StoreResult, TransferRecord};
use crate::transfers::{AgentTarget, RunnerInput};

impl Runner {
    /// Runs one attempt of one item of a delete task on the collection's
    /// agent. No timeout: a large tree takes as long as it takes, and the
    /// agent going away ends the attempt.
    pub(super) async fn delete_attempt(
        &mut self,
        record: &TransferRecord,
        progress: &mut Progress,
        attempt: u32,
        spec: AttemptSpec,
        ignore_missing: bool,
        target: &AgentTarget,
    ) -> StoreResult<Attempt> {
        let endpoint = target.endpoint;
        let transfer_id = spec.transfer_id.clone();
        let command = TransferCommand::Delete {
            attempt,
            collection: target.name.clone(),
            subtree: target.subtree.clone(),
            transfer_id: transfer_id.clone(),
            path: spec.source_path,
            recursive: spec.recursive,
            ignore_missing,
        };
        if !self.state.agents.send_one(
            endpoint,
            ServiceFrame::Transfer {
                command: Box::new(command),
            },
        ) {
            return Ok(Attempt::retryable(
                FaultCode::ConnectFailed,
                "the collection's agent went offline",
            ));
        }
        loop {
            let input = match self
                .next_input(Instant::now() + Duration::from_secs(3600), record.deadline)
                .await
            {
                Ok(Some(input)) => input,
                Ok(None) => continue,
                Err(stop) => {
                    self.abort(&transfer_id, &[endpoint]);
                    return Ok(Attempt::Stopped(stop));
                }
            };
            match input {
                RunnerInput::Cancel => {
                    self.abort(&transfer_id, &[endpoint]);
                    return Ok(Attempt::Stopped(Stop::Cancelled));
                }
                RunnerInput::EndpointGone(e) if e == endpoint => {
                    return Ok(Attempt::Failed {
                        error: AttemptError {
                            code: FaultCode::ConnectionReset,
                            message: format!(
                                "endpoint {} went offline; the delete resumes when it reconnects",
                                self.endpoint_label(e).await
                            ),
                            retryable: true,
                        },
                        counters: progress.live_destination.clone(),
                    });
                }
                RunnerInput::EndpointGone(_) => {}
                RunnerInput::Report { from, report } => {
                    if from != endpoint
                        || report.attempt() != attempt
                        || report.transfer_id() != transfer_id
                    {
                        continue;
                    }
                    match report {
                        TransferReport::Done {
                            counters, error, ..
                        } => {
                            return Ok(match error {
                                None => Attempt::Succeeded {
                                    counters,
                                    checksums: Vec::new(),
                                },
                                Some(error) => Attempt::Failed { error, counters },
                            })
                        }
                        TransferReport::Progress { counters, .. } => {
                            progress.live_destination = counters;
                            self.write(progress, false).await?;
                        }
                        TransferReport::Fault { .. } | TransferReport::Listening { .. } => {}
                    }
                }
            }
        }
    }
}
