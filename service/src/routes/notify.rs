//! `/v1/notifications/preferences` and `/v1/webhooks`: what the caller is
//! told by email, and their webhooks with the delivery log. Handlers
//! extract, call `crate::notify`, and map its error.

use axum::extract::State;
use axum::http::StatusCode;
use lattice_protocol::notify::{
    DeliveryInfo, DeliveryList, NotifyPreferences, PreferencesUpdate, WebhookCreate, WebhookInfo,
    WebhookList,
};
use lattice_protocol::{ErrorBody, WebhookId};

use crate::auth::{AnyScope, Authorized};
use crate::error::{ApiError, Json, Path};
use crate::notify::{preferences, webhooks};
use crate::state::AppState;

/// The caller's notification preferences: the event kinds sent by email
/// (defaults until set), where email goes, and whether the service sends
/// email at all.
#[utoipa::path(get, path = "/v1/notifications/preferences", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = NotifyPreferences), (status = 401, body = ErrorBody)))]
pub(crate) async fn show_preferences(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
) -> Result<Json<NotifyPreferences>, ApiError> {
    Ok(Json(preferences::show(&state, &auth).await?))
}

/// Replace the event kinds sent to the caller by email.
#[utoipa::path(put, path = "/v1/notifications/preferences", tag = "notifications", security(("bearer" = [])),
    request_body = PreferencesUpdate,
    responses((status = 200, body = NotifyPreferences), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn update_preferences(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Json(request): Json<PreferencesUpdate>,
) -> Result<Json<NotifyPreferences>, ApiError> {
    Ok(Json(preferences::update(&state, &auth, request).await?))
}

/// Create a webhook: each event of the kinds named is POSTed to the URL as
/// signed JSON. The answer carries the signing secret, the only time it is
/// shown.
#[utoipa::path(post, path = "/v1/webhooks", tag = "notifications", security(("bearer" = [])),
    request_body = WebhookCreate,
    responses((status = 201, body = WebhookInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(crate) async fn create_webhook(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Json(request): Json<WebhookCreate>,
) -> Result<(StatusCode, Json<WebhookInfo>), ApiError> {
    let webhook = webhooks::create(&state, &auth, request).await?;
    Ok((StatusCode::CREATED, Json(webhook)))
}

/// The caller's webhooks (without their secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = WebhookList), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_webhooks(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
) -> Result<Json<WebhookList>, ApiError> {
    Ok(Json(webhooks::list(&state, &auth).await?))
}

/// One of the caller's webhooks (404 for anyone else's).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = WebhookId, Path)),
    responses((status = 200, body = WebhookInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn show_webhook(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<WebhookId>,
) -> Result<Json<WebhookInfo>, ApiError> {
    Ok(Json(webhooks::show(&state, &auth, id).await?))
}

/// Delete one of the caller's webhooks with its delivery log.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = WebhookId, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_webhook(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<WebhookId>,
) -> Result<StatusCode, ApiError> {
    webhooks::delete(&state, &auth, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook's newest deliveries (up to 100), each with its attempts and
/// the receiver's answers.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "notifications", security(("bearer" = [])),
    params(("id" = WebhookId, Path)),
    responses((status = 200, body = DeliveryList), (status = 404, body = ErrorBody)))]
pub(crate) async fn webhook_deliveries(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<WebhookId>,
) -> Result<Json<DeliveryList>, ApiError> {
    Ok(Json(webhooks::deliveries(&state, &auth, id).await?))
}

/// Queue a `ping` event to the webhook (subscribed or not), to check the
/// receiver and its signature check.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "notifications", security(("bearer" = [])),
    params(("id" = WebhookId, Path)),
    responses((status = 202, body = DeliveryInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn test_webhook(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<WebhookId>,
) -> Result<(StatusCode, Json<DeliveryInfo>), ApiError> {
    let delivery = webhooks::test(&state, &auth, id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}
