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
//!   encoding of (subject, entry id) (see [`words::row_key`]): `content`,
//!   `visible_to` (GIN), `fields` (the flattened content, name to array of
//!   values, dates as epoch milliseconds; GIN `jsonb_path_ops` for exact
//!   matches) and `words` (a `tsvector` of [`crate::text::words`]; GIN).
//!
//! It must not decide who may see what: visibility arrives as a
//! [`Visibility`] and is enforced in SQL (`visible_to && $principals`),
//! never by filtering a page afterwards. Nothing a caller wrote becomes
//! SQL text: values, field names and patterns are bind parameters.
//!
//! Where it differs from the tantivy engine: relevance is PostgreSQL's
//! `ts_rank` (plus per-field boosts), not BM25, so results ordered by
//! relevance hold the same entries in a different order; the conformance
//! suite compares such results as sets. A phrase past word position
//! 16,383 of an entry, or a word repeated more than 256 times, may not
//! match (PostgreSQL `tsvector` limits).

mod sql;
mod words;

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Months, SecondsFormat, TimeDelta, TimeZone, Utc};
use lattice_protocol::search::{
    Bucket, DateInterval, DeleteTarget, Entry, Facet, FacetKind, FacetResult, FieldType, QueryMode,
    ResultEntry, ScrollRequest, ScrollResult, SearchQuery, SearchRequest, SearchResult,
    SubjectResult, MAX_ENTRIES_PER_SUBJECT, MAX_PAGE_SIZE, MAX_RESULT_WINDOW, MAX_SUBJECT_BYTES,
};
use lattice_protocol::sharing::Principal;
use lattice_protocol::SearchIndexId;
use serde_json::Value;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};

use self::sql::{number_json, stored_json, Arg, Compiler, Sql};
use crate::query::{self, QueryNode};
use crate::schema::flatten;
use crate::{EntryOutcome, Limits, SearchEngine, SearchError, Visibility};

/// Rows per `INSERT ... SELECT FROM UNNEST(...)` statement.
const INSERT_BATCH: usize = 500;
/// Most buckets of a terms facet or numeric histogram.
const MAX_BUCKETS: usize = 1_000;
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
        content jsonb NOT NULL,
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

