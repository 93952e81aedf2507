//! When to add and remove blocks (Parsl's "simple" strategy): a pure
//! function of the blocks, the dispatcher's load and a clock that the caller
//! passes in, so tests drive it with a simulated clock.
//!
//! - At the first decision: `init_blocks`; always at least `min_blocks`.
//! - Scale out while tasks wait and no worker slot is free: enough blocks for
//!   the waiting tasks that blocks already pending will not take, never more
//!   than `max_blocks` in all.
//! - Scale in: a block with no running task while nothing waits is idle;
//!   idle longer than `max_idletime` it is cancelled, longest idle first,
//!   down to `min_blocks`.
//! - After a block fails, no new block is submitted for a back-off period
//!   (doubling from [`FAILURE_BACKOFF`] to [`FAILURE_BACKOFF_MAX`]) so a
//!   wrong account does not become a submission storm.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::StrategyConfig;

pub const FAILURE_BACKOFF: Duration = Duration::from_secs(10);
pub const FAILURE_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// One block that is not final (submitting, pending or running).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockView {
    pub block_id: String,
    /// Workers of this block connected to the dispatcher.
    pub workers: u32,
    /// Tasks running on this block's workers.
    pub running_tasks: u32,
}

/// The dispatcher's side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Tasks held by the agent that no worker has taken yet.
    pub queued: u32,
    /// Free task slots of connected workers.
    pub idle_slots: u32,
}

/// What to do now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub submit: u32,
    pub cancel: Vec<String>,
}

/// The strategy's memory: when each block became idle, failure back-off.
#[derive(Debug)]
pub struct Strategy {
    config: StrategyConfig,
    /// Task slots one block brings (nodes x workers x capacity).
    slots_per_block: u32,
    started: bool,
    idle_since: HashMap<String, Instant>,
    hold_until: Option<Instant>,
    backoff: Duration,
}

impl Strategy {
    pub fn new(config: StrategyConfig, worker_capacity: u32) -> Self {
        let slots_per_block = config
            .nodes_per_block
            .saturating_mul(config.workers_per_node)
            .saturating_mul(worker_capacity)
            .max(1);
        Self {
            config,
            slots_per_block,
            started: false,
            idle_since: HashMap::new(),
            hold_until: None,
            backoff: FAILURE_BACKOFF,
        }
    }

    pub fn config(&self) -> &StrategyConfig {
        &self.config
    }

    pub fn slots_per_block(&self) -> u32 {
        self.slots_per_block
    }

    /// A block failed: hold new submissions for a while (longer each time).
    pub fn block_failed(&mut self, now: Instant) {
        self.hold_until = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(FAILURE_BACKOFF_MAX);
    }

    /// A block reached running: the scheduler works again.
    pub fn block_running(&mut self) {
        self.hold_until = None;
        self.backoff = FAILURE_BACKOFF;
    }

    /// Submissions are held (after a failure) until this time.
    pub fn held_until(&self, now: Instant) -> Option<Instant> {
        self.hold_until.filter(|t| *t > now)
    }

    pub fn decide(&mut self, now: Instant, blocks: &[BlockView], load: Load) -> Decision {
        let active = blocks.len() as u32;
        let max = self.config.max_blocks;
        self.track_idle(now, blocks, load);

        let mut want = if self.started {
            0
        } else {
            self.started = true;
            self.config.init_blocks.saturating_sub(active)
        };
        want = want.max(self.config.min_blocks.saturating_sub(active));
        if load.queued > 0 && load.idle_slots == 0 {
            // Slots of blocks whose workers have not connected yet.
            let coming: u32 =
                blocks.iter().filter(|b| b.workers == 0).count() as u32 * self.slots_per_block;
            let uncovered = load.queued.saturating_sub(coming);
            want = want.max(uncovered.div_ceil(self.slots_per_block));
        }
        let mut submit = want.min(max.saturating_sub(active));
        if submit > 0 && self.held_until(now).is_some() {
            submit = 0;
        }
        if submit > 0 {
            return Decision {
                submit,
                cancel: Vec::new(),
            };
        }

        let removable = active.saturating_sub(self.config.min_blocks) as usize;
        let max_idle = self.config.max_idletime();
        let mut idle: Vec<(&String, Instant)> = blocks
            .iter()
            .filter_map(|b| {
                let since = *self.idle_since.get(&b.block_id)?;
                (now.saturating_duration_since(since) >= max_idle).then_some((&b.block_id, since))
            })
            .collect();
        idle.sort_by_key(|(id, since)| (*since, (*id).clone()));
        Decision {
            submit: 0,
            cancel: idle
                .into_iter()
                .take(removable)
                .map(|(id, _)| id.clone())
                .collect(),
        }
    }

