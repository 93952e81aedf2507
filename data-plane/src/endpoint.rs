//! [`TransferEndpoint`]: the agent's long-lived QUIC endpoint.
//!
//! Built once per agent (it owns the UDP socket, the certificate and an
//! accept loop); every transfer, in either direction, goes through it. The
//! destination of a transfer listens: it registers the transfer (id, one-time
//! credential, the source's fingerprint) and the accept loop hands it the
//! source's connections once they present the right credential and
//! certificate. The source connects, pinning the destination's fingerprint.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    Connection, IdleTimeout, MtuDiscoveryConfig, RecvStream, SendStream, TransportConfig, VarInt,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::error::{EndpointError, FaultCode, TransferError};
use crate::spec::Credential;
use crate::tls::{self, AgentIdentity, Fingerprint};
use crate::wire::{self, Hello, Welcome};

/// Settings of a [`TransferEndpoint`].
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// UDP address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// A connection with no packets for this long is lost (CONNECTION_RESET).
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
    /// How long a destination waits for its source to connect (CONNECT_FAILED after).
    pub accept_timeout: Duration,
    /// How long a source tries to reach its destination.
    pub connect_timeout: Duration,
    /// Largest UDP payload path MTU discovery may try. With
    /// `segmentation_offload` it is capped at 6,500 bytes (ten datagrams per
    /// 64 KiB batch); to loopback addresses ~64 KiB datagrams are used
    /// instead (without segmentation offload).
    pub mtu_upper_bound: u16,
    /// UDP payload size used before path MTU discovery (at least 1200).
    pub initial_mtu: u16,
    /// Let the kernel segment batches of datagrams (UDP GSO).
    pub segmentation_offload: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            idle_timeout: Duration::from_secs(15),
            keep_alive: Duration::from_secs(3),
            accept_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
            mtu_upper_bound: 9000,
            initial_mtu: 1200,
            segmentation_offload: true,
        }
    }
}

/// A connection the accept loop authenticated for a registered transfer.
pub(crate) struct Accepted {
    pub connection: Connection,
    pub index: u32,
    /// The control stream (connection 0 only).
    pub control: Option<(SendStream, RecvStream)>,
}

struct Registration {
    credential: Credential,
    peer: Fingerprint,
    sender: mpsc::UnboundedSender<Accepted>,
}

struct Inner {
    endpoint: quinn::Endpoint,
    identity: AgentIdentity,
    config: EndpointConfig,
    registrations: Mutex<HashMap<String, Registration>>,
}

/// The agent's QUIC endpoint (socket + certificate + accept loop). Costly to
/// build, cheap to clone; keep one per agent for its whole life.
#[derive(Clone)]
pub struct TransferEndpoint {
    inner: Arc<Inner>,
    _accept_loop: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for TransferEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferEndpoint")
            .field("local_addr", &self.local_addr())
            .field("fingerprint", &self.inner.identity.fingerprint())
            .finish()
    }
}

impl TransferEndpoint {
    /// Binds the UDP socket and starts the accept loop. Must be called
    /// inside a tokio runtime.
    pub fn bind(identity: AgentIdentity, config: EndpointConfig) -> Result<Self, EndpointError> {
        let socket = UdpSocket::bind(config.listen).map_err(|source| EndpointError::Bind {
            addr: config.listen,
            source,
        })?;
        enlarge_socket_buffers(&socket);
        let server_crypto = tls::server_config(&identity)?;
        let server_crypto = QuicServerConfig::try_from(server_crypto)
            .map_err(|e| EndpointError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(Arc::new(transport(&config, false)));
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(65_527)
            .map_err(|e| EndpointError::Tls(e.to_string()))?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| EndpointError::Bind {
            addr: config.listen,
            source,
        })?;
        let inner = Arc::new(Inner {
            endpoint: endpoint.clone(),
            identity,
            config,
            registrations: Mutex::new(HashMap::new()),
        });
        let accept_loop = tokio::spawn(accept_loop(Arc::downgrade(&inner), endpoint));
        Ok(TransferEndpoint {
            inner,
            _accept_loop: Arc::new(AbortOnDrop(accept_loop)),
        })
    }

