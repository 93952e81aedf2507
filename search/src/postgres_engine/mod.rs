//! The PostgreSQL engine: several service replicas share one database, so
//! every index, its field map and its entries live in tables there.
//!
//! Owns three tables, prefixed `search_engine_` so they never collide with
//! the service's own tables in the same database, created (if absent) by
//! [`PostgresEngine::open`]:
//! - `search_engine_indexes`: one row per index. Writes to an index lock
//!   its row (`FOR UPDATE`), so ingests and deletes from different
//!   replicas apply one at a time and the field map cannot race.
//! - `search_engine_fields`: the field map (name, fixed type) per index.
//! - `search_engine_entries`: one row per entry, keyed by a byte-ordered
//!   encoding of (subject, entry id) (see [`words::row_key`]): `content`
//!   (the JSON text as given: never queried, so not `jsonb`, and it reads
//!   back exactly), `visible_to` (GIN), `fields` (the flattened content, name to array of
//!   values, dates as epoch microseconds; GIN `jsonb_path_ops` for exact
//!   matches) and `words` (a `tsvector` of [`crate::text::words`]; GIN).
//!
//! Needs PostgreSQL 12 or later (`WITH ... AS MATERIALIZED`).
//!
//! Request rules (what is invalid, limits, markers, grouping, how numbers
//! and dates are shown) are [`crate::plan`]'s; this module only turns a
//! plan into SQL, so both engines agree on them.
//!
//! It must not decide who may see what: visibility arrives as a
//! [`Visibility`] and is enforced in SQL (`visible_to && $principals`),
//! never by filtering a page afterwards. Nothing a caller wrote becomes
//! SQL text: values, field names and patterns are bind parameters.
//!
//! Where it differs from the tantivy engine: relevance is PostgreSQL's
//! `ts_rank` (plus per-field boosts), not BM25, so results ordered by
//! relevance hold the same entries in a different order; the conformance
//! suite compares such results as sets. PostgreSQL's `tsvector` limits
//! show in three places: a phrase past word position 16,383 of an entry,
//! or past a word's 256th occurrence, may not match; an entry whose words
//! need more than 1 MiB of `tsvector` is rejected (the tantivy engine takes
//! it); and U+0000, which PostgreSQL text cannot hold, rejects an entry.

mod sql;
mod words;

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lattice_protocol::search::{
    Bucket, DateInterval, DeleteTarget, Entry, FacetResult, FieldType, ResultEntry, ScrollRequest,
    ScrollResult, SearchRequest, SearchResult, SubjectResult, MAX_ENTRIES_PER_SUBJECT,
};
use lattice_protocol::SearchIndexId;
use serde_json::Value;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};

use self::sql::{stored_json, Arg, Sql};
use crate::plan::{
    self, check_entry, date_bucket, format_date, group_by_subject, histogram_bound, number_value,
    Cond, EntryKey, FacetPlan, FacetPlanKind,
};
use crate::schema::{flatten, type_name};
use crate::{EntryOutcome, Limits, SearchEngine, SearchError, Visibility};

/// Rows per `INSERT ... SELECT FROM UNNEST(...)` statement.
const INSERT_BATCH: usize = 500;
/// Taken (per transaction) while creating the tables, so replicas starting
/// together do not race on `CREATE TABLE IF NOT EXISTS`.
const SCHEMA_LOCK: i64 = 0x5EA4_C4E6_0001;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS search_engine_indexes (
        index_id uuid PRIMARY KEY,
        created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS search_engine_fields (
        index_id uuid NOT NULL REFERENCES search_engine_indexes ON DELETE CASCADE,
        name text NOT NULL,
        type text NOT NULL,
        PRIMARY KEY (index_id, name))",
    "CREATE TABLE IF NOT EXISTS search_engine_entries (
        index_id uuid NOT NULL REFERENCES search_engine_indexes ON DELETE CASCADE,
        key text COLLATE \"C\" NOT NULL,
        subject text COLLATE \"C\" NOT NULL,
        entry_id text COLLATE \"C\",
        content text NOT NULL,
        visible_to text[] NOT NULL,
        fields jsonb NOT NULL,
        words tsvector NOT NULL,
        PRIMARY KEY (index_id, key))",
    "CREATE INDEX IF NOT EXISTS search_engine_entries_subject
        ON search_engine_entries (index_id, subject)",
    "CREATE INDEX IF NOT EXISTS search_engine_entries_visible_to
        ON search_engine_entries USING GIN (visible_to)",
    "CREATE INDEX IF NOT EXISTS search_engine_entries_fields
        ON search_engine_entries USING GIN (fields jsonb_path_ops)",
    "CREATE INDEX IF NOT EXISTS search_engine_entries_words
        ON search_engine_entries USING GIN (words)",
];

