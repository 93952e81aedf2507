//! The timers domain's error and its one mapping to the API's error: the
//! only place in timers that picks a status code.

use crate::error::ApiError;
use crate::store::StoreError;

/// Why a timers request was refused. Each message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    /// The request is malformed (400).
    #[error("{0}")]
    Invalid(String),
    /// No such timer, or the caller may not know it exists (404).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Denied(String),
    /// The timer's state does not allow it (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is over a limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// Another domain refused (its own status and message).
    #[error("{}", .0.message)]
    Api(ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type TimerResult<T> = Result<T, TimerError>;

impl From<crate::flows::FlowError> for TimerError {
    fn from(err: crate::flows::FlowError) -> Self {
        TimerError::Api(err.into())
    }
}

impl From<TimerError> for ApiError {
    fn from(err: TimerError) -> Self {
        use lattice_protocol::ErrorCode;
        match err {
            TimerError::Invalid(m) => ApiError::bad_request(m),
            TimerError::NotFound(m) => ApiError::not_found(m),
            TimerError::Denied(m) => ApiError::forbidden(m),
            TimerError::Conflict(m) => ApiError::conflict(m),
            TimerError::TooLarge(m) => ApiError::new(ErrorCode::PayloadTooLarge, m),
            TimerError::Api(e) => e,
            TimerError::Store(e) => e.into(),
        }
    }
}
