//! One contract suite for every broker: instantiated for the embedded broker
//! and for RabbitMQ by `broker_suite!`.

use std::time::Duration;

use lattice_protocol::{EndpointId, TaskId};

use super::*;

async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), sub.deliveries.recv())
        .await
        .expect("a delivery within 10 s")
        .expect("subscription open")
}

async fn nothing_within(sub: &mut Subscription, wait: Duration) {
    if let Ok(Some(d)) = tokio::time::timeout(wait, sub.deliveries.recv()).await {
        panic!("unexpected delivery {d:?}");
    }
}

pub(super) async fn delivers_in_order_and_acks_remove(broker: SharedBroker) {
    let endpoint = EndpointId::new();
    let tasks: Vec<TaskId> = (0..3).map(|_| TaskId::new()).collect();
    broker.publish(endpoint, &tasks).await.unwrap();
    let mut sub = broker.subscribe(endpoint, 10).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = next(&mut sub).await;
        assert!(!d.redelivered);
        sub.settle.send(Settle::Ack(d.tag)).unwrap();
        got.push(d.task_id);
    }
    assert_eq!(got, tasks);
    drop(sub);
    let mut again = broker.subscribe(endpoint, 10).await.unwrap();
    nothing_within(&mut again, Duration::from_millis(700)).await;
}

pub(super) async fn unsettled_deliveries_return_when_the_consumer_leaves(broker: SharedBroker) {
    let endpoint = EndpointId::new();
    let tasks: Vec<TaskId> = (0..3).map(|_| TaskId::new()).collect();
    broker.publish(endpoint, &tasks).await.unwrap();
    let mut sub = broker.subscribe(endpoint, 10).await.unwrap();
    let first = next(&mut sub).await;
    let second = next(&mut sub).await;
    let _third = next(&mut sub).await;
    sub.settle.send(Settle::Ack(first.tag)).unwrap();
    sub.settle.send(Settle::Requeue(second.tag)).unwrap();
    // Give the broker a moment to apply the settles, then leave.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(sub);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = broker.subscribe(endpoint, 10).await.unwrap();
    let mut redelivered = [next(&mut again).await, next(&mut again).await];
    redelivered.sort_by_key(|d| d.task_id);
    let mut expected = [tasks[1], tasks[2]];
    expected.sort();
    assert_eq!(
        redelivered.iter().map(|d| d.task_id).collect::<Vec<_>>(),
        expected
    );
    assert!(redelivered.iter().all(|d| d.redelivered));
    nothing_within(&mut again, Duration::from_millis(500)).await;
}

pub(super) async fn prefetch_bounds_unsettled_deliveries(broker: SharedBroker) {
    let endpoint = EndpointId::new();
    let tasks: Vec<TaskId> = (0..5).map(|_| TaskId::new()).collect();
    broker.publish(endpoint, &tasks).await.unwrap();
    let mut sub = broker.subscribe(endpoint, 2).await.unwrap();
    let a = next(&mut sub).await;
    let _b = next(&mut sub).await;
    nothing_within(&mut sub, Duration::from_millis(700)).await;
    sub.settle.send(Settle::Ack(a.tag)).unwrap();
    let c = next(&mut sub).await;
    assert_eq!(c.task_id, tasks[2]);
}

pub(super) async fn dead_lettered_messages_are_not_redelivered(broker: SharedBroker) {
    let endpoint = EndpointId::new();
    let task = TaskId::new();
    broker.publish(endpoint, &[task]).await.unwrap();
    let mut sub = broker.subscribe(endpoint, 10).await.unwrap();
    let d = next(&mut sub).await;
    sub.settle.send(Settle::DeadLetter(d.tag)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(sub);
    let mut again = broker.subscribe(endpoint, 10).await.unwrap();
    nothing_within(&mut again, Duration::from_millis(700)).await;
}

pub(super) async fn publishing_wakes_a_waiting_consumer(broker: SharedBroker) {
    let endpoint = EndpointId::new();
    let mut sub = broker.subscribe(endpoint, 10).await.unwrap();
    let task = TaskId::new();
    let publisher = broker.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        publisher.publish(endpoint, &[task]).await.unwrap();
    });
    assert_eq!(next(&mut sub).await.task_id, task);
}

macro_rules! broker_suite {
    ($module:ident, $open:path, $($name:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some((broker, _guard)) = $open(concat!("broker::", stringify!($module), "::", stringify!($name))).await else {
                        return;
                    };
                    super::$name(broker).await;
                }
            )*
        }
    };
}

async fn open_embedded(_test: &str) -> Option<(SharedBroker, crate::store::testing::TestStore)> {
    let store = crate::store::testing::TestStore::sqlite().await;
    let broker = embedded::EmbeddedBroker::open(store.store.clone())
        .await
        .unwrap();
    Some((broker, store))
}

broker_suite!(
    embedded_suite,
    super::open_embedded,
    delivers_in_order_and_acks_remove,
    unsettled_deliveries_return_when_the_consumer_leaves,
    prefetch_bounds_unsettled_deliveries,
    dead_lettered_messages_are_not_redelivered,
    publishing_wakes_a_waiting_consumer,
);

/// Deletes the endpoint queues a RabbitMQ test declared, and the dead letters
/// they left in the shared dead-letter queue, when the test ends.
struct RabbitCleanup(std::sync::Arc<rabbitmq::RabbitBroker>);

