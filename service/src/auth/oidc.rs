//! Federated login through an OpenID Connect provider (authorization code
//! flow with PKCE), with the service as the relying party.
//!
//! `POST /v1/auth/login` records a pending login (CSRF state, nonce, PKCE
//! verifier, and the hash of a device code that only the CLI knows) and
//! returns the provider's authorization URL. The provider redirects the
//! browser to `/v1/auth/oidc/callback`, where the code is exchanged and the
//! ID token validated (issuer, audience, nonce, signature against the
//! provider's JWKS). The CLI then redeems its device code for tokens; the
//! browser never carries a Lattice token. Identities are keyed by
//! (issuer, subject), never by email.

use chrono::{Duration, Utc};
use lattice_protocol::api::{Identity, LoginStartResponse};
use lattice_protocol::{IdentityId, LoginId};
use openidconnect::core::{
    CoreClient, CoreIdToken, CoreIdTokenClaims, CoreIdTokenVerifier, CoreProviderMetadata,
    CoreResponseType,
};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope as OidcScope, TokenResponse as _,
};
use tokio::sync::OnceCell;

use super::tokens::{hash_secret, new_secret};
use crate::config::OidcConfig;
use crate::error::ApiError;
use crate::store::{LoginRecord, SharedStore};

/// How long a started login may take.
pub const LOGIN_TTL_SECS: i64 = 600;
/// Suggested delay between device-code polls.
pub const POLL_INTERVAL_SECS: i64 = 1;

type ProviderClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a login failed, for the user and the log.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("federated login is not configured on this service (set oidc.issuer, oidc.client_id and oidc.client_secret)")]
    NotConfigured,
    #[error("identity provider {issuer} is unreachable or misconfigured: {detail}")]
    Discovery { issuer: String, detail: String },
    #[error("the identity provider refused the code exchange: {0}")]
    Exchange(String),
    #[error("the identity provider returned no ID token")]
    MissingIdToken,
    #[error("ID token refused: {0}")]
    InvalidIdToken(#[from] openidconnect::ClaimsVerificationError),
}

/// The provider-facing half of login; discovery happens on first use and is
/// retried until it succeeds.
pub struct OidcLogin {
    config: Option<OidcConfig>,
    redirect_url: String,
    http: reqwest::Client,
    client: OnceCell<ProviderClient>,
}

/// The claims Lattice keeps from a validated ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLogin {
    pub issuer: String,
    pub subject: String,
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// Whether the provider vouches for `email` (`email_verified`): only a
    /// verified address claims group invitations sent to it.
    pub email_verified: bool,
}

impl OidcLogin {
    pub fn new(config: Option<OidcConfig>, public_url: &url::Url) -> Self {
        let redirect_url = public_url
            .join("v1/auth/oidc/callback")
            .map(|u| u.to_string())
            .unwrap_or_else(|_| format!("{public_url}v1/auth/oidc/callback"));
        let mut http = reqwest::Client::builder()
            // Following redirects from the provider would open the service to SSRF.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(15));
        // The provider is often a site's own, signed by its private CA.
        match lattice_tls::process_trust() {
            Ok(trust) => http = http.use_preconfigured_tls((*trust.client_config()).clone()),
            Err(e) => {
                tracing::error!(error = %e, "OpenID Connect: using the bundled public roots only")
            }
        }
        let http = http.build().expect("reqwest client with static settings");
        Self {
            config,
            redirect_url,
            http,
            client: OnceCell::new(),
        }
    }

    pub fn is_configured(&self) -> bool {
        self.config.is_some()
    }

    async fn client(&self) -> Result<&ProviderClient, LoginError> {
        let config = self.config.as_ref().ok_or(LoginError::NotConfigured)?;
        self.client
            .get_or_try_init(|| async {
                let discovery = |detail: String| LoginError::Discovery {
                    issuer: config.issuer.clone(),
                    detail,
                };
                let issuer =
                    IssuerUrl::new(config.issuer.clone()).map_err(|e| discovery(e.to_string()))?;
                let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
                    .await
                    .map_err(|e| discovery(error_chain(&e)))?;
                let redirect = RedirectUrl::new(self.redirect_url.clone())
                    .map_err(|e| discovery(e.to_string()))?;
                Ok(CoreClient::from_provider_metadata(
                    metadata,
                    ClientId::new(config.client_id.clone()),
                    Some(ClientSecret::new(config.client_secret.clone())),
                )
                .set_redirect_uri(redirect))
            })
            .await
    }

