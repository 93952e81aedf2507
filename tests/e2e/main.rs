//! End-to-end tests: the service on a real socket with real peers (an OpenID
//! Connect provider, later agents and the CLI). The harness is `lattice_tests`.

/// The store back end a scenario runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
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
mod login;
mod multi_user;
mod sharing;
