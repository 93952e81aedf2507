//! The notify domain's error and its one mapping to the API's error: the
//! only place in notify that picks a status code.

use crate::error::ApiError;
use crate::store::StoreError;

/// Why a notifications request was refused. Each message names the field
/// or the thing, and the problem.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The request is malformed (400); the message starts with the field.
    #[error("{0}")]
    Invalid(String),
    /// No such webhook, or not the caller's (404).
    #[error("{0}")]
    NotFound(String),
    /// Over a limit (413).
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) type NotifyResult<T> = Result<T, NotifyError>;

impl From<NotifyError> for ApiError {
    fn from(err: NotifyError) -> Self {
        use lattice_protocol::ErrorCode;
        match err {
            NotifyError::Invalid(m) => ApiError::bad_request(m),
            NotifyError::NotFound(m) => ApiError::not_found(m),
            NotifyError::TooLarge(m) => ApiError::new(ErrorCode::PayloadTooLarge, m),
            NotifyError::Store(e) => e.into(),
        }
    }
}
