//! What an attempt came to, and what the runner does next: the pure part of
//! the runner.
//!
//! Owns the attempt outcome ([`Attempt`], [`Stop`]), the retry policy
//! ([`decide`]: next item, retry after a backoff, fail for good, stop) with
//! its backoff bounds, and the choice of the error that explains a failed
//! attempt ([`pick_error`]).
//!
//! Must not do I/O: no store, no agents, no tokio, no clock of its own (the
//! time is passed in), so that every rule here is unit-tested.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lattice_protocol::transfer::{AttemptError, FaultCode, FileChecksum, TransferCounters};

/// First retry delay; doubles up to [`BACKOFF_MAX`].
pub(super) const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How a runner's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    Cancelled,
    Deadline,
}

/// What one attempt came to.
#[derive(Debug)]
pub(super) enum Attempt {
    Succeeded {
        counters: TransferCounters,
        checksums: Vec<FileChecksum>,
    },
    Failed {
        error: AttemptError,
        counters: TransferCounters,
    },
    Stopped(Stop),
}

impl Attempt {
    /// A retryable failure before anything was counted.
    pub(super) fn retryable(code: FaultCode, message: &str) -> Self {
        Attempt::Failed {
            error: AttemptError {
                code,
                message: message.to_owned(),
                retryable: true,
            },
            counters: TransferCounters::default(),
        }
    }
}

/// The fault event a failed attempt is recorded as (on its item and
/// attempt number).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Fault {
    pub(super) code: FaultCode,
    pub(super) message: String,
}

/// What the runner does after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// The item is done: go on with the next one.
    NextItem,
    /// Record `fault`, then try the item again after `delay`.
    Retry { fault: Fault, delay: Duration },
    /// Record `fault`, then wait `wait` (until the deadline, which comes
    /// before the retry would) and end with [`Stop::Deadline`].
    UntilDeadline { fault: Fault, wait: Duration },
    /// Record `fault`, then fail the task for good with `message`
    /// (`CODE: message`).
    Fail { fault: Fault, message: String },
    /// End without retrying.
    Stop(Stop),
}

/// The next step and the backoff for the retry after it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Decision {
    pub(super) step: Step,
    pub(super) backoff: Duration,
}

