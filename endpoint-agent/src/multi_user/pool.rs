//! The root agent's per-user children: for each [`Route`] key (local user +
//! variable set) a dispatcher inside the root agent (its own listener on
//! loopback, serving only sockets of that user) and one child agent,
//! `lattice user-agent`, started as that user with privileges dropped
//! ([`super::privdrop::run_as`]). The child connects to that dispatcher as
//! one large worker (see `crate::upstream`) and runs the user's rendered
//! config: its own local workers, or worker blocks submitted to the batch
//! scheduler as the user. Each user has a scratch root only they can enter.
//! Idle children are asked to stop (they cancel their blocks) and reaped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lattice_protocol::compute::{BlockReport, ChildReport};
use lattice_protocol::frames::{TaskAssignment, TaskOutcome, TaskStarted, WorkerFrame};
use lattice_protocol::TaskId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::privdrop::run_as;
use super::Route;
use crate::dispatcher::{self, Dispatcher, WorkerEvent};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_of_a_connection_is_recognized() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let local = client.local_addr().unwrap();
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        assert_eq!(socket_uid(local, server), Some(me));
        let other = SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(socket_uid(other, server), None);
        assert_eq!(proc_addr(server).unwrap().len(), 13);
    }
}

/// How children are started.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// The `lattice` binary the users' agents and workers run (must be
    /// executable by them).
    pub worker_command: PathBuf,
    /// Local worker processes of a child whose config does not say.
    pub workers: u32,
    /// Tasks per worker, when the config does not say.
    pub capacity: u32,
    /// Holds `users/NAME/scratch` and `users/NAME/agent-KEY` (per-user,
    /// mode 0700, owned by the user).
    pub state_dir: PathBuf,
    pub idle_timeout: Duration,
    /// Extra environment for the children (e.g. `SLURM_CONF`).
    pub environment: Vec<(String, String)>,
}

/// How long a stopping child may take to cancel its blocks and exit.
const CHILD_STOP_GRACE: Duration = Duration::from_secs(30);

/// What the pool reports.
// One event exists at a time (made, handled, dropped): its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PoolEvent {
    Started(TaskStarted),
    Finished(TaskOutcome),
}

struct Child {
    route: Route,
    dispatcher: Dispatcher,
    address: SocketAddr,
    acceptor: JoinHandle<()>,
    forwarder: JoinHandle<()>,
    /// The user's agent (`lattice user-agent`).
    process: tokio::process::Child,
    /// Its state dir (config, block scripts and logs).
    dir: PathBuf,
    /// What it last reported: its workers, blocks and provider error.
    status: (u32, Vec<BlockReport>, Option<String>),
    last_active: Instant,
}

impl Child {
    fn pids(&self) -> Vec<u32> {
        self.process.id().into_iter().collect()
    }

    fn report(&self) -> ChildReport {
        ChildReport {
            local_user: self.route.account.name.clone(),
            variables: self.route.variables.clone(),
            pid: self.process.id(),
            tasks: self.dispatcher.held(),
            workers: self.status.0,
            blocks: self.status.1.clone(),
            provider_error: self.status.2.clone(),
        }
    }
}

/// Per-user children of the root agent.
pub struct UserPool {
    settings: PoolSettings,
    children: HashMap<u64, Child>,
    by_key: HashMap<(String, String), u64>,
    next_id: u64,
    events_tx: mpsc::UnboundedSender<(u64, WorkerEvent)>,
    events: mpsc::UnboundedReceiver<(u64, WorkerEvent)>,
    /// Which child holds a task.
    tasks: HashMap<TaskId, u64>,
    /// Reports found while applying events outside `next_event`.
    pending: std::collections::VecDeque<PoolEvent>,
}

impl std::fmt::Debug for UserPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPool")
            .field("children", &self.children.len())
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

/// Creates `dir` owned by root, mode 0755 (traversable, not writable).
fn root_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

