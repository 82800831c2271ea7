//! What the client core reports to its user interface.

use std::path::PathBuf;

use qchat_shared::frame::{Blake3, Body, DeviceInfo, FileId, MessageId, RoomInfo, Status};

use crate::offer::{Listed, Offer};

/// A file transfer of this client, numbered from 1 in each run.
pub type TransferId = u64;

/// A chat message from someone in one of our rooms (or from another of our devices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    pub id: MessageId,
    pub seq: u64,
    pub room: String,
    /// Its number in its room.
    pub room_seq: u64,
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
    /// A message (each id once per run, in the relay's order).
    Message(IncomingMessage),
    /// A room's members changed (each change once per run, in the relay's order).
    RoomChanged {
        id: MessageId,
        seq: u64,
        room: String,
        /// Who made the change.
        by: String,
        change: Body,
        time_ms: i64,
    },
    /// Something about a room's encryption, in words: a new device in its group, a
    /// message this device cannot read.
    Notice {
        room: String,
        text: String,
        time_ms: i64,
    },
    /// The relay holds this many key packages of this device (after it published more).
    KeysPublished {
        held: u64,
    },
    /// The safety number of this person and `user`, and the devices (with fingerprints)
    /// it covers; [`crate::Client::verify`] asks for it.
    SafetyNumber {
        user: String,
        number: String,
        devices: Vec<String>,
    },
    /// Our rooms, as they are now: after each connect, each change, and each answer to a
    /// room request.
    Rooms(Vec<RoomInfo>),
    /// A room request was done: the room as it is now.
    Room(RoomInfo),
    /// A room request was refused.
    RoomRefused {
        reason: String,
    },
    /// The relay stored a message of ours, in `room`.
    Stored {
        id: MessageId,
        seq: u64,
        room: String,
        time_ms: i64,
    },
    /// The relay refused a message of ours; it will not be retried.
    SendFailed {
        id: MessageId,
        reason: String,
    },
    /// `by` received a message of ours; with `everyone`, every member of its room has it.
    Delivered {
        id: MessageId,
        seq: u64,
        room: String,
        by: String,
        everyone: bool,
    },
    /// The relay recorded our acknowledgement of these messages: they will not come again.
    AckConfirmed {
        seqs: Vec<u64>,
    },
    /// Someone who shares a room with us came online or went offline.
    Presence {
        user: String,
        online: bool,
    },
    /// A fresh status, as asked for.
    Status(Status),

    /// A file waits on the relay for us (once per run per file, and again when a file
    /// offered while arriving, without a hash, is committed with its hash).
    FileOffered(Offer),
    /// A file offered while arriving has this many bytes on the relay so far.
    FileArriving {
        file_id: FileId,
        held: u64,
    },
    /// An upload is queued (to a room by name, or to the default room).
    UploadQueued {
        transfer: TransferId,
        room: Option<String>,
        path: PathBuf,
        name: String,
        size: u64,
    },
    /// A download is queued.
    DownloadQueued {
        transfer: TransferId,
        file_id: FileId,
        name: String,
        size: u64,
    },
    /// A transfer goes on from where it was cut: `offset` bytes were already there.
    Resumed {
        transfer: TransferId,
        file_id: FileId,
        offset: u64,
    },
    /// Bytes moved so far (a few times a second at most, and once at the end).
    Progress {
        transfer: TransferId,
        file_id: FileId,
        done: u64,
        total: u64,
    },
    /// The relay holds our file, verified, and has offered it to the members of `room`.
    Uploaded {
        transfer: TransferId,
        file_id: FileId,
        room: String,
        path: PathBuf,
        name: String,
        size: u64,
        blake3: Blake3,
    },
    /// A file offered to us is saved and its hash checked.
    FileSaved {
        transfer: TransferId,
        file_id: FileId,
        path: PathBuf,
        blake3: Blake3,
    },
    /// A transfer failed and will not be retried by itself.
    TransferFailed {
        transfer: TransferId,
        file_id: Option<FileId>,
        reason: String,
    },
    /// `receive_all` queued this many downloads.
    Receiving {
        count: usize,
    },
    /// `by` saved and verified a file we sent.
    FileFetched {
        file_id: FileId,
        by: String,
    },
    /// A file we sent was swept from the relay.
    FileExpired {
        file_id: FileId,
        name: String,
        fetched: bool,
    },
    /// One page of the answer to `list_files`; `last` marks the listing's final page.
    Files {
        incoming: Vec<Listed>,
        outgoing: Vec<Listed>,
        last: bool,
    },
    /// A message of ours expired on the relay before anyone received it.
    MessageExpired {
        id: MessageId,
        seq: u64,
    },
    /// An invite for another device of ours (its line, for `qchat-cli join`).
    DeviceInvite {
        line: String,
        expires_ms: i64,
    },
    /// Our person's devices.
    Devices(Vec<DeviceInfo>),
    /// A device of ours is revoked.
    DeviceRevoked {
        id: String,
    },
    /// A device request was refused.
    DeviceRefused {
        reason: String,
    },
    /// A new device joined, ours or of someone who shares a room with us.
    DeviceAdded {
        user: String,
        device: DeviceInfo,
    },
    /// This device has a new certificate, valid until `not_after_s` (Unix seconds).
    Renewed {
        not_after_s: i64,
    },
    /// Something on this PC failed (the history could not be written, say); the client
    /// goes on.
    LocalError {
        reason: String,
    },
}
