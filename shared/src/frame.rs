//! The frames of protocol `qchat/6`: what each kind of stream carries. Messages, file
//! offers and file names travel end to end encrypted ([`Body::Sealed`], MLS per room); the
//! relay sees who writes to which room, when, and how much.
//!
//! Streams:
//! - the control stream: the first bidirectional stream a client opens. It starts with
//!   [`Open::Hello`]; the relay answers [`RelayControl::Welcome`], then both sides keep it
//!   open for acknowledgements, receipts and presence.
//! - a chat stream: a bidirectional stream per message, [`Open::Send`] answered by
//!   [`SendReply`], then closed.
//! - a delivery stream: a unidirectional stream the relay opens per message, carrying one
//!   [`Deliver`].
//! - an enrollment connection (ALPN [`crate::ENROLL_ALPN`], no client certificate): one
//!   bidirectional stream, [`EnrollRequest`] answered by [`EnrollReply`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// Defines a 128-bit id type with random creation and a hex form.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                $name(rand::random())
            }

            /// Parses the 32-digit hex form that [`fmt::Display`] writes.
            pub fn from_hex(text: &str) -> Option<Self> {
                crate::hex::decode_array(text).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&crate::hex::encode(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }
    };
}

id_type!(
    /// A 128-bit message id that the sender makes; unique per message, kept across resends.
    MessageId
);
id_type!(
    /// A 128-bit file id that the relay assigns; the spool file and partial downloads are
    /// named by it, never by a name a client sent.
    FileId
);

/// A BLAKE3 hash of a file's content.
pub type Blake3 = [u8; 32];

/// The first frame of every bidirectional stream a client opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Open {
    /// Opens the control stream.
    Hello(Hello),
    /// Sends one chat message.
    Send(ChatSend),
    /// Uploads (or resumes uploading) a file to the relay.
    Upload(UploadStart),
    /// Fetches a file offered to this user, from an offset.
    Download(DownloadStart),
}

/// Which room a message or file goes to: a room's name, or none for the sender's default
/// (their only room, or, when the relay has exactly one other user, the direct room with
/// them). A direct room's name is [`crate::names::direct_room`]'s; sending to one that does
/// not exist yet creates it.
pub type RoomTarget = Option<String>;

/// Opens an upload stream. After [`UploadReply::Ready`] the client writes the file's bytes
/// from the offset to the end, then one [`UploadEnd`] frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStart {
    pub room: RoomTarget,
    /// Bytes of the sealed file ([`crate::seal`]); its name travels encrypted.
    pub size: u64,
    /// An unfinished upload of this file to resume.
    pub resume: Option<FileId>,
}

/// The relay's answers on an upload stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UploadReply {
    /// Send the bytes from `offset` on (the relay holds the ones before); the file goes to
    /// `room`.
    Ready { file_id: FileId, offset: u64, room: String },
    /// The whole file is held, its hash matched, and it is offered to the room's members.
    Committed { file_id: FileId, blake3: Blake3 },
    /// Not accepted, and why.
    Refused { reason: String },
}

/// Ends the bytes of an upload: the hash of the whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadEnd {
    pub blake3: Blake3,
}

/// Opens a download stream. After [`DownloadReply::Ready`] the relay writes the bytes from
/// `offset` to the end and finishes the stream. A file still arriving (its `Ready` has no
/// hash) is sent as the relay writes it, and its bytes are followed by one
/// [`DownloadEnd`] once the upload is committed; if the upload is withdrawn instead, the
/// relay resets the stream with [`crate::codes::StreamCode::Withdrawn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadStart {
    pub file_id: FileId,
    pub offset: u64,
}

/// Ends the bytes of a download that followed its upload: the hash the upload committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadEnd {
    pub blake3: Blake3,
}

/// The relay's answer on a download stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownloadReply {
    Ready(FileInfo),
    Refused { reason: String },
}

/// A file on the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub file_id: FileId,
    /// The room it was offered to.
    pub room: String,
    /// Bytes of the sealed file (its name and key are in the sender's encrypted offer).
    pub size: u64,
    /// The name of a file stored by a relay from before end-to-end encryption, whose bytes
    /// are plain; none for a sealed one.
    pub plain_name: Option<String>,
    pub from: String,
    /// Of the sealed bytes; known once the upload is committed.
    pub blake3: Option<Blake3>,
    /// When the upload began (Unix milliseconds).
    pub time_ms: i64,
}

