//! The SQL of the store, written once and instantiated for SQLite and
//! PostgreSQL by `impl_store!`. Both dialects accept `$N` placeholders,
//! `ON CONFLICT` and `RETURNING`, and both schemas store times as 64-bit
//! integers, so the statements are identical; only connecting and migrating
//! differ.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lattice_protocol::api::{Identity, Scope};
use lattice_protocol::{ClientId, IdentityId, LoginId, TokenId};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use uuid::Uuid;

use super::{
    from_millis, to_millis, ClientRecord, LoginRecord, Store, StoreError, StoreResult, TokenKind,
    TokenRecord,
};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The SQLite back end: one file in WAL mode.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens `sqlite://PATH` (creating the file) and applies migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let open_err = |source: sqlx::Error| {
            let locked = source
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "5");
            if locked {
                StoreError::InUse {
                    location: url.to_owned(),
                }
            } else {
                StoreError::Open {
                    location: url.to_owned(),
                    source,
                }
            }
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // One process owns the file: no lock calls per transaction and
            // no shared-memory WAL index; a second service on the same
            // file is refused ("database is locked").
            .locking_mode(SqliteLockingMode::Exclusive)
            .synchronous(SqliteSynchronous::Normal)
            // Only another process can hold the file (see locking_mode):
            // wait briefly for one that is exiting, then say who holds it.
            .busy_timeout(Duration::from_secs(2))
            .foreign_keys(true);
        // One connection: SQLite runs one writer at a time anyway, and with
        // several connections a writer that finds the lock taken sleeps in
        // SQLite's busy handler (1 ms, 2 ms, 5 ms...) instead of queueing.
        // Queueing on the pool is cheaper and fair.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn pg_pool(&self) -> Option<PgPool> {
        None
    }
}

/// The PostgreSQL back end.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pub(super) pool: PgPool,
}

