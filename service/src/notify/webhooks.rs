//! Webhooks as their owners manage them: create (the secret returned once),
//! list, show, delete, the delivery log, a test delivery. Only the owner
//! sees a webhook; to anyone else it does not exist (404).

use std::net::IpAddr;

use chrono::Utc;
use lattice_protocol::notify::{
    DeliveryAttempt, DeliveryInfo, DeliveryList, DeliveryStatus, EventKind, WebhookCreate,
    WebhookInfo, WebhookList,
};
use lattice_protocol::{EventId, WebhookId};
use rand::RngCore;

use super::error::{NotifyError, NotifyResult};
use super::Event;
use crate::auth::Caller;
use crate::state::AppState;
use crate::store::{AttemptRecord, DeliveryRecord, WebhookRecord};

/// Longest webhook URL.
const MAX_URL_CHARS: usize = 2048;
/// Longest description.
const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Most webhooks one identity may have.
const MAX_WEBHOOKS_PER_IDENTITY: usize = 20;
/// Most deliveries one listing returns.
const MAX_DELIVERIES_LISTED: u32 = 100;

/// Creates a webhook for the caller; the answer carries its secret, the
/// only time it is shown.
pub(crate) async fn create(
    state: &AppState,
    caller: &Caller,
    request: WebhookCreate,
) -> NotifyResult<WebhookInfo> {
    if request.url.len() > MAX_URL_CHARS {
        return Err(NotifyError::TooLarge(format!(
            "url: longer than {MAX_URL_CHARS} characters"
        )));
    }
    let url = parse_url(&request.url).map_err(|m| NotifyError::Invalid(format!("url: {m}")))?;
    check_target(url.as_str(), state.config.notify.allow_private_webhooks)
        .await
        .map_err(|m| NotifyError::Invalid(format!("url: {m}")))?;
    let events = super::preferences::parse_kinds("events", &request.events)?;
    if events.is_empty() {
        return Err(NotifyError::Invalid(
            "events: name at least one event kind".into(),
        ));
    }
    let description = request.description.filter(|d| !d.is_empty());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        return Err(NotifyError::TooLarge(format!(
            "description: longer than {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    if state.store.webhooks_of(caller.identity_id).await?.len() >= MAX_WEBHOOKS_PER_IDENTITY {
        return Err(NotifyError::Invalid(format!(
            "url: you already have {MAX_WEBHOOKS_PER_IDENTITY} webhooks, the most one identity may have; delete one first"
        )));
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let record = WebhookRecord {
        id: WebhookId::new(),
        owner: caller.identity_id,
        url: url.to_string(),
        events,
        secret: format!("whsec_{}", hex::encode(key)),
        description,
        created_at: crate::store::from_millis(crate::store::to_millis(Utc::now())),
    };
    state.store.insert_webhook(&record).await?;
    let mut info = info(&record);
    info.secret = Some(record.secret);
    Ok(info)
}

/// The caller's webhooks (no secrets).
pub(crate) async fn list(state: &AppState, caller: &Caller) -> NotifyResult<WebhookList> {
    let webhooks = state.store.webhooks_of(caller.identity_id).await?;
    Ok(WebhookList {
        webhooks: webhooks.iter().map(info).collect(),
    })
}

pub(crate) async fn show(
    state: &AppState,
    caller: &Caller,
    id: WebhookId,
) -> NotifyResult<WebhookInfo> {
    Ok(info(&owned(state, caller, id).await?))
}

/// Deletes a webhook with its delivery log; pending deliveries are dropped.
pub(crate) async fn delete(state: &AppState, caller: &Caller, id: WebhookId) -> NotifyResult<()> {
    owned(state, caller, id).await?;
    state.store.delete_webhook(id).await?;
    Ok(())
}

/// The newest deliveries with their attempts.
pub(crate) async fn deliveries(
    state: &AppState,
    caller: &Caller,
    id: WebhookId,
) -> NotifyResult<DeliveryList> {
    owned(state, caller, id).await?;
    let rows = state.store.deliveries_of(id, MAX_DELIVERIES_LISTED).await?;
    Ok(DeliveryList {
        deliveries: rows
            .into_iter()
            .map(|(d, attempts)| delivery_info(d, attempts))
            .collect(),
    })
}

/// Queues a `ping` event to this webhook only (subscribed or not).
pub(crate) async fn test(
    state: &AppState,
    caller: &Caller,
    id: WebhookId,
) -> NotifyResult<DeliveryInfo> {
    let webhook = owned(state, caller, id).await?;
    let now = crate::store::from_millis(crate::store::to_millis(Utc::now()));
    let event = Event::Ping { webhook_id: id };
    let event_id = EventId::new();
    let body = event.body(event_id, &state.config.public_url, now);
    let delivery = super::new_delivery(&webhook, event_id, EventKind::Ping, &body, now);
    state
        .store
        .insert_deliveries(std::slice::from_ref(&delivery))
        .await?;
    state.notify.wake.notify_one();
    Ok(delivery_info(delivery, Vec::new()))
}

/// The webhook if the caller owns it; 404 otherwise.
async fn owned(state: &AppState, caller: &Caller, id: WebhookId) -> NotifyResult<WebhookRecord> {
    match state.store.webhook(id).await? {
        Some(webhook) if webhook.owner == caller.identity_id => Ok(webhook),
        _ => Err(NotifyError::NotFound(format!("no webhook {id}"))),
    }
}

fn info(record: &WebhookRecord) -> WebhookInfo {
    WebhookInfo {
        id: record.id,
        url: record.url.clone(),
        events: record.events.clone(),
        description: record.description.clone(),
        created_at: record.created_at,
        secret: None,
    }
}

fn delivery_info(d: DeliveryRecord, attempts: Vec<AttemptRecord>) -> DeliveryInfo {
    DeliveryInfo {
        id: d.id,
        event_id: d.event_id,
        event: d.event,
        status: d.status,
        created_at: d.created_at,
        next_attempt_at: d
            .next_attempt_at
            .filter(|_| d.status == DeliveryStatus::Pending),
        attempts: attempts
            .into_iter()
            .map(|a| DeliveryAttempt {
                attempt: a.attempt,
                at: a.at,
                status_code: a.status_code,
                error: a.error,
                duration_ms: a.duration_ms,
            })
            .collect(),
    }
}

/// An http(s) URL with a host and no credentials (pure).
pub(crate) fn parse_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!(
            "`{}` is not http(s); webhooks are POSTed to https:// (or http://) URLs",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the URL must not carry credentials; the signature authenticates deliveries".into(),
        );
    }
    if url.fragment().is_some() {
        return Err("the URL must not have a #fragment".into());
    }
    Ok(url)
}

/// Whether a webhook may be sent to `url`: http(s), and unless
/// `allow_private`, every address its host resolves to is public (no
/// loopback, private, link-local, CGNAT or multicast target).
pub(crate) async fn check_target(url: &str, allow_private: bool) -> Result<(), String> {
    let url = parse_url(url)?;
    if allow_private {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addresses.is_empty() {
        return Err(format!("`{host}` resolves to no address"));
    }
    if let Some(ip) = addresses.iter().find(|ip| !is_public(ip)) {
        return Err(format!(
            "`{host}` is {ip}, a loopback or private address; this service sends webhooks to public addresses only"
        ));
    }
    Ok(())
}

/// A globally routable address (pure).
pub(crate) fn is_public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // CGNAT
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(&IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_and_no_credentials() {
        assert!(parse_url("https://hooks.example.org/lattice").is_ok());
        assert!(parse_url("http://hooks.example.org:8080/x?y=1").is_ok());
        for bad in [
            "ftp://example.org/",
            "file:///etc/passwd",
            "hooks.example.org/x",
            "https://user:pw@example.org/",
            "javascript:alert(1)",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn private_and_loopback_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(&private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(is_public(&public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn loopback_targets_are_refused_unless_allowed() {
        let err = check_target("http://127.0.0.1:9/hook", false)
            .await
            .unwrap_err();
        assert!(err.contains("loopback or private"), "{err}");
        let err = check_target("http://localhost:9/hook", false)
            .await
            .unwrap_err();
        assert!(err.contains("loopback or private"), "{err}");
        let err = check_target("http://[::1]:9/hook", false)
            .await
            .unwrap_err();
        assert!(err.contains("loopback or private"), "{err}");
        check_target("http://127.0.0.1:9/hook", true).await.unwrap();
    }
}
