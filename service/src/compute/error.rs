//! The compute domain's error, and its one mapping to the HTTP edge.
//!
//! Domain functions say *what kind* of refusal it is and, in words, *why*;
//! they never choose a status code. [`ApiError`]'s `From<ComputeError>`
//! below is the only place that does, so a route handler maps with `?`.

use lattice_protocol::ErrorCode;

use crate::error::ApiError;
use crate::store::StoreError;

/// Why a compute operation was refused or failed. The message is the one
/// the client sees (for [`ComputeError::Store`], the store's error, which
/// the edge logs and hides).
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// A request that can never succeed as given (400).
    #[error("{0}")]
    Invalid(String),
    /// A request over a configured size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The function, endpoint, task or batch does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// It exists but the caller may not use it (403).
    #[error("{0}")]
    Forbidden(String),
    /// The state of the thing forbids it now, e.g. cancelling a finished task (409).
    #[error("{0}")]
    Conflict(String),
    /// A dependency (the task queue) is unavailable; nothing was done (503).
    #[error("{0}")]
    Unavailable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An invariant did not hold (e.g. a row vanished mid-request).
    #[error("{0}")]
    Internal(String),
}

pub(crate) type ComputeResult<T> = Result<T, ComputeError>;

impl From<ComputeError> for ApiError {
    fn from(err: ComputeError) -> Self {
        match err {
            ComputeError::Invalid(message) => ApiError::bad_request(message),
            ComputeError::TooLarge(message) => ApiError::new(ErrorCode::PayloadTooLarge, message),
            ComputeError::NotFound(message) => ApiError::not_found(message),
            ComputeError::Forbidden(message) => ApiError::forbidden(message),
            ComputeError::Conflict(message) => ApiError::conflict(message),
            ComputeError::Unavailable(message) => ApiError::unavailable(message),
            ComputeError::Store(e) => e.into(),
            ComputeError::Internal(detail) => ApiError::internal(detail),
        }
    }
}

/// The sharing domain's answers, as compute refusals (grants on functions
/// and endpoints are decided there).
impl From<crate::sharing::SharingError> for ComputeError {
    fn from(err: crate::sharing::SharingError) -> Self {
        use crate::sharing::SharingError as S;
        match err {
            S::Invalid(m) => ComputeError::Invalid(m),
            S::NotFound(m) => ComputeError::NotFound(m),
            S::Denied(m) | S::Unauthenticated(m) => ComputeError::Forbidden(m),
            S::Conflict(m) => ComputeError::Conflict(m),
            S::Store(e) => ComputeError::Store(e),
        }
    }
}
