//! The search domain's error and its one mapping to the API's error: the
//! only place in search that picks a status code.

use lattice_search::SearchError;

use crate::error::ApiError;
use crate::store::StoreError;

/// Why a search request was refused. Each message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum SearchServiceError {
    /// The request is malformed (400); `position` is a byte offset into the
    /// query text for a syntax error.
    #[error("{message}")]
    Invalid {
        message: String,
        position: Option<usize>,
    },
    /// No such index or task, or the caller may not know it exists (404).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Denied(String),
    /// A token is needed (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The state does not allow it (409).
    #[error("{0}")]
    Conflict(String),
    /// The request body is over the limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// Too many requests from this identity (429).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// The search engine could not be opened (503).
    #[error("{0}")]
    Unavailable(String),
    /// The engine failed (500; logged, never shown raw).
    #[error("search engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SearchServiceError {
    pub fn invalid(message: impl Into<String>) -> Self {
        SearchServiceError::Invalid {
            message: message.into(),
            position: None,
        }
    }
}

impl From<SearchError> for SearchServiceError {
    fn from(err: SearchError) -> Self {
        match err {
            SearchError::Invalid { message, position } => {
                SearchServiceError::Invalid { message, position }
            }
            SearchError::UnknownIndex(id) => {
                SearchServiceError::NotFound(format!("search index {id} does not exist"))
            }
            SearchError::Engine(message) => SearchServiceError::Engine(message),
        }
    }
}

impl From<SearchServiceError> for ApiError {
    fn from(err: SearchServiceError) -> Self {
        use lattice_protocol::ErrorCode;
        match err {
            SearchServiceError::Invalid { message, position } => {
                ApiError::bad_request_at(message, position)
            }
            SearchServiceError::NotFound(m) => ApiError::not_found(m),
            SearchServiceError::Denied(m) => ApiError::forbidden(m),
            SearchServiceError::Unauthenticated(m) => ApiError::unauthorized(m),
            SearchServiceError::Conflict(m) => ApiError::conflict(m),
            SearchServiceError::TooLarge(m) => ApiError::new(ErrorCode::PayloadTooLarge, m),
            SearchServiceError::RateLimited {
                message,
                retry_after_secs,
            } => ApiError::too_many_requests(message, retry_after_secs),
            SearchServiceError::Unavailable(m) => ApiError::unavailable(m),
            SearchServiceError::Engine(m) => ApiError::internal(format!("search engine: {m}")),
            SearchServiceError::Store(e) => e.into(),
        }
    }
}

pub type SearchResult<T> = Result<T, SearchServiceError>;
