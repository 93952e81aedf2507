//! `lattice notify prefs` and `lattice webhook create|list|show|delete|
//! deliveries|test`: what you are told by email, and where signed webhook
//! events go.

use clap::{Args, Subcommand};
use lattice_protocol::notify::{
    DeliveryInfo, DeliveryStatus, EventKind, NotifyPreferences, PreferencesUpdate, WebhookCreate,
    WebhookInfo,
};
use lattice_protocol::WebhookId;

use crate::context::Context;
use crate::output::{id_of, UsageError};

fn kinds_help() -> String {
    EventKind::SUBSCRIBABLE
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

const NOTIFY_HELP: &str = "\
Event kinds: transfer.succeeded, transfer.failed, transfer.inactive,
flow_run.succeeded, flow_run.failed, flow_run.inactive, task_batch.finished,
approval.requested, access.granted, group.invited, timer.inactive.

Email goes to the address your identity provider gave at login, and only if
the service has an SMTP server configured (`email_enabled`). A transfer's own
--notify-on (default succeeded,failed,inactive) says which of its ends count.";

#[derive(Subcommand, Debug)]
pub(crate) enum NotifyCommand {
    /// Show which event kinds reach you by email, or change them:
    /// `lattice notify prefs --email transfer.failed,approval.requested`,
    /// `--add-email KIND`, `--remove-email KIND`, `--no-email`.
    #[command(after_help = NOTIFY_HELP)]
    Prefs(PrefsArgs),
}

#[derive(Args, Debug)]
pub(crate) struct PrefsArgs {
    /// Exactly these kinds by email (comma-separated), replacing the list.
    #[arg(
        long,
        value_name = "KINDS",
        value_delimiter = ',',
        conflicts_with = "no_email"
    )]
    email: Option<Vec<String>>,
    /// Add kinds to the list (comma-separated).
    #[arg(long, value_name = "KINDS", value_delimiter = ',', conflicts_with_all = ["email", "no_email"])]
    add_email: Vec<String>,
    /// Remove kinds from the list (comma-separated).
    #[arg(long, value_name = "KINDS", value_delimiter = ',', conflicts_with_all = ["email", "no_email"])]
    remove_email: Vec<String>,
    /// No email at all.
    #[arg(long)]
    no_email: bool,
}

