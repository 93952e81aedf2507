//! The PostgreSQL engine against a real database: the shared conformance
//! suite, then a few cases of this engine's own (words PostgreSQL cannot
//! store, wildcards over its `tsvector`). Each test runs in a schema of its
//! own, dropped at the end even when the case fails, so runs do not collide.
//!
//! The suite's `conformance_tests!` cannot skip, so the cases are listed
//! here ([`postgres_conformance!`]) and `every_conformance_case_runs_here`
//! fails when the suite gains a case this list lacks.
//!
//! PostgreSQL is at `LATTICE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it is unreachable the
//! tests skip with the reason, or fail when `LATTICE_REQUIRE_SERVICES=1`.

#[allow(unused_macros)]
mod conformance;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use lattice_protocol::search::{
    DateInterval, DeleteTarget, Entry, Facet, FacetKind, FieldType, Filter, HistogramRange,
    QueryMode, RangeBound, ScrollRequest, SearchQuery, SearchRequest, SortField, SortOrder,
};
use lattice_protocol::SearchIndexId;
use lattice_search::{EntryOutcome, Limits, PostgresEngine, SearchEngine, Visibility};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};

fn database_url() -> String {
    std::env::var("LATTICE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn services_required() -> bool {
    std::env::var("LATTICE_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

/// Whether PostgreSQL accepts TCP connections (the same check the
/// service's tests make).
fn reachable(options: &PgConnectOptions) -> Result<(), String> {
    let addr = format!("{}:{}", options.get_host(), options.get_port());
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("bad address {addr}: {e}"))?
        .collect();
    addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).ok())
        .map(|_| ())
        .ok_or_else(|| format!("nothing listening on {addr}"))
}

async fn pool_in(options: &PgConnectOptions, schema: &str) -> sqlx::PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.clone().options([("search_path", schema)]))
        .await
        .expect("pool")
}

/// An engine in a fresh schema, dropped by [`TestDb::cleanup`].
struct TestDb {
    engine: PostgresEngine,
    options: PgConnectOptions,
    schema: String,
}

impl TestDb {
    async fn open(test: &str) -> Option<Self> {
        let options = PgConnectOptions::from_str(&database_url()).expect("database URL");
        if let Err(reason) = reachable(&options) {
            if services_required() {
                panic!("{test}: required service missing (LATTICE_REQUIRE_SERVICES=1): {reason}");
            }
            eprintln!("SKIPPED {test}: {reason} (set LATTICE_REQUIRE_SERVICES=1 to fail instead)");
            return None;
        }
        let schema = format!("search_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = options.connect().await.expect("connect");
        conn.execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .expect("create schema");
        conn.close().await.expect("close");
        let pool = pool_in(&options, &schema).await;
        let engine = PostgresEngine::open(pool).await.expect("open engine");
        Some(Self {
            engine,
            options,
            schema,
        })
    }

    /// Another engine on the same schema, as a second service replica has.
    async fn replica(&self) -> PostgresEngine {
        PostgresEngine::open(pool_in(&self.options, &self.schema).await)
            .await
            .expect("open replica")
    }

    async fn cleanup(self) {
        drop(self.engine);
        let mut conn = self.options.connect().await.expect("connect");
        conn.execute(format!("DROP SCHEMA {} CASCADE", self.schema).as_str())
            .await
            .expect("drop schema");
        conn.close().await.expect("close");
    }
}

/// One test per conformance case, each on an engine in a fresh schema
/// (skipped without PostgreSQL unless `LATTICE_REQUIRE_SERVICES=1`).
macro_rules! postgres_conformance {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(db) = TestDb::open(stringify!($case)).await else {
                    return;
                };
                let engine = db.engine.clone();
                // Spawned so a failing case still drops its schema.
                let outcome =
                    tokio::spawn(async move { conformance::$case(&engine).await }).await;
                db.cleanup().await;
                if let Err(failure) = outcome {
                    std::panic::resume_unwind(failure.into_panic());
                }
            }
        )*

        const CASES: &[&str] = &[$(stringify!($case)),*];
    };
}

