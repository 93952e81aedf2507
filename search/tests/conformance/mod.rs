//! The conformance suite every `SearchEngine` must pass, so that the
//! engines answer the same requests the same way.
//!
//! Each case is an async function over `&dyn SearchEngine` that makes its
//! own index (a fresh id), loads a fixed data set and states exact
//! expectations. Relevance scores differ between engines, so where results
//! come in relevance order the cases compare sets of entries, not order;
//! wherever a sort is given they compare order exactly.
//!
//! An engine's test file instantiates every case with
//! `conformance_tests!(make_engine)`, where `make_engine` is an async fn
//! answering something that dereferences to the engine (and keeps whatever
//! the engine needs, such as a temporary directory, alive).

#![allow(dead_code)]

use std::collections::BTreeSet;

use lattice_protocol::search::{
    Boost, DateInterval, DeleteTarget, Entry, Facet, FacetKind, FacetResult, FieldType, Filter,
    HistogramRange, QueryMode, RangeBound, ScrollRequest, SearchQuery, SearchRequest, SearchResult,
    SortField, SortOrder, MAX_ENTRIES_PER_SUBJECT,
};
use lattice_protocol::SearchIndexId;
use lattice_search::{EntryOutcome, Limits, SearchEngine, SearchError, Visibility};
use serde_json::{json, Value};

/// Declares one `#[tokio::test]` per case, each on a fresh engine from `$make`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@cases $make;
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
            long_strings_are_searchable_as_words
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let engine = $make().await;
                conformance::$case(&*engine).await;
            }
        )*
    };
}

// ------------------------------------------------------------------ the data

const ALICE: &str = "identity:00000000-0000-4000-8000-00000000000a";
const BOB: &str = "identity:00000000-0000-4000-8000-00000000000b";
const GROUP: &str = "group:00000000-0000-4000-8000-00000000000c";

/// Seven entries over six subjects (`ds/6` holds `v1` and `v2`):
///
/// | key     | visible to       | instrument | size | taken            | tags            | ok    |
/// |---------|------------------|------------|------|------------------|-----------------|-------|
/// | ds/1    | public           | XRD        | 10   | 2024-01-15       | crystal, space  | true  |
/// | ds/2    | public           | XRD        | 20   | 2024-02-10T12:30 | protein, crystal| false |
/// | ds/3    | all_authenticated| SEM        | 30   | 2024-02-20       | alloy           | true  |
/// | ds/4    | ALICE            | SEM        | 40   | 2023-12-31T23:00 | alloy, stress   |       |
/// | ds/5    | GROUP            | SANS       | 50   |                  | crystal         | false |
/// | ds/6 v1 | public, BOB      | XRD        | 60.5 | 2024-03-01       |                 | true  |
/// | ds/6 v2 | public           | AFM        |      | 2024-03-02       |                 |       |
fn dataset() -> Vec<Entry> {
    vec![
        entry(
            "ds/1",
            None,
            json!({"title": "Crystal growth in microgravity", "instrument": "XRD", "size": 10,
                   "taken": "2024-01-15", "tags": ["crystal", "space"], "ok": true,
                   "meta": {"sample": "A-1"}}),
            &["public"],
        ),
        entry(
            "ds/2",
            None,
            json!({"title": "Protein crystal diffraction", "instrument": "XRD", "size": 20,
                   "taken": "2024-02-10T12:30:00Z", "tags": ["protein", "crystal"], "ok": false,
                   "meta": {"sample": "B-7"}}),
            &["public"],
        ),
        entry(
            "ds/3",
            None,
            json!({"title": "Electron microscopy of alloys", "instrument": "SEM", "size": 30,
                   "taken": "2024-02-20", "tags": ["alloy"], "ok": true}),
            &["all_authenticated_users"],
        ),
        entry(
            "ds/4",
            None,
            json!({"title": "Alloy fatigue under stress", "instrument": "SEM", "size": 40,
                   "taken": "2023-12-31T23:00:00Z", "tags": ["alloy", "stress"],
                   "meta": {"sample": "C-3"}}),
            &[ALICE],
        ),
        entry(
            "ds/5",
            None,
            json!({"title": "Neutron scattering of crystal lattices", "instrument": "SANS",
                   "size": 50, "tags": ["crystal"], "ok": false}),
            &[GROUP],
        ),
        entry(
            "ds/6",
            Some("v1"),
            json!({"title": "Growth rates of thin films", "instrument": "XRD", "size": 60.5,
                   "taken": "2024-03-01", "ok": true}),
            &["public", BOB],
        ),
        entry(
            "ds/6",
            Some("v2"),
            json!({"title": "Thin films revisited", "instrument": "AFM", "taken": "2024-03-02"}),
            &["public"],
        ),
    ]
}

fn entry(subject: &str, id: Option<&str>, content: Value, visible_to: &[&str]) -> Entry {
    Entry {
        subject: subject.to_string(),
        id: id.map(str::to_string),
        content,
        visible_to: visible_to.iter().map(|p| p.to_string()).collect(),
    }
}

/// Sees every entry of the data set through its principals.
fn everyone() -> Visibility {
    principals(&["public", "all_authenticated_users", ALICE, GROUP])
}

fn anonymous() -> Visibility {
    principals(&["public"])
}

fn principals(list: &[&str]) -> Visibility {
    Visibility::Principals(list.iter().map(|p| p.to_string()).collect())
}

/// An entry's key as the cases write it: `ds/1`, `ds/6 v1`.
type Key = String;

fn key(subject: &str, id: Option<&str>) -> Key {
    match id {
        Some(id) => format!("{subject} {id}"),
        None => subject.to_string(),
    }
}

fn keys_of(result: &SearchResult) -> Vec<Key> {
    result
        .gmeta
        .iter()
        .flat_map(|group| {
            group
                .entries
                .iter()
                .map(|e| key(&group.subject, e.entry_id.as_deref()))
        })
        .collect()
}

fn set(keys: &[&str]) -> BTreeSet<Key> {
    keys.iter().map(|k| k.to_string()).collect()
}

fn list(keys: &[&str]) -> Vec<Key> {
    keys.iter().map(|k| k.to_string()).collect()
}

const ALL: [&str; 7] = ["ds/1", "ds/2", "ds/3", "ds/4", "ds/5", "ds/6 v1", "ds/6 v2"];

async fn new_index(engine: &dyn SearchEngine) -> SearchIndexId {
    let index = SearchIndexId::new();
    engine.create_index(index).await.expect("create index");
    index
}

async fn seeded(engine: &dyn SearchEngine) -> SearchIndexId {
    let index = new_index(engine).await;
    let outcomes = engine
        .ingest(index, dataset(), &Limits::default())
        .await
        .expect("ingest");
    assert_eq!(outcomes, vec![EntryOutcome::Applied; 7]);
    index
}

fn query(q: &str) -> SearchRequest {
    SearchRequest {
        query: SearchQuery {
            q: Some(q.to_string()),
            mode: QueryMode::Advanced,
            filters: vec![],
        },
        limit: Some(100),
        ..SearchRequest::default()
    }
}

