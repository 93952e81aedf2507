//! Tokens and who is calling.
//!
//! Tokens are opaque random strings (`lat_...`); only their SHA-256 hashes
//! are stored, so a copy of the database grants nothing. A 256-bit random
//! secret needs no slow password hash. Every route declares the scope it
//! needs through its extractor type: `Authorized<Compute>`, `Authorized<Manage>`...

pub mod oidc;
pub mod tokens;

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use lattice_protocol::api::Scope;
use lattice_protocol::{ClientId, IdentityId, TokenId};

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::TokenKind;

pub use tokens::{hash_secret, new_secret};

/// The identity and token behind a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub identity_id: IdentityId,
    pub token_id: TokenId,
    pub family_id: TokenId,
    pub scopes: Vec<Scope>,
    pub expires_at: DateTime<Utc>,
    /// The client application the token was issued to, if any (for the
    /// audit trail).
    pub client_id: Option<ClientId>,
}

impl Caller {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A scope a route requires, as a type.
pub trait RequiredScope: Send + Sync + 'static {
    /// `None`: any valid token will do.
    const SCOPE: Option<Scope>;
}

/// Any valid token.
pub struct AnyScope;
/// The `compute` scope.
pub struct Compute;
/// The `transfer` scope.
pub struct Transfer;
/// The `manage` scope.
pub struct Manage;

impl RequiredScope for AnyScope {
    const SCOPE: Option<Scope> = None;
}
impl RequiredScope for Compute {
    const SCOPE: Option<Scope> = Some(Scope::Compute);
}
impl RequiredScope for Transfer {
    const SCOPE: Option<Scope> = Some(Scope::Transfer);
}
impl RequiredScope for Manage {
    const SCOPE: Option<Scope> = Some(Scope::Manage);
}

/// Extractor: a caller whose token is valid and holds scope `R`.
/// Missing, unknown, expired or revoked tokens are 401; a missing scope is 403.
pub struct Authorized<R: RequiredScope> {
    pub caller: Caller,
    _scope: PhantomData<R>,
}

impl<R: RequiredScope> std::ops::Deref for Authorized<R> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl<R: RequiredScope> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = bearer_secret(&parts.headers)?;
        let caller = authenticate(state, secret).await?;
        if let Some(scope) = R::SCOPE {
            if !caller.has_scope(scope) {
                return Err(ApiError::forbidden(format!(
                    "this token lacks the `{scope}` scope (it has: {})",
                    Scope::join(&caller.scopes)
                )));
            }
        }
        Ok(Self {
            caller,
            _scope: PhantomData,
        })
    }
}

/// Extractor for routes that also serve anonymous callers (what is shared
/// with `public`): no `Authorization` header gives `None`; a header that is
/// present must hold a valid token with scope `R`, as for [`Authorized`].
pub struct MaybeAuthorized<R: RequiredScope>(pub Option<Authorized<R>>);

impl<R: RequiredScope> FromRequestParts<AppState> for MaybeAuthorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !parts.headers.contains_key(AUTHORIZATION) {
            return Ok(Self(None));
        }
        Authorized::from_request_parts(parts, state)
            .await
            .map(|a| Self(Some(a)))
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer_secret(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "missing bearer token: send `Authorization: Bearer TOKEN` (run `lattice login` to get one)",
            )
        })?
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Authorization header must be `Bearer TOKEN`"))
}

/// Resolves an access token to its caller.
pub async fn authenticate(state: &AppState, secret: &str) -> Result<Caller, ApiError> {
    authenticate_hashed(state, &hash_secret(secret)).await
}

/// [`authenticate`] with the token's hash, for long-lived connections that
/// check their token again (expiry, revocation) without keeping the secret.
pub async fn authenticate_hashed(state: &AppState, token_hash: &str) -> Result<Caller, ApiError> {
    let record = state
        .store
        .token_by_hash(token_hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown token: run `lattice login` again"))?;
    if record.kind != TokenKind::Access {
        return Err(ApiError::unauthorized(
            "a refresh token cannot authorize requests; exchange it at /v1/auth/token",
        ));
    }
    if record.revoked_at.is_some() {
        return Err(ApiError::unauthorized(
            "token revoked: run `lattice login` again",
        ));
    }
    if record.expires_at <= Utc::now() {
        return Err(ApiError::unauthorized(format!(
            "token expired at {}: refresh it or run `lattice login` again",
            record.expires_at.to_rfc3339()
        )));
    }
    Ok(Caller {
        identity_id: record.identity_id,
        token_id: record.id,
        family_id: record.family_id,
        scopes: record.scopes,
        expires_at: record.expires_at,
        client_id: record.client_id,
    })
}