impl PostgresStore {
    /// Connects to `postgres://...` and applies migrations. With `schema`,
    /// every connection uses that schema (tests give each test its own).
    pub async fn connect(url: &str, schema: Option<&str>) -> StoreResult<Self> {
        let open_err = |source| StoreError::Open {
            location: redact_password(url),
            source,
        };
        let mut options = PgConnectOptions::from_str(url).map_err(open_err)?;
        if let Some(schema) = schema {
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(open_err)?;
        POSTGRES_MIGRATIONS.run(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn pg_pool(&self) -> Option<PgPool> {
        Some(self.pool.clone())
    }
}

/// Hides the password of a database URL for error messages and logs.
pub(crate) fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

fn parse_uuid(table: &'static str, text: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt {
        table,
        detail: format!("bad id `{text}`: {e}"),
    })
}

fn parse_scopes(table: &'static str, text: &str) -> StoreResult<Vec<Scope>> {
    Scope::parse_list(text).map_err(|e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

#[derive(sqlx::FromRow)]
struct IdentityRow {
    id: String,
    username: String,
    display_name: Option<String>,
    email: Option<String>,
    identity_provider: String,
    subject: String,
    created_at: i64,
}

impl IdentityRow {
    fn into_identity(self) -> StoreResult<Identity> {
        Ok(Identity {
            id: IdentityId(parse_uuid("identities", &self.id)?),
            username: self.username,
            display_name: self.display_name,
            email: self.email,
            identity_provider: self.identity_provider,
            subject: self.subject,
            created_at: from_millis(self.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    token_hash: String,
    kind: String,
    identity_id: String,
    scopes: String,
    family_id: String,
    client_id: Option<String>,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl TokenRow {
    fn into_record(self) -> StoreResult<TokenRecord> {
        const T: &str = "tokens";
        let kind = match self.kind.as_str() {
            "access" => TokenKind::Access,
            "refresh" => TokenKind::Refresh,
            other => {
                return Err(StoreError::Corrupt {
                    table: T,
                    detail: format!("unknown token kind `{other}`"),
                })
            }
        };
        Ok(TokenRecord {
            id: TokenId(parse_uuid(T, &self.id)?),
            token_hash: self.token_hash,
            kind,
            identity_id: IdentityId(parse_uuid(T, &self.identity_id)?),
            scopes: parse_scopes(T, &self.scopes)?,
            family_id: TokenId(parse_uuid(T, &self.family_id)?),
            client_id: self
                .client_id
                .as_deref()
                .map(|c| parse_uuid(T, c).map(ClientId))
                .transpose()?,
            created_at: from_millis(self.created_at),
            expires_at: from_millis(self.expires_at),
            used_at: self.used_at.map(from_millis),
            revoked_at: self.revoked_at.map(from_millis),
        })
    }
}

#[derive(sqlx::FromRow)]
struct ClientRow {
    id: String,
    name: String,
    secret_hash: String,
    identity_id: String,
    owner_id: String,
    scopes: String,
    created_at: i64,
}

impl ClientRow {
    fn into_record(self) -> StoreResult<ClientRecord> {
        const T: &str = "clients";
        Ok(ClientRecord {
            id: ClientId(parse_uuid(T, &self.id)?),
            name: self.name,
            secret_hash: self.secret_hash,
            identity_id: IdentityId(parse_uuid(T, &self.identity_id)?),
            owner_id: IdentityId(parse_uuid(T, &self.owner_id)?),
            scopes: parse_scopes(T, &self.scopes)?,
            created_at: from_millis(self.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
struct LoginRow {
    id: String,
    csrf_state: String,
    nonce: String,
    pkce_verifier: String,
    redirect_uri: Option<String>,
    device_code_hash: String,
    created_at: i64,
    expires_at: i64,
    callback_at: Option<i64>,
    identity_id: Option<String>,
    error: Option<String>,
    redeemed_at: Option<i64>,
}

impl LoginRow {
    fn into_record(self) -> StoreResult<LoginRecord> {
        const T: &str = "logins";
        Ok(LoginRecord {
            id: LoginId(parse_uuid(T, &self.id)?),
            csrf_state: self.csrf_state,
            nonce: self.nonce,
            pkce_verifier: self.pkce_verifier,
            redirect_uri: self.redirect_uri,
            device_code_hash: self.device_code_hash,
            created_at: from_millis(self.created_at),
            expires_at: from_millis(self.expires_at),
            callback_at: self.callback_at.map(from_millis),
            identity_id: self
                .identity_id
                .as_deref()
                .map(|c| parse_uuid(T, c).map(IdentityId))
                .transpose()?,
            error: self.error,
            redeemed_at: self.redeemed_at.map(from_millis),
        })
    }
}

const IDENTITY_COLUMNS: &str =
    "id, username, display_name, email, identity_provider, subject, created_at";
const TOKEN_COLUMNS: &str = "id, token_hash, kind, identity_id, scopes, family_id, client_id, created_at, expires_at, used_at, revoked_at";
const CLIENT_COLUMNS: &str = "id, name, secret_hash, identity_id, owner_id, scopes, created_at";
const LOGIN_COLUMNS: &str = "id, csrf_state, nonce, pkce_verifier, redirect_uri, device_code_hash, created_at, expires_at, callback_at, identity_id, error, redeemed_at";

/// Revokes every live token issued to a client (`$1`) at `$2`.
const REVOKE_CLIENT_TOKENS: &str =
    "UPDATE tokens SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL";

macro_rules! impl_store {
    ($store:ty, $kind:literal) => {
        #[async_trait]
        impl Store for $store {
            fn kind(&self) -> &'static str {
                $kind
            }

            fn postgres_pool(&self) -> Option<PgPool> {
                self.pg_pool()
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn insert_identity(&self, identity: &Identity) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO identities (id, username, display_name, email, identity_provider, subject, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(identity.id.to_string())
                .bind(&identity.username)
                .bind(&identity.display_name)
                .bind(&identity.email)
                .bind(&identity.identity_provider)
                .bind(&identity.subject)
                .bind(to_millis(identity.created_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn identity(&self, id: IdentityId) -> StoreResult<Option<Identity>> {
                let row: Option<IdentityRow> = sqlx::query_as(&format!(
                    "SELECT {IDENTITY_COLUMNS} FROM identities WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(IdentityRow::into_identity).transpose()
            }

            async fn identity_by_subject(
                &self,
                identity_provider: &str,
                subject: &str,
            ) -> StoreResult<Option<Identity>> {
                let row: Option<IdentityRow> = sqlx::query_as(&format!(
                    "SELECT {IDENTITY_COLUMNS} FROM identities WHERE identity_provider = $1 AND subject = $2"
                ))
                .bind(identity_provider)
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?;
                row.map(IdentityRow::into_identity).transpose()
            }

            async fn update_identity_profile(&self, identity: &Identity) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE identities SET username = $2, display_name = $3, email = $4 WHERE id = $1",
                )
                .bind(identity.id.to_string())
                .bind(&identity.username)
                .bind(&identity.display_name)
                .bind(&identity.email)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn primary_identity(&self, id: IdentityId) -> StoreResult<IdentityId> {
                let primary: Option<Option<String>> =
                    sqlx::query_scalar("SELECT primary_id FROM identities WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await?;
                match primary.flatten() {
                    Some(p) => Ok(IdentityId(parse_uuid("identities", &p)?)),
                    None => Ok(id),
                }
            }

            async fn link_identity(&self, id: IdentityId, primary: IdentityId) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                // Re-home identities already linked under `id`, then `id` itself.
                sqlx::query("UPDATE identities SET primary_id = $2 WHERE primary_id = $1")
                    .bind(id.to_string())
                    .bind(primary.to_string())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE identities SET primary_id = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(primary.to_string())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn linked_identities(&self, primary: IdentityId) -> StoreResult<Vec<Identity>> {
                let rows: Vec<IdentityRow> = sqlx::query_as(&format!(
                    "SELECT {IDENTITY_COLUMNS} FROM identities WHERE id = $1 OR primary_id = $1 ORDER BY created_at, id"
                ))
                .bind(primary.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(IdentityRow::into_identity).collect()
            }

            async fn insert_token(&self, token: &TokenRecord) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ))
                .bind(token.id.to_string())
                .bind(&token.token_hash)
                .bind(token.kind.as_str())
                .bind(token.identity_id.to_string())
                .bind(Scope::join(&token.scopes))
                .bind(token.family_id.to_string())
                .bind(token.client_id.map(|c| c.to_string()))
                .bind(to_millis(token.created_at))
                .bind(to_millis(token.expires_at))
                .bind(token.used_at.map(to_millis))
                .bind(token.revoked_at.map(to_millis))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<TokenRecord>> {
                let row: Option<TokenRow> = sqlx::query_as(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = $1"
                ))
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TokenRow::into_record).transpose()
            }

            async fn mark_token_used(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL",
                )
                .bind(id.to_string())
                .bind(to_millis(at))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<()> {
                sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(id.to_string())
                    .bind(to_millis(at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn revoke_token_family(&self, family: TokenId, at: DateTime<Utc>) -> StoreResult<u64> {
                let done = sqlx::query(
                    "UPDATE tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
                )
                .bind(family.to_string())
                .bind(to_millis(at))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn insert_client(&self, client: &ClientRecord) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(client.id.to_string())
                .bind(&client.name)
                .bind(&client.secret_hash)
                .bind(client.identity_id.to_string())
                .bind(client.owner_id.to_string())
                .bind(Scope::join(&client.scopes))
                .bind(to_millis(client.created_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn client(&self, id: ClientId) -> StoreResult<Option<ClientRecord>> {
                let row: Option<ClientRow> = sqlx::query_as(&format!(
                    "SELECT {CLIENT_COLUMNS} FROM clients WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(ClientRow::into_record).transpose()
            }

            async fn clients_owned_by(&self, owner: IdentityId) -> StoreResult<Vec<ClientRecord>> {
                let rows: Vec<ClientRow> = sqlx::query_as(&format!(
                    "SELECT {CLIENT_COLUMNS} FROM clients WHERE owner_id = $1 ORDER BY created_at, id"
                ))
                .bind(owner.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(ClientRow::into_record).collect()
            }

            async fn delete_client(&self, id: ClientId, at: DateTime<Utc>) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(REVOKE_CLIENT_TOKENS)
                    .bind(id.to_string())
                    .bind(to_millis(at))
                    .execute(&mut *tx)
                    .await?;
                let deleted = sqlx::query("DELETE FROM clients WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(deleted.rows_affected() == 1)
            }

            async fn replace_client_secret(
                &self,
                id: ClientId,
                secret_hash: &str,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let updated = sqlx::query("UPDATE clients SET secret_hash = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(secret_hash)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(REVOKE_CLIENT_TOKENS)
                    .bind(id.to_string())
                    .bind(to_millis(at))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(updated.rows_affected() == 1)
            }

            async fn insert_login(&self, login: &LoginRecord) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO logins ({LOGIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                ))
                .bind(login.id.to_string())
                .bind(&login.csrf_state)
                .bind(&login.nonce)
                .bind(&login.pkce_verifier)
                .bind(&login.redirect_uri)
                .bind(&login.device_code_hash)
                .bind(to_millis(login.created_at))
                .bind(to_millis(login.expires_at))
                .bind(login.callback_at.map(to_millis))
                .bind(login.identity_id.map(|i| i.to_string()))
                .bind(&login.error)
                .bind(login.redeemed_at.map(to_millis))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn login_by_state(&self, csrf_state: &str) -> StoreResult<Option<LoginRecord>> {
                let row: Option<LoginRow> = sqlx::query_as(&format!(
                    "SELECT {LOGIN_COLUMNS} FROM logins WHERE csrf_state = $1"
                ))
                .bind(csrf_state)
                .fetch_optional(&self.pool)
                .await?;
                row.map(LoginRow::into_record).transpose()
            }

            async fn login_by_device_code(
                &self,
                device_code_hash: &str,
            ) -> StoreResult<Option<LoginRecord>> {
                let row: Option<LoginRow> = sqlx::query_as(&format!(
                    "SELECT {LOGIN_COLUMNS} FROM logins WHERE device_code_hash = $1"
                ))
                .bind(device_code_hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map(LoginRow::into_record).transpose()
            }

            async fn claim_login_callback(&self, id: LoginId, at: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE logins SET callback_at = $2 WHERE id = $1 AND callback_at IS NULL",
                )
                .bind(id.to_string())
                .bind(to_millis(at))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn finish_login(
                &self,
                id: LoginId,
                outcome: Result<IdentityId, String>,
            ) -> StoreResult<()> {
                let (identity, error) = match outcome {
                    Ok(identity) => (Some(identity.to_string()), None),
                    Err(error) => (None, Some(error)),
                };
                sqlx::query("UPDATE logins SET identity_id = $2, error = $3 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(identity)
                    .bind(error)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn redeem_login(&self, id: LoginId, at: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE logins SET redeemed_at = $2 WHERE id = $1 AND redeemed_at IS NULL AND identity_id IS NOT NULL",
                )
                .bind(id.to_string())
                .bind(to_millis(at))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

impl_store!(SqliteStore, "sqlite");
impl_store!(PostgresStore, "postgres");

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_service_on_the_same_sqlite_file_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("lattice.db").display());
        let first = SqliteStore::connect(&url).await.expect("first open");
        let second = SqliteStore::connect(&url).await;
        let message = match second {
            Err(e @ StoreError::InUse { .. }) => e.to_string(),
            other => panic!("expected InUse, got {:?}", other.map(|_| ())),
        };
        assert!(
            message.contains("another Lattice service holds it"),
            "{message}"
        );
        // Once the first is gone, the file opens again with its data.
        first.pool.close().await;
        drop(first);
        SqliteStore::connect(&url)
            .await
            .expect("open after the first closed");
    }
}