/// The PostgreSQL engine: a handle on a connection pool, cheap to clone.
#[derive(Clone, Debug)]
pub struct PostgresEngine {
    pool: PgPool,
}

fn engine_error(err: sqlx::Error) -> SearchError {
    SearchError::Engine(err.to_string())
}

/// Reads back what [`type_name`] wrote to `search_engine_fields.type`.
fn field_type_from(name: &str) -> Result<FieldType, SearchError> {
    match name {
        "string" => Ok(FieldType::String),
        "number" => Ok(FieldType::Number),
        "date" => Ok(FieldType::Date),
        "boolean" => Ok(FieldType::Boolean),
        other => Err(SearchError::Engine(format!(
            "unknown field type `{other}` in search_engine_fields"
        ))),
    }
}

/// One row to upsert.
struct NewRow {
    key: String,
    subject: String,
    entry_id: Option<String>,
    content: String,
    visible_to: String,
    fields: String,
    words: String,
}

/// Rows as the column arrays one `INSERT ... FROM UNNEST(...)` binds.
#[derive(Default)]
struct Columns {
    keys: Vec<String>,
    subjects: Vec<String>,
    entry_ids: Vec<Option<String>>,
    contents: Vec<String>,
    visible_to: Vec<String>,
    fields: Vec<String>,
    words: Vec<String>,
}

impl Columns {
    fn of(rows: impl Iterator<Item = NewRow>) -> Self {
        let mut columns = Columns::default();
        for row in rows {
            columns.keys.push(row.key);
            columns.subjects.push(row.subject);
            columns.entry_ids.push(row.entry_id);
            columns.contents.push(row.content);
            columns.visible_to.push(row.visible_to);
            columns.fields.push(row.fields);
            columns.words.push(row.words);
        }
        columns
    }
}

impl PostgresEngine {
    /// Opens the engine on `pool`, creating its tables if absent.
    pub async fn open(pool: PgPool) -> Result<Self, SearchError> {
        let mut tx = pool.begin().await.map_err(engine_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(engine_error)?;
        for statement in SCHEMA {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(engine_error)?;
        }
        tx.commit().await.map_err(engine_error)?;
        Ok(Self { pool })
    }

    /// A read-only transaction seeing one snapshot, so the total, the page
    /// and the facets of one answer agree even while a write lands.
    async fn read(&self) -> Result<Transaction<'static, Postgres>, SearchError> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(engine_error)
    }

    /// Checks the index exists; with `lock`, locks its row until the
    /// transaction ends (writers to one index go one at a time).
    async fn index_exists(
        tx: &mut Transaction<'static, Postgres>,
        index: SearchIndexId,
        lock: bool,
    ) -> Result<(), SearchError> {
        let statement = if lock {
            "SELECT 1 FROM search_engine_indexes WHERE index_id = $1::uuid FOR UPDATE"
        } else {
            "SELECT 1 FROM search_engine_indexes WHERE index_id = $1::uuid"
        };
        let found = sqlx::query(statement)
            .bind(index.to_string())
            .fetch_optional(&mut **tx)
            .await
            .map_err(engine_error)?;
        match found {
            Some(_) => Ok(()),
            None => Err(SearchError::UnknownIndex(index)),
        }
    }