/// Decides what follows attempt number `attempt`, given the current
/// `backoff`, the task's `deadline` and the time `now`.
///
/// Success resets the backoff; a retryable failure waits the current
/// backoff and doubles it up to [`BACKOFF_MAX`]; a wait that reaches the
/// deadline ends there; a final failure or a stop ends the task.
pub(super) fn decide(
    outcome: &Attempt,
    attempt: u32,
    backoff: Duration,
    deadline: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Decision {
    let error = match outcome {
        Attempt::Succeeded { .. } => {
            return Decision {
                step: Step::NextItem,
                backoff: BACKOFF_INITIAL,
            }
        }
        Attempt::Stopped(stop) => {
            return Decision {
                step: Step::Stop(*stop),
                backoff,
            }
        }
        Attempt::Failed { error, .. } => error,
    };
    if !error.retryable {
        return Decision {
            step: Step::Fail {
                fault: Fault {
                    code: error.code,
                    message: format!("attempt {attempt} failed: {}", error.message),
                },
                message: format!("{}: {}", error.code, error.message),
            },
            backoff,
        };
    }
    let fault = Fault {
        code: error.code,
        message: format!(
            "attempt {attempt} failed: {}; retrying in {} ms",
            error.message,
            backoff.as_millis()
        ),
    };
    let next_backoff = (backoff * 2).min(BACKOFF_MAX);
    let left = deadline.map(|d| (d - now).to_std().unwrap_or(Duration::ZERO));
    let step = match left {
        Some(left) if left <= backoff => Step::UntilDeadline { fault, wait: left },
        _ => Step::Retry {
            fault,
            delay: backoff,
        },
    };
    Decision {
        step,
        backoff: next_backoff,
    }
}

/// The error that explains a failed attempt best: a final one over a
/// retryable one, and a side's own error over the `CANCELLED` it reports
/// after being told to abort.
pub(super) fn pick_error(
    source: Option<&AttemptError>,
    destination: Option<&AttemptError>,
) -> AttemptError {
    let mut errors: Vec<&AttemptError> = source.into_iter().chain(destination).collect();
    errors.sort_by_key(|e| (e.code == FaultCode::Cancelled, e.retryable));
    errors
        .first()
        .map(|e| (*e).clone())
        .unwrap_or_else(|| AttemptError {
            code: FaultCode::ProtocolError,
            message: "the attempt failed without an error".into(),
            retryable: true,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn failed(code: FaultCode, message: &str, retryable: bool) -> Attempt {
        Attempt::Failed {
            error: AttemptError {
                code,
                message: message.into(),
                retryable,
            },
            counters: TransferCounters::default(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn success_advances_and_resets_the_backoff() {
        let done = Attempt::Succeeded {
            counters: TransferCounters::default(),
            checksums: Vec::new(),
        };
        let decision = decide(&done, 4, ms(8_000), None, now());
        assert_eq!(
            decision,
            Decision {
                step: Step::NextItem,
                backoff: BACKOFF_INITIAL
            }
        );
    }

    #[test]
    fn a_retryable_failure_waits_the_backoff_and_doubles_it_up_to_the_maximum() {
        let reset = failed(FaultCode::ConnectionReset, "reset", true);
        let mut backoff = BACKOFF_INITIAL;
        let mut delays = Vec::new();
        for attempt in 1..=9 {
            let decision = decide(&reset, attempt, backoff, None, now());
            match decision.step {
                Step::Retry { delay, fault } => {
                    assert_eq!(fault.code, FaultCode::ConnectionReset);
                    assert_eq!(
                        fault.message,
                        format!(
                            "attempt {attempt} failed: reset; retrying in {} ms",
                            delay.as_millis()
                        )
                    );
                    delays.push(delay.as_millis());
                }
                other => panic!("expected a retry, got {other:?}"),
            }
            backoff = decision.backoff;
        }
        assert_eq!(
            delays,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
        );
        assert_eq!(backoff, BACKOFF_MAX);
    }

    #[test]
    fn a_retry_well_before_the_deadline_is_a_plain_retry() {
        let reset = failed(FaultCode::ConnectionReset, "reset", true);
        let deadline = now() + chrono::Duration::seconds(60);
        let decision = decide(&reset, 1, ms(2_000), Some(deadline), now());
        assert!(matches!(decision.step, Step::Retry { delay, .. } if delay == ms(2_000)));
        assert_eq!(decision.backoff, ms(4_000));
    }

    #[test]
    fn a_final_failure_fails_the_task_with_its_code() {
        let missing = failed(FaultCode::FileNotFound, "no such file: /a", false);
        let decision = decide(&missing, 2, ms(1_000), None, now());
        assert_eq!(
            decision.step,
            Step::Fail {
                fault: Fault {
                    code: FaultCode::FileNotFound,
                    message: "attempt 2 failed: no such file: /a".into(),
                },
                message: format!("{}: no such file: /a", FaultCode::FileNotFound),
            }
        );
        match decision.step {
            Step::Fail { message, .. } => assert!(message.starts_with("FILE_NOT_FOUND: ")),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_retry_past_the_deadline_ends_at_the_deadline() {
        let reset = failed(FaultCode::ConnectionReset, "reset", true);
        let deadline = now() + chrono::Duration::milliseconds(1_500);
        let decision = decide(&reset, 3, ms(4_000), Some(deadline), now());
        assert_eq!(
            decision.step,
            Step::UntilDeadline {
                fault: Fault {
                    code: FaultCode::ConnectionReset,
                    message: "attempt 3 failed: reset; retrying in 4000 ms".into(),
                },
                wait: ms(1_500),
            }
        );
        // Already past it: no wait at all.
        let late = decide(
            &reset,
            3,
            ms(4_000),
            Some(now() - chrono::Duration::seconds(1)),
            now(),
        );
        assert!(matches!(late.step, Step::UntilDeadline { wait, .. } if wait.is_zero()));
    }

    #[test]
    fn a_stop_ends_without_a_retry() {
        for stop in [Stop::Cancelled, Stop::Deadline] {
            let decision = decide(&Attempt::Stopped(stop), 1, ms(1_000), None, now());
            assert_eq!(
                decision,
                Decision {
                    step: Step::Stop(stop),
                    backoff: ms(1_000)
                }
            );
        }
    }

    #[test]
    fn a_final_error_explains_better_than_a_cancel() {
        let cancelled = AttemptError {
            code: FaultCode::Cancelled,
            message: "aborted".into(),
            retryable: true,
        };
        let missing = AttemptError {
            code: FaultCode::FileNotFound,
            message: "gone".into(),
            retryable: false,
        };
        assert_eq!(pick_error(Some(&missing), Some(&cancelled)), missing);
        assert_eq!(pick_error(Some(&cancelled), Some(&missing)), missing);
    }

    #[test]
    fn a_final_error_explains_better_than_a_retryable_one() {
        let reset = AttemptError {
            code: FaultCode::ConnectionReset,
            message: "reset".into(),
            retryable: true,
        };
        let denied = AttemptError {
            code: FaultCode::PermissionDenied,
            message: "denied".into(),
            retryable: false,
        };
        assert_eq!(pick_error(Some(&reset), Some(&denied)), denied);
        assert_eq!(pick_error(None, Some(&reset)), reset);
        assert_eq!(pick_error(None, None).code, FaultCode::ProtocolError);
    }
}
