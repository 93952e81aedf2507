use axum::extract::State;
use lattice_protocol::api::Health;

use crate::error::{ApiError, Json};
use crate::state::AppState;

/// Liveness and store reachability. Needs no token.
#[utoipa::path(get, path = "/v1/health", tag = "service",
    responses((status = 200, body = Health), (status = 503, body = lattice_protocol::ErrorBody)))]
pub(crate) async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::error!(error = %e, "health check: store unreachable");
        ApiError::unavailable("the store is unreachable")
    })?;
    Ok(Json(Health {
        status: "ok".into(),
        version: lattice_protocol::VERSION.into(),
        store: state.store.kind().into(),
    }))
}