    /// The index's field map; `UnknownIndex` when there is no such index.
    /// One round trip: the index row joined to its fields.
    async fn load_fields(
        tx: &mut Transaction<'static, Postgres>,
        index: SearchIndexId,
    ) -> Result<BTreeMap<String, FieldType>, SearchError> {
        let rows = sqlx::query(
            "SELECT f.name, f.type FROM search_engine_indexes i \
             LEFT JOIN search_engine_fields f ON f.index_id = i.index_id \
             WHERE i.index_id = $1::uuid",
        )
        .bind(index.to_string())
        .fetch_all(&mut **tx)
        .await
        .map_err(engine_error)?;
        if rows.is_empty() {
            return Err(SearchError::UnknownIndex(index));
        }
        let mut fields = BTreeMap::new();
        for row in rows {
            let name: Option<String> = row.get(0);
            let ty: Option<String> = row.get(1);
            if let (Some(name), Some(ty)) = (name, ty) {
                fields.insert(name, field_type_from(&ty)?);
            }
        }
        Ok(fields)
    }

    /// `SELECT ... FROM search_engine_entries e WHERE` the index, the
    /// visibility and `cond`.
    fn matching(select: &str, index: SearchIndexId, visibility: &Visibility, cond: &Cond) -> Sql {
        let mut sql = Sql::new("");
        Self::push_matching(&mut sql, select, index, visibility, cond);
        sql
    }

    fn push_matching(
        sql: &mut Sql,
        select: &str,
        index: SearchIndexId,
        visibility: &Visibility,
        cond: &Cond,
    ) {
        sql.push(select)
            .push(" FROM search_engine_entries e WHERE e.index_id = ")
            .bind_text(index.to_string())
            .push("::uuid");
        if let Some(principals) = plan::visible_principals(visibility) {
            sql.push(" AND e.visible_to && ")
                .bind(Arg::Texts(principals.to_vec()))
                .push("::text[]");
        }
        if *cond != Cond::All {
            sql.push(" AND ");
            sql::cond(sql, cond);
        }
    }

    async fn fetch_entries(
        tx: &mut Transaction<'static, Postgres>,
        sql: &Sql,
    ) -> Result<Vec<(EntryKey, ResultEntry)>, SearchError> {
        let rows = sql
            .query()
            .fetch_all(&mut **tx)
            .await
            .map_err(engine_error)?;
        rows.iter()
            .map(|row| {
                let content: String = row.get("content");
                let content = serde_json::from_str(&content)
                    .map_err(|e| SearchError::Engine(format!("stored content is not JSON: {e}")))?;
                let entry_id: Option<String> = row.get("entry_id");
                Ok((
                    EntryKey::new(row.get("subject"), entry_id.as_deref()),
                    ResultEntry {
                        entry_id,
                        content,
                        visible_to: Some(row.get("visible_to")),
                    },
                ))
            })
            .collect()
    }

    /// Every facet in one statement over the matching entries, gathered
    /// once (`WITH m AS MATERIALIZED`): one scan, not one per facet. Each
    /// facet is a scalar subquery answering `jsonb` (see [`facet_sql`]).
    async fn facets(
        tx: &mut Transaction<'static, Postgres>,
        index: SearchIndexId,
        visibility: &Visibility,
        matching: &Cond,
        facets: &[FacetPlan],
    ) -> Result<Vec<FacetResult>, SearchError> {
        if facets.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new("WITH m AS MATERIALIZED (");
        Self::push_matching(&mut sql, "SELECT e.fields", index, visibility, matching);
        sql.push(") SELECT ");
        for (i, facet) in facets.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(");
            facet_sql(&mut sql, facet);
            sql.push(&format!(")::text AS f{i}"));
        }
        let row = sql
            .query()
            .fetch_one(&mut **tx)
            .await
            .map_err(engine_error)?;
        facets
            .iter()
            .enumerate()
            .map(|(i, facet)| {
                let answer: Option<String> = row.get(i);
                let answer: Value = match answer {
                    Some(text) => serde_json::from_str(&text)
                        .map_err(|e| SearchError::Engine(format!("facet answer: {e}")))?,
                    None => Value::Null,
                };
                Ok(facet_result(facet, answer))
            })
            .collect()
    }
}

