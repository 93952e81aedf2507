//! One attempt of one item of a transfer task: a fresh one-time credential;
//! `Listen` to the destination agent (which answers with its address and
//! certificate fingerprint); `Send` to the source agent; progress and
//! faults recorded as reported; both sides' `Done` end it.
//!
//! Owns that exchange and the abort of a side that outlives its peer's
//! failure. Must not decide about retries (`policy.rs`) or end the task:
//! it returns an [`Attempt`].

use std::time::Duration;

use lattice_protocol::frames::ServiceFrame;
use lattice_protocol::transfer::{
    AttemptError, AttemptSpec, FaultCode, FileChecksum, Side, TransferCommand, TransferCounters,
    TransferReport,
};
use lattice_protocol::EndpointId;
use tokio::time::Instant;

use super::policy::{pick_error, Attempt, Stop};
use super::progress::{merge, Progress};
use super::Runner;
use crate::store::{StoreResult, TransferRecord};
use crate::transfers::{AgentTarget, RunnerInput};

/// How long the destination has to say it listens.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// After one side failed, how long the other may take to end by itself
/// before it is told to abort.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// After one side failed, how long the other has to report its end.
const PEER_DONE_TIMEOUT: Duration = Duration::from_secs(15);

/// The two sides' `Done` reports of an attempt, as they arrive.
#[derive(Default)]
struct Ends {
    source: Option<(TransferCounters, Vec<FileChecksum>, Option<AttemptError>)>,
    destination: Option<(TransferCounters, Option<AttemptError>)>,
    /// After one side failed: when to give up on the other's report.
    peer_deadline: Option<Instant>,
    /// After one side failed, the other usually ends by itself (it saw the
    /// same fault on the connection); it is aborted only if it has not
    /// after [`ABORT_GRACE`], so that it can finish its clean-up (a final
    /// failure removes its partial files and journal).
    abort_peer_at: Option<(Instant, EndpointId)>,
}

impl Ends {
    /// What the attempt came to, once both sides reported their end.
    fn outcome(&self) -> Option<Attempt> {
        let (Some(s), Some(d)) = (&self.source, &self.destination) else {
            return None;
        };
        let counters = merge(&s.0, &d.0);
        Some(match (&s.2, &d.1) {
            (None, None) => Attempt::Succeeded {
                counters,
                checksums: s.1.clone(),
            },
            (s_err, d_err) => Attempt::Failed {
                error: pick_error(s_err.as_ref(), d_err.as_ref()),
                counters,
            },
        })
    }

    /// What the attempt came to when one side failed and the other never
    /// reported.
    fn given_up(self) -> Attempt {
        let error = self
            .source
            .as_ref()
            .and_then(|s| s.2.clone())
            .or_else(|| self.destination.as_ref().and_then(|d| d.1.clone()))
            .unwrap_or_else(|| AttemptError {
                code: FaultCode::ConnectionReset,
                message: "an agent stopped reporting".into(),
                retryable: true,
            });
        let counters = merge(
            &self.source.map(|s| s.0).unwrap_or_default(),
            &self.destination.map(|d| d.0).unwrap_or_default(),
        );
        Attempt::Failed { error, counters }
    }

    /// One side failed before `peer` ended: abort `peer` after the grace.
    fn failed_before(&mut self, peer: EndpointId) {
        self.abort_peer_at = Some((Instant::now() + ABORT_GRACE, peer));
        self.peer_deadline = Some(Instant::now() + PEER_DONE_TIMEOUT);
    }
}

