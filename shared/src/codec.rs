//! Frame encoding: a 4-byte big-endian length, then the frame as bincode 2 with a size
//! limit. Works on byte slices only; [`crate::io`] moves frames over streams. This is the
//! one place that knows the format.

use serde::{de::DeserializeOwned, Serialize};

use crate::limits::MAX_FRAME;

/// Bytes of the length prefix.
pub const PREFIX: usize = 4;

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("frame cut short: {needed} more bytes expected")]
    Truncated { needed: usize },
}

/// Bytes a decoded frame may claim in memory. bincode counts what decoding allocates
/// (a vector's elements at their size in memory, each string's bytes), which can be a
/// few times the wire size: a frame that fits [`MAX_FRAME`] on the wire must still
/// decode, and this still bounds what a hostile one can make us allocate.
const MAX_DECODED: usize = 16 * MAX_FRAME;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

fn decode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODED>()
}

/// Encodes `value` with its length prefix.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; PREFIX];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = out.len() - PREFIX;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    out[..PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// How many bytes `value` takes encoded, after the prefix (to pack pages that fit a frame).
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, FrameError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config()).map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(size.bytes_written)
}

/// Reads a length prefix and checks it against the limit.
pub fn payload_len(prefix: [u8; PREFIX]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes one payload (the bytes after the prefix); every byte must belong to the frame.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let (value, used) = bincode::serde::decode_from_slice(payload, decode_config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::Malformed(format!("{} bytes left over after the frame", payload.len() - used)));
    }
    Ok(value)
}

/// Decodes the first frame in `buf`, returning it and the bytes it took.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<(T, usize), FrameError> {
    let Some(prefix) = buf.first_chunk::<PREFIX>() else {
        return Err(FrameError::Truncated { needed: PREFIX - buf.len() });
    };
    let len = payload_len(*prefix)?;
    let rest = &buf[PREFIX..];
    if rest.len() < len {
        return Err(FrameError::Truncated { needed: len - rest.len() });
    }
    Ok((decode_payload(&rest[..len])?, PREFIX + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{ChatSend, MessageId, Open, RelayControl};

    fn sample() -> Open {
        Open::Send(ChatSend { id: MessageId([7; 16]), room: "alice+bob".into(), sealed: b"hello, bob".to_vec() })
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample()).unwrap();
        let (back, used): (Open, usize) = decode(&bytes).unwrap();
        assert_eq!(back, sample());
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut bytes = encode(&sample()).unwrap();
        let second = RelayControl::AckConfirmed { seqs: vec![1, 2, 3] };
        bytes.extend(encode(&second).unwrap());
        let (_, used): (Open, usize) = decode(&bytes).unwrap();
        let (back, _): (RelayControl, usize) = decode(&bytes[used..]).unwrap();
        assert_eq!(back, second);
    }

    #[test]
    fn every_truncation_is_reported_not_panicked() {
        let bytes = encode(&sample()).unwrap();
        for cut in 0..bytes.len() {
            let err = decode::<Open>(&bytes[..cut]).unwrap_err();
            assert!(matches!(err, FrameError::Truncated { .. }), "cut at {cut}: {err:?}");
        }
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading() {
        let mut bytes = u32::MAX.to_be_bytes().to_vec();
        bytes.extend([0u8; 16]);
        assert_eq!(decode::<Open>(&bytes).unwrap_err(), FrameError::TooLarge(u32::MAX as usize));
        let just_over = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert_eq!(payload_len(just_over).unwrap_err(), FrameError::TooLarge(MAX_FRAME + 1));
        assert_eq!(payload_len((MAX_FRAME as u32).to_be_bytes()).unwrap(), MAX_FRAME);
    }

    #[test]
    fn unknown_variant_is_malformed() {
        let mut bytes = vec![0, 0, 0, 2];
        bytes.extend([200, 1]);
        assert!(matches!(decode::<Open>(&bytes), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_malformed() {
        let mut bytes = encode(&sample()).unwrap();
        bytes.push(0);
        let len = (bytes.len() - PREFIX) as u32;
        bytes[..PREFIX].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(decode::<Open>(&bytes), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let len = (state % 64) as usize;
            let mut bytes = ((len as u32).to_be_bytes()).to_vec();
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(state as u8);
            }
            let _ = decode::<Open>(&bytes);
            let _ = decode::<RelayControl>(&bytes);
        }
    }

    #[test]
    fn encoded_len_is_what_encode_writes() {
        assert_eq!(encoded_len(&sample()).unwrap() + PREFIX, encode(&sample()).unwrap().len());
    }

    #[test]
    fn a_text_over_the_frame_limit_cannot_be_encoded() {
        let big =
            Open::Send(ChatSend { id: MessageId([0; 16]), room: "alice+bob".into(), sealed: vec![b'x'; MAX_FRAME] });
        assert!(encode(&big).is_err());
    }
}
