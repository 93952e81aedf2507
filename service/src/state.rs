//! State shared by every request handler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lattice_protocol::compute::TaskInfo;
use lattice_protocol::frames::ServiceFrame;
use lattice_protocol::EndpointId;
use tokio::sync::{broadcast, mpsc};

use crate::auth::oidc::OidcLogin;
use crate::broker::SharedBroker;
use crate::compute::functions::FunctionCache;
use crate::config::ServiceConfig;
use crate::store::SharedStore;

/// Cheap to clone: everything behind `Arc`s.
#[derive(Clone)]
pub struct AppState {
    pub store: SharedStore,
    pub(crate) broker: SharedBroker,
    pub config: Arc<ServiceConfig>,
    pub oidc: Arc<OidcLogin>,
    /// Agents connected to this replica.
    pub(crate) agents: Arc<AgentRegistry>,
    /// Tasks that just reached their final state, for result streams
    /// (`compute::results`).
    pub(crate) results: broadcast::Sender<Arc<Vec<TaskInfo>>>,
    /// Function specs for the relay (`compute::functions::spec`).
    pub(crate) functions: Arc<FunctionCache>,
    /// Collections, file operations and transfer runners (see `transfers`).
    pub(crate) data: Arc<crate::transfers::DataHub>,
    /// The search engine, rate limits and the task processor's wake-up.
    pub(crate) search: Arc<crate::search::SearchHub>,
    /// The runs this replica drives and what they wait on (see `flows`).
    pub(crate) flows: Arc<crate::flows::FlowHub>,
    /// Wakes this replica's timer driver (see `timers`).
    pub(crate) timers: Arc<crate::timers::TimerHub>,
    /// The SMTP client, the webhook client and the delivery worker's
    /// wake-up (see `notify`).
    pub(crate) notify: Arc<crate::notify::NotifyHub>,
}

impl AppState {
    pub(crate) fn new(
        store: SharedStore,
        broker: SharedBroker,
        config: ServiceConfig,
        search: crate::search::SearchHub,
    ) -> Self {
        let oidc = OidcLogin::new(config.oidc.clone(), &config.public_url);
        let flows = crate::flows::FlowHub::new(
            config.flows.limits(),
            std::time::Duration::from_secs(config.flows.lease_secs),
            config.flows.action_hosts.clone(),
        );
        let notify = crate::notify::NotifyHub::new(&config.notify);
        Self {
            store,
            broker,
            config: Arc::new(config),
            oidc: Arc::new(oidc),
            agents: Arc::new(AgentRegistry::default()),
            results: broadcast::channel(RESULT_BROADCAST_CAPACITY).0,
            functions: Arc::new(FunctionCache::default()),
            data: Arc::new(crate::transfers::DataHub::default()),
            search: Arc::new(search),
            flows: Arc::new(flows),
            timers: Arc::new(crate::timers::TimerHub::default()),
            notify: Arc::new(notify),
        }
    }

    pub fn access_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.config.access_token_ttl)
    }

    pub fn refresh_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.config.refresh_token_ttl)
    }
}

/// Result messages a slow stream may fall behind by before it rescans the store.
const RESULT_BROADCAST_CAPACITY: usize = 4096;

/// One agent session's control channel, with the session's id.
type ControlChannel = (u64, mpsc::UnboundedSender<ServiceFrame>);

/// Control channels of the agents connected to this replica, by endpoint.
#[derive(Default)]
pub(crate) struct AgentRegistry {
    sessions: Mutex<HashMap<EndpointId, Vec<ControlChannel>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl AgentRegistry {
    /// Registers a session; returns its id for [`AgentRegistry::remove`].
    pub(crate) fn add(
        &self,
        endpoint: EndpointId,
        control: mpsc::UnboundedSender<ServiceFrame>,
    ) -> u64 {
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

    pub(crate) fn remove(&self, endpoint: EndpointId, session: u64) {
        let mut sessions = self.sessions.lock().expect("registry lock");
        if let Some(list) = sessions.get_mut(&endpoint) {
            list.retain(|(id, _)| *id != session);
            if list.is_empty() {
                sessions.remove(&endpoint);
            }
        }
    }

    /// Sends a frame to every session of an endpoint on this replica.
    pub(crate) fn send(&self, endpoint: EndpointId, frame: ServiceFrame) -> usize {
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
    pub(crate) fn connected(&self, endpoint: EndpointId) -> bool {
        self.sessions
            .lock()
            .expect("registry lock")
            .get(&endpoint)
            .is_some_and(|list| !list.is_empty())
    }

    /// Sends a frame to the newest session of an endpoint only (for requests
    /// that must run once); false if none is connected here.
    pub(crate) fn send_one(&self, endpoint: EndpointId, frame: ServiceFrame) -> bool {
        let sessions = self.sessions.lock().expect("registry lock");
        sessions
            .get(&endpoint)
            .and_then(|list| list.last())
            .is_some_and(|(_, tx)| tx.send(frame).is_ok())
    }
}
