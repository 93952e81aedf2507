//! The conformance suite on the embedded tantivy engine, in a temporary
//! directory per case.

#[macro_use]
mod conformance;

use std::ops::Deref;

use lattice_search::TantivyEngine;

/// An engine and the directory it lives in (removed when dropped).
struct Fixture {
    engine: TantivyEngine,
    _dir: tempfile::TempDir,
}

impl Deref for Fixture {
    type Target = TantivyEngine;

    fn deref(&self) -> &TantivyEngine {
        &self.engine
    }
}

async fn make_engine() -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let engine = TantivyEngine::open(dir.path().to_path_buf()).expect("open engine");
    Fixture { engine, _dir: dir }
}

conformance_tests!(make_engine);

/// Indexes survive closing and reopening the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopens_indexes_and_fields() {
    use lattice_protocol::search::{Entry, FieldType};
    use lattice_protocol::SearchIndexId;
    use lattice_search::{Limits, SearchEngine};

    let dir = tempfile::tempdir().expect("temporary directory");
    let index = SearchIndexId::new();
    {
        let engine = TantivyEngine::open(dir.path().to_path_buf()).expect("open");
        engine.create_index(index).await.expect("create");
        let entry = Entry {
            subject: "s".into(),
            id: None,
            content: serde_json::json!({"n": 1, "t": "hello"}),
            visible_to: vec!["public".into()],
        };
        engine
            .ingest(index, vec![entry], &Limits::default())
            .await
            .expect("ingest");
    }
    let engine = TantivyEngine::open(dir.path().to_path_buf()).expect("reopen");
    assert_eq!(engine.count(index).await.expect("count"), 1);
    let fields = engine.fields(index).await.expect("fields");
    assert_eq!(fields.get("n"), Some(&FieldType::Number));
    assert_eq!(fields.get("t"), Some(&FieldType::String));
}

/// Whether a subject already has entries is read from every segment's
/// keys at once per ingest call: subjects that share a start (`a`, `a/b`,
/// `ab`) and live in different segments are each found, so the eleventh
/// entry of each is rejected and a rewrite replaces rather than adds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_subjects_are_found_across_segments() {
    use lattice_protocol::search::{Entry, MAX_ENTRIES_PER_SUBJECT};
    use lattice_protocol::SearchIndexId;
    use lattice_search::{EntryOutcome, Limits, SearchEngine};

    let engine = make_engine().await;
    let index = SearchIndexId::new();
    engine.create_index(index).await.expect("create");
    let entry = |subject: &str, id: usize| Entry {
        subject: subject.into(),
        id: Some(format!("e{id}")),
        content: serde_json::json!({"n": id}),
        visible_to: vec!["public".into()],
    };
    let subjects = ["a", "a/b", "ab", "b"];
    // One segment per subject, each holding the most a subject may.
    for subject in subjects {
        let entries = (0..MAX_ENTRIES_PER_SUBJECT)
            .map(|id| entry(subject, id))
            .collect();
        let outcomes = engine
            .ingest(index, entries, &Limits::default())
            .await
            .expect("ingest");
        assert!(outcomes.iter().all(|o| *o == EntryOutcome::Applied));
    }
    let count = (subjects.len() * MAX_ENTRIES_PER_SUBJECT) as u64;
    assert_eq!(engine.count(index).await.expect("count"), count);
    // In one call: a new id of each is rejected, a rewrite of each applies,
    // and a new subject sorting between them is new.
    let mut entries: Vec<Entry> = subjects
        .iter()
        .map(|s| entry(s, MAX_ENTRIES_PER_SUBJECT))
        .collect();
    entries.extend(subjects.iter().map(|s| entry(s, 0)));
    entries.push(entry("a/a", 0));
    let outcomes = engine
        .ingest(index, entries, &Limits::default())
        .await
        .expect("ingest");
    for outcome in &outcomes[..subjects.len()] {
        assert!(matches!(outcome, EntryOutcome::Rejected(_)), "{outcomes:?}");
    }
    assert!(outcomes[subjects.len()..]
        .iter()
        .all(|o| *o == EntryOutcome::Applied));
    assert_eq!(engine.count(index).await.expect("count"), count + 1);
}
