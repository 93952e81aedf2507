//! State shared by every request handler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lattice_protocol::compute::FunctionSpec;
use lattice_protocol::compute::TaskInfo;
use lattice_protocol::frames::ServiceFrame;
use lattice_protocol::{EndpointId, FunctionId};
use tokio::sync::{broadcast, mpsc};

use crate::auth::oidc::OidcLogin;
use crate::broker::SharedBroker;
use crate::config::ServiceConfig;
use crate::store::{SharedStore, StoreResult};

/// Cheap to clone: everything behind `Arc`s.
#[derive(Clone)]
pub struct AppState {
    pub store: SharedStore,
    pub broker: SharedBroker,
    pub config: Arc<ServiceConfig>,
    pub oidc: Arc<OidcLogin>,
    /// Agents connected to this replica.
    pub agents: Arc<AgentRegistry>,
    /// Tasks that just reached their final state, for result streams.
    pub results: broadcast::Sender<Arc<Vec<TaskInfo>>>,
    functions: Arc<FunctionCache>,
    /// Collections, file operations and transfer runners (see `transfers`).
    pub data: Arc<crate::transfers::DataHub>,
}

impl AppState {
    pub fn new(store: SharedStore, broker: SharedBroker, config: ServiceConfig) -> Self {
        let oidc = OidcLogin::new(config.oidc.clone(), &config.public_url);
        Self {
            store,
            broker,
            config: Arc::new(config),
            oidc: Arc::new(oidc),
            agents: Arc::new(AgentRegistry::default()),
            results: broadcast::channel(RESULT_BROADCAST_CAPACITY).0,
            functions: Arc::new(FunctionCache::default()),
            data: Arc::new(crate::transfers::DataHub::default()),
        }
    }

    pub fn access_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.config.access_token_ttl)
    }

    pub fn refresh_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.config.refresh_token_ttl)
    }

    /// A function's spec; functions are immutable, so it is cached forever.
    pub async fn function_spec(&self, id: FunctionId) -> StoreResult<Option<Arc<FunctionSpec>>> {
        if let Some(spec) = self.functions.get(id) {
            return Ok(Some(spec));
        }
        let Some(function) = self.store.function(id).await? else {
            return Ok(None);
        };
        let spec = Arc::new(function.spec);
        self.functions.insert(id, spec.clone());
        Ok(Some(spec))
    }

    /// Tells result streams about tasks that reached their final state.
    pub fn publish_results(&self, tasks: Vec<TaskInfo>) {
        if !tasks.is_empty() {
            // No subscriber is not an error.
            let _ = self.results.send(Arc::new(tasks));
        }
    }
}

/// Result messages a slow stream may fall behind by before it rescans the store.
const RESULT_BROADCAST_CAPACITY: usize = 4096;

/// Most specs kept; beyond it the cache starts over (specs are cheap to reload).
const FUNCTION_CACHE_ENTRIES: usize = 10_000;

#[derive(Default)]
struct FunctionCache {
    specs: Mutex<HashMap<FunctionId, Arc<FunctionSpec>>>,
}

impl FunctionCache {
    fn get(&self, id: FunctionId) -> Option<Arc<FunctionSpec>> {
        self.specs.lock().expect("cache lock").get(&id).cloned()
    }

    fn insert(&self, id: FunctionId, spec: Arc<FunctionSpec>) {
        let mut specs = self.specs.lock().expect("cache lock");
        if specs.len() >= FUNCTION_CACHE_ENTRIES {
            specs.clear();
        }
        specs.insert(id, spec);
    }
}

/// One agent session's control channel, with the session's id.
type ControlChannel = (u64, mpsc::UnboundedSender<ServiceFrame>);

/// Control channels of the agents connected to this replica, by endpoint.
#[derive(Default)]
pub struct AgentRegistry {
    sessions: Mutex<HashMap<EndpointId, Vec<ControlChannel>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl AgentRegistry {
    /// Registers a session; returns its id for [`AgentRegistry::remove`].
    pub fn add(&self, endpoint: EndpointId, control: mpsc::UnboundedSender<ServiceFrame>) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sessions
            .lock()
            .expect("registry lock")
            .entry(endpoint)
            .or_default()
            .push((id, control));
        id
    }

    pub fn remove(&self, endpoint: EndpointId, session: u64) {
        let mut sessions = self.sessions.lock().expect("registry lock");
        if let Some(list) = sessions.get_mut(&endpoint) {
            list.retain(|(id, _)| *id != session);
            if list.is_empty() {
                sessions.remove(&endpoint);
            }
        }
    }

    /// Sends a frame to every session of an endpoint on this replica.
    pub fn send(&self, endpoint: EndpointId, frame: ServiceFrame) -> usize {
        let sessions = self.sessions.lock().expect("registry lock");
        sessions
            .get(&endpoint)
            .map(|list| {
                list.iter()
                    .filter(|(_, tx)| tx.send(frame.clone()).is_ok())
                    .count()
            })
            .unwrap_or(0)
    }
}

impl AgentRegistry {
    /// Whether an agent of this endpoint is connected to this replica.
    pub fn connected(&self, endpoint: EndpointId) -> bool {
        self.sessions
            .lock()
            .expect("registry lock")
            .get(&endpoint)
            .is_some_and(|list| !list.is_empty())
    }

    /// Sends a frame to the newest session of an endpoint only (for requests
    /// that must run once); false if none is connected here.
    pub fn send_one(&self, endpoint: EndpointId, frame: ServiceFrame) -> bool {
        let sessions = self.sessions.lock().expect("registry lock");
        sessions
            .get(&endpoint)
            .and_then(|list| list.last())
            .is_some_and(|(_, tx)| tx.send(frame).is_ok())
    }
}
