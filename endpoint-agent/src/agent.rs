//! The agent's event loop. Every trigger is one variant of [`Event`]; the
//! loop waits for the next one in [`Agent::next_event`] and applies it in
//! [`Agent::handle`], so what can happen is visible in one place.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use lattice_protocol::compute::ChildReport;
use lattice_protocol::frames::{AgentFrame, ServiceFrame, TaskOutcome, TaskStarted, WorkerFrame};
use lattice_protocol::{EndpointId, TaskId};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};

use crate::blocks::{BlockEvent, BlockSettings, Blocks};
use crate::channel::{self, ChannelEvent, ChannelParams};
use crate::config::{AgentConfig, Credentials, EndpointCredential};
use crate::credits::{Credits, Prefetch};
use crate::dispatcher::{self, Dispatcher, WorkerEvent};
use crate::multi_user::runner::{spawn_runner, RunnerCommand, RunnerEvent};
use crate::provider::{LocalProvider, LocalWorkers};
use crate::AgentError;

/// Started/Results frames go out when this many are pending...
const BATCH_MAX: usize = 256;
/// ...or when no other event is ready (the flush is the last branch of a
/// biased select), this long after the first one was queued.
const BATCH_DELAY: Duration = Duration::ZERO;

/// Told once the agent is up (before it has reached the service).
#[derive(Clone, Debug)]
pub struct AgentReady {
    pub endpoint_id: EndpointId,
    /// Where workers connect (`lattice worker --dispatcher ADDR`).
    pub dispatcher: SocketAddr,
}

/// Runs the agent until `shutdown` completes: then it takes no more tasks,
/// tells workers to finish, waits up to the grace period for running tasks
/// and their acknowledgements, stops its local workers and returns.
/// Why a multi-user agent refuses `[[collections]]` for now.
pub(crate) const MULTI_USER_COLLECTIONS: &str = "a multi-user agent cannot host collections yet: their file operations and transfers would run as root, not as each user's mapped account; host them from a single-user agent (`lattice agent --collection NAME=DIR`) as the account that owns the files (see docs/sharing.md)";

