//! The flows domain's error and its one mapping to the API's error: the
//! only place in flows that picks a status code.

use crate::error::ApiError;
use crate::store::StoreError;

/// Why a flows request was refused. Each message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The request is malformed (400).
    #[error("{0}")]
    Invalid(String),
    /// The flow definition has errors (400, every problem listed).
    #[error("{message}")]
    Definition {
        message: String,
        problems: Vec<lattice_protocol::flows::DefinitionProblem>,
    },
    /// No such flow, run or action, or the caller may not know it exists (404).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Denied(String),
    /// The state does not allow it (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is over a limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// Something this needs is unavailable for now (503).
    #[error("{0}")]
    Unavailable(String),
    /// Another domain refused (its own status and message).
    #[error("{}", .0.message)]
    Api(ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type FlowResult<T> = Result<T, FlowError>;

impl From<ApiError> for FlowError {
    fn from(err: ApiError) -> Self {
        FlowError::Api(err)
    }
}

impl From<crate::sharing::SharingError> for FlowError {
    fn from(err: crate::sharing::SharingError) -> Self {
        FlowError::Api(err.into())
    }
}

impl From<crate::search::SearchServiceError> for FlowError {
    fn from(err: crate::search::SearchServiceError) -> Self {
        FlowError::Api(err.into())
    }
}

impl From<crate::compute::ComputeError> for FlowError {
    fn from(err: crate::compute::ComputeError) -> Self {
        FlowError::Api(err.into())
    }
}

impl FlowError {
    /// What a client is told (another domain's message as it wrote it).
    pub fn client_message(&self) -> String {
        match self {
            FlowError::Api(api) => api.message.clone(),
            other => other.to_string(),
        }
    }

    /// True for refusals a retry will not change (4xx): an action that
    /// fails this way is `ActionUnableToRun`; anything else is retried.
    pub fn is_permanent(&self) -> bool {
        match self {
            FlowError::Unavailable(_) | FlowError::Store(_) => false,
            FlowError::Api(e) => (400..500).contains(&e.code.http_status()),
            _ => true,
        }
    }
}

impl From<FlowError> for ApiError {
    fn from(err: FlowError) -> Self {
        use lattice_protocol::ErrorCode;
        match err {
            FlowError::Invalid(m) => ApiError::bad_request(m),
            FlowError::Definition { message, problems } => {
                let list: Vec<String> = problems
                    .iter()
                    .map(|p| match (p.state.is_empty(), p.field.is_empty()) {
                        (true, true) => p.message.clone(),
                        (false, true) => format!("{}: {}", p.state, p.message),
                        (true, false) => format!("{}: {}", p.field, p.message),
                        (false, false) => format!("{}.{}: {}", p.state, p.field, p.message),
                    })
                    .collect();
                ApiError::bad_request(format!("{message}: {}", list.join("; ")))
            }
            FlowError::NotFound(m) => ApiError::not_found(m),
            FlowError::Denied(m) => ApiError::forbidden(m),
            FlowError::Conflict(m) => ApiError::conflict(m),
            FlowError::TooLarge(m) => ApiError::new(ErrorCode::PayloadTooLarge, m),
            FlowError::Unavailable(m) => ApiError::new(ErrorCode::Unavailable, m),
            FlowError::Api(e) => e,
            FlowError::Store(e) => e.into(),
        }
    }
}
