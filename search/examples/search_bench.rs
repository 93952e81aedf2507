//! The search benchmark behind `bench/search.sh`: one process generates N
//! dataset records (seeded, so every run and every engine sees the same
//! data), ingests them into each engine, and answers one fixed set of
//! queries on each, with visibility enforced for one caller:
//!
//! - `tantivy`: Lattice's embedded engine (`TantivyEngine`), through the trait.
//! - `postgres`: Lattice's PostgreSQL engine (`PostgresEngine`), through the trait.
//! - `sqlite-fts5`: SQLite FTS5 with hand-written SQL (typed columns, a
//!   contentless FTS5 table, a principal → record table for visibility).
//! - `pg-fts`: PostgreSQL full text with hand-written SQL (typed columns, a
//!   `tsvector` GIN index, `visible_to text[]` with a GIN index).
//!
//! The direct baselines are what a careful engineer would write for exactly
//! these queries; Lattice's engines answer any query on any fields.
//!
//! ```text
//! cargo run --release -p lattice-search --example search_bench -- [N] [ENGINES]
//! ```
//! N defaults to 1,000,000; ENGINES is a comma list (default all four).
//! PostgreSQL at `LATTICE_BENCH_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each run makes and drops
//! its own database. Prints one table row per engine and query.

// The table on stdout is what this program is for.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use lattice_protocol::search::{
    DateInterval, Entry, Facet, FacetKind, Filter, HistogramRange, QueryMode, RangeBound,
    ScrollRequest, SearchQuery, SearchRequest, SortField, SortOrder,
};
use lattice_protocol::SearchIndexId;
use lattice_search::{Limits, SearchEngine, Visibility};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, Row};

const INSTRUMENTS: [&str; 12] = [
    "xrd-1", "xrd-2", "saxs-1", "saxs-2", "tem-1", "sem-1", "sem-2", "nmr-1", "ms-1", "ms-2",
    "ct-1", "raman-1",
];
const KEYWORDS: usize = 50;
const VOCABULARY: usize = 500;
const OPERATORS: usize = 40;
const GROUPS: usize = 50;
const IDENTITIES: usize = 200;
/// Queries per engine and query kind after the warm-up (`BENCH_RUNS`).
fn runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}
const WARMUP: usize = 3;
const INGEST_BATCH: usize = 10_000;

/// A word of the description vocabulary: Zipf-like, so some words are
/// common ("sample") and most are rare.
fn vocabulary_word(rng: &mut StdRng) -> String {
    const COMMON: [&str; 10] = [
        "sample",
        "measurement",
        "calibration",
        "beam",
        "crystal",
        "powder",
        "thin",
        "film",
        "scan",
        "detector",
    ];
    let x: f64 = rng.random();
    let rank = ((VOCABULARY as f64).powf(x) as usize).min(VOCABULARY - 1);
    match COMMON.get(rank) {
        Some(word) => (*word).to_owned(),
        None => format!("w{rank}"),
    }
}

fn principal_group(i: usize) -> String {
    format!("group:00000000-0000-4000-8000-{i:012}")
}

fn principal_identity(i: usize) -> String {
    format!("identity:00000000-0000-4000-9000-{i:012}")
}

/// The caller every query runs for.
fn caller() -> Vec<String> {
    vec![
        "public".into(),
        "all_authenticated_users".into(),
        principal_identity(7),
        principal_group(3),
        principal_group(11),
    ]
}

struct Record {
    subject: String,
    instrument: &'static str,
    sample: String,
    created: DateTime<Utc>,
    temperature: f64,
    size: i64,
    operator: String,
    keywords: Vec<String>,
    description: String,
    visible_to: Vec<String>,
}

