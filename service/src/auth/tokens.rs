//! Minting, rotating and revoking tokens.

use base64::Engine;
use chrono::{Duration, Utc};
use lattice_protocol::api::{Identity, Scope, TokenResponse};
use lattice_protocol::{ClientId, IdentityId, TokenId};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::store::{SharedStore, TokenKind, TokenRecord};

/// A new random secret: `prefix` + 256 bits, base64url. The prefix lets
/// secret scanners recognise leaked Lattice tokens.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Options for [`issue`].
pub struct Issue {
    pub identity_id: IdentityId,
    pub scopes: Vec<Scope>,
    pub access_ttl: Duration,
    /// With a refresh token of this lifetime.
    pub refresh_ttl: Option<Duration>,
    /// Continue an existing family (refresh rotation) or start a new one.
    pub family_id: Option<TokenId>,
    pub client_id: Option<ClientId>,
}

/// Stores a new access token (and refresh token) and returns the secrets.
pub async fn issue(store: &SharedStore, issue: Issue) -> Result<TokenResponse, ApiError> {
    let now = Utc::now();
    let family_id = issue.family_id.unwrap_or_default();
    let access_token = new_secret("lat_at_");
    store
        .insert_token(&TokenRecord {
            id: TokenId::new(),
            token_hash: hash_secret(&access_token),
            kind: TokenKind::Access,
            identity_id: issue.identity_id,
            scopes: issue.scopes.clone(),
            family_id,
            client_id: issue.client_id,
            created_at: now,
            expires_at: now + issue.access_ttl,
            used_at: None,
            revoked_at: None,
        })
        .await?;
    let refresh_token = match issue.refresh_ttl {
        Some(ttl) => {
            let secret = new_secret("lat_rt_");
            store
                .insert_token(&TokenRecord {
                    id: TokenId::new(),
                    token_hash: hash_secret(&secret),
                    kind: TokenKind::Refresh,
                    identity_id: issue.identity_id,
                    scopes: issue.scopes.clone(),
                    family_id,
                    client_id: issue.client_id,
                    created_at: now,
                    expires_at: now + ttl,
                    used_at: None,
                    revoked_at: None,
                })
                .await?;
            Some(secret)
        }
        None => None,
    };
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_in: issue.access_ttl.num_seconds(),
        refresh_token,
        scope: Scope::join(&issue.scopes),
    })
}

/// Exchanges a refresh token for a new pair. The old refresh token is spent;
/// presenting it again revokes the whole family (a stolen token was replayed).
pub async fn rotate(
    store: &SharedStore,
    refresh_secret: &str,
    access_ttl: Duration,
    refresh_ttl: Duration,
) -> Result<TokenResponse, ApiError> {
    let record = store
        .token_by_hash(&hash_secret(refresh_secret))
        .await?
        .filter(|t| t.kind == TokenKind::Refresh)
        .ok_or_else(|| {
            ApiError::unauthorized("unknown refresh token: run `lattice login` again")
        })?;
    if record.revoked_at.is_some() {
        return Err(ApiError::unauthorized(
            "refresh token revoked: run `lattice login` again",
        ));
    }
    if record.expires_at <= Utc::now() {
        return Err(ApiError::unauthorized(
            "refresh token expired: run `lattice login` again",
        ));
    }
    if !store.mark_token_used(record.id, Utc::now()).await? {
        let revoked = store
            .revoke_token_family(record.family_id, Utc::now())
            .await?;
        tracing::warn!(
            identity_id = %record.identity_id,
            family_id = %record.family_id,
            revoked,
            "reuse of a rotated refresh token; revoked its token family"
        );
        return Err(ApiError::unauthorized(
            "refresh token already used: all tokens of this login were revoked; run `lattice login` again",
        ));
    }
    issue(
        store,
        Issue {
            identity_id: record.identity_id,
            scopes: record.scopes,
            access_ttl,
            refresh_ttl: Some(refresh_ttl),
            family_id: Some(record.family_id),
            client_id: record.client_id,
        },
    )
    .await
}

/// Revokes the token with this secret. Revoking a refresh token revokes the
/// whole login (its family). Unknown tokens are ignored (RFC 7009).
pub async fn revoke(store: &SharedStore, secret: &str) -> Result<bool, ApiError> {
    let Some(record) = store.token_by_hash(&hash_secret(secret)).await? else {
        return Ok(false);
    };
    match record.kind {
        TokenKind::Refresh => {
            store
                .revoke_token_family(record.family_id, Utc::now())
                .await?;
        }
        TokenKind::Access => store.revoke_token(record.id, Utc::now()).await?,
    }
    Ok(true)
}

/// Creates (once) the local identity `lattice dev` runs as and mints it a
/// long-lived token with every scope.
pub async fn bootstrap_local_identity(
    store: &SharedStore,
    username: &str,
    ttl: Duration,
) -> Result<(Identity, TokenResponse), ApiError> {
    let identity = match store.identity_by_subject("local", username).await? {
        Some(identity) => identity,
        None => {
            let identity = Identity {
                id: IdentityId::new(),
                username: username.to_owned(),
                display_name: Some(format!("{username} (local development identity)")),
                email: None,
                identity_provider: "local".into(),
                subject: username.to_owned(),
                created_at: Utc::now(),
            };
            store.insert_identity(&identity).await?;
            identity
        }
    };
    let token = issue(
        store,
        Issue {
            identity_id: identity.id,
            scopes: Scope::ALL.to_vec(),
            access_ttl: ttl,
            refresh_ttl: None,
            family_id: None,
            client_id: None,
        },
    )
    .await?;
    Ok((identity, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_hashed() {
        let a = new_secret("lat_at_");
        let b = new_secret("lat_at_");
        assert!(a.starts_with("lat_at_"));
        assert_ne!(a, b);
        assert_eq!(a.len(), "lat_at_".len() + 43);
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert_eq!(hash_secret(&a), hash_secret(&a));
    }
}
