//! The result stream of a batch: a WebSocket of JSON [`StreamEvent`]s.

use futures::StreamExt;
use lattice_protocol::compute::StreamEvent;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::websocket::{self, Socket};
use crate::{Client, ClientError, ClientResult};

/// Final tasks of a batch as they land, then `Done`.
pub struct BatchStream {
    socket: Socket,
    /// The service's URL, for error messages.
    url: String,
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
        match websocket::connect(request, None).await {
            Ok(socket) => Ok(Self {
                socket,
                url: client.base_url().to_string(),
            }),
            Err(e) => match websocket::refusal_body(&e) {
                Some((status, body)) => Err(ClientError::Api { status, body }),
                None => Err(transport(format!(
                    "opening the result stream: {}",
                    websocket::describe_error(&url, &e)
                ))),
            },
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
                            url: self.url.clone(),
                            detail: format!("unexpected stream message: {e}"),
                        }
                    })
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    return Err(ClientError::Transport {
                        url: self.url.clone(),
                        detail: format!("result stream broke: {e}"),
                    })
                }
            }
        }
    }
}
