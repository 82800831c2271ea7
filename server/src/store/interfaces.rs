//! What the relay needs of its store, as interfaces, one per kind of record: messages and
//! their receipts, rooms, files, devices and invites. The session code sees only these
//! (through [`Backend`]), so another backend (PostgreSQL, say) implements them without
//! touching it; [`super::Store`], SQLite on a thread of its own, is the default.
//!
//! A backend also publishes every event it commits (messages and changes of members), in
//! commit order, on the feed that [`super::open`] returns, for live delivery.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use qchat_shared::frame::{Blake3, FileEntry, FileId, FileInfo, MessageId};

use super::{
    DeviceRow, GroupPlan, InviteCheck, IssuedLookup, Listing, MessageSweep, NewDevice, Receipt, Revoked, RoomChange,
    RoomRow, StoreError, Stored, StoredMessage, SweptFile, UploadLimits, UploadSlot, Users,
};

/// A store operation already queued, to be awaited for its result.
pub type Queued<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// Messages (room events), each device's deliveries, and receipts.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores a message in the room `target` resolves to for its sender (see
    /// [`RoomStore`]); a resend of a known id gets the first answer. Queued at once, so
    /// messages queued one after another get increasing sequence numbers.
    fn store_message(
        &self,
        id: MessageId,
        sender: (&str, &str),
        target: Option<&str>,
        sealed: Vec<u8>,
        max_waiting_bytes: u64,
        users: Users,
    ) -> Queued<Stored>;
    /// Events for a device after `after` and its cursor, oldest first.
    async fn pending(&self, device: (&str, &str), after: u64, limit: usize) -> Result<Vec<StoredMessage>, StoreError>;
    /// Records what a device received; the receipts for their senders.
    async fn mark_delivered(&self, device: (&str, &str), seqs: Vec<u64>) -> Result<Vec<Receipt>, StoreError>;
    /// Receipts of `sender`'s messages after `after`, to replay on reconnect.
    async fn receipts(&self, sender: &str, after: u64, limit: usize) -> Result<Vec<Receipt>, StoreError>;
    /// Messages waiting for a device, and its person's not yet received by everyone.
    async fn waiting(&self, device: (&str, &str)) -> Result<(u64, u64), StoreError>;
    /// Deletes what is past its retention or expiry, a batch at a time.
    async fn sweep_messages(&self, retention_ms: i64, expiry_ms: i64) -> Result<MessageSweep, StoreError>;
}

/// Rooms and their members; membership is checked here.
#[async_trait]
pub trait RoomStore: Send + Sync {
    /// Makes a change of a room's members by `actor`, if it may; the room after.
    async fn change_room(
        &self,
        actor: (&str, &str),
        room: &str,
        request: RoomChange,
        users: Users,
    ) -> Result<RoomRow, StoreError>;
    /// The rooms `user` is in.
    async fn rooms(&self, user: &str) -> Result<Vec<RoomRow>, StoreError>;
    /// A room's members now.
    async fn room_members(&self, room: &str) -> Result<Vec<String>, StoreError>;
    /// Everyone who shares a room with `user`.
    async fn co_members(&self, user: &str) -> Result<Vec<String>, StoreError>;
}

/// Files: uploads, offers, fetches, listings and what the sweep removes. (Their bodies
/// are the spool's.)
#[async_trait]
pub trait FileStore: Send + Sync {
    /// Starts (or resumes) an upload to the room `target` resolves to.
    #[allow(clippy::too_many_arguments)]
    async fn start_upload(
        &self,
        sender: (&str, &str),
        target: Option<&str>,
        size: u64,
        resume: Option<FileId>,
        limits: UploadLimits,
        users: Users,
    ) -> Result<UploadSlot, StoreError>;
    /// Records how much of an upload is on disk.
    async fn checkpoint(&self, file_id: FileId, held: u64) -> Result<(), StoreError>;
    /// Commits a verified upload; who it is offered to, and what.
    async fn commit_upload(
        &self,
        file_id: FileId,
        blake3: Blake3,
        sender: &str,
    ) -> Result<(Vec<String>, FileInfo), StoreError>;
    /// Forgets an upload that cannot go on.
    async fn drop_upload(&self, file_id: FileId) -> Result<(), StoreError>;
    /// A file `user` may fetch, while it is held.
    async fn file_for(&self, user: &str, file_id: FileId) -> Result<Option<FileEntry>, StoreError>;
    /// Records a device's fetch; the sender, the first time its person has the file.
    async fn mark_fetched(&self, device: (&str, &str), file_id: FileId) -> Result<Option<String>, StoreError>;
    /// One page of a listing for a device.
    async fn list_page(
        &self,
        device: (&str, &str),
        listing: Listing,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, FileEntry)>, StoreError>;
    /// Marks what is past its time as swept; those files.
    async fn sweep_due(&self, retention_ms: i64, expiry_ms: i64) -> Result<Vec<SweptFile>, StoreError>;
    /// Every file whose body the spool should hold.
    async fn held_files(&self) -> Result<Vec<FileId>, StoreError>;
    /// How many files wait for a device.
    async fn files_waiting(&self, device: (&str, &str)) -> Result<u64, StoreError>;
}

