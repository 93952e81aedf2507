//! `GET /v1/stream`: authenticate, upgrade, hand the socket to
//! [`compute::session`](crate::compute::session).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use lattice_protocol::ErrorBody;

use crate::auth::{bearer_secret, hash_secret, Authorized, Compute};
use crate::compute::session;
use crate::error::ApiError;
use crate::state::AppState;

/// The session stream: submit batches and receive their results on one
/// WebSocket of JSON text frames ([`SessionRequest`] in, [`SessionEvent`] out).
#[utoipa::path(get, path = "/v1/stream", tag = "tasks", security(("bearer" = ["compute"])),
    responses((status = 101, description = "WebSocket: SessionRequest JSON frames in, SessionEvent JSON frames out"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn session(
    State(state): State<AppState>,
    auth: Authorized<Compute>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token_hash = hash_secret(bearer_secret(&headers)?);
    let caller = (*auth).clone();
    // Up to twice the body limit is read, so that a frame over the limit
    // gets an error naming its request rather than a closed connection.
    let hard_limit = state.config.max_body_bytes.saturating_mul(2);
    Ok(ws
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| session::run(state, caller, token_hash, socket)))
}
