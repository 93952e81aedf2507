//! Email over SMTP (`lettre`, async on tokio, TLS through rustls). Built
//! once per service from `[notify]`; one connection per message (no pool:
//! notification mail is rare and a pooled connection would go stale).

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::NotifyConfig;

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The SMTP client and the sender address. Cheap to share (`Arc` in the hub).
pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// `Ok(None)` when no SMTP server is configured (email is off).
    pub(crate) fn new(config: &NotifyConfig) -> Result<Option<Self>, String> {
        let Some(text) = &config.smtp_url else {
            return Ok(None);
        };
        let url = url::Url::parse(text).map_err(|e| format!("notify.smtp_url: {e}"))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let tls_mode = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(text)
            .map_err(|e| format!("notify.smtp_url: {e}"))?
            .timeout(Some(SMTP_TIMEOUT));
        // lettre's own TLS settings trust the Mozilla roots; add the
        // process's CA file (`--ca-file`), as every outbound TLS
        // connection of Lattice does.
        let wrapper = url.scheme() == "smtps";
        if wrapper || tls_mode.is_some() {
            let params = tls_parameters(&host)?;
            builder = builder.tls(match (wrapper, tls_mode.as_deref()) {
                (true, _) => Tls::Wrapper(params),
                (false, Some("opportunistic")) => Tls::Opportunistic(params),
                _ => Tls::Required(params),
            });
        }
        let from: Mailbox = config
            .mail_from
            .parse()
            .map_err(|e| format!("notify.mail_from: {e}"))?;
        Ok(Some(Self {
            transport: builder.build(),
            from,
        }))
    }

    /// Sends one plain-text message.
    pub(crate) async fn send(&self, to: &str, subject: &str, text: String) -> Result<(), String> {
        let to: Mailbox = to.parse().map_err(|e| format!("recipient `{to}`: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|e| format!("building the message: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn tls_parameters(host: &str) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(host.to_owned());
    let ca_file = lattice_tls::process_trust()
        .ok()
        .and_then(|trust| trust.ca_file().map(std::path::Path::to_owned));
    if let Some(path) = ca_file {
        let pem = std::fs::read(&path)
            .map_err(|e| format!("reading the CA file {}: {e}", path.display()))?;
        let certs = Certificate::from_pem(&pem)
            .map_err(|e| format!("the CA file {}: {e}", path.display()))?;
        builder = builder.add_root_certificate(certs);
    }
    builder
        .build_rustls()
        .map_err(|e| format!("SMTP TLS settings: {e}"))
}