impl UserPool {
    pub fn new(settings: PoolSettings) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        Self {
            settings,
            children: HashMap::new(),
            by_key: HashMap::new(),
            next_id: 0,
            events_tx,
            events,
            tasks: HashMap::new(),
            pending: std::collections::VecDeque::new(),
        }
    }

    /// Active children: (local user, variables, child agent pid).
    pub fn children(&self) -> Vec<(String, String, Vec<u32>)> {
        self.children
            .values()
            .map(|c| {
                (
                    c.route.account.name.clone(),
                    c.route.variables.clone(),
                    c.pids(),
                )
            })
            .collect()
    }

    /// What the root reports about its children to the service.
    pub fn reports(&self) -> Vec<ChildReport> {
        let mut reports: Vec<ChildReport> = self.children.values().map(Child::report).collect();
        reports.sort_by(|a, b| (&a.local_user, &a.variables).cmp(&(&b.local_user, &b.variables)));
        reports
    }

    /// Stops these tasks wherever they are; their outcomes are not reported.
    pub fn cancel(&mut self, task_ids: &[TaskId]) {
        for id in task_ids {
            if let Some(child) = self
                .tasks
                .remove(id)
                .and_then(|c| self.children.get_mut(&c))
            {
                child.dispatcher.cancel(&[*id]);
                child.dispatcher.assign();
            }
        }
    }

    /// Where each child's dispatcher listens: (local user, address).
    pub fn dispatcher_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.children
            .values()
            .map(|c| (c.route.account.name.clone(), c.address))
            .collect()
    }

    /// The scratch root of a local user's tasks.
    pub fn scratch_root(&self, user: &str) -> PathBuf {
        self.settings
            .state_dir
            .join("users")
            .join(user)
            .join("scratch")
    }

    /// Queues a task on its route's child, starting the child first if needed.
    /// Returns the pids of the child's workers.
    pub async fn submit(
        &mut self,
        route: Route,
        task: TaskAssignment,
    ) -> std::io::Result<Vec<u32>> {
        // Learn of workers that went away before choosing where to queue.
        while let Ok((id, event)) = self.events.try_recv() {
            if let Some(report) = self.apply(id, event) {
                self.pending.push_back(report);
            }
        }
        let id = match self.by_key.get(&route.key()) {
            Some(id) => *id,
            None => self.start_child(route).await?,
        };
        let child = self.children.get_mut(&id).expect("indexed child exists");
        if let Ok(Some(status)) = child.process.try_wait() {
            tracing::warn!(user = %child.route.account.name, %status, "the user's agent has exited; starting a new one");
            child.process =
                spawn_child_agent(&self.settings, &child.route, child.address, &child.dir)?;
        }
        self.tasks.insert(task.task_id, id);
        child.dispatcher.enqueue(task);
        child.dispatcher.assign();
        child.last_active = Instant::now();
        Ok(child.pids())
    }

    async fn start_child(&mut self, route: Route) -> std::io::Result<u64> {
        let account = route.account.clone();
        let users = self.settings.state_dir.join("users");
        let user_dir = users.join(&account.name);
        let scratch = self.scratch_root(&account.name);
        let dir = user_dir.join(format!("agent-{}", key_digest(&route.variables)));
        {
            let (users, user_dir, scratch, dir, account, config) = (
                users.clone(),
                user_dir.clone(),
                scratch.clone(),
                dir.clone(),
                account.clone(),
                route.user_config.clone(),
            );
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                root_dir(&users)?;
                root_dir(&user_dir)?;
                for private in [&scratch, &dir] {
                    std::fs::create_dir_all(private)?;
                    std::os::unix::fs::chown(private, Some(account.uid), Some(account.gid))?;
                    std::fs::set_permissions(private, std::fs::Permissions::from_mode(0o700))?;
                }
                // Written by root in the user's own dir: the user's agent
                // reads it; what it says came from the admin's template.
                let file = dir.join("user-config.toml");
                std::fs::write(&file, config)?;
                std::os::unix::fs::chown(&file, Some(account.uid), Some(account.gid))?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
                Ok(())
            })
            .await
            .map_err(std::io::Error::other)??;
        }
        let (address, mut worker_events, acceptor) = listen_for(account.uid).await?;
        self.next_id += 1;
        let id = self.next_id;
        let tx = self.events_tx.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(event) = worker_events.recv().await {
                if tx.send((id, event)).is_err() {
                    return;
                }
            }
        });
        let process = match spawn_child_agent(&self.settings, &route, address, &dir) {
            Ok(process) => process,
            Err(e) => {
                acceptor.abort();
                forwarder.abort();
                return Err(e);
            }
        };
        self.by_key.insert(route.key(), id);
        self.children.insert(
            id,
            Child {
                route,
                dispatcher: Dispatcher::default(),
                address,
                acceptor,
                forwarder,
                process,
                dir,
                status: (0, Vec::new(), None),
                last_active: Instant::now(),
            },
        );
        Ok(id)
    }

    /// The next start or result of any child's task. Cancel-safe.
    pub async fn next_event(&mut self) -> PoolEvent {
        if let Some(report) = self.pending.pop_front() {
            return report;
        }
        loop {
            let Some((id, event)) = self.events.recv().await else {
                std::future::pending::<()>().await;
                unreachable!();
            };
            if let Some(found) = self.apply(id, event) {
                return found;
            }
        }
    }

    /// Applies one worker event; the first event worth reporting.
    fn apply(&mut self, id: u64, event: WorkerEvent) -> Option<PoolEvent> {
        let child = self.children.get_mut(&id)?;
        child.last_active = Instant::now();
        let mut report = None;
        match event {
            WorkerEvent::Connected {
                conn,
                hello,
                sender,
            } => {
                child.dispatcher.connect(conn, hello, sender);
            }
            WorkerEvent::Frame { conn, frame } => match frame {
                WorkerFrame::Hello { .. } => {}
                WorkerFrame::Started { task_id, at } => {
                    report = child
                        .dispatcher
                        .started(conn, task_id, at)
                        .map(PoolEvent::Started);
                }
                WorkerFrame::Result { outcome } => {
                    report = child
                        .dispatcher
                        .finished(conn, outcome)
                        .map(PoolEvent::Finished);
                }
                WorkerFrame::Status {
                    workers,
                    blocks,
                    provider_error,
                } => {
                    child.status = (workers, blocks, provider_error);
                }
            },
            WorkerEvent::Disconnected { conn, reason } => {
                // Retries are queued again; final failures reported one by one.
                if let Some(first) = child
                    .dispatcher
                    .disconnect(conn, &reason)
                    .into_iter()
                    .next()
                {
                    report = Some(PoolEvent::Finished(first));
                }
            }
        }
        child.dispatcher.assign();
        if let Some(PoolEvent::Finished(outcome)) = &report {
            self.tasks.remove(&outcome.task_id);
        }
        report
    }

    /// Stops children with nothing queued or running for the idle timeout.
    /// Returns the users whose children stopped.
    pub fn reap_idle(&mut self) -> Vec<String> {
        let now = Instant::now();
        let idle: Vec<u64> = self
            .children
            .iter()
            .filter(|(_, c)| {
                c.dispatcher.held() == 0
                    && now.duration_since(c.last_active) >= self.settings.idle_timeout
            })
            .map(|(id, _)| *id)
            .collect();
        idle.into_iter()
            .filter_map(|id| self.stop_child(id))
            .collect()
    }

    /// Asks a child to stop (it cancels its blocks and exits); kills it if
    /// it has not exited after [`CHILD_STOP_GRACE`].
    fn stop_child(&mut self, id: u64) -> Option<String> {
        let mut child = self.children.remove(&id)?;
        self.by_key.remove(&child.route.key());
        self.tasks.retain(|_, c| *c != id);
        child.dispatcher.shutdown_workers();
        child.forwarder.abort();
        let user = child.route.account.name.clone();
        tracing::info!(user = %user, address = %child.address, "stopping a user's agent");
        let (mut process, acceptor) = (child.process, child.acceptor);
        let stop = async move {
            if tokio::time::timeout(CHILD_STOP_GRACE, process.wait())
                .await
                .is_err()
            {
                tracing::warn!("a user's agent did not stop in time; killing it");
                let _ = process.kill().await;
            }
            acceptor.abort();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(stop);
            }
            // No runtime (dropped outside one): the process is killed on drop.
            Err(_) => drop(stop),
        }
        Some(user)
    }

    /// Stops every child and waits (up to the grace period) for them to exit.
    pub async fn shutdown_gracefully(&mut self) {
        let mut waits = Vec::new();
        for (_, mut child) in self.children.drain() {
            child.dispatcher.shutdown_workers();
            child.forwarder.abort();
            waits.push(async move {
                if tokio::time::timeout(CHILD_STOP_GRACE, child.process.wait())
                    .await
                    .is_err()
                {
                    let _ = child.process.kill().await;
                }
                child.acceptor.abort();
            });
        }
        self.by_key.clear();
        self.tasks.clear();
        futures::future::join_all(waits).await;
    }

    /// Stops every child.
    pub fn shutdown(&mut self) {
        let ids: Vec<u64> = self.children.keys().copied().collect();
        for id in ids {
            self.stop_child(id);
        }
    }

    /// Number of running children.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }
}

