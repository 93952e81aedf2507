use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::Utc;
use lattice_protocol::api::{
    LoginStartRequest, LoginStartResponse, RevokeRequest, Scope, TokenRequest, TokenResponse,
    WhoAmI,
};
use lattice_protocol::{ErrorBody, ErrorCode};
use serde::Deserialize;

use crate::auth::tokens::{self, Issue};
use crate::auth::{hash_secret, AnyScope, Authorized};
use crate::error::{ApiError, Json, JsonOrForm, Query};
use crate::state::AppState;

/// Start a federated login. Open `authorize_url` in a browser, then redeem
/// `device_code` at `/v1/auth/token`.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginStartRequest,
    responses((status = 200, body = LoginStartResponse), (status = 404, body = ErrorBody, description = "no identity provider configured"),
              (status = 503, body = ErrorBody, description = "identity provider unreachable")))]
pub(crate) async fn login_start(
    State(state): State<AppState>,
    Json(request): Json<LoginStartRequest>,
) -> Result<Json<LoginStartResponse>, ApiError> {
    let started = state.oidc.start(&state.store, request.redirect_uri).await?;
    Ok(Json(started))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct CallbackParams {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Where the identity provider sends the browser after login.
#[utoipa::path(get, path = "/v1/auth/oidc/callback", tag = "auth", params(CallbackParams),
    responses((status = 200, description = "login finished; return to the terminal"),
              (status = 303, description = "redirect to the CLI's loopback listener"),
              (status = 400, body = ErrorBody)))]
pub(crate) async fn login_callback(
    State(state): State<AppState>,
    Query(params): Query<CallbackParams>,
) -> Result<Response, ApiError> {
    let csrf_state = params
        .state
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("missing `state` parameter"))?;
    let provider_error = params
        .error
        .as_deref()
        .map(|e| match &params.error_description {
            Some(d) => format!("{e}: {d}"),
            None => e.to_owned(),
        });
    let (login, outcome) = state
        .oidc
        .callback(
            &state.store,
            csrf_state,
            params.code.as_deref(),
            provider_error.as_deref(),
        )
        .await?;
    if let Some(redirect) = login.redirect_uri {
        let mut target = url::Url::parse(&redirect).map_err(ApiError::internal)?;
        target
            .query_pairs_mut()
            .append_pair("login_id", &login.id.to_string())
            .append_pair("status", if outcome.is_ok() { "ok" } else { "error" });
        return Ok(Redirect::to(target.as_str()).into_response());
    }
    let page = match outcome {
        Ok(_) => "<!doctype html><title>Lattice</title><p>Login complete. You can close this window and return to your terminal.</p>".to_owned(),
        Err(e) => format!(
            "<!doctype html><title>Lattice</title><p>Login failed: {}</p>",
            html_escape(&e)
        ),
    };
    Ok(Html(page).into_response())
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The token endpoint: refresh-token rotation, client credentials, and
/// redemption of a federated login's device code. Accepts JSON or a form.
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", request_body = TokenRequest,
    responses((status = 200, body = TokenResponse),
              (status = 400, body = ErrorBody, description = "`authorization_pending` while the browser part of a login is unfinished"),
              (status = 401, body = ErrorBody)))]
pub(crate) async fn token(
    State(state): State<AppState>,
    JsonOrForm(request): JsonOrForm<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let response = match request {
        TokenRequest::RefreshToken { refresh_token } => {
            tokens::rotate(
                &state.store,
                &refresh_token,
                state.access_ttl(),
                state.refresh_ttl(),
            )
            .await?
        }
        TokenRequest::ClientCredentials {
            client_id,
            client_secret,
            scope,
        } => {
            let client = state
                .store
                .client(client_id)
                .await?
                .filter(|c| c.secret_hash == hash_secret(&client_secret))
                .ok_or_else(|| ApiError::unauthorized("invalid client id or secret"))?;
            let scopes = match scope.filter(|s| !s.trim().is_empty()) {
                None => client.scopes.clone(),
                Some(text) => {
                    let requested = Scope::parse_list(&text)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?;
                    if let Some(extra) = requested.iter().find(|s| !client.scopes.contains(s)) {
                        return Err(ApiError::forbidden(format!(
                            "client {} may not request the `{extra}` scope",
                            client.id
                        )));
                    }
                    requested
                }
            };
            tokens::issue(
                &state.store,
                Issue {
                    identity_id: client.identity_id,
                    scopes,
                    access_ttl: state.access_ttl(),
                    refresh_ttl: None,
                    family_id: None,
                    client_id: Some(client.id),
                },
            )
            .await?
        }
        TokenRequest::DeviceCode { device_code } => redeem_login(&state, &device_code).await?,
    };
    Ok(Json(response))
}

async fn redeem_login(state: &AppState, device_code: &str) -> Result<TokenResponse, ApiError> {
    let login = state
        .store
        .login_by_device_code(&hash_secret(device_code))
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized("unknown device code: start again with `lattice login`")
        })?;
    if login.redeemed_at.is_some() {
        return Err(ApiError::unauthorized("this login was already redeemed"));
    }
    if login.expires_at <= Utc::now() {
        return Err(ApiError::unauthorized(
            "this login expired: start again with `lattice login`",
        ));
    }
    if let Some(error) = login.error {
        return Err(ApiError::unauthorized(format!("login failed: {error}")));
    }
    let Some(identity_id) = login.identity_id else {
        return Err(ApiError::new(
            ErrorCode::AuthorizationPending,
            "waiting for the login to be completed in the browser",
        ));
    };
    if !state.store.redeem_login(login.id, Utc::now()).await? {
        return Err(ApiError::unauthorized("this login was already redeemed"));
    }
    tokens::issue(
        &state.store,
        Issue {
            identity_id,
            scopes: Scope::ALL.to_vec(),
            access_ttl: state.access_ttl(),
            refresh_ttl: Some(state.refresh_ttl()),
            family_id: None,
            client_id: None,
        },
    )
    .await
}

/// Revoke a token. Revoking a refresh token ends the whole login. Unknown
/// tokens are accepted silently (RFC 7009).
#[utoipa::path(post, path = "/v1/auth/revoke", tag = "auth", request_body = RevokeRequest,
    responses((status = 204, description = "revoked (or unknown)")))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    JsonOrForm(request): JsonOrForm<RevokeRequest>,
) -> Result<StatusCode, ApiError> {
    tokens::revoke(&state.store, &request.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the token belongs to.
#[utoipa::path(get, path = "/v1/auth/whoami", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub(crate) async fn whoami(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
) -> Result<Json<WhoAmI>, ApiError> {
    let identity = state
        .store
        .identity(auth.identity_id)
        .await?
        .ok_or_else(|| ApiError::internal("token refers to a missing identity"))?;
    let primary = state.store.primary_identity(identity.id).await?;
    let linked_identities = state
        .store
        .linked_identities(primary)
        .await?
        .into_iter()
        .filter(|i| i.id != identity.id)
        .collect();
    Ok(Json(WhoAmI {
        identity,
        linked_identities,
        scopes: auth.scopes.clone(),
        token_expires_at: auth.expires_at,
    }))
}
