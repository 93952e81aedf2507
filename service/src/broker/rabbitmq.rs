//! The RabbitMQ broker (`--amqp-url`), over AMQP 0.9.1 with `lapin`.
//!
//! What it owns, and nothing else touches:
//! - **Queue naming**: one durable queue per endpoint, `lattice.endpoint.<endpoint uuid>`
//!   ([`endpoint_queue`]), declared idempotently (same arguments every time) on the first
//!   publish or subscribe for that endpoint in a connection.
//! - **Durability**: queues and exchanges are durable, messages persistent
//!   (`delivery_mode` 2). A message's body is the task id **as text** (the hyphenated
//!   UUID, 36 ASCII bytes, `content_type` `text/plain`), so queues are readable in the
//!   management UI. A body that is not a task id is dead-lettered, never handed out.
//! - **Publisher confirms**: publishing goes through one channel in confirm mode;
//!   [`Broker::publish`] returns only once RabbitMQ has confirmed every message of the
//!   call (persisted, for a durable queue). Messages are `mandatory`: one that could not
//!   be routed (its queue was deleted behind our back) is re-declared and re-published
//!   once, otherwise `publish` fails.
//! - **Acks**: every subscription has its own channel with `basic.qos(prefetch)` and a
//!   manual-ack consumer. [`Settle::Ack`] is `basic.ack`, [`Settle::Requeue`] is
//!   `basic.nack(requeue)`, [`Settle::DeadLetter`] is `basic.reject` without requeue.
//!   Settles for unknown (already settled) tags are ignored: RabbitMQ would close the
//!   channel over them. When the subscriber drops its [`Subscription`], the settles it
//!   already sent are applied and the channel is closed, which makes RabbitMQ requeue
//!   every unacknowledged delivery (they come back with `redelivered` set).
//! - **Dead-lettering**: every endpoint queue has `x-dead-letter-exchange` =
//!   [`DEAD_LETTER_EXCHANGE`] (`lattice.dlx`, a durable **fanout** exchange), bound once to
//!   the durable queue [`DEAD_LETTER_QUEUE`] (`lattice.dead-letter`). Fanout rather than
//!   direct so that no per-endpoint binding exists to outlive a deleted endpoint queue;
//!   a dead letter keeps its routing key (the endpoint queue's name) and RabbitMQ's
//!   `x-death` header says where it came from and why. (Changing the exchange's type
//!   later means deleting it first: RabbitMQ refuses a re-declaration with another type.)
//!
//! What it must not do: keep any task state (the store owns tasks; a message is only a
//! pointer), acknowledge anything the relay did not settle, purge or delete queues, or
//! declare a queue with other arguments (RabbitMQ refuses a re-declaration with
//! different arguments, with `PRECONDITION_FAILED`).
//!
//! Connection loss: a `publish` or `subscribe` in flight fails with
//! [`BrokerError::Unavailable`] and the cause; live subscriptions end (their `deliveries`
//! channel closes, unacked messages are requeued by RabbitMQ) and must be re-subscribed
//! by their owner. The next `publish` or `subscribe` reconnects lazily (and re-opens
//! the publishing channel if only that channel was closed), so the service need not
//! restart once RabbitMQ is back.

use std::collections::HashSet;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use lattice_protocol::{EndpointId, TaskId};
use tokio::sync::{mpsc, Mutex};

use super::{Broker, BrokerError, Delivery, Settle, Subscription};

/// The exchange endpoint queues dead-letter to.
pub(crate) const DEAD_LETTER_EXCHANGE: &str = "lattice.dlx";
/// Where dead letters of every endpoint queue end up.
pub(crate) const DEAD_LETTER_QUEUE: &str = "lattice.dead-letter";

/// The queue of one endpoint.
pub(crate) fn endpoint_queue(endpoint: EndpointId) -> String {
    format!("lattice.endpoint.{}", endpoint.0.hyphenated())
}

/// How long (re)connecting may take before `publish` or `subscribe` fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// AMQP `delivery_mode` of a persistent message.
const PERSISTENT: u8 = 2;

fn unavailable(what: &str, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("rabbitmq: {what}: {e}"))
}

