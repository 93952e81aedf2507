//! Credit-based flow control on the agent channel.
//!
//! The agent wants `window` tasks in its hands (queued or running, plus the
//! grants the service has not used yet). Grants are cumulative within one
//! connection and start from zero on every new connection, so after a
//! reconnect the agent grants the window minus the tasks it still holds.

/// Tasks held per worker slot: one running, the rest waiting, so that short
/// tasks do not leave workers idle for a round trip to the service.
pub(crate) const PREFETCH: u32 = 8;

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

    /// The credits to grant now so that held + outstanding reaches `window`.
    pub(crate) fn top_up(&mut self, window: u32, held: u32) -> Option<u32> {
        let want = window.saturating_sub(held.saturating_add(self.outstanding));
        if want == 0 {
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
