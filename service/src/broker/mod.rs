//! One durable task queue per endpoint, behind [`Broker`], with an embedded
//! implementation (persisted in the store; the default) and a RabbitMQ one.
//!
//! A message is a task id: the task itself lives in the store. Consumption is
//! at-least-once: a delivery stays unacknowledged until the relay has recorded
//! the task's final state (or decided to drop it); a consumer that goes away
//! returns its unacknowledged deliveries to the queue.
//!
//! A [`Subscription`] runs in its own task and talks through channels, so the
//! relay can `select!` on deliveries without cancellation hazards.

pub(crate) mod embedded;
pub(crate) mod rabbitmq;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use lattice_protocol::{EndpointId, TaskId};
use tokio::sync::mpsc;

/// Errors of a broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("queue store error: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// One message handed to a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub task_id: TaskId,
    /// Identifies this delivery for [`Settle`].
    pub tag: u64,
    /// True if the broker knows it delivered this message before.
    pub redelivered: bool,
}

/// What to do with a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Done with it: remove from the queue.
    Ack(u64),
    /// Give it back for another consumer. Both brokers implement it and
    /// the contract suite checks it; the relay does not requeue today.
    #[cfg_attr(not(test), allow(dead_code))]
    Requeue(u64),
    /// It exceeded its retries: move it to the dead-letter queue.
    DeadLetter(u64),
}

/// A live consumer of one endpoint's queue. Dropping it returns every
/// unsettled delivery to the queue.
pub(crate) struct Subscription {
    pub deliveries: mpsc::Receiver<Delivery>,
    pub settle: mpsc::UnboundedSender<Settle>,
    pub(crate) _guard: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The consumer task notices the closed channels, returns its
        // unsettled deliveries and exits; nothing to abort here.
    }
}

#[async_trait]
pub(crate) trait Broker: Send + Sync + 'static {
    /// Durably enqueues tasks for an endpoint; returns once they are safe.
    async fn publish(&self, endpoint: EndpointId, tasks: &[TaskId]) -> Result<(), BrokerError>;
    /// Starts consuming an endpoint's queue with at most `prefetch`
    /// unsettled deliveries.
    async fn subscribe(
        &self,
        endpoint: EndpointId,
        prefetch: u16,
    ) -> Result<Subscription, BrokerError>;
}

pub(crate) type SharedBroker = Arc<dyn Broker>;