    /// The bound address (tell the service; sources connect here).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner
            .endpoint
            .local_addr()
            .expect("bound UDP socket has an address")
    }

    /// SHA-256 of this agent's certificate (register it with the service).
    pub fn fingerprint(&self) -> Fingerprint {
        self.inner.identity.fingerprint()
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.inner.config
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.inner
            .endpoint
            .close(VarInt::from_u32(wire::CLOSE_ABORT), b"agent shutting down");
    }

    /// Expects a source for `transfer_id`; connections arrive on the receiver.
    pub(crate) fn register(
        &self,
        transfer_id: &str,
        credential: Credential,
        peer: Fingerprint,
    ) -> Result<Registered, TransferError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut registrations = self.inner.registrations.lock().expect("registrations lock");
        if registrations.contains_key(transfer_id) {
            return Err(TransferError::fatal(
                FaultCode::ProtocolError,
                format!("transfer {transfer_id} is already running on this agent"),
            ));
        }
        registrations.insert(
            transfer_id.to_string(),
            Registration {
                credential,
                peer,
                sender,
            },
        );
        Ok(Registered {
            endpoint: self.clone(),
            transfer_id: transfer_id.to_string(),
            receiver,
        })
    }

    /// Opens connection `index` of a transfer and authenticates it.
    pub(crate) async fn connect(
        &self,
        addr: SocketAddr,
        pinned: Fingerprint,
        transfer_id: &str,
        credential: &Credential,
        index: u32,
    ) -> Result<(Connection, SendStream, RecvStream), TransferError> {
        let connect_failed =
            |message: String| TransferError::new(FaultCode::ConnectFailed, message);
        let crypto = tls::client_config(&self.inner.identity, pinned)
            .map_err(|e| connect_failed(e.to_string()))?;
        let crypto =
            QuicClientConfig::try_from(crypto).map_err(|e| connect_failed(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(transport(
            &self.inner.config,
            addr.ip().is_loopback(),
        )));
        let connecting = self
            .inner
            .endpoint
            .connect_with(client, addr, tls::SERVER_NAME)
            .map_err(|e| connect_failed(format!("connecting to {addr}: {e}")))?;
        let connection = tokio::time::timeout(self.inner.config.connect_timeout, connecting)
            .await
            .map_err(|_| {
                connect_failed(format!(
                    "no answer from {addr} within {:?}",
                    self.inner.config.connect_timeout
                ))
            })?
            .map_err(|e| connect_failed(format!("connecting to {addr}: {e}")))?;
        let handshake = async {
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|e| wire::connection_error(&e))?;
            wire::write_frame(
                &mut send,
                &Hello {
                    version: wire::PROTOCOL_VERSION,
                    transfer_id: transfer_id.to_string(),
                    credential: credential.0.clone(),
                    connection_index: index,
                },
            )
            .await?;
            match wire::read_frame::<Welcome>(&mut recv).await {
                Ok(Some(Welcome::Accepted)) => Ok((send, recv)),
                Ok(Some(Welcome::Rejected { reason })) => {
                    Err(TransferError::fatal(FaultCode::AuthFailed, reason))
                }
                Ok(None) => Err(TransferError::protocol(
                    "the destination closed the handshake",
                )),
                Err(e) => match connection.close_reason() {
                    Some(quinn::ConnectionError::ApplicationClosed(close))
                        if close.error_code == VarInt::from_u32(wire::CLOSE_REJECTED) =>
                    {
                        Err(TransferError::fatal(
                            FaultCode::AuthFailed,
                            String::from_utf8_lossy(&close.reason).into_owned(),
                        ))
                    }
                    _ => Err(e),
                },
            }
        };
        let (send, recv) = tokio::time::timeout(self.inner.config.connect_timeout, handshake)
            .await
            .map_err(|_| {
                connect_failed(format!("{addr} did not answer the transfer handshake"))
            })??;
        Ok((connection, send, recv))
    }
}

/// A registered destination transfer; unregisters on drop.
pub(crate) struct Registered {
    endpoint: TransferEndpoint,
    transfer_id: String,
    pub receiver: mpsc::UnboundedReceiver<Accepted>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut registrations) = self.endpoint.inner.registrations.lock() {
            registrations.remove(&self.transfer_id);
        }
    }
}

/// Largest UDP payload tried on loopback (IPv6 loopback allows 65,487 bytes).
const LOOPBACK_MTU: u16 = 65_000;
/// Largest UDP payload with segmentation offload: 10 of them fit in 64 KiB.
const GSO_MAX_MTU: u16 = 6_500;

