//! The result stream of a batch: a WebSocket of JSON [`StreamEvent`]s.

use futures::StreamExt;
use lattice_protocol::compute::StreamEvent;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::{Client, ClientError, ClientResult};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Final tasks of a batch as they land, then `Done`.
pub struct BatchStream {
    socket: Socket,
}

impl BatchStream {
    pub(crate) async fn open(
        client: &Client,
        batch: lattice_protocol::BatchId,
    ) -> ClientResult<Self> {
        let url = client.batch_stream_url(batch);
        let transport = |detail: String| ClientError::Transport {
            url: client.base_url().to_string(),
            detail,
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| transport(e.to_string()))?;
        if let Some(token) = client.bearer() {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                ClientError::NotConfigured("the token is not a valid header value".into())
            })?;
            request.headers_mut().insert("authorization", value);
        }
        // disable_nagle: results are small frames that must not wait.
        match tokio_tungstenite::connect_async_with_config(request, None, true).await {
            Ok((socket, _)) => Ok(Self { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok());
                match body {
                    Some(body) => Err(ClientError::Api { status, body }),
                    None => Err(transport(format!(
                        "result stream refused with HTTP {status}"
                    ))),
                }
            }
            Err(e) => Err(transport(format!("opening the result stream: {e}"))),
        }
    }

    /// The next event; `None` once the service closed the stream.
    pub async fn next(&mut self) -> ClientResult<Option<StreamEvent>> {
        loop {
            match self.socket.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text).map(Some).map_err(|e| {
                        ClientError::Transport {
                            url: String::new(),
                            detail: format!("unexpected stream message: {e}"),
                        }
                    })
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    return Err(ClientError::Transport {
                        url: String::new(),
                        detail: format!("result stream broke: {e}"),
                    })
                }
            }
        }
    }
}
