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
