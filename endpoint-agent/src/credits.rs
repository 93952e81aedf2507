//! Credit-based flow control on the agent channel.
//!
//! The agent wants `window` tasks in its hands (queued or running, plus the
//! grants the service has not used yet). Grants are cumulative within one
//! connection and start from zero on every new connection, so after a
//! reconnect the agent grants the window minus the tasks it still holds.

use std::time::Duration;

/// Tasks held per worker slot before any task has finished here.
pub(crate) const PREFETCH_INITIAL: u32 = 8;
/// Fewest tasks held per slot: one running and the next one waiting.
const PREFETCH_MIN: u32 = 2;
/// Most tasks held per slot.
const PREFETCH_MAX: u32 = 64;
/// Work held per slot, in expected running time.
const QUEUED_WORK: Duration = Duration::from_millis(50);

/// Tasks held per worker slot (one running, the rest waiting), from how long
/// tasks run here: about [`QUEUED_WORK`] of them. Short tasks then never
/// leave a worker idle for a round trip to the service, and each grant
/// brings many, so the service's per-grant cost is shared; long tasks are
/// not hoarded by one agent while another sits idle.
#[derive(Debug, Default)]
pub(crate) struct Prefetch {
    /// Moving average of run times, in microseconds.
    mean_run_us: Option<f64>,
}

impl Prefetch {
    /// A task ran for `run`.
    pub(crate) fn observe(&mut self, run: Duration) {
        let us = run.as_secs_f64() * 1e6;
        self.mean_run_us = Some(match self.mean_run_us {
            None => us,
            Some(mean) => mean + (us - mean) / 16.0,
        });
    }

    pub(crate) fn per_slot(&self) -> u32 {
        let Some(mean) = self.mean_run_us else {
            return PREFETCH_INITIAL;
        };
        let queued = QUEUED_WORK.as_secs_f64() * 1e6 / mean.max(1.0);
        (queued.ceil() as u32).clamp(PREFETCH_MIN, PREFETCH_MAX)
    }
}

/// Grants not yet used by the service on the current connection.
#[derive(Debug, Default)]
pub(crate) struct Credits {
    outstanding: u32,
}

impl Credits {
    /// A new connection: the service knows of no grant.
    pub(crate) fn reset(&mut self) {
        self.outstanding = 0;
    }

    /// The service sent `count` tasks (duplicates included: they used credit).
    pub(crate) fn received(&mut self, count: u32) {
        if count > self.outstanding {
            tracing::warn!(
                count,
                outstanding = self.outstanding,
                "the service sent more tasks than it was granted"
            );
        }
        self.outstanding = self.outstanding.saturating_sub(count);
    }

    /// The credits to grant now so that held + outstanding reaches `window`,
    /// in grants of at least a quarter of the window: every grant costs the
    /// service a queue read and a store write, so one per finished task
    /// made short tasks pay them one by one. Holding back less than a
    /// quarter never starves the agent, since it still holds or is owed
    /// the other three quarters.
    pub(crate) fn top_up(&mut self, window: u32, held: u32) -> Option<u32> {
        let want = window.saturating_sub(held.saturating_add(self.outstanding));
        if want == 0 || want < window / 4 {
            return None;
        }
        self.outstanding += want;
        Some(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_fill_the_window_and_return_one_per_finished_task() {
        let mut credits = Credits::default();
        // 2 slots x prefetch 2.
        assert_eq!(credits.top_up(4, 0), Some(4));
        assert_eq!(credits.top_up(4, 0), None, "nothing used yet");
        credits.received(3);
        assert_eq!(credits.top_up(4, 3), None, "3 held + 1 outstanding");
        // One task leaves the agent: one credit back.
        assert_eq!(credits.top_up(4, 2), Some(1));
        // Two more finish at once.
        assert_eq!(credits.top_up(4, 0), Some(2));
        // The window grows with more workers.
        assert_eq!(credits.top_up(8, 0), Some(4));
    }

    #[test]
    fn prefetch_follows_how_long_tasks_run() {
        let mut prefetch = Prefetch::default();
        assert_eq!(prefetch.per_slot(), PREFETCH_INITIAL);
        prefetch.observe(Duration::from_micros(300));
        assert_eq!(prefetch.per_slot(), PREFETCH_MAX, "no-op tasks");
        let mut prefetch = Prefetch::default();
        prefetch.observe(Duration::from_millis(10));
        assert_eq!(prefetch.per_slot(), 5, "50 ms of 10 ms tasks");
        for _ in 0..200 {
            prefetch.observe(Duration::from_secs(2));
        }
        assert_eq!(prefetch.per_slot(), PREFETCH_MIN, "long tasks");
        // One short task does not swing it back at once.
        prefetch.observe(Duration::ZERO);
        assert_eq!(prefetch.per_slot(), PREFETCH_MIN);
    }

    #[test]
    fn grants_wait_for_a_quarter_of_the_window() {
        let mut credits = Credits::default();
        assert_eq!(credits.top_up(16, 0), Some(16));
        credits.received(16);
        // 16 held; 3 finish: not worth a grant yet.
        assert_eq!(credits.top_up(16, 13), None);
        // The fourth makes a grant of 4.
        assert_eq!(credits.top_up(16, 12), Some(4));
        // An idle agent with nothing owed always gets its whole window.
        credits.reset();
        assert_eq!(credits.top_up(16, 0), Some(16));
    }

    #[test]
    fn a_new_connection_regrants_window_minus_held() {
        let mut credits = Credits::default();
        credits.top_up(4, 0);
        credits.received(4);
        credits.reset();
        assert_eq!(credits.top_up(4, 3), Some(1));
        // A redelivered duplicate uses credit but is not held: it comes back.
        credits.received(1);
        assert_eq!(credits.top_up(4, 3), Some(1));
        // Over-delivery never underflows.
        credits.received(10);
        assert_eq!(credits.top_up(4, 4), None);
        // Shutting down: window 0 grants nothing.
        assert_eq!(credits.top_up(0, 0), None);
    }
}