/// One open connection and its publishing channel (in confirm mode).
struct Link {
    connection: Arc<Connection>,
    publisher: Channel,
}

pub(crate) struct RabbitBroker {
    url: String,
    /// The current connection; replaced when found closed.
    link: Mutex<Option<Arc<Link>>>,
    /// Endpoints whose queue was declared on the current connection.
    declared: StdMutex<HashSet<EndpointId>>,
}

/// For `amqps://`: the system's store (lapin's own) plus the process's
/// extra CA file, so a broker with a site-CA certificate is trusted as the
/// rest of Lattice trusts it.
async fn amqps_trust() -> lapin::tcp::OwnedTLSConfig {
    let ca_file = lattice_tls::process_trust()
        .ok()
        .and_then(|trust| trust.ca_file().map(std::path::Path::to_owned));
    let cert_chain = match ca_file {
        Some(path) => match tokio::fs::read_to_string(&path).await {
            Ok(pem) => Some(pem),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the CA file for amqps://");
                None
            }
        },
        None => None,
    };
    lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain,
    }
}

impl RabbitBroker {
    /// Connects to `amqp_url` (`amqp://user:pass@host:5672/%2f`; `amqps://` for TLS) and
    /// declares the dead-letter exchange and queue.
    pub(crate) async fn connect(amqp_url: &str) -> Result<Arc<Self>, BrokerError> {
        let broker = Arc::new(Self {
            url: amqp_url.to_owned(),
            link: Mutex::new(None),
            declared: StdMutex::new(HashSet::new()),
        });
        broker.link().await?;
        Ok(broker)
    }

    /// The current connection, (re)connecting if it is gone and re-opening the
    /// publishing channel if only that was closed (a failed declaration closes it).
    async fn link(&self) -> Result<Arc<Link>, BrokerError> {
        let mut slot = self.link.lock().await;
        if let Some(link) = slot.as_ref() {
            if link.connection.status().connected() {
                if link.publisher.status().connected() {
                    return Ok(link.clone());
                }
                tracing::warn!("rabbitmq publishing channel was closed; opening another");
                let fresh = Arc::new(Link {
                    connection: link.connection.clone(),
                    publisher: publishing_channel(&link.connection).await?,
                });
                *slot = Some(fresh.clone());
                return Ok(fresh);
            }
            tracing::warn!("rabbitmq connection lost; reconnecting");
        }
        *slot = None;
        self.declared.lock().expect("declared lock").clear();
        let properties =
            ConnectionProperties::default().with_connection_name("lattice-service".into());
        let runtime =
            lapin::runtime::default_runtime().map_err(|e| unavailable("connecting", e))?;
        let connect =
            Connection::connect_with_config(&self.url, properties, amqps_trust().await, runtime);
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| unavailable("connecting", "timed out"))?
            .map_err(|e| unavailable("connecting", e))?;
        let publisher = publishing_channel(&connection).await?;
        declare_dead_letter_topology(&publisher).await?;
        let link = Arc::new(Link {
            connection: Arc::new(connection),
            publisher,
        });
        *slot = Some(link.clone());
        Ok(link)
    }

    /// Declares an endpoint's queue unless this connection already did.
    async fn ensure_queue(
        &self,
        channel: &Channel,
        endpoint: EndpointId,
    ) -> Result<String, BrokerError> {
        let queue = endpoint_queue(endpoint);
        if self
            .declared
            .lock()
            .expect("declared lock")
            .contains(&endpoint)
        {
            return Ok(queue);
        }
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(DEAD_LETTER_EXCHANGE.into()),
        );
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .map_err(|e| unavailable(&format!("declaring queue {queue}"), e))?;
        self.declared
            .lock()
            .expect("declared lock")
            .insert(endpoint);
        Ok(queue)
    }

    /// Closes the connection under the broker, as a lost connection would.
    #[cfg(test)]
    pub(crate) async fn close_connection(&self) {
        if let Some(link) = self.link.lock().await.as_ref() {
            link.connection
                .close(320, "closed by a test".into())
                .await
                .expect("closing the connection");
        }
    }

    /// Endpoints whose queues this broker declared (on its current connection).
    #[cfg(test)]
    pub(crate) fn declared_endpoints(&self) -> Vec<EndpointId> {
        self.declared
            .lock()
            .expect("declared lock")
            .iter()
            .copied()
            .collect()
    }
}