impl Runner {
    /// Runs one attempt of one item.
    pub(super) async fn attempt(
        &mut self,
        record: &TransferRecord,
        progress: &mut Progress,
        attempt: u32,
        spec: AttemptSpec,
        source_target: &AgentTarget,
        destination_target: &AgentTarget,
    ) -> StoreResult<Attempt> {
        let (source, destination) = (source_target.endpoint, destination_target.endpoint);
        let transfer_id = spec.transfer_id.clone();
        let credential = new_credential();
        let Some(source_fingerprint) = self.state.data.fingerprint(source) else {
            return Ok(Attempt::retryable(
                FaultCode::ConnectFailed,
                "the source agent went offline",
            ));
        };
        let listen = TransferCommand::Listen {
            attempt,
            collection: destination_target.name.clone(),
            subtree: destination_target.subtree.clone(),
            spec: spec.clone(),
            source_fingerprint,
            credential: credential.clone(),
        };
        if !self.state.agents.send_one(
            destination,
            ServiceFrame::Transfer {
                command: Box::new(listen),
            },
        ) {
            return Ok(Attempt::retryable(
                FaultCode::ConnectFailed,
                "the destination agent went offline",
            ));
        }
        let sides = [source, destination];
        // 1. The destination listens.
        let (address, fingerprint) = match self
            .listening(record, progress, attempt, &transfer_id, sides)
            .await?
        {
            Ok(listening) => listening,
            Err(ended) => return Ok(ended),
        };
        // 2. The source sends.
        let send = TransferCommand::Send {
            attempt,
            collection: source_target.name.clone(),
            subtree: source_target.subtree.clone(),
            spec,
            destination: address,
            destination_fingerprint: fingerprint,
            credential,
        };
        if !self.state.agents.send_one(
            source,
            ServiceFrame::Transfer {
                command: Box::new(send),
            },
        ) {
            self.abort(&transfer_id, &[destination]);
            return Ok(Attempt::retryable(
                FaultCode::ConnectFailed,
                "the source agent went offline",
            ));
        }
        // 3. Both sides report their end.
        self.ends(record, progress, attempt, &transfer_id, sides)
            .await
    }

    /// Waits for the destination's `Listening` (its address and
    /// fingerprint); `Err` with what the attempt came to if it ended first.
    async fn listening(
        &mut self,
        record: &TransferRecord,
        progress: &mut Progress,
        attempt: u32,
        transfer_id: &str,
        [source, destination]: [EndpointId; 2],
    ) -> StoreResult<Result<(String, String), Attempt>> {
        let item = progress.items_done as usize;
        let listen_deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            let input = match self.next_input(listen_deadline, record.deadline).await {
                Ok(Some(input)) => input,
                Ok(None) => {
                    self.abort(transfer_id, &[destination]);
                    return Ok(Err(Attempt::retryable(
                        FaultCode::ConnectFailed,
                        "the destination agent did not start listening in time",
                    )));
                }
                Err(stop) => {
                    self.abort(transfer_id, &[destination]);
                    return Ok(Err(Attempt::Stopped(stop)));
                }
            };
            match input {
                RunnerInput::Cancel => {
                    self.abort(transfer_id, &[destination]);
                    return Ok(Err(Attempt::Stopped(Stop::Cancelled)));
                }
                RunnerInput::EndpointGone(e) if e == destination || e == source => {
                    self.abort(transfer_id, &[source, destination]);
                    return Ok(Err(Attempt::retryable(
                        FaultCode::ConnectionReset,
                        &format!("endpoint {e} went offline"),
                    )));
                }
                RunnerInput::EndpointGone(_) => {}
                RunnerInput::Report { from, report } => {
                    if report.attempt() != attempt || report.transfer_id() != transfer_id {
                        continue;
                    }
                    match report {
                        TransferReport::Listening {
                            address,
                            fingerprint,
                            ..
                        } if from == destination => return Ok(Ok((address, fingerprint))),
                        TransferReport::Done {
                            error: Some(error),
                            counters,
                            ..
                        } if from == destination => {
                            return Ok(Err(Attempt::Failed { error, counters }));
                        }
                        other => {
                            self.report(progress, item, attempt, from, [source, destination], other)
                                .await?
                        }
                    }
                }
            }
        }
    }

    /// Collects both sides' `Done` reports (and their progress and faults
    /// meanwhile) into what the attempt came to.
    async fn ends(
        &mut self,
        record: &TransferRecord,
        progress: &mut Progress,
        attempt: u32,
        transfer_id: &str,
        [source, destination]: [EndpointId; 2],
    ) -> StoreResult<Attempt> {
        let item = progress.items_done as usize;
        let mut ends = Ends::default();
        loop {
            if let Some(outcome) = ends.outcome() {
                return Ok(outcome);
            }
            let wait_until = ends
                .abort_peer_at
                .map(|(at, _)| at)
                .or(ends.peer_deadline)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let input = match self.next_input(wait_until, record.deadline).await {
                Ok(Some(input)) => input,
                Ok(None) if ends.abort_peer_at.is_some() => {
                    if let Some((_, peer)) = ends.abort_peer_at.take() {
                        self.abort(transfer_id, &[peer]);
                    }
                    continue;
                }
                Ok(None) => {
                    // One side failed and the other never reported: give up on it.
                    self.abort(transfer_id, &[source, destination]);
                    return Ok(ends.given_up());
                }
                Err(stop) => {
                    self.abort(transfer_id, &[source, destination]);
                    return Ok(Attempt::Stopped(stop));
                }
            };
            match input {
                RunnerInput::Cancel => {
                    self.abort(transfer_id, &[source, destination]);
                    return Ok(Attempt::Stopped(Stop::Cancelled));
                }
                RunnerInput::EndpointGone(e) if e == destination || e == source => {
                    self.abort(transfer_id, &[source, destination]);
                    return Ok(Attempt::Failed {
                        error: AttemptError {
                            code: FaultCode::ConnectionReset,
                            message: format!(
                                "endpoint {} went offline; the transfer resumes when it reconnects",
                                self.endpoint_label(e).await
                            ),
                            retryable: true,
                        },
                        counters: progress.live(),
                    });
                }
                RunnerInput::EndpointGone(_) => {}
                RunnerInput::Report { from, report } => {
                    if report.attempt() != attempt || report.transfer_id() != transfer_id {
                        continue;
                    }
                    match report {
                        TransferReport::Done {
                            side: Side::Source,
                            counters,
                            checksums,
                            error,
                            ..
                        } if from == source => {
                            if error.is_some() && ends.destination.is_none() {
                                ends.failed_before(destination);
                            }
                            progress.live_source = counters.clone();
                            ends.source = Some((counters, checksums, error));
                        }
                        TransferReport::Done {
                            side: Side::Destination,
                            counters,
                            error,
                            ..
                        } if from == destination => {
                            if error.is_some() && ends.source.is_none() {
                                ends.failed_before(source);
                            }
                            progress.live_destination = counters.clone();
                            ends.destination = Some((counters, error));
                        }
                        other => {
                            self.report(progress, item, attempt, from, [source, destination], other)
                                .await?
                        }
                    }
                }
            }
        }
    }

    /// Records a progress or fault report.
    async fn report(
        &self,
        progress: &mut Progress,
        item: usize,
        attempt: u32,
        from: EndpointId,
        [source, destination]: [EndpointId; 2],
        report: TransferReport,
    ) -> StoreResult<()> {
        match report {
            TransferReport::Progress { side, counters, .. } => {
                match side {
                    Side::Source if from == source => progress.live_source = counters,
                    Side::Destination if from == destination => {
                        progress.live_destination = counters
                    }
                    _ => return Ok(()),
                }
                self.write(progress, false).await
            }
            TransferReport::Fault { event, .. } => {
                // Each side passes on its peer's events too: record an event
                // once, from the side that saw it.
                let reporter = if from == source {
                    Side::Source
                } else {
                    Side::Destination
                };
                if event.side != reporter || (from != source && from != destination) {
                    return Ok(());
                }
                progress.faults += 1;
                self.event(
                    item,
                    attempt,
                    event.code.as_str(),
                    true,
                    Some(event.side),
                    event.path.as_deref(),
                    &event.message,
                )
                .await?;
                self.write(progress, false).await
            }
            TransferReport::Listening { .. } | TransferReport::Done { .. } => Ok(()),
        }
    }
}

