//! MessagePack encoding of frames, with a size limit checked before any
//! allocation on decode. Stream transports prefix each frame with its length
//! as a 4-byte big-endian integer (see [`LENGTH_PREFIX_BYTES`]).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest frame accepted on either channel: room for a batch of results
/// with the 10 MB inline result limit.
pub const MAX_FRAME_BYTES: usize = 32 * 1024 * 1024;

/// Bytes of the length prefix on stream transports.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// A frame that cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// Encodes a frame (fields by name, so peers of different versions can add fields).
pub fn encode<T: Serialize>(frame: &T) -> Result<Vec<u8>, FrameError> {
    let bytes = rmp_serde::to_vec_named(frame).map_err(|e| FrameError::Encode(e.to_string()))?;
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            size: bytes.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    Ok(bytes)
}

/// Decodes a frame, refusing oversized or malformed input.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            size: bytes.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    rmp_serde::from_slice(bytes).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{AgentFrame, ServiceFrame};
    use crate::ids::EndpointId;

    #[test]
    fn frames_round_trip() {
        let frame = AgentFrame::Hello {
            endpoint_id: EndpointId::new(),
            agent_version: "0.1.0".into(),
            hostname: "login1".into(),
            multi_user: false,
        };
        let bytes = encode(&frame).unwrap();
        assert_eq!(decode::<AgentFrame>(&bytes).unwrap(), frame);
    }

    #[test]
    fn frames_of_older_peers_without_the_newer_fields_decode() {
        // An agent from before multi-user support: no `multi_user` in hello.
        #[derive(serde::Serialize)]
        struct OldHello<'a> {
            r#type: &'a str,
            endpoint_id: EndpointId,
            agent_version: &'a str,
            hostname: &'a str,
        }
        let id = EndpointId::new();
        let bytes = rmp_serde::to_vec_named(&OldHello {
            r#type: "hello",
            endpoint_id: id,
            agent_version: "0.1.0",
            hostname: "h",
        })
        .unwrap();
        match decode::<AgentFrame>(&bytes).unwrap() {
            AgentFrame::Hello {
                endpoint_id,
                multi_user,
                ..
            } => {
                assert_eq!(endpoint_id, id);
                assert!(!multi_user);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_and_truncated_frames_are_errors_not_panics() {
        let bytes = encode(&ServiceFrame::Error {
            message: "bye".into(),
        })
        .unwrap();
        for cut in 0..bytes.len() {
            assert!(
                decode::<ServiceFrame>(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        assert!(decode::<AgentFrame>(b"\xff\x00garbage").is_err());
        assert!(
            decode::<AgentFrame>(&bytes).is_err(),
            "a service frame is not an agent frame"
        );
    }
}