postgres_conformance!(
    ingest_upserts_by_subject_and_entry_id,
    eleventh_entry_of_a_subject_is_rejected,
    type_conflict_rejects_only_that_entry,
    malformed_entries_are_rejected,
    simple_queries,
    advanced_queries,
    advanced_query_errors,
    filters,
    filter_errors,
    facets,
    facets_follow_filters,
    post_facet_filters_do_not_change_counts,
    facet_errors,
    sorting_puts_missing_values_last,
    offset_paging,
    result_window,
    scroll_visits_every_entry_once,
    scroll_through_many_pages,
    visibility,
    bypass_sees_everything,
    delete_by_subjects_and_entry,
    delete_by_query_ignores_visibility,
    subject_lookup,
    fields_and_count,
    drop_and_unknown_index,
    boosts_are_accepted,
    long_strings_are_searchable_as_words,
);

/// The suite's cases, read from its source: every
/// `pub(crate) async fn NAME(engine: &dyn SearchEngine)`.
#[test]
fn every_conformance_case_runs_here() {
    let source = include_str!("conformance/mod.rs");
    let suite: BTreeSet<&str> = source
        .lines()
        .filter_map(|line| line.strip_prefix("pub(crate) async fn "))
        .filter(|rest| rest.contains("(engine: &dyn SearchEngine)"))
        .filter_map(|rest| rest.split('(').next())
        .collect();
    let here: BTreeSet<&str> = CASES.iter().copied().collect();
    assert_eq!(suite, here, "postgres.rs must list every conformance case");
}

/// This engine's own cases, written before the suite existed; they also
/// cover what only PostgreSQL can get wrong (U+0000, wildcards over the
/// `tsvector`, field-qualified lexemes).
mod own {
    use super::*;