    /// Starts a login; `redirect_uri` (a loopback URL) is where the browser
    /// goes once the login is complete.
    pub async fn start(
        &self,
        store: &SharedStore,
        redirect_uri: Option<String>,
    ) -> Result<LoginStartResponse, ApiError> {
        if let Some(uri) = &redirect_uri {
            validate_loopback_redirect(uri)?;
        }
        let client = self.client().await.map_err(login_api_error)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (authorize_url, csrf_state, nonce) = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(OidcScope::new("email".into()))
            .add_scope(OidcScope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        let device_code = new_secret("lat_dc_");
        let now = Utc::now();
        let login = LoginRecord {
            id: LoginId::new(),
            csrf_state: csrf_state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            redirect_uri,
            device_code_hash: hash_secret(&device_code),
            created_at: now,
            expires_at: now + Duration::seconds(LOGIN_TTL_SECS),
            callback_at: None,
            identity_id: None,
            error: None,
            redeemed_at: None,
        };
        store.insert_login(&login).await?;
        Ok(LoginStartResponse {
            login_id: login.id,
            authorize_url: authorize_url.to_string(),
            device_code,
            expires_in: LOGIN_TTL_SECS,
            interval: POLL_INTERVAL_SECS,
        })
    }

    /// Completes the provider's redirect: exchanges the code, validates the ID
    /// token and creates or updates the identity. Returns the login and the
    /// outcome that was recorded on it.
    pub async fn callback(
        &self,
        store: &SharedStore,
        state: &str,
        code: Option<&str>,
        provider_error: Option<&str>,
    ) -> Result<(LoginRecord, Result<IdentityId, String>), ApiError> {
        let login = store.login_by_state(state).await?.ok_or_else(|| {
            ApiError::bad_request("unknown login state: start again with `lattice login`")
        })?;
        if login.expires_at <= Utc::now() {
            return Err(ApiError::bad_request(
                "this login has expired: start again with `lattice login`",
            ));
        }
        if !store.claim_login_callback(login.id, Utc::now()).await? {
            tracing::warn!(login_id = %login.id, "replayed login callback refused");
            return Err(ApiError::bad_request(
                "this login was already completed; a replayed callback is refused",
            ));
        }
        let outcome = match (provider_error, code) {
            (Some(error), _) => Err(format!("the identity provider reported: {error}")),
            (None, None) => Err("the identity provider sent no authorization code".to_owned()),
            (None, Some(code)) => match self.exchange(store, &login, code).await {
                Ok(identity) => Ok(identity.id),
                Err(LoginError::InvalidIdToken(e)) => {
                    tracing::warn!(login_id = %login.id, error = %e, "ID token refused");
                    Err(format!("ID token refused: {e}"))
                }
                Err(e) => {
                    tracing::warn!(login_id = %login.id, error = %e, "login failed");
                    Err(e.to_string())
                }
            },
        };
        store.finish_login(login.id, outcome.clone()).await?;
        Ok((login, outcome))
    }

    async fn exchange(
        &self,
        store: &SharedStore,
        login: &LoginRecord,
        code: &str,
    ) -> Result<Identity, LoginError> {
        let client = self.client().await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| LoginError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(login.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| LoginError::Exchange(error_chain(&e)))?;
        let id_token = response.id_token().ok_or(LoginError::MissingIdToken)?;
        let verified = verify_id_token(&client.id_token_verifier(), id_token, &login.nonce)?;
        upsert_identity(store, verified).await.map_err(|e| {
            LoginError::Exchange(format!("storing the identity failed: {}", e.message))
        })
    }
}

/// Validates an ID token's signature (against the provider's JWKS), issuer,
/// audience, expiry and nonce.
pub fn verify_id_token(
    verifier: &CoreIdTokenVerifier<'_>,
    id_token: &CoreIdToken,
    expected_nonce: &str,
) -> Result<VerifiedLogin, LoginError> {
    let claims: &CoreIdTokenClaims =
        id_token.claims(verifier, &Nonce::new(expected_nonce.to_owned()))?;
    let subject = claims.subject().as_str().to_owned();
    let email = claims.email().map(|e| e.as_str().to_owned());
    let display_name = claims
        .name()
        .and_then(|n| n.get(None))
        .map(|n| n.as_str().to_owned());
    let username = claims
        .preferred_username()
        .map(|u| u.as_str().to_owned())
        .or_else(|| email.clone())
        .unwrap_or_else(|| subject.clone());
    Ok(VerifiedLogin {
        issuer: claims.issuer().as_str().to_owned(),
        subject,
        username,
        display_name,
        email_verified: email.is_some() && claims.email_verified() == Some(true),
        email,
    })
}

/// First login creates the identity; later ones refresh its profile. A
/// verified email claims the group invitations sent to it.
pub async fn upsert_identity(
    store: &SharedStore,
    login: VerifiedLogin,
) -> Result<Identity, ApiError> {
    let verified_email = login
        .email
        .as_deref()
        .filter(|_| login.email_verified)
        .map(str::to_lowercase);
    let identity = store_identity(store, login).await?;
    if let Some(email) = verified_email {
        let claimed = store
            .claim_email_invitations(identity.id, &email, Utc::now())
            .await?;
        if claimed > 0 {
            tracing::info!(identity_id = %identity.id, claimed, "group invitations by email claimed");
        }
    }
    Ok(identity)
}

async fn store_identity(store: &SharedStore, login: VerifiedLogin) -> Result<Identity, ApiError> {
    if let Some(mut existing) = store
        .identity_by_subject(&login.issuer, &login.subject)
        .await?
    {
        existing.username = login.username;
        existing.display_name = login.display_name;
        existing.email = login.email;
        store.update_identity_profile(&existing).await?;
        return Ok(existing);
    }
    let identity = Identity {
        id: IdentityId::new(),
        username: login.username,
        display_name: login.display_name,
        email: login.email,
        identity_provider: login.issuer,
        subject: login.subject,
        created_at: Utc::now(),
    };
    match store.insert_identity(&identity).await {
        Ok(()) => Ok(identity),
        // Two first logins raced: the other one created it.
        Err(crate::store::StoreError::Conflict(_)) => store
            .identity_by_subject(&identity.identity_provider, &identity.subject)
            .await?
            .ok_or_else(|| ApiError::internal("identity vanished after a conflict")),
        Err(e) => Err(e.into()),
    }
}

/// Only loopback redirects are allowed, so a login cannot be bounced to
/// another host.
pub fn validate_loopback_redirect(uri: &str) -> Result<(), ApiError> {
    let parsed = url::Url::parse(uri)
        .map_err(|e| ApiError::bad_request(format!("invalid redirect_uri: {e}")))?;
    let loopback = matches!(
        parsed.host(),
        Some(url::Host::Ipv4(ip)) if ip.is_loopback()
    ) || matches!(parsed.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
        || parsed.host_str() == Some("localhost");
    if parsed.scheme() != "http" || !loopback {
        return Err(ApiError::bad_request(
            "redirect_uri must be a loopback URL such as http://127.0.0.1:PORT/callback",
        ));
    }
    Ok(())
}

fn login_api_error(err: LoginError) -> ApiError {
    match err {
        LoginError::NotConfigured => {
            ApiError::new(lattice_protocol::ErrorCode::NotFound, err.to_string())
        }
        LoginError::Discovery { .. } => {
            tracing::error!(error = %err, "identity provider discovery failed");
            ApiError::unavailable(err.to_string())
        }
        other => ApiError::bad_request(other.to_string()),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use openidconnect::core::{
        CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey,
    };
    use openidconnect::{
        Audience, EmptyAdditionalClaims, JsonWebKeyId, PrivateSigningKey, StandardClaims,
        SubjectIdentifier,
    };

    const ISSUER: &str = "https://idp.example.org";
    const KEY_A: &str = include_str!("../../tests/fixtures/rsa-a.pem");
    const KEY_B: &str = include_str!("../../tests/fixtures/rsa-b.pem");

    fn key(pem: &str) -> CoreRsaPrivateSigningKey {
        CoreRsaPrivateSigningKey::from_pem(pem, Some(JsonWebKeyId::new("k1".into()))).unwrap()
    }

    fn signed_token(
        signing: &CoreRsaPrivateSigningKey,
        audience: &str,
        nonce: &str,
    ) -> CoreIdToken {
        let now = Utc::now();
        let claims = CoreIdTokenClaims::new(
            IssuerUrl::new(ISSUER.into()).unwrap(),
            vec![Audience::new(audience.into())],
            now + Duration::minutes(5),
            now,
            StandardClaims::new(SubjectIdentifier::new("alice-sub".into())),
            EmptyAdditionalClaims {},
        )
        .set_nonce(Some(Nonce::new(nonce.into())));
        CoreIdToken::new(
            claims,
            signing,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            None,
            None,
        )
        .unwrap()
    }

    fn verifier_trusting(key: &CoreRsaPrivateSigningKey) -> CoreIdTokenVerifier<'static> {
        CoreIdTokenVerifier::new_confidential_client(
            ClientId::new("lattice".into()),
            ClientSecret::new("secret".into()),
            IssuerUrl::new(ISSUER.into()).unwrap(),
            CoreJsonWebKeySet::new(vec![key.as_verification_key()]),
        )
    }

    #[test]
    fn a_well_formed_id_token_is_accepted() {
        let key_a = key(KEY_A);
        let token = signed_token(&key_a, "lattice", "n-1");
        let login = verify_id_token(&verifier_trusting(&key_a), &token, "n-1").unwrap();
        assert_eq!(login.subject, "alice-sub");
        assert_eq!(login.issuer, ISSUER);
    }

    #[test]
    fn tampered_id_tokens_are_refused() {
        let key_a = key(KEY_A);
        let key_b = key(KEY_B);
        let verifier = verifier_trusting(&key_a);
        // Signed by a key the provider's JWKS does not hold.
        let forged = signed_token(&key_b, "lattice", "n-1");
        assert!(matches!(
            verify_id_token(&verifier, &forged, "n-1"),
            Err(LoginError::InvalidIdToken(
                openidconnect::ClaimsVerificationError::SignatureVerification(_)
            ))
        ));
        // Issued for another client.
        let other_audience = signed_token(&key_a, "someone-else", "n-1");
        assert!(matches!(
            verify_id_token(&verifier, &other_audience, "n-1"),
            Err(LoginError::InvalidIdToken(
                openidconnect::ClaimsVerificationError::InvalidAudience(_)
            ))
        ));
        // A token from another login (replayed nonce).
        let replayed = signed_token(&key_a, "lattice", "n-old");
        assert!(matches!(
            verify_id_token(&verifier, &replayed, "n-1"),
            Err(LoginError::InvalidIdToken(
                openidconnect::ClaimsVerificationError::InvalidNonce(_)
            ))
        ));
        // Payload edited after signing.
        let good = signed_token(&key_a, "lattice", "n-1");
        let text = serde_json::to_value(&good)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        let mut parts: Vec<String> = text.split('.').map(str::to_owned).collect();
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = String::from_utf8(engine.decode(&parts[1]).unwrap()).unwrap();
        parts[1] = engine.encode(payload.replace("alice-sub", "mallory"));
        let edited: CoreIdToken =
            serde_json::from_value(serde_json::Value::String(parts.join("."))).unwrap();
        assert!(verify_id_token(&verifier, &edited, "n-1").is_err());
    }

    #[test]
    fn only_loopback_redirects_are_allowed() {
        assert!(validate_loopback_redirect("http://127.0.0.1:5555/callback").is_ok());
        assert!(validate_loopback_redirect("http://localhost:5555/cb").is_ok());
        assert!(validate_loopback_redirect("http://[::1]:5555/cb").is_ok());
        assert!(validate_loopback_redirect("https://evil.example.org/cb").is_err());
        assert!(validate_loopback_redirect("http://127.0.0.1.evil.org/cb").is_err());
        assert!(validate_loopback_redirect("javascript:alert(1)").is_err());
    }
}