impl Record {
    fn generate(i: usize, rng: &mut StdRng) -> Record {
        let instrument = INSTRUMENTS[rng.random_range(0..INSTRUMENTS.len())];
        let start = Utc
            .with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
            .unwrap()
            .timestamp();
        let end = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .unwrap()
            .timestamp();
        let created = Utc.timestamp_opt(rng.random_range(start..end), 0).unwrap();
        let words = rng.random_range(8..16);
        let description = (0..words)
            .map(|_| vocabulary_word(rng))
            .collect::<Vec<_>>()
            .join(" ");
        let keywords = (0..rng.random_range(1..4))
            .map(|_| format!("kw{}", rng.random_range(0..KEYWORDS)))
            .collect();
        let visible_to = match rng.random_range(0..10) {
            0 | 1 => vec!["public".to_owned()],
            2..=4 => vec!["all_authenticated_users".to_owned()],
            5..=7 => vec![principal_group(rng.random_range(0..GROUPS))],
            _ => vec![
                principal_identity(rng.random_range(0..IDENTITIES)),
                principal_group(rng.random_range(0..GROUPS)),
            ],
        };
        Record {
            subject: format!("lab:/runs/{instrument}/{i:08}.h5"),
            instrument,
            sample: format!("S-{}", rng.random_range(0..5000)),
            created,
            temperature: (rng.random_range(40..30_000) as f64) / 100.0,
            size: rng.random_range(1_000..50_000_000_000i64),
            operator: format!("op{}", rng.random_range(0..OPERATORS)),
            keywords,
            description,
            visible_to,
        }
    }

    fn content(&self) -> Value {
        json!({
            "instrument": self.instrument,
            "sample": self.sample,
            "created": self.created.to_rfc3339(),
            "temperature": self.temperature,
            "size": self.size,
            "operator": self.operator,
            "keywords": self.keywords,
            "description": self.description,
        })
    }
}

/// The fixed query set. Each kind is answered by every engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    FreeText,
    Filtered,
    Faceted,
    FacetedAll,
    Sorted,
    Scroll,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::FreeText,
        Kind::Filtered,
        Kind::Faceted,
        Kind::FacetedAll,
        Kind::Sorted,
        Kind::Scroll,
    ];

    fn describe(self) -> &'static str {
        match self {
            Kind::FreeText => "free text: 2 words, top 10 + total",
            Kind::Filtered => "2 instruments AND a year, top 10 + total",
            Kind::Faceted => "1 word + 3 facets (terms, numeric hist, month hist)",
            Kind::FacetedAll => "every visible entry + the same 3 facets",
            Kind::Sorted => "1 instrument, by size desc, top 20",
            Kind::Scroll => "scroll every entry of 1 instrument, pages of 1,000",
        }
    }
}

fn year_range() -> Filter {
    Filter::Range {
        field_name: "created".into(),
        values: vec![RangeBound {
            from: Some(json!("2023-01-01")),
            to: Some(json!("2023-12-31T23:59:59Z")),
        }],
    }
}

fn facets() -> Vec<Facet> {
    vec![
        Facet {
            name: None,
            field_name: "instrument".into(),
            kind: FacetKind::Terms { size: Some(12) },
        },
        Facet {
            name: None,
            field_name: "temperature".into(),
            kind: FacetKind::NumericHistogram {
                size: 10,
                histogram_range: HistogramRange {
                    low: 0.0,
                    high: 300.0,
                },
            },
        },
        Facet {
            name: None,
            field_name: "created".into(),
            kind: FacetKind::DateHistogram {
                date_interval: DateInterval::Month,
            },
        },
    ]
}

fn request(kind: Kind) -> SearchRequest {
    let query = |q: Option<&str>, filters| SearchQuery {
        q: q.map(str::to_owned),
        mode: QueryMode::Simple,
        filters,
    };
    match kind {
        Kind::FreeText => SearchRequest {
            query: query(Some("calibration crystal"), vec![]),
            limit: Some(10),
            ..Default::default()
        },
        Kind::Filtered => SearchRequest {
            query: query(
                None,
                vec![
                    Filter::MatchAny {
                        field_name: "instrument".into(),
                        values: vec![json!("xrd-2"), json!("saxs-1")],
                    },
                    year_range(),
                ],
            ),
            limit: Some(10),
            ..Default::default()
        },
        Kind::Faceted => SearchRequest {
            query: query(Some("w25"), vec![]),
            facets: facets(),
            limit: Some(10),
            ..Default::default()
        },
        Kind::FacetedAll => SearchRequest {
            query: query(None, vec![]),
            facets: facets(),
            limit: Some(10),
            ..Default::default()
        },
        Kind::Sorted => SearchRequest {
            query: query(
                None,
                vec![Filter::MatchAny {
                    field_name: "instrument".into(),
                    values: vec![json!("tem-1")],
                }],
            ),
            sort: vec![SortField {
                field_name: "size".into(),
                order: SortOrder::Desc,
            }],
            limit: Some(20),
            ..Default::default()
        },
        Kind::Scroll => unreachable!("the scroll has its own request"),
    }
}

