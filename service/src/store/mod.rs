//! The service's persistent state behind one trait, with SQLite and
//! PostgreSQL implementations that share their SQL and one test suite.
//!
//! Times are stored as milliseconds since the Unix epoch in both back ends;
//! ids as their canonical text. Database errors are translated to
//! [`StoreError`] in one place ([`StoreError::from`]).

pub mod compute;
pub mod flows;
pub mod notify;
pub mod search;
pub mod sharing;
mod sql;
#[cfg(any(test, feature = "testsuite"))]
pub mod testing;
#[cfg(test)]
mod tests;
pub mod timers;
pub mod transfers;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use lattice_protocol::api::{Identity, Scope};
use lattice_protocol::{ClientId, IdentityId, LoginId, TokenId};

pub use compute::{
    AgentConnection, ComputeStore, DispatchedTask, EndpointRecord, QueuedMessage, Recorded,
};
pub use flows::{ActionRecord, FlowRecord, FlowStore, RunFilter, RunLogRecord, RunRecord};
pub use notify::{AttemptRecord, DeliveryOutcome, DeliveryRecord, NotifyStore, WebhookRecord};
pub use search::{SearchIndexRecord, SearchStore, SearchTaskOutcome, SearchTaskRecord};
pub use sharing::{GroupRecord, MembershipRecord, NewAuditEntry, SharingStore};
pub use sql::{PostgresStore, SqliteStore};
pub use timers::{TimerRecord, TimerRunRecord, TimerStore};
pub use transfers::{
    CollectionRecord, GuestOf, NewTransferEvent, TransferProgress, TransferRecord, TransferStore,
};

/// Errors of the store. Callers can act on `NotFound` and `Conflict`; the
/// rest are the database's problems.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("cannot open the store at {location}: {source}")]
    Open {
        location: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot open the store at {location}: another Lattice service holds it (SQLite is used by one process at a time; stop the other `lattice dev` or `lattice service`, or use another data directory)")]
    InUse { location: String },
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store query failed: {0}")]
    Database(sqlx::Error),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            if db.is_unique_violation() {
                return StoreError::Conflict(
                    db.table()
                        .map(|t| format!("a row in {t} with this key"))
                        .unwrap_or_else(|| "a row with this key".to_owned()),
                );
            }
        }
        StoreError::Database(err)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Whether a token is a short-lived access token or a refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

/// A token as stored: only the hash of the secret is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub token_hash: String,
    pub kind: TokenKind,
    pub identity_id: IdentityId,
    pub scopes: Vec<Scope>,
    /// Tokens of one login (access and refresh, across rotations) share a family,
    /// so that reuse of a rotated refresh token revokes all of them.
    pub family_id: TokenId,
    pub client_id: Option<ClientId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A client application for client-credentials login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRecord {
    pub id: ClientId,
    pub name: String,
    pub secret_hash: String,
    pub identity_id: IdentityId,
    pub owner_id: IdentityId,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
}

/// A federated login in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRecord {
    pub id: LoginId,
    pub csrf_state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub redirect_uri: Option<String>,
    pub device_code_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub callback_at: Option<DateTime<Utc>>,
    pub identity_id: Option<IdentityId>,
    pub error: Option<String>,
    pub redeemed_at: Option<DateTime<Utc>>,
}

