//! Which certificate authorities outbound connections trust.
//!
//! Three sources, all added together:
//! 1. the system's store, found the way OpenSSL finds it; `SSL_CERT_FILE`
//!    and `SSL_CERT_DIR` replace it when set, the convention of OpenSSL,
//!    curl and Python;
//! 2. Mozilla's roots compiled into the binary, so the public web PKI works
//!    on a machine without a CA bundle;
//! 3. an explicit CA file: `--ca-file`, `LATTICE_CA_FILE`, or `ca_file` in an
//!    agent or service config file (the site's private CA, added on top).
//!
//! A process installs its trust once at startup ([`install_process_trust`]);
//! everything that connects afterwards asks [`process_trust`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::{provider, TlsError};

/// The environment variable naming an extra CA file.
pub const CA_FILE_ENV: &str = "LATTICE_CA_FILE";

/// A loaded trust configuration: clone freely (one `Arc` inside).
#[derive(Clone, Debug)]
pub struct Trust {
    config: Arc<rustls::ClientConfig>,
    ca_file: Option<PathBuf>,
    roots: usize,
}

impl Trust {
    /// The system store (or `SSL_CERT_FILE`/`SSL_CERT_DIR`), Mozilla's
    /// roots, and `ca_file` if given. A named file that cannot be read or
    /// holds no certificate is an error, never silently skipped.
    pub fn load(ca_file: Option<&Path>) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());

        let native = rustls_native_certs::load_native_certs();
        let from_env = env_locations();
        if !native.errors.is_empty() {
            let detail = native
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            match from_env {
                // The user named these locations: a mistake there must show.
                Some((name, path)) => {
                    return Err(TlsError::CaFile {
                        path,
                        source_name: name.into(),
                        detail,
                    })
                }
                None => tracing::debug!(%detail, "parts of the system's CA store were unreadable"),
            }
        }
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            if let Some((name, path)) = from_env {
                return Err(TlsError::CaFile {
                    path,
                    source_name: name.into(),
                    detail: "no PEM certificate in it".into(),
                });
            }
        }

        if let Some(path) = ca_file {
            let certs = read_pem_certificates(path)?;
            for cert in certs {
                roots.add(cert).map_err(|e| TlsError::CaFile {
                    path: path.to_owned(),
                    source_name: "the CA file setting".into(),
                    detail: format!("not a usable CA certificate: {e}"),
                })?;
            }
        }

        let count = roots.len();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            ca_file: ca_file.map(Path::to_owned),
            roots: count,
        })
    }

    /// The rustls client configuration (no ALPN: HTTP/1.1, which both the
    /// REST client and WebSocket upgrades use).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    /// The extra CA file, if one was configured.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// How many root certificates are trusted in all.
    pub fn root_count(&self) -> usize {
        self.roots
    }
}

/// `SSL_CERT_FILE` or `SSL_CERT_DIR` if set (then they replace the system
/// store), for error messages.
fn env_locations() -> Option<(&'static str, PathBuf)> {
    ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .into_iter()
        .find_map(|name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(|v| (name, PathBuf::from(v)))
        })
}

/// Every certificate in a PEM file; at least one.
fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |detail: String| TlsError::CaFile {
        path: path.to_owned(),
        source_name: "the CA file setting".into(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("not a PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(error("no `-----BEGIN CERTIFICATE-----` block in it".into()));
    }
    Ok(certs)
}

static PROCESS_TRUST: RwLock<Option<Trust>> = RwLock::new(None);

/// Loads and installs the trust every later outbound connection of this
/// process uses. Called by the binary once it knows its settings (flag,
/// environment, config file); the last call wins.
pub fn install_process_trust(ca_file: Option<&Path>) -> Result<Trust, TlsError> {
    let trust = Trust::load(ca_file)?;
    tracing::debug!(roots = trust.root_count(), ca_file = ?ca_file, "TLS trust installed");
    *PROCESS_TRUST.write().unwrap_or_else(|e| e.into_inner()) = Some(trust.clone());
    Ok(trust)
}

/// The installed trust; if none was installed, the default one (with
/// `LATTICE_CA_FILE` from the environment), loaded once and kept.
pub fn process_trust() -> Result<Trust, TlsError> {
    if let Some(trust) = PROCESS_TRUST
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        return Ok(trust.clone());
    }
    let ca_file = std::env::var_os(CA_FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    install_process_trust(ca_file.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_adds_to_the_bundled_roots() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let without = Trust::load(None).unwrap();
        let with = Trust::load(Some(&path)).unwrap();
        assert_eq!(with.root_count(), without.root_count() + 1);
        assert_eq!(with.ca_file(), Some(path.as_path()));
    }

    #[test]
    fn an_unusable_ca_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = Trust::load(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Trust::load(Some(&empty)).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("BEGIN CERTIFICATE"),
            "{err}"
        );
    }
}
