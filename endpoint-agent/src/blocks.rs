//! The agent's worker blocks: a table of the blocks a provider runs, fed by
//! the provider's answers (which arrive as [`BlockEvent`]s, because every
//! provider call runs in its own task) and driven by the strategy on each
//! scaling tick. Nothing here blocks the agent's event loop.
//!
//! Failures are loud: a refused submission or a block the scheduler reports
//! failed is logged with the scheduler's message, kept in the table, and
//! reported on every heartbeat as `provider_error` until a worker of a block
//! connects. (Not merely until a block's job runs: a job whose worker_init
//! fails runs for a moment first, and that must neither clear the error nor
//! reset the failure backoff.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use lattice_protocol::compute::{BlockPhase, BlockReport};
use lattice_scheduler_adapters::strategy::{BlockView, Load, Strategy};
use lattice_scheduler_adapters::{
    BlockSpec, BlockState, JobId, Provider, StrategyConfig, WorkerCommand,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::dispatcher::BlockLoad;

/// Final blocks kept in the table (and reported) after they end.
const KEEP_FINAL: usize = 8;
/// How long shutdown waits for submissions in flight and for cancels.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// What a provider call in its own task came back with.
#[derive(Debug)]
pub(crate) enum BlockEvent {
    Submitted {
        block_id: String,
        result: Result<JobId, String>,
    },
    Status(Result<HashMap<JobId, BlockState>, String>),
    CancelFailed {
        message: String,
    },
}

/// Everything about blocks that does not change while the agent runs.
#[derive(Clone, Debug)]
pub(crate) struct BlockSettings {
    pub(crate) strategy: StrategyConfig,
    pub(crate) worker: WorkerCommand,
    pub(crate) walltime: Duration,
    pub(crate) worker_init: Vec<String>,
}

#[derive(Debug)]
struct Block {
    job_id: Option<JobId>,
    state: BlockState,
    /// Asked to cancel (idle, or shutdown).
    cancelling: bool,
    /// Order of submission, for the report.
    seq: u64,
    /// A worker of this block has connected to the dispatcher.
    connected: bool,
}

pub(crate) struct Blocks {
    provider: Arc<dyn Provider>,
    settings: BlockSettings,
    strategy: Strategy,
    events: mpsc::UnboundedSender<BlockEvent>,
    /// Block ids are `PREFIX-N`; the prefix is random per agent run so that
    /// workers of an earlier run's leftover job are told apart.
    prefix: String,
    next_seq: u64,
    table: BTreeMap<String, Block>,
    polling: bool,
    submitting: u32,
    /// The last block failure, until a block runs again.
    block_error: Option<String>,
    /// The last failure to ask the scheduler for states, until one works.
    status_error: Option<String>,
}

impl Blocks {
    pub(crate) fn new(
        provider: Arc<dyn Provider>,
        settings: BlockSettings,
        worker_capacity: u32,
        events: mpsc::UnboundedSender<BlockEvent>,
    ) -> Self {
        let strategy = Strategy::new(settings.strategy.clone(), worker_capacity);
        Self {
            provider,
            settings,
            strategy,
            events,
            prefix: format!("b{:06x}", rand::random::<u32>() & 0xff_ffff),
            next_seq: 0,
            table: BTreeMap::new(),
            polling: false,
            submitting: 0,
            block_error: None,
            status_error: None,
        }
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.settings.strategy.poll_interval()
    }

    /// Task slots the agent should plan for: those of the blocks it has (or
    /// is starting), and at least one block's worth so that waiting tasks
    /// reach the agent and show the demand that starts the first block.
    pub(crate) fn planned_slots(&self) -> u32 {
        let active = self.active().count() as u32;
        self.strategy
            .slots_per_block()
            .saturating_mul(active.max(1))
    }

    fn active(&self) -> impl Iterator<Item = (&String, &Block)> {
        self.table
            .iter()
            .filter(|(_, b)| !b.cancelling && !b.state.is_final())
    }

    /// A scaling tick: ask the scheduler for states (one call in flight at
    /// a time), then apply the strategy to what is known now.
    pub(crate) fn tick(&mut self, load: Load, per_block: &HashMap<String, BlockLoad>) {
        self.poll();
        self.note_connected(per_block);
        let views: Vec<BlockView> = self
            .active()
            .map(|(id, _)| {
                let l = per_block.get(id).copied().unwrap_or_default();
                BlockView {
                    block_id: id.clone(),
                    workers: l.workers,
                    running_tasks: l.running_tasks,
                }
            })
            .collect();
        let decision = self
            .strategy
            .decide(Instant::now().into_std(), &views, load);
        for _ in 0..decision.submit {
            self.submit();
        }
        if !decision.cancel.is_empty() {
            tracing::info!(blocks = ?decision.cancel, "cancelling idle blocks");
            self.cancel(&decision.cancel);
        }
    }

    /// The first worker of a block connected: the provider works (its
    /// worker_init included), so its last error no longer holds and the
    /// failure backoff starts over.
    fn note_connected(&mut self, per_block: &HashMap<String, BlockLoad>) {
        let mut first = false;
        for (id, block) in self.table.iter_mut() {
            if !block.connected && per_block.get(id).is_some_and(|l| l.workers > 0) {
                block.connected = true;
                first = true;
            }
        }
        if first {
            self.strategy.block_running();
            if self.block_error.take().is_some() {
                tracing::info!("a block's workers connected; clearing the provider error");
            }
        }
    }

    fn poll(&mut self) {
        if self.polling {
            return;
        }
        let jobs: Vec<JobId> = self
            .table
            .values()
            .filter(|b| !b.state.is_final())
            .filter_map(|b| b.job_id.clone())
            .collect();
        if jobs.is_empty() {
            return;
        }
        self.polling = true;
        let provider = self.provider.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let result = provider.status(&jobs).await.map_err(|e| e.to_string());
            let _ = events.send(BlockEvent::Status(result));
        });
    }

    fn submit(&mut self) {
        self.next_seq += 1;
        let block_id = format!("{}-{}", self.prefix, self.next_seq);
        let spec = BlockSpec {
            block_id: block_id.clone(),
            nodes: self.settings.strategy.nodes_per_block,
            workers_per_node: self.settings.strategy.workers_per_node,
            walltime: self.settings.walltime,
            worker: self.settings.worker.clone(),
            worker_init: self.settings.worker_init.clone(),
        };
        tracing::info!(
            block_id,
            provider = self.provider.kind(),
            nodes = spec.nodes,
            workers_per_node = spec.workers_per_node,
            "submitting a block"
        );
        self.table.insert(
            block_id.clone(),
            Block {
                job_id: None,
                state: BlockState::Pending,
                cancelling: false,
                seq: self.next_seq,
                connected: false,
            },
        );
        self.submitting += 1;
        let provider = self.provider.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let result = provider.submit(&spec).await.map_err(|e| e.to_string());
            let _ = events.send(BlockEvent::Submitted { block_id, result });
        });
    }

    fn cancel(&mut self, block_ids: &[String]) {
        let mut jobs = Vec::new();
        for id in block_ids {
            if let Some(block) = self.table.get_mut(id) {
                block.cancelling = true;
                jobs.extend(block.job_id.clone());
            }
        }
        if jobs.is_empty() {
            return;
        }
        let provider = self.provider.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Err(e) = provider.cancel(&jobs).await {
                let _ = events.send(BlockEvent::CancelFailed {
                    message: format!("cancelling jobs {jobs:?}: {e}"),
                });
            }
        });
    }

    pub(crate) fn handle(&mut self, event: BlockEvent) {
        match event {
            BlockEvent::Submitted { block_id, result } => {
                self.submitting = self.submitting.saturating_sub(1);
                let Some(block) = self.table.get_mut(&block_id) else {
                    return;
                };
                match result {
                    Ok(job_id) => {
                        tracing::info!(block_id, job_id, "block submitted");
                        block.job_id = Some(job_id.clone());
                        if block.cancelling {
                            self.cancel(&[block_id]);
                        }
                    }
                    Err(message) => {
                        tracing::error!(
                            block_id,
                            provider = self.provider.kind(),
                            "block submission refused: {message}"
                        );
                        block.state = BlockState::Failed {
                            message: message.clone(),
                        };
                        self.failed(message);
                    }
                }
            }
            BlockEvent::Status(Ok(states)) => {
                self.polling = false;
                self.status_error = None;
                let mut failures = Vec::new();
                for (block_id, block) in self.table.iter_mut() {
                    let Some(state) = block.job_id.as_ref().and_then(|j| states.get(j)) else {
                        continue;
                    };
                    if *state == block.state {
                        continue;
                    }
                    tracing::info!(block_id, job_id = ?block.job_id, from = block.state.name(), to = state.name(), "block state changed");
                    match state {
                        BlockState::Failed { message } if !block.cancelling => {
                            tracing::error!(block_id, job_id = ?block.job_id, "block failed: {message}");
                            failures.push(message.clone());
                        }
                        BlockState::Unknown { message } => {
                            tracing::warn!(block_id, job_id = ?block.job_id, "block state unknown: {message}");
                        }
                        _ => {}
                    }
                    block.state = state.clone();
                }
                for message in failures {
                    self.failed(message);
                }
                self.forget_old();
            }
            BlockEvent::Status(Err(message)) => {
                self.polling = false;
                tracing::warn!(
                    provider = self.provider.kind(),
                    "cannot query block states: {message}"
                );
                self.status_error = Some(format!(
                    "cannot query {} block states: {message}",
                    self.provider.kind()
                ));
            }
            BlockEvent::CancelFailed { message } => {
                tracing::warn!("{message}");
            }
        }
    }

    fn failed(&mut self, message: String) {
        self.strategy.block_failed(Instant::now().into_std());
        self.block_error = Some(message);
        self.forget_old();
    }

    fn forget_old(&mut self) {
        let mut finals: Vec<(u64, String)> = self
            .table
            .iter()
            .filter(|(_, b)| b.state.is_final())
            .map(|(id, b)| (b.seq, id.clone()))
            .collect();
        if finals.len() > KEEP_FINAL {
            finals.sort();
            for (_, id) in &finals[..finals.len() - KEEP_FINAL] {
                self.table.remove(id);
            }
        }
    }

    /// The last failure (block or scheduler query), for the heartbeat.
    pub(crate) fn provider_error(&self) -> Option<String> {
        self.block_error
            .clone()
            .or_else(|| self.status_error.clone())
    }

    pub(crate) fn reports(&self, per_block: &HashMap<String, BlockLoad>) -> Vec<BlockReport> {
        let mut blocks: Vec<(&String, &Block)> = self.table.iter().collect();
        blocks.sort_by_key(|(_, b)| b.seq);
        blocks
            .into_iter()
            .map(|(id, b)| BlockReport {
                id: id.clone(),
                job_id: b.job_id.clone(),
                state: match &b.state {
                    BlockState::Pending => BlockPhase::Pending,
                    BlockState::Running => BlockPhase::Running,
                    BlockState::Completed => BlockPhase::Completed,
                    BlockState::Failed { .. } => BlockPhase::Failed,
                    BlockState::Cancelled => BlockPhase::Cancelled,
                    BlockState::Unknown { .. } => BlockPhase::Unknown,
                },
                message: b.state.message().map(str::to_owned),
                nodes: self.settings.strategy.nodes_per_block,
                workers: per_block.get(id).map_or(0, |l| l.workers),
            })
            .collect()
    }

    /// Agent shutdown: waits for submissions in flight, then cancels every
    /// block that is not final.
    pub(crate) async fn shutdown(mut self, mut events: mpsc::UnboundedReceiver<BlockEvent>) {
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while self.submitting > 0 {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(event)) => self.handle(event),
                _ => break,
            }
        }
        let jobs: Vec<JobId> = self
            .table
            .values()
            .filter(|b| !b.state.is_final())
            .filter_map(|b| b.job_id.clone())
            .collect();
        if jobs.is_empty() {
            return;
        }
        tracing::info!(jobs = ?jobs, provider = self.provider.kind(), "cancelling every block");
        match tokio::time::timeout_at(deadline, self.provider.cancel(&jobs)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(jobs = ?jobs, "cannot cancel blocks at shutdown: {e}"),
            Err(_) => tracing::error!(jobs = ?jobs, "cancelling blocks at shutdown timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_scheduler_adapters::local::{LocalConfig, LocalProvider};

    fn blocks(dir: &std::path::Path) -> Blocks {
        let (events, _) = mpsc::unbounded_channel();
        Blocks::new(
            Arc::new(LocalProvider::new(LocalConfig::default(), dir)),
            BlockSettings {
                strategy: StrategyConfig::default(),
                worker: WorkerCommand {
                    program: "/bin/false".into(),
                    dispatcher: "127.0.0.1:9".into(),
                    capacity: 1,
                    scratch_dir: None,
                },
                walltime: Duration::from_secs(60),
                worker_init: Vec::new(),
            },
            1,
            events,
        )
    }

    fn with_job(blocks: &mut Blocks, id: &str, job: &str) {
        blocks.next_seq += 1;
        blocks.table.insert(
            id.to_owned(),
            Block {
                job_id: Some(job.to_owned()),
                state: BlockState::Pending,
                cancelling: false,
                seq: blocks.next_seq,
                connected: false,
            },
        );
    }

    /// A batch job whose worker_init fails is RUNNING for a moment before it
    /// fails: that must not clear the provider error (it flickered off the
    /// endpoint and its tasks) nor reset the failure backoff (it stayed at
    /// 10 s). A worker that connects does both.
    #[tokio::test]
    async fn the_provider_error_holds_until_a_worker_connects() {
        let dir = tempfile::tempdir().unwrap();
        let mut blocks = blocks(dir.path());
        with_job(&mut blocks, "b-1", "1");
        blocks.handle(BlockEvent::Status(Ok(HashMap::from([(
            "1".to_owned(),
            BlockState::Failed {
                message: "slurm job FAILED (NonZeroExitCode): worker_init line 1 ...".into(),
            },
        )]))));
        assert!(blocks
            .provider_error()
            .unwrap()
            .contains("worker_init line 1"));
        let held = |b: &Blocks| b.strategy.held_until(Instant::now().into_std()).is_some();
        assert!(held(&blocks), "submissions wait after a failure");

        with_job(&mut blocks, "b-2", "2");
        blocks.handle(BlockEvent::Status(Ok(HashMap::from([(
            "2".to_owned(),
            BlockState::Running,
        )]))));
        assert!(
            blocks.provider_error().is_some(),
            "a running job whose workers have not connected proves nothing"
        );
        assert!(held(&blocks));

        let load = Load {
            queued: 0,
            idle_slots: 1,
        };
        blocks.tick(load, &HashMap::new());
        assert!(blocks.provider_error().is_some());
        let connected = HashMap::from([(
            "b-2".to_owned(),
            BlockLoad {
                workers: 1,
                running_tasks: 0,
            },
        )]);
        blocks.tick(load, &connected);
        assert_eq!(blocks.provider_error(), None);
        assert!(!held(&blocks), "the backoff starts over");
    }
}
