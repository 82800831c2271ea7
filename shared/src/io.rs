//! Moves frames over async byte streams (quinn's streams, or anything else that reads and
//! writes), using [`crate::codec`].

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{self, FrameError, PREFIX};

/// Why a frame could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame. `Ok(None)` means the stream ended cleanly before a new frame began.
pub async fn read_frame<T, R>(reader: &mut R) -> Result<Option<T>, ReadFrameError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; PREFIX];
    let mut got = 0;
    while got < PREFIX {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(FrameError::Truncated { needed: PREFIX - got }.into()) };
        }
        got += n;
    }
    let len = codec::payload_len(prefix)?;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ReadFrameError::Frame(FrameError::Truncated { needed: len }),
        _ => ReadFrameError::Io(e),
    })?;
    Ok(Some(codec::decode_payload(&payload)?))
}

/// Writes one frame.
pub async fn write_frame<T, W>(writer: &mut W, value: &T) -> Result<(), WriteFrameError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let bytes = codec::encode(value)?;
    writer.write_all(&bytes).await?;
    Ok(())
}

/// Why a frame could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteFrameError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream failed: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::ClientControl;

    #[tokio::test]
    async fn frames_survive_a_byte_at_a_time_stream() {
        let frame = ClientControl::Ack { seqs: vec![1, 5, 9] };
        let bytes = codec::encode(&frame).unwrap();
        let (mut a, mut b) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            a.write_all(&bytes).await.unwrap();
        });
        let back: Option<ClientControl> = read_frame(&mut b).await.unwrap();
        writer.await.unwrap();
        assert_eq!(back, Some(frame));
        assert!(read_frame::<ClientControl, _>(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_stream_cut_mid_frame_is_truncated() {
        let bytes = codec::encode(&ClientControl::Status).unwrap();
        let mut cut: &[u8] = &bytes[..bytes.len() - 1];
        let err = read_frame::<ClientControl, _>(&mut cut).await.unwrap_err();
        assert!(matches!(err, ReadFrameError::Frame(FrameError::Truncated { .. })));
    }
}
