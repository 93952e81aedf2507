//! The search vocabulary: indexes and their roles, entries with per-entry
//! visibility, ingest and delete tasks, and the query, filter, facet and
//! result documents of `/v1/search/...`.
//!
//! Field and shape names follow the anchor (Globus Search: `gmeta`,
//! `facet_results`, `post_facet_filters`, `field_name`) so that requests
//! written for it need few changes. What is ours: `distinct_count` facets,
//! `exists`/`like`/`not`/`and`/`or` filters nest freely, and the scroll has
//! no result cap.
//!
//! Semantics shared by every engine (the conformance suite in
//! `lattice-search` pins them):
//! - A document is one entry: a `subject` plus an optional `entry_id`
//!   (a subject holds at most [`MAX_ENTRIES_PER_SUBJECT`]). Counts and
//!   paging are over entries; a page groups consecutive entries of one
//!   subject into one `gmeta` item.
//! - `content` is flattened into dotted field names (`a.b.c`); arrays make
//!   a field multi-valued (arrays of objects flatten every element into the
//!   same fields). Each field has one type, fixed by the first value the
//!   index sees: `string` (full text *and* exact value), `number` (f64),
//!   `date` (a string in RFC 3339 or `YYYY-MM-DD` form when first seen),
//!   `boolean`. A later value of another type rejects that entry.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{IdentityId, SearchIndexId, SearchTaskId};

/// Longest subject, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 500;
/// Most entries one subject holds (distinct `entry_id`s, `None` included).
pub const MAX_ENTRIES_PER_SUBJECT: usize = 10;
/// Largest ingest request body, in bytes.
pub const MAX_INGEST_BYTES: usize = 10 * 1024 * 1024;
/// Largest `offset + limit` of an offset-paged query; deeper pages use the scroll.
pub const MAX_RESULT_WINDOW: usize = 10_000;
/// Largest `limit` of one page (query or scroll).
pub const MAX_PAGE_SIZE: usize = 1_000;

// -------------------------------------------------------------------- indexes

/// What a role on an index allows. `owner` can do everything including
/// deleting the index; `admin` manages roles and settings and may bypass
/// visibility; `writer` ingests and deletes entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum IndexRoleName {
    Writer,
    Admin,
    Owner,
}

/// `POST /v1/search/indexes`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IndexCreate {
    pub display_name: String,
    #[serde(default)]
    pub description: String,
}

/// `PATCH /v1/search/indexes/{id}`: fields left out stay as they are.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IndexUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Lifecycle of an index: `deleted` indexes can be restored until
/// `purge_after`, then their entries are dropped for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum IndexStatus {
    Open,
    Deleted,
}

/// One index as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IndexInfo {
    pub id: SearchIndexId,
    pub display_name: String,
    pub description: String,
    pub owner: IdentityId,
    pub status: IndexStatus,
    pub created_at: DateTime<Utc>,
    /// When a deleted index is purged; absent while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_after: Option<DateTime<Utc>>,
    /// The caller's strongest role on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub my_role: Option<IndexRoleName>,
    /// Entries in the index (as the engine last counted them).
    pub entry_count: u64,
    /// The fields and their fixed types, in name order.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldType>,
}

/// `POST /v1/search/indexes/{id}/roles`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IndexRoleCreate {
    /// `identity:ID` or `group:ID` (see `sharing::Principal`).
    pub principal: String,
    pub role: IndexRoleName,
}

/// One role on an index.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IndexRole {
    pub id: uuid::Uuid,
    pub index_id: SearchIndexId,
    pub principal: String,
    pub role: IndexRoleName,
    pub created_at: DateTime<Utc>,
}

// -------------------------------------------------------------------- entries

/// The type a field has in an index, fixed by the first value seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FieldType {
    String,
    Number,
    Date,
    Boolean,
}

/// One entry to ingest (the anchor's `GMetaEntry`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Entry {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A JSON object.
    pub content: Value,
    /// Principals that may see this entry: `public`,
    /// `all_authenticated_users`, `identity:ID`, `group:ID`.
    pub visible_to: Vec<String>,
}