async fn publishing_channel(connection: &Connection) -> Result<Channel, BrokerError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| unavailable("opening the publishing channel", e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| unavailable("enabling publisher confirms", e))?;
    Ok(channel)
}

async fn declare_dead_letter_topology(channel: &Channel) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            DEAD_LETTER_EXCHANGE.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| unavailable(&format!("declaring exchange {DEAD_LETTER_EXCHANGE}"), e))?;
    channel
        .queue_declare(
            DEAD_LETTER_QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| unavailable(&format!("declaring queue {DEAD_LETTER_QUEUE}"), e))?;
    channel
        .queue_bind(
            DEAD_LETTER_QUEUE.into(),
            DEAD_LETTER_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            unavailable(
                &format!("binding {DEAD_LETTER_QUEUE} to {DEAD_LETTER_EXCHANGE}"),
                e,
            )
        })?;
    Ok(())
}

/// Publishes `tasks` to `queue` and waits for every confirm; returns the tasks
/// RabbitMQ could not route (their queue is gone).
async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    tasks: &[TaskId],
) -> Result<Vec<TaskId>, BrokerError> {
    let mut confirms = Vec::with_capacity(tasks.len());
    for task in tasks {
        let body = task.to_string();
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body.as_bytes(),
                BasicProperties::default()
                    .with_delivery_mode(PERSISTENT)
                    .with_content_type("text/plain".into()),
            )
            .await
            .map_err(|e| unavailable(&format!("publishing to {queue}"), e))?;
        confirms.push((*task, confirm));
    }
    let mut returned = Vec::new();
    for (task, confirm) in confirms {
        match confirm
            .await
            .map_err(|e| unavailable(&format!("awaiting the confirm of a message to {queue}"), e))?
        {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_)) => returned.push(task),
            Confirmation::Nack(_) => {
                return Err(BrokerError::Unavailable(format!(
                    "rabbitmq: refused (nack) a message to {queue}"
                )))
            }
            Confirmation::NotRequested => {
                return Err(BrokerError::Unavailable(
                    "rabbitmq: the publishing channel is not in confirm mode".to_owned(),
                ))
            }
        }
    }
    Ok(returned)
}

#[async_trait]
impl Broker for RabbitBroker {
    async fn publish(&self, endpoint: EndpointId, tasks: &[TaskId]) -> Result<(), BrokerError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let link = self.link().await?;
        let queue = self.ensure_queue(&link.publisher, endpoint).await?;
        let returned = publish_confirmed(&link.publisher, &queue, tasks).await?;
        if returned.is_empty() {
            return Ok(());
        }
        // The queue was deleted since we declared it: declare it again and
        // publish what bounced, once.
        tracing::warn!(endpoint_id = %endpoint, queue, "rabbitmq returned messages as unroutable; re-declaring the queue");
        self.declared
            .lock()
            .expect("declared lock")
            .remove(&endpoint);
        self.ensure_queue(&link.publisher, endpoint).await?;
        let returned = publish_confirmed(&link.publisher, &queue, &returned).await?;
        if returned.is_empty() {
            Ok(())
        } else {
            Err(BrokerError::Unavailable(format!(
                "rabbitmq: {} message(s) to {queue} could not be routed",
                returned.len()
            )))
        }
    }

    async fn subscribe(
        &self,
        endpoint: EndpointId,
        prefetch: u16,
    ) -> Result<Subscription, BrokerError> {
        let prefetch = prefetch.max(1);
        let link = self.link().await?;
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(|e| unavailable("opening a consumer channel", e))?;
        let queue = self.ensure_queue(&channel, endpoint).await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| unavailable("setting the prefetch", e))?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("lattice-{}", uuid::Uuid::new_v4().simple()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| unavailable(&format!("consuming {queue}"), e))?;
        let (delivery_tx, deliveries) = mpsc::channel(usize::from(prefetch));
        let (settle, settle_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(
            Consumer {
                endpoint,
                _connection: link.connection.clone(),
                channel,
                in_flight: HashSet::new(),
            }
            .run(consumer, delivery_tx, settle_rx),
        );
        Ok(Subscription {
            deliveries,
            settle,
            _guard: Some(task),
        })
    }
}