fn scroll_query() -> SearchQuery {
    SearchQuery {
        q: None,
        mode: QueryMode::Simple,
        filters: vec![Filter::MatchAny {
            field_name: "instrument".into(),
            values: vec![json!("nmr-1")],
        }],
    }
}

/// What one engine answered for one query kind: the latencies and a
/// result size, so that a row showing a fast engine that found nothing
/// is visible as such.
struct Measured {
    latencies: Vec<Duration>,
    hits: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

async fn time<F, Fut>(mut once: F) -> anyhow::Result<Measured>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let mut hits = 0;
    for _ in 0..WARMUP {
        hits = once().await?;
    }
    let mut latencies = Vec::with_capacity(runs());
    for _ in 0..runs() {
        let start = Instant::now();
        hits = once().await?;
        latencies.push(start.elapsed());
    }
    latencies.sort();
    Ok(Measured { latencies, hits })
}

// ------------------------------------------------------------- Lattice engines

async fn run_engine(
    engine: &dyn SearchEngine,
    records: &[Record],
) -> anyhow::Result<(f64, BTreeMap<Kind, Measured>)> {
    let index = SearchIndexId::new();
    engine.create_index(index).await?;
    let limits = Limits::default();
    let start = Instant::now();
    for chunk in records.chunks(INGEST_BATCH) {
        let entries = chunk
            .iter()
            .map(|r| Entry {
                subject: r.subject.clone(),
                id: None,
                content: r.content(),
                visible_to: r.visible_to.clone(),
            })
            .collect();
        let outcomes = engine.ingest(index, entries, &limits).await?;
        anyhow::ensure!(
            outcomes
                .iter()
                .all(|o| *o == lattice_search::EntryOutcome::Applied),
            "{}: an entry was rejected",
            engine.name()
        );
    }
    let rate = records.len() as f64 / start.elapsed().as_secs_f64();
    let visibility = Visibility::Principals(caller());
    let mut out = BTreeMap::new();
    for kind in Kind::ALL {
        let measured = if kind == Kind::Scroll {
            time(|| async {
                let mut marker = None;
                let mut seen = 0;
                loop {
                    let page = engine
                        .scroll(
                            index,
                            &ScrollRequest {
                                query: scroll_query(),
                                limit: Some(1000),
                                marker: marker.take(),
                                bypass_visibility: false,
                            },
                            &visibility,
                        )
                        .await?;
                    seen += page.count;
                    match page.marker {
                        Some(next) if page.has_next_page => marker = Some(next),
                        _ => break,
                    }
                }
                Ok(seen)
            })
            .await?
        } else {
            let request = request(kind);
            time(|| async { Ok(engine.search(index, &request, &visibility).await?.total) }).await?
        };
        out.insert(kind, measured);
    }
    engine.drop_index(index).await?;
    Ok((rate, out))
}

// ------------------------------------------------------------ SQLite FTS5