    fn track_idle(&mut self, now: Instant, blocks: &[BlockView], load: Load) {
        self.idle_since
            .retain(|id, _| blocks.iter().any(|b| &b.block_id == id));
        for block in blocks {
            if block.running_tasks > 0 || load.queued > 0 {
                self.idle_since.remove(&block.block_id);
            } else {
                self.idle_since.entry(block.block_id.clone()).or_insert(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(min: u32, max: u32, init: u32) -> StrategyConfig {
        StrategyConfig {
            init_blocks: init,
            min_blocks: min,
            max_blocks: max,
            nodes_per_block: 1,
            workers_per_node: 2,
            max_idletime_secs: 60,
            poll_interval_secs: 5,
        }
    }

    fn block(id: &str, workers: u32, running_tasks: u32) -> BlockView {
        BlockView {
            block_id: id.into(),
            workers,
            running_tasks,
        }
    }

    fn load(queued: u32, idle_slots: u32) -> Load {
        Load { queued, idle_slots }
    }

    fn submit(n: u32) -> Decision {
        Decision {
            submit: n,
            cancel: vec![],
        }
    }

    fn cancel(ids: &[&str]) -> Decision {
        Decision {
            submit: 0,
            cancel: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn starts_with_init_blocks_and_keeps_min_blocks() {
        let t0 = Instant::now();
        let mut s = Strategy::new(config(1, 4, 2), 1);
        assert_eq!(s.decide(t0, &[], load(0, 0)), submit(2));
        // init is a start-up thing only; min is forever.
        assert_eq!(s.decide(t0, &[], load(0, 0)), submit(1));
        assert_eq!(s.decide(t0, &[block("a", 0, 0)], load(0, 0)), submit(0));
    }

    #[test]
    fn scales_out_for_uncovered_waiting_tasks_up_to_max() {
        let t0 = Instant::now();
        let mut s = Strategy::new(config(0, 3, 0), 1);
        assert_eq!(s.slots_per_block(), 2);
        assert_eq!(
            s.decide(t0, &[], load(0, 0)),
            submit(0),
            "no work, no blocks"
        );
        assert_eq!(
            s.decide(t0, &[], load(3, 0)),
            submit(2),
            "3 tasks / 2 slots"
        );
        // Both pending blocks cover 4 tasks: nothing more for 3 or 4 waiting.
        let pending = [block("a", 0, 0), block("b", 0, 0)];
        assert_eq!(s.decide(t0, &pending, load(4, 0)), submit(0));
        assert_eq!(s.decide(t0, &pending, load(5, 0)), submit(1));
        // Never beyond max_blocks.
        assert_eq!(s.decide(t0, &pending, load(100, 0)), submit(1));
        let three = [block("a", 2, 2), block("b", 2, 2), block("c", 2, 2)];
        assert_eq!(s.decide(t0, &three, load(100, 0)), submit(0));
        // Free slots take the queue: no scale-out.
        assert_eq!(s.decide(t0, &[block("a", 2, 1)], load(5, 1)), submit(0));
    }

    #[test]
    fn idle_blocks_go_after_max_idletime_down_to_min() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut s = Strategy::new(config(1, 3, 0), 1);
        let busy = [block("a", 2, 2), block("b", 2, 1), block("c", 2, 1)];
        assert_eq!(s.decide(at(0), &busy, load(0, 0)), submit(0));
        // b goes idle at 10 s, a and c at 20 s.
        let views = [block("a", 2, 2), block("b", 2, 0), block("c", 2, 1)];
        assert_eq!(s.decide(at(10), &views, load(0, 2)), submit(0));
        let idle = [block("a", 2, 0), block("b", 2, 0), block("c", 2, 0)];
        assert_eq!(s.decide(at(20), &idle, load(0, 6)), submit(0));
        assert_eq!(
            s.decide(at(69), &idle, load(0, 6)),
            submit(0),
            "b idle 59 s"
        );
        assert_eq!(s.decide(at(70), &idle, load(0, 6)), cancel(&["b"]));
        // Longest idle first, never below min_blocks (1).
        assert_eq!(s.decide(at(200), &idle, load(0, 6)), cancel(&["b", "a"]));
        let left = [block("c", 2, 0)];
        assert_eq!(s.decide(at(300), &left, load(0, 2)), submit(0));
    }

    #[test]
    fn work_resets_idleness() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut s = Strategy::new(config(0, 1, 0), 1);
        let idle = [block("a", 2, 0)];
        s.decide(at(0), &idle, load(0, 2));
        // A task arrives and runs at 50 s: idle clock restarts when it ends.
        s.decide(at(50), &[block("a", 2, 1)], load(0, 1));
        assert_eq!(s.decide(at(70), &idle, load(0, 2)), submit(0));
        assert_eq!(s.decide(at(129), &idle, load(0, 2)), submit(0));
        assert_eq!(s.decide(at(130), &idle, load(0, 2)), cancel(&["a"]));
        // Waiting tasks also count as work for a pending block.
        let mut s = Strategy::new(config(0, 1, 0), 1);
        s.decide(at(0), &[block("p", 0, 0)], load(1, 0));
        assert_eq!(
            s.decide(at(500), &[block("p", 0, 0)], load(1, 0)),
            submit(0)
        );
    }

    #[test]
    fn failures_hold_submissions_with_growing_backoff() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut s = Strategy::new(config(0, 2, 0), 1);
        assert_eq!(s.decide(at(0), &[], load(1, 0)), submit(1));
        s.block_failed(at(1));
        assert_eq!(s.decide(at(5), &[], load(1, 0)), submit(0));
        assert_eq!(s.decide(at(11), &[], load(1, 0)), submit(1));
        s.block_failed(at(12));
        assert_eq!(s.decide(at(25), &[], load(1, 0)), submit(0), "20 s now");
        assert_eq!(s.decide(at(32), &[], load(1, 0)), submit(1));
        s.block_failed(at(33));
        s.block_running();
        assert_eq!(
            s.decide(at(34), &[], load(1, 0)),
            submit(1),
            "healthy again"
        );
    }
}