impl Drop for RabbitCleanup {
    fn drop(&mut self) {
        let queues: Vec<String> = self
            .0
            .declared_endpoints()
            .into_iter()
            .map(rabbitmq::endpoint_queue)
            .collect();
        if queues.is_empty() {
            return;
        }
        // Drop can't await, and the test's runtime may have a single thread:
        // clean up from a thread of its own, on a connection of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    crate::testing::delete_rabbitmq_queues(&queues),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("could not delete test queues {queues:?}: {e}"),
                    Err(_) => eprintln!("timed out deleting test queues {queues:?}"),
                }
            });
        });
        let _ = cleanup.join();
    }
}

async fn connect_rabbitmq(test: &str) -> Option<std::sync::Arc<rabbitmq::RabbitBroker>> {
    if !crate::testing::require_service(
        test,
        crate::testing::tcp_reachable(&crate::testing::amqp_addr()),
    ) {
        return None;
    }
    Some(
        rabbitmq::RabbitBroker::connect(&crate::testing::test_amqp_url())
            .await
            .unwrap(),
    )
}

async fn open_rabbitmq(test: &str) -> Option<(SharedBroker, RabbitCleanup)> {
    let broker = connect_rabbitmq(test).await?;
    Some((broker.clone(), RabbitCleanup(broker)))
}

broker_suite!(
    rabbitmq_suite,
    super::open_rabbitmq,
    delivers_in_order_and_acks_remove,
    unsettled_deliveries_return_when_the_consumer_leaves,
    prefetch_bounds_unsettled_deliveries,
    dead_lettered_messages_are_not_redelivered,
    publishing_wakes_a_waiting_consumer,
);

/// RabbitMQ only: a dead letter is not just dropped, it lands in the
/// dead-letter queue, routed by its endpoint queue's name.
#[tokio::test]
async fn rabbitmq_dead_letters_reach_the_dead_letter_queue() {
    use lapin::options::{BasicAckOptions, BasicGetOptions};
    let Some(broker) =
        connect_rabbitmq("broker::rabbitmq_dead_letters_reach_the_dead_letter_queue").await
    else {
        return;
    };
    let _cleanup = RabbitCleanup(broker.clone());
    let endpoint = EndpointId::new();
    let task = TaskId::new();
    broker.publish(endpoint, &[task]).await.unwrap();
    let mut sub = broker.subscribe(endpoint, 10).await.unwrap();
    let d = next(&mut sub).await;
    sub.settle.send(Settle::DeadLetter(d.tag)).unwrap();

    let connection =
        lapin::Connection::connect(&crate::testing::test_amqp_url(), Default::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let found = 'search: loop {
        // Look through the queue without taking others' messages: they stay
        // unacknowledged until the channel closes.
        while let Some(message) = channel
            .basic_get(
                rabbitmq::DEAD_LETTER_QUEUE.into(),
                BasicGetOptions::default(),
            )
            .await
            .unwrap()
        {
            if message.delivery.data == task.to_string().as_bytes() {
                channel
                    .basic_ack(message.delivery.delivery_tag, BasicAckOptions::default())
                    .await
                    .unwrap();
                break 'search Some(message.delivery);
            }
        }
        if tokio::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    channel.close(200, "OK".into()).await.unwrap();
    let found = found.expect("the dead letter in lattice.dead-letter within 10 s");
    assert_eq!(
        found.routing_key.as_str(),
        rabbitmq::endpoint_queue(endpoint)
    );
    assert_eq!(found.properties.delivery_mode(), &Some(2));
}

/// RabbitMQ only: a lost connection ends live subscriptions (their deliveries
/// go back to the queue) and the next call reconnects.
#[tokio::test]
async fn rabbitmq_reconnects_after_losing_the_connection() {
    let Some(broker) =
        connect_rabbitmq("broker::rabbitmq_reconnects_after_losing_the_connection").await
    else {
        return;
    };
    let _cleanup = RabbitCleanup(broker.clone());
    let endpoint = EndpointId::new();
    let task = TaskId::new();
    broker.publish(endpoint, &[task]).await.unwrap();
    let mut sub = broker.subscribe(endpoint, 10).await.unwrap();
    assert_eq!(next(&mut sub).await.task_id, task);

    broker.close_connection().await;
    let end = tokio::time::timeout(Duration::from_secs(10), sub.deliveries.recv())
        .await
        .expect("the subscription ends within 10 s");
    assert!(end.is_none(), "unexpected delivery {end:?}");

    let later = TaskId::new();
    broker.publish(endpoint, &[later]).await.unwrap();
    let mut again = broker.subscribe(endpoint, 10).await.unwrap();
    let first = next(&mut again).await;
    assert_eq!((first.task_id, first.redelivered), (task, true));
    let second = next(&mut again).await;
    assert_eq!((second.task_id, second.redelivered), (later, false));
}

/// RabbitMQ only: a queue deleted behind the broker's back (which remembers
/// having declared it) is declared again, and the publish still lands.
#[tokio::test]
async fn rabbitmq_redeclares_a_deleted_queue_on_publish() {
    let Some(broker) =
        connect_rabbitmq("broker::rabbitmq_redeclares_a_deleted_queue_on_publish").await
    else {
        return;
    };
    let _cleanup = RabbitCleanup(broker.clone());
    let endpoint = EndpointId::new();
    broker.publish(endpoint, &[TaskId::new()]).await.unwrap();
    crate::testing::delete_rabbitmq_queues(&[rabbitmq::endpoint_queue(endpoint)])
        .await
        .unwrap();
    let task = TaskId::new();
    broker.publish(endpoint, &[task]).await.unwrap();
    let mut sub = broker.subscribe(endpoint, 10).await.unwrap();
    assert_eq!(next(&mut sub).await.task_id, task);
    nothing_within(&mut sub, Duration::from_millis(300)).await;
}