/// Where a file is in its life on the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileState {
    /// Still arriving; the relay holds this many bytes.
    Uploading { held: u64 },
    /// Committed and waiting to be fetched.
    Offered,
    /// Fetched (by this device, in a listing of files for it; by a member, in the sender's);
    /// the relay keeps it for the retention period.
    Fetched,
    /// Swept from the relay (`fetched` tells whether it was fetched first).
    Expired { fetched: bool },
}

/// One line of a file listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub info: FileInfo,
    pub state: FileState,
}

/// Opens the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The relay replays receipts for this user's messages with a sequence number above this.
    pub receipts_after: u64,
}

/// One chat message from its sender: an MLS application message of the room's group,
/// which only its members' devices can open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSend {
    pub id: MessageId,
    /// The room by name: the sender's device encrypted it for that room's group.
    pub room: String,
    pub sealed: Vec<u8>,
}

/// The relay's answer on a chat stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendReply {
    /// Committed durably in `room`; `seq` orders it among everything this device gets,
    /// `room_seq` in its room; `time_ms` is the commit time.
    Stored { id: MessageId, seq: u64, room: String, room_seq: u64, time_ms: i64 },
    /// Not stored, and why.
    Refused { reason: String },
}

/// Frames from a client on its control stream after `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientControl {
    /// These delivered messages (by sequence number) reached this client.
    Ack { seqs: Vec<u64> },
    /// A client that does not take delivery (a one-shot command) read these deliveries,
    /// to keep its rooms' groups in step: the relay may send more, and keeps them waiting.
    Seen { seqs: Vec<u64> },
    /// Asks for a fresh [`RelayControl::Status`].
    Status,
    /// Asks for a [`RelayControl::Files`] listing.
    ListFiles,
    /// This file was saved and verified by the recipient.
    Fetched { file_id: FileId },
    /// Asks for a one-time invite for another device of this person
    /// ([`RelayControl::Invite`]).
    LinkDevice,
    /// Asks for this person's devices ([`RelayControl::Devices`]).
    ListDevices,
    /// Revokes one of this person's devices ([`RelayControl::DeviceRevoked`]).
    RevokeDevice { device: String },
    /// Asks for a new certificate for this device's key, before the current one ends
    /// ([`RelayControl::Renewed`]). `csr_der` is a PKCS#10 request signed by the key.
    Renew { csr_der: Vec<u8> },
    /// Asks for the rooms this user is in ([`RelayControl::Rooms`]).
    ListRooms,
    /// Creates a room with this user and `members` in it ([`RelayControl::Room`]).
    CreateRoom { name: String, members: Vec<String> },
    /// Adds a user to a room this user created.
    AddMember { room: String, user: String },
    /// Removes a member from a room this user created.
    RemoveMember { room: String, user: String },
    /// Leaves a room.
    LeaveRoom { room: String },
    /// This device's MLS signing key (the first one it publishes is the one it keeps) and
    /// key packages for others to add it with ([`RelayControl::KeysPublished`]).
    PublishKeys { signature_key: Vec<u8>, key_packages: Vec<Vec<u8>> },
    /// Asks how the room's group should change ([`RelayControl::GroupState`]): `have` are
    /// the devices (`user/device`) in this device's group of the room, none if it has none.
    /// A direct room that does not exist yet is made.
    GroupState { room: RoomTarget, have: Vec<String> },
    /// An MLS commit of the room's group from `epoch`, to go to every member's devices in
    /// the room's order (with the Welcome for the devices it adds). Refused if another
    /// commit took that epoch first ([`RelayControl::CommitRefused`]).
    Commit { room: String, epoch: u64, commit: Vec<u8>, welcome: Option<Vec<u8>> },
    /// The room's group info at `epoch`, for devices that join by themselves.
    GroupInfo { room: String, epoch: u64, group_info: Vec<u8> },
}

