//! `/v1/transfers` and `/v1/deletes`: managed transfer and delete tasks
//! between collections. The rules are in `crate::transfers::tasks`; the
//! runner drives the agents; data goes directly between the agents.

use axum::extract::State;
use axum::http::StatusCode;
use lattice_protocol::transfer::{DeleteSubmit, TransferEventInfo, TransferInfo, TransferSubmit};
use lattice_protocol::{ErrorBody, TransferId};
use serde::Deserialize;

use crate::auth::{Authorized, Transfer};
use crate::error::{ApiError, Json, Path, Query};
use crate::state::AppState;
use crate::transfers::tasks::{self, Submitted};

fn created(submitted: Submitted) -> (StatusCode, Json<TransferInfo>) {
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(submitted.info))
}

/// Submit a transfer task. With a `submission_id` the owner already used,
/// the first task is returned (200) instead of a new one (201).
#[utoipa::path(post, path = "/v1/transfers", tag = "transfers", security(("bearer" = ["transfer"])),
    request_body = TransferSubmit,
    responses((status = 201, body = TransferInfo), (status = 200, body = TransferInfo, description = "resubmission of a known submission id"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn submit(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Json(request): Json<TransferSubmit>,
) -> Result<(StatusCode, Json<TransferInfo>), ApiError> {
    Ok(created(tasks::submit(&state, &auth, request).await?))
}

/// Submit a delete task: the collection's agent deletes the paths in the
/// background (paused while it is offline, retried after faults); follow it
/// with `/v1/transfers/{id}` and its events. Same idempotency as transfers.
#[utoipa::path(post, path = "/v1/deletes", tag = "transfers", security(("bearer" = ["transfer"])),
    request_body = DeleteSubmit,
    responses((status = 201, body = TransferInfo), (status = 200, body = TransferInfo, description = "resubmission of a known submission id"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn submit_delete(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Json(request): Json<DeleteSubmit>,
) -> Result<(StatusCode, Json<TransferInfo>), ApiError> {
    Ok(created(tasks::submit_delete(&state, &auth, request).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ListParams {
    /// At most this many (newest first) [default: 100, max 1000].
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/transfers", tag = "transfers", security(("bearer" = ["transfer"])), params(ListParams),
    responses((status = 200, body = Vec<TransferInfo>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<TransferInfo>>, ApiError> {
    let limit = params.limit.unwrap_or(100);
    Ok(Json(tasks::list(&state, &auth, limit).await?))
}

/// One transfer task, with the checksum of every file it transferred.
#[utoipa::path(get, path = "/v1/transfers/{id}", tag = "transfers", security(("bearer" = ["transfer"])),
    params(("id" = TransferId, Path)),
    responses((status = 200, body = TransferInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(id): Path<TransferId>,
) -> Result<Json<TransferInfo>, ApiError> {
    Ok(Json(tasks::show(&state, &auth, id).await?))
}

/// Cancel a transfer that is not final; 409 if it already is.
#[utoipa::path(post, path = "/v1/transfers/{id}/cancel", tag = "transfers", security(("bearer" = ["transfer"])),
    params(("id" = TransferId, Path)),
    responses((status = 200, body = TransferInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(id): Path<TransferId>,
) -> Result<Json<TransferInfo>, ApiError> {
    Ok(Json(tasks::cancel(&state, &auth, id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct EventParams {
    /// Only events after this sequence number.
    after: Option<i64>,
    /// At most this many [default: 1000, max 10000].
    limit: Option<u32>,
}

/// Faults and status changes of a transfer, oldest first.
#[utoipa::path(get, path = "/v1/transfers/{id}/events", tag = "transfers", security(("bearer" = ["transfer"])),
    params(("id" = TransferId, Path), EventParams),
    responses((status = 200, body = Vec<TransferEventInfo>), (status = 404, body = ErrorBody)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    auth: Authorized<Transfer>,
    Path(id): Path<TransferId>,
    Query(params): Query<EventParams>,
) -> Result<Json<Vec<TransferEventInfo>>, ApiError> {
    let (after, limit) = (params.after.unwrap_or(0), params.limit.unwrap_or(1000));
    Ok(Json(tasks::events(&state, &auth, id, after, limit).await?))
}