async fn run_sqlite(
    records: &[Record],
    dir: &std::path::Path,
) -> anyhow::Result<(f64, BTreeMap<Kind, Measured>)> {
    let url = format!("sqlite://{}?mode=rwc", dir.join("fts5.db").display());
    // One connection: SQLite serializes writers, and every query runs alone.
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;
    db.execute(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE rec(id INTEGER PRIMARY KEY, subject TEXT NOT NULL, instrument TEXT NOT NULL,
           sample TEXT NOT NULL, created INTEGER NOT NULL, temperature REAL NOT NULL,
           size INTEGER NOT NULL, operator TEXT NOT NULL, content TEXT NOT NULL);
         CREATE TABLE rec_vis(principal TEXT NOT NULL, rec_id INTEGER NOT NULL,
           PRIMARY KEY(principal, rec_id)) WITHOUT ROWID;
         CREATE VIRTUAL TABLE rec_fts USING fts5(description, keywords, sample, operator, instrument,
           content='', tokenize='unicode61');",
    )
    .await?;
    let start = Instant::now();
    for (chunk_no, chunk) in records.chunks(INGEST_BATCH).enumerate() {
        let mut tx = db.begin().await?;
        for (i, r) in chunk.iter().enumerate() {
            let id = (chunk_no * INGEST_BATCH + i + 1) as i64;
            sqlx::query("INSERT INTO rec VALUES (?,?,?,?,?,?,?,?,?)")
                .bind(id)
                .bind(&r.subject)
                .bind(r.instrument)
                .bind(&r.sample)
                .bind(r.created.timestamp())
                .bind(r.temperature)
                .bind(r.size)
                .bind(&r.operator)
                .bind(r.content().to_string())
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO rec_fts(rowid, description, keywords, sample, operator, instrument) VALUES (?,?,?,?,?,?)")
                .bind(id)
                .bind(&r.description)
                .bind(r.keywords.join(" "))
                .bind(&r.sample)
                .bind(&r.operator)
                .bind(r.instrument)
                .execute(&mut *tx)
                .await?;
            for p in &r.visible_to {
                sqlx::query("INSERT INTO rec_vis VALUES (?,?)")
                    .bind(p)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
    }
    db.execute(
        "CREATE INDEX rec_instrument ON rec(instrument, size);
         CREATE INDEX rec_created ON rec(created); ANALYZE;",
    )
    .await?;
    let rate = records.len() as f64 / start.elapsed().as_secs_f64();

    let principals = caller();
    let vis = format!(
        "id IN (SELECT rec_id FROM rec_vis WHERE principal IN ({}))",
        principals
            .iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (y0, y1) = (
        Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0)
            .unwrap()
            .timestamp(),
        Utc.with_ymd_and_hms(2023, 12, 31, 23, 59, 59)
            .unwrap()
            .timestamp(),
    );
    let facet_sql = |matched: &str| {
        format!(
            "WITH m AS MATERIALIZED (SELECT id, instrument, temperature, created FROM rec WHERE {matched} AND {vis})
             SELECT 'i', instrument, count(*) FROM m GROUP BY instrument
             UNION ALL SELECT 't', CAST(MIN(MAX(temperature, 0), 299.999) / 30 AS INTEGER), count(*) FROM m
               WHERE temperature >= 0 AND temperature < 300 GROUP BY 2
             UNION ALL SELECT 'c', strftime('%Y-%m', created, 'unixepoch'), count(*) FROM m GROUP BY 2"
        )
    };
    let mut out = BTreeMap::new();
    let sqls: Vec<(Kind, Vec<String>)> = vec![
        (
            Kind::FreeText,
            vec![
                format!("SELECT count(*) FROM rec WHERE id IN (SELECT rowid FROM rec_fts WHERE rec_fts MATCH 'calibration crystal') AND {vis}"),
                format!("SELECT id, subject, content FROM rec WHERE id IN (SELECT rowid FROM rec_fts WHERE rec_fts MATCH 'calibration crystal') AND {vis} LIMIT 10"),
            ],
        ),
        (
            Kind::Filtered,
            vec![
                format!("SELECT count(*) FROM rec WHERE instrument IN ('xrd-2','saxs-1') AND created BETWEEN {y0} AND {y1} AND {vis}"),
                format!("SELECT id, subject, content FROM rec WHERE instrument IN ('xrd-2','saxs-1') AND created BETWEEN {y0} AND {y1} AND {vis} LIMIT 10"),
            ],
        ),
        (
            Kind::Faceted,
            vec![
                format!("SELECT count(*) FROM rec WHERE id IN (SELECT rowid FROM rec_fts WHERE rec_fts MATCH 'w25') AND {vis}"),
                format!("SELECT id, subject, content FROM rec WHERE id IN (SELECT rowid FROM rec_fts WHERE rec_fts MATCH 'w25') AND {vis} LIMIT 10"),
                facet_sql("id IN (SELECT rowid FROM rec_fts WHERE rec_fts MATCH 'w25')"),
            ],
        ),
        (
            Kind::FacetedAll,
            vec![
                format!("SELECT count(*) FROM rec WHERE {vis}"),
                format!("SELECT id, subject, content FROM rec WHERE {vis} LIMIT 10"),
                facet_sql("1"),
            ],
        ),
        (
            Kind::Sorted,
            vec![
                format!("SELECT count(*) FROM rec WHERE instrument = 'tem-1' AND {vis}"),
                format!("SELECT id, subject, content FROM rec WHERE instrument = 'tem-1' AND {vis} ORDER BY size DESC LIMIT 20"),
            ],
        ),
    ];
    for (kind, statements) in sqls {
        let measured = time(|| {
            let statements = statements.clone();
            let db = &db;
            async move {
                let mut first = 0;
                for (n, sql) in statements.iter().enumerate() {
                    let rows = sqlx::query(sql).fetch_all(db).await?;
                    if n == 0 {
                        first = if sql.starts_with("SELECT count(*)") {
                            rows[0].get::<i64, _>(0) as u64
                        } else {
                            rows.len() as u64
                        };
                    }
                }
                Ok(first)
            }
        })
        .await?;
        out.insert(kind, measured);
    }
    let scroll_sql = format!(
        "SELECT id, subject, content FROM rec WHERE instrument = 'nmr-1' AND {vis} AND id > ? ORDER BY id LIMIT 1000"
    );
    let measured = time(|| {
        let db = &db;
        let sql = scroll_sql.clone();
        async move {
            let mut last = 0i64;
            let mut seen = 0u64;
            loop {
                let rows = sqlx::query(&sql).bind(last).fetch_all(db).await?;
                seen += rows.len() as u64;
                match rows.last() {
                    Some(row) if rows.len() == 1000 => last = row.get(0),
                    _ => break,
                }
            }
            Ok(seen)
        }
    })
    .await?;
    out.insert(Kind::Scroll, measured);
    Ok((rate, out))
}

// ------------------------------------------------------------ PostgreSQL FTS

async fn run_pg_direct(
    records: &[Record],
    url: &str,
) -> anyhow::Result<(f64, BTreeMap<Kind, Measured>)> {
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    db.execute(
        "CREATE TABLE rec(id bigint PRIMARY KEY, subject text NOT NULL, instrument text NOT NULL,
           sample text NOT NULL, created timestamptz NOT NULL, temperature double precision NOT NULL,
           size bigint NOT NULL, operator text NOT NULL, content jsonb NOT NULL,
           visible_to text[] NOT NULL, tsv tsvector NOT NULL)",
    )
    .await?;
    let start = Instant::now();
    for (chunk_no, chunk) in records.chunks(INGEST_BATCH).enumerate() {
        let ids: Vec<i64> = (0..chunk.len())
            .map(|i| (chunk_no * INGEST_BATCH + i + 1) as i64)
            .collect();
        let subjects: Vec<&str> = chunk.iter().map(|r| r.subject.as_str()).collect();
        let instruments: Vec<&str> = chunk.iter().map(|r| r.instrument).collect();
        let samples: Vec<&str> = chunk.iter().map(|r| r.sample.as_str()).collect();
        let created: Vec<f64> = chunk.iter().map(|r| r.created.timestamp() as f64).collect();
        let temperatures: Vec<f64> = chunk.iter().map(|r| r.temperature).collect();
        let sizes: Vec<i64> = chunk.iter().map(|r| r.size).collect();
        let operators: Vec<&str> = chunk.iter().map(|r| r.operator.as_str()).collect();
        let contents: Vec<Value> = chunk.iter().map(Record::content).collect();
        // text[] of one array per row does not nest in UNNEST; the
        // principals travel as one space-separated string per row.
        let visible: Vec<String> = chunk.iter().map(|r| r.visible_to.join(" ")).collect();
        let text: Vec<String> = chunk
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {}",
                    r.description,
                    r.keywords.join(" "),
                    r.sample,
                    r.operator,
                    r.instrument
                )
            })
            .collect();
        sqlx::query(
            "INSERT INTO rec SELECT id, subject, instrument, sample, to_timestamp(created), temperature, size, operator,
               content, string_to_array(visible, ' '), to_tsvector('simple', text)
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::float8[],
               $6::float8[], $7::bigint[], $8::text[], $9::jsonb[], $10::text[], $11::text[])
               AS t(id, subject, instrument, sample, created, temperature, size, operator, content, visible, text)",
        )
        .bind(&ids)
        .bind(&subjects)
        .bind(&instruments)
        .bind(&samples)
        .bind(&created)
        .bind(&temperatures)
        .bind(&sizes)
        .bind(&operators)
        .bind(&contents)
        .bind(&visible)
        .bind(&text)
        .execute(&db)
        .await?;
    }
    db.execute(
        "CREATE INDEX rec_tsv ON rec USING gin(tsv);
         CREATE INDEX rec_vis ON rec USING gin(visible_to);
         CREATE INDEX rec_instrument ON rec(instrument, size);
         CREATE INDEX rec_created ON rec(created);
         ANALYZE rec;",
    )
    .await?;
    let rate = records.len() as f64 / start.elapsed().as_secs_f64();

    let vis = format!(
        "visible_to && ARRAY[{}]",
        caller()
            .iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let year = "created BETWEEN '2023-01-01T00:00:00Z' AND '2023-12-31T23:59:59Z'";
    let facet_sql = |matched: &str| {
        format!(
            "WITH m AS MATERIALIZED (SELECT instrument, temperature, created FROM rec WHERE {matched} AND {vis})
             SELECT 'i', instrument, count(*) FROM m GROUP BY instrument
             UNION ALL SELECT 't', width_bucket(temperature, 0, 300, 10)::text, count(*) FROM m
               WHERE temperature >= 0 AND temperature < 300 GROUP BY 2
             UNION ALL SELECT 'c', to_char(date_trunc('month', created AT TIME ZONE 'UTC'), 'YYYY-MM'), count(*) FROM m GROUP BY 2"
        )
    };
    let words = |q: &str| format!("tsv @@ plainto_tsquery('simple', '{q}')");
    let mut out = BTreeMap::new();
    let sqls: Vec<(Kind, Vec<String>)> = vec![
        (
            Kind::FreeText,
            vec![
                format!("SELECT count(*) FROM rec WHERE {} AND {vis}", words("calibration crystal")),
                format!("SELECT id, subject, content FROM rec WHERE {} AND {vis} LIMIT 10", words("calibration crystal")),
            ],
        ),
        (
            Kind::Filtered,
            vec![
                format!("SELECT count(*) FROM rec WHERE instrument IN ('xrd-2','saxs-1') AND {year} AND {vis}"),
                format!("SELECT id, subject, content FROM rec WHERE instrument IN ('xrd-2','saxs-1') AND {year} AND {vis} LIMIT 10"),
            ],
        ),
        (
            Kind::Faceted,
            vec![
                format!("SELECT count(*) FROM rec WHERE {} AND {vis}", words("w25")),
                format!("SELECT id, subject, content FROM rec WHERE {} AND {vis} LIMIT 10", words("w25")),
                facet_sql(&words("w25")),
            ],
        ),
        (
            Kind::FacetedAll,
            vec![
                format!("SELECT count(*) FROM rec WHERE {vis}"),
                format!("SELECT id, subject, content FROM rec WHERE {vis} LIMIT 10"),
                facet_sql("true"),
            ],
        ),
        (
            Kind::Sorted,
            vec![
                format!("SELECT count(*) FROM rec WHERE instrument = 'tem-1' AND {vis}"),
                format!("SELECT id, subject, content FROM rec WHERE instrument = 'tem-1' AND {vis} ORDER BY size DESC LIMIT 20"),
            ],
        ),
    ];
    for (kind, statements) in sqls {
        let measured = time(|| {
            let statements = statements.clone();
            let db = &db;
            async move {
                let mut first = 0;
                for (n, sql) in statements.iter().enumerate() {
                    let rows = sqlx::query(sql).fetch_all(db).await?;
                    if n == 0 {
                        first = if sql.starts_with("SELECT count(*)") {
                            rows[0].get::<i64, _>(0) as u64
                        } else {
                            rows.len() as u64
                        };
                    }
                }
                Ok(first)
            }
        })
        .await?;
        out.insert(kind, measured);
    }
    let scroll_sql = format!(
        "SELECT id, subject, content FROM rec WHERE instrument = 'nmr-1' AND {vis} AND id > $1 ORDER BY id LIMIT 1000"
    );
    let measured = time(|| {
        let db = &db;
        let sql = scroll_sql.clone();
        async move {
            let mut last = 0i64;
            let mut seen = 0u64;
            loop {
                let rows = sqlx::query(&sql).bind(last).fetch_all(db).await?;
                seen += rows.len() as u64;
                match rows.last() {
                    Some(row) if rows.len() == 1000 => last = row.get(0),
                    _ => break,
                }
            }
            Ok(seen)
        }
    })
    .await?;
    out.insert(Kind::Scroll, measured);
    Ok((rate, out))
}