/// 256 random bits, hex.
fn new_credential() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: FaultCode, retryable: bool) -> AttemptError {
        AttemptError {
            code,
            message: code.as_str().to_lowercase(),
            retryable,
        }
    }

    fn files(n: u64) -> TransferCounters {
        TransferCounters {
            files: n,
            ..TransferCounters::default()
        }
    }

    #[test]
    fn an_attempt_ends_when_both_sides_did() {
        let mut ends = Ends {
            source: Some((files(3), Vec::new(), None)),
            ..Ends::default()
        };
        assert!(ends.outcome().is_none());
        ends.destination = Some((files(2), None));
        assert!(matches!(
            ends.outcome(),
            Some(Attempt::Succeeded { counters, .. }) if counters.files == 3
        ));
        ends.destination = Some((files(2), Some(error(FaultCode::NoSpaceLeft, false))));
        assert!(matches!(
            ends.outcome(),
            Some(Attempt::Failed { error, .. }) if error.code == FaultCode::NoSpaceLeft
        ));
    }

    #[test]
    fn giving_up_on_a_silent_peer_keeps_the_failed_sides_error() {
        let ends = Ends {
            destination: Some((files(1), Some(error(FaultCode::IoError, true)))),
            ..Ends::default()
        };
        assert!(matches!(
            ends.given_up(),
            Attempt::Failed { error, counters } if error.code == FaultCode::IoError && counters.files == 1
        ));
        assert!(matches!(
            Ends::default().given_up(),
            Attempt::Failed { error, .. } if error.code == FaultCode::ConnectionReset
        ));
    }
}