fn filtered(filters: Vec<Filter>) -> SearchRequest {
    SearchRequest {
        query: SearchQuery {
            q: None,
            mode: QueryMode::Simple,
            filters,
        },
        limit: Some(100),
        ..SearchRequest::default()
    }
}

async fn search(
    engine: &dyn SearchEngine,
    index: SearchIndexId,
    request: &SearchRequest,
    visibility: &Visibility,
) -> SearchResult {
    engine
        .search(index, request, visibility)
        .await
        .unwrap_or_else(|err| panic!("search {request:?}: {err}"))
}

/// The set of entries a request finds for everyone (relevance order differs
/// between engines, so only the set is compared).
async fn found(
    engine: &dyn SearchEngine,
    index: SearchIndexId,
    request: &SearchRequest,
) -> BTreeSet<Key> {
    let result = search(engine, index, request, &everyone()).await;
    assert_eq!(result.total as usize, result.count as usize, "{request:?}");
    keys_of(&result).into_iter().collect()
}

async fn invalid(
    engine: &dyn SearchEngine,
    index: SearchIndexId,
    request: &SearchRequest,
) -> (String, Option<usize>) {
    match engine.search(index, request, &everyone()).await {
        Err(SearchError::Invalid { message, position }) => (message, position),
        other => panic!("expected invalid for {request:?}, got {other:?}"),
    }
}

fn match_any(field: &str, values: Vec<Value>) -> Filter {
    Filter::MatchAny {
        field_name: field.to_string(),
        values,
    }
}

fn range(field: &str, from: Option<Value>, to: Option<Value>) -> RangeBound {
    let _ = field;
    RangeBound { from, to }
}

fn facet(field: &str, kind: FacetKind) -> Facet {
    Facet {
        name: None,
        field_name: field.to_string(),
        kind,
    }
}

/// A facet's buckets as (value, count).
fn buckets(results: &[FacetResult], name: &str) -> Vec<(Value, u64)> {
    results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no facet {name}"))
        .buckets
        .as_ref()
        .unwrap_or_else(|| panic!("facet {name} has no buckets"))
        .iter()
        .map(|b| (b.value.clone(), b.count))
        .collect()
}

fn facet_value(results: &[FacetResult], name: &str) -> Value {
    results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no facet {name}"))
        .value
        .clone()
        .unwrap_or_else(|| panic!("facet {name} has no value"))
}

fn approx(value: &Value, expected: f64) {
    let got = value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"));
    assert!((got - expected).abs() < 1e-9, "{got} != {expected}");
}

// ----------------------------------------------------------------- ingest

pub(crate) async fn ingest_upserts_by_subject_and_entry_id(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let changed = entry(
        "ds/1",
        None,
        json!({"title": "Replaced", "instrument": "XRD"}),
        &["public"],
    );
    let added = entry(
        "ds/1",
        Some("extra"),
        json!({"title": "Extra"}),
        &["public"],
    );
    let outcomes = engine
        .ingest(index, vec![changed, added], &Limits::default())
        .await
        .expect("ingest");
    assert_eq!(outcomes, vec![EntryOutcome::Applied; 2]);
    assert_eq!(engine.count(index).await.expect("count"), 8);
    let subject = engine
        .subject(index, "ds/1", &everyone())
        .await
        .expect("subject")
        .expect("ds/1 exists");
    assert_eq!(subject.entries.len(), 2);
    assert_eq!(subject.entries[0].entry_id, None);
    assert_eq!(
        subject.entries[0].content,
        json!({"title": "Replaced", "instrument": "XRD"})
    );
    assert_eq!(subject.entries[1].entry_id.as_deref(), Some("extra"));
    // The old content is no longer found.
    assert_eq!(found(engine, index, &query("microgravity")).await, set(&[]));
    assert_eq!(
        found(engine, index, &query("replaced")).await,
        set(&["ds/1"])
    );

    // The same key twice in one call: the later one wins.
    let first = entry("dup", None, json!({"title": "first"}), &["public"]);
    let second = entry("dup", None, json!({"title": "second"}), &["public"]);
    engine
        .ingest(index, vec![first, second], &Limits::default())
        .await
        .expect("ingest");
    assert_eq!(engine.count(index).await.expect("count"), 9);
    assert_eq!(found(engine, index, &query("first")).await, set(&[]));
    assert_eq!(found(engine, index, &query("second")).await, set(&["dup"]));
}

pub(crate) async fn eleventh_entry_of_a_subject_is_rejected(engine: &dyn SearchEngine) {
    let index = new_index(engine).await;
    let make = |id: usize| entry("many", Some(&id.to_string()), json!({"n": id}), &["public"]);
    let ten: Vec<Entry> = (0..MAX_ENTRIES_PER_SUBJECT).map(make).collect();
    let outcomes = engine
        .ingest(index, ten, &Limits::default())
        .await
        .expect("ingest");
    assert!(outcomes.iter().all(|o| *o == EntryOutcome::Applied));
    let outcomes = engine
        .ingest(index, vec![make(10), make(3)], &Limits::default())
        .await
        .expect("ingest");
    assert!(matches!(&outcomes[0], EntryOutcome::Rejected(reason) if reason.contains("many")));
    assert_eq!(
        outcomes[1],
        EntryOutcome::Applied,
        "replacing an entry is fine"
    );
    assert_eq!(engine.count(index).await.expect("count"), 10);

    // Within one call too, and the id-less entry counts.
    let mut eleven: Vec<Entry> = (0..10)
        .map(|i| entry("other", Some(&i.to_string()), json!({"n": i}), &["public"]))
        .collect();
    eleven.push(entry("other", None, json!({"n": 99}), &["public"]));
    let outcomes = engine
        .ingest(index, eleven, &Limits::default())
        .await
        .expect("ingest");
    assert!(outcomes[..10].iter().all(|o| *o == EntryOutcome::Applied));
    assert!(matches!(outcomes[10], EntryOutcome::Rejected(_)));
    assert_eq!(engine.count(index).await.expect("count"), 20);
}