/// A scalar subquery over `m` (the matching entries' `fields`) answering
/// one facet as `jsonb`: terms and histograms `[[value, count], ...]` in
/// bucket order, statistics a number (or null).
fn facet_sql(sql: &mut Sql, facet: &FacetPlan) {
    let field = facet.field.as_str();
    match &facet.kind {
        FacetPlanKind::Terms { size } => {
            let order = match facet.field_type {
                FieldType::String => "(t.value #>> '{}') COLLATE \"C\"",
                FieldType::Boolean => "t.value::boolean",
                FieldType::Number | FieldType::Date => "t.value::float8",
            };
            sql.push(&format!(
                "SELECT coalesce(jsonb_agg(jsonb_build_array(t.value, t.n) \
                 ORDER BY t.n DESC, {order} ASC), '[]') FROM \
                 (SELECT d.x AS value, count(*) AS n FROM m, LATERAL \
                 (SELECT DISTINCT x FROM jsonb_array_elements(m.fields -> "
            ))
            .bind_text(field)
            .push(&format!(
                ") AS v(x)) AS d GROUP BY d.x ORDER BY n DESC, {} ASC LIMIT ",
                order.replace("t.value", "d.x")
            ))
            .bind(Arg::I64(*size as i64))
            .push(") AS t");
        }
        FacetPlanKind::NumericHistogram { size, low, high } => {
            // The same arithmetic as `plan::histogram_bucket`, in float8.
            let width = (high - low) / *size as f64;
            sql.push(
                "SELECT coalesce(jsonb_agg(jsonb_build_array(t.b, t.n) ORDER BY t.b), '[]') \
                 FROM (SELECT d.b, count(*) AS n FROM m, LATERAL \
                 (SELECT DISTINCT least(floor((v.x::float8 - ",
            )
            .bind(Arg::F64(*low))
            .push(") / ")
            .bind(Arg::F64(width))
            .push(")::int8, ")
            .bind(Arg::I64(*size as i64 - 1))
            .push(") AS b FROM jsonb_array_elements(m.fields -> ")
            .bind_text(field)
            .push(") AS v(x) WHERE v.x::float8 >= ")
            .bind(Arg::F64(*low))
            .push(" AND v.x::float8 < ")
            .bind(Arg::F64(*high))
            .push(") AS d GROUP BY d.b) AS t");
        }
        FacetPlanKind::DateHistogram { interval } => {
            // Buckets in integer microseconds (no float rounding at a
            // boundary); their bounds are named by `plan::date_bucket`.
            let unit = match interval {
                DateInterval::Year => "year",
                DateInterval::Month => "month",
                DateInterval::Day => "day",
                DateInterval::Hour => "hour",
                DateInterval::Minute => "minute",
            };
            sql.push(
                "SELECT coalesce(jsonb_agg(jsonb_build_array(t.b, t.n) ORDER BY t.b), '[]') \
                 FROM (SELECT (extract(epoch FROM d.b) * 1000000)::int8 AS b, count(*) AS n \
                 FROM m, LATERAL (SELECT DISTINCT date_trunc(",
            )
            .bind_text(unit)
            .push(
                ", timestamp '1970-01-01' + v.x::numeric::int8 * interval '1 microsecond') AS b \
                 FROM jsonb_array_elements(m.fields -> ",
            )
            .bind_text(field)
            .push(") AS v(x)) AS d GROUP BY d.b) AS t");
        }
        FacetPlanKind::Sum | FacetPlanKind::Avg | FacetPlanKind::DistinctCount => {
            let aggregate = match facet.kind {
                FacetPlanKind::Sum => "coalesce(sum(v.x::float8), 0)",
                FacetPlanKind::Avg => "avg(v.x::float8)",
                _ => "count(DISTINCT v.x)",
            };
            sql.push(&format!(
                "SELECT to_jsonb({aggregate}) FROM m, jsonb_array_elements(m.fields -> "
            ))
            .bind_text(field)
            .push(") AS v(x)");
        }
    }
}

