//! What an attempt came to, and what the runner does next: the pure part of
//! the runner.
//!
//! Owns the attempt outcome ([`Attempt`], [`Stop`]), the backoff bounds,
//! and the choice of the error that explains a failed attempt
//! ([`pick_error`]).
//!
//! Must not do I/O: no store, no agents, no tokio, no clock of its own (the
//! time is passed in), so that every rule here is unit-tested.

use std::time::Duration;

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
