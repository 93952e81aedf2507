//! The embedded broker: queues persisted in the store's `queue_messages`
//! table, leased to one consumer at a time. For a single service process
//! (leases are cleared at startup, since a restarted service holds none).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lattice_protocol::{EndpointId, TaskId};
use tokio::sync::{mpsc, watch};

use super::{Broker, BrokerError, Delivery, Settle, Subscription};
use crate::store::SharedStore;

/// How often a consumer looks for messages even without a wake-up (another
/// process may have published).
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Most messages leased per query.
const LEASE_BATCH: u32 = 256;

pub struct EmbeddedBroker {
    store: SharedStore,
    /// Bumped on every publish to an endpoint, to wake its consumers.
    wakeups: Mutex<HashMap<EndpointId, watch::Sender<u64>>>,
}

impl EmbeddedBroker {
    /// Opens the broker and returns leases a previous process left behind.
    pub async fn open(store: SharedStore) -> Result<Arc<Self>, BrokerError> {
        let released = store.queue_release_consumer(None).await?;
        if released > 0 {
            tracing::info!(
                released,
                "returned queue messages leased before the restart"
            );
        }
        Ok(Arc::new(Self {
            store,
            wakeups: Mutex::new(HashMap::new()),
        }))
    }

    fn wakeup(&self, endpoint: EndpointId) -> watch::Sender<u64> {
        self.wakeups
            .lock()
            .expect("wakeups lock")
            .entry(endpoint)
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }
}

#[async_trait]
impl Broker for EmbeddedBroker {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn publish(&self, endpoint: EndpointId, tasks: &[TaskId]) -> Result<(), BrokerError> {
        self.store.queue_push(endpoint, tasks, Utc::now()).await?;
        self.wakeup(endpoint)
            .send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    async fn subscribe(
        &self,
        endpoint: EndpointId,
        prefetch: u16,
    ) -> Result<Subscription, BrokerError> {
        let prefetch = usize::from(prefetch.max(1));
        let (delivery_tx, deliveries) = mpsc::channel(prefetch);
        let (settle, settle_rx) = mpsc::unbounded_channel();
        let consumer = Consumer {
            store: self.store.clone(),
            endpoint,
            name: format!("embedded-{}", uuid::Uuid::new_v4()),
            prefetch,
            wakeup: self.wakeup(endpoint).subscribe(),
            deliveries: delivery_tx,
            settles: settle_rx,
            in_flight: HashMap::new(),
        };
        let task = tokio::spawn(consumer.run());
        Ok(Subscription {
            deliveries,
            settle,
            _guard: Some(task),
        })
    }
}

struct Consumer {
    store: SharedStore,
    endpoint: EndpointId,
    name: String,
    prefetch: usize,
    wakeup: watch::Receiver<u64>,
    deliveries: mpsc::Sender<Delivery>,
    settles: mpsc::UnboundedReceiver<Settle>,
    /// Delivery tag (the queue row's seq) of every unsettled delivery.
    in_flight: HashMap<u64, ()>,
}

impl Consumer {
    async fn run(mut self) {
        if let Err(e) = self.consume().await {
            tracing::error!(endpoint_id = %self.endpoint, error = %e, "embedded queue consumer failed");
        }
        // Settles sent just before the subscriber left still count.
        if let Err(e) = self.drain_settles().await {
            tracing::error!(endpoint_id = %self.endpoint, error = %e, "settling queue messages failed");
        }
        // Whatever is unsettled goes back to the queue.
        if let Err(e) = self.store.queue_release_consumer(Some(&self.name)).await {
            tracing::error!(endpoint_id = %self.endpoint, error = %e, "returning leased queue messages failed");
        }
    }

    async fn consume(&mut self) -> Result<(), BrokerError> {
        loop {
            let room = self.prefetch.saturating_sub(self.in_flight.len());
            let mut leased_any = false;
            if room > 0 {
                let leased = self
                    .store
                    .queue_lease(self.endpoint, &self.name, (room as u32).min(LEASE_BATCH))
                    .await?;
                leased_any = !leased.is_empty();
                for message in leased {
                    let tag = message.seq as u64;
                    self.in_flight.insert(tag, ());
                    let delivery = Delivery {
                        task_id: message.task_id,
                        tag,
                        redelivered: message.deliveries > 1,
                    };
                    // Capacity equals prefetch, so this never waits for room.
                    if self.deliveries.send(delivery).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if leased_any && self.in_flight.len() < self.prefetch {
                // More may be waiting; settle what arrived and lease again.
                if !self.drain_settles().await? {
                    return Ok(());
                }
                continue;
            }
            tokio::select! {
                settle = self.settles.recv() => {
                    let Some(settle) = settle else { return Ok(()) };
                    if !self.apply(vec![settle]).await? {
                        return Ok(());
                    }
                }
                changed = self.wakeup.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = self.deliveries.closed() => return Ok(()),
            }
        }
    }

    /// Applies every settle already queued; false once the subscriber is gone.
    async fn drain_settles(&mut self) -> Result<bool, BrokerError> {
        let mut batch = Vec::new();
        loop {
            match self.settles.try_recv() {
                Ok(s) => batch.push(s),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.apply(batch).await?;
                    return Ok(false);
                }
            }
        }
        self.apply(batch).await
    }

    async fn apply(&mut self, mut batch: Vec<Settle>) -> Result<bool, BrokerError> {
        while let Ok(s) = self.settles.try_recv() {
            batch.push(s);
        }
        let (mut acks, mut requeues, mut dead) = (Vec::new(), Vec::new(), Vec::new());
        for settle in batch {
            let (tag, list) = match settle {
                Settle::Ack(tag) => (tag, &mut acks),
                Settle::Requeue(tag) => (tag, &mut requeues),
                Settle::DeadLetter(tag) => (tag, &mut dead),
            };
            if self.in_flight.remove(&tag).is_some() {
                list.push(tag as i64);
            }
        }
        if !acks.is_empty() {
            self.store.queue_ack(&acks).await?;
        }
        if !requeues.is_empty() {
            self.store.queue_release(&requeues).await?;
        }
        if !dead.is_empty() {
            self.store.queue_dead_letter(&dead, Utc::now()).await?;
        }
        Ok(!self.deliveries.is_closed())
    }
}