/// Frames from the relay on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayControl {
    /// The answer to `Hello`.
    Welcome(Status),
    /// The answer to [`ClientControl::Status`].
    Status(Status),
    /// Someone who shares a room with this user came online or went offline.
    Presence { user: String, online: bool },
    /// `by` received these messages of this user in `room` (id and sequence number, at
    /// most [`crate::limits::MAX_ACKS_PER_FRAME`]); those in `everyone` (by sequence
    /// number) have now reached every member. Every message of this user, in any room, up
    /// to `all_delivered_upto` has reached every member of its room.
    Delivered { room: String, by: String, messages: Vec<(MessageId, u64)>, everyone: Vec<u64>, all_delivered_upto: u64 },
    /// These acknowledgements are committed: the messages will not come again.
    AckConfirmed { seqs: Vec<u64> },
    /// A file waits for this user (sent when committed, and again after each connect). One
    /// without a hash is still arriving: it can be received already, and it is offered
    /// again, with its hash, once committed.
    FileOffered(FileInfo),
    /// A file offered while arriving has this many bytes on the relay (a few times a
    /// second at most).
    FileArriving { file_id: FileId, held: u64 },
    /// `by` saved and verified a file this user sent.
    FileFetched { file_id: FileId, by: String },
    /// A file this user sent was swept from the relay.
    FileExpired { file_id: FileId, fetched: bool },
    /// One page of the answer to [`ClientControl::ListFiles`]: files for this user, and
    /// this user's own. A listing is one or more pages; `last` marks its final one.
    Files { incoming: Vec<FileEntry>, outgoing: Vec<FileEntry>, last: bool },
    /// These messages of this user (id and sequence number, at most
    /// [`crate::limits::MAX_ACKS_PER_FRAME`]) were never delivered and have been removed
    /// from the relay.
    MessageExpired { messages: Vec<(MessageId, u64)> },
    /// The answer to [`ClientControl::LinkDevice`]: the client makes the invite line from
    /// it with its own relay address and CA.
    Invite { id: String, secret: Vec<u8>, expires_ms: i64 },
    /// The answer to [`ClientControl::ListDevices`].
    Devices { devices: Vec<DeviceInfo> },
    /// The answer to [`ClientControl::RevokeDevice`]: its certificates are revoked and its
    /// connections closed.
    DeviceRevoked { device: String },
    /// The answer to [`ClientControl::Renew`]: the new certificate (PEM).
    Renewed { cert_pem: String },
    /// A device request was refused, and why.
    DeviceRefused { reason: String },
    /// A device was enrolled for `user` (this person or someone who shares a room with
    /// them): every device sees it.
    DeviceAdded { user: String, device: DeviceInfo },
    /// A device of `user` (this person or someone who shares a room with them) was
    /// revoked: rooms' groups take it out before the next message.
    DeviceGone { user: String, device: String },
    /// One page of this user's rooms (after the welcome, and as the answer to
    /// [`ClientControl::ListRooms`]); `last` marks the final page.
    Rooms { rooms: Vec<RoomInfo>, last: bool },
    /// A room request was done: the room as it is now.
    Room(RoomInfo),
    /// A room request was refused, and why.
    RoomRefused { reason: String },
    /// The relay holds this many key packages of this device.
    KeysPublished { held: u64 },
    /// The answer to [`ClientControl::GroupState`]: the group's epoch on the relay (0: no
    /// group yet), its latest group info, key packages of the members' devices missing from
    /// the asker's group (each handed out once), every device that should be in it (the
    /// rest are to be removed), and devices that have no key package to give.
    GroupState {
        room: String,
        epoch: u64,
        group_info: Option<Vec<u8>>,
        /// The room's latest commit this device has not acknowledged (it is on its way to
        /// it, perhaps with a Welcome for it): the device reads it before it changes the
        /// group or joins by itself.
        unread_commit: Option<u64>,
        add: Vec<DeviceKey>,
        devices: Vec<String>,
        missing: Vec<String>,
    },
    /// Our commit was taken: the room's group is at `epoch` now.
    Committed { room: String, epoch: u64 },
    /// A commit was not taken, and why (another took its epoch first, or not a member).
    CommitRefused { room: String, reason: String },
    /// A group request was refused, and why.
    GroupRefused { room: String, reason: String },
}

