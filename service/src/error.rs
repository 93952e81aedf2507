//! The one error type at the HTTP edge. 4xx say exactly what was wrong; a 5xx
//! tells the client only "internal error" plus a request id, and the real
//! error goes to the log under that id.

use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use lattice_protocol::{ErrorBody, ErrorCode};
use serde::de::DeserializeOwned;

use crate::store::StoreError;

tokio::task_local! {
    /// The id of the request being served, set by [`crate::app`]'s middleware.
    pub(crate) static REQUEST_ID: String;
}

/// An error answered to the client as `{"code", "message"}`.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For internal errors: what went wrong, for the log only.
    internal: Option<String>,
    /// Where in the request's text the problem is (see `ErrorBody::position`).
    position: Option<usize>,
    /// For 429: seconds until a retry may succeed (the `Retry-After` header).
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            internal: None,
            position: None,
            retry_after: None,
        }
    }

    /// A 400 that names where in the request's text the problem is.
    pub fn bad_request_at(message: impl Into<String>, position: Option<usize>) -> Self {
        Self {
            position,
            ..Self::bad_request(message)
        }
    }

    /// A 429 whose answer says when to retry.
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(ErrorCode::TooManyRequests, message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// An unexpected failure: the client sees "internal error", the log sees `detail`.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self {
            code: ErrorCode::Internal,
            message: "internal error".to_owned(),
            internal: Some(detail.to_string()),
            position: None,
            retry_after: None,
        }
    }
}

impl ApiError {
    /// What an internal error's client does not see, for the log.
    pub fn internal_detail(&self) -> Option<&str> {
        self.internal.as_deref()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(what) => ApiError::conflict(format!("{what} already exists")),
            StoreError::Open { .. }
            | StoreError::InUse { .. }
            | StoreError::Database(sqlx::Error::PoolTimedOut) => {
                tracing::error!(error = %err, "store unavailable");
                ApiError::unavailable("the store is unavailable; try again shortly")
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let request_id = REQUEST_ID.try_with(Clone::clone).ok();
        let mut body = ErrorBody {
            code: self.code,
            message: self.message,
            request_id: None,
            position: self.position,
        };
        if let Some(detail) = &self.internal {
            tracing::error!(request_id = request_id.as_deref().unwrap_or("-"), error = %detail, "internal error");
            body.request_id = request_id;
        }
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        response
    }
}

/// A JSON body extractor whose rejections are [`ApiError`]s: malformed JSON
/// and wrong types are 400 naming the field, too large is 413.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            "request body is larger than the configured limit",
        );
    }
    let message = match &rejection {
        JsonRejection::JsonDataError(e) => format!("invalid request body: {}", source_text(e)),
        JsonRejection::JsonSyntaxError(e) => format!("malformed JSON: {}", source_text(e)),
        JsonRejection::MissingJsonContentType(_) => {
            "expected a JSON body with `Content-Type: application/json`".to_owned()
        }
        other => other.body_text(),
    };
    ApiError::bad_request(message)
}

/// The innermost error message (serde's, which names the field and position).
fn source_text(err: &dyn std::error::Error) -> String {
    let mut current: &dyn std::error::Error = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// A body accepted as JSON or as a URL-encoded form (OAuth clients send forms).
#[derive(Debug, Clone)]
pub(crate) struct JsonOrForm<T>(pub T);

impl<T, S> FromRequest<S> for JsonOrForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            match axum::Form::<T>::from_request(req, state).await {
                Ok(axum::Form(value)) => Ok(JsonOrForm(value)),
                Err(FormRejection::BytesRejection(_)) => Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "request body is larger than the configured limit",
                )),
                Err(rejection) => Err(ApiError::bad_request(format!(
                    "invalid form body: {}",
                    source_text(&rejection)
                ))),
            }
        } else {
            Json::<T>::from_request(req, state)
                .await
                .map(|Json(v)| JsonOrForm(v))
        }
    }
}

/// Path parameters whose rejection (e.g. a malformed id) is a 400 [`ApiError`].
#[derive(Debug, Clone)]
pub(crate) struct Path<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::bad_request(
                format!("invalid path parameter: {}", e.body_text()),
            )),
            Err(other) => Err(ApiError::internal(other.body_text())),
        }
    }
}

/// Query parameters whose rejection is a 400 [`ApiError`].
#[derive(Debug, Clone)]
pub(crate) struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e: QueryRejection| {
                ApiError::bad_request(format!("invalid query string: {}", source_text(&e)))
            })
    }
}
