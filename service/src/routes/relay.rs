//! `GET /v1/agent/connect`: authenticate an agent by its endpoint's secret,
//! upgrade, hand the socket to [`compute::relay`](crate::compute::relay).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::response::Response;
use lattice_protocol::framing::MAX_FRAME_BYTES;
use lattice_protocol::ErrorBody;

use crate::compute::{endpoints, relay};
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /v1/agent/connect`: the agent channel (WebSocket, binary MessagePack
/// frames), authenticated by the endpoint's agent secret.
#[utoipa::path(get, path = "/v1/agent/connect", tag = "agents", security(("bearer" = [])),
    responses((status = 101, description = "agent channel"), (status = 401, body = ErrorBody)))]
pub(crate) async fn connect(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let secret = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized("the agent channel needs `Authorization: Bearer AGENT_SECRET`")
        })?;
    let endpoint = endpoints::endpoint_by_agent_secret(&state, secret.trim())
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown agent secret: re-register the endpoint (`lattice agent --name NAME` with a fresh state dir)"))?;
    Ok(ws
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| relay::run(state, endpoint, socket)))
}
