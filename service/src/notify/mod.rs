//! Notifications: telling people what happened to their transfers, runs,
//! batches and timers, and what asks for them (approvals, access granted,
//! group invitations), by email and by signed webhooks.
//!
//! Owns: the [`Event`]s and their words and links (`events.rs`), each
//! identity's email preferences (`preferences.rs`), webhooks and their
//! delivery log (`webhooks.rs`), the signature, retry schedule and delivery
//! worker (`delivery.rs`), SMTP (`email.rs`), and the small helpers other
//! domains call at the moment something happens (`hooks.rs`).
//!
//! Must not: block or fail the caller ([`notify`] returns at once; every
//! error is logged), decide who may see a resource (other domains decide
//! whom to tell; here only a webhook's owner sees it), or send a webhook
//! inline (deliveries are stored, then a worker sends them, so a restart
//! loses none and a receiver that never answers holds only its own).

mod delivery;
mod email;
pub(crate) mod error;
mod events;
pub(crate) mod hooks;
pub(crate) mod preferences;
pub(crate) mod webhooks;

use std::time::Duration;

use chrono::{DateTime, Utc};
use lattice_protocol::notify::{DeliveryStatus, EventBody, EventKind};
use lattice_protocol::{DeliveryId, EventId, IdentityId};

pub use error::NotifyError;
pub use events::Event;

use crate::config::NotifyConfig;
use crate::state::AppState;
use crate::store::{DeliveryRecord, WebhookRecord};

pub(crate) use delivery::spawn as spawn_worker;

/// Attempts at sending one email (SMTP server down or busy).
const EMAIL_ATTEMPTS: u32 = 3;
/// The wait before the second email attempt (doubled for the third).
const EMAIL_RETRY: Duration = Duration::from_secs(2);

/// What notifications need at run time (in `AppState.notify`): the SMTP
/// client (none when email is off), the HTTP client for webhooks, and the
/// delivery worker's wake-up.
pub(crate) struct NotifyHub {
    pub(crate) mailer: Option<email::Mailer>,
    pub(crate) http: reqwest::Client,
    pub(crate) wake: tokio::sync::Notify,
}

impl NotifyHub {
    /// Built once per service; says in the log whether email is on.
    pub(crate) fn new(config: &NotifyConfig) -> Self {
        let mailer = match email::Mailer::new(config) {
            Ok(Some(mailer)) => {
                tracing::info!("notification email is on");
                Some(mailer)
            }
            Ok(None) => {
                tracing::info!(
                    "notification email is off: no [notify] smtp_url (or --smtp-url) is configured"
                );
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "notification email is off: the SMTP settings are unusable");
                None
            }
        };
        let mut http = reqwest::Client::builder()
            // A redirect could lead a delivery to a private address.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Lattice-Webhooks/", env!("CARGO_PKG_VERSION")));
        match lattice_tls::process_trust() {
            Ok(trust) => http = http.use_preconfigured_tls((*trust.client_config()).clone()),
            Err(e) => tracing::error!(error = %e, "webhooks: using the bundled public roots only"),
        }
        Self {
            mailer,
            http: http.build().expect("reqwest client with static settings"),
            wake: tokio::sync::Notify::new(),
        }
    }
}

/// Tells `recipient` about `event`: an email if their preferences ask for
/// this kind (and SMTP is configured), and a delivery to each of their
/// webhooks subscribed to it. Returns at once; the work happens on its own
/// task and failures are logged, never returned.
pub(crate) fn notify(state: &AppState, recipient: IdentityId, event: Event) {
    let state = state.clone();
    tokio::spawn(async move {
        let kind = event.kind();
        if let Err(e) = tell(&state, recipient, event).await {
            tracing::warn!(identity_id = %recipient, event = %kind, error = %e, "cannot notify");
        }
    });
}

async fn tell(state: &AppState, recipient: IdentityId, event: Event) -> Result<(), NotifyError> {
    let kind = event.kind();
    let now = crate::store::from_millis(crate::store::to_millis(Utc::now()));
    let event_id = EventId::new();
    let body = event.body(event_id, &state.config.public_url, now);
    let hooks: Vec<WebhookRecord> = state
        .store
        .webhooks_of(recipient)
        .await?
        .into_iter()
        .filter(|w| w.events.contains(&kind))
        .collect();
    if !hooks.is_empty() {
        let deliveries: Vec<DeliveryRecord> = hooks
            .iter()
            .map(|w| new_delivery(w, event_id, kind, &body, now))
            .collect();
        state.store.insert_deliveries(&deliveries).await?;
        state.notify.wake.notify_one();
    }
    let Some(mailer) = &state.notify.mailer else {
        return Ok(());
    };
    if !preferences::email_kinds(state, recipient)
        .await?
        .contains(&kind)
    {
        return Ok(());
    }
    let Some(address) = state.store.identity(recipient).await?.and_then(|i| i.email) else {
        tracing::debug!(identity_id = %recipient, event = %kind, "no email address to notify");
        return Ok(());
    };
    let text = events::email_text(&body);
    let mut wait = EMAIL_RETRY;
    for attempt in 1..=EMAIL_ATTEMPTS {
        match mailer.send(&address, &body.subject, text.clone()).await {
            Ok(()) => {
                tracing::info!(identity_id = %recipient, event = %kind, event_id = %event_id, "notification email sent");
                return Ok(());
            }
            Err(e) if attempt < EMAIL_ATTEMPTS => {
                tracing::warn!(identity_id = %recipient, event = %kind, attempt, error = %e, "sending a notification email; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                tracing::error!(identity_id = %recipient, event = %kind, error = %e, "notification email not sent");
            }
        }
    }
    Ok(())
}

/// A pending delivery of `body` to `webhook`, due now.
fn new_delivery(
    webhook: &WebhookRecord,
    event_id: EventId,
    kind: EventKind,
    body: &EventBody,
    now: DateTime<Utc>,
) -> DeliveryRecord {
    DeliveryRecord {
        id: DeliveryId::new(),
        webhook_id: webhook.id,
        event_id,
        event: kind,
        body: serde_json::to_string(body).expect("an event serializes"),
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: Some(now),
        created_at: now,
        completed_at: None,
    }
}
