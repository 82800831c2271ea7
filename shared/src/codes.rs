//! Application error codes for closing connections and streams, with the text a person
//! sees for each.

use quinn::VarInt;

/// Why the relay or the client closed a whole connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// A normal goodbye.
    Normal,
    /// The certificate is valid but its user is not one of this relay's two people.
    NotAMember,
    /// A newer connection of the same user took this one's place.
    Evicted,
    /// The peer broke the protocol on the control stream.
    Protocol,
    /// The relay is shutting down.
    Shutdown,
    /// The certificate was revoked after the connection was made.
    Revoked,
    /// The connection fell behind or lost a stream; a new one picks up where it stopped.
    Reconnect,
    /// A code this version does not know.
    Unknown(u64),
}

impl CloseCode {
    pub fn to_varint(self) -> VarInt {
        VarInt::from_u32(match self {
            CloseCode::Normal => 0,
            CloseCode::NotAMember => 1,
            CloseCode::Evicted => 2,
            CloseCode::Protocol => 3,
            CloseCode::Shutdown => 4,
            CloseCode::Revoked => 5,
            CloseCode::Reconnect => 6,
            CloseCode::Unknown(_) => 99,
        })
    }

    pub fn from_varint(code: VarInt) -> Self {
        match code.into_inner() {
            0 => CloseCode::Normal,
            1 => CloseCode::NotAMember,
            2 => CloseCode::Evicted,
            3 => CloseCode::Protocol,
            4 => CloseCode::Shutdown,
            5 => CloseCode::Revoked,
            6 => CloseCode::Reconnect,
            other => CloseCode::Unknown(other),
        }
    }
}

/// Why one stream was reset or stopped; the connection and every other stream go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCode {
    /// The frame could not be decoded (unknown type, bad bytes, truncated).
    Malformed,
    /// The length prefix is larger than the limit.
    TooLarge,
    /// The first frame did not come in time.
    Timeout,
    /// The request was understood but refused (the frame says why).
    Refused,
    /// The other side failed internally.
    Internal,
    /// The file a download follows will not be complete: its upload was cancelled,
    /// refused or expired.
    Withdrawn,
    /// The sender cancelled this upload: the relay drops what it holds of it.
    Cancelled,
    /// A code this version does not know.
    Unknown(u64),
}

impl StreamCode {
    pub fn to_varint(self) -> VarInt {
        VarInt::from_u32(match self {
            StreamCode::Malformed => 1,
            StreamCode::TooLarge => 2,
            StreamCode::Timeout => 3,
            StreamCode::Refused => 4,
            StreamCode::Internal => 5,
            StreamCode::Withdrawn => 6,
            StreamCode::Cancelled => 7,
            StreamCode::Unknown(_) => 99,
        })
    }

    pub fn from_varint(code: VarInt) -> Self {
        match code.into_inner() {
            1 => StreamCode::Malformed,
            2 => StreamCode::TooLarge,
            3 => StreamCode::Timeout,
            4 => StreamCode::Refused,
            5 => StreamCode::Internal,
            6 => StreamCode::Withdrawn,
            7 => StreamCode::Cancelled,
            other => StreamCode::Unknown(other),
        }
    }
}