const WEBHOOK_HELP: &str = "\
Each event is POSTed as JSON with the headers lattice-timestamp (seconds since
the epoch) and lattice-signature (v1= and the hex HMAC-SHA256 of
`TIMESTAMP.BODY` keyed by the webhook's secret). Check the signature and that
the timestamp is recent before trusting a body. A 2xx answer ends the
delivery; 5xx, 408, 429 or no answer is retried with growing waits; other
answers fail it. See docs/notifications.md.";

#[derive(Subcommand, Debug)]
pub(crate) enum WebhookCommand {
    /// Create a webhook: prints its id and signing secret (shown once).
    #[command(after_help = WEBHOOK_HELP)]
    Create {
        /// Where events are POSTed (https://...).
        url: String,
        /// Event kinds to deliver, comma-separated (e.g.
        /// transfer.failed,flow_run.failed).
        #[arg(long, value_name = "KINDS", value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// A note to recognise the webhook by.
        #[arg(long)]
        description: Option<String>,
    },
    /// List your webhooks.
    List,
    /// Show one of your webhooks.
    Show {
        /// Webhook id (`lattice webhook list`).
        #[arg(value_parser = id_of::<WebhookId>("webhook", "`lattice webhook list`"))]
        id: WebhookId,
    },
    /// Delete a webhook with its delivery log; pending deliveries are dropped.
    Delete {
        /// Webhook id (`lattice webhook list`).
        #[arg(value_parser = id_of::<WebhookId>("webhook", "`lattice webhook list`"))]
        id: WebhookId,
    },
    /// The newest deliveries of a webhook, with each attempt's answer.
    Deliveries {
        /// Webhook id (`lattice webhook list`).
        #[arg(value_parser = id_of::<WebhookId>("webhook", "`lattice webhook list`"))]
        id: WebhookId,
    },
    /// Send a `ping` event to the webhook now (whatever it subscribes to).
    Test {
        /// Webhook id (`lattice webhook list`).
        #[arg(value_parser = id_of::<WebhookId>("webhook", "`lattice webhook list`"))]
        id: WebhookId,
    },
}

fn describe_prefs(p: &NotifyPreferences) -> String {
    let kinds = if p.email.is_empty() {
        "none".to_owned()
    } else {
        p.email
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let to = p.email_address.as_deref().unwrap_or("(no address known)");
    let mut text = format!("email to:  {to}\nby email:  {kinds}");
    if !p.email_enabled {
        text.push_str(
            "\n\nThis service sends no email (no SMTP server configured); use a webhook.",
        );
    }
    text
}

fn describe_webhook(w: &WebhookInfo) -> String {
    let mut text = format!(
        "id:      {}\nurl:     {}\nevents:  {}\ncreated: {}",
        w.id,
        w.url,
        w.events
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        w.created_at.to_rfc3339()
    );
    if let Some(d) = &w.description {
        text.push_str(&format!("\nnote:    {d}"));
    }
    if let Some(secret) = &w.secret {
        text.push_str(&format!(
            "\nsecret:  {secret}\n\nThe secret is shown only now; the receiver needs it to check signatures."
        ));
    }
    text
}

fn describe_delivery(d: &DeliveryInfo) -> String {
    let status = match d.status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Succeeded => "succeeded",
        DeliveryStatus::Failed => "failed",
    };
    let mut text = format!(
        "{}  {}  {}  {}",
        d.id,
        d.created_at.to_rfc3339(),
        d.event,
        status
    );
    if let Some(next) = d.next_attempt_at {
        text.push_str(&format!("  next attempt {}", next.to_rfc3339()));
    }
    for a in &d.attempts {
        let answer = match (a.status_code, &a.error) {
            (Some(code), _) => format!("HTTP {code}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "no answer".into(),
        };
        text.push_str(&format!(
            "\n    attempt {}  {}  {}  {} ms",
            a.attempt,
            a.at.to_rfc3339(),
            answer,
            a.duration_ms
        ));
    }
    text
}

pub(crate) async fn notify(ctx: &Context, command: NotifyCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let NotifyCommand::Prefs(args) = command;
    let changing = args.email.is_some()
        || args.no_email
        || !args.add_email.is_empty()
        || !args.remove_email.is_empty();
    if !changing {
        let prefs = client.notify_preferences().await?;
        return ctx.output.emit(&prefs, describe_prefs);
    }
    let email: Vec<String> = if args.no_email {
        Vec::new()
    } else if let Some(kinds) = args.email {
        kinds
    } else {
        let current = client.notify_preferences().await?;
        let mut kinds: Vec<String> = current.email.iter().map(|k| k.to_string()).collect();
        for kind in &args.add_email {
            check_kind(kind)?;
            if !kinds.contains(kind) {
                kinds.push(kind.clone());
            }
        }
        for kind in &args.remove_email {
            check_kind(kind)?;
        }
        kinds.retain(|k| !args.remove_email.contains(k));
        kinds
    };
    let prefs = client
        .set_notify_preferences(&PreferencesUpdate { email })
        .await?;
    ctx.output.emit(&prefs, describe_prefs)
}

fn check_kind(kind: &str) -> anyhow::Result<()> {
    match kind.parse::<EventKind>() {
        Ok(_) => Ok(()),
        Err(_) => Err(UsageError(format!(
            "unknown event kind `{kind}`; known: {}",
            kinds_help()
        ))
        .into()),
    }
}

pub(crate) async fn webhook(ctx: &Context, command: WebhookCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        WebhookCommand::Create {
            url,
            events,
            description,
        } => {
            let created = client
                .create_webhook(&WebhookCreate {
                    url,
                    events,
                    description,
                })
                .await?;
            ctx.output.emit(&created, describe_webhook)
        }
        WebhookCommand::List => {
            let list = client.webhooks().await?;
            ctx.output.emit(&list, |list| {
                if list.webhooks.is_empty() {
                    return "no webhooks".into();
                }
                list.webhooks
                    .iter()
                    .map(|w| {
                        format!(
                            "{}  {}  [{}]",
                            w.id,
                            w.url,
                            w.events
                                .iter()
                                .map(|k| k.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        WebhookCommand::Show { id } => {
            let webhook = client.webhook(id).await?;
            ctx.output.emit(&webhook, describe_webhook)
        }
        WebhookCommand::Delete { id } => {
            client.delete_webhook(id).await?;
            eprintln!("Deleted webhook {id} and its delivery log.");
            Ok(())
        }
        WebhookCommand::Deliveries { id } => {
            let list = client.webhook_deliveries(id).await?;
            ctx.output.emit(&list, |list| {
                if list.deliveries.is_empty() {
                    return "no deliveries yet".into();
                }
                list.deliveries
                    .iter()
                    .map(describe_delivery)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        WebhookCommand::Test { id } => {
            let delivery = client.test_webhook(id).await?;
            ctx.output.emit(&delivery, |d| {
                format!(
                    "queued ping delivery {}; see `lattice webhook deliveries {id}`",
                    d.id
                )
            })
        }
    }
}