fn field_type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "string",
        FieldType::Number => "number",
        FieldType::Date => "date",
        FieldType::Boolean => "boolean",
    }
}

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
        let mut tx = self.pool.begin().await.map_err(engine_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(engine_error)?;
        Ok(tx)
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

    async fn load_fields(
        tx: &mut Transaction<'static, Postgres>,
        index: SearchIndexId,
    ) -> Result<BTreeMap<String, FieldType>, SearchError> {
        let rows =
            sqlx::query("SELECT name, type FROM search_engine_fields WHERE index_id = $1::uuid")
                .bind(index.to_string())
                .fetch_all(&mut **tx)
                .await
                .map_err(engine_error)?;
        rows.iter()
            .map(|row| {
                let name: String = row.get(0);
                let ty: String = row.get(1);
                Ok((name, field_type_from(&ty)?))
            })
            .collect()
    }

    /// `WHERE` conditions every read shares: the index, the visibility,
    /// the query text and the filters.
    fn matching(
        sql: &mut Sql,
        compiler: &Compiler<'_>,
        index: SearchIndexId,
        node: &QueryNode,
        query: &SearchQuery,
        visibility: &Visibility,
    ) -> Result<(), SearchError> {
        sql.push(" WHERE e.index_id = ")
            .bind_text(index.to_string())
            .push("::uuid");
        if let Visibility::Principals(principals) = visibility {
            sql.push(" AND e.visible_to && ")
                .bind(Arg::Texts(principals.clone()))
                .push("::text[]");
        }
        if *node != QueryNode::All {
            sql.push(" AND ");
            compiler.node(sql, node)?;
        }
        for filter in &query.filters {
            sql.push(" AND ");
            compiler.filter(sql, filter)?;
        }
        Ok(())
    }

    async fn fetch_entries(
        tx: &mut Transaction<'static, Postgres>,
        sql: &Sql,
    ) -> Result<Vec<(String, String, ResultEntry)>, SearchError> {
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
                Ok((
                    row.get::<String, _>("key"),
                    row.get::<String, _>("subject"),
                    ResultEntry {
                        entry_id: row.get("entry_id"),
                        content,
                        visible_to: Some(row.get("visible_to")),
                    },
                ))
            })
            .collect()
    }

    async fn facet(
        tx: &mut Transaction<'static, Postgres>,
        compiler: &Compiler<'_>,
        matched: &Sql,
        facet: &Facet,
    ) -> Result<FacetResult, SearchError> {
        let name = facet
            .name
            .clone()
            .unwrap_or_else(|| facet.field_name.clone());
        let field = facet.field_name.as_str();
        let ty = compiler.field_type(field)?;
        let wrong_type = |what: &str| {
            SearchError::invalid(format!(
                "a {what} facet cannot count field `{field}` of type {}",
                field_type_name(ty)
            ))
        };
        let mut sql = matched.clone();
        match &facet.kind {
            FacetKind::Terms { size } => {
                let size = size.unwrap_or(10);
                if size == 0 || size > MAX_BUCKETS {
                    return Err(SearchError::invalid(format!(
                        "a terms facet's size is 1 to {MAX_BUCKETS}, not {size}"
                    )));
                }
                let order = match ty {
                    FieldType::String => "(d.x #>> '{}') COLLATE \"C\"",
                    FieldType::Number => "d.x::float8",
                    FieldType::Boolean => "d.x::boolean",
                    FieldType::Date => return Err(wrong_type("terms")),
                };
                sql.push(
                    ") SELECT d.x::text AS value, count(*) AS n FROM m, LATERAL \
                     (SELECT DISTINCT x FROM jsonb_array_elements(m.fields -> ",
                )
                .bind_text(field)
                .push(&format!(
                    ") AS v(x)) AS d GROUP BY d.x ORDER BY n DESC, {order} ASC LIMIT "
                ))
                .bind(Arg::I64(size as i64));
                let rows = sql
                    .query()
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(engine_error)?;
                let mut buckets = Vec::with_capacity(rows.len());
                for row in rows {
                    let value: String = row.get("value");
                    let value: Value = serde_json::from_str(&value)
                        .map_err(|e| SearchError::Engine(format!("stored value: {e}")))?;
                    let value = match value {
                        Value::Number(n) => number_json(n.as_f64().unwrap_or(f64::NAN)),
                        other => other,
                    };
                    buckets.push(Bucket {
                        value,
                        to: None,
                        count: row.get::<i64, _>("n") as u64,
                    });
                }
                Ok(FacetResult {
                    name,
                    buckets: Some(buckets),
                    value: None,
                })
            }
            FacetKind::NumericHistogram {
                size,
                histogram_range,
            } => {
                if ty != FieldType::Number {
                    return Err(wrong_type("numeric_histogram"));
                }
                let (low, high, size) = (histogram_range.low, histogram_range.high, *size);
                if size == 0 || size > MAX_BUCKETS {
                    return Err(SearchError::invalid(format!(
                        "a numeric_histogram's size is 1 to {MAX_BUCKETS}, not {size}"
                    )));
                }
                if low.partial_cmp(&high) != Some(std::cmp::Ordering::Less) {
                    return Err(SearchError::invalid(format!(
                        "a numeric_histogram's low ({low}) must be below its high ({high})"
                    )));
                }
                sql.push(
                    ") SELECT d.b, count(*) AS n FROM m, LATERAL \
                     (SELECT DISTINCT width_bucket(v.x::float8, ",
                )
                .bind(Arg::F64(low))
                .push(", ")
                .bind(Arg::F64(high))
                .push(", ")
                .bind(Arg::I64(size as i64))
                .push("::int) AS b FROM jsonb_array_elements(m.fields -> ")
                .bind_text(field)
                .push(") AS v(x) WHERE v.x::float8 >= ")
                .bind(Arg::F64(low))
                .push(" AND v.x::float8 < ")
                .bind(Arg::F64(high))
                .push(") AS d GROUP BY d.b");
                let rows = sql
                    .query()
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(engine_error)?;
                let mut counts = vec![0u64; size];
                for row in rows {
                    let bucket: i32 = row.get("b");
                    let n: i64 = row.get("n");
                    if let Some(slot) = usize::try_from(bucket - 1)
                        .ok()
                        .and_then(|i| counts.get_mut(i))
                    {
                        *slot += n as u64;
                    }
                }
                let width = (high - low) / size as f64;
                let buckets = counts
                    .into_iter()
                    .enumerate()
                    .map(|(i, count)| Bucket {
                        value: number_json(low + width * i as f64),
                        to: Some(number_json(if i + 1 == size {
                            high
                        } else {
                            low + width * (i + 1) as f64
                        })),
                        count,
                    })
                    .collect();
                Ok(FacetResult {
                    name,
                    buckets: Some(buckets),
                    value: None,
                })
            }
            FacetKind::DateHistogram { date_interval } => {
                if ty != FieldType::Date {
                    return Err(wrong_type("date_histogram"));
                }
                let unit = match date_interval {
                    DateInterval::Year => "year",
                    DateInterval::Month => "month",
                    DateInterval::Day => "day",
                    DateInterval::Hour => "hour",
                    DateInterval::Minute => "minute",
                };
                sql.push(
                    ") SELECT (extract(epoch FROM d.b) * 1000)::int8 AS b, count(*) AS n \
                     FROM m, LATERAL (SELECT DISTINCT date_trunc(",
                )
                .bind_text(unit)
                .push(
                    ", to_timestamp(v.x::float8 / 1000.0) AT TIME ZONE 'UTC') AS b \
                     FROM jsonb_array_elements(m.fields -> ",
                )
                .bind_text(field)
                .push(") AS v(x)) AS d GROUP BY d.b ORDER BY d.b");
                let rows = sql
                    .query()
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(engine_error)?;
                let mut buckets = Vec::with_capacity(rows.len());
                for row in rows {
                    let start: i64 = row.get("b");
                    let start = Utc
                        .timestamp_millis_opt(start)
                        .single()
                        .ok_or_else(|| SearchError::Engine(format!("bad bucket {start}")))?;
                    let end = next_bucket(start, *date_interval);
                    buckets.push(Bucket {
                        value: Value::String(rfc3339(start)),
                        to: end.map(|end| Value::String(rfc3339(end))),
                        count: row.get::<i64, _>("n") as u64,
                    });
                }
                Ok(FacetResult {
                    name,
                    buckets: Some(buckets),
                    value: None,
                })
            }
            FacetKind::Sum | FacetKind::Avg => {
                if ty != FieldType::Number {
                    return Err(wrong_type(if facet.kind == FacetKind::Sum {
                        "sum"
                    } else {
                        "avg"
                    }));
                }
                let aggregate = if facet.kind == FacetKind::Sum {
                    "coalesce(sum(v.x::float8), 0)"
                } else {
                    "avg(v.x::float8)"
                };
                sql.push(&format!(
                    ") SELECT {aggregate}::float8 AS value FROM m, jsonb_array_elements(m.fields -> "
                ))
                .bind_text(field)
                .push(") AS v(x)");
                let value: Option<f64> = sql
                    .query()
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(engine_error)?
                    .get("value");
                Ok(FacetResult {
                    name,
                    buckets: None,
                    value: Some(value.map_or(Value::Null, number_json)),
                })
            }
            FacetKind::DistinctCount => {
                sql.push(
                    ") SELECT count(DISTINCT v.x) AS value FROM m, \
                     jsonb_array_elements(m.fields -> ",
                )
                .bind_text(field)
                .push(") AS v(x)");
                let value: i64 = sql
                    .query()
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(engine_error)?
                    .get("value");
                Ok(FacetResult {
                    name,
                    buckets: None,
                    value: Some(Value::from(value)),
                })
            }
        }
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The start of the bucket after the one starting at `start`.
fn next_bucket(start: DateTime<Utc>, interval: DateInterval) -> Option<DateTime<Utc>> {
    match interval {
        DateInterval::Year => Utc
            .with_ymd_and_hms(start.year() + 1, 1, 1, 0, 0, 0)
            .single(),
        DateInterval::Month => start.checked_add_months(Months::new(1)),
        DateInterval::Day => start.checked_add_signed(TimeDelta::days(1)),
        DateInterval::Hour => start.checked_add_signed(TimeDelta::hours(1)),
        DateInterval::Minute => start.checked_add_signed(TimeDelta::minutes(1)),
    }
}

/// The query AST of `q` in its mode (an absent or empty `q` matches all).
fn parse_query(query: &SearchQuery) -> Result<QueryNode, SearchError> {
    let text = query.q.as_deref().unwrap_or("");
    if text.trim().is_empty() {
        return Ok(QueryNode::All);
    }
    match query.mode {
        QueryMode::Simple => Ok(query::simple(text)),
        QueryMode::Advanced => query::parse(text).map_err(|err| SearchError::Invalid {
            message: err.to_string(),
            position: Some(err.position),
        }),
    }
}

/// Groups consecutive entries of one subject.
fn group(hits: Vec<(String, String, ResultEntry)>) -> Vec<SubjectResult> {
    let mut out: Vec<SubjectResult> = Vec::new();
    for (_, subject, entry) in hits {
        match out.last_mut() {
            Some(last) if last.subject == subject => last.entries.push(entry),
            _ => out.push(SubjectResult {
                subject,
                entries: vec![entry],
            }),
        }
    }
    out
}

const ENTRY_COLUMNS: &str =
    "SELECT e.key, e.subject, e.entry_id, e.content::text AS content, e.visible_to \
     FROM search_engine_entries e";

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Why an entry cannot be written, before its content is looked at.
fn check_entry(entry: &Entry, limits: &Limits) -> Result<Vec<String>, String> {
    if entry.subject.is_empty() {
        return Err("the subject is empty".to_owned());
    }
    if entry.subject.len() > MAX_SUBJECT_BYTES {
        return Err(format!(
            "the subject is {} bytes, over the limit of {MAX_SUBJECT_BYTES}",
            entry.subject.len()
        ));
    }
    let principals = entry
        .visible_to
        .iter()
        .map(|p| {
            p.parse::<Principal>()
                .map(|p| p.to_string())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let content = entry.content.to_string();
    if content.len() > limits.max_entry_bytes {
        return Err(format!(
            "the content is {} bytes, over the limit of {}",
            content.len(),
            limits.max_entry_bytes
        ));
    }
    // PostgreSQL text and jsonb cannot hold U+0000.
    if entry.subject.contains('\0')
        || entry.id.as_deref().is_some_and(|id| id.contains('\0'))
        || holds_nul(&entry.content)
    {
        return Err(
            "the entry holds a NUL character (U+0000), which this engine cannot store".to_owned(),
        );
    }
    Ok(principals)
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
        sqlx::query("DELETE FROM search_engine_indexes WHERE index_id = $1::uuid")
            .bind(index.to_string())
            .execute(&self.pool)
            .await
            .map_err(engine_error)?;
        Ok(())
    }

    async fn fields(
        &self,
        index: SearchIndexId,
    ) -> Result<BTreeMap<String, FieldType>, SearchError> {
        let mut tx = self.read().await?;
        Self::index_exists(&mut tx, index, false).await?;
        let fields = Self::load_fields(&mut tx, index).await?;
        tx.commit().await.map_err(engine_error)?;
        Ok(fields)
    }

    async fn count(&self, index: SearchIndexId) -> Result<u64, SearchError> {
        let mut tx = self.read().await?;
        Self::index_exists(&mut tx, index, false).await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM search_engine_entries WHERE index_id = $1::uuid",
        )
        .bind(index.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(engine_error)?;
        tx.commit().await.map_err(engine_error)?;
        Ok(count as u64)
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
        let mut fields = Self::load_fields(&mut tx, index).await?;

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

        let mut outcomes = Vec::with_capacity(entries.len());
        let mut new_fields: Vec<(String, FieldType)> = Vec::new();
        let mut pending: Vec<NewRow> = Vec::new();
        let mut pending_at: HashMap<String, usize> = HashMap::new();
        for entry in entries {
            let principals = match check_entry(&entry, limits) {
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
                words: words::tsvector(&doc),
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

        if !new_fields.is_empty() {
            let (names, types): (Vec<String>, Vec<String>) = new_fields
                .into_iter()
                .map(|(name, ty)| (name, field_type_name(ty).to_owned()))
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

        for chunk in pending.chunks(INSERT_BATCH) {
            let mut sql = Sql::new(
                "INSERT INTO search_engine_entries \
                 (index_id, key, subject, entry_id, content, visible_to, fields, words) \
                 SELECT ",
            );
            sql.bind_text(index.to_string())
                .push(
                    "::uuid, r.key, r.subject, r.entry_id, r.content::jsonb, \
                     ARRAY(SELECT jsonb_array_elements_text(r.visible_to::jsonb)), \
                     r.fields::jsonb, r.words::tsvector FROM UNNEST(",
                )
                .bind(Arg::Texts(chunk.iter().map(|r| r.key.clone()).collect()))
                .push("::text[], ")
                .bind(Arg::Texts(
                    chunk.iter().map(|r| r.subject.clone()).collect(),
                ))
                .push("::text[], ")
                .bind(Arg::OptTexts(
                    chunk.iter().map(|r| r.entry_id.clone()).collect(),
                ))
                .push("::text[], ")
                .bind(Arg::Texts(
                    chunk.iter().map(|r| r.content.clone()).collect(),
                ))
                .push("::text[], ")
                .bind(Arg::Texts(
                    chunk.iter().map(|r| r.visible_to.clone()).collect(),
                ))
                .push("::text[], ")
                .bind(Arg::Texts(chunk.iter().map(|r| r.fields.clone()).collect()))
                .push("::text[], ")
                .bind(Arg::Texts(chunk.iter().map(|r| r.words.clone()).collect()))
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
        let mut sql = Sql::new("DELETE FROM search_engine_entries AS e");
        match target {
            DeleteTarget::Subjects { subjects } => {
                sql.push(" WHERE e.index_id = ")
                    .bind_text(index.to_string())
                    .push("::uuid AND e.subject = ANY(")
                    .bind(Arg::Texts(subjects.clone()))
                    .push("::text[])");
            }
            DeleteTarget::Entry { subject, entry_id } => {
                sql.push(" WHERE e.index_id = ")
                    .bind_text(index.to_string())
                    .push("::uuid AND e.key = ")
                    .bind_text(words::row_key(subject, entry_id.as_deref()));
            }
            DeleteTarget::Query { query } => {
                let fields = Self::load_fields(&mut tx, index).await?;
                let compiler = Compiler { fields: &fields };
                let node = parse_query(query)?;
                Self::matching(
                    &mut sql,
                    &compiler,
                    index,
                    &node,
                    query,
                    &Visibility::Bypass,
                )?;
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
        let limit = request.limit.unwrap_or(10);
        if limit > MAX_PAGE_SIZE {
            return Err(SearchError::invalid(format!(
                "limit {limit} is over the largest page of {MAX_PAGE_SIZE}"
            )));
        }
        if request.offset.saturating_add(limit) > MAX_RESULT_WINDOW {
            return Err(SearchError::invalid(format!(
                "offset + limit is over {MAX_RESULT_WINDOW}; page further with the scroll"
            )));
        }
        let node = parse_query(&request.query)?;
        let mut tx = self.read().await?;
        Self::index_exists(&mut tx, index, false).await?;
        let fields = Self::load_fields(&mut tx, index).await?;
        let compiler = Compiler { fields: &fields };

        // Entries the facets count: query, filters, visibility.
        let mut facet_base =
            Sql::new("WITH m AS (SELECT e.key, e.fields FROM search_engine_entries e");
        Self::matching(
            &mut facet_base,
            &compiler,
            index,
            &node,
            &request.query,
            visibility,
        )?;
        let mut facet_results = Vec::with_capacity(request.facets.len());
        for facet in &request.facets {
            facet_results.push(Self::facet(&mut tx, &compiler, &facet_base, facet).await?);
        }

        // Entries the page and total hold: also the post-facet filters.
        let hits_from = |select: &str| -> Result<Sql, SearchError> {
            let mut sql = Sql::new(select);
            Self::matching(
                &mut sql,
                &compiler,
                index,
                &node,
                &request.query,
                visibility,
            )?;
            for filter in &request.post_facet_filters {
                sql.push(" AND ");
                compiler.filter(&mut sql, filter)?;
            }
            Ok(sql)
        };
        let counted = hits_from("SELECT count(*) AS n FROM search_engine_entries e")?;
        let mut hits = hits_from(ENTRY_COLUMNS)?;

        hits.push(" ORDER BY ");
        for sort in &request.sort {
            compiler.sort(&mut hits, sort)?;
            hits.push(", ");
        }
        let mut lexemes = Vec::new();
        let mut bare = Vec::new();
        sql::positive_words(&node, &mut lexemes, &mut bare);
        if request.sort.is_empty() && !lexemes.is_empty() {
            let any = |lexemes: &[String]| {
                lexemes
                    .iter()
                    .map(|l| words::quote_lexeme(l))
                    .collect::<Vec<_>>()
                    .join(" | ")
            };
            hits.push("(ts_rank(e.words, ")
                .bind_text(any(&lexemes))
                .push("::tsquery)");
            for boost in &request.boosts {
                compiler.field_type(&boost.field_name)?;
                let qualified: Vec<String> = bare
                    .iter()
                    .map(|w| words::qualified_lexeme(&boost.field_name, w))
                    .collect();
                hits.push(" + ")
                    .bind(Arg::F64(boost.factor - 1.0))
                    .push("::float8 * ts_rank(e.words, ")
                    .bind_text(any(&qualified))
                    .push("::tsquery)");
            }
            hits.push(") DESC, ");
        }
        hits.push("e.key LIMIT ")
            .bind(Arg::I64(limit as i64))
            .push(" OFFSET ")
            .bind(Arg::I64(request.offset as i64));

        let total: i64 = counted
            .query()
            .fetch_one(&mut *tx)
            .await
            .map_err(engine_error)?
            .get("n");
        let page = Self::fetch_entries(&mut tx, &hits).await?;
        tx.commit().await.map_err(engine_error)?;
        let total = total as u64;
        let count = page.len() as u64;
        Ok(SearchResult {
            total,
            count,
            offset: request.offset,
            has_next_page: (request.offset as u64).saturating_add(count) < total,
            gmeta: group(page),
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
        let limit = request.limit.unwrap_or(10);
        if limit == 0 || limit > MAX_PAGE_SIZE {
            return Err(SearchError::invalid(format!(
                "a scroll's limit is 1 to {MAX_PAGE_SIZE}, not {limit}"
            )));
        }
        if let Some(marker) = &request.marker {
            if !words::is_row_key(marker) {
                return Err(SearchError::invalid(
                    "the marker is not one this index gave out",
                ));
            }
        }
        let node = parse_query(&request.query)?;
        let mut tx = self.read().await?;
        Self::index_exists(&mut tx, index, false).await?;
        let fields = Self::load_fields(&mut tx, index).await?;
        let compiler = Compiler { fields: &fields };
        let mut sql = Sql::new(ENTRY_COLUMNS);
        Self::matching(
            &mut sql,
            &compiler,
            index,
            &node,
            &request.query,
            visibility,
        )?;
        if let Some(marker) = &request.marker {
            sql.push(" AND e.key > ").bind_text(marker.clone());
        }
        sql.push(" ORDER BY e.key LIMIT ")
            .bind(Arg::I64(limit as i64 + 1));
        let mut page = Self::fetch_entries(&mut tx, &sql).await?;
        tx.commit().await.map_err(engine_error)?;
        let has_next_page = page.len() > limit;
        page.truncate(limit);
        let marker = if has_next_page {
            page.last().map(|(key, _, _)| key.clone())
        } else {
            None
        };
        Ok(ScrollResult {
            count: page.len() as u64,
            has_next_page,
            marker,
            gmeta: group(page),
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
        let mut sql = Sql::new(ENTRY_COLUMNS);
        Self::matching(
            &mut sql,
            &Compiler {
                fields: &BTreeMap::new(),
            },
            index,
            &QueryNode::All,
            &SearchQuery::default(),
            visibility,
        )?;
        sql.push(" AND e.subject = ")
            .bind_text(subject)
            .push(" ORDER BY e.key");
        let page = Self::fetch_entries(&mut tx, &sql).await?;
        tx.commit().await.map_err(engine_error)?;
        Ok(group(page).into_iter().next())
    }
}