/// A facet's result from [`facet_sql`]'s answer.
fn facet_result(facet: &FacetPlan, answer: Value) -> FacetResult {
    let pairs = || -> Vec<(Value, u64)> {
        match &answer {
            Value::Array(items) => items
                .iter()
                .filter_map(|pair| {
                    let value = pair.get(0)?.clone();
                    let count = pair.get(1)?.as_u64()?;
                    Some((value, count))
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let number = |value: &Value| value.as_f64().map_or(Value::Null, number_value);
    let (buckets, value) = match &facet.kind {
        FacetPlanKind::Terms { .. } => {
            let buckets = pairs()
                .into_iter()
                .map(|(value, count)| Bucket {
                    value: if value.is_number() {
                        number(&value)
                    } else {
                        value
                    },
                    to: None,
                    count,
                })
                .collect();
            (Some(buckets), None)
        }
        FacetPlanKind::NumericHistogram { size, low, high } => {
            // Every bucket, empty ones too.
            let mut counts = vec![0u64; *size];
            for (bucket, count) in pairs() {
                if let Some(slot) = bucket
                    .as_u64()
                    .and_then(|i| counts.get_mut(usize::try_from(i).ok()?))
                {
                    *slot += count;
                }
            }
            let buckets = counts
                .into_iter()
                .enumerate()
                .map(|(i, count)| Bucket {
                    value: number_value(histogram_bound(i, *low, *high, *size)),
                    to: Some(number_value(histogram_bound(i + 1, *low, *high, *size))),
                    count,
                })
                .collect();
            (Some(buckets), None)
        }
        FacetPlanKind::DateHistogram { interval } => {
            let buckets = pairs()
                .into_iter()
                .filter_map(|(start, count)| {
                    let start = DateTime::<Utc>::from_timestamp_micros(start.as_i64()?)?;
                    let (start, end) = date_bucket(start, *interval);
                    Some(Bucket {
                        value: Value::String(format_date(start)),
                        to: Some(Value::String(format_date(end))),
                        count,
                    })
                })
                .collect();
            (Some(buckets), None)
        }
        FacetPlanKind::Sum | FacetPlanKind::Avg => (None, Some(number(&answer))),
        FacetPlanKind::DistinctCount => (None, Some(Value::from(answer.as_u64().unwrap_or(0)))),
    };
    FacetResult {
        name: facet.name.clone(),
        buckets,
        value,
    }
}

const ENTRY_COLUMNS: &str = "SELECT e.subject, e.entry_id, e.content, e.visible_to";

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The row key of an entry key (see [`words::row_key`]).
fn row_key(key: &EntryKey) -> String {
    words::row_key(&key.subject, key.entry_id.as_deref())
}

/// What an ingest writes: an outcome per entry, the fields it adds, and
/// the rows to upsert (one per key; a later entry of one key replaces an
/// earlier one, as one statement may not upsert a key twice).
struct Prepared {
    outcomes: Vec<EntryOutcome>,
    new_fields: Vec<(String, FieldType)>,
    rows: Vec<NewRow>,
}

/// Checks and flattens `entries` in order against the index's `fields`
/// (growing as entries add fields) and the entry ids each subject holds.
fn prepare(
    entries: Vec<Entry>,
    mut fields: BTreeMap<String, FieldType>,
    mut held: HashMap<String, HashSet<Option<String>>>,
    limits: &Limits,
) -> Prepared {
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut new_fields: Vec<(String, FieldType)> = Vec::new();
    let mut pending: Vec<NewRow> = Vec::new();
    let mut pending_at: HashMap<String, usize> = HashMap::new();
    for entry in entries {
        let principals = match check_entry(&entry, limits) {
            // PostgreSQL text and jsonb cannot hold U+0000.
            Ok(_) if holds_nul(&entry.content) => {
                outcomes.push(EntryOutcome::Rejected(
                    "content holds a NUL character (U+0000), which this engine cannot store"
                        .to_owned(),
                ));
                continue;
            }
            Ok(principals) => principals,
            Err(reason) => {
                outcomes.push(EntryOutcome::Rejected(reason));
                continue;
            }
        };
        let (doc, added) = match flatten(&entry.content, &fields, limits) {
            Ok(flat) => flat,
            Err(reason) => {
                outcomes.push(EntryOutcome::Rejected(reason));
                continue;
            }
        };
        let text = match words::tsvector(&doc) {
            Ok(text) => text,
            Err(reason) => {
                outcomes.push(EntryOutcome::Rejected(reason));
                continue;
            }
        };
        let ids = held.entry(entry.subject.clone()).or_default();
        if !ids.contains(&entry.id) && ids.len() >= MAX_ENTRIES_PER_SUBJECT {
            outcomes.push(EntryOutcome::Rejected(format!(
                "subject `{}` already holds {MAX_ENTRIES_PER_SUBJECT} entries, the most one subject may hold",
                entry.subject
            )));
            continue;
        }
        ids.insert(entry.id.clone());
        for (name, ty) in added {
            fields.insert(name.clone(), ty);
            new_fields.push((name, ty));
        }
        let stored: serde_json::Map<String, Value> = doc
            .fields
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(name, values)| {
                (
                    name.clone(),
                    Value::Array(values.iter().map(stored_json).collect()),
                )
            })
            .collect();
        let key = words::row_key(&entry.subject, entry.id.as_deref());
        let row = NewRow {
            key: key.clone(),
            words: text,
            fields: Value::Object(stored).to_string(),
            content: entry.content.to_string(),
            visible_to: Value::from(principals).to_string(),
            subject: entry.subject,
            entry_id: entry.id,
        };
        // One statement may not upsert a key twice: the later entry wins.
        match pending_at.get(&key) {
            Some(&at) => pending[at] = row,
            None => {
                pending_at.insert(key, pending.len());
                pending.push(row);
            }
        }
        outcomes.push(EntryOutcome::Applied);
    }
    Prepared {
        outcomes,
        new_fields,
        rows: pending,
    }
}

#[async_trait]
impl SearchEngine for PostgresEngine {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn create_index(&self, index: SearchIndexId) -> Result<(), SearchError> {
        sqlx::query(
            "INSERT INTO search_engine_indexes (index_id) VALUES ($1::uuid) ON CONFLICT DO NOTHING",
        )
        .bind(index.to_string())
        .execute(&self.pool)
        .await
        .map_err(engine_error)?;
        Ok(())
    }

    async fn drop_index(&self, index: SearchIndexId) -> Result<(), SearchError> {
        // Fields and entries go with it (ON DELETE CASCADE).
        let dropped = sqlx::query("DELETE FROM search_engine_indexes WHERE index_id = $1::uuid")
            .bind(index.to_string())
            .execute(&self.pool)
            .await
            .map_err(engine_error)?
            .rows_affected();
        if dropped == 0 {
            return Err(SearchError::UnknownIndex(index));
        }
        Ok(())
    }

    async fn fields(
        &self,
        index: SearchIndexId,
    ) -> Result<BTreeMap<String, FieldType>, SearchError> {
        let mut tx = self.read().await?;
        let fields = Self::load_fields(&mut tx, index).await?;
        tx.commit().await.map_err(engine_error)?;
        Ok(fields)
    }

    async fn count(&self, index: SearchIndexId) -> Result<u64, SearchError> {
        // No row: no such index.
        let count: Option<i64> = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM search_engine_entries e WHERE e.index_id = i.index_id) \
             FROM search_engine_indexes i WHERE i.index_id = $1::uuid",
        )
        .bind(index.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(engine_error)?;
        count
            .map(|count| count as u64)
            .ok_or(SearchError::UnknownIndex(index))
    }

    #[tracing::instrument(skip_all, fields(index_id = %index, entries = entries.len()))]
    async fn ingest(
        &self,
        index: SearchIndexId,
        entries: Vec<Entry>,
        limits: &Limits,
    ) -> Result<Vec<EntryOutcome>, SearchError> {
        let mut tx = self.pool.begin().await.map_err(engine_error)?;
        Self::index_exists(&mut tx, index, true).await?;
        let fields = Self::load_fields(&mut tx, index).await?;

        // Entry ids each subject already holds, for the per-subject cap.
        let subjects: Vec<String> = entries
            .iter()
            .map(|e| e.subject.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut held: HashMap<String, HashSet<Option<String>>> = HashMap::new();
        let rows = sqlx::query(
            "SELECT subject, entry_id FROM search_engine_entries \
             WHERE index_id = $1::uuid AND subject = ANY($2::text[])",
        )
        .bind(index.to_string())
        .bind(subjects)
        .fetch_all(&mut *tx)
        .await
        .map_err(engine_error)?;
        for row in rows {
            held.entry(row.get("subject"))
                .or_default()
                .insert(row.get("entry_id"));
        }

        // Checking, flattening and tokenizing is CPU work: off the async threads.
        let limits = limits.clone();
        let Prepared {
            outcomes,
            new_fields,
            rows: pending,
        } = tokio::task::spawn_blocking(move || prepare(entries, fields, held, &limits))
            .await
            .map_err(|e| SearchError::Engine(format!("preparing entries: {e}")))?;

        if !new_fields.is_empty() {
            let (names, types): (Vec<String>, Vec<String>) = new_fields
                .into_iter()
                .map(|(name, ty)| (name, type_name(ty).to_owned()))
                .unzip();
            sqlx::query(
                "INSERT INTO search_engine_fields (index_id, name, type) \
                 SELECT $1::uuid, n, t FROM UNNEST($2::text[], $3::text[]) AS f(n, t) \
                 ON CONFLICT (index_id, name) DO NOTHING",
            )
            .bind(index.to_string())
            .bind(names)
            .bind(types)
            .execute(&mut *tx)
            .await
            .map_err(engine_error)?;
        }

        let mut pending = pending.into_iter().peekable();
        while pending.peek().is_some() {
            let columns = Columns::of(pending.by_ref().take(INSERT_BATCH));
            let mut sql = Sql::new(
                "INSERT INTO search_engine_entries \
                 (index_id, key, subject, entry_id, content, visible_to, fields, words) \
                 SELECT ",
            );
            sql.bind_text(index.to_string())
                .push(
                    "::uuid, r.key, r.subject, r.entry_id, r.content, \
                     ARRAY(SELECT jsonb_array_elements_text(r.visible_to::jsonb)), \
                     r.fields::jsonb, r.words::tsvector FROM UNNEST(",
                )
                .bind(Arg::Texts(columns.keys))
                .push("::text[], ")
                .bind(Arg::Texts(columns.subjects))
                .push("::text[], ")
                .bind(Arg::OptTexts(columns.entry_ids))
                .push("::text[], ")
                .bind(Arg::Texts(columns.contents))
                .push("::text[], ")
                .bind(Arg::Texts(columns.visible_to))
                .push("::text[], ")
                .bind(Arg::Texts(columns.fields))
                .push("::text[], ")
                .bind(Arg::Texts(columns.words))
                .push(
                    "::text[]) AS r(key, subject, entry_id, content, visible_to, fields, words) \
                     ON CONFLICT (index_id, key) DO UPDATE SET subject = EXCLUDED.subject, \
                     entry_id = EXCLUDED.entry_id, content = EXCLUDED.content, \
                     visible_to = EXCLUDED.visible_to, fields = EXCLUDED.fields, \
                     words = EXCLUDED.words",
                );
            sql.query().execute(&mut *tx).await.map_err(engine_error)?;
        }
        tx.commit().await.map_err(engine_error)?;
        Ok(outcomes)
    }

    #[tracing::instrument(skip_all, fields(index_id = %index))]
    async fn delete(
        &self,
        index: SearchIndexId,
        target: &DeleteTarget,
    ) -> Result<u64, SearchError> {
        let mut tx = self.pool.begin().await.map_err(engine_error)?;
        Self::index_exists(&mut tx, index, true).await?;
        let mut sql = Sql::new("DELETE FROM search_engine_entries AS e WHERE e.index_id = ");
        sql.bind_text(index.to_string()).push("::uuid AND ");
        match target {
            DeleteTarget::Subjects { subjects } => {
                sql.push("e.subject = ANY(")
                    .bind(Arg::Texts(subjects.clone()))
                    .push("::text[])");
            }
            DeleteTarget::Entry { subject, entry_id } => {
                sql.push("e.key = ")
                    .bind_text(words::row_key(subject, entry_id.as_deref()));
            }
            DeleteTarget::Query { query } => {
                let fields = Self::load_fields(&mut tx, index).await?;
                let cond = plan::plan_query(query, &fields)?;
                sql::cond(&mut sql, &cond);
            }
        }
        let removed = sql
            .query()
            .execute(&mut *tx)
            .await
            .map_err(engine_error)?
            .rows_affected();
        tx.commit().await.map_err(engine_error)?;
        Ok(removed)
    }

    #[tracing::instrument(skip_all, fields(index_id = %index))]
    async fn search(
        &self,
        index: SearchIndexId,
        request: &SearchRequest,
        visibility: &Visibility,
    ) -> Result<SearchResult, SearchError> {
        let mut tx = self.read().await?;
        let fields = Self::load_fields(&mut tx, index).await?;
        let plan = plan::plan_search(request, &fields)?;

        // Facets count the query and filters, not the post-facet filters.
        let facet_results =
            Self::facets(&mut tx, index, visibility, &plan.matching, &plan.facets).await?;

        let hits = Cond::and(vec![plan.matching.clone(), plan.post_filter.clone()]);
        let total: i64 = Self::matching("SELECT count(*) AS n", index, visibility, &hits)
            .query()
            .fetch_one(&mut *tx)
            .await
            .map_err(engine_error)?
            .get("n");

        let mut page = Self::matching(ENTRY_COLUMNS, index, visibility, &hits);
        page.push(" ORDER BY ");
        for key in &plan.sort {
            sql::sort(&mut page, key);
            page.push(", ");
        }
        let mut lexemes = Vec::new();
        let mut bare = Vec::new();
        sql::positive_words(&plan.matching, &mut lexemes, &mut bare);
        if plan.sort.is_empty() && !lexemes.is_empty() {
            let any = |lexemes: &[String]| {
                lexemes
                    .iter()
                    .map(|l| words::quote_lexeme(l))
                    .collect::<Vec<_>>()
                    .join(" | ")
            };
            page.push("(ts_rank(e.words, ")
                .bind_text(any(&lexemes))
                .push("::tsquery)");
            for (field, factor) in &plan.boosts {
                let qualified: Vec<String> = bare
                    .iter()
                    .map(|w| words::qualified_lexeme(field, w))
                    .collect();
                page.push(" + ")
                    .bind(Arg::F64(factor - 1.0))
                    .push("::float8 * ts_rank(e.words, ")
                    .bind_text(any(&qualified))
                    .push("::tsquery)");
            }
            page.push(") DESC, ");
        }
        page.push("e.key LIMIT ")
            .bind(Arg::I64(plan.limit as i64))
            .push(" OFFSET ")
            .bind(Arg::I64(plan.offset as i64));
        let page = Self::fetch_entries(&mut tx, &page).await?;
        tx.commit().await.map_err(engine_error)?;

        let total = total as u64;
        let count = page.len() as u64;
        Ok(SearchResult {
            total,
            count,
            offset: plan.offset,
            has_next_page: (plan.offset as u64).saturating_add(count) < total,
            gmeta: group_by_subject(page.into_iter().map(|(key, entry)| (key.subject, entry))),
            facet_results,
        })
    }

    #[tracing::instrument(skip_all, fields(index_id = %index))]
    async fn scroll(
        &self,
        index: SearchIndexId,
        request: &ScrollRequest,
        visibility: &Visibility,
    ) -> Result<ScrollResult, SearchError> {
        let mut tx = self.read().await?;
        let fields = Self::load_fields(&mut tx, index).await?;
        let plan = plan::plan_scroll(request, &fields)?;
        let mut sql = Self::matching(ENTRY_COLUMNS, index, visibility, &plan.matching);
        if let Some(after) = &plan.after {
            sql.push(" AND e.key > ").bind_text(row_key(after));
        }
        sql.push(" ORDER BY e.key LIMIT ")
            .bind(Arg::I64(plan.limit as i64 + 1));
        let mut page = Self::fetch_entries(&mut tx, &sql).await?;
        tx.commit().await.map_err(engine_error)?;
        let has_next_page = page.len() > plan.limit;
        page.truncate(plan.limit);
        let marker = if has_next_page {
            page.last().map(|(key, _)| key.marker())
        } else {
            None
        };
        Ok(ScrollResult {
            count: page.len() as u64,
            has_next_page,
            marker,
            gmeta: group_by_subject(page.into_iter().map(|(key, entry)| (key.subject, entry))),
        })
    }

    async fn subject(
        &self,
        index: SearchIndexId,
        subject: &str,
        visibility: &Visibility,
    ) -> Result<Option<SubjectResult>, SearchError> {
        let mut tx = self.read().await?;
        Self::index_exists(&mut tx, index, false).await?;
        let mut sql = Self::matching(ENTRY_COLUMNS, index, visibility, &Cond::All);
        sql.push(" AND e.subject = ")
            .bind_text(subject)
            .push(" ORDER BY e.key");
        let page = Self::fetch_entries(&mut tx, &sql).await?;
        tx.commit().await.map_err(engine_error)?;
        Ok(
            group_by_subject(page.into_iter().map(|(key, entry)| (key.subject, entry)))
                .into_iter()
                .next(),
        )
    }
}