/// The task behind one [`Subscription`].
struct Consumer {
    endpoint: EndpointId,
    /// Keeps the connection open while the subscription lives.
    _connection: Arc<Connection>,
    channel: Channel,
    /// Delivery tags handed out and not settled yet.
    in_flight: HashSet<u64>,
}

impl Consumer {
    async fn run(
        mut self,
        mut consumer: lapin::Consumer,
        deliveries: mpsc::Sender<Delivery>,
        mut settles: mpsc::UnboundedReceiver<Settle>,
    ) {
        loop {
            tokio::select! {
                biased;
                settle = settles.recv() => {
                    let Some(settle) = settle else { break };
                    if let Err(e) = self.apply(settle).await {
                        tracing::error!(endpoint_id = %self.endpoint, error = %e, "settling a rabbitmq delivery failed");
                        break;
                    }
                }
                () = deliveries.closed() => break,
                next = consumer.next() => {
                    let delivery = match next {
                        Some(Ok(delivery)) => delivery,
                        Some(Err(e)) => {
                            tracing::error!(endpoint_id = %self.endpoint, error = %e, "rabbitmq consumer failed");
                            break;
                        }
                        None => {
                            tracing::warn!(endpoint_id = %self.endpoint, "rabbitmq cancelled the consumer");
                            break;
                        }
                    };
                    let tag = delivery.delivery_tag;
                    let Some(task_id) = std::str::from_utf8(&delivery.data).ok().and_then(|s| s.parse::<TaskId>().ok()) else {
                        tracing::error!(endpoint_id = %self.endpoint, body = ?String::from_utf8_lossy(&delivery.data), "dead-lettering a queue message that is not a task id");
                        if let Err(e) = self.channel.basic_reject(tag, BasicRejectOptions { requeue: false }).await {
                            tracing::error!(endpoint_id = %self.endpoint, error = %e, "rejecting a rabbitmq delivery failed");
                            break;
                        }
                        continue;
                    };
                    self.in_flight.insert(tag);
                    let delivery = Delivery { task_id, tag, redelivered: delivery.redelivered };
                    // At most `prefetch` deliveries are unsettled, and the capacity is
                    // `prefetch`, so this never waits for room.
                    if deliveries.send(delivery).await.is_err() {
                        break;
                    }
                }
            }
        }
        drop(consumer);
        // Settles sent just before the subscriber left still count.
        while let Ok(settle) = settles.try_recv() {
            if let Err(e) = self.apply(settle).await {
                tracing::error!(endpoint_id = %self.endpoint, error = %e, "settling a rabbitmq delivery failed");
                break;
            }
        }
        // Closing the channel makes RabbitMQ requeue every unacknowledged delivery.
        if self.channel.status().connected() {
            if let Err(e) = self.channel.close(200, "subscription dropped".into()).await {
                tracing::warn!(endpoint_id = %self.endpoint, error = %e, "closing a rabbitmq consumer channel failed");
            }
        }
    }

    async fn apply(&mut self, settle: Settle) -> lapin::Result<()> {
        let tag = match settle {
            Settle::Ack(tag) | Settle::Requeue(tag) | Settle::DeadLetter(tag) => tag,
        };
        // RabbitMQ closes the channel on an unknown tag: ignore those, like the
        // embedded broker does.
        if !self.in_flight.remove(&tag) {
            tracing::debug!(endpoint_id = %self.endpoint, tag, "ignoring a settle for an unknown delivery");
            return Ok(());
        }
        match settle {
            Settle::Ack(_) => {
                self.channel
                    .basic_ack(tag, BasicAckOptions::default())
                    .await
            }
            Settle::Requeue(_) => {
                self.channel
                    .basic_nack(
                        tag,
                        BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        },
                    )
                    .await
            }
            Settle::DeadLetter(_) => {
                self.channel
                    .basic_reject(tag, BasicRejectOptions { requeue: false })
                    .await
            }
        }
    }
}
