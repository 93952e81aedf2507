//! Test support shared by this crate's tests and the end-to-end suite
//! (enabled for other crates by the `testsuite` feature).
//!
//! A test that needs a real service asks [`require_service`]: without the
//! service the test is skipped with the reason on stderr, unless
//! `LATTICE_REQUIRE_SERVICES=1`, in which case the missing service fails it.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Where the PostgreSQL that tests use lives (override with `LATTICE_TEST_DATABASE_URL`).
pub fn test_database_url() -> String {
    std::env::var("LATTICE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Where the RabbitMQ that tests use lives (override with `LATTICE_TEST_AMQP_URL`).
pub fn test_amqp_url() -> String {
    std::env::var("LATTICE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Host and port of the test RabbitMQ, from its URL.
pub fn amqp_addr() -> String {
    let url = url::Url::parse(&test_amqp_url()).expect("LATTICE_TEST_AMQP_URL is a URL");
    let host = url.host_str().unwrap_or("127.0.0.1");
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let default_port = if url.scheme() == "amqps" { 5671 } else { 5672 };
    format!("{}:{}", host, url.port().unwrap_or(default_port))
}

/// Asserts an error answer's `body` is exactly `{"code": code, "message":
/// non-empty}` and returns the message; failures show `answer`.
#[track_caller]
pub fn assert_error_body(
    body: &serde_json::Value,
    code: &str,
    answer: &dyn std::fmt::Debug,
) -> String {
    let body = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not a JSON object: {answer:?}"));
    assert_eq!(
        body.get("code"),
        Some(&serde_json::json!(code)),
        "{answer:?}"
    );
    let message = body
        .get("message")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_else(|| panic!("error body has no string message: {answer:?}"));
    assert!(!message.is_empty(), "empty message: {answer:?}");
    let unexpected: Vec<&String> = body
        .keys()
        .filter(|k| *k != "code" && *k != "message")
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected keys {unexpected:?}: {answer:?}"
    );
    message.to_owned()
}

/// True when `LATTICE_REQUIRE_SERVICES=1`: missing services fail tests.
pub fn services_required() -> bool {
    std::env::var("LATTICE_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

/// Decides what a test does when a service it needs is missing: returns
/// `false` (skip, after saying why) or panics when services are required.
pub fn require_service(test: &str, available: Result<(), String>) -> bool {
    match available {
        Ok(()) => true,
        Err(reason) if services_required() => {
            panic!("{test}: required service missing (LATTICE_REQUIRE_SERVICES=1): {reason}")
        }
        Err(reason) => {
            eprintln!("SKIPPED {test}: {reason} (set LATTICE_REQUIRE_SERVICES=1 to fail instead)");
            false
        }
    }
}

/// Whether something accepts TCP connections at `addr`.
pub fn tcp_reachable(addr: &str) -> Result<(), String> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    TcpStream::connect_timeout(&parsed, Duration::from_secs(2))
        .map(|_| ())
        .map_err(|e| format!("nothing listening on {addr}: {e}"))
}

/// Host and port of the test PostgreSQL, from its URL.
pub fn postgres_addr() -> String {
    let url = url::Url::parse(&test_database_url()).expect("LATTICE_TEST_DATABASE_URL is a URL");
    let host = url.host_str().unwrap_or("127.0.0.1");
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{}:{}", host, url.port().unwrap_or(5432))
}

/// A PostgreSQL schema of its own for one test, so tests run in parallel.
/// Dropped (with everything in it) by [`TestSchema::drop_schema`]; a schema
/// left by a crashed test is harmless and named `lattice_test_*`.
pub struct TestSchema {
    pub url: String,
    pub name: String,
}

impl TestSchema {
    pub async fn create() -> Result<Self, sqlx::Error> {
        use sqlx::Connection;
        let url = test_database_url();
        let name = format!("lattice_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(Self { url, name })
    }

    /// `url` with the schema as the connection's search path.
    pub fn url_with_search_path(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            self.url, self.name
        )
    }

    pub async fn drop_schema(self) -> Result<(), sqlx::Error> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }
}

/// The RabbitMQ queue of an endpoint's tasks (for tests that clean up).
pub fn endpoint_queue(endpoint: lattice_protocol::EndpointId) -> String {
    crate::broker::rabbitmq::endpoint_queue(endpoint)
}

/// The RabbitMQ queue dead letters go to (shared by all endpoints).
pub const DEAD_LETTER_QUEUE: &str = crate::broker::rabbitmq::DEAD_LETTER_QUEUE;

/// Deletes the RabbitMQ `queues` and takes their dead letters off the
/// shared dead-letter queue.
pub async fn delete_rabbitmq_queues(queues: &[String]) -> lapin::Result<()> {
    use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};
    let connection = lapin::Connection::connect(&test_amqp_url(), Default::default()).await?;
    let channel = connection.create_channel().await?;
    for queue in queues {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    // Dead letters keep their queue's name as routing key. Others' messages stay
    // unacknowledged until the channel closes, which returns them.
    for _ in 0..10_000 {
        let Some(message) = channel
            .basic_get(DEAD_LETTER_QUEUE.into(), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        if queues
            .iter()
            .any(|q| q.as_str() == message.delivery.routing_key.as_str())
        {
            channel
                .basic_ack(message.delivery.delivery_tag, BasicAckOptions::default())
                .await?;
        }
    }
    channel.close(200, "OK".into()).await?;
    connection.close(200, "OK".into()).await
}