pub async fn run_agent(
    mut config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    // A per-user child serves its root, not the service.
    let upstream = match &config.credentials {
        crate::config::Credentials::Upstream { root } => Some(*root),
        _ => None,
    };
    let credential = match upstream {
        Some(_) => None,
        None => Some(resolve_credential(&config).await?),
    };
    if config.multi_user.is_some() && !config.data.collections.is_empty() {
        // Its file operations and transfers would run as root, not as each
        // requester's mapped account (mapped collections are not built yet).
        return Err(AgentError::Config(MULTI_USER_COLLECTIONS.into()));
    }
    let multi_user = config.multi_user.take();
    if multi_user.is_some() {
        // The root runs no user code: every task goes to a user's child.
        config.workers = 0;
        config.provider = None;
    }
    let (dispatcher_addr, worker_events, acceptor) = dispatcher::listen(config.dispatcher_listen)
        .await
        .map_err(|source| AgentError::Listen {
            address: config.dispatcher_listen,
            source,
        })?;
    let scratch_root = config
        .scratch_dir
        .clone()
        .unwrap_or_else(|| config.state_dir.join("scratch"));
    match &credential {
        Some(c) => {
            tracing::info!(endpoint_id = %c.endpoint_id, dispatcher = %dispatcher_addr, service = %c.service_url, workers = config.workers, multi_user = multi_user.is_some(), "agent starting")
        }
        None => {
            tracing::info!(dispatcher = %dispatcher_addr, workers = config.workers, "user agent starting")
        }
    }

    let (block_tx, block_events) = mpsc::unbounded_channel();
    let blocks = match &config.provider {
        Some(settings) => Some(start_blocks(&config, settings, dispatcher_addr, block_tx).await?),
        None => None,
    };
    let provider = LocalProvider::start(LocalWorkers {
        launch: config.launch.clone(),
        count: config.workers,
        capacity: config.worker_capacity,
        dispatcher: dispatcher_addr,
        scratch_root,
        grace: config.shutdown_grace,
    })?;
    let (channel_tx, channel_events) = mpsc::unbounded_channel();
    let (lost_tx, lost) = tokio::sync::oneshot::channel::<String>();
    let channel = match (&credential, upstream) {
        (Some(credential), _) => {
            let url = lattice_client::Client::new(&credential.service_url, None)
                .map_err(|e| AgentError::Config(e.to_string()))?
                .agent_channel_url();
            channel::spawn(
                ChannelParams {
                    url,
                    agent_secret: credential.agent_secret.clone(),
                    endpoint_id: credential.endpoint_id,
                    hostname: crate::hostname(),
                    backoff: config.backoff,
                    multi_user: multi_user.is_some(),
                },
                channel_tx,
            )
        }
        (None, Some(root)) => crate::upstream::spawn(root, channel_tx, lost_tx)
            .await
            .map_err(|source| {
                AgentError::Config(format!(
                    "cannot reach the multi-user root agent at {root}: {source}"
                ))
            })?,
        (None, None) => unreachable!("a credential or an upstream"),
    };
    let (data_tx, data_frames) = mpsc::unbounded_channel();
    let data = crate::data::DataPlane::start(
        &config.data,
        config.state_dir.clone(),
        credential.as_ref().map_or("", |c| c.service_url.as_str()),
        data_tx,
    )
    .await?;
    if let (Some(ready), Some(credential)) = (config.ready, &credential) {
        let _ = ready.send(AgentReady {
            endpoint_id: credential.endpoint_id,
            dispatcher: dispatcher_addr,
        });
    }
    let (runner_tx, runner_events, runner) = match multi_user {
        Some(mode) => {
            let (command_tx, commands) = mpsc::unbounded_channel();
            let (event_tx, events) = mpsc::unbounded_channel();
            let handle = spawn_runner(mode.runner, commands, event_tx);
            (Some((command_tx, mode.max_tasks)), events, Some(handle))
        }
        None => (None, mpsc::unbounded_channel().1, None),
    };
    // A child stops when its root goes (or asks it to).
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            Ok(reason) = lost => tracing::info!("{reason}"),
        }
    };

    let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scale_tick = tokio::time::interval(
        blocks
            .as_ref()
            .map_or(Duration::from_secs(3600), Blocks::poll_interval),
    );
    scale_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut agent = Agent {
        blocks,
        dispatcher: Dispatcher::default(),
        link: None,
        credits: Credits::default(),
        prefetch: Prefetch::default(),
        expected_slots: config.workers.saturating_mul(config.worker_capacity),
        default_walltime_secs: config.default_walltime_secs,
        pending_started: Vec::new(),
        pending_results: Vec::new(),
        unacked: HashMap::new(),
        flush_at: None,
        reported_idle: true,
        provider_kind: config.provider.as_ref().map(provider_kind),
        stopping: None,
        shutdown_grace: config.shutdown_grace,
        multi_user: runner_tx.map(|(commands, max_tasks)| MultiUserLink {
            commands,
            max_tasks,
            held: HashSet::new(),
            children: Vec::new(),
        }),
        data,
    };
    let mut inputs = Inputs {
        channel: channel_events,
        workers: worker_events,
        heartbeat: &mut heartbeat,
        blocks: block_events,
        scale_tick: &mut scale_tick,
        runner: runner_events,
        data: data_frames,
    };
    tokio::pin!(shutdown);
    loop {
        let event = agent.next_event(&mut inputs, &mut shutdown).await;
        if agent.handle(event) == Flow::Exit {
            break;
        }
    }
    agent.flush();
    provider.stopping();
    // Closing the worker connections makes workers exit (killing any task
    // still running); then the provider reaps or kills them.
    acceptor.abort();
    let blocks = agent.blocks.take();
    drop(agent);
    if let Some(runner) = runner {
        // Dropping the agent closed the runner's commands: it stops the
        // users' agents (they cancel their blocks) and returns.
        let _ = runner.await;
    }
    let block_events = inputs.blocks;
    if let Some(blocks) = blocks {
        blocks.shutdown(block_events).await;
    }
    provider.stop().await;
    channel.abort();
    tracing::info!("agent stopped");
    Ok(())
}

