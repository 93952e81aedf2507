//! End-to-end tests: the service on a real socket with real peers (an OpenID
//! Connect provider, later agents and the CLI). The harness is `lattice_tests`.

/// The store back end a scenario runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// Where a scenario's store lives: the service's default SQLite, or a
/// fresh PostgreSQL schema that is dropped after the scenario.
pub(crate) struct Store(Option<lattice_service::testing::TestSchema>);

impl Store {
    /// The store of scenario `test` on `backend`; `None`: the scenario is
    /// skipped (PostgreSQL unreachable without `LATTICE_REQUIRE_SERVICES=1`).
    pub(crate) async fn open(backend: Backend, test: &str) -> Option<Self> {
        use lattice_service::testing::{postgres_addr, tcp_reachable, TestSchema};
        match backend {
            Backend::Sqlite => Some(Self(None)),
            Backend::Postgres => {
                if !lattice_tests::require_service(test, tcp_reachable(&postgres_addr())) {
                    return None;
                }
                let schema = TestSchema::create().await.expect("a PostgreSQL schema");
                Some(Self(Some(schema)))
            }
        }
    }

    /// Points the service's `config` at the store.
    pub(crate) fn configure(&self, config: &mut lattice_service::ServiceConfig) {
        if let Some(schema) = &self.0 {
            config.database_url = schema.url_with_search_path();
        }
    }

    /// Stops `service` (whatever holds the service), then drops the schema.
    pub(crate) async fn close_after<S>(self, service: S) {
        drop(service);
        if let Some(schema) = self.0 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let _ = schema.drop_schema().await;
        }
    }
}

/// Instantiates every scenario `async fn NAME(scene: &Scene)` of the
/// calling module once per back end, as `MODULE::sqlite::NAME` and
/// `MODULE::postgres::NAME`. The module's `Scene` has
/// `start(Backend, test) -> Option<Scene>` (`None`: the test is skipped,
/// e.g. PostgreSQL unreachable without `LATTICE_REQUIRE_SERVICES=1`) and
/// `cleanup(self)`.
macro_rules! backend_suite {
    ($module:literal; $($name:ident),* $(,)?) => {
        backend_suite!(@backend sqlite, Sqlite, $module; $($name),*);
        backend_suite!(@backend postgres, Postgres, $module; $($name),*);
    };
    (@backend $mod:ident, $backend:ident, $module:literal; $($name:ident),*) => {
        mod $mod {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let test = concat!($module, "::", stringify!($mod), "::", stringify!($name));
                    let Some(scene) = super::Scene::start(crate::Backend::$backend, test).await else {
                        return;
                    };
                    super::$name(&scene).await;
                    scene.cleanup().await;
                }
            )*
        }
    };
}

mod blocks;
mod data;
mod flows;
mod login;
mod multi_user;
mod notify;
mod scene;
mod search;
mod sharing;
mod timers;
