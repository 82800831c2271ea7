//! The frames of protocol `qchat/1`: what each kind of stream carries.
//!
//! Streams:
//! - the control stream: the first bidirectional stream a client opens. It starts with
//!   [`Open::Hello`]; the relay answers [`RelayControl::Welcome`], then both sides keep it
//!   open for acknowledgements, receipts and presence.
//! - a chat stream: a bidirectional stream per message, [`Open::Send`] answered by
//!   [`SendReply`], then closed.
//! - a delivery stream: a unidirectional stream the relay opens per message, carrying one
//!   [`Deliver`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// A 128-bit message id that the sender makes; unique per message, kept across resends.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// A fresh random id.
    pub fn random() -> Self {
        MessageId(rand::random())
    }

    /// Parses the 32-digit hex form that [`fmt::Display`] writes.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(MessageId(bytes))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// The first frame of every bidirectional stream a client opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Open {
    /// Opens the control stream.
    Hello(Hello),
    /// Sends one chat message.
    Send(ChatSend),
}

/// Opens the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The relay replays receipts for this user's messages with a sequence number above this.
    pub receipts_after: u64,
}

/// One chat message from its sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSend {
    pub id: MessageId,
    pub text: String,
}

/// The relay's answer on a chat stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendReply {
    /// Committed durably; `seq` orders it in the conversation, `time_ms` is the commit time.
    Stored { id: MessageId, seq: u64, time_ms: i64 },
    /// Not stored, and why.
    Refused { reason: String },
}

/// Frames from a client on its control stream after `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientControl {
    /// These delivered messages (by sequence number) reached this client.
    Ack { seqs: Vec<u64> },
    /// Asks for a fresh [`RelayControl::Status`].
    Status,
}

/// Frames from the relay on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayControl {
    /// The answer to `Hello`.
    Welcome(Status),
    /// The answer to [`ClientControl::Status`].
    Status(Status),
    /// The other person came online or went offline.
    Presence { user: String, online: bool },
    /// The peer received this user's message. Every message of this user up to
    /// `all_delivered_upto` has been delivered.
    Delivered { id: MessageId, seq: u64, all_delivered_upto: u64 },
    /// These acknowledgements are committed: the messages will not come again.
    AckConfirmed { seqs: Vec<u64> },
}

/// Who this connection is, who the peer is, and what waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The user name the relay read from this client's certificate.
    pub user: String,
    /// The other person, once the PKI has issued a second identity.
    pub peer: Option<String>,
    pub peer_online: bool,
    /// Messages waiting for this user (they follow on delivery streams).
    pub waiting_for_you: u64,
    /// This user's messages the peer has not received yet.
    pub waiting_for_peer: u64,
}

/// One message delivered to a recipient, on a unidirectional stream of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    /// Counts the deliveries on this connection from 0, so that the client can put them
    /// back in order whatever order the streams arrived in.
    pub index: u64,
    pub id: MessageId,
    pub seq: u64,
    pub from: String,
    pub text: String,
    pub time_ms: i64,
}
