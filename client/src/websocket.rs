//! Opening WebSockets to the service (`ws://` and `wss://`) with the
//! process's TLS trust, and describing why one could not be opened.
//!
//! Every WebSocket of the CLI, the SDK's Rust side and the agent goes
//! through [`connect`], so `wss://` trusts exactly what REST calls trust.

use lattice_protocol::ErrorBody;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::Connector;

/// An open WebSocket to the service.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects (TCP_NODELAY set: frames are small and must not wait). A
/// `wss://` URL uses [`lattice_tls::process_trust`]; a trust that cannot be
/// loaded (a missing CA file) fails the connection with that reason.
pub async fn connect(
    request: impl IntoClientRequest + Unpin,
    config: Option<WebSocketConfig>,
) -> Result<Socket, WsError> {
    let trust = lattice_tls::process_trust().map_err(|e| WsError::Io(std::io::Error::other(e)))?;
    let connector = Connector::Rustls(trust.client_config());
    let (socket, _) =
        tokio_tungstenite::connect_async_tls_with_config(request, config, true, Some(connector))
            .await?;
    Ok(socket)
}

/// The service's JSON error body when it refused the upgrade with one.
pub fn refusal_body(error: &WsError) -> Option<(u16, ErrorBody)> {
    match error {
        WsError::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<ErrorBody>(b).ok())?;
            Some((response.status().as_u16(), body))
        }
        _ => None,
    }
}

/// One sentence for a failed WebSocket to `url`: certificate problems and
/// plain `ws://` to a TLS port in words, the service's own error message
/// when it sent one.
pub fn describe_error(url: &url::Url, error: &WsError) -> String {
    let host = crate::authority(url);
    if let WsError::Http(response) = error {
        let status = response.status().as_u16();
        let body = response.body().as_deref().unwrap_or_default();
        if lattice_tls::is_plain_http_refusal(status, body) {
            return crate::plain_http_hint(url);
        }
        return match refusal_body(error) {
            Some((_, body)) => format!("HTTP {status}: {}", body.message),
            None => format!("HTTP {status}"),
        };
    }
    if let Some(text) = lattice_tls::explain(error, &host) {
        return text;
    }
    match error {
        WsError::Io(e) => format!("{host}: {e}"),
        other => other.to_string(),
    }
}
