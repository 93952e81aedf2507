//! The certificate the service serves itself (`--tls-cert`, `--tls-key`).
//!
//! Handshakes ask the resolver for the current certificate, so a renewal
//! takes effect for the next connection without a restart: the files are
//! read again on SIGHUP and whenever their content changes (checked every
//! [`RELOAD_POLL`]). A new pair that does not load
//! (half-written, key and certificate that do not match) is logged and the
//! old one kept; it is tried again when the files change again. Changes are
//! noticed by content, not modification time: two writes within one clock
//! tick of the file system would otherwise look the same.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{provider, TlsError};

/// How often the certificate files are checked for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// What the files held when last read: a hash of each one's bytes.
type FileStamp = [Option<u64>; 2];

/// A certificate chain and key from two PEM files, reloadable.
#[derive(Debug)]
pub struct ServerCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The stamp of the files last tried (loaded or refused), so a broken
    /// pair is reported once, not every poll.
    tried: Mutex<FileStamp>,
}

impl ServerCert {
    /// Reads both files; an unusable pair is an error naming the file.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let stamp = stamp(cert_path, key_path);
        let key = read_pair(cert_path, key_path)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
            tried: Mutex::new(stamp),
        }))
    }

    /// A server configuration that serves the current certificate (HTTP/1.1,
    /// TLS 1.2 and 1.3).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reads the files again now; on error the served certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = stamp(&self.cert_path, &self.key_path);
        *self.tried.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        let key = read_pair(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// Reloads if either file changed since it was last read; `Ok(true)`
    /// when a new certificate is now served.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.cert_path, &self.key_path);
        if *self.tried.lock().unwrap_or_else(|e| e.into_inner()) == now {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// The DER of the leaf certificate served now.
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cert
            .first()
            .cloned()
            .expect("a loaded chain has a leaf")
    }

    /// Reloads on SIGHUP and when the files change, until the task is
    /// aborted. Outcomes are logged.
    pub fn spawn_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let cert = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut poll = tokio::time::interval(RELOAD_POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let signalled = async {
                    match hangup.as_mut() {
                        Some(s) => s.recv().await.is_some(),
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let signalled = std::future::pending::<bool>();
                let forced = tokio::select! {
                    true = signalled => true,
                    _ = poll.tick() => false,
                };
                // Reading the files blocks: not on an async worker thread.
                let cert2 = cert.clone();
                let outcome = tokio::task::spawn_blocking(move || {
                    if forced {
                        cert2.reload().map(|()| true)
                    } else {
                        cert2.reload_if_changed()
                    }
                })
                .await
                .unwrap_or_else(|e| Err(TlsError::Config(format!("reload task: {e}"))));
                match outcome {
                    Ok(true) => tracing::info!(
                        cert = %cert.cert_path.display(),
                        "TLS certificate reloaded"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::error!(
                        error = %e,
                        "TLS certificate not reloaded; still serving the previous one"
                    ),
                }
            }
        })
    }
}

/// The resolver handshakes ask: always the current pair.
#[derive(Debug)]
struct Resolver(Arc<ServerCert>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn stamp(cert: &Path, key: &Path) -> FileStamp {
    let one = |path: &Path| {
        let bytes = std::fs::read(path).ok()?;
        let mut hasher = std::hash::DefaultHasher::new();
        bytes.hash(&mut hasher);
        Some(hasher.finish())
    };
    [one(cert), one(key)]
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_error = |detail: String| TlsError::ServerFile {
        what: "certificate",
        path: cert_path.to_owned(),
        detail,
    };
    let key_error = |detail: String| TlsError::ServerFile {
        what: "key",
        path: key_path.to_owned(),
        detail,
    };
    let cert_bytes = std::fs::read(cert_path).map_err(|e| cert_error(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("not a PEM file: {e}")))?;
    if chain.is_empty() {
        return Err(cert_error(
            "no `-----BEGIN CERTIFICATE-----` block in it".into(),
        ));
    }
    let key_bytes = std::fs::read(key_path).map_err(|e| key_error(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|e| key_error(format!("no PEM private key in it: {e}")))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        key_error(format!(
            "does not match the certificate {} or is not supported: {e}",
            cert_path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let pair = rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, pair.cert.pem()).unwrap();
        std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn reloads_a_changed_pair_and_keeps_the_old_one_when_the_new_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "first.test");
        let served = ServerCert::load(&cert, &key).unwrap();
        let first = served.leaf();
        assert!(!served.reload_if_changed().unwrap(), "nothing changed yet");

        // A certificate whose key is not there yet: refused, old one kept.
        let other = rcgen::generate_simple_self_signed(vec!["second.test".into()]).unwrap();
        std::fs::write(&cert, other.cert.pem()).unwrap();
        let err = served.reload_if_changed().unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        assert_eq!(served.leaf(), first);
        // Reported once: the same files are not tried again.
        assert!(!served.reload_if_changed().unwrap());

        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        assert!(served.reload_if_changed().unwrap());
        assert_ne!(served.leaf(), first);
        assert_eq!(served.leaf().as_ref(), other.cert.der().as_ref());
    }

    #[test]
    fn unusable_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a.test");
        let missing = dir.path().join("nope.pem");
        let err = ServerCert::load(&missing, &key).unwrap_err().to_string();
        assert!(
            err.contains("certificate") && err.contains("nope.pem"),
            "{err}"
        );
        std::fs::write(&key, "garbage").unwrap();
        let err = ServerCert::load(&cert, &key).unwrap_err().to_string();
        assert!(err.contains("key") && err.contains("key.pem"), "{err}");
    }
}
