//! Persistent state of flows: flows with their roles, runs (the serialized
//! state machine, its status, who may see and manage it, and the lease of
//! the replica driving it), each run's log, and the actions the service's
//! built-in action providers have started. Same pattern as the other
//! tables: SQL written once, instantiated for both back ends by
//! `impl_flow_store!`.
//!
//! The store keeps rows and guards the two invariants concurrent replicas
//! rely on: a run is saved only by the replica holding its lease
//! ([`FlowStore::save_run`] checks the owner in the same statement), and a
//! (provider, creator, request id) or (flow, starter, request id) names at
//! most one action or run (`Conflict` on the second insert). Who may do
//! what is decided by `crate::flows`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lattice_protocol::flows::{ActionState, FlowRoleName, RunStatus};
use lattice_protocol::{ActionId, FlowId, FlowRunId, IdentityId};
use serde_json::Value;

use super::StoreResult;

/// A flow as stored, with its roles.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRecord {
    pub id: FlowId,
    pub owner: IdentityId,
    pub title: String,
    pub subtitle: String,
    pub description: String,
    pub keywords: Vec<String>,
    pub definition: Value,
    pub input_schema: Value,
    /// Every (role, principal) pair, principals in their wire form.
    pub roles: Vec<(FlowRoleName, String)>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A run as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub id: FlowRunId,
    pub flow_id: FlowId,
    /// The flow's title when the run started (the flow may be gone since).
    pub flow_title: String,
    pub starter: IdentityId,
    /// The starter's request id: one run per (flow, starter, request id).
    pub request_id: Option<String>,
    pub label: Option<String>,
    pub tags: Vec<String>,
    pub run_managers: Vec<String>,
    pub run_monitors: Vec<String>,
    pub status: RunStatus,
    pub transitions: u64,
    /// The serialized `lattice_flows::Run` (JSON text). Listings leave it
    /// empty; [`FlowStore::run`] fills it.
    pub machine: String,
    /// What the API shows as the run's `details` (output, error, what it
    /// waits on): small, rewritten at every save.
    pub details: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// One run log entry as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct RunLogRecord {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub state: String,
    pub code: String,
    pub details: Value,
}

/// Which runs a listing wants; newest first.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub flow_id: Option<FlowId>,
    /// Empty: every status.
    pub statuses: Vec<RunStatus>,
    pub label: Option<String>,
    /// Keyset paging: only runs strictly older than this (created_at, id).
    pub before: Option<(DateTime<Utc>, FlowRunId)>,
    pub limit: u32,
}

/// An action a built-in provider started.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionRecord {
    pub id: ActionId,
    /// The provider's name (`compute`, `transfer`, `approval`, ...).
    pub provider: String,
    pub request_id: String,
    pub creator: IdentityId,
    /// The run that started it, when a run did.
    pub run_id: Option<FlowRunId>,
    pub status: ActionState,
    pub label: Option<String>,
    pub monitor_by: Vec<String>,
    pub manage_by: Vec<String>,
    pub body: Value,
    /// What the provider shows as the action's `details`.
    pub details: Value,
    /// What the provider keeps for itself (task ids, a transfer id, ...).
    pub internal: Value,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub release_after: Option<u64>,
}

#[async_trait]
pub trait FlowStore: Send + Sync + 'static {
    /// Inserts a flow and its roles in one transaction.
    async fn insert_flow(&self, flow: &FlowRecord) -> StoreResult<()>;
    async fn flow(&self, id: FlowId) -> StoreResult<Option<FlowRecord>>;
    /// Rewrites every field and replaces the roles, in one transaction;
    /// false if the flow is gone.
    async fn update_flow(&self, flow: &FlowRecord) -> StoreResult<bool>;
    /// Removes the flow and its roles (its runs stay); false if gone.
    async fn delete_flow(&self, id: FlowId) -> StoreResult<bool>;
    /// Flows owned by `owner` or on which one of `principals` holds a
    /// role, newest first.
    async fn flows_for(
        &self,
        owner: IdentityId,
        principals: &[String],
    ) -> StoreResult<Vec<FlowRecord>>;

    /// Inserts a run with its first log entries, leased to `lease_owner`
    /// until `lease_until`. `Conflict` if the (flow, starter, request id)
    /// already names a run.
    async fn insert_run(
        &self,
        run: &RunRecord,
        log: &[RunLogRecord],
        lease_owner: &str,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn run(&self, id: FlowRunId) -> StoreResult<Option<RunRecord>>;
    async fn run_by_request(
        &self,
        flow: FlowId,
        starter: IdentityId,
        request_id: &str,
    ) -> StoreResult<Option<RunRecord>>;
    /// Saves a step of a run (status, transitions, machine, details,
    /// updated and completed times) and appends its log entries, in one
    /// transaction, only if `lease_owner` still holds the run's lease
    /// (which it extends to `lease_until`); false if it does not.
    async fn save_run(
        &self,
        run: &RunRecord,
        log: &[RunLogRecord],
        lease_owner: &str,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Label, tags, run managers and run monitors; false if gone.
    async fn update_run_meta(&self, run: &RunRecord) -> StoreResult<bool>;
    /// Removes a run and its log; false if gone.
    async fn delete_run(&self, id: FlowRunId) -> StoreResult<bool>;
    /// Runs `viewer` may see (machines left empty): started by `viewer`;
    /// naming one of `principals` among their run managers or monitors;
    /// of a flow `viewer` owns; or of a flow on which one of `principals`
    /// is administrator, run manager or run monitor.
    async fn runs_for(
        &self,
        viewer: IdentityId,
        principals: &[String],
        filter: &RunFilter,
    ) -> StoreResult<Vec<RunRecord>>;
    /// Log entries with `seq > after` (all when `None`), oldest first.
    async fn run_log(
        &self,
        id: FlowRunId,
        after: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<RunLogRecord>>;

    /// Leases up to `limit` unfinished runs (ACTIVE or INACTIVE) whose
    /// lease is free or ended before `now` to `owner` until `until`;
    /// returns their ids.
    async fn claim_runs(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<FlowRunId>>;
    /// Extends every lease `owner` holds to `until`; returns how many.
    async fn renew_run_leases(&self, owner: &str, until: DateTime<Utc>) -> StoreResult<u64>;
    /// Gives up `owner`'s lease on a run (another replica may take it).
    async fn release_run_lease(&self, id: FlowRunId, owner: &str) -> StoreResult<()>;

    /// `Conflict` if (provider, creator, request id) already names an action.
    async fn insert_action(&self, action: &ActionRecord) -> StoreResult<()>;
    async fn action(&self, id: ActionId) -> StoreResult<Option<ActionRecord>>;
    async fn action_by_request(
        &self,
        provider: &str,
        creator: IdentityId,
        request_id: &str,
    ) -> StoreResult<Option<ActionRecord>>;
    /// Status, details, internal and completed time; false if gone.
    async fn update_action(&self, action: &ActionRecord) -> StoreResult<bool>;
    async fn delete_action(&self, id: ActionId) -> StoreResult<bool>;
    /// The actions a run started, oldest first.
    async fn actions_of_run(&self, run: FlowRunId) -> StoreResult<Vec<ActionRecord>>;
}
