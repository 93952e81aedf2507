//! Agent identities (self-signed certificates) and pinning by fingerprint.
//!
//! There is no certificate authority: each agent generates a self-signed
//! certificate once, registers its SHA-256 fingerprint with the service, and
//! the service hands each side of a transfer the other's fingerprint. TLS 1.3
//! still proves possession of the private key (the handshake signature is
//! verified); the pinned fingerprint replaces the chain of trust.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::EndpointError;

/// ALPN of the data channel.
pub(crate) const ALPN: &[u8] = b"lattice-transfer/1";
/// The name every agent certificate carries (pinning makes it irrelevant).
pub(crate) const SERVER_NAME: &str = "lattice-agent";

/// SHA-256 of a certificate's DER; text form is 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_start_matches("sha256:");
        let bytes = hex::decode(text).map_err(|e| format!("fingerprint `{text}`: {e}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("fingerprint `{text}`: expected 64 hex digits"))?;
        Ok(Fingerprint(bytes))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", &self.to_hex()[..16])
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Fingerprint::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An agent's certificate and private key. Generate once and keep it (see
/// [`AgentIdentity::load_or_generate`]) so the registered fingerprint stays valid.
#[derive(Clone)]
pub struct AgentIdentity {
    cert: CertificateDer<'static>,
    key: Arc<PrivatePkcs8KeyDer<'static>>,
    fingerprint: Fingerprint,
}

impl fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl AgentIdentity {
    /// A fresh self-signed certificate (ECDSA P-256).
    pub fn generate() -> Result<Self, EndpointError> {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .map_err(|e| EndpointError::Certificate(e.to_string()))?;
        Ok(Self::from_der(
            certified.cert.der().to_vec(),
            certified.signing_key.serialize_der(),
        ))
    }

    /// From a DER certificate and a PKCS#8 DER private key.
    pub fn from_der(cert: Vec<u8>, pkcs8_key: Vec<u8>) -> Self {
        let fingerprint = Fingerprint::of_der(&cert);
        AgentIdentity {
            cert: CertificateDer::from(cert),
            key: Arc::new(PrivatePkcs8KeyDer::from(pkcs8_key)),
            fingerprint,
        }
    }

    /// Loads `dir/transfer-cert.der` + `dir/transfer-key.der`, generating and
    /// saving them (key mode 0600) the first time. Blocking.
    pub fn load_or_generate(dir: &Path) -> Result<Self, EndpointError> {
        use std::os::unix::fs::OpenOptionsExt;
        let cert_path = dir.join("transfer-cert.der");
        let key_path = dir.join("transfer-key.der");
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| EndpointError::Io { op, path, source }
        };
        if cert_path.exists() && key_path.exists() {
            let cert = std::fs::read(&cert_path).map_err(io("reading", &cert_path))?;
            let key = std::fs::read(&key_path).map_err(io("reading", &key_path))?;
            return Ok(Self::from_der(cert, key));
        }
        let identity = Self::generate()?;
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let mut key_file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(io("writing", &key_path))?;
        std::io::Write::write_all(&mut key_file, identity.key.secret_pkcs8_der())
            .map_err(io("writing", &key_path))?;
        std::fs::write(&cert_path, identity.cert.as_ref()).map_err(io("writing", &cert_path))?;
        Ok(identity)
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub fn certificate_der(&self) -> &[u8] {
        self.cert.as_ref()
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server side: requires a client certificate and checks its handshake
/// signature; which fingerprint is acceptable depends on the transfer, so
/// that check happens after the handshake, per connection.
pub(crate) fn server_config(
    identity: &AgentIdentity,
) -> Result<rustls::ServerConfig, EndpointError> {
    let provider = provider();
    let verifier = Arc::new(AnyClientCert {
        provider: provider.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| EndpointError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key())
        .map_err(|e| EndpointError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Client side: accepts only the server certificate with `pinned`'s fingerprint.
pub(crate) fn client_config(
    identity: &AgentIdentity,
    pinned: Fingerprint,
) -> Result<rustls::ClientConfig, EndpointError> {
    let provider = provider();
    let verifier = Arc::new(PinnedServer {
        pinned,
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| EndpointError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key())
        .map_err(|e| EndpointError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The signature checks of a verifier with a `provider`: the provider's
/// algorithms, for TLS 1.2 and 1.3 alike.
macro_rules! provider_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

#[derive(Debug)]
struct PinnedServer {
    pinned: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Fingerprint::of_der(end_entity) == self.pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "peer certificate fingerprint {} is not the pinned {}",
                Fingerprint::of_der(end_entity),
                self.pinned
            )))
        }
    }

    provider_signature_checks!();
}

#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    provider_signature_checks!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trips_as_hex() {
        let identity = AgentIdentity::generate().unwrap();
        let fp = identity.fingerprint();
        assert_eq!(Fingerprint::parse(&fp.to_hex()).unwrap(), fp);
        assert_eq!(Fingerprint::of_der(identity.certificate_der()), fp);
        assert!(Fingerprint::parse("abc").is_err());
    }
}
