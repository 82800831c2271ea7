//! What the client core reports to its user interface.

use qchat_shared::frame::{MessageId, Status};

/// A chat message from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    pub id: MessageId,
    pub seq: u64,
    pub from: String,
    pub text: String,
    /// The relay's commit time, Unix milliseconds.
    pub time_ms: i64,
}

/// The state of the link to the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting {
        server: String,
    },
    /// Connected; the status is the relay's welcome.
    Connected(Status),
    /// Lost or not reached; the core tries again after `retry_in_ms`.
    Reconnecting {
        reason: String,
        retry_in_ms: u64,
    },
    /// The relay refused this identity (or a newer connection took this one's place); the
    /// core stops and does not retry.
    Refused {
        reason: String,
    },
    /// The client was shut down.
    Closed,
}

/// Everything the core tells its user interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connection(ConnectionState),
    /// A message from the peer (each id once per run, in the relay's order).
    Message(IncomingMessage),
    /// The relay stored a message of ours.
    Stored {
        id: MessageId,
        seq: u64,
        time_ms: i64,
    },
    /// The relay refused a message of ours; it will not be retried.
    SendFailed {
        id: MessageId,
        reason: String,
    },
    /// The peer received a message of ours.
    Delivered {
        id: MessageId,
        seq: u64,
    },
    /// The relay recorded our acknowledgement of these messages: they will not come again.
    AckConfirmed {
        seqs: Vec<u64>,
    },
    /// The peer came online or went offline.
    Presence {
        user: String,
        online: bool,
    },
    /// A fresh status, as asked for.
    Status(Status),
}
