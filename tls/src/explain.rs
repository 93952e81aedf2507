//! Plain-language certificate errors.
//!
//! A refused certificate reaches the caller wrapped several layers deep
//! (reqwest, hyper, an `io::Error`, then rustls). [`explain`] digs out the
//! rustls error and says what is wrong with which host and which setting
//! fixes it; the caller keeps its own message for everything else.

use std::error::Error;

use rustls::CertificateError;

/// The start of the answer a TLS port gives a plain-HTTP request, worded
/// as nginx words it so a client recognises both.
pub const PLAIN_HTTP_REFUSAL: &str = "The plain HTTP request was sent to HTTPS port";

/// True when an HTTP answer is a TLS port refusing plain HTTP (ours or
/// nginx's: status 400 and the sentence above in the body).
pub fn is_plain_http_refusal(status: u16, body: &[u8]) -> bool {
    status == 400
        && String::from_utf8_lossy(&body[..body.len().min(4096)]).contains(PLAIN_HTTP_REFUSAL)
}

const TRUST_SETTINGS: &str = "trust the site's CA with --ca-file FILE, LATTICE_CA_FILE=FILE or \
     SSL_CERT_FILE=FILE (ca_file = \"FILE\" in an agent or service config file)";

/// A sentence for a TLS failure talking to `host`, if `error` (or anything
/// it wraps) is one; `None` leaves the caller's own message.
pub fn explain(error: &(dyn Error + 'static), host: &str) -> Option<String> {
    let tls = find_rustls_error(error)?;
    Some(match tls {
        rustls::Error::InvalidCertificate(cert) => certificate(cert, host),
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => format!(
            "{host} did not answer with TLS ({tls}); if the service serves plain HTTP there, \
             use an http:// URL"
        ),
        other => format!("TLS with {host} failed: {other}"),
    })
}

fn certificate(error: &CertificateError, host: &str) -> String {
    match error {
        CertificateError::UnknownIssuer => format!(
            "the certificate of {host} is signed by an authority this machine does not trust \
             (unknown issuer): {TRUST_SETTINGS}"
        ),
        CertificateError::Expired => format!(
            "the certificate of {host} has expired: the server's certificate must be renewed \
             (or this machine's clock is wrong)"
        ),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the certificate of {host} has expired ({} ago): the server's certificate must be \
             renewed (or this machine's clock is wrong)",
            ago(time.as_secs().saturating_sub(not_after.as_secs()))
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("the certificate of {host} is not valid yet: check this machine's clock")
        }
        CertificateError::NotValidForName => format!(
            "the certificate of {host} is not valid for the name {host}: use the host name the \
             certificate was issued for, or reissue it with this name"
        ),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "the certificate of {host} is not valid for the name {} (it names {}): use the \
             host name the certificate was issued for, or reissue it with this name",
            expected.to_str(),
            if presented.is_empty() {
                "no host at all".to_owned()
            } else {
                presented.join(", ")
            }
        ),
        other => format!("the certificate of {host} was refused ({other}): {TRUST_SETTINGS}"),
    }
}

/// `3 days`, `5 hours`, `40 seconds`.
fn ago(seconds: u64) -> String {
    match seconds {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3_600 => format!("{} hours", s / 3_600),
        s if s >= 2 * 60 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// The rustls error in a chain. `io::Error` hides the error it wraps from
/// `source()` (its `Display` already shows it), so look inside those too.
fn find_rustls_error<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(tls) = find_rustls_error(inner) {
                return Some(tls);
            }
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that wraps another the way hyper wraps an io::Error.
    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    fn wrapped(error: rustls::Error) -> Wrapper {
        Wrapper(std::io::Error::new(std::io::ErrorKind::InvalidData, error))
    }

    #[test]
    fn names_the_host_the_problem_and_the_setting() {
        let unknown = wrapped(CertificateError::UnknownIssuer.into());
        let text = explain(&unknown, "lattice.example.org").unwrap();
        assert!(text.contains("lattice.example.org"), "{text}");
        assert!(text.contains("unknown issuer"), "{text}");
        assert!(
            text.contains("LATTICE_CA_FILE") && text.contains("SSL_CERT_FILE"),
            "{text}"
        );

        let expired = wrapped(CertificateError::Expired.into());
        assert!(explain(&expired, "h").unwrap().contains("has expired"));

        let name = wrapped(
            CertificateError::NotValidForNameContext {
                expected: rustls::pki_types::ServerName::try_from("h").unwrap(),
                presented: vec!["DnsName(\"other.test\")".into()],
            }
            .into(),
        );
        let text = explain(&name, "h").unwrap();
        assert!(text.contains("not valid for the name h"), "{text}");
        assert!(text.contains("other.test"), "{text}");
    }

    #[test]
    fn leaves_other_errors_alone() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(explain(&refused, "h").is_none());
    }

    #[test]
    fn recognises_a_tls_port_refusing_plain_http() {
        let nginx = b"<html><head><title>400 The plain HTTP request was sent to HTTPS port</title>";
        assert!(is_plain_http_refusal(400, nginx));
        assert!(is_plain_http_refusal(400, PLAIN_HTTP_REFUSAL.as_bytes()));
        assert!(!is_plain_http_refusal(200, nginx));
        assert!(!is_plain_http_refusal(400, b"{\"code\":\"INVALID\"}"));
    }
}