// --------------------------------------------------------------------- main

/// A database of its own for one run, dropped at the end.
struct Scratch {
    admin_url: String,
    name: String,
    url: String,
}

impl Scratch {
    async fn create(admin_url: &str) -> anyhow::Result<Scratch> {
        let name = format!("search_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(admin_url).await?;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(base, _)| base);
        Ok(Scratch {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    async fn drop(self) -> anyhow::Result<()> {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
        admin
            .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
            .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(Ok(1_000_000), |a| a.replace('_', "").parse())?;
    let engines: Vec<String> = args
        .next()
        .unwrap_or_else(|| "tantivy,postgres,sqlite-fts5,pg-fts".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let admin_url = std::env::var("LATTICE_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());

    eprintln!("generating {n} records");
    let mut rng = StdRng::seed_from_u64(20261207);
    let records: Vec<Record> = (0..n).map(|i| Record::generate(i, &mut rng)).collect();
    let dir = tempfile::tempdir()?;

    let mut table = Vec::new();
    for engine in &engines {
        eprintln!("{engine}: ingesting and querying");
        let result = match engine.as_str() {
            "tantivy" => {
                let tantivy = lattice_search::TantivyEngine::open(dir.path().join("tantivy"))?;
                run_engine(&tantivy, &records).await?
            }
            "postgres" => {
                let scratch = Scratch::create(&admin_url).await?;
                let pool = sqlx::PgPool::connect(&scratch.url).await?;
                let pg = lattice_search::PostgresEngine::open(pool.clone()).await?;
                let result = run_engine(&pg, &records).await;
                pool.close().await;
                scratch.drop().await?;
                result?
            }
            "sqlite-fts5" => run_sqlite(&records, dir.path()).await?,
            "pg-fts" => {
                let scratch = Scratch::create(&admin_url).await?;
                let result = run_pg_direct(&records, &scratch.url).await;
                scratch.drop().await?;
                result?
            }
            other => {
                anyhow::bail!("unknown engine {other} (tantivy, postgres, sqlite-fts5, pg-fts)")
            }
        };
        // Each engine's figures as soon as it is done, so that a run cut
        // short by its time cap still reports the engines it finished.
        eprintln!("{engine}: ingest {:.0} docs/s", result.0);
        for (kind, m) in &result.1 {
            eprintln!(
                "{engine}: {}: {} hits, p50 {:.2} ms, p99 {:.2} ms",
                kind.describe(),
                m.hits,
                percentile(&m.latencies, 0.5).as_secs_f64() * 1e3,
                percentile(&m.latencies, 0.99).as_secs_f64() * 1e3,
            );
        }
        table.push((engine.clone(), result));
    }

    println!("search benchmark: {n} records, {} runs per query after {WARMUP} warm-up runs, one caller (5 principals)", runs());
    println!();
    println!("| engine | ingest docs/s |");
    println!("|---|---:|");
    for (engine, (rate, _)) in &table {
        println!("| {engine} | {rate:.0} |");
    }
    println!();
    println!("| query | engine | hits | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|");
    for kind in Kind::ALL {
        for (engine, (_, measured)) in &table {
            let m = &measured[&kind];
            println!(
                "| {} | {engine} | {} | {:.2} | {:.2} |",
                kind.describe(),
                m.hits,
                percentile(&m.latencies, 0.5).as_secs_f64() * 1e3,
                percentile(&m.latencies, 0.99).as_secs_f64() * 1e3,
            );
        }
    }
    Ok(())
}
