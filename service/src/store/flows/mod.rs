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

mod rows;

use rows::*;

use super::sql::{PostgresStore, SqliteStore};
use super::{corrupt, from_millis, to_millis, uuid_of, StoreResult};

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
    /// Every (role, principal) pair, principals in their wire form. The
    /// store keeps them as a set: it drops repeated pairs and reads them
    /// back sorted by role, then principal.
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

fn text_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("a unit enum serializes as a string")
}

fn parse_text<T: serde::de::DeserializeOwned>(table: &'static str, text: &str) -> StoreResult<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|e| corrupt(table, format!("`{text}`: {e}")))
}

/// A list of strings as the JSON text the tables keep.
fn json_list(list: &[String]) -> String {
    serde_json::to_string(list).expect("a list of strings serializes")
}

/// A number kept as BIGINT (counts beyond i64 are clamped; none get there).
fn bigint(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `$first, $first+1, ...` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value bound to a statement built at run time.
enum Arg {
    Text(String),
    Int(i64),
}

/// A WHERE clause built at run time with the values of its placeholders.
#[derive(Default)]
struct Clause {
    sql: String,
    args: Vec<Arg>,
}

impl Clause {
    /// The next placeholder, bound to `arg`.
    fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    /// Placeholders for every string of `list`.
    fn list(&mut self, list: &[String]) -> String {
        let first = self.args.len() + 1;
        self.args.extend(list.iter().map(|s| Arg::Text(s.clone())));
        placeholders(first, list.len())
    }
}

/// Flows owned by `owner` or on which one of `principals` holds a role.
fn flows_visible(owner: IdentityId, principals: &[String]) -> Clause {
    let mut clause = Clause::default();
    let owner = clause.arg(Arg::Text(owner.to_string()));
    clause.sql = format!("(owner_id = {owner}");
    if !principals.is_empty() {
        let list = clause.list(principals);
        clause.sql.push_str(&format!(
            " OR EXISTS (SELECT 1 FROM flow_roles r WHERE r.flow_id = flows.id AND r.principal IN ({list}))"
        ));
    }
    clause.sql.push(')');
    clause
}

/// Runs `viewer` may see (see [`FlowStore::runs_for`]), narrowed by `filter`
/// (its limit aside).
fn runs_visible(viewer: IdentityId, principals: &[String], filter: &RunFilter) -> Clause {
    let mut clause = Clause::default();
    let viewer = clause.arg(Arg::Text(viewer.to_string()));
    let mut who = vec![
        format!("starter_id = {viewer}"),
        format!("flow_id IN (SELECT id FROM flows WHERE owner_id = {viewer})"),
    ];
    if !principals.is_empty() {
        let list = clause.list(principals);
        who.push(format!(
            "id IN (SELECT run_id FROM flow_run_principals WHERE principal IN ({list}))"
        ));
        let roles = [
            FlowRoleName::Administrator,
            FlowRoleName::RunManager,
            FlowRoleName::RunMonitor,
        ]
        .iter()
        .map(|r| format!("'{}'", text_of(r)))
        .collect::<Vec<_>>()
        .join(", ");
        who.push(format!(
            "flow_id IN (SELECT flow_id FROM flow_roles WHERE role IN ({roles}) AND principal IN ({list}))"
        ));
    }
    let mut conditions = vec![format!("({})", who.join(" OR "))];
    if let Some(flow) = filter.flow_id {
        conditions.push(format!(
            "flow_id = {}",
            clause.arg(Arg::Text(flow.to_string()))
        ));
    }
    if !filter.statuses.is_empty() {
        let statuses: Vec<String> = filter.statuses.iter().map(text_of).collect();
        conditions.push(format!("status IN ({})", clause.list(&statuses)));
    }
    if let Some(label) = &filter.label {
        conditions.push(format!("label = {}", clause.arg(Arg::Text(label.clone()))));
    }
    if let Some((created_at, id)) = filter.before {
        let at = clause.arg(Arg::Int(to_millis(created_at)));
        let id = clause.arg(Arg::Text(id.to_string()));
        conditions.push(format!(
            "(created_at < {at} OR (created_at = {at} AND id < {id}))"
        ));
    }
    clause.sql = conditions.join(" AND ");
    clause
}

const FLOW_COLUMNS: &str = "id, owner_id, title, subtitle, description, keywords, definition, input_schema, created_at, updated_at";
const RUN_COLUMNS: &str = "id, flow_id, flow_title, starter_id, request_id, label, tags, run_managers, run_monitors, status, transitions, machine, details, created_at, updated_at, completed_at";
/// The run columns with an empty machine, for listings.
const RUN_COLUMNS_NO_MACHINE: &str = "id, flow_id, flow_title, starter_id, request_id, label, tags, run_managers, run_monitors, status, transitions, '' AS machine, details, created_at, updated_at, completed_at";
const LOG_COLUMNS: &str = "seq, at, state, code, details";
const ACTION_COLUMNS: &str = "id, provider, request_id, creator_id, run_id, status, label, monitor_by, manage_by, body, details, internal, created_at, completed_at, release_after";

/// Attaches roles read as `(flow, role)` to their flows, sorted.
fn attach_roles(flows: &mut [FlowRecord], roles: Vec<FlowRoleRow>) -> StoreResult<()> {
    let mut by_flow: std::collections::HashMap<FlowId, Vec<(FlowRoleName, String)>> =
        std::collections::HashMap::new();
    for row in roles {
        let (flow, role) = row.into_role()?;
        by_flow.entry(flow).or_default().push(role);
    }
    for flow in flows {
        let mut roles = by_flow.remove(&flow.id).unwrap_or_default();
        roles.sort();
        flow.roles = roles;
    }
    Ok(())
}

/// `$db` is the back end's database (for the helpers that take its
/// transactions); `$claim_lock` ends the subquery that picks
/// the runs [`FlowStore::claim_runs`] leases: PostgreSQL locks them and
/// skips those another replica is claiming, SQLite (one process, one
/// writer) needs nothing.
macro_rules! impl_flow_store {
    ($store:ty, $db:ty, $claim_lock:literal) => {
        impl $store {
            async fn write_flow_roles(
                tx: &mut sqlx::Transaction<'_, $db>,
                flow: &FlowRecord,
            ) -> StoreResult<()> {
                sqlx::query("DELETE FROM flow_roles WHERE flow_id = $1")
                    .bind(flow.id.to_string())
                    .execute(&mut **tx)
                    .await?;
                for (role, principal) in &flow.roles {
                    sqlx::query(
                        "INSERT INTO flow_roles (flow_id, role, principal) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(flow.id.to_string())
                    .bind(text_of(role))
                    .bind(principal)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            /// The starter, run managers and monitors of a run, for `runs_for`.
            async fn write_run_principals(
                tx: &mut sqlx::Transaction<'_, $db>,
                run: &RunRecord,
            ) -> StoreResult<()> {
                sqlx::query("DELETE FROM flow_run_principals WHERE run_id = $1")
                    .bind(run.id.to_string())
                    .execute(&mut **tx)
                    .await?;
                let starter = format!("identity:{}", run.starter);
                let principals = std::iter::once(&starter)
                    .chain(&run.run_managers)
                    .chain(&run.run_monitors);
                for principal in principals {
                    sqlx::query(
                        "INSERT INTO flow_run_principals (run_id, principal) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    )
                    .bind(run.id.to_string())
                    .bind(principal)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            async fn append_run_log(
                tx: &mut sqlx::Transaction<'_, $db>,
                run: FlowRunId,
                log: &[RunLogRecord],
            ) -> StoreResult<()> {
                for entry in log {
                    sqlx::query(&format!(
                        "INSERT INTO flow_run_log (run_id, {LOG_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
                    ))
                    .bind(run.to_string())
                    .bind(bigint(entry.seq))
                    .bind(to_millis(entry.at))
                    .bind(&entry.state)
                    .bind(&entry.code)
                    .bind(entry.details.to_string())
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl FlowStore for $store {
            async fn insert_flow(&self, flow: &FlowRecord) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(&format!(
                    "INSERT INTO flows ({FLOW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ))
                .bind(flow.id.to_string())
                .bind(flow.owner.to_string())
                .bind(&flow.title)
                .bind(&flow.subtitle)
                .bind(&flow.description)
                .bind(json_list(&flow.keywords))
                .bind(flow.definition.to_string())
                .bind(flow.input_schema.to_string())
                .bind(to_millis(flow.created_at))
                .bind(to_millis(flow.updated_at))
                .execute(&mut *tx)
                .await?;
                Self::write_flow_roles(&mut tx, flow).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn flow(&self, id: FlowId) -> StoreResult<Option<FlowRecord>> {
                let row: Option<FlowRow> =
                    sqlx::query_as(&format!("SELECT {FLOW_COLUMNS} FROM flows WHERE id = $1"))
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let mut flows = [row.into_record()?];
                let roles: Vec<FlowRoleRow> = sqlx::query_as(
                    "SELECT flow_id, role, principal FROM flow_roles WHERE flow_id = $1",
                )
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?;
                attach_roles(&mut flows, roles)?;
                let [flow] = flows;
                Ok(Some(flow))
            }

            async fn update_flow(&self, flow: &FlowRecord) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "UPDATE flows SET owner_id = $2, title = $3, subtitle = $4, description = $5, keywords = $6,
                     definition = $7, input_schema = $8, created_at = $9, updated_at = $10 WHERE id = $1",
                )
                .bind(flow.id.to_string())
                .bind(flow.owner.to_string())
                .bind(&flow.title)
                .bind(&flow.subtitle)
                .bind(&flow.description)
                .bind(json_list(&flow.keywords))
                .bind(flow.definition.to_string())
                .bind(flow.input_schema.to_string())
                .bind(to_millis(flow.created_at))
                .bind(to_millis(flow.updated_at))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                Self::write_flow_roles(&mut tx, flow).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn delete_flow(&self, id: FlowId) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                // Explicit rather than through ON DELETE (see delete_group).
                sqlx::query("DELETE FROM flow_roles WHERE flow_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                let done = sqlx::query("DELETE FROM flows WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn flows_for(
                &self,
                owner: IdentityId,
                principals: &[String],
            ) -> StoreResult<Vec<FlowRecord>> {
                let visible = flows_visible(owner, principals);
                let sql = format!(
                    "SELECT {FLOW_COLUMNS} FROM flows WHERE {} ORDER BY created_at DESC, id DESC",
                    visible.sql
                );
                let mut query = sqlx::query_as::<_, FlowRow>(&sql);
                for arg in &visible.args {
                    query = match arg {
                        Arg::Text(s) => query.bind(s),
                        Arg::Int(n) => query.bind(n),
                    };
                }
                let rows = query.fetch_all(&self.pool).await?;
                let mut flows = rows
                    .into_iter()
                    .map(FlowRow::into_record)
                    .collect::<StoreResult<Vec<_>>>()?;
                if flows.is_empty() {
                    return Ok(flows);
                }
                // The roles of all of them in one query, through the same
                // condition (no list of ids to bind).
                let sql = format!(
                    "SELECT flow_id, role, principal FROM flow_roles WHERE flow_id IN (SELECT id FROM flows WHERE {})",
                    visible.sql
                );
                let mut query = sqlx::query_as::<_, FlowRoleRow>(&sql);
                for arg in &visible.args {
                    query = match arg {
                        Arg::Text(s) => query.bind(s),
                        Arg::Int(n) => query.bind(n),
                    };
                }
                let roles = query.fetch_all(&self.pool).await?;
                attach_roles(&mut flows, roles)?;
                Ok(flows)
            }

            async fn insert_run(
                &self,
                run: &RunRecord,
                log: &[RunLogRecord],
                lease_owner: &str,
                lease_until: DateTime<Utc>,
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(&format!(
                    "INSERT INTO flow_runs ({RUN_COLUMNS}, lease_owner, lease_until)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
                ))
                .bind(run.id.to_string())
                .bind(run.flow_id.to_string())
                .bind(&run.flow_title)
                .bind(run.starter.to_string())
                .bind(run.request_id.clone())
                .bind(run.label.clone())
                .bind(json_list(&run.tags))
                .bind(json_list(&run.run_managers))
                .bind(json_list(&run.run_monitors))
                .bind(text_of(&run.status))
                .bind(bigint(run.transitions))
                .bind(&run.machine)
                .bind(run.details.to_string())
                .bind(to_millis(run.created_at))
                .bind(to_millis(run.updated_at))
                .bind(run.completed_at.map(to_millis))
                .bind(lease_owner)
                .bind(to_millis(lease_until))
                .execute(&mut *tx)
                .await?;
                Self::write_run_principals(&mut tx, run).await?;
                Self::append_run_log(&mut tx, run.id, log).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn run(&self, id: FlowRunId) -> StoreResult<Option<RunRecord>> {
                let row: Option<RunRow> =
                    sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM flow_runs WHERE id = $1"))
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(RunRow::into_record).transpose()
            }

            async fn run_by_request(
                &self,
                flow: FlowId,
                starter: IdentityId,
                request_id: &str,
            ) -> StoreResult<Option<RunRecord>> {
                let row: Option<RunRow> = sqlx::query_as(&format!(
                    "SELECT {RUN_COLUMNS} FROM flow_runs WHERE flow_id = $1 AND starter_id = $2 AND request_id = $3"
                ))
                .bind(flow.to_string())
                .bind(starter.to_string())
                .bind(request_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(RunRow::into_record).transpose()
            }

            async fn save_run(
                &self,
                run: &RunRecord,
                log: &[RunLogRecord],
                lease_owner: &str,
                lease_until: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "UPDATE flow_runs SET status = $3, transitions = $4, machine = $5, details = $6,
                     updated_at = $7, completed_at = $8, lease_until = $9
                     WHERE id = $1 AND lease_owner = $2",
                )
                .bind(run.id.to_string())
                .bind(lease_owner)
                .bind(text_of(&run.status))
                .bind(bigint(run.transitions))
                .bind(&run.machine)
                .bind(run.details.to_string())
                .bind(to_millis(run.updated_at))
                .bind(run.completed_at.map(to_millis))
                .bind(to_millis(lease_until))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    // Dropping the transaction rolls it back.
                    return Ok(false);
                }
                Self::append_run_log(&mut tx, run.id, log).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn update_run_meta(&self, run: &RunRecord) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "UPDATE flow_runs SET label = $2, tags = $3, run_managers = $4, run_monitors = $5 WHERE id = $1",
                )
                .bind(run.id.to_string())
                .bind(run.label.clone())
                .bind(json_list(&run.tags))
                .bind(json_list(&run.run_managers))
                .bind(json_list(&run.run_monitors))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                Self::write_run_principals(&mut tx, run).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn delete_run(&self, id: FlowRunId) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                // Explicit rather than through ON DELETE (see delete_group).
                for table in ["flow_run_log", "flow_run_principals"] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE run_id = $1"))
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                let done = sqlx::query("DELETE FROM flow_runs WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn runs_for(
                &self,
                viewer: IdentityId,
                principals: &[String],
                filter: &RunFilter,
            ) -> StoreResult<Vec<RunRecord>> {
                let mut visible = runs_visible(viewer, principals, filter);
                let limit = visible.arg(Arg::Int(i64::from(filter.limit)));
                let sql = format!(
                    "SELECT {RUN_COLUMNS_NO_MACHINE} FROM flow_runs WHERE {}
                     ORDER BY created_at DESC, id DESC LIMIT {limit}",
                    visible.sql
                );
                let mut query = sqlx::query_as::<_, RunRow>(&sql);
                for arg in &visible.args {
                    query = match arg {
                        Arg::Text(s) => query.bind(s),
                        Arg::Int(n) => query.bind(n),
                    };
                }
                let rows = query.fetch_all(&self.pool).await?;
                rows.into_iter().map(RunRow::into_record).collect()
            }

            async fn run_log(
                &self,
                id: FlowRunId,
                after: Option<u64>,
                limit: u32,
            ) -> StoreResult<Vec<RunLogRecord>> {
                let rows: Vec<RunLogRow> = sqlx::query_as(&format!(
                    "SELECT {LOG_COLUMNS} FROM flow_run_log WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                ))
                .bind(id.to_string())
                .bind(after.map(bigint).unwrap_or(-1))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(RunLogRow::into_record).collect()
            }

            async fn claim_runs(
                &self,
                owner: &str,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
                limit: u32,
            ) -> StoreResult<Vec<FlowRunId>> {
                let unfinished = [RunStatus::Active, RunStatus::Inactive]
                    .iter()
                    .map(|s| format!("'{}'", text_of(s)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let ids: Vec<String> = sqlx::query_scalar(&format!(
                    "UPDATE flow_runs SET lease_owner = $1, lease_until = $2 WHERE id IN (
                         SELECT id FROM flow_runs
                         WHERE status IN ({unfinished}) AND (lease_owner IS NULL OR lease_until < $3)
                         ORDER BY created_at LIMIT $4 {}
                     ) RETURNING id",
                    $claim_lock
                ))
                .bind(owner)
                .bind(to_millis(until))
                .bind(to_millis(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                ids.iter()
                    .map(|id| uuid_of("flow_runs", id).map(FlowRunId))
                    .collect()
            }

            async fn renew_run_leases(&self, owner: &str, until: DateTime<Utc>) -> StoreResult<u64> {
                let done = sqlx::query("UPDATE flow_runs SET lease_until = $2 WHERE lease_owner = $1")
                    .bind(owner)
                    .bind(to_millis(until))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn release_run_lease(&self, id: FlowRunId, owner: &str) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE flow_runs SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
                )
                .bind(id.to_string())
                .bind(owner)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn insert_action(&self, action: &ActionRecord) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO flow_actions ({ACTION_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                ))
                .bind(action.id.to_string())
                .bind(&action.provider)
                .bind(&action.request_id)
                .bind(action.creator.to_string())
                .bind(action.run_id.map(|r| r.to_string()))
                .bind(text_of(&action.status))
                .bind(action.label.clone())
                .bind(json_list(&action.monitor_by))
                .bind(json_list(&action.manage_by))
                .bind(action.body.to_string())
                .bind(action.details.to_string())
                .bind(action.internal.to_string())
                .bind(to_millis(action.created_at))
                .bind(action.completed_at.map(to_millis))
                .bind(action.release_after.map(bigint))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn action(&self, id: ActionId) -> StoreResult<Option<ActionRecord>> {
                let row: Option<ActionRow> = sqlx::query_as(&format!(
                    "SELECT {ACTION_COLUMNS} FROM flow_actions WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(ActionRow::into_record).transpose()
            }

            async fn action_by_request(
                &self,
                provider: &str,
                creator: IdentityId,
                request_id: &str,
            ) -> StoreResult<Option<ActionRecord>> {
                let row: Option<ActionRow> = sqlx::query_as(&format!(
                    "SELECT {ACTION_COLUMNS} FROM flow_actions WHERE provider = $1 AND creator_id = $2 AND request_id = $3"
                ))
                .bind(provider)
                .bind(creator.to_string())
                .bind(request_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(ActionRow::into_record).transpose()
            }

            async fn update_action(&self, action: &ActionRecord) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE flow_actions SET status = $2, details = $3, internal = $4, completed_at = $5 WHERE id = $1",
                )
                .bind(action.id.to_string())
                .bind(text_of(&action.status))
                .bind(action.details.to_string())
                .bind(action.internal.to_string())
                .bind(action.completed_at.map(to_millis))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_action(&self, id: ActionId) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM flow_actions WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn actions_of_run(&self, run: FlowRunId) -> StoreResult<Vec<ActionRecord>> {
                let rows: Vec<ActionRow> = sqlx::query_as(&format!(
                    "SELECT {ACTION_COLUMNS} FROM flow_actions WHERE run_id = $1 ORDER BY created_at, id"
                ))
                .bind(run.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(ActionRow::into_record).collect()
            }
        }
    };
}

impl_flow_store!(SqliteStore, sqlx::Sqlite, "");
impl_flow_store!(PostgresStore, sqlx::Postgres, "FOR UPDATE SKIP LOCKED");
