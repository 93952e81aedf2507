//! The worker channel on TCP: each frame is a 4-byte big-endian length
//! followed by its MessagePack bytes ([`lattice_protocol::framing`]).

use lattice_protocol::framing::{self, FrameError, LENGTH_PREFIX_BYTES, MAX_FRAME_BYTES};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A worker-channel read or write that failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub(crate) async fn read_frame<T: DeserializeOwned>(
    reader: &mut (impl AsyncRead + Unpin),
) -> Result<Option<T>, WireError> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = u32::from_be_bytes(prefix) as usize;
    if size > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            size,
            limit: MAX_FRAME_BYTES,
        }
        .into());
    }
    let mut bytes = vec![0u8; size];
    reader.read_exact(&mut bytes).await?;
    Ok(Some(framing::decode(&bytes)?))
}

/// Writes one frame and flushes it.
pub(crate) async fn write_frame<T: Serialize>(
    writer: &mut (impl AsyncWrite + Unpin),
    frame: &T,
) -> Result<(), WireError> {
    let body = framing::encode(frame)?;
    let mut bytes = Vec::with_capacity(LENGTH_PREFIX_BYTES + body.len());
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&body);
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_protocol::frames::DispatcherFrame;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_prefix_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &DispatcherFrame::Shutdown)
            .await
            .unwrap();
        drop(a);
        let frame: Option<DispatcherFrame> = read_frame(&mut b).await.unwrap();
        assert_eq!(frame, Some(DispatcherFrame::Shutdown));
        assert!(read_frame::<DispatcherFrame>(&mut b)
            .await
            .unwrap()
            .is_none());

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_frame::<DispatcherFrame>(&mut b).await,
            Err(WireError::Frame(FrameError::TooLarge { .. }))
        ));
    }
}
