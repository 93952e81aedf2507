//! `/v1/timers`: timers and the record of their ticks. Handlers extract,
//! call `crate::timers::api`, and map its error.

use axum::extract::State;
use axum::http::StatusCode;
use lattice_protocol::timers::{
    TimerCreate, TimerInfo, TimerList, TimerRunList, TimerStatus, TimerUpdate,
};
use lattice_protocol::{ErrorBody, TimerId};
use serde::Deserialize;

use crate::auth::{AnyScope, Authorized};
use crate::error::{ApiError, Json, Path, Query};
use crate::state::AppState;
use crate::timers::api;

/// Create a timer that starts a transfer, a task batch or a flow run once
/// or every interval, acting as the caller (whose token must hold the
/// scope of what it starts).
#[utoipa::path(post, path = "/v1/timers", tag = "timers", security(("bearer" = [])),
    request_body = TimerCreate,
    responses((status = 201, body = TimerInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Json(request): Json<TimerCreate>,
) -> Result<(StatusCode, Json<TimerInfo>), ApiError> {
    let timer = api::create(&state, &auth, request).await?;
    Ok((StatusCode::CREATED, Json(timer)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ListParams {
    /// Comma-separated statuses (`active,inactive,ended,deleted`); default
    /// every one but `deleted`.
    status: Option<String>,
    /// Only timers whose name contains this (case-insensitive).
    name: Option<String>,
}

/// The caller's timers, newest first.
#[utoipa::path(get, path = "/v1/timers", tag = "timers", security(("bearer" = [])),
    params(ListParams),
    responses((status = 200, body = TimerList), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Query(params): Query<ListParams>,
) -> Result<Json<TimerList>, ApiError> {
    let mut statuses = Vec::new();
    for s in params.status.iter().flat_map(|s| s.split(',')) {
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        let status: TimerStatus = serde_json::from_value(serde_json::Value::String(s.into()))
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "status: `{s}` is not one of active, inactive, ended, deleted"
                ))
            })?;
        statuses.push(status);
    }
    let query = api::ListQuery {
        statuses,
        name: params.name,
    };
    Ok(Json(api::list(&state, &auth, query).await?))
}

/// A timer (its owner only; 404 to anyone else).
#[utoipa::path(get, path = "/v1/timers/{id}", tag = "timers", security(("bearer" = [])),
    params(("id" = TimerId, Path)),
    responses((status = 200, body = TimerInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<TimerId>,
) -> Result<Json<TimerInfo>, ApiError> {
    Ok(Json(api::show(&state, &auth, id).await?))
}

/// Rename a timer.
#[utoipa::path(patch, path = "/v1/timers/{id}", tag = "timers", security(("bearer" = [])),
    params(("id" = TimerId, Path)), request_body = TimerUpdate,
    responses((status = 200, body = TimerInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<TimerId>,
    Json(request): Json<TimerUpdate>,
) -> Result<Json<TimerInfo>, ApiError> {
    Ok(Json(api::update(&state, &auth, id, request).await?))
}

/// Delete a timer: it never ticks again; what it started goes on.
#[utoipa::path(delete, path = "/v1/timers/{id}", tag = "timers", security(("bearer" = [])),
    params(("id" = TimerId, Path)),
    responses((status = 200, body = TimerInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<TimerId>,
) -> Result<Json<TimerInfo>, ApiError> {
    Ok(Json(api::delete(&state, &auth, id).await?))
}

/// Pause a timer (status `inactive`, cause `user`).
#[utoipa::path(post, path = "/v1/timers/{id}/pause", tag = "timers", security(("bearer" = [])),
    params(("id" = TimerId, Path)),
    responses((status = 200, body = TimerInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<TimerId>,
) -> Result<Json<TimerInfo>, ApiError> {
    Ok(Json(api::pause(&state, &auth, id).await?))
}

/// Resume a timer; a tick missed while it was inactive runs once, now.
#[utoipa::path(post, path = "/v1/timers/{id}/resume", tag = "timers", security(("bearer" = [])),
    params(("id" = TimerId, Path)),
    responses((status = 200, body = TimerInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<TimerId>,
) -> Result<Json<TimerInfo>, ApiError> {
    Ok(Json(api::resume(&state, &auth, id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct RunsParams {
    /// Only ticks with a smaller seq (the previous page's `next_before`).
    before: Option<u64>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<u32>,
}

/// The timer's ticks, newest first: when each was due and ran, what it
/// started, and how that ended (or why it was skipped or failed).
#[utoipa::path(get, path = "/v1/timers/{id}/runs", tag = "timers", security(("bearer" = [])),
    params(("id" = TimerId, Path), RunsParams),
    responses((status = 200, body = TimerRunList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn runs(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<TimerId>,
    Query(params): Query<RunsParams>,
) -> Result<Json<TimerRunList>, ApiError> {
    Ok(Json(
        api::runs(&state, &auth, id, params.before, params.limit).await?,
    ))
}
