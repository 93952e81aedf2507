//! Webhook deliveries: the signature and the retry schedule (pure, clock
//! passed in), and the worker that leases due deliveries from the store and
//! attempts each on its own task, so a receiver that never answers holds
//! only its own delivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use lattice_protocol::notify::{
    DeliveryStatus, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::config::NotifyConfig;
use crate::state::AppState;
use crate::store::{AttemptRecord, DeliveryOutcome, DeliveryRecord};

/// Attempts in flight at once on one replica.
const MAX_CONCURRENT_ATTEMPTS: usize = 64;
/// How often the worker looks for due deliveries when nothing wakes it
/// (retries coming due, deliveries enqueued by another replica).
const POLL: Duration = Duration::from_millis(500);
/// Longest wait between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// The part of a receiver's answer kept in the delivery log.
const MAX_ERROR_CHARS: usize = 300;

/// `v1=` and the hex HMAC-SHA256, keyed by the webhook's secret, of
/// `timestamp + "." + body`.
pub(crate) fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// What one attempt got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The receiver's HTTP status.
    Status(u16),
    /// No answer: refused, reset, timed out, TLS failed (in words).
    None(String),
}

/// What becomes of a delivery after attempt number `attempt` (1 for the
/// first) got `answer`: 2xx succeeds; 408, 429, 5xx and no answer are
/// retried after `base`, then 4 times longer each time (at most an hour
/// apart) until `max_attempts`; any other answer fails it at once (the
/// receiver refused it and will again).
pub(crate) fn outcome(
    answer: &Answer,
    attempt: u32,
    config: &NotifyConfig,
    now: DateTime<Utc>,
) -> DeliveryOutcome {
    let retryable = match answer {
        Answer::Status(code) if (200..300).contains(code) => {
            return DeliveryOutcome {
                status: DeliveryStatus::Succeeded,
                next_attempt_at: None,
            }
        }
        Answer::Status(code) => *code == 408 || *code == 429 || *code >= 500,
        Answer::None(_) => true,
    };
    if !retryable || attempt >= config.webhook_max_attempts {
        return DeliveryOutcome {
            status: DeliveryStatus::Failed,
            next_attempt_at: None,
        };
    }
    let delay = retry_delay(attempt, Duration::from_millis(config.webhook_retry_base_ms));
    DeliveryOutcome {
        status: DeliveryStatus::Pending,
        next_attempt_at: Some(now + chrono::Duration::from_std(delay).unwrap_or_default()),
    }
}

/// The wait after attempt number `attempt` failed: `base * 4^(attempt-1)`,
/// at most an hour.
pub(crate) fn retry_delay(attempt: u32, base: Duration) -> Duration {
    let factor = 4u32.saturating_pow(attempt.saturating_sub(1));
    base.saturating_mul(factor).min(MAX_RETRY_DELAY)
}

