//! The timers domain: timers that start a transfer, a task batch or a flow
//! run on a schedule, acting as their owner ([`api`]: create, list, show,
//! rename, pause, resume, delete, and the record of every tick), the pure
//! schedule rules ([`schedule`]), and the driver that ticks them and
//! follows what each tick started ([`driver`]).
//!
//! It owns when a timer ticks and who may see and change it (its owner
//! and the owner's linked identities; anyone else gets 404). It must not
//! start work itself: a tick goes through the flows domain's built-in
//! `transfer` and `compute` action providers, or starts a flow run, as the
//! owner with only the scope that work needs, so every permission check
//! of transfers, compute and flows applies at every tick. It knows no
//! HTTP status codes (routes map a [`TimerError`] through `error.rs`).
//!
//! **Exactly once.** A tick is claimed by a compare-and-set on the timer's
//! version that also writes the tick's run row, so of several replicas one
//! records it; what the tick starts carries the request id
//! `timer-<id>-<seq>`, which the action providers and flow runs honour
//! (one action or run per request id), so a tick retried after a crash
//! starts nothing twice. A tick recorded but not started (the replica died
//! in between) is picked up by any replica once its `next_check_at` passes.

pub mod api;
pub(crate) mod driver;
mod error;
pub(crate) mod schedule;

pub use error::{TimerError, TimerResult};

use tokio::sync::Notify;

/// What the requests and the driver of one replica share.
#[derive(Default)]
pub struct TimerHub {
    /// Wakes the driver: a timer was created or resumed here.
    pub(crate) wake: Notify,
}