fn transport(config: &EndpointConfig, loopback: bool) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_uni_streams(VarInt::from_u32(1024));
    t.max_concurrent_bidi_streams(VarInt::from_u32(16));
    t.stream_receive_window(VarInt::from_u32(4 << 20));
    t.receive_window(VarInt::from_u32(16 << 20));
    t.send_window(16 << 20);
    // Fill each packet from one stream rather than round-robin slices of
    // all of them: fewer of a big file's streams are written at once (they
    // contend on the file's inode lock), and the receiver gets long pieces
    // that blake3 hashes on its wide SIMD path (a piece that starts or ends
    // mid-KiB costs a slow single-block compression).
    t.send_fairness(false);
    t.max_idle_timeout(IdleTimeout::try_from(config.idle_timeout).ok());
    t.keep_alive_interval(Some(config.keep_alive));
    let mut mtu = MtuDiscoveryConfig::default();
    t.initial_mtu(config.initial_mtu);
    // quinn sends up to 10 datagrams per GSO batch, and the kernel refuses
    // (EMSGSIZE, which quinn treats as a silent loss) a batch over 64 KiB:
    // with segmentation offload, datagrams must stay under 6.5 KB, or every
    // batch is lost and the black-hole detector falls back to 1200 bytes.
    let upper = if loopback {
        // Loopback carries ~64 KiB datagrams: one per system call beats ten
        // small ones (per-packet costs -- crypto setup, acks, loss
        // detection -- dominate), so no GSO there.
        t.enable_segmentation_offload(false);
        // A burst of losses (a receive buffer overflowing while the peer is
        // busy) looks like a black hole for large datagrams and drops the MTU
        // back to 1200; loopback has no such holes, so search again soon
        // instead of after quinn's default minute.
        mtu.black_hole_cooldown(Duration::from_secs(1));
        config.mtu_upper_bound.max(LOOPBACK_MTU)
    } else if config.segmentation_offload {
        t.enable_segmentation_offload(true);
        config.mtu_upper_bound.min(GSO_MAX_MTU)
    } else {
        t.enable_segmentation_offload(false);
        config.mtu_upper_bound
    };
    mtu.upper_bound(upper.max(config.initial_mtu).max(1200));
    t.mtu_discovery_config(Some(mtu));
    t
}

/// Asks for large socket buffers: a receiver that is briefly busy (hashing,
/// writing) must not drop datagrams, which the sender would count as losses
/// (halving its window). The `*FORCE` options pass `net.core.rmem_max` and
/// work with CAP_NET_ADMIN; otherwise the plain ones are clamped to it.
fn enlarge_socket_buffers(socket: &UdpSocket) {
    let size: libc::c_int = 16 << 20;
    for (forced, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        for option in [forced, plain] {
            // SAFETY: setsockopt on an owned, open socket with a c_int value.
            let done = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    &size as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            } == 0;
            if done {
                break;
            }
        }
    }
}

async fn accept_loop(inner: std::sync::Weak<Inner>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let Some(inner) = inner.upgrade() else { break };
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            if let Err(reason) = handshake(&inner, incoming).await {
                warn!(%remote, %reason, "refused a data connection");
            }
        });
    }
}

async fn handshake(inner: &Inner, incoming: quinn::Incoming) -> Result<(), String> {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    let connection = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming)
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let peer = connection
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|certs| certs.first().map(|c| Fingerprint::of_der(c)));
    let (mut send, mut recv) = tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.accept_bi())
        .await
        .map_err(|_| "no hello within 10 s".to_string())?
        .map_err(|e| format!("waiting for hello: {e}"))?;
    let hello: Hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, wire::read_frame(&mut recv))
        .await
        .map_err(|_| "no hello within 10 s".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "stream closed before hello".to_string())?;
    // The source may be told to connect a moment before the destination has
    // registered the transfer: wait a little for the registration.
    let waited = tokio::time::Instant::now();
    let sender = loop {
        let found = {
            let registrations = inner.registrations.lock().expect("registrations lock");
            registrations.get(&hello.transfer_id).map(|r| {
                (hello.version == wire::PROTOCOL_VERSION
                    && r.credential.matches(&hello.credential)
                    && Some(r.peer) == peer)
                    .then(|| r.sender.clone())
            })
        };
        match found {
            Some(sender) => break sender,
            None if waited.elapsed() < HANDSHAKE_TIMEOUT => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            None => break None,
        }
    };
    let Some(sender) = sender else {
        let reason = format!(
            "transfer {} is not expected here, or its credential or certificate is wrong",
            hello.transfer_id
        );
        connection.close(VarInt::from_u32(wire::CLOSE_REJECTED), reason.as_bytes());
        return Err(reason);
    };
    wire::write_frame(&mut send, &Welcome::Accepted)
        .await
        .map_err(|e| e.to_string())?;
    debug!(transfer_id = %hello.transfer_id, index = hello.connection_index, "data connection accepted");
    let control = (hello.connection_index == 0).then_some((send, recv));
    sender
        .send(Accepted {
            connection,
            index: hello.connection_index,
            control,
        })
        .map_err(|_| "the transfer is no longer waiting".to_string())
}