/// Starts the worker; it runs until the returned handle is aborted.
pub(crate) fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_ATTEMPTS));
        loop {
            let free = slots.available_permits();
            if free > 0 {
                let now = Utc::now();
                // Held past the attempt's own timeout, so no other worker
                // takes it while this one still waits for the answer.
                let lease = Duration::from_secs(state.config.notify.webhook_timeout_secs + 30);
                let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
                match state.store.claim_deliveries(now, until, free as u32).await {
                    Ok(due) => {
                        for delivery in due {
                            let Ok(slot) = slots.clone().acquire_owned().await else {
                                return;
                            };
                            let state = state.clone();
                            tokio::spawn(async move {
                                attempt(&state, delivery).await;
                                drop(slot);
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read due webhook deliveries"),
                }
            }
            tokio::select! {
                _ = state.notify.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    })
}

/// One attempt of one delivery, recorded with its answer.
async fn attempt(state: &AppState, delivery: DeliveryRecord) {
    let number = delivery.attempts + 1;
    let webhook = match state.store.webhook(delivery.webhook_id).await {
        Ok(Some(webhook)) => webhook,
        // Deleted meanwhile: its deliveries went with it.
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(delivery_id = %delivery.id, error = %e, "cannot load a delivery's webhook");
            return;
        }
    };
    let started = Instant::now();
    let at = Utc::now();
    let answer = post(state, &webhook.url, &webhook.secret, &delivery).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let outcome = outcome(&answer, number, &state.config.notify, Utc::now());
    let (status_code, error) = match &answer {
        Answer::Status(code) => (Some(*code), None),
        Answer::None(why) => (None, Some(why.clone())),
    };
    tracing::info!(
        delivery_id = %delivery.id,
        webhook_id = %webhook.id,
        event = %delivery.event,
        attempt = number,
        status_code,
        error = error.as_deref(),
        outcome = ?outcome.status,
        "webhook delivery attempt"
    );
    let record = AttemptRecord {
        delivery_id: delivery.id,
        attempt: number,
        at,
        status_code,
        error,
        duration_ms,
    };
    if let Err(e) = state.store.record_attempt(&record, outcome).await {
        tracing::warn!(delivery_id = %delivery.id, error = %e, "cannot record a webhook attempt");
    }
}

/// POSTs the delivery's body, signed now.
async fn post(state: &AppState, url: &str, secret: &str, delivery: &DeliveryRecord) -> Answer {
    if let Err(why) =
        super::webhooks::check_target(url, state.config.notify.allow_private_webhooks).await
    {
        return Answer::None(format!("not sent: {why}"));
    }
    let timestamp = Utc::now().timestamp();
    let request = state
        .notify
        .http
        .post(url)
        .timeout(Duration::from_secs(
            state.config.notify.webhook_timeout_secs,
        ))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(
            SIGNATURE_HEADER,
            signature(secret, timestamp, delivery.body.as_bytes()),
        )
        .header(EVENT_HEADER, delivery.event.as_str())
        .header(DELIVERY_HEADER, delivery.id.to_string())
        .body(delivery.body.clone());
    match request.send().await {
        Ok(response) => Answer::Status(response.status().as_u16()),
        Err(e) if e.is_timeout() => Answer::None(format!(
            "no answer within {} s",
            state.config.notify.webhook_timeout_secs
        )),
        Err(e) => {
            let mut text = error_chain(&e);
            if text.len() > MAX_ERROR_CHARS {
                let cut = (0..=MAX_ERROR_CHARS)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                text.truncate(cut);
            }
            Answer::None(text)
        }
    }
}

/// An error with its causes, `a: b: c`.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NotifyConfig {
        NotifyConfig {
            smtp_url: None,
            mail_from: "Lattice <lattice@localhost>".into(),
            allow_private_webhooks: false,
            webhook_timeout_secs: 10,
            webhook_max_attempts: 4,
            webhook_retry_base_ms: 1_000,
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            signature("s3cret", 1_700_000_000, br#"{"a":1}"#),
            "v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
        let one = signature("s3cret", 1_700_000_000, b"{}");
        assert_ne!(
            one,
            signature("s3cret", 1_700_000_001, b"{}"),
            "the time is signed"
        );
        assert_ne!(
            one,
            signature("other", 1_700_000_000, b"{}"),
            "the key matters"
        );
        assert_eq!(one.len(), 3 + 64);
    }

    #[test]
    fn rfc_4231_vector_through_the_same_mac() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn server_errors_and_silence_are_retried_with_growing_waits() {
        let now = Utc::now();
        let config = config();
        let first = outcome(&Answer::Status(500), 1, &config, now);
        assert_eq!(first.status, DeliveryStatus::Pending);
        assert_eq!(
            first.next_attempt_at,
            Some(now + chrono::Duration::seconds(1))
        );
        let second = outcome(&Answer::None("timed out".into()), 2, &config, now);
        assert_eq!(
            second.next_attempt_at,
            Some(now + chrono::Duration::seconds(4))
        );
        let third = outcome(&Answer::Status(429), 3, &config, now);
        assert_eq!(
            third.next_attempt_at,
            Some(now + chrono::Duration::seconds(16))
        );
        let last = outcome(&Answer::Status(503), 4, &config, now);
        assert_eq!(last.status, DeliveryStatus::Failed, "attempts are bounded");
        assert_eq!(last.next_attempt_at, None);
    }

    #[test]
    fn success_and_refusals_end_the_delivery() {
        let now = Utc::now();
        let config = config();
        for code in [200, 202, 204] {
            assert_eq!(
                outcome(&Answer::Status(code), 1, &config, now).status,
                DeliveryStatus::Succeeded
            );
        }
        for code in [301, 400, 401, 404, 410] {
            assert_eq!(
                outcome(&Answer::Status(code), 1, &config, now).status,
                DeliveryStatus::Failed,
                "{code}"
            );
        }
    }

    #[test]
    fn waits_are_capped_at_an_hour() {
        let base = Duration::from_secs(5);
        assert_eq!(retry_delay(1, base), base);
        assert_eq!(retry_delay(3, base), Duration::from_secs(80));
        assert_eq!(retry_delay(30, base), MAX_RETRY_DELAY);
    }
}
