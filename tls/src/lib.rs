//! TLS settings every Lattice process shares.
//!
//! It owns three things: which certificate authorities an outbound
//! connection trusts ([`Trust`], one per process for REST, WebSocket, OpenID
//! Connect discovery and RabbitMQ alike), the certificate the service serves
//! itself ([`ServerCert`], reloaded when its files change or on SIGHUP), and
//! turning a refused certificate into a sentence that names the host, the
//! problem and the setting that fixes it ([`explain`]). It must not open
//! connections or read Lattice configuration files: callers pass paths in.
//!
//! rustls with *ring*, like the rest of the workspace (the data plane's QUIC
//! and reqwest already use it); nothing here links OpenSSL.

mod explain;
mod server;
mod trust;

pub use explain::{explain, is_plain_http_refusal, PLAIN_HTTP_REFUSAL};
pub use server::{ServerCert, RELOAD_POLL};
pub use trust::{install_process_trust, process_trust, Trust, CA_FILE_ENV};

use std::path::PathBuf;
use std::sync::Arc;

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A CA file named by `--ca-file`, `LATTICE_CA_FILE`, `ca_file`,
    /// `SSL_CERT_FILE` or `SSL_CERT_DIR` is unusable.
    #[error("CA certificates {path} (from {source_name}): {detail}")]
    CaFile {
        path: PathBuf,
        source_name: String,
        detail: String,
    },
    /// The service's own certificate or key is unusable.
    #[error("TLS {what} {path}: {detail}")]
    ServerFile {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The one crypto provider of the workspace.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
