//! JSON bodies of the REST API under `/v1`. These are an API boundary:
//! fields may be added, never renamed or removed.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ClientId, IdentityId, LoginId};

/// What a token may be used for. Every route declares the scope it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Scope {
    /// Register functions, submit and read tasks.
    Compute,
    /// Manage collections and transfers.
    Transfer,
    /// Manage identities, clients, endpoints and tokens.
    Manage,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Compute, Scope::Transfer, Scope::Manage];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Compute => "compute",
            Scope::Transfer => "transfer",
            Scope::Manage => "manage",
        }
    }

    /// Parses a space-separated scope list as used by OAuth (`"compute manage"`).
    pub fn parse_list(text: &str) -> Result<Vec<Scope>, UnknownScope> {
        let mut scopes: Vec<Scope> = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        scopes.sort();
        scopes.dedup();
        Ok(scopes)
    }

    /// Formats scopes as a space-separated list.
    pub fn join(scopes: &[Scope]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that is not one of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}`: expected one of compute, transfer, manage")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "compute" => Ok(Scope::Compute),
            "transfer" => Ok(Scope::Transfer),
            "manage" => Ok(Scope::Manage),
            other => Err(UnknownScope(other.to_owned())),
        }
    }
}

/// `GET /v1/health`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` when the store answers.
    pub status: String,
    pub version: String,
    /// `sqlite` or `postgres`.
    pub store: String,
}

/// A person, client application or agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Identity {
    pub id: IdentityId,
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// Issuer URL of the identity provider, or `local` / `client`.
    pub identity_provider: String,
    /// The provider's subject (`sub`) for this identity.
    pub subject: String,
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/auth/whoami`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    pub identity: Identity,
    /// Other identities linked to this one (same person, other providers).
    pub linked_identities: Vec<Identity>,
    /// Scopes of the token used for this request.
    pub scopes: Vec<Scope>,
    pub token_expires_at: DateTime<Utc>,
}

/// `POST /v1/identities/link`: link another identity the caller also holds a token for.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LinkIdentityRequest {
    /// A valid access token of the identity to link.
    pub other_token: String,
}

/// Body of a successful `POST /v1/auth/token`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Present for interactive logins; rotates on every use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Space-separated scopes granted.
    pub scope: String,
}

/// `POST /v1/auth/token`. Accepted as JSON or as a form (OAuth style).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "grant_type", rename_all = "snake_case")]
pub enum TokenRequest {
    /// Exchange a refresh token for a new access token and a new refresh token.
    RefreshToken { refresh_token: String },
    /// Automation: a registered client's id and secret.
    ClientCredentials {
        client_id: ClientId,
        client_secret: String,
        /// Space-separated scopes; defaults to all scopes the client holds.
        #[serde(default)]
        scope: Option<String>,
    },
    /// Redeem a login started with `POST /v1/auth/login` once the browser part is done.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:device_code")]
    DeviceCode { device_code: String },
}

/// `POST /v1/auth/login`: start a federated login.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginStartRequest {
    /// A loopback URL (`http://127.0.0.1:PORT/...`) the browser is sent to when
    /// the login is complete. Without it, the page tells the user to return to
    /// the terminal (device-code style).
    #[serde(default)]
    pub redirect_uri: Option<String>,
}

/// Answer to `POST /v1/auth/login`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginStartResponse {
    pub login_id: LoginId,
    /// Open this in a browser to log in with the identity provider.
    pub authorize_url: String,
    /// Secret kept by the client; redeem it at `/v1/auth/token` with the
    /// device-code grant once the browser part is done.
    pub device_code: String,
    /// Seconds the login stays valid.
    pub expires_in: i64,
    /// Seconds to wait between polls.
    pub interval: i64,
}

/// `POST /v1/clients`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClientCreateRequest {
    pub name: String,
    /// Scopes the client may request; defaults to the caller's token scopes.
    #[serde(default)]
    pub scopes: Option<Vec<Scope>>,
}

/// A registered client application (the secret is never returned again).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClientInfo {
    pub client_id: ClientId,
    pub name: String,
    /// The identity tokens of this client act as.
    pub identity_id: IdentityId,
    pub owner_id: IdentityId,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
}

/// Answer to `POST /v1/clients`: the only time the secret is shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClientCreated {
    #[serde(flatten)]
    pub client: ClientInfo,
    pub client_secret: String,
}

/// `POST /v1/auth/revoke`: revoke a token (access or refresh).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokeRequest {
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_lists_parse_sorted_and_deduplicated() {
        assert_eq!(
            Scope::parse_list("manage compute manage").unwrap(),
            vec![Scope::Compute, Scope::Manage]
        );
        assert_eq!(
            Scope::parse_list("compute root").unwrap_err(),
            UnknownScope("root".into())
        );
        assert_eq!(Scope::join(&Scope::ALL), "compute transfer manage");
    }

    #[test]
    fn token_requests_are_tagged_by_grant_type() {
        let req: TokenRequest =
            serde_json::from_str(r#"{"grant_type":"refresh_token","refresh_token":"abc"}"#)
                .unwrap();
        assert!(
            matches!(req, TokenRequest::RefreshToken { refresh_token } if refresh_token == "abc")
        );
        let req: TokenRequest = serde_json::from_str(
            r#"{"grant_type":"urn:ietf:params:oauth:grant-type:device_code","device_code":"d"}"#,
        )
        .unwrap();
        assert!(matches!(req, TokenRequest::DeviceCode { .. }));
        assert!(serde_json::from_str::<TokenRequest>(r#"{"grant_type":"password"}"#).is_err());
    }
}
