//! The control channel: one outbound WebSocket to the service, reconnected
//! forever with jittered exponential backoff. Each binary message is one
//! MessagePack frame ([`AgentFrame`] up, [`ServiceFrame`] down).
//!
//! The channel task does the `Hello` / `Welcome` handshake itself, then
//! reports [`ChannelEvent::Up`] with a sender for outgoing frames; all other
//! decisions are the agent loop's.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use lattice_client::websocket::describe_error;
use lattice_protocol::frames::{AgentFrame, ServiceFrame};
use lattice_protocol::framing::{self, FrameError, MAX_FRAME_BYTES};
use lattice_protocol::EndpointId;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Why `serve` returned when the agent itself let go of the channel: a clean
/// shutdown, not a lost connection.
const AGENT_STOPPED: &str = "the agent stopped";

/// Connecting, and the service's `Welcome`, must each happen this fast.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// What happened on the channel.
#[derive(Debug)]
pub(crate) enum ChannelEvent {
    /// Connected and welcomed; frames sent to `sender` go to the service
    /// until the matching `Down`.
    Up {
        sender: mpsc::UnboundedSender<AgentFrame>,
    },
    Frame(ServiceFrame),
    Down {
        reason: String,
    },
}

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub(crate) struct ChannelParams {
    pub(crate) url: url::Url,
    pub(crate) agent_secret: String,
    pub(crate) endpoint_id: EndpointId,
    pub(crate) hostname: String,
    pub(crate) backoff: BackoffPolicy,
    /// Announce multi-user mode in the hello.
    pub(crate) multi_user: bool,
}

/// Reconnect delays: `initial` doubling up to `max`, each ±25%.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BackoffPolicy {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// The state of a backoff sequence.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: BackoffPolicy,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            next: policy.initial,
        }
    }

    /// After a success: start again from `initial`.
    pub(crate) fn reset(&mut self) {
        self.next = self.policy.initial;
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.policy.max);
        let factor = rand::rng().random_range(0.75..=1.25);
        base.mul_f64(factor).min(self.policy.max)
    }
}

/// Starts the channel task; it runs until aborted or `events` is closed.
pub(crate) fn spawn(
    params: ChannelParams,
    events: mpsc::UnboundedSender<ChannelEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Backoff::new(params.backoff);
        let mut failures = 0u32;
        loop {
            match connect(&params).await {
                Ok(ws) => {
                    backoff.reset();
                    failures = 0;
                    tracing::info!(url = %params.url, endpoint_id = %params.endpoint_id, "connected to the service");
                    let reason = serve(ws, &events, &params.url).await;
                    if reason == AGENT_STOPPED {
                        tracing::debug!("channel closed: the agent stopped");
                        return;
                    }
                    if events
                        .send(ChannelEvent::Down {
                            reason: reason.clone(),
                        })
                        .is_err()
                    {
                        return;
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(retry_in = ?delay, "lost the connection to the service: {reason}");
                    tokio::time::sleep(delay).await;
                }
                Err(reason) => {
                    failures += 1;
                    let delay = backoff.next_delay();
                    tracing::warn!(url = %params.url, attempt = failures, retry_in = ?delay, "cannot connect to the service: {reason}");
                    tokio::time::sleep(delay).await;
                }
            }
            if events.is_closed() {
                return;
            }
        }
    })
}

type Ws = lattice_client::websocket::Socket;

async fn connect(params: &ChannelParams) -> Result<Ws, String> {
    let mut request = params
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("invalid channel URL {}: {e}", params.url))?;
    let bearer = format!("Bearer {}", params.agent_secret)
        .parse()
        .map_err(|_| "the agent secret is not a valid header value".to_owned())?;
    request.headers_mut().insert("authorization", bearer);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES + 1024))
        .max_frame_size(Some(MAX_FRAME_BYTES + 1024));
    let mut ws = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        lattice_client::websocket::connect(request, Some(config)),
    )
    .await
    .map_err(|_| format!("no answer within {HANDSHAKE_TIMEOUT:?}"))?
    .map_err(|e| describe_error(&params.url, &e))?;

    let hello = AgentFrame::Hello {
        endpoint_id: params.endpoint_id,
        agent_version: lattice_protocol::VERSION.to_owned(),
        hostname: params.hostname.clone(),
        multi_user: params.multi_user,
    };
    let bytes = framing::encode(&hello).map_err(|e| e.to_string())?;
    ws.send(Message::Binary(bytes.into()))
        .await
        .map_err(|e| describe_error(&params.url, &e))?;
    let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    return match framing::decode::<ServiceFrame>(&bytes) {
                        Ok(ServiceFrame::Welcome { endpoint_id })
                            if endpoint_id == params.endpoint_id =>
                        {
                            Ok(())
                        }
                        Ok(ServiceFrame::Welcome { endpoint_id }) => Err(format!(
                            "the service welcomed endpoint {endpoint_id}, not {}",
                            params.endpoint_id
                        )),
                        Ok(ServiceFrame::Error { message }) => {
                            Err(format!("the service refused: {message}"))
                        }
                        Ok(other) => Err(format!("expected a welcome, got {other:?}")),
                        Err(e) => Err(format!("bad frame from the service: {e}")),
                    };
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(match frame {
                        Some(f) if !f.reason.is_empty() => {
                            format!("the service closed the channel: {}", f.reason)
                        }
                        _ => "the service closed the channel".to_owned(),
                    })
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(describe_error(&params.url, &e)),
                None => return Err("the service closed the channel".to_owned()),
            }
        }
    })
    .await
    .map_err(|_| format!("no welcome within {HANDSHAKE_TIMEOUT:?}"))?;
    welcome?;
    Ok(ws)
}