/// `POST /v1/search/indexes/{id}/ingest`: one entry or a list.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "ingest_type", content = "ingest_data")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum IngestDocument {
    GMetaEntry(Entry),
    GMetaList { gmeta: Vec<Entry> },
}

impl IngestDocument {
    pub fn into_entries(self) -> Vec<Entry> {
        match self {
            IngestDocument::GMetaEntry(entry) => vec![entry],
            IngestDocument::GMetaList { gmeta } => gmeta,
        }
    }
}

/// What a delete task removes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "delete_type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeleteTarget {
    /// Every entry of these subjects.
    Subjects { subjects: Vec<String> },
    /// One entry (`entry_id: null` is the subject's id-less entry).
    Entry {
        subject: String,
        #[serde(default)]
        entry_id: Option<String>,
    },
    /// Every entry matching a query, whatever its visibility.
    Query { query: SearchQuery },
}

// ---------------------------------------------------------------------- tasks

/// Kinds of asynchronous index task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SearchTaskKind {
    Ingest,
    Delete,
    Crawl,
}

/// Task states: `pending` until its turn in the index's queue, `progress`
/// while applied, then `success` (every entry applied) or `failed` (at
/// least one entry rejected, or the task could not run at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SearchTaskState {
    Pending,
    Progress,
    Success,
    Failed,
}

impl SearchTaskState {
    pub fn is_final(self) -> bool {
        matches!(self, SearchTaskState::Success | SearchTaskState::Failed)
    }
}

/// One entry an ingest task did not apply, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectedEntry {
    /// Position in the request's list (0 for a single entry).
    pub position: usize,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<String>,
    pub reason: String,
}

/// The answer to an ingest or delete request: the task that will apply it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskSubmitted {
    pub task_id: SearchTaskId,
    pub state: SearchTaskState,
}

/// A task document.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchTaskInfo {
    pub task_id: SearchTaskId,
    pub index_id: SearchIndexId,
    pub kind: SearchTaskKind,
    pub state: SearchTaskState,
    pub submitted_by: IdentityId,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Entries in the request (ingest), or found so far (crawl).
    pub entries_total: u64,
    /// Entries written (ingest, crawl) or removed (delete).
    pub entries_applied: u64,
    #[serde(default)]
    pub rejected: Vec<RejectedEntry>,
    /// Why the task as a whole failed, when it did not get to its entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

// ---------------------------------------------------------------------- query

/// How `q` is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum QueryMode {
    /// Words, every one of which must occur in some string field (case
    /// does not matter; punctuation separates words).
    #[default]
    Simple,
    /// `field:value`, `AND`/`OR`/`NOT` (and `-term`), `"phrases"`,
    /// `field:[a TO b]` ranges with `*` for an open end, `*`/`?` wildcards,
    /// and parentheses. Adjacent terms without an operator are ANDed.
    Advanced,
}

/// What matches: text plus filters. Shared by queries, scrolls and
/// delete-by-query.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchQuery {
    /// Absent or empty matches every entry (that the filters keep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(default)]
    pub mode: QueryMode,
    /// Every filter must hold; these also narrow the facet counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
}

/// A filter on one field, or a combination. Values are JSON: strings for
/// string fields (exact, case-sensitive), numbers for numbers, RFC 3339 or
/// `YYYY-MM-DD` strings for dates, booleans for booleans.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// `no_recursion`: the schema refers to itself (not/and/or) instead of
// expanding forever when the OpenAPI document is built.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(no_recursion))]
pub enum Filter {
    /// Some value of the field equals one of `values`.
    MatchAny {
        field_name: String,
        values: Vec<Value>,
    },
    /// Every one of `values` is among the field's values.
    MatchAll {
        field_name: String,
        values: Vec<Value>,
    },
    /// Some value lies in one of the ranges (bounds inclusive; `"*"` or
    /// absent is open).
    Range {
        field_name: String,
        values: Vec<RangeBound>,
    },
    /// The field has at least one value.
    Exists {
        field_name: String,
    },
    /// A string value matches the pattern: `*` any run, `?` one character,
    /// case-sensitive, whole value.
    Like {
        field_name: String,
        value: String,
    },
    Not {
        filter: Box<Filter>,
    },
    And {
        filters: Vec<Filter>,
    },
    Or {
        filters: Vec<Filter>,
    },
}