pub(crate) async fn type_conflict_rejects_only_that_entry(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let outcomes = engine
        .ingest(
            index,
            vec![
                entry("c/1", None, json!({"size": "big"}), &["public"]),
                entry("c/2", None, json!({"size": 5, "color": "red"}), &["public"]),
                entry("c/3", None, json!({"taken": "yesterday"}), &["public"]),
                entry("c/4", None, json!({"color": 7}), &["public"]),
            ],
            &Limits::default(),
        )
        .await
        .expect("ingest");
    match &outcomes[0] {
        EntryOutcome::Rejected(reason) => {
            assert!(
                reason.contains("size") && reason.contains("number") && reason.contains("string"),
                "{reason}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(outcomes[1], EntryOutcome::Applied);
    assert!(
        matches!(&outcomes[2], EntryOutcome::Rejected(r) if r.contains("taken") && r.contains("date"))
    );
    // `color` became a string with c/2, earlier in the same call.
    assert!(matches!(&outcomes[3], EntryOutcome::Rejected(r) if r.contains("color")));
    assert_eq!(engine.count(index).await.expect("count"), 8);
    let fields = engine.fields(index).await.expect("fields");
    assert_eq!(fields.get("color"), Some(&FieldType::String));
    assert_eq!(fields.get("size"), Some(&FieldType::Number));
}

pub(crate) async fn malformed_entries_are_rejected(engine: &dyn SearchEngine) {
    let index = new_index(engine).await;
    let limits = Limits {
        max_depth: 3,
        max_fields: 5,
        max_entry_bytes: 200,
    };
    let cases = vec![
        entry("p/1", None, json!({"a": 1}), &["identity:not-a-uuid"]),
        entry("p/2", None, json!({"a": 1}), &["someone"]),
        entry("p/3", None, json!({"a": 1}), &[]),
        entry("p/4", None, json!([1, 2]), &["public"]),
        entry("", None, json!({"a": 1}), &["public"]),
        entry(&"s".repeat(501), None, json!({"a": 1}), &["public"]),
        entry(
            "p/7",
            None,
            json!({"a": {"b": {"c": {"d": 1}}}}),
            &["public"],
        ),
        entry("p/8", None, json!({"text": "x".repeat(300)}), &["public"]),
        entry(
            "p/9",
            None,
            json!({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}),
            &["public"],
        ),
        entry("p/ok", None, json!({"a": {"b": 1}}), &["public", ALICE]),
    ];
    let outcomes = engine.ingest(index, cases, &limits).await.expect("ingest");
    for (i, outcome) in outcomes.iter().enumerate().take(9) {
        assert!(
            matches!(outcome, EntryOutcome::Rejected(_)),
            "case {i}: {outcome:?}"
        );
    }
    assert_eq!(outcomes[9], EntryOutcome::Applied);
    assert!(matches!(&outcomes[0], EntryOutcome::Rejected(r) if r.contains("identity:not-a-uuid")));
    assert_eq!(engine.count(index).await.expect("count"), 1);
    assert_eq!(
        engine
            .fields(index)
            .await
            .expect("fields")
            .into_iter()
            .collect::<Vec<_>>(),
        vec![("a.b".to_string(), FieldType::Number)]
    );
}

// ---------------------------------------------------------------- queries

pub(crate) async fn simple_queries(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let simple = |q: &str| {
        let mut request = query(q);
        request.query.mode = QueryMode::Simple;
        request
    };
    assert_eq!(
        found(engine, index, &simple("crystal")).await,
        set(&["ds/1", "ds/2", "ds/5"])
    );
    // Every word must occur, in any string field, whatever the case.
    assert_eq!(
        found(engine, index, &simple("CRYSTAL growth")).await,
        set(&["ds/1"])
    );
    assert_eq!(
        found(engine, index, &simple("xrd thin")).await,
        set(&["ds/6 v1"])
    );
    // Punctuation separates words; the advanced syntax means nothing here.
    assert_eq!(found(engine, index, &simple("b-7")).await, set(&["ds/2"]));
    assert_eq!(found(engine, index, &simple("alloy AND (")).await, set(&[]));
    assert_eq!(found(engine, index, &simple("")).await, set(&ALL));
    // Words of numbers, dates and booleans are not text.
    assert_eq!(found(engine, index, &simple("10")).await, set(&[]));
}

pub(crate) async fn advanced_queries(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("", ALL.to_vec()),
        ("*", ALL.to_vec()),
        ("instrument:XRD", vec!["ds/1", "ds/2", "ds/6 v1"]),
        ("instrument:xrd", vec!["ds/1", "ds/2", "ds/6 v1"]),
        ("title:\"thin films\"", vec!["ds/6 v1", "ds/6 v2"]),
        ("\"films thin\"", vec![]),
        // A phrase does not run from one value into the next.
        ("\"space protein\"", vec![]),
        ("\"crystal space\"", vec![]),
        ("tags:crystal", vec!["ds/1", "ds/2", "ds/5"]),
        ("size:[20 TO 40]", vec!["ds/2", "ds/3", "ds/4"]),
        ("size:{20 TO 40}", vec!["ds/3"]),
        ("size:[50 TO *]", vec!["ds/5", "ds/6 v1"]),
        ("size:[* TO 10]", vec!["ds/1"]),
        ("size:60.5", vec!["ds/6 v1"]),
        ("taken:[2024-02-01 TO 2024-02-29]", vec!["ds/2", "ds/3"]),
        ("taken:{* TO 2024-01-01}", vec!["ds/4"]),
        (
            "taken:[2024-03-01T00:00:00Z TO *]",
            vec!["ds/6 v1", "ds/6 v2"],
        ),
        ("taken:2024-02-10T12:30:00Z", vec!["ds/2"]),
        ("cryst*", vec!["ds/1", "ds/2", "ds/5"]),
        ("title:gr?wth", vec!["ds/1", "ds/6 v1"]),
        ("instrument:s*", vec!["ds/3", "ds/4", "ds/5"]),
        ("*ttering", vec!["ds/5"]),
        ("crystal NOT protein", vec!["ds/1", "ds/5"]),
        ("crystal -space", vec!["ds/2", "ds/5"]),
        ("NOT crystal", vec!["ds/3", "ds/4", "ds/6 v1", "ds/6 v2"]),
        ("instrument:AFM OR instrument:SANS", vec!["ds/5", "ds/6 v2"]),
        (
            "(alloy OR films) AND NOT size:40",
            vec!["ds/3", "ds/6 v1", "ds/6 v2"],
        ),
        ("alloy OR films size:[* TO 35]", vec!["ds/3", "ds/4"]),
        ("ok:true", vec!["ds/1", "ds/3", "ds/6 v1"]),
        ("ok:false crystal", vec!["ds/2", "ds/5"]),
        ("meta.sample:\"B-7\"", vec!["ds/2"]),
        ("meta.sample:c", vec!["ds/4"]),
    ];
    for (q, expected) in cases {
        assert_eq!(
            found(engine, index, &query(q)).await,
            set(&expected),
            "query {q:?}"
        );
    }
}

pub(crate) async fn advanced_query_errors(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let (message, position) = invalid(engine, index, &query("crystal AND (growth")).await;
    assert_eq!(position, Some(12), "{message}");
    assert_eq!(
        invalid(engine, index, &query("crystal AND")).await.1,
        Some(8)
    );
    assert_eq!(
        invalid(engine, index, &query("title:\"open")).await.1,
        Some(6)
    );
    assert_eq!(
        invalid(engine, index, &query("size:[1 10]")).await.1,
        Some(8)
    );
    let (message, _) = invalid(engine, index, &query("nope:x")).await;
    assert!(message.contains("nope"), "{message}");
    let (message, _) = invalid(engine, index, &query("size:big")).await;
    assert!(message.contains("size"), "{message}");
    invalid(engine, index, &query("title:[a TO b]")).await;
    invalid(engine, index, &query("size:1*")).await;
}

// ---------------------------------------------------------------- filters

pub(crate) async fn filters(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let not = |filter: Filter| Filter::Not {
        filter: Box::new(filter),
    };
    let exists = |field: &str| Filter::Exists {
        field_name: field.to_string(),
    };
    let like = |field: &str, value: &str| Filter::Like {
        field_name: field.to_string(),
        value: value.to_string(),
    };
    let cases: Vec<(Vec<Filter>, Vec<&str>)> = vec![
        (
            vec![match_any("instrument", vec![json!("XRD"), json!("AFM")])],
            vec!["ds/1", "ds/2", "ds/6 v1", "ds/6 v2"],
        ),
        // Exact and case-sensitive.
        (vec![match_any("instrument", vec![json!("xrd")])], vec![]),
        (
            vec![match_any("title", vec![json!("Thin films revisited")])],
            vec!["ds/6 v2"],
        ),
        (vec![match_any("title", vec![json!("Thin films")])], vec![]),
        (
            vec![match_any("size", vec![json!(60.5), json!(10)])],
            vec!["ds/1", "ds/6 v1"],
        ),
        (
            vec![match_any("ok", vec![json!(false)])],
            vec!["ds/2", "ds/5"],
        ),
        (
            vec![match_any("taken", vec![json!("2024-01-15")])],
            vec!["ds/1"],
        ),
        (
            vec![match_any("taken", vec![json!("2024-01-15T00:00:00+00:00")])],
            vec!["ds/1"],
        ),
        (
            vec![Filter::MatchAll {
                field_name: "tags".into(),
                values: vec![json!("crystal"), json!("protein")],
            }],
            vec!["ds/2"],
        ),
        (
            vec![Filter::Range {
                field_name: "size".into(),
                values: vec![
                    range("size", Some(json!(10)), Some(json!(20))),
                    range("size", Some(json!(55)), None),
                ],
            }],
            vec!["ds/1", "ds/2", "ds/6 v1"],
        ),
        (
            vec![Filter::Range {
                field_name: "taken".into(),
                values: vec![range("taken", Some(json!("2024-02-01")), Some(json!("*")))],
            }],
            vec!["ds/2", "ds/3", "ds/6 v1", "ds/6 v2"],
        ),
        (
            vec![Filter::Range {
                field_name: "taken".into(),
                values: vec![range("taken", None, Some(json!("2024-01-15")))],
            }],
            vec!["ds/1", "ds/4"],
        ),
        (
            vec![exists("taken")],
            vec!["ds/1", "ds/2", "ds/3", "ds/4", "ds/6 v1", "ds/6 v2"],
        ),
        (
            vec![exists("ok")],
            vec!["ds/1", "ds/2", "ds/3", "ds/5", "ds/6 v1"],
        ),
        (vec![exists("meta.sample")], vec!["ds/1", "ds/2", "ds/4"]),
        (
            vec![like("meta.sample", "?-*")],
            vec!["ds/1", "ds/2", "ds/4"],
        ),
        (vec![like("title", "*films*")], vec!["ds/6 v1", "ds/6 v2"]),
        (vec![like("title", "*films")], vec!["ds/6 v1"]),
        (vec![like("title", "Thin*")], vec!["ds/6 v2"]),
        (vec![like("title", "*Films*")], vec![]),
        (vec![not(exists("tags"))], vec!["ds/6 v1", "ds/6 v2"]),
        (
            vec![Filter::And {
                filters: vec![
                    match_any("instrument", vec![json!("XRD")]),
                    not(match_any("ok", vec![json!(true)])),
                ],
            }],
            vec!["ds/2"],
        ),
        (
            vec![Filter::Or {
                filters: vec![
                    match_any("instrument", vec![json!("SANS")]),
                    Filter::Range {
                        field_name: "size".into(),
                        values: vec![range("size", Some(json!(60)), None)],
                    },
                ],
            }],
            vec!["ds/5", "ds/6 v1"],
        ),
        (
            vec![not(Filter::Or {
                filters: vec![
                    match_any("instrument", vec![json!("SANS")]),
                    Filter::And {
                        filters: vec![exists("size"), not(exists("tags"))],
                    },
                ],
            })],
            vec!["ds/1", "ds/2", "ds/3", "ds/4", "ds/6 v2"],
        ),
        // Several filters: every one holds.
        (
            vec![exists("tags"), match_any("ok", vec![json!(true)])],
            vec!["ds/1", "ds/3"],
        ),
    ];
    for (filters, expected) in cases {
        let request = filtered(filters.clone());
        assert_eq!(
            found(engine, index, &request).await,
            set(&expected),
            "filters {filters:?}"
        );
    }
    // Filters and text together.
    let mut request = query("crystal");
    request.query.filters = vec![match_any("instrument", vec![json!("XRD")])];
    assert_eq!(found(engine, index, &request).await, set(&["ds/1", "ds/2"]));
}

pub(crate) async fn filter_errors(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let bad = vec![
        match_any("nope", vec![json!("x")]),
        match_any("size", vec![json!("big")]),
        match_any("ok", vec![json!(1)]),
        match_any("taken", vec![json!("soon")]),
        Filter::Range {
            field_name: "title".into(),
            values: vec![range("title", Some(json!("a")), None)],
        },
        Filter::Like {
            field_name: "size".into(),
            value: "1*".into(),
        },
        Filter::Not {
            filter: Box::new(Filter::Exists {
                field_name: "deep.nope".into(),
            }),
        },
    ];
    for filter in bad {
        let (message, _) = invalid(engine, index, &filtered(vec![filter.clone()])).await;
        assert!(!message.is_empty(), "{filter:?}");
    }
    let (message, _) = invalid(
        engine,
        index,
        &filtered(vec![match_any("nope", vec![json!(1)])]),
    )
    .await;
    assert!(message.contains("nope"), "{message}");
}

// ----------------------------------------------------------------- facets

pub(crate) async fn facets(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let mut request = filtered(vec![]);
    request.facets = vec![
        facet("instrument", FacetKind::Terms { size: None }),
        facet("tags", FacetKind::Terms { size: Some(2) }),
        facet("ok", FacetKind::Terms { size: None }),
        Facet {
            name: Some("sizes".into()),
            field_name: "size".into(),
            kind: FacetKind::Terms { size: Some(2) },
        },
        Facet {
            name: Some("size histogram".into()),
            field_name: "size".into(),
            kind: FacetKind::NumericHistogram {
                size: 3,
                histogram_range: HistogramRange {
                    low: 0.0,
                    high: 60.0,
                },
            },
        },
        facet(
            "taken",
            FacetKind::DateHistogram {
                date_interval: DateInterval::Month,
            },
        ),
        Facet {
            name: Some("total size".into()),
            field_name: "size".into(),
            kind: FacetKind::Sum,
        },
        Facet {
            name: Some("mean size".into()),
            field_name: "size".into(),
            kind: FacetKind::Avg,
        },
        Facet {
            name: Some("instruments".into()),
            field_name: "instrument".into(),
            kind: FacetKind::DistinctCount,
        },
        Facet {
            name: Some("tag count".into()),
            field_name: "tags".into(),
            kind: FacetKind::DistinctCount,
        },
    ];
    let result = search(engine, index, &request, &everyone()).await;
    let facets = &result.facet_results;
    assert_eq!(facets.len(), 10);
    assert_eq!(
        buckets(facets, "instrument"),
        vec![
            (json!("XRD"), 3),
            (json!("SEM"), 2),
            (json!("AFM"), 1),
            (json!("SANS"), 1)
        ]
    );
    assert_eq!(
        buckets(facets, "tags"),
        vec![(json!("crystal"), 3), (json!("alloy"), 2)]
    );
    assert_eq!(
        buckets(facets, "ok"),
        vec![(json!(true), 3), (json!(false), 2)]
    );
    // Ties go by value order.
    assert_eq!(
        buckets(facets, "sizes"),
        vec![(json!(10), 1), (json!(20), 1)]
    );
    let histogram = facets
        .iter()
        .find(|f| f.name == "size histogram")
        .and_then(|f| f.buckets.clone())
        .expect("histogram");
    let shape: Vec<(Value, Option<Value>, u64)> = histogram
        .into_iter()
        .map(|b| (b.value, b.to, b.count))
        .collect();
    assert_eq!(
        shape,
        vec![
            (json!(0), Some(json!(20)), 1),
            (json!(20), Some(json!(40)), 2),
            (json!(40), Some(json!(60)), 2),
        ]
    );
    let months = facets
        .iter()
        .find(|f| f.name == "taken")
        .and_then(|f| f.buckets.clone())
        .expect("date histogram");
    let shape: Vec<(Value, Option<Value>, u64)> = months
        .into_iter()
        .map(|b| (b.value, b.to, b.count))
        .collect();
    assert_eq!(
        shape,
        vec![
            (
                json!("2023-12-01T00:00:00Z"),
                Some(json!("2024-01-01T00:00:00Z")),
                1
            ),
            (
                json!("2024-01-01T00:00:00Z"),
                Some(json!("2024-02-01T00:00:00Z")),
                1
            ),
            (
                json!("2024-02-01T00:00:00Z"),
                Some(json!("2024-03-01T00:00:00Z")),
                2
            ),
            (
                json!("2024-03-01T00:00:00Z"),
                Some(json!("2024-04-01T00:00:00Z")),
                2
            ),
        ]
    );
    approx(&facet_value(facets, "total size"), 210.5);
    approx(&facet_value(facets, "mean size"), 210.5 / 6.0);
    assert_eq!(facet_value(facets, "instruments"), json!(4));
    assert_eq!(facet_value(facets, "tag count"), json!(5));

    // Day and year buckets; minutes of a timestamp.
    let mut request = filtered(vec![]);
    request.facets = vec![
        Facet {
            name: Some("days".into()),
            field_name: "taken".into(),
            kind: FacetKind::DateHistogram {
                date_interval: DateInterval::Year,
            },
        },
        Facet {
            name: Some("minutes".into()),
            field_name: "taken".into(),
            kind: FacetKind::DateHistogram {
                date_interval: DateInterval::Minute,
            },
        },
    ];
    let result = search(engine, index, &request, &everyone()).await;
    assert_eq!(
        buckets(&result.facet_results, "days"),
        vec![
            (json!("2023-01-01T00:00:00Z"), 1),
            (json!("2024-01-01T00:00:00Z"), 5)
        ]
    );
    let minutes = buckets(&result.facet_results, "minutes");
    assert_eq!(minutes.len(), 6);
    assert!(minutes.contains(&(json!("2024-02-10T12:30:00Z"), 1)));

    // Avg of nothing is null; sum of nothing is 0.
    let mut request = filtered(vec![match_any("instrument", vec![json!("AFM")])]);
    request.facets = vec![
        facet("size", FacetKind::Avg),
        Facet {
            name: Some("sum".into()),
            field_name: "size".into(),
            kind: FacetKind::Sum,
        },
        facet("tags", FacetKind::Terms { size: None }),
    ];
    let result = search(engine, index, &request, &everyone()).await;
    assert_eq!(facet_value(&result.facet_results, "size"), Value::Null);
    assert_eq!(facet_value(&result.facet_results, "sum"), json!(0));
    assert_eq!(buckets(&result.facet_results, "tags"), vec![]);
}

pub(crate) async fn facets_follow_filters(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let mut request = filtered(vec![match_any("instrument", vec![json!("XRD")])]);
    request.facets = vec![facet("tags", FacetKind::Terms { size: None })];
    let result = search(engine, index, &request, &everyone()).await;
    assert_eq!(
        buckets(&result.facet_results, "tags"),
        vec![
            (json!("crystal"), 2),
            (json!("protein"), 1),
            (json!("space"), 1)
        ]
    );
    // Text narrows the counts too.
    let mut request = query("alloy");
    request.facets = vec![facet("instrument", FacetKind::Terms { size: None })];
    let result = search(engine, index, &request, &everyone()).await;
    assert_eq!(
        buckets(&result.facet_results, "instrument"),
        vec![(json!("SEM"), 2)]
    );
}

pub(crate) async fn post_facet_filters_do_not_change_counts(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let mut request = filtered(vec![]);
    request.post_facet_filters = vec![match_any("instrument", vec![json!("SEM")])];
    request.facets = vec![facet("instrument", FacetKind::Terms { size: None })];
    let result = search(engine, index, &request, &everyone()).await;
    assert_eq!(result.total, 2);
    assert_eq!(
        keys_of(&result).into_iter().collect::<BTreeSet<_>>(),
        set(&["ds/3", "ds/4"])
    );
    assert_eq!(
        buckets(&result.facet_results, "instrument"),
        vec![
            (json!("XRD"), 3),
            (json!("SEM"), 2),
            (json!("AFM"), 1),
            (json!("SANS"), 1)
        ]
    );
}

pub(crate) async fn facet_errors(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let histogram = FacetKind::NumericHistogram {
        size: 2,
        histogram_range: HistogramRange {
            low: 0.0,
            high: 1.0,
        },
    };
    let bad = vec![
        facet("title", histogram.clone()),
        facet("taken", histogram),
        facet("title", FacetKind::Sum),
        facet("ok", FacetKind::Avg),
        facet(
            "size",
            FacetKind::DateHistogram {
                date_interval: DateInterval::Day,
            },
        ),
        facet("nope", FacetKind::Terms { size: None }),
        facet(
            "instrument",
            FacetKind::Terms {
                size: Some(100_000),
            },
        ),
    ];
    for f in bad {
        let mut request = filtered(vec![]);
        request.facets = vec![f.clone()];
        let (message, _) = invalid(engine, index, &request).await;
        assert!(message.contains(&f.field_name), "{f:?}: {message}");
    }
}

// ------------------------------------------------------- sorting and pages

async fn sorted(
    engine: &dyn SearchEngine,
    index: SearchIndexId,
    sort: &[(&str, SortOrder)],
) -> Vec<Key> {
    let mut request = filtered(vec![]);
    request.sort = sort
        .iter()
        .map(|(field, order)| SortField {
            field_name: field.to_string(),
            order: *order,
        })
        .collect();
    keys_of(&search(engine, index, &request, &everyone()).await)
}

pub(crate) async fn sorting_puts_missing_values_last(engine: &dyn SearchEngine) {
    use SortOrder::{Asc, Desc};
    let index = seeded(engine).await;
    assert_eq!(
        sorted(engine, index, &[("size", Asc)]).await,
        list(&["ds/1", "ds/2", "ds/3", "ds/4", "ds/5", "ds/6 v1", "ds/6 v2"])
    );
    assert_eq!(
        sorted(engine, index, &[("size", Desc)]).await,
        list(&["ds/6 v1", "ds/5", "ds/4", "ds/3", "ds/2", "ds/1", "ds/6 v2"])
    );
    assert_eq!(
        sorted(engine, index, &[("taken", Desc)]).await,
        list(&["ds/6 v2", "ds/6 v1", "ds/3", "ds/2", "ds/1", "ds/4", "ds/5"])
    );
    assert_eq!(
        sorted(engine, index, &[("taken", Asc)]).await,
        list(&["ds/4", "ds/1", "ds/2", "ds/3", "ds/6 v1", "ds/6 v2", "ds/5"])
    );
    assert_eq!(
        sorted(engine, index, &[("instrument", Asc), ("size", Desc)]).await,
        list(&["ds/6 v2", "ds/5", "ds/4", "ds/3", "ds/6 v1", "ds/2", "ds/1"])
    );
    // Multi-valued: the smallest value ascending, the largest descending;
    // ties and missing values by subject and entry id.
    assert_eq!(
        sorted(engine, index, &[("tags", Asc)]).await,
        list(&["ds/3", "ds/4", "ds/1", "ds/2", "ds/5", "ds/6 v1", "ds/6 v2"])
    );
    assert_eq!(
        sorted(engine, index, &[("tags", Desc)]).await,
        list(&["ds/4", "ds/1", "ds/2", "ds/5", "ds/3", "ds/6 v1", "ds/6 v2"])
    );
    assert_eq!(
        sorted(engine, index, &[("ok", Desc), ("size", Asc)]).await,
        list(&["ds/1", "ds/3", "ds/6 v1", "ds/2", "ds/5", "ds/4", "ds/6 v2"])
    );
    // Consecutive entries of one subject are one group.
    let mut request = filtered(vec![]);
    request.sort = vec![SortField {
        field_name: "size".into(),
        order: Asc,
    }];
    let result = search(engine, index, &request, &everyone()).await;
    assert_eq!(result.gmeta.len(), 6);
    assert_eq!(result.gmeta[5].subject, "ds/6");
    assert_eq!(result.gmeta[5].entries.len(), 2);
    // Sorting on an unknown field is invalid.
    let mut request = filtered(vec![]);
    request.sort = vec![SortField {
        field_name: "nope".into(),
        order: Asc,
    }];
    invalid(engine, index, &request).await;
}

pub(crate) async fn offset_paging(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let page = |offset: usize, limit: Option<usize>| {
        let mut request = filtered(vec![]);
        request.sort = vec![SortField {
            field_name: "size".into(),
            order: SortOrder::Asc,
        }];
        request.offset = offset;
        request.limit = limit;
        request
    };
    let first = search(engine, index, &page(0, Some(3)), &everyone()).await;
    assert_eq!((first.total, first.count, first.offset), (7, 3, 0));
    assert!(first.has_next_page);
    assert_eq!(keys_of(&first), list(&["ds/1", "ds/2", "ds/3"]));
    let second = search(engine, index, &page(3, Some(3)), &everyone()).await;
    assert_eq!(keys_of(&second), list(&["ds/4", "ds/5", "ds/6 v1"]));
    assert!(second.has_next_page);
    let last = search(engine, index, &page(6, Some(3)), &everyone()).await;
    assert_eq!(keys_of(&last), list(&["ds/6 v2"]));
    assert_eq!((last.total, last.count), (7, 1));
    assert!(!last.has_next_page);
    let past = search(engine, index, &page(20, Some(3)), &everyone()).await;
    assert_eq!((past.total, past.count), (7, 0));
    assert!(!past.has_next_page);
    // The default page is 10.
    let all = search(engine, index, &page(0, None), &everyone()).await;
    assert_eq!(all.count, 7);
    let big = new_index(engine).await;
    let many: Vec<Entry> = (0..15)
        .map(|i| entry(&format!("m/{i:02}"), None, json!({"n": i}), &["public"]))
        .collect();
    engine
        .ingest(big, many, &Limits::default())
        .await
        .expect("ingest");
    let mut request = filtered(vec![]);
    request.limit = None;
    let result = search(engine, big, &request, &anonymous()).await;
    assert_eq!((result.total, result.count), (15, 10));
    assert!(result.has_next_page);
    // limit 0: totals and facets only.
    let mut request = page(0, Some(0));
    request.facets = vec![facet("instrument", FacetKind::DistinctCount)];
    let result = search(engine, index, &request, &everyone()).await;
    assert_eq!((result.total, result.count), (7, 0));
    assert_eq!(facet_value(&result.facet_results, "instrument"), json!(4));
}

pub(crate) async fn result_window(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let mut request = filtered(vec![]);
    request.offset = 9_999;
    request.limit = Some(2);
    let (message, _) = invalid(engine, index, &request).await;
    assert!(message.contains("scroll"), "{message}");
    request.offset = 9_990;
    request.limit = Some(10);
    let result = search(engine, index, &request, &everyone()).await;
    assert_eq!((result.total, result.count), (7, 0));
    request.offset = 0;
    request.limit = Some(1_001);
    invalid(engine, index, &request).await;
}

// ----------------------------------------------------------------- scroll

async fn scroll_all(
    engine: &dyn SearchEngine,
    index: SearchIndexId,
    mut request: ScrollRequest,
    visibility: &Visibility,
) -> Vec<Vec<Key>> {
    let mut pages = Vec::new();
    loop {
        let page = engine
            .scroll(index, &request, visibility)
            .await
            .expect("scroll");
        let keys: Vec<Key> = page
            .gmeta
            .iter()
            .flat_map(|g| {
                g.entries
                    .iter()
                    .map(|e| key(&g.subject, e.entry_id.as_deref()))
            })
            .collect();
        assert_eq!(page.count as usize, keys.len());
        pages.push(keys);
        assert_eq!(page.has_next_page, page.marker.is_some());
        match page.marker {
            Some(marker) => request.marker = Some(marker),
            None => break,
        }
        assert!(pages.len() < 1_000, "the scroll does not end");
    }
    pages
}

pub(crate) async fn scroll_visits_every_entry_once(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let request = ScrollRequest {
        limit: Some(3),
        ..ScrollRequest::default()
    };
    let pages = scroll_all(engine, index, request.clone(), &everyone()).await;
    assert_eq!(
        pages,
        vec![
            list(&["ds/1", "ds/2", "ds/3"]),
            list(&["ds/4", "ds/5", "ds/6 v1"]),
            list(&["ds/6 v2"]),
        ]
    );
    // A last page that is exactly full says there is nothing after it.
    let pages = scroll_all(
        engine,
        index,
        ScrollRequest {
            limit: Some(2),
            ..ScrollRequest::default()
        },
        &anonymous(),
    )
    .await;
    assert_eq!(
        pages,
        vec![list(&["ds/1", "ds/2"]), list(&["ds/6 v1", "ds/6 v2"])]
    );
    // Queries and filters apply.
    let filtered_scroll = ScrollRequest {
        query: SearchQuery {
            q: Some("crystal".into()),
            mode: QueryMode::Simple,
            filters: vec![match_any("ok", vec![json!(false)])],
        },
        limit: Some(1),
        ..ScrollRequest::default()
    };
    let pages = scroll_all(engine, index, filtered_scroll, &everyone()).await;
    assert_eq!(pages, vec![list(&["ds/2"]), list(&["ds/5"])]);
    // Bad markers and limits.
    for bad in [
        ScrollRequest {
            marker: Some("garbage!".into()),
            ..ScrollRequest::default()
        },
        ScrollRequest {
            limit: Some(0),
            ..ScrollRequest::default()
        },
        ScrollRequest {
            limit: Some(1_001),
            ..ScrollRequest::default()
        },
    ] {
        assert!(matches!(
            engine.scroll(index, &bad, &everyone()).await,
            Err(SearchError::Invalid { .. })
        ));
    }
}

pub(crate) async fn scroll_through_many_pages(engine: &dyn SearchEngine) {
    let index = new_index(engine).await;
    // 120 entries: 40 subjects of 3 entries each (one id-less).
    let mut entries = Vec::new();
    for s in 0..40 {
        for id in [None, Some("a"), Some("b")] {
            entries.push(entry(
                &format!("subject/{s:03}"),
                id,
                json!({"s": s, "even": s % 2 == 0}),
                &["public"],
            ));
        }
    }
    let outcomes = engine
        .ingest(index, entries, &Limits::default())
        .await
        .expect("ingest");
    assert!(outcomes.iter().all(|o| *o == EntryOutcome::Applied));
    let pages = scroll_all(
        engine,
        index,
        ScrollRequest {
            limit: Some(7),
            ..ScrollRequest::default()
        },
        &anonymous(),
    )
    .await;
    assert_eq!(pages.len(), 18);
    let visited: Vec<Key> = pages.into_iter().flatten().collect();
    let mut expected = Vec::new();
    for s in 0..40 {
        for id in [None, Some("a"), Some("b")] {
            expected.push(key(&format!("subject/{s:03}"), id));
        }
    }
    assert_eq!(visited, expected);
    // Filtered, the marker still walks in key order.
    let pages = scroll_all(
        engine,
        index,
        ScrollRequest {
            query: SearchQuery {
                filters: vec![match_any("even", vec![json!(true)])],
                ..SearchQuery::default()
            },
            limit: Some(25),
            ..ScrollRequest::default()
        },
        &anonymous(),
    )
    .await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![25, 25, 10]
    );
}

// ------------------------------------------------------------- visibility

pub(crate) async fn visibility(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let everything = || {
        let mut request = filtered(vec![]);
        request.facets = vec![
            facet("instrument", FacetKind::Terms { size: None }),
            facet("size", FacetKind::Sum),
        ];
        request
    };
    let cases: Vec<(Visibility, Vec<&str>)> = vec![
        (anonymous(), vec!["ds/1", "ds/2", "ds/6 v1", "ds/6 v2"]),
        (
            principals(&["public", "all_authenticated_users"]),
            vec!["ds/1", "ds/2", "ds/3", "ds/6 v1", "ds/6 v2"],
        ),
        (
            principals(&["public", "all_authenticated_users", BOB]),
            vec!["ds/1", "ds/2", "ds/3", "ds/6 v1", "ds/6 v2"],
        ),
        (
            principals(&["public", "all_authenticated_users", ALICE]),
            vec!["ds/1", "ds/2", "ds/3", "ds/4", "ds/6 v1", "ds/6 v2"],
        ),
        (principals(&[GROUP]), vec!["ds/5"]),
        (principals(&[BOB]), vec!["ds/6 v1"]),
        (principals(&[]), vec![]),
    ];
    for (visibility, expected) in cases {
        let result = search(engine, index, &everything(), &visibility).await;
        let got: BTreeSet<Key> = keys_of(&result).into_iter().collect();
        assert_eq!(got, set(&expected), "{visibility:?}");
        assert_eq!(result.total as usize, expected.len(), "{visibility:?}");
    }
    // Facets count only what the caller may see.
    let result = search(engine, index, &everything(), &anonymous()).await;
    assert_eq!(
        buckets(&result.facet_results, "instrument"),
        vec![(json!("XRD"), 3), (json!("AFM"), 1)]
    );
    approx(&facet_value(&result.facet_results, "size"), 90.5);
    // Text, scroll and subject lookups too.
    let result = search(engine, index, &query("alloy"), &anonymous()).await;
    assert_eq!((result.total, result.gmeta.len()), (0, 0));
    let result = search(engine, index, &query("alloy"), &principals(&[ALICE])).await;
    assert_eq!(keys_of(&result), list(&["ds/4"]));
    let pages = scroll_all(
        engine,
        index,
        ScrollRequest::default(),
        &principals(&[GROUP]),
    )
    .await;
    assert_eq!(pages, vec![list(&["ds/5"])]);
    assert_eq!(
        engine
            .subject(index, "ds/4", &anonymous())
            .await
            .expect("subject"),
        None
    );
    assert!(engine
        .subject(index, "ds/4", &principals(&[ALICE]))
        .await
        .expect("subject")
        .is_some());
    let six = engine
        .subject(index, "ds/6", &principals(&[BOB]))
        .await
        .expect("subject")
        .expect("visible");
    assert_eq!(six.entries.len(), 1);
    assert_eq!(six.entries[0].entry_id.as_deref(), Some("v1"));
}

pub(crate) async fn bypass_sees_everything(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let mut request = filtered(vec![]);
    request.bypass_visibility = true;
    let result = search(engine, index, &request, &Visibility::Bypass).await;
    assert_eq!(result.total, 7);
    // The request flag alone changes nothing: the service decides.
    let result = search(engine, index, &request, &anonymous()).await;
    assert_eq!(result.total, 4);
    let pages = scroll_all(engine, index, ScrollRequest::default(), &Visibility::Bypass).await;
    assert_eq!(pages.concat(), list(&ALL));
}

// ----------------------------------------------------------------- delete

pub(crate) async fn delete_by_subjects_and_entry(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let removed = engine
        .delete(
            index,
            &DeleteTarget::Subjects {
                subjects: vec!["ds/1".into(), "ds/6".into(), "nope".into(), "ds/1".into()],
            },
        )
        .await
        .expect("delete");
    assert_eq!(removed, 3);
    assert_eq!(engine.count(index).await.expect("count"), 4);
    let entry_of = |subject: &str, id: Option<&str>| DeleteTarget::Entry {
        subject: subject.to_string(),
        entry_id: id.map(str::to_string),
    };
    assert_eq!(
        engine
            .delete(index, &entry_of("ds/2", None))
            .await
            .expect("delete"),
        1
    );
    assert_eq!(
        engine
            .delete(index, &entry_of("ds/2", None))
            .await
            .expect("delete"),
        0
    );
    assert_eq!(
        found(engine, index, &filtered(vec![])).await,
        set(&["ds/3", "ds/4", "ds/5"])
    );

    let index = seeded(engine).await;
    assert_eq!(
        engine
            .delete(index, &entry_of("ds/6", None))
            .await
            .expect("delete"),
        0
    );
    assert_eq!(
        engine
            .delete(index, &entry_of("ds/6", Some("v1")))
            .await
            .expect("delete"),
        1
    );
    let six = engine
        .subject(index, "ds/6", &everyone())
        .await
        .expect("subject")
        .expect("v2 remains");
    assert_eq!(six.entries.len(), 1);
    assert_eq!(six.entries[0].entry_id.as_deref(), Some("v2"));
    // A deleted subject can be written again from scratch.
    let outcomes = engine
        .ingest(
            index,
            vec![entry(
                "ds/6",
                Some("v1"),
                json!({"title": "back"}),
                &["public"],
            )],
            &Limits::default(),
        )
        .await
        .expect("ingest");
    assert_eq!(outcomes, vec![EntryOutcome::Applied]);
    assert_eq!(engine.count(index).await.expect("count"), 7);
}

pub(crate) async fn delete_by_query_ignores_visibility(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let by_query = |q: &str, filters: Vec<Filter>| DeleteTarget::Query {
        query: SearchQuery {
            q: Some(q.to_string()),
            mode: QueryMode::Advanced,
            filters,
        },
    };
    // ds/4 is visible only to Alice; delete-by-query sees it anyway.
    assert_eq!(
        engine
            .delete(index, &by_query("instrument:SEM", vec![]))
            .await
            .expect("delete"),
        2
    );
    assert_eq!(
        engine
            .delete(
                index,
                &by_query("", vec![match_any("ok", vec![json!(false)])])
            )
            .await
            .expect("delete"),
        2
    );
    assert_eq!(
        engine
            .delete(index, &by_query("nothing", vec![]))
            .await
            .expect("delete"),
        0
    );
    assert_eq!(
        found(engine, index, &filtered(vec![])).await,
        set(&["ds/1", "ds/6 v1", "ds/6 v2"])
    );
    assert!(matches!(
        engine.delete(index, &by_query("(", vec![])).await,
        Err(SearchError::Invalid { .. })
    ));
    assert!(matches!(
        engine.delete(index, &by_query("nope:x", vec![])).await,
        Err(SearchError::Invalid { .. })
    ));
}

// ---------------------------------------------------- lookups and indexes

pub(crate) async fn subject_lookup(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    let six = engine
        .subject(index, "ds/6", &everyone())
        .await
        .expect("subject")
        .expect("ds/6 exists");
    assert_eq!(six.subject, "ds/6");
    let ids: Vec<Option<&str>> = six.entries.iter().map(|e| e.entry_id.as_deref()).collect();
    assert_eq!(ids, vec![Some("v1"), Some("v2")]);
    assert_eq!(six.entries[1].content, dataset()[6].content);
    // Engines give `visible_to` (canonical); the service hides it from
    // callers who are not writers or admins.
    assert_eq!(
        six.entries[0].visible_to,
        Some(vec!["public".to_string(), BOB.to_string()])
    );
    assert_eq!(
        engine
            .subject(index, "nope", &everyone())
            .await
            .expect("subject"),
        None
    );
    assert_eq!(
        engine
            .subject(index, "ds", &everyone())
            .await
            .expect("subject"),
        None
    );
}

pub(crate) async fn fields_and_count(engine: &dyn SearchEngine) {
    let index = new_index(engine).await;
    assert_eq!(engine.count(index).await.expect("count"), 0);
    assert!(engine.fields(index).await.expect("fields").is_empty());
    // An empty index answers queries.
    let result = search(engine, index, &filtered(vec![]), &everyone()).await;
    assert_eq!(result.total, 0);
    let index = seeded(engine).await;
    assert_eq!(engine.count(index).await.expect("count"), 7);
    let fields: Vec<(String, FieldType)> = engine
        .fields(index)
        .await
        .expect("fields")
        .into_iter()
        .collect();
    let expected: Vec<(String, FieldType)> = [
        ("instrument", FieldType::String),
        ("meta.sample", FieldType::String),
        ("ok", FieldType::Boolean),
        ("size", FieldType::Number),
        ("tags", FieldType::String),
        ("taken", FieldType::Date),
        ("title", FieldType::String),
    ]
    .into_iter()
    .map(|(name, ty)| (name.to_string(), ty))
    .collect();
    assert_eq!(fields, expected);
}

pub(crate) async fn drop_and_unknown_index(engine: &dyn SearchEngine) {
    let index = seeded(engine).await;
    engine
        .create_index(index)
        .await
        .expect("creating again is fine");
    assert_eq!(engine.count(index).await.expect("count"), 7);
    engine.drop_index(index).await.expect("drop");
    assert!(matches!(engine.count(index).await, Err(SearchError::UnknownIndex(i)) if i == index));
    assert!(matches!(
        engine.search(index, &filtered(vec![]), &everyone()).await,
        Err(SearchError::UnknownIndex(_))
    ));
    assert!(matches!(
        engine.drop_index(index).await,
        Err(SearchError::UnknownIndex(_))
    ));
    let unknown = SearchIndexId::new();
    assert!(matches!(
        engine.ingest(unknown, dataset(), &Limits::default()).await,
        Err(SearchError::UnknownIndex(_))
    ));
    assert!(matches!(
        engine.fields(unknown).await,
        Err(SearchError::UnknownIndex(_))
    ));
    assert!(matches!(
        engine
            .scroll(unknown, &ScrollRequest::default(), &everyone())
            .await,
        Err(SearchError::UnknownIndex(_))
    ));
    assert!(matches!(
        engine.subject(unknown, "x", &everyone()).await,
        Err(SearchError::UnknownIndex(_))
    ));
    assert!(matches!(
        engine
            .delete(unknown, &DeleteTarget::Subjects { subjects: vec![] })
            .await,
        Err(SearchError::UnknownIndex(_))
    ));
    // A dropped index can be made again, empty.
    engine.create_index(index).await.expect("create");
    assert_eq!(engine.count(index).await.expect("count"), 0);
}

pub(crate) async fn boosts_are_accepted(engine: &dyn SearchEngine) {
    // Relevance differs between engines: only the set is compared.
    let index = seeded(engine).await;
    let mut request = query("crystal");
    request.query.mode = QueryMode::Simple;
    request.boosts = vec![Boost {
        field_name: "tags".into(),
        factor: 3.0,
    }];
    assert_eq!(
        found(engine, index, &request).await,
        set(&["ds/1", "ds/2", "ds/5"])
    );
    request.boosts = vec![Boost {
        field_name: "size".into(),
        factor: 3.0,
    }];
    invalid(engine, index, &request).await;
}

pub(crate) async fn long_strings_are_searchable_as_words(engine: &dyn SearchEngine) {
    // 10 KB of text in one value: engines may not index it as an exact
    // value, but its words and its presence must be found.
    let index = new_index(engine).await;
    let long = format!("{} needle", "hay ".repeat(2_500));
    let outcomes = engine
        .ingest(
            index,
            vec![
                entry("long", None, json!({"blob": long}), &["public"]),
                entry("short", None, json!({"blob": "x", "other": 1}), &["public"]),
                entry("none", None, json!({"other": 2}), &["public"]),
            ],
            &Limits::default(),
        )
        .await
        .expect("ingest");
    assert_eq!(outcomes, vec![EntryOutcome::Applied; 3]);
    assert_eq!(found(engine, index, &query("needle")).await, set(&["long"]));
    assert_eq!(
        found(engine, index, &query("blob:needle")).await,
        set(&["long"])
    );
    let exists = filtered(vec![Filter::Exists {
        field_name: "blob".into(),
    }]);
    assert_eq!(found(engine, index, &exists).await, set(&["long", "short"]));
}