/// Builds the configured provider and the block table; workers dial
/// `dispatcher_address` or, by default, the dispatcher's bound address (a
/// wildcard IP replaced by this host's name).
async fn start_blocks(
    config: &AgentConfig,
    settings: &crate::config::ProviderSettings,
    dispatcher: SocketAddr,
    events: mpsc::UnboundedSender<BlockEvent>,
) -> Result<Blocks, AgentError> {
    let block_dir = config.state_dir.join("blocks");
    let provider = {
        let (provider_config, dir) = (settings.provider.clone(), block_dir.clone());
        tokio::task::spawn_blocking(move || {
            lattice_scheduler_adapters::build_provider(&provider_config, &dir)
        })
        .await
        .map_err(|e| AgentError::Config(e.to_string()))?
        .map_err(|e| AgentError::Config(format!("[provider]: {e}")))?
    };
    let program = match &config.launch {
        crate::provider::WorkerLaunch::Processes { command: Some(c) } => c.clone(),
        _ => std::env::current_exe().map_err(|e| {
            AgentError::Config(format!(
                "cannot find the agent's own executable for block workers (set worker_command): {e}"
            ))
        })?,
    };
    let address = match &settings.dispatcher_address {
        Some(address) => address.clone(),
        None if dispatcher.ip().is_unspecified() => {
            format!("{}:{}", crate::hostname(), dispatcher.port())
        }
        None => dispatcher.to_string(),
    };
    tracing::info!(provider = provider.kind(), dispatcher = %address, "worker blocks will connect to the dispatcher here");
    Ok(Blocks::new(
        provider,
        BlockSettings {
            strategy: settings.strategy.clone(),
            worker: lattice_scheduler_adapters::WorkerCommand {
                program,
                dispatcher: address,
                capacity: config.worker_capacity,
                scratch_dir: config.scratch_dir.clone(),
            },
            walltime: settings.provider.walltime(),
            worker_init: settings.provider.worker_init().to_vec(),
        },
        config.worker_capacity,
        events,
    ))
}

async fn resolve_credential(config: &AgentConfig) -> Result<EndpointCredential, AgentError> {
    match &config.credentials {
        Credentials::Upstream { root } => Err(AgentError::Config(format!(
            "a user agent (upstream {root}) has no endpoint credential"
        ))),
        Credentials::Preset(credential) => Ok(credential.clone()),
        Credentials::Register { name, client } => {
            let state_dir = config.state_dir.clone();
            let saved = tokio::task::spawn_blocking(move || EndpointCredential::load(&state_dir))
                .await
                .map_err(|e| AgentError::Config(e.to_string()))??;
            if let Some(saved) = saved {
                tracing::info!(endpoint_id = %saved.endpoint_id, "using the saved endpoint credential");
                return Ok(saved);
            }
            let registered =
                client
                    .register_endpoint(name)
                    .await
                    .map_err(|source| AgentError::Register {
                        name: name.clone(),
                        source,
                    })?;
            let credential = EndpointCredential {
                endpoint_id: registered.endpoint.id,
                agent_secret: registered.agent_secret,
                service_url: client.base_url().to_string(),
            };
            let state_dir = config.state_dir.clone();
            let to_save = credential.clone();
            tokio::task::spawn_blocking(move || to_save.save(&state_dir))
                .await
                .map_err(|e| AgentError::Config(e.to_string()))??;
            tracing::info!(endpoint_id = %credential.endpoint_id, name, "registered the endpoint");
            Ok(credential)
        }
    }
}

/// Everything that can happen to the agent.
// One event exists at a time (made, handled, dropped): its size does not
// matter, and boxing worker frames would cost an allocation per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Event {
    /// The control channel came up, went down, or brought a frame.
    Channel(ChannelEvent),
    /// A worker connected, sent a frame or disconnected.
    Worker(WorkerEvent),
    /// Time to send the pending Started/Results batch.
    Flush,
    /// Time to report load.
    Heartbeat,
    /// Time to poll the scheduler and apply the scaling strategy.
    ScaleTick,
    /// A provider call (submit, status, cancel) came back.
    Block(BlockEvent),
    /// A multi-user task started or ended, or the children changed.
    MultiUser(RunnerEvent),
    /// Ctrl-C, SIGTERM, or the embedding program asked to stop.
    Shutdown,
    /// The shutdown grace period is over.
    GraceOver,
    /// The data plane has a frame for the service (file operation result,
    /// transfer progress or end).
    Data(AgentFrame),
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

struct Inputs<'a> {
    channel: mpsc::UnboundedReceiver<ChannelEvent>,
    workers: mpsc::UnboundedReceiver<WorkerEvent>,
    heartbeat: &'a mut Interval,
    blocks: mpsc::UnboundedReceiver<BlockEvent>,
    scale_tick: &'a mut Interval,
    runner: mpsc::UnboundedReceiver<RunnerEvent>,
    data: mpsc::UnboundedReceiver<AgentFrame>,
}

/// The agent's side of a running multi-user runner.
struct MultiUserLink {
    commands: mpsc::UnboundedSender<RunnerCommand>,
    max_tasks: u32,
    /// Tasks handed to the runner and not yet final.
    held: HashSet<TaskId>,
    /// As last reported by the runner.
    children: Vec<ChildReport>,
}