/// A device's key package, handed out to add it to a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKey {
    /// `user/device`.
    pub identity: String,
    /// Its signing key as the relay first saw it: the package must carry it.
    pub signature_key: Vec<u8>,
    pub key_package: Vec<u8>,
}

/// A room, as one of its members sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    /// A conversation of two people, made when either first wrote to the other.
    pub direct: bool,
    /// Who adds and removes members (none for a direct room).
    pub creator: Option<String>,
    /// Its members, in the order they joined.
    pub members: Vec<Member>,
    /// The number of its latest event: a client applies only later changes to this.
    pub last_seq: u64,
}

impl RoomInfo {
    /// Whether `user` is a member.
    pub fn has(&self, user: &str) -> bool {
        self.members.iter().any(|m| m.user == user)
    }
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: String,
    pub online: bool,
}

/// What an event of a room's sequence is: a message, or a change of its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A message stored by a relay from before end-to-end encryption (plain text).
    Text(String),
    /// An MLS application message of the room's group: a message or a file's offer.
    Sealed(Vec<u8>),
    /// An MLS commit of the room's group from `epoch` (with a Welcome for the devices it
    /// adds): every device of every member gets it, its sender's too.
    Commit { epoch: u64, commit: Vec<u8>, welcome: Option<Vec<u8>> },
    /// The room was made with these members (its sender among them).
    Created { members: Vec<String> },
    /// The sender added `user`.
    Added { user: String },
    /// The sender removed `user`.
    Removed { user: String },
    /// The sender left.
    Left,
}

impl Body {
    /// Whether it is a message (plain or sealed), not a change of the room or its group.
    pub fn is_message(&self) -> bool {
        matches!(self, Body::Text(_) | Body::Sealed(_))
    }
}

/// One device of a person, as the relay knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The device's id (8 base32 letters), also in its certificate.
    pub id: String,
    /// The name its person gave it when it joined.
    pub name: String,
    /// When it enrolled (Unix milliseconds).
    pub enrolled_ms: i64,
    /// When it last connected, if it has.
    pub last_seen_ms: Option<i64>,
    /// The device asking.
    pub current: bool,
}

/// The one request of an enrollment connection.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The invite's id.
    pub invite: String,
    /// The invite's secret, which the relay checks against its digest.
    pub secret: Vec<u8>,
    /// What the person calls this device.
    pub device_name: String,
    /// A PKCS#10 request for the device's own key (which never leaves the device).
    pub csr_der: Vec<u8>,
}

impl fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("invite", &self.invite)
            .field("device_name", &self.device_name)
            .finish_non_exhaustive()
    }
}

/// The relay's answer on an enrollment connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollReply {
    /// The device's certificate (PEM), naming `user` and `device`.
    Enrolled { user: String, device: String, cert_pem: String },
    /// Not enrolled: "invalid", "already used", "expired", "revoked", or a limit.
    Refused { reason: String },
}

/// Who this connection is, who else is on the relay, and what waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The user name the relay read from this client's certificate.
    pub user: String,
    /// The relay's only other user, when it has exactly one.
    pub peer: Option<String>,
    pub peer_online: bool,
    /// How many other users the relay serves.
    pub other_users: u64,
    /// Messages waiting for this device (they follow on delivery streams).
    pub waiting_for_you: u64,
    /// This user's messages some member of their room has not received yet.
    pub waiting_for_peer: u64,
    /// Files offered to this user and not fetched yet.
    pub files_for_you: u64,
    /// Key packages of this device the relay holds (the device tops them up).
    pub key_packages: u64,
}

/// One event of a room (a message, or a change of its members) delivered to a member, on
/// a unidirectional stream of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    /// Counts the deliveries on this connection from 0, so that the client can put them
    /// back in order whatever order the streams arrived in.
    pub index: u64,
    pub id: MessageId,
    /// The order of everything this device gets.
    pub seq: u64,
    pub room: String,
    /// The relay's number for it in its room: one order for every member.
    pub room_seq: u64,
    pub from: String,
    pub body: Body,
    pub time_ms: i64,
}
