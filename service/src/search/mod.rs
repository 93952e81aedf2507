//! The search domain: indexes and the roles on them ([`indexes`]), the
//! ingest and delete tasks and the one processor per service that applies
//! each index's tasks in submission order ([`tasks`]), and queries with the
//! caller's visibility ([`queries`]). The entries themselves live in a
//! [`SearchEngine`] (tantivy or PostgreSQL, chosen by `[search] engine`).
//!
//! It owns the rules (who may write, administer or bypass visibility, which
//! principals an entry may name, rate limits, the grace period of deleted
//! indexes); it must not know about HTTP, and it never matches entries
//! itself: visibility is handed to the engine as principals, resolved from
//! the caller's [`Viewer`] at query time. Route handlers extract the
//! request, call a function here, and turn a [`SearchServiceError`] into an
//! `ApiError` through the one `From` impl in `error.rs`.

mod error;
pub mod indexes;
pub mod queries;
mod rate;
pub mod tasks;

pub use error::{SearchResult, SearchServiceError};
pub(crate) use rate::RateKind;

use std::sync::Arc;
use std::time::Duration;

use lattice_protocol::sharing::Principal;
use lattice_protocol::IdentityId;
use lattice_search::{Limits, SearchEngine};
use tokio::sync::Notify;

use crate::auth::Caller;
use crate::config::{SearchConfig, SearchEngineKind};
use crate::sharing::Viewer;
use crate::store::SharedStore;

/// The search engine and what every search request shares: built once when
/// the service opens, shared by every request and the task processor.
pub struct SearchHub {
    /// The engine, or why it could not be opened (search then answers 503
    /// and the rest of the platform still works).
    engine: Result<Arc<dyn SearchEngine>, String>,
    pub(crate) config: SearchConfig,
    pub(crate) limits: Limits,
    /// Woken when a task is queued, so the processor starts at once.
    pub(crate) wake: Notify,
    pub(crate) rate: rate::RateLimits,
}

impl SearchHub {
    /// Opens the engine named by `config` (PostgreSQL: in the store's database).
    pub async fn open(config: &SearchConfig, store: &SharedStore) -> Self {
        let engine = open_engine(config, store).await;
        match &engine {
            Ok(engine) => tracing::info!(engine = engine.name(), "search engine open"),
            Err(e) => tracing::error!(error = %e, "search is unavailable"),
        }
        Self::with_engine(config.clone(), engine)
    }

    fn with_engine(config: SearchConfig, engine: Result<Arc<dyn SearchEngine>, String>) -> Self {
        Self {
            rate: rate::RateLimits::new(config.queries_per_minute, config.writes_per_minute),
            engine,
            config,
            limits: Limits::default(),
            wake: Notify::new(),
        }
    }

    /// The engine, or 503 naming why it is missing.
    pub fn engine(&self) -> SearchResult<&Arc<dyn SearchEngine>> {
        self.engine
            .as_ref()
            .map_err(|e| SearchServiceError::Unavailable(format!("search is unavailable: {e}")))
    }

    /// How long a deleted index stays restorable.
    pub fn grace_period(&self) -> chrono::Duration {
        chrono::Duration::seconds(
            i64::try_from(self.config.deleted_index_grace_secs).unwrap_or(i64::MAX / 1000),
        )
    }
}

async fn open_engine(
    config: &SearchConfig,
    store: &SharedStore,
) -> Result<Arc<dyn SearchEngine>, String> {
    let kind = config.engine.unwrap_or(match store.postgres_pool() {
        Some(_) => SearchEngineKind::Postgres,
        None => SearchEngineKind::Tantivy,
    });
    match kind {
        SearchEngineKind::Tantivy => {
            let dir = config.dir.clone();
            // Opening reads the index directories: off the async threads.
            let engine =
                tokio::task::spawn_blocking(move || lattice_search::TantivyEngine::open(dir))
                    .await
                    .map_err(|e| format!("opening the tantivy engine: {e}"))?
                    .map_err(|e| format!("tantivy engine in {}: {e}", config.dir.display()))?;
            Ok(Arc::new(engine))
        }
        SearchEngineKind::Postgres => {
            let Some(pool) = store.postgres_pool() else {
                return Err("the postgres engine needs a PostgreSQL store".to_owned());
            };
            let engine = lattice_search::PostgresEngine::open(pool)
                .await
                .map_err(|e| format!("postgres engine: {e}"))?;
            Ok(Arc::new(engine))
        }
    }
}

/// Who asks: their principals (group memberships resolved now) and the
/// identity that rate limits and task ownership are keyed by.
#[derive(Clone, Debug)]
pub struct Asker {
    pub identity: Option<IdentityId>,
    pub viewer: Viewer,
}

impl Asker {
    /// Loads the caller's principals; `None` is an anonymous caller.
    pub async fn of(store: &SharedStore, caller: Option<&Caller>) -> SearchResult<Self> {
        match caller {
            None => Ok(Self {
                identity: None,
                viewer: Viewer::anonymous(),
            }),
            Some(caller) => Ok(Self {
                identity: Some(caller.identity_id),
                viewer: Viewer::of(store, caller.identity_id).await?,
            }),
        }
    }

    /// The identity, or 401 for an anonymous caller.
    pub fn require_identity(&self) -> SearchResult<IdentityId> {
        self.identity.ok_or_else(|| {
            SearchServiceError::Unauthenticated("this needs a token: log in first".into())
        })
    }

    /// The principals an entry's `visible_to` is matched against, in their
    /// canonical wire form.
    pub fn principals(&self) -> Vec<String> {
        self.viewer
            .principals()
            .iter()
            .map(Principal::to_string)
            .collect()
    }
}

/// How often the background work (purging deleted indexes, forgetting
/// idle rate-limit keys) runs.
pub(crate) const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);