/// Relays frames until the connection ends; returns why it ended.
async fn serve(ws: Ws, events: &mpsc::UnboundedSender<ChannelEvent>, url: &url::Url) -> String {
    let (mut sink, mut stream) = ws.split();
    let (sender, mut outgoing) = mpsc::unbounded_channel::<AgentFrame>();
    if events.send(ChannelEvent::Up { sender }).is_err() {
        return AGENT_STOPPED.to_owned();
    }
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Binary(bytes))) => match framing::decode::<ServiceFrame>(&bytes) {
                    Ok(ServiceFrame::Error { message }) => {
                        let _ = sink.close().await;
                        return format!("the service closed the channel: {message}");
                    }
                    Ok(frame) => {
                        if events.send(ChannelEvent::Frame(frame)).is_err() {
                            return AGENT_STOPPED.to_owned();
                        }
                    }
                    Err(e) => tracing::warn!("ignoring a bad frame from the service: {e}"),
                },
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(f) if !f.reason.is_empty() => format!("the service closed the channel: {}", f.reason),
                        _ => "the service closed the channel".to_owned(),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return describe_error(url, &e),
                None => return "the connection closed".to_owned(),
            },
            frame = outgoing.recv() => {
                let Some(frame) = frame else {
                    let _ = sink.close().await;
                    return AGENT_STOPPED.to_owned();
                };
                for bytes in encode_split(frame) {
                    if let Err(e) = sink.send(Message::Binary(bytes.into())).await {
                        return describe_error(url, &e);
                    }
                }
            }
        }
    }
}

/// Encodes a frame, splitting a `Results` batch that is over the size limit.
pub(crate) fn encode_split(frame: AgentFrame) -> Vec<Vec<u8>> {
    match framing::encode(&frame) {
        Ok(bytes) => vec![bytes],
        Err(FrameError::TooLarge { .. }) => match frame {
            AgentFrame::Results { mut results } if results.len() > 1 => {
                let rest = results.split_off(results.len() / 2);
                let mut out = encode_split(AgentFrame::Results { results });
                out.extend(encode_split(AgentFrame::Results { results: rest }));
                out
            }
            AgentFrame::Started { mut tasks } if tasks.len() > 1 => {
                let rest = tasks.split_off(tasks.len() / 2);
                let mut out = encode_split(AgentFrame::Started { tasks });
                out.extend(encode_split(AgentFrame::Started { tasks: rest }));
                out
            }
            other => {
                tracing::error!(frame = ?std::mem::discriminant(&other), "dropping a frame over the size limit");
                Vec::new()
            }
        },
        Err(e) => {
            tracing::error!("cannot encode a frame: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let policy = BackoffPolicy::default();
        for _ in 0..100 {
            let mut backoff = Backoff::new(policy);
            let expected = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0];
            for base in expected {
                let delay = backoff.next_delay().as_secs_f64();
                assert!(delay >= base * 0.75 - 1e-9, "{delay} < 75% of {base}");
                assert!(
                    delay <= (base * 1.25).min(30.0) + 1e-9,
                    "{delay} > 125% of {base}"
                );
            }
            backoff.reset();
            let delay = backoff.next_delay().as_secs_f64();
            assert!((0.375..=0.625).contains(&delay));
        }
    }

    #[test]
    fn oversized_result_batches_are_split() {
        use chrono::Utc;
        use lattice_protocol::compute::TaskResult;
        use lattice_protocol::frames::{OutcomeStatus, TaskOutcome};
        let big = "x".repeat(MAX_FRAME_BYTES / 3);
        let results: Vec<_> = (0..4)
            .map(|_| TaskOutcome {
                task_id: lattice_protocol::TaskId::new(),
                attempt: 1,
                status: OutcomeStatus::Success,
                result: Some(TaskResult {
                    stdout: big.clone(),
                    ..Default::default()
                }),
                error: None,
                worker: None,
                started_at: None,
                finished_at: Utc::now(),
            })
            .collect();
        let frames = encode_split(AgentFrame::Results { results });
        assert_eq!(frames.len(), 2);
        let mut total = 0;
        for bytes in frames {
            let AgentFrame::Results { results } = framing::decode(&bytes).unwrap() else {
                panic!()
            };
            total += results.len();
        }
        assert_eq!(total, 4);
    }
}