/// Everything the service persists. Methods that change state guard their
/// own invariants (e.g. [`Store::mark_token_used`] succeeds once only), so
/// concurrent replicas can share one database.
#[async_trait]
pub trait Store:
    ComputeStore
    + TransferStore
    + SharingStore
    + SearchStore
    + FlowStore
    + TimerStore
    + NotifyStore
    + Send
    + Sync
    + 'static
{
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;
    /// The connection pool of a PostgreSQL store (for the PostgreSQL
    /// search engine, which keeps its tables in the same database).
    fn postgres_pool(&self) -> Option<sqlx::PgPool>;
    /// A round trip to the database.
    async fn ping(&self) -> StoreResult<()>;

    async fn insert_identity(&self, identity: &Identity) -> StoreResult<()>;
    async fn identity(&self, id: IdentityId) -> StoreResult<Option<Identity>>;
    async fn identity_by_subject(
        &self,
        identity_provider: &str,
        subject: &str,
    ) -> StoreResult<Option<Identity>>;
    /// Refreshes the profile fields a provider sent at login.
    async fn update_identity_profile(&self, identity: &Identity) -> StoreResult<()>;
    /// The primary identity `id` is linked under (itself if not linked).
    async fn primary_identity(&self, id: IdentityId) -> StoreResult<IdentityId>;
    /// Links `id` (and everything linked under it) under `primary`.
    async fn link_identity(&self, id: IdentityId, primary: IdentityId) -> StoreResult<()>;
    /// All identities linked under `primary`, `primary` included.
    async fn linked_identities(&self, primary: IdentityId) -> StoreResult<Vec<Identity>>;

    async fn insert_token(&self, token: &TokenRecord) -> StoreResult<()>;
    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<TokenRecord>>;
    /// Marks a refresh token used; false if it was already used or revoked.
    async fn mark_token_used(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<bool>;
    async fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<()>;
    /// Revokes every token of a family; returns how many were still live.
    async fn revoke_token_family(&self, family: TokenId, at: DateTime<Utc>) -> StoreResult<u64>;

    async fn insert_client(&self, client: &ClientRecord) -> StoreResult<()>;
    async fn client(&self, id: ClientId) -> StoreResult<Option<ClientRecord>>;
    async fn clients_owned_by(&self, owner: IdentityId) -> StoreResult<Vec<ClientRecord>>;
    /// Deletes a client and revokes every token issued to it, in one
    /// transaction; false if there was no such client. Its identity stays
    /// (what it submitted keeps an owner).
    async fn delete_client(&self, id: ClientId, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Replaces a client's secret and revokes every token issued to it, in
    /// one transaction; false if there was no such client.
    async fn replace_client_secret(
        &self,
        id: ClientId,
        secret_hash: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    async fn insert_login(&self, login: &LoginRecord) -> StoreResult<()>;
    async fn login_by_state(&self, csrf_state: &str) -> StoreResult<Option<LoginRecord>>;
    async fn login_by_device_code(
        &self,
        device_code_hash: &str,
    ) -> StoreResult<Option<LoginRecord>>;
    /// Claims the provider's callback for a login; false if it was already
    /// claimed (a replayed callback).
    async fn claim_login_callback(&self, id: LoginId, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Records the outcome of the callback: an identity or an error.
    async fn finish_login(
        &self,
        id: LoginId,
        outcome: Result<IdentityId, String>,
    ) -> StoreResult<()>;
    /// Marks a completed login redeemed; false if it already was.
    async fn redeem_login(&self, id: LoginId, at: DateTime<Utc>) -> StoreResult<bool>;
}

/// The store as the rest of the service holds it.
pub type SharedStore = Arc<dyn Store>;

/// Opens (creating if needed) and migrates the store named by `database_url`:
/// `sqlite://PATH` or `postgres://...`.
pub async fn open(database_url: &str) -> StoreResult<SharedStore> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(database_url, None).await?))
    } else {
        Ok(Arc::new(SqliteStore::connect(database_url).await?))
    }
}

/// The default SQLite URL for a data directory.
pub fn sqlite_url_in(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("lattice.db").display())
}

/// A row that does not decode: its table and what is wrong.
pub(crate) fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

/// An id column that must hold a UUID.
pub(crate) fn uuid_of(table: &'static str, text: &str) -> StoreResult<uuid::Uuid> {
    uuid::Uuid::parse_str(text).map_err(|e| corrupt(table, format!("bad id `{text}`: {e}")))
}

pub(crate) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
