//! Three people logged in through the real OpenID Connect provider (alice,
//! bob, carol) on a service in-process, on one store back end: the scene
//! the sharing, search and flows scenarios share. Each module wraps it in
//! its own `Scene` (which derefs to [`Trio`]) for what only it needs.

use lattice_service::ServiceConfig;
use lattice_tests::{Answer, LoginPlatform};
use reqwest::Method;
use serde_json::Value;

use crate::{Backend, Store};

/// Someone logged in: token and identity id.
pub(crate) struct Person {
    pub(crate) token: String,
    pub(crate) id: String,
}

pub(crate) struct Trio {
    pub(crate) platform: LoginPlatform,
    pub(crate) alice: Person,
    pub(crate) bob: Person,
    pub(crate) carol: Person,
    store: Store,
}

impl Trio {
    /// The service on `backend`'s store, `configure`d, and the three
    /// logins; `None`: the scenario is skipped.
    pub(crate) async fn start(
        backend: Backend,
        test: &str,
        configure: impl FnOnce(&mut ServiceConfig),
    ) -> Option<Self> {
        let store = Store::open(backend, test).await?;
        let platform = LoginPlatform::start_with(test, |config| {
            store.configure(config);
            configure(config);
        })
        .await?;
        let alice = login(&platform, "alice").await;
        let bob = login(&platform, "bob").await;
        let carol = login(&platform, "carol").await;
        Some(Self {
            platform,
            alice,
            bob,
            carol,
            store,
        })
    }

    pub(crate) async fn cleanup(self) {
        self.store.close_after(self.platform).await;
    }

    pub(crate) async fn call(
        &self,
        who: Option<&Person>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        self.platform
            .service
            .send(method, path, who.map(|p| p.token.as_str()), body.as_ref())
            .await
    }

    pub(crate) async fn get(&self, who: Option<&Person>, path: &str) -> Answer {
        self.call(who, Method::GET, path, None).await
    }

    pub(crate) async fn delete(&self, who: Option<&Person>, path: &str) -> Answer {
        self.call(who, Method::DELETE, path, None).await
    }

    pub(crate) async fn post(&self, who: Option<&Person>, path: &str, body: Value) -> Answer {
        self.call(who, Method::POST, path, Some(body)).await
    }

    pub(crate) async fn put(&self, who: Option<&Person>, path: &str, body: Value) -> Answer {
        self.call(who, Method::PUT, path, Some(body)).await
    }
}

pub(crate) async fn login(platform: &LoginPlatform, name: &str) -> Person {
    let token = platform.service.login_as(name).await.access_token;
    let id = platform.service.whoami(&token).await.body["identity"]["id"]
        .as_str()
        .expect("identity id")
        .to_owned();
    Person { token, id }
}