struct Agent {
    /// Worker blocks of the configured provider, if any.
    blocks: Option<Blocks>,
    dispatcher: Dispatcher,
    /// Outgoing frames of the current connection, if connected.
    link: Option<mpsc::UnboundedSender<AgentFrame>>,
    credits: Credits,
    prefetch: Prefetch,
    /// Slots of the local workers the agent starts.
    expected_slots: u32,
    default_walltime_secs: Option<u32>,
    pending_started: Vec<TaskStarted>,
    pending_results: Vec<TaskOutcome>,
    /// Results sent (or to send) and not yet acknowledged.
    unacked: HashMap<TaskId, TaskOutcome>,
    flush_at: Option<Instant>,
    /// The last heartbeat said nothing runs or waits here; until it does, a
    /// flush that leaves the agent idle sends one at once, so `endpoint
    /// show` is not a heartbeat behind after the last task finished (busy
    /// periods add no heartbeats).
    reported_idle: bool,
    /// The kind of the configured block provider, for heartbeats.
    provider_kind: Option<&'static str>,
    /// When shutting down: the end of the grace period.
    stopping: Option<Instant>,
    shutdown_grace: Duration,
    multi_user: Option<MultiUserLink>,
    /// Hosted collections and transfers (None: no collections configured).
    data: Option<crate::data::DataPlane>,
}

impl Agent {
    async fn next_event(
        &self,
        inputs: &mut Inputs<'_>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Event {
        let flush_at = self.flush_at.unwrap_or_else(Instant::now);
        let grace_over = self.stopping.unwrap_or_else(Instant::now);
        // Biased, with the flush last: pending frames go out as soon as no
        // other event is ready, so a burst is batched without a fixed delay.
        tokio::select! {
            biased;
            Some(event) = inputs.channel.recv() => Event::Channel(event),
            Some(event) = inputs.workers.recv() => Event::Worker(event),
            Some(event) = inputs.blocks.recv() => Event::Block(event),
            Some(event) = inputs.runner.recv() => Event::MultiUser(event),
            Some(frame) = inputs.data.recv() => Event::Data(frame),
            () = shutdown.as_mut(), if self.stopping.is_none() => Event::Shutdown,
            () = tokio::time::sleep_until(grace_over), if self.stopping.is_some() => Event::GraceOver,
            _ = inputs.heartbeat.tick() => Event::Heartbeat,
            _ = inputs.scale_tick.tick(), if self.blocks.is_some() && self.stopping.is_none() => Event::ScaleTick,
            () = tokio::time::sleep_until(flush_at), if self.flush_at.is_some() => Event::Flush,
        }
    }

    fn handle(&mut self, event: Event) -> Flow {
        match event {
            Event::Channel(ChannelEvent::Up { sender }) => self.connected(sender),
            Event::Channel(ChannelEvent::Frame(frame)) => self.service_frame(frame),
            Event::Channel(ChannelEvent::Down { reason }) => {
                tracing::debug!("channel down: {reason}");
                self.link = None;
                // Results stay in `unacked` and go again on the next connection.
                self.pending_results.clear();
                self.pending_started.clear();
                self.flush_at = None;
            }
            Event::Worker(event) => self.worker_event(event),
            Event::Flush => self.flush(),
            Event::Data(frame) => self.send(frame),
            Event::Heartbeat => self.send_heartbeat(),
            Event::ScaleTick => self.scale(),
            Event::Block(event) => {
                if let Some(blocks) = &mut self.blocks {
                    blocks.handle(event);
                }
            }
            Event::MultiUser(event) => self.runner_event(event),
            Event::Shutdown => {
                tracing::info!(
                    running = self.dispatcher.running(),
                    grace = ?self.shutdown_grace,
                    "shutting down: taking no more tasks, letting running ones finish"
                );
                self.stopping = Some(Instant::now() + self.shutdown_grace);
                self.dispatcher.shutdown_workers();
            }
            Event::GraceOver => {
                tracing::warn!(
                    running = self.dispatcher.running(),
                    unacknowledged = self.unacked.len(),
                    "shutdown grace period over; stopping anyway"
                );
                return Flow::Exit;
            }
        }
        self.dispatcher.assign();
        self.grant_credits();
        self.schedule_flush();
        if self.stopping.is_some()
            && self.dispatcher.running() == 0
            && self.unacked.is_empty()
            && self.multi_user.as_ref().is_none_or(|m| m.held.is_empty())
        {
            return Flow::Exit;
        }
        Flow::Continue
    }