impl Drop for UserPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts a child's agent, `lattice user-agent`, as its user.
fn spawn_child_agent(
    settings: &PoolSettings,
    route: &Route,
    address: SocketAddr,
    dir: &Path,
) -> std::io::Result<tokio::process::Child> {
    let account = &route.account;
    let scratch = settings
        .state_dir
        .join("users")
        .join(&account.name)
        .join("scratch");
    let mut cmd = std::process::Command::new(&settings.worker_command);
    cmd.arg("user-agent")
        .arg("--root")
        .arg(address.to_string())
        .arg("--state-dir")
        .arg(dir)
        .arg("--config")
        .arg(dir.join("user-config.toml"))
        .arg("--scratch-dir")
        .arg(&scratch)
        .arg("--workers")
        .arg(settings.workers.to_string())
        .arg("--worker-capacity")
        .arg(settings.capacity.to_string())
        .arg("--worker-command")
        .arg(&settings.worker_command)
        .stdin(std::process::Stdio::null());
    run_as(&mut cmd, account)?;
    for (name, value) in &settings.environment {
        cmd.env(name, value);
    }
    if let Ok(filter) = std::env::var("RUST_LOG") {
        cmd.env("RUST_LOG", filter);
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let child = cmd.spawn()?;
    tracing::info!(user = %account.name, uid = account.uid, pid = ?child.id(), "started a user's agent");
    Ok(child)
}

/// A short, stable name for a variable set (the child's state dir).
fn key_digest(variables: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(variables.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Like `dispatcher::listen` on loopback, but a connection is served only
/// if the socket that made it belongs to `uid` (so another local user cannot
/// pose as this user's worker and receive its tasks).
async fn listen_for(
    uid: u32,
) -> std::io::Result<(
    SocketAddr,
    mpsc::UnboundedReceiver<WorkerEvent>,
    JoinHandle<()>,
)> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let bound = listener.local_addr()?;
    let (events, receiver) = mpsc::unbounded_channel();
    let acceptor = tokio::spawn(async move {
        let mut next_conn = 0;
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let owner = tokio::task::spawn_blocking(move || socket_uid(peer, bound))
                        .await
                        .ok()
                        .flatten();
                    if owner != Some(uid) {
                        tracing::warn!(%peer, ?owner, expected = uid, "refused a worker connection from another account");
                        continue;
                    }
                    next_conn += 1;
                    tokio::spawn(dispatcher::serve_worker(
                        next_conn,
                        stream,
                        peer,
                        events.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!("user dispatcher cannot accept a worker: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            if events.is_closed() {
                return;
            }
        }
    });
    Ok((bound, receiver, acceptor))
}

/// `ADDR:PORT` as `/proc/net/tcp` writes an IPv4 socket address.
fn proc_addr(addr: SocketAddr) -> Option<String> {
    match addr {
        SocketAddr::V4(v4) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        )),
        SocketAddr::V6(_) => None,
    }
}

/// The uid owning the TCP socket bound to `local` and connected to `remote`.
fn socket_uid(local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    let (local, remote) = (proc_addr(local)?, proc_addr(remote)?);
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() > 7 && fields[1] == local && fields[2] == remote)
            .then(|| fields[7].parse().ok())
            .flatten()
    })
}