    fn entry(subject: &str, id: Option<&str>, content: Value, visible_to: &[&str]) -> Entry {
        Entry {
            subject: subject.to_owned(),
            id: id.map(str::to_owned),
            content,
            visible_to: visible_to.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    const ALICE: &str = "identity:6a1e6a1e-0000-4000-8000-000000000001";
    const GROUP: &str = "group:6a1e6a1e-0000-4000-8000-0000000000a1";

    fn alice() -> Visibility {
        Visibility::Principals(vec![ALICE.to_owned(), "public".to_owned()])
    }

    fn anonymous() -> Visibility {
        Visibility::Principals(vec!["public".to_owned()])
    }

    /// A small index: four datasets, one private to Alice.
    async fn seeded(db: &TestDb) -> SearchIndexId {
        let index = SearchIndexId::new();
        db.engine.create_index(index).await.expect("create");
        let outcomes = db
            .engine
            .ingest(
                index,
                vec![
                    entry(
                        "ds:1",
                        None,
                        json!({"title": "Beam run one", "instrument": "xray", "size": 10,
                               "taken": "2024-01-15", "tags": ["a", "b"], "ok": true}),
                        &["public"],
                    ),
                    entry(
                        "ds:2",
                        None,
                        json!({"title": "Beam run two", "instrument": "xray", "size": 20,
                               "taken": "2024-02-01T10:00:00Z", "tags": ["b"], "ok": false}),
                        &["public"],
                    ),
                    entry(
                        "ds:3",
                        None,
                        json!({"title": "Cryo session", "instrument": "cryo-em", "size": 30.5,
                               "taken": "2023-12-31", "tags": ["c"]}),
                        &[ALICE],
                    ),
                    entry(
                        "ds:3",
                        Some("extra"),
                        json!({"title": "Notes on the run", "instrument": "cryo-em"}),
                        &[GROUP, "public"],
                    ),
                ],
                &Limits::default(),
            )
            .await
            .expect("ingest");
        assert!(
            outcomes.iter().all(|o| *o == EntryOutcome::Applied),
            "{outcomes:?}"
        );
        index
    }

    fn request(q: &str, mode: QueryMode) -> SearchRequest {
        SearchRequest {
            query: SearchQuery {
                q: Some(q.to_owned()),
                mode,
                filters: vec![],
            },
            limit: Some(100),
            ..SearchRequest::default()
        }
    }

    /// The (subject, entry id) pairs of a result, sorted.
    fn keys(result: &lattice_protocol::search::SearchResult) -> Vec<(String, Option<String>)> {
        let mut keys: Vec<_> = result
            .gmeta
            .iter()
            .flat_map(|s| {
                s.entries
                    .iter()
                    .map(|e| (s.subject.clone(), e.entry_id.clone()))
            })
            .collect();
        keys.sort();
        keys
    }

    fn k(subject: &str, id: Option<&str>) -> (String, Option<String>) {
        (subject.to_owned(), id.map(str::to_owned))
    }

    macro_rules! db {
        ($name:expr) => {
            match TestDb::open($name).await {
                Some(db) => db,
                None => return,
            }
        };
    }

    #[tokio::test]
    async fn ingest_infers_types_and_rejects_bad_entries() {
        let db = db!("ingest_infers_types_and_rejects_bad_entries");
        let index = seeded(&db).await;
        let fields = db.engine.fields(index).await.expect("fields");
        assert_eq!(fields["size"], FieldType::Number);
        assert_eq!(fields["taken"], FieldType::Date);
        assert_eq!(fields["title"], FieldType::String);
        assert_eq!(fields["ok"], FieldType::Boolean);
        assert_eq!(db.engine.count(index).await.expect("count"), 4);

        let mut entries = vec![
            entry("bad:1", None, json!({"size": "big"}), &["public"]),
            entry("bad:2", None, json!([1]), &["public"]),
            entry("", None, json!({}), &["public"]),
            entry("bad:3", None, json!({}), &["nobody"]),
            entry(&"x".repeat(501), None, json!({}), &["public"]),
        ];
        for i in 0..11 {
            entries.push(entry(
                "many",
                Some(&i.to_string()),
                json!({"n": i}),
                &["public"],
            ));
        }
        // Replacing an existing entry id of a full subject is fine.
        entries.push(entry("many", Some("3"), json!({"n": 33}), &["public"]));
        let outcomes = db
            .engine
            .ingest(index, entries, &Limits::default())
            .await
            .expect("ingest");
        for outcome in &outcomes[..5] {
            assert!(matches!(outcome, EntryOutcome::Rejected(_)), "{outcomes:?}");
        }
        let EntryOutcome::Rejected(why) = &outcomes[0] else {
            unreachable!()
        };
        assert!(why.contains("size"), "{why}");
        assert!(outcomes[5..15].iter().all(|o| *o == EntryOutcome::Applied));
        assert!(
            matches!(outcomes[15], EntryOutcome::Rejected(_)),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[16], EntryOutcome::Applied);
        assert_eq!(db.engine.count(index).await.expect("count"), 14);
        let many = db
            .engine
            .subject(index, "many", &Visibility::Bypass)
            .await
            .expect("subject")
            .expect("found");
        assert_eq!(many.entries.len(), 10);
        let three = many
            .entries
            .iter()
            .find(|e| e.entry_id.as_deref() == Some("3"))
            .expect("3");
        assert_eq!(three.content, json!({"n": 33}));
        db.cleanup().await;
    }

    #[tokio::test]
    async fn visibility_is_enforced() {
        let db = db!("visibility_is_enforced");
        let index = seeded(&db).await;
        let all = SearchRequest {
            limit: Some(100),
            ..SearchRequest::default()
        };
        let seen = db
            .engine
            .search(index, &all, &anonymous())
            .await
            .expect("search");
        assert_eq!(seen.total, 3);
        assert_eq!(
            keys(&seen),
            vec![k("ds:1", None), k("ds:2", None), k("ds:3", Some("extra"))]
        );
        let seen = db
            .engine
            .search(index, &all, &alice())
            .await
            .expect("search");
        assert_eq!(seen.total, 4);
        // Grouped: ds:3's two entries in one subject result, id-less first.
        let ds3 = seen
            .gmeta
            .iter()
            .find(|s| s.subject == "ds:3")
            .expect("ds:3");
        assert_eq!(ds3.entries.len(), 2);
        assert_eq!(ds3.entries[0].entry_id, None);
        let seen = db
            .engine
            .search(index, &all, &Visibility::Bypass)
            .await
            .expect("search");
        assert_eq!(seen.total, 4);
        let subject = db
            .engine
            .subject(index, "ds:3", &anonymous())
            .await
            .expect("subject")
            .expect("some");
        assert_eq!(subject.entries.len(), 1);
        assert!(db
            .engine
            .subject(index, "ds:9", &alice())
            .await
            .expect("subject")
            .is_none());
        db.cleanup().await;
    }

    #[tokio::test]
    async fn free_text_and_advanced_queries() {
        let db = db!("free_text_and_advanced_queries");
        let index = seeded(&db).await;
        let run = |q: &str, mode| {
            let engine = db.engine.clone();
            let q = q.to_owned();
            async move {
                keys(
                    &engine
                        .search(index, &request(&q, mode), &Visibility::Bypass)
                        .await
                        .unwrap_or_else(|e| panic!("{q}: {e}")),
                )
            }
        };
        use QueryMode::{Advanced, Simple};
        assert_eq!(
            run("BEAM", Simple).await,
            vec![k("ds:1", None), k("ds:2", None)]
        );
        assert_eq!(run("beam two", Simple).await, vec![k("ds:2", None)]);
        assert_eq!(run("run", Simple).await.len(), 3);
        assert_eq!(run("cryo", Simple).await.len(), 2);
        assert_eq!(run("title:cryo", Advanced).await, vec![k("ds:3", None)]);
        assert_eq!(run("\"run one\"", Advanced).await, vec![k("ds:1", None)]);
        assert_eq!(run("\"one beam\"", Advanced).await, vec![]);
        assert_eq!(
            run("beam AND NOT two", Advanced).await,
            vec![k("ds:1", None)]
        );
        assert_eq!(run("two OR session", Advanced).await.len(), 2);
        assert_eq!(run("size:[15 TO *]", Advanced).await.len(), 2);
        assert_eq!(
            run("size:{10 TO 20]", Advanced).await,
            vec![k("ds:2", None)]
        );
        assert_eq!(run("size:20", Advanced).await, vec![k("ds:2", None)]);
        assert_eq!(run("ok:true", Advanced).await, vec![k("ds:1", None)]);
        assert_eq!(
            run("taken:[2024-01-01 TO 2024-12-31]", Advanced)
                .await
                .len(),
            2
        );
        assert_eq!(run("cry*", Advanced).await.len(), 2);
        assert_eq!(run("title:se?sion", Advanced).await, vec![k("ds:3", None)]);
        assert_eq!(run("instrument:x*", Advanced).await.len(), 2);

        let err = db
            .engine
            .search(index, &request("title:(", Advanced), &Visibility::Bypass)
            .await
            .expect_err("syntax error");
        assert!(
            matches!(
                err,
                lattice_search::SearchError::Invalid {
                    position: Some(_),
                    ..
                }
            ),
            "{err:?}"
        );
        let err = db
            .engine
            .search(index, &request("nope:x", Advanced), &Visibility::Bypass)
            .await
            .expect_err("unknown field");
        assert!(
            matches!(err, lattice_search::SearchError::Invalid { .. }),
            "{err:?}"
        );
        db.cleanup().await;
    }

    #[tokio::test]
    async fn filters() {
        let db = db!("filters");
        let index = seeded(&db).await;
        let run = |filters: Vec<Filter>| {
            let engine = db.engine.clone();
            async move {
                let request = SearchRequest {
                    query: SearchQuery {
                        filters,
                        ..SearchQuery::default()
                    },
                    limit: Some(100),
                    ..SearchRequest::default()
                };
                keys(
                    &engine
                        .search(index, &request, &Visibility::Bypass)
                        .await
                        .expect("search"),
                )
            }
        };
        let any = |field: &str, values: Value| Filter::MatchAny {
            field_name: field.to_owned(),
            values: serde_json::from_value(values).expect("values"),
        };
        assert_eq!(run(vec![any("instrument", json!(["xray"]))]).await.len(), 2);
        assert_eq!(run(vec![any("instrument", json!(["XRAY"]))]).await.len(), 0);
        assert_eq!(run(vec![any("tags", json!(["a", "c"]))]).await.len(), 2);
        assert_eq!(
            run(vec![any("size", json!([10]))]).await,
            vec![k("ds:1", None)]
        );
        assert_eq!(
            run(vec![Filter::MatchAll {
                field_name: "tags".into(),
                values: vec![json!("a"), json!("b")]
            }])
            .await,
            vec![k("ds:1", None)]
        );
        assert_eq!(
            run(vec![Filter::Range {
                field_name: "size".into(),
                values: vec![RangeBound {
                    from: Some(json!(15)),
                    to: Some(json!("*"))
                }]
            }])
            .await
            .len(),
            2
        );
        assert_eq!(
            run(vec![Filter::Range {
                field_name: "taken".into(),
                values: vec![RangeBound {
                    from: None,
                    to: Some(json!("2024-01-15"))
                }]
            }])
            .await,
            vec![k("ds:1", None), k("ds:3", None)]
        );
        assert_eq!(
            run(vec![Filter::Exists {
                field_name: "ok".into()
            }])
            .await
            .len(),
            2
        );
        assert_eq!(
            run(vec![Filter::Like {
                field_name: "instrument".into(),
                value: "cryo-*".into()
            }])
            .await
            .len(),
            2
        );
        assert_eq!(
            run(vec![Filter::Not {
                filter: Box::new(Filter::Or {
                    filters: vec![
                        any("instrument", json!(["xray"])),
                        any("size", json!([30.5]))
                    ]
                })
            }])
            .await,
            vec![k("ds:3", Some("extra"))]
        );
        let bad = db
            .engine
            .search(
                index,
                &SearchRequest {
                    query: SearchQuery {
                        filters: vec![any("size", json!(["ten"]))],
                        ..SearchQuery::default()
                    },
                    ..SearchRequest::default()
                },
                &Visibility::Bypass,
            )
            .await;
        assert!(bad.is_err());
        db.cleanup().await;
    }

    #[tokio::test]
    async fn facets_sorts_and_paging() {
        let db = db!("facets_sorts_and_paging");
        let index = seeded(&db).await;
        let facet = |field: &str, kind: FacetKind| Facet {
            name: Some(format!("{field} {kind:?}")),
            field_name: field.to_owned(),
            kind,
        };
        let request = SearchRequest {
            facets: vec![
                facet("instrument", FacetKind::Terms { size: Some(1) }),
                facet(
                    "size",
                    FacetKind::NumericHistogram {
                        size: 2,
                        histogram_range: HistogramRange {
                            low: 0.0,
                            high: 40.0,
                        },
                    },
                ),
                facet(
                    "taken",
                    FacetKind::DateHistogram {
                        date_interval: DateInterval::Month,
                    },
                ),
                facet("size", FacetKind::Sum),
                facet("size", FacetKind::Avg),
                facet("tags", FacetKind::DistinctCount),
            ],
            post_facet_filters: vec![Filter::MatchAny {
                field_name: "instrument".into(),
                values: vec![json!("xray")],
            }],
            sort: vec![SortField {
                field_name: "size".into(),
                order: SortOrder::Desc,
            }],
            limit: Some(1),
            ..SearchRequest::default()
        };
        let result = db
            .engine
            .search(index, &request, &Visibility::Bypass)
            .await
            .expect("search");
        assert_eq!(result.total, 2);
        assert_eq!(result.count, 1);
        assert!(result.has_next_page);
        assert_eq!(result.gmeta[0].subject, "ds:2");
        let facets = &result.facet_results;
        let terms = facets[0].buckets.as_ref().expect("buckets");
        assert_eq!(terms.len(), 1);
        // cryo-em and xray both count 2: ties by value.
        assert_eq!(terms[0].value, json!("cryo-em"));
        assert_eq!(terms[0].count, 2);
        let histogram = facets[1].buckets.as_ref().expect("buckets");
        assert_eq!(
            histogram.iter().map(|b| b.count).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let months = facets[2].buckets.as_ref().expect("buckets");
        assert_eq!(months.len(), 3);
        assert_eq!(months[0].value, json!("2023-12-01T00:00:00Z"));
        assert_eq!(months[0].to, Some(json!("2024-01-01T00:00:00Z")));
        assert_eq!(facets[3].value, Some(json!(60.5)));
        assert_eq!(
            facets[4].value.as_ref().and_then(Value::as_f64),
            Some(60.5 / 3.0)
        );
        assert_eq!(facets[5].value, Some(json!(3)));

        let second = SearchRequest {
            offset: 1,
            facets: vec![],
            ..request.clone()
        };
        let result = db
            .engine
            .search(index, &second, &Visibility::Bypass)
            .await
            .expect("search");
        assert_eq!(result.gmeta[0].subject, "ds:1");
        assert!(!result.has_next_page);

        // Missing values last both ways.
        for order in [SortOrder::Asc, SortOrder::Desc] {
            let request = SearchRequest {
                sort: vec![SortField {
                    field_name: "ok".into(),
                    order,
                }],
                limit: Some(100),
                ..SearchRequest::default()
            };
            let result = db
                .engine
                .search(index, &request, &Visibility::Bypass)
                .await
                .expect("search");
            let order_seen: Vec<_> = result
                .gmeta
                .iter()
                .flat_map(|s| {
                    s.entries
                        .iter()
                        .map(move |e| (s.subject.as_str(), e.content.get("ok").cloned()))
                })
                .map(|(s, ok)| (s.to_owned(), ok))
                .collect();
            assert_eq!(order_seen[2].1, None, "{order_seen:?}");
            assert_eq!(
                order_seen[0].1,
                Some(json!(order == SortOrder::Desc)),
                "{order_seen:?}"
            );
        }
        let too_far = SearchRequest {
            offset: 9_999,
            limit: Some(10),
            ..SearchRequest::default()
        };
        assert!(db
            .engine
            .search(index, &too_far, &Visibility::Bypass)
            .await
            .is_err());
        db.cleanup().await;
    }

    #[tokio::test]
    async fn scroll_pages_through_everything_in_key_order() {
        let db = db!("scroll_pages_through_everything_in_key_order");
        let index = SearchIndexId::new();
        db.engine.create_index(index).await.expect("create");
        let entries: Vec<Entry> = (0..250)
            .map(|i| {
                entry(
                    &format!("s:{:03}", i / 2),
                    Some(&format!("{}", i % 2)),
                    json!({"i": i}),
                    &["public"],
                )
            })
            .collect();
        db.engine
            .ingest(index, entries, &Limits::default())
            .await
            .expect("ingest");
        let mut seen = Vec::new();
        let mut marker = None;
        loop {
            let page = db
                .engine
                .scroll(
                    index,
                    &ScrollRequest {
                        limit: Some(7),
                        marker: marker.clone(),
                        ..ScrollRequest::default()
                    },
                    &anonymous(),
                )
                .await
                .expect("scroll");
            for subject in &page.gmeta {
                for e in &subject.entries {
                    seen.push((subject.subject.clone(), e.entry_id.clone()));
                }
            }
            if !page.has_next_page {
                assert!(page.marker.is_none());
                break;
            }
            marker = page.marker;
        }
        assert_eq!(seen.len(), 250);
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        let bad = db
            .engine
            .scroll(
                index,
                &ScrollRequest {
                    marker: Some("nonsense".into()),
                    ..ScrollRequest::default()
                },
                &anonymous(),
            )
            .await;
        assert!(bad.is_err());
        db.cleanup().await;
    }

    #[tokio::test]
    async fn deletes_and_drop() {
        let db = db!("deletes_and_drop");
        let index = seeded(&db).await;
        let removed = db
            .engine
            .delete(
                index,
                &DeleteTarget::Entry {
                    subject: "ds:3".into(),
                    entry_id: Some("extra".into()),
                },
            )
            .await
            .expect("delete");
        assert_eq!(removed, 1);
        let removed = db
            .engine
            .delete(
                index,
                &DeleteTarget::Query {
                    query: SearchQuery {
                        q: Some("beam".into()),
                        ..SearchQuery::default()
                    },
                },
            )
            .await
            .expect("delete");
        assert_eq!(removed, 2);
        let removed = db
            .engine
            .delete(
                index,
                &DeleteTarget::Subjects {
                    subjects: vec!["ds:3".into(), "ds:9".into()],
                },
            )
            .await
            .expect("delete");
        assert_eq!(removed, 1);
        assert_eq!(db.engine.count(index).await.expect("count"), 0);
        db.engine.drop_index(index).await.expect("drop");
        assert!(matches!(
            db.engine.count(index).await,
            Err(lattice_search::SearchError::UnknownIndex(_))
        ));
        db.cleanup().await;
    }

    #[tokio::test]
    async fn nul_characters_are_rejected_per_entry() {
        let db = db!("nul_characters_are_rejected_per_entry");
        let index = SearchIndexId::new();
        db.engine.create_index(index).await.expect("create");
        let outcomes = db
            .engine
            .ingest(
                index,
                vec![
                    entry("a", None, json!({"t": "x\u{0}y"}), &["public"]),
                    entry("b", None, json!({"t\u{0}": "x"}), &["public"]),
                    entry("c", None, json!({"t": "fine"}), &["public"]),
                ],
                &Limits::default(),
            )
            .await
            .expect("ingest");
        assert!(
            matches!(outcomes[0], EntryOutcome::Rejected(_)),
            "{outcomes:?}"
        );
        assert!(
            matches!(outcomes[1], EntryOutcome::Rejected(_)),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[2], EntryOutcome::Applied);
        assert_eq!(db.engine.count(index).await.expect("count"), 1);
        db.cleanup().await;
    }

    /// Text near PostgreSQL's `tsvector` limit: under it is stored, over
    /// it rejects that entry alone (not the whole ingest).
    #[tokio::test]
    async fn text_near_the_tsvector_limit() {
        let db = db!("text_near_the_tsvector_limit");
        let index = SearchIndexId::new();
        db.engine.create_index(index).await.expect("create");
        let words = |n: usize| {
            (0..n)
                .map(|i| format!("w{i}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let outcomes = db
            .engine
            .ingest(
                index,
                vec![
                    entry("under", None, json!({ "t": words(40_000) }), &["public"]),
                    entry("over", None, json!({ "t": words(50_000) }), &["public"]),
                ],
                &Limits::default(),
            )
            .await
            .expect("ingest");
        assert_eq!(outcomes[0], EntryOutcome::Applied);
        assert!(
            matches!(outcomes[1], EntryOutcome::Rejected(_)),
            "{outcomes:?}"
        );
        let found = db
            .engine
            .search(index, &request("w39999", QueryMode::Simple), &anonymous())
            .await
            .expect("search");
        assert_eq!(found.total, 1);
        db.cleanup().await;
    }

    /// Dates keep microseconds: a value a microsecond before a year ends
    /// is in that year's bucket and equals itself exactly.
    #[tokio::test]
    async fn dates_keep_microseconds() {
        let db = db!("dates_keep_microseconds");
        let index = SearchIndexId::new();
        db.engine.create_index(index).await.expect("create");
        db.engine
            .ingest(
                index,
                vec![
                    entry(
                        "a",
                        None,
                        json!({"at": "2023-12-31T23:59:59.999999Z"}),
                        &["public"],
                    ),
                    entry(
                        "b",
                        None,
                        json!({"at": "2024-01-01T00:00:00Z"}),
                        &["public"],
                    ),
                ],
                &Limits::default(),
            )
            .await
            .expect("ingest");
        let request = SearchRequest {
            query: SearchQuery {
                filters: vec![Filter::MatchAny {
                    field_name: "at".into(),
                    values: vec![json!("2023-12-31T23:59:59.999999Z")],
                }],
                ..SearchQuery::default()
            },
            facets: vec![Facet {
                name: None,
                field_name: "at".into(),
                kind: FacetKind::DateHistogram {
                    date_interval: DateInterval::Year,
                },
            }],
            ..SearchRequest::default()
        };
        let result = db
            .engine
            .search(index, &request, &anonymous())
            .await
            .expect("search");
        assert_eq!(result.total, 1);
        let buckets = result.facet_results[0].buckets.clone().expect("buckets");
        assert_eq!(buckets.len(), 1);
        assert_eq!(buckets[0].value, json!("2023-01-01T00:00:00Z"));
        db.cleanup().await;
    }

    /// A `match_any` with more values than one statement takes parameters.
    #[tokio::test]
    async fn long_match_any() {
        let db = db!("long_match_any");
        let index = SearchIndexId::new();
        db.engine.create_index(index).await.expect("create");
        db.engine
            .ingest(
                index,
                vec![
                    entry("a", None, json!({"n": 5, "s": "x5"}), &["public"]),
                    entry("b", None, json!({"n": 70_001, "s": "y"}), &["public"]),
                ],
                &Limits::default(),
            )
            .await
            .expect("ingest");
        let values = |f: &dyn Fn(usize) -> Value| (0..70_000).map(f).collect::<Vec<_>>();
        for filter in [
            Filter::MatchAny {
                field_name: "n".into(),
                values: values(&|i| json!(i)),
            },
            Filter::MatchAny {
                field_name: "s".into(),
                values: values(&|i| json!(format!("x{i}"))),
            },
        ] {
            let request = SearchRequest {
                query: SearchQuery {
                    filters: vec![filter],
                    ..SearchQuery::default()
                },
                ..SearchRequest::default()
            };
            let result = db
                .engine
                .search(index, &request, &anonymous())
                .await
                .expect("search");
            assert_eq!(result.total, 1);
            assert_eq!(result.gmeta[0].subject, "a");
        }
        db.cleanup().await;
    }

    /// Two replicas adding the same new field with different types at
    /// once: one type wins, every entry of the other is rejected, and the
    /// field map and the entries agree.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_ingesting_at_once_agree_on_field_types() {
        let db = db!("replicas_ingesting_at_once_agree_on_field_types");
        let other = db.replica().await;
        for round in 0..5 {
            let index = SearchIndexId::new();
            db.engine.create_index(index).await.expect("create");
            let numbers: Vec<Entry> = (0..200)
                .map(|i| entry(&format!("n{i}"), None, json!({"x": i}), &["public"]))
                .collect();
            let strings: Vec<Entry> = (0..200)
                .map(|i| {
                    entry(
                        &format!("s{i}"),
                        None,
                        json!({"x": format!("v{i}")}),
                        &["public"],
                    )
                })
                .collect();
            let limits = Limits::default();
            let (a, b) = tokio::join!(
                db.engine.ingest(index, numbers, &limits),
                other.ingest(index, strings, &limits)
            );
            let (a, b) = (a.expect("ingest a"), b.expect("ingest b"));
            let applied = |outcomes: &[EntryOutcome]| {
                outcomes
                    .iter()
                    .filter(|o| **o == EntryOutcome::Applied)
                    .count()
            };
            let (a, b) = (applied(&a), applied(&b));
            assert!(
                (a, b) == (200, 0) || (a, b) == (0, 200),
                "round {round}: {a} numbers and {b} strings applied"
            );
            let fields = other.fields(index).await.expect("fields");
            let expected = if a == 200 {
                FieldType::Number
            } else {
                FieldType::String
            };
            assert_eq!(fields.get("x"), Some(&expected));
            assert_eq!(db.engine.count(index).await.expect("count"), 200);
        }
        db.cleanup().await;
    }

    /// Not a benchmark (that is `bench/search.sh`): a quick look at ingest
    /// rate and query latency at a size where plans matter. Run with
    /// `cargo test -p lattice-search --test postgres -- --ignored --nocapture`
    /// (`LATTICE_SEARCH_SCALE_N` entries, default 50,000); it reports on stderr.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "slow; a manual look at throughput"]
    async fn throughput_at_scale() {
        use std::time::Instant;
        let db = db!("throughput_at_scale");
        let n: usize = std::env::var("LATTICE_SEARCH_SCALE_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50_000);
        let index = SearchIndexId::new();
        db.engine.create_index(index).await.expect("create");
        let instruments = ["XRD", "SEM", "SANS", "AFM", "TEM"];
        let started = Instant::now();
        for batch in 0..n.div_ceil(1000) {
            let entries: Vec<Entry> = (batch * 1000..((batch + 1) * 1000).min(n))
                .map(|i| {
                    entry(
                        &format!("ds/{i}"),
                        None,
                        json!({
                            "title": format!("Dataset {i} of sample {} beam run", i % 977),
                            "description": format!("Measured with detector {} at {} kelvin under vacuum, sample batch {}", i % 13, i % 300, i % 41),
                            "instrument": instruments[i % instruments.len()],
                            "size": (i % 1000) as f64 * 1.5,
                            "taken": format!("202{}-{:02}-{:02}", i % 5, i % 12 + 1, i % 28 + 1),
                            "keywords": [format!("k{}", i % 50), format!("k{}", i % 7)],
                        }),
                        if i % 3 == 0 { &[ALICE] } else { &["public"] },
                    )
                })
                .collect();
            db.engine
                .ingest(index, entries, &Limits::default())
                .await
                .expect("ingest");
        }
        let took = started.elapsed();
        eprintln!(
            "ingest: {n} entries in {took:?} ({:.0}/s)",
            n as f64 / took.as_secs_f64()
        );
        let facets = vec![
            Facet {
                name: None,
                field_name: "instrument".into(),
                kind: FacetKind::Terms { size: Some(10) },
            },
            Facet {
                name: None,
                field_name: "taken".into(),
                kind: FacetKind::DateHistogram {
                    date_interval: DateInterval::Year,
                },
            },
            Facet {
                name: None,
                field_name: "size".into(),
                kind: FacetKind::Avg,
            },
        ];
        let cases: Vec<(&str, SearchRequest)> = vec![
            ("free text", request("vacuum detector", QueryMode::Simple)),
            ("rare word", request("sample 5", QueryMode::Simple)),
            (
                "filter",
                SearchRequest {
                    query: SearchQuery {
                        filters: vec![Filter::MatchAny {
                            field_name: "instrument".into(),
                            values: vec![json!("SEM")],
                        }],
                        ..SearchQuery::default()
                    },
                    ..SearchRequest::default()
                },
            ),
            (
                "faceted",
                SearchRequest {
                    facets: facets.clone(),
                    ..request("beam", QueryMode::Simple)
                },
            ),
            (
                "sorted",
                SearchRequest {
                    sort: vec![SortField {
                        field_name: "size".into(),
                        order: SortOrder::Desc,
                    }],
                    ..request("kelvin", QueryMode::Simple)
                },
            ),
        ];
        for (name, request) in &cases {
            let mut times = Vec::new();
            for _ in 0..5 {
                let started = Instant::now();
                db.engine
                    .search(index, request, &anonymous())
                    .await
                    .expect("search");
                times.push(started.elapsed());
            }
            times.sort();
            eprintln!("{name}: median {:?}", times[2]);
        }
        db.cleanup().await;
    }
}