/// One range of a `range` filter or a histogram.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RangeBound {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

/// `POST /v1/search/indexes/{id}/query` (and the `GET` form's parameters).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchRequest {
    #[serde(flatten)]
    pub query: SearchQuery,
    /// Applied after the facets are counted: narrow the results, not the counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_facet_filters: Vec<Filter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facets: Vec<Facet>,
    /// Sort keys in order; none sorts by relevance (then by subject, entry id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sort: Vec<SortField>,
    /// Weights of fields in the relevance of free text (default 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boosts: Vec<Boost>,
    #[serde(default)]
    pub offset: usize,
    /// Page size; default 10, at most [`MAX_PAGE_SIZE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Index admins only: ignore `visible_to`.
    #[serde(default)]
    pub bypass_visibility: bool,
}

/// `POST /v1/search/indexes/{id}/scroll`: every matching entry, page by
/// page, in subject and entry-id order, with no cap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScrollRequest {
    #[serde(flatten)]
    pub query: SearchQuery,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The `marker` of the previous page; absent for the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
    #[serde(default)]
    pub bypass_visibility: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

/// Sort by a field (number, date, string exact value or boolean). An entry
/// without the field sorts last either way; a multi-valued field sorts by
/// its smallest value (asc) or largest (desc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SortField {
    pub field_name: String,
    #[serde(default)]
    pub order: SortOrder,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Boost {
    pub field_name: String,
    pub factor: f64,
}

/// A facet: counts or a statistic over the matching entries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Facet {
    /// Names the result; defaults to the field name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub field_name: String,
    #[serde(flatten)]
    pub kind: FacetKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FacetKind {
    /// The most frequent values (string, number, boolean fields), largest
    /// count first, ties by value; `size` buckets (default 10, at most 1,000).
    Terms {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<usize>,
    },
    /// `size` equal-width buckets between `low` and `high` (number fields).
    NumericHistogram {
        size: usize,
        histogram_range: HistogramRange,
    },
    /// Buckets of one calendar `interval` (date fields), empty ones omitted.
    DateHistogram {
        date_interval: DateInterval,
    },
    Sum,
    Avg,
    /// Distinct values (exact).
    DistinctCount,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistogramRange {
    pub low: f64,
    pub high: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DateInterval {
    Year,
    Month,
    Day,
    Hour,
    Minute,
}

// -------------------------------------------------------------------- results

/// One entry of a result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultEntry {
    pub entry_id: Option<String>,
    pub content: Value,
    /// Present only for index admins and writers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_to: Option<Vec<String>>,
}

/// Consecutive entries of one subject (the anchor's `GMetaResult`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubjectResult {
    pub subject: String,
    pub entries: Vec<ResultEntry>,
}

/// One bucket of a terms or histogram facet. `value` is the term (terms),
/// or the bucket's lower bound (numeric histogram: a number; date
/// histogram: an RFC 3339 string); `to` the exclusive upper bound.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bucket {
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FacetResult {
    pub name: String,
    /// Terms and histograms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<Bucket>>,
    /// `sum`, `avg`, `distinct_count` (`avg` of nothing is null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// The answer to a query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchResult {
    /// Entries matching (after every filter), not only this page's.
    pub total: u64,
    /// Entries on this page.
    pub count: u64,
    pub offset: usize,
    pub has_next_page: bool,
    pub gmeta: Vec<SubjectResult>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facet_results: Vec<FacetResult>,
}

/// The answer to a scroll request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScrollResult {
    pub count: u64,
    pub has_next_page: bool,
    /// Pass back for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
    pub gmeta: Vec<SubjectResult>,
}