/// Devices, their certificates, and invites.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Records an invite (only its secret's digest).
    async fn create_invite(
        &self,
        user: &str,
        id: &str,
        digest: [u8; 32],
        expires_ms: i64,
        created_by: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Whether an invite may be used.
    async fn check_invite(&self, id: &str, digest: [u8; 32]) -> Result<InviteCheck, StoreError>;
    /// Uses an invite and adds its device, at once.
    async fn redeem_invite(&self, id: &str, digest: [u8; 32], new: NewDevice) -> Result<InviteCheck, StoreError>;
    /// A device connected: its row as it was (none when revoked).
    async fn device_connected(
        &self,
        user: &str,
        device: &str,
        from_certs_tool: bool,
        serial: Vec<u8>,
        not_after_ms: i64,
    ) -> Result<Option<DeviceRow>, StoreError>;
    /// The device a certificate's serial was given to.
    async fn device_of_serial(&self, user: &str, serial: Vec<u8>) -> Result<Option<String>, StoreError>;
    /// Devices of `users` that enrolled after `since_ms`.
    async fn devices_enrolled_since(&self, users: Vec<String>, since_ms: i64) -> Result<Vec<DeviceRow>, StoreError>;
    /// Records a device's new certificate; false when it is revoked.
    async fn renew_device(
        &self,
        user: &str,
        device: &str,
        serial: Vec<u8>,
        not_after_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Every device (of `user`).
    async fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceRow>, StoreError>;
    /// Revokes a device, or every device and invite of a person.
    async fn revoke_devices(&self, user: &str, device: Option<&str>) -> Result<Option<Revoked>, StoreError>;
    /// Drops used and expired invites and ended certificates' rows.
    async fn sweep_devices(&self) -> Result<(), StoreError>;
}

/// Devices' end-to-end keys and the order of each room's MLS group.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Keeps a device's signing key (its first) and key packages; how many it holds.
    async fn publish_keys(
        &self,
        device: (&str, &str),
        signature_key: Vec<u8>,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<u64, StoreError>;
    /// How many one-time key packages the relay holds of a device.
    async fn key_packages_held(&self, device: (&str, &str)) -> Result<u64, StoreError>;
    /// How the group of the room `target` resolves to should change for a device whose
    /// group has `have`: key packages for the members' devices missing (each handed out
    /// once), and every device that should be in it. A direct room is made on first use, as by a message.
    async fn group_plan(
        &self,
        asker: (&str, &str),
        target: Option<&str>,
        have: Vec<String>,
        users: Users,
        issued: IssuedLookup,
    ) -> Result<GroupPlan, StoreError>;
    /// Appends a member's commit from `epoch` to the room's sequence, if no other commit
    /// took that epoch; its number in the room.
    async fn commit(
        &self,
        device: (&str, &str),
        room: &str,
        epoch: u64,
        commit: Vec<u8>,
        welcome: Option<Vec<u8>>,
    ) -> Result<u64, StoreError>;
    /// Keeps a member's group info for the room's current epoch (false if it is another).
    async fn set_group_info(&self, user: &str, room: &str, epoch: u64, group_info: Vec<u8>)
        -> Result<bool, StoreError>;
}

/// Everything the relay keeps about messages, rooms, files, devices and their keys.
pub trait Backend: MessageStore + RoomStore + FileStore + DeviceStore + KeyStore {
    /// Finishes what is queued, then stops; later calls get [`StoreError::Closed`].
    fn close(&self);
}