    fn connected(&mut self, sender: mpsc::UnboundedSender<AgentFrame>) {
        self.link = Some(sender);
        self.credits.reset();
        self.pending_results.clear();
        self.pending_started.clear();
        if !self.unacked.is_empty() {
            tracing::info!(
                results = self.unacked.len(),
                "re-sending unacknowledged results"
            );
            let mut results: Vec<TaskOutcome> = self.unacked.values().cloned().collect();
            results.sort_by_key(|r| r.finished_at);
            for chunk in results.chunks(BATCH_MAX) {
                self.send(AgentFrame::Results {
                    results: chunk.to_vec(),
                });
            }
        }
        self.send_heartbeat();
        if let Some(data) = &self.data {
            let announcement = data.announcement();
            self.send(announcement);
        }
    }

    fn service_frame(&mut self, frame: ServiceFrame) {
        match frame {
            ServiceFrame::Welcome { .. } => {}
            ServiceFrame::Tasks { tasks } => {
                self.credits.received(tasks.len() as u32);
                for mut task in tasks {
                    if self.stopping.is_some() {
                        tracing::debug!(task_id = %task.task_id, "not taking a task while shutting down");
                        continue;
                    }
                    if self.unacked.contains_key(&task.task_id)
                        || self.dispatcher.holds(task.task_id)
                    {
                        tracing::debug!(task_id = %task.task_id, "ignoring a redelivered task already here");
                        continue;
                    }
                    if task.walltime_secs == 0 {
                        task.walltime_secs = self.default_walltime_secs.unwrap_or(0);
                    }
                    match &mut self.multi_user {
                        Some(link) => {
                            if !link.held.insert(task.task_id) {
                                continue;
                            }
                            let _ = link.commands.send(RunnerCommand::Submit(Box::new(task)));
                        }
                        None => {
                            self.dispatcher.enqueue(task);
                        }
                    }
                }
            }
            ServiceFrame::Cancel { task_ids } => match &mut self.multi_user {
                Some(link) => {
                    for id in &task_ids {
                        link.held.remove(id);
                    }
                    let _ = link.commands.send(RunnerCommand::Cancel(task_ids));
                }
                None => self.dispatcher.cancel(&task_ids),
            },
            ServiceFrame::ResultsAck { task_ids } => {
                for id in task_ids {
                    self.unacked.remove(&id);
                }
            }
            ServiceFrame::Error { message } => tracing::warn!("the service reported: {message}"),
            frame @ (ServiceFrame::FileOp { .. } | ServiceFrame::Transfer { .. }) => {
                match &self.data {
                    Some(data) => data.handle(frame),
                    None => {
                        if let Some(answer) = crate::data::without_data_plane(frame) {
                            self.send(answer);
                        }
                    }
                }
            }
        }
    }

