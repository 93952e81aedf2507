//! State shared by every request handler.

use std::sync::Arc;

use crate::auth::oidc::OidcLogin;
use crate::config::ServiceConfig;
use crate::store::SharedStore;

/// Cheap to clone: everything behind `Arc`s.
#[derive(Clone)]
pub struct AppState {
    pub store: SharedStore,
    pub config: Arc<ServiceConfig>,
    pub oidc: Arc<OidcLogin>,
}

impl AppState {
    pub fn new(store: SharedStore, config: ServiceConfig) -> Self {
        let oidc = OidcLogin::new(config.oidc.clone(), &config.public_url);
        Self {
            store,
            config: Arc::new(config),
            oidc: Arc::new(oidc),
        }
    }

    pub fn access_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.config.access_token_ttl)
    }

    pub fn refresh_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.config.refresh_token_ttl)
    }
}
