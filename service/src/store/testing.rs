//! Opening throwaway stores for tests.

use std::sync::Arc;

use super::{PostgresStore, SharedStore, SqliteStore};
use crate::testing::{postgres_addr, require_service, tcp_reachable, TestSchema};

/// A store that lives as long as this value (a temporary SQLite file, or a
/// PostgreSQL schema that [`TestStore::cleanup`] drops).
pub struct TestStore {
    pub store: SharedStore,
    _dir: Option<tempfile_dir::TempDir>,
    schema: Option<TestSchema>,
}

// `tempfile` is a dev-dependency of this crate but a regular one of the
// e2e suite; keep the dependency optional-free by using std for the dir.
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new() -> std::io::Result<Self> {
            let path = std::env::temp_dir()
                .join(format!("lattice-store-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&path)?;
            Ok(Self(path))
        }
        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestStore {
    pub async fn sqlite() -> Self {
        let dir = tempfile_dir::TempDir::new().expect("temp dir");
        let url = super::sqlite_url_in(dir.path());
        let store = SqliteStore::connect(&url).await.expect("open sqlite store");
        Self {
            store: Arc::new(store),
            _dir: Some(dir),
            schema: None,
        }
    }

    /// A PostgreSQL store in a fresh schema, or `None` when PostgreSQL is not
    /// reachable and services are not required.
    pub async fn postgres(test: &str) -> Option<Self> {
        if !require_service(test, tcp_reachable(&postgres_addr())) {
            return None;
        }
        let schema = TestSchema::create().await.expect("create test schema");
        let store = PostgresStore::connect(&schema.url, Some(&schema.name))
            .await
            .expect("open postgres store");
        Some(Self {
            store: Arc::new(store),
            _dir: None,
            schema: Some(schema),
        })
    }

    pub async fn cleanup(mut self) {
        if let Some(schema) = self.schema.take() {
            drop(self.store);
            schema.drop_schema().await.expect("drop test schema");
        }
    }
}