    fn worker_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Connected {
                conn,
                hello,
                sender,
            } => {
                self.dispatcher.connect(conn, hello, sender);
                if self.stopping.is_some() {
                    self.dispatcher.shutdown_worker(conn);
                }
            }
            WorkerEvent::Frame { conn, frame } => match frame {
                WorkerFrame::Hello { .. } => {
                    tracing::warn!("ignoring a second hello from a worker")
                }
                WorkerFrame::Started { task_id, at } => {
                    if let Some(started) = self.dispatcher.started(conn, task_id, at) {
                        if self.link.is_some() {
                            self.pending_started.push(started);
                        }
                    }
                }
                WorkerFrame::Result { outcome } => {
                    if let Some(outcome) = self.dispatcher.finished(conn, outcome) {
                        self.record(outcome);
                    }
                }
                WorkerFrame::Status { .. } => {
                    tracing::debug!("ignoring a status report from a worker");
                }
            },
            WorkerEvent::Disconnected { conn, reason } => {
                for failure in self.dispatcher.disconnect(conn, &reason) {
                    self.record(failure);
                }
            }
        }
    }

    fn runner_event(&mut self, event: RunnerEvent) {
        let Some(link) = &mut self.multi_user else {
            return;
        };
        match event {
            RunnerEvent::Started(started) => {
                if link.held.contains(&started.task_id) && self.link.is_some() {
                    self.pending_started.push(started);
                }
            }
            RunnerEvent::Finished(outcome) => {
                if link.held.remove(&outcome.task_id) {
                    self.record(outcome);
                }
            }
            RunnerEvent::Children(children) => link.children = children,
        }
    }

    /// A final outcome: kept until acknowledged, sent when connected.
    fn record(&mut self, outcome: TaskOutcome) {
        if let Some(started) = outcome.started_at {
            if let Ok(run) = (outcome.finished_at - started).to_std() {
                self.prefetch.observe(run);
            }
        }
        self.unacked.insert(outcome.task_id, outcome.clone());
        if self.link.is_some() {
            self.pending_results.push(outcome);
        }
    }

    fn window(&self) -> u32 {
        if self.stopping.is_some() {
            return 0;
        }
        if let Some(link) = &self.multi_user {
            return link.max_tasks;
        }
        let planned = self.expected_slots + self.blocks.as_ref().map_or(0, Blocks::planned_slots);
        self.prefetch
            .per_slot()
            .saturating_mul(planned.max(self.dispatcher.slots()))
    }

    fn scale(&mut self) {
        let Some(blocks) = &mut self.blocks else {
            return;
        };
        let load = lattice_scheduler_adapters::strategy::Load {
            queued: self.dispatcher.queue_depth(),
            idle_slots: self.dispatcher.idle_slots(),
        };
        blocks.tick(load, &self.dispatcher.block_load());
    }

    fn grant_credits(&mut self) {
        if self.link.is_none() {
            return;
        }
        let held =
            self.dispatcher.held() + self.multi_user.as_ref().map_or(0, |m| m.held.len() as u32);
        if let Some(credits) = self.credits.top_up(self.window(), held) {
            self.send(AgentFrame::Credit { credits });
        }
    }

    fn schedule_flush(&mut self) {
        let pending = self.pending_results.len().max(self.pending_started.len());
        if pending >= BATCH_MAX {
            self.flush();
        } else if pending > 0 && self.flush_at.is_none() {
            self.flush_at = Some(Instant::now() + BATCH_DELAY);
        }
    }

    fn flush(&mut self) {
        self.flush_at = None;
        if !self.pending_results.is_empty() && !self.pending_started.is_empty() {
            // A task that started and finished since the last flush needs no
            // Started of its own: its result carries the start time, and the
            // service then writes the task once instead of twice.
            let finished: std::collections::HashSet<TaskId> = self
                .pending_results
                .iter()
                .filter(|r| r.started_at.is_some())
                .map(|r| r.task_id)
                .collect();
            self.pending_started
                .retain(|s| !finished.contains(&s.task_id));
        }
        if !self.pending_started.is_empty() {
            let tasks = std::mem::take(&mut self.pending_started);
            self.send(AgentFrame::Started { tasks });
        }
        if !self.pending_results.is_empty() {
            let results = std::mem::take(&mut self.pending_results);
            self.send(AgentFrame::Results { results });
            if !self.reported_idle && self.is_idle() {
                self.send_heartbeat();
            }
        }
    }

    /// Nothing running and nothing waiting here.
    fn is_idle(&self) -> bool {
        self.dispatcher.running() == 0 && self.dispatcher.queue_depth() == 0
    }

    fn send_heartbeat(&mut self) {
        let (blocks, provider_error) = match &self.blocks {
            Some(blocks) => (
                blocks.reports(&self.dispatcher.block_load()),
                blocks.provider_error(),
            ),
            None => (Vec::new(), None),
        };
        let (workers, children) = match &self.multi_user {
            Some(link) => (
                link.children.iter().map(|c| c.workers).sum(),
                link.children.clone(),
            ),
            None => (self.dispatcher.workers(), Vec::new()),
        };
        self.reported_idle = self.is_idle();
        self.send(AgentFrame::Heartbeat {
            provider: self.provider_kind.map(str::to_owned),
            workers,
            idle_slots: self.dispatcher.idle_slots(),
            queue_depth: self.dispatcher.queue_depth(),
            blocks,
            provider_error,
            children,
        });
    }

    fn send(&mut self, frame: AgentFrame) {
        if let Some(link) = &self.link {
            if link.send(frame).is_err() {
                // The connection is going; its Down event follows.
                self.link = None;
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// `slurm`, ... as written in `[provider] type = "..."`.
fn provider_kind(settings: &crate::config::ProviderSettings) -> &'static str {
    use lattice_scheduler_adapters::ProviderConfig as P;
    match &settings.provider {
        P::Local(_) => "local",
        P::Slurm(_) => "slurm",
        P::Pbs(_) => "pbs",
        P::Lsf(_) => "lsf",
        P::Kubernetes(_) => "kubernetes",
    }
}
