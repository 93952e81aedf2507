//! Search engines for Lattice.
//!
//! This crate owns how entries are stored, matched, counted and paged: the
//! [`SearchEngine`] trait, the pieces every engine shares (flattening JSON
//! content into typed fields and fixing each field's type per index:
//! [`schema`]; the one word splitter: [`text`]; the advanced query syntax
//! and its parser: [`query`]; checking a request and planning it, entry
//! checks, scroll markers and grouping by subject: [`plan`]), and two
//! engines that pass one conformance suite (`tests/conformance`): the
//! embedded [`TantivyEngine`] and the PostgreSQL engine.
//!
//! It must not know who is asking or why: the service resolves the caller
//! into a [`Visibility`] (their principals, group memberships included) and
//! decides roles, quotas and task order. No HTTP, no service store.
//!
//! The request and result documents are the wire types of
//! `lattice_protocol::search`; their doc comments state the semantics the
//! engines share.

use async_trait::async_trait;
use lattice_protocol::search::{
    DeleteTarget, Entry, FieldType, ScrollRequest, ScrollResult, SearchRequest, SearchResult,
    SubjectResult,
};
use lattice_protocol::SearchIndexId;
use std::collections::BTreeMap;

pub mod plan;
mod postgres_engine;
pub mod query;
pub mod schema;
mod tantivy_engine;
pub mod text;

pub use postgres_engine::PostgresEngine;
pub use tantivy_engine::TantivyEngine;

/// Whose eyes a query runs for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Entries whose `visible_to` shares at least one principal with this
    /// list (canonical short forms: `public`, `all_authenticated_users`,
    /// `identity:ID`, `group:ID`). An anonymous caller passes `["public"]`.
    Principals(Vec<String>),
    /// Every entry (index admins who asked for it, and delete-by-query).
    Bypass,
}

/// Limits an engine enforces per entry and per index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest serialized `content`, in bytes.
    pub max_entry_bytes: usize,
    /// Most distinct fields one index may have.
    pub max_fields: usize,
    /// Deepest nesting of objects and arrays in `content`.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entry_bytes: 1024 * 1024,
            max_fields: 1_000,
            max_depth: 16,
        }
    }
}

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The request is wrong (maps to 400): a syntax error (with the byte
    /// offset into `q`), an unknown field, a filter or facet on a field of
    /// another type, a limit past the window, a bad marker.
    #[error("{message}")]
    Invalid {
        message: String,
        position: Option<usize>,
    },
    /// The engine has no such index.
    #[error("no such index {0}")]
    UnknownIndex(SearchIndexId),
    /// The engine itself failed (maps to 500; logged, never shown raw).
    #[error("search engine: {0}")]
    Engine(String),
}

impl SearchError {
    pub fn invalid(message: impl Into<String>) -> Self {
        SearchError::Invalid {
            message: message.into(),
            position: None,
        }
    }
}

/// What became of one entry of an ingest, in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryOutcome {
    Applied,
    /// Not written; the reason names the entry's problem (a type conflict
    /// names the field and both types).
    Rejected(String),
}

/// A search engine holding any number of indexes.
///
/// Writes to one index are applied by one caller at a time (the service
/// runs an index's tasks in order); reads may run concurrently with them
/// and see either the state before a write call or after it.
#[async_trait]
pub trait SearchEngine: Send + Sync + 'static {
    /// Which engine this is (`tantivy`, `postgres`), for logs and health.
    fn name(&self) -> &'static str;

    /// Makes an empty index; creating an existing one is not an error.
    async fn create_index(&self, index: SearchIndexId) -> Result<(), SearchError>;

    /// Drops an index and all its entries for good (the service keeps
    /// deleted indexes restorable and purges later).
    async fn drop_index(&self, index: SearchIndexId) -> Result<(), SearchError>;

    /// The index's fields and their fixed types.
    async fn fields(
        &self,
        index: SearchIndexId,
    ) -> Result<BTreeMap<String, FieldType>, SearchError>;

    /// Entries in the index.
    async fn count(&self, index: SearchIndexId) -> Result<u64, SearchError>;

    /// Writes entries (replacing any with the same subject and entry id),
    /// answering one outcome per entry in order. An entry is rejected, and
    /// the rest still applied, for: content that is not an object, a
    /// subject over the limit or empty, a type conflict, too deep, too big,
    /// too many fields, an eleventh entry id of one subject, or a
    /// principal that is not well formed. Durable when this returns.
    async fn ingest(
        &self,
        index: SearchIndexId,
        entries: Vec<Entry>,
        limits: &Limits,
    ) -> Result<Vec<EntryOutcome>, SearchError>;

    /// Removes entries; answers how many were removed. Durable when this returns.
    async fn delete(&self, index: SearchIndexId, target: &DeleteTarget)
        -> Result<u64, SearchError>;

    async fn search(
        &self,
        index: SearchIndexId,
        request: &SearchRequest,
        visibility: &Visibility,
    ) -> Result<SearchResult, SearchError>;

    async fn scroll(
        &self,
        index: SearchIndexId,
        request: &ScrollRequest,
        visibility: &Visibility,
    ) -> Result<ScrollResult, SearchError>;

    /// Every visible entry of one subject (none: `Ok(None)`), entry ids in order.
    async fn subject(
        &self,
        index: SearchIndexId,
        subject: &str,
        visibility: &Visibility,
    ) -> Result<Option<SubjectResult>, SearchError>;
}
