//! The embedded broker: messages persisted in the store's `queue_messages`
//! table, leased in memory. For a single service process.
//!
//! Why leases live in memory: a restarted service holds no lease, so they
//! were cleared at every start anyway, and keeping them in the store cost a
//! write per dispatch. The store still has every message until it is acked
//! (deleted) or dead-lettered, so nothing published is lost by a crash: at
//! the next start each endpoint's queue is read back from the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use lattice_protocol::{EndpointId, TaskId};
use tokio::sync::{mpsc, watch};

use super::{Broker, BrokerError, Delivery, Settle, Subscription};
use crate::store::SharedStore;

pub(crate) struct EmbeddedBroker {
    store: SharedStore,
    queues: Mutex<HashMap<EndpointId, Arc<Queue>>>,
}

/// One endpoint's queue in memory.
struct Queue {
    /// Messages not leased, by sequence number. The async mutex also orders
    /// the first load from the store before any publish or lease.
    ready: tokio::sync::Mutex<Ready>,
    /// Bumped whenever messages become ready, to wake the consumers.
    wakeup: watch::Sender<u64>,
}

#[derive(Default)]
struct Ready {
    loaded: bool,
    messages: BTreeMap<i64, Message>,
}

#[derive(Clone, Copy)]
struct Message {
    task_id: TaskId,
    deliveries: u32,
}

impl Queue {
    /// The ready messages, read from the store on first use.
    async fn lock(
        &self,
        store: &SharedStore,
        endpoint: EndpointId,
    ) -> Result<tokio::sync::MutexGuard<'_, Ready>, BrokerError> {
        let mut ready = self.ready.lock().await;
        if !ready.loaded {
            for m in store.queue_pending(endpoint).await? {
                ready.messages.insert(
                    m.seq,
                    Message {
                        task_id: m.task_id,
                        deliveries: m.deliveries,
                    },
                );
            }
            ready.loaded = true;
        }
        Ok(ready)
    }

    fn wake(&self) {
        self.wakeup.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl EmbeddedBroker {
    /// Opens the broker, clearing leases an earlier version left in the store.
    pub(crate) async fn open(store: SharedStore) -> Result<Arc<Self>, BrokerError> {
        let released = store.queue_clear_leases().await?;
        if released > 0 {
            tracing::info!(
                released,
                "returned queue messages leased before the restart"
            );
        }
        Ok(Arc::new(Self {
            store,
            queues: Mutex::new(HashMap::new()),
        }))
    }

    fn queue(&self, endpoint: EndpointId) -> Arc<Queue> {
        self.queues
            .lock()
            .expect("queues lock")
            .entry(endpoint)
            .or_insert_with(|| {
                Arc::new(Queue {
                    ready: tokio::sync::Mutex::new(Ready::default()),
                    wakeup: watch::channel(0).0,
                })
            })
            .clone()
    }
}

#[async_trait]
impl Broker for EmbeddedBroker {
    async fn publish(&self, endpoint: EndpointId, tasks: &[TaskId]) -> Result<(), BrokerError> {
        let queue = self.queue(endpoint);
        {
            // Held across the insert: a first load cannot see these rows
            // and then get them pushed a second time.
            let mut ready = queue.lock(&self.store, endpoint).await?;
            for m in self.store.queue_push(endpoint, tasks, Utc::now()).await? {
                ready.messages.insert(
                    m.seq,
                    Message {
                        task_id: m.task_id,
                        deliveries: m.deliveries,
                    },
                );
            }
        }
        queue.wake();
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
        let queue = self.queue(endpoint);
        let consumer = Consumer {
            store: self.store.clone(),
            endpoint,
            prefetch,
            wakeup: queue.wakeup.subscribe(),
            queue,
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
    prefetch: usize,
    queue: Arc<Queue>,
    wakeup: watch::Receiver<u64>,
    deliveries: mpsc::Sender<Delivery>,
    settles: mpsc::UnboundedReceiver<Settle>,
    /// Every unsettled delivery, by its tag (the message's sequence number).
    in_flight: HashMap<u64, Message>,
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
        if !self.in_flight.is_empty() {
            let unsettled: Vec<(i64, Message)> = self
                .in_flight
                .drain()
                .map(|(tag, m)| (tag as i64, m))
                .collect();
            self.queue.ready.lock().await.messages.extend(unsettled);
            self.queue.wake();
        }
    }

    async fn consume(&mut self) -> Result<(), BrokerError> {
        loop {
            let room = self.prefetch.saturating_sub(self.in_flight.len());
            if room > 0 {
                let leased: Vec<(i64, Message)> = {
                    let mut ready = self.queue.lock(&self.store, self.endpoint).await?;
                    let mut leased = Vec::with_capacity(room.min(ready.messages.len()));
                    while leased.len() < room {
                        let Some((seq, mut message)) = ready.messages.pop_first() else {
                            break;
                        };
                        message.deliveries += 1;
                        leased.push((seq, message));
                    }
                    leased
                };
                for (seq, message) in leased {
                    let tag = seq as u64;
                    self.in_flight.insert(tag, message);
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
            match settle {
                Settle::Ack(tag) => {
                    if self.in_flight.remove(&tag).is_some() {
                        acks.push(tag as i64);
                    }
                }
                Settle::Requeue(tag) => {
                    if let Some(message) = self.in_flight.remove(&tag) {
                        requeues.push((tag as i64, message));
                    }
                }
                Settle::DeadLetter(tag) => {
                    if self.in_flight.remove(&tag).is_some() {
                        dead.push(tag as i64);
                    }
                }
            }
        }
        if !acks.is_empty() {
            self.store.queue_ack(&acks).await?;
        }
        if !requeues.is_empty() {
            self.queue.ready.lock().await.messages.extend(requeues);
            self.queue.wake();
        }
        if !dead.is_empty() {
            self.store.queue_dead_letter(&dead, Utc::now()).await?;
        }
        Ok(!self.deliveries.is_closed())
    }
}
