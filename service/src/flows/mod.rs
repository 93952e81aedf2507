//! The flows domain: stored flow definitions and the roles on them
//! ([`definitions`]), runs and who may see and manage them ([`runs`]),
//! the driver that carries runs forward durably ([`driver`]), the
//! built-in action providers and the action-provider API over them
//! ([`actions`]), and the HTTP client for external providers
//! ([`external`]). The language itself (validation, expressions, the pure
//! run state machine) is the `lattice-flows` crate.
//!
//! It owns the rules (roles, limits, who an action acts as) and the
//! orchestration; it must not know about HTTP status codes or extractors
//! (routes map a [`FlowError`] through the one `From` in `error.rs`), and
//! it never interprets a definition itself: it stores the serialized
//! `lattice_flows::Run`, carries out the commands it returns and feeds it
//! events.
//!
//! **Durability.** A run's machine, status and log are saved after every
//! step by the replica holding the run's lease; a replica that stops
//! renewing loses the lease and another one continues from the store.
//! Every action request id is derived from the run, the state and the
//! attempt, and every provider (built-in or external) starts one action
//! per request id, so a step repeated after a crash starts nothing twice.
//!
//! **Acting as the starter.** A built-in action runs in-process as the
//! run's starter with only the scope that action needs (a `Caller` that
//! never leaves the process; no user token is stored); every permission
//! check of the underlying domain (compute, transfers, sharing, search)
//! applies to the starter as if they had asked themselves.

pub mod actions;
pub mod definitions;
pub(crate) mod driver;
mod error;
pub(crate) mod external;
pub mod roles;
pub mod runs;

pub use error::{FlowError, FlowResult};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use lattice_flows::Limits;
use lattice_protocol::FlowRunId;
use tokio::sync::{mpsc, Notify};

/// What a run's driver task is told from outside.
#[derive(Debug)]
pub(crate) enum Nudge {
    /// Something it waits on may have changed: look at its actions now.
    Look,
    /// The work of one action (by request id) may have ended: look at it.
    LookAt(String),
    /// Cancel the run.
    Cancel,
}

/// What every flows request and the driver share: built once per service.
pub struct FlowHub {
    /// This replica's name as a lease owner.
    pub(crate) replica: String,
    pub(crate) limits: Limits,
    /// How long a lease lasts without renewal.
    pub(crate) lease: Duration,
    /// Hosts external action providers may be on (empty: any).
    pub(crate) action_hosts: Vec<String>,
    pub(crate) http: reqwest::Client,
    /// The runs this replica drives now, and how to reach their tasks.
    pub(crate) running: Mutex<HashMap<FlowRunId, mpsc::UnboundedSender<Nudge>>>,
    /// What a driven run waits on (`task:<id>`, `run:<id>`) -> the run
    /// and the request id of the action that waits.
    pub(crate) watches: Mutex<HashMap<String, (FlowRunId, String)>>,
    /// Wakes the lease sweeper (a run was started here).
    pub(crate) wake: Notify,
}

impl FlowHub {
    pub fn new(limits: Limits, lease: Duration, action_hosts: Vec<String>) -> Self {
        Self {
            replica: format!("replica-{}", uuid::Uuid::new_v4()),
            limits,
            lease,
            action_hosts,
            http: external::client(),
            running: Mutex::new(HashMap::new()),
            watches: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    /// Tells a run driven here; false if it is not driven here.
    pub(crate) fn nudge(&self, run: FlowRunId, nudge: Nudge) -> bool {
        let running = self.running.lock().expect("flows running map");
        running.get(&run).is_some_and(|tx| tx.send(nudge).is_ok())
    }

    /// Nudges the run that waits on `key`, if one is driven here, to look
    /// at the one action that waits on it.
    pub(crate) fn nudge_watcher(&self, key: &str) {
        let watcher = self.watches.lock().expect("flows watches").remove(key);
        if let Some((run, request_id)) = watcher {
            self.nudge(run, Nudge::LookAt(request_id));
        }
    }

    pub(crate) fn watch(&self, key: String, run: FlowRunId, request_id: &str) {
        self.watches
            .lock()
            .expect("flows watches")
            .insert(key, (run, request_id.to_owned()));
    }

    pub(crate) fn unwatch_run(&self, run: FlowRunId) {
        self.watches
            .lock()
            .expect("flows watches")
            .retain(|_, (r, _)| *r != run);
    }
}
