//! The [`Client`] handle and the loop behind it: connect, run a session, and when the
//! link is lost, wait (with backoff) and connect again, resending what was not stored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use qchat_shared::frame::{ClientControl, FileEntry, FileId, FileInfo, MessageId, Status};
use qchat_shared::identity::Identity;
use qchat_shared::window::WindowBudget;
use tokio::sync::{mpsc, oneshot};

use crate::connect::{connect, endpoint_for, quic_config, resolve};
use crate::event::TransferId;
use crate::event::{ConnectionState, Event};
use crate::history::{ChatLine, History, Record};
use crate::offer::{Content, FileOffer, Listed, Offer};
use crate::refusal::Ending;
use crate::rooms::{RoomRequest, Rooms};
use crate::secure::Secure;
use crate::session::{self, Outcome};
use crate::state::{SavedState, StateDir, UploadBook, FETCHED_KEPT};
use crate::transfers::{Job, TransferContext, Transfers, MAX_TRANSFERS};

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long a listing waits for the keys of its files once every message that waited was
/// read (a file's encrypted offer follows the start of its upload by a round trip or two).
const KEY_GRACE: Duration = Duration::from_secs(5);

/// How to run a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub identity: Identity,
    /// `HOST:PORT` to use instead of the identity's `server`.
    pub server: Option<String>,
    /// The directory below which per-identity state is kept (default: the platform's data
    /// directory).
    pub data_dir: Option<PathBuf>,
    /// Whether this client takes delivery of messages: reports them and acknowledges them
    /// to the relay, so they are not delivered again. A one-shot `send` or `status` does
    /// not, so messages keep waiting for the client that shows them.
    pub receive: bool,
    /// Where received files go (default: the download folder's `qchat`).
    pub download_dir: Option<PathBuf>,
    /// The identity file, rewritten when the device renews its certificate (without it the
    /// renewed certificate lasts only as long as the client runs).
    pub identity_path: Option<PathBuf>,
}

impl ClientOptions {
    pub fn new(identity: Identity) -> Self {
        ClientOptions { identity, server: None, data_dir: None, receive: true, download_dir: None, identity_path: None }
    }

    /// Where received files go.
    pub fn download_dir(&self) -> PathBuf {
        self.download_dir.clone().unwrap_or_else(default_download_dir)
    }

    /// The relay address in use.
    pub fn server(&self) -> &str {
        self.server.as_deref().unwrap_or(&self.identity.server)
    }
}

/// A message stored by the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: MessageId,
    pub seq: u64,
    pub room: String,
    pub time_ms: i64,
}

/// Why a message was not stored.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("the relay refused the message: {0}")]
    Refused(String),
    #[error("not sent: {0}")]
    Stopped(String),
}

pub(crate) type SendReplyTx = oneshot::Sender<Result<Sent, SendError>>;

pub(crate) enum Command {
    Send(Outgoing),
    Status,
    SendFile {
        transfer: TransferId,
        path: PathBuf,
        room: Option<String>,
        /// The name it is offered under (default: its file name); `/` separates the
        /// folders of a file sent with its folder.
        name: Option<String>,
    },
    /// Receive every file offered now; with `keep`, every file offered later too, as it
    /// is offered (arriving ones included).
    ReceiveAll {
        out_dir: Option<PathBuf>,
        keep: bool,
        room: Option<String>,
    },
    /// Receive one file offered (into `out_dir`, or the download folder).
    Receive {
        file_id: FileId,
        out_dir: Option<PathBuf>,
    },
    ListFiles,
    Cancel {
        transfer: TransferId,
    },
    /// A request about this person's devices or rooms, as it goes to the relay.
    Request(ClientControl),
    /// The safety number of this person and a user ([`Event::SafetyNumber`]).
    Verify {
        user: String,
    },
    Shutdown,
}

/// What a client may ask about its person's devices; the answers come as events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRequest {
    /// An invite for another device ([`Event::DeviceInvite`]).
    Link,
    /// The devices ([`Event::Devices`]).
    List,
    /// Revoke one ([`Event::DeviceRevoked`]).
    Revoke(String),
}

/// The platform's download folder, then `qchat` inside it (`~/Downloads/qchat` when the
/// platform names none).
pub fn default_download_dir() -> PathBuf {
    let dirs = directories::UserDirs::new();
    let base = dirs
        .as_ref()
        .and_then(|d| d.download_dir().map(PathBuf::from))
        .or_else(|| dirs.as_ref().map(|d| d.home_dir().join("Downloads")))
        .unwrap_or_else(|| PathBuf::from("Downloads"));
    base.join("qchat")
}

/// A message waiting for the relay's `Stored`.
pub(crate) struct Outgoing {
    pub id: MessageId,
    /// The room it goes to (none: the default room, until the relay says which).
    pub room: Option<String>,
    pub content: Content,
    /// Once encrypted: the room and the sealed bytes (sent again as they are, so that the
    /// relay stores it once).
    pub sealed: Option<(String, Vec<u8>)>,
    pub reply: Option<SendReplyTx>,
}

impl Outgoing {
    pub fn text(id: MessageId, room: Option<String>, text: String, reply: Option<SendReplyTx>) -> Outgoing {
        Outgoing { id, room, content: Content::Text(text), sealed: None, reply }
    }
}

impl DeviceRequest {
    /// The request as it goes to the relay.
    fn frame(self) -> ClientControl {
        match self {
            DeviceRequest::Link => ClientControl::LinkDevice,
            DeviceRequest::List => ClientControl::ListDevices,
            DeviceRequest::Revoke(device) => ClientControl::RevokeDevice { device },
        }
    }
}

impl RoomRequest {
    /// The request as it goes to the relay.
    fn frame(self) -> ClientControl {
        match self {
            RoomRequest::List => ClientControl::ListRooms,
            RoomRequest::Create { name, members } => ClientControl::CreateRoom { name, members },
            RoomRequest::Add { room, user } => ClientControl::AddMember { room, user },
            RoomRequest::Remove { room, user } => ClientControl::RemoveMember { room, user },
            RoomRequest::Leave { room } => ClientControl::LeaveRoom { room },
        }
    }
}

/// A handle to a running client; cheap to clone. The client stops when `shutdown` is
/// called or every handle is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    next_transfer: Arc<AtomicU64>,
    history: History,
}

impl Client {
    /// Starts the client on the current tokio runtime. Everything it has to say comes on
    /// the returned receiver.
    pub fn start(options: ClientOptions) -> (Client, mpsc::UnboundedReceiver<Event>) {
        // Commands come from this program's own user, not from the network. Events are
        // one per frame or delivery the relay sends (which QUIC's flow control and the
        // session's bounded queues hold back) plus throttled progress; a user interface
        // that stops reading them holds them here, which is its own memory to spend.
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let state_dir = match &options.data_dir {
            Some(base) => StateDir::under(base, &options.identity),
            None => StateDir::for_identity(&options.identity),
        };
        let (file_offers, offers_rx) = mpsc::unbounded_channel();
        let context = TransferContext {
            events: events.clone(),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_TRANSFERS)),
            book: Arc::new(UploadBook::new(&state_dir)),
            windows: WindowBudget::new(qchat_shared::window::DEFAULT_BUDGET),
            offers: file_offers,
        };
        let secure = Secure::open(&state_dir, &options.identity);
        let history = History::new(&state_dir, &options.identity.user);
        let core = Core {
            secure: secure.map_err(|e| e.to_string()),
            file_offers: offers_rx,
            unkeyed: BTreeMap::new(),
            verifying: Vec::new(),
            default_room: None,
            read_upto: 0,
            backlog: 0,
            messages_read: 0,
            receive_listed: None,
            listing: Vec::new(),
            listing_done: false,
            keys_due: None,
            history: history.clone(),
            saved: state_dir.load(),
            state_dir,
            options,
            events,
            commands: commands_rx,
            outbox: Vec::new(),
            shown_upto: 0,
            kept_upto: 0,
            transfers: Transfers::new(context),
            offers: BTreeMap::new(),
            receive_into: None,
            requests: Vec::new(),
            rooms: Rooms::default(),
            acks_held: false,
            receive_as_offered: None,
            receive_room: None,
            next_download: 1 << 32,
        };
        tokio::spawn(core.run());
        (Client { commands, next_transfer: Arc::new(AtomicU64::new(1)), history }, events_rx)
    }

    /// The conversations on this PC, for a window to read a page at a time.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Queues a file to upload to the default room; its events carry the returned id.
    pub fn send_file(&self, path: impl Into<PathBuf>) -> TransferId {
        self.send_file_to(None, path)
    }

    /// Queues a file to upload to `room` (none: the default room).
    pub fn send_file_to(&self, room: Option<String>, path: impl Into<PathBuf>) -> TransferId {
        self.send_file_named(room, path, None)
    }

    /// Like [`Client::send_file_to`], offered as `name`: a path relative to a folder sent
    /// whole (`holiday/day 2/beach.jpg`), which the recipient saves in the same folders.
    pub fn send_file_named(&self, room: Option<String>, path: impl Into<PathBuf>, name: Option<String>) -> TransferId {
        let transfer = self.next_transfer.fetch_add(1, Ordering::Relaxed);
        let _ = self.commands.send(Command::SendFile { transfer, path: path.into(), room, name });
        transfer
    }

    /// Fetches every file waiting for this user into `out_dir` (default: the download
    /// folder); `Event::Receiving` says how many.
    pub fn receive_all(&self, out_dir: Option<PathBuf>) {
        self.receive_all_in(None, out_dir)
    }

    /// Fetches one file offered to this user into `out_dir` (default: the download
    /// folder); `Event::DownloadQueued` says it started, `Event::LocalError` that it is not
    /// offered (any more).
    pub fn receive_file(&self, file_id: FileId, out_dir: Option<PathBuf>) {
        let _ = self.commands.send(Command::Receive { file_id, out_dir });
    }

    /// Like [`Client::receive_all`], only the files of `room` (every room with none).
    pub fn receive_all_in(&self, room: Option<String>, out_dir: Option<PathBuf>) {
        let _ = self.commands.send(Command::ReceiveAll { out_dir, keep: false, room });
    }

    /// Like [`Client::receive_all`], and goes on receiving every file offered later, as
    /// soon as it is offered: a file still being uploaded is downloaded as it arrives.
    pub fn receive_as_offered(&self, out_dir: Option<PathBuf>) {
        self.receive_as_offered_in(None, out_dir)
    }

    /// Like [`Client::receive_as_offered`], only the files of `room` (every room with none).
    pub fn receive_as_offered_in(&self, room: Option<String>, out_dir: Option<PathBuf>) {
        let _ = self.commands.send(Command::ReceiveAll { out_dir, keep: true, room });
    }

    /// Asks for the files waiting for this user and this user's own; `Event::Files` follows.
    pub fn list_files(&self) {
        let _ = self.commands.send(Command::ListFiles);
    }

    /// Stops a transfer (a cancelled download keeps its partial file for later).
    pub fn cancel(&self, transfer: TransferId) {
        let _ = self.commands.send(Command::Cancel { transfer });
    }

    /// Queues a message to the default room; `Stored` or `SendFailed` follows as an event.
    /// Returns its id.
    pub fn send(&self, text: impl Into<String>) -> MessageId {
        self.send_to(None, text)
    }

    /// Queues a message to `room` (none: the default room).
    pub fn send_to(&self, room: Option<String>, text: impl Into<String>) -> MessageId {
        let id = MessageId::random();
        let _ = self.commands.send(Command::Send(Outgoing::text(id, room, text.into(), None)));
        id
    }

    /// Sends a message to the default room and waits until the relay has stored it. While
    /// the relay is out of reach it keeps trying, so callers that need a bound should use
    /// a timeout.
    pub async fn send_and_wait(&self, text: impl Into<String>) -> Result<Sent, SendError> {
        self.send_and_wait_to(None, text).await
    }

    /// Like [`Client::send_and_wait`], to `room`.
    pub async fn send_and_wait_to(&self, room: Option<String>, text: impl Into<String>) -> Result<Sent, SendError> {
        let (reply, answer) = oneshot::channel();
        let id = MessageId::random();
        self.commands
            .send(Command::Send(Outgoing::text(id, room, text.into(), Some(reply))))
            .map_err(|_| SendError::Stopped("the client has stopped".into()))?;
        answer.await.map_err(|_| SendError::Stopped("the client has stopped".into()))?
    }

    /// Asks about this person's devices: an invite for another, the list, or a revocation.
    /// The answer comes as an event (or [`Event::DeviceRefused`]).
    pub fn devices(&self, request: DeviceRequest) {
        let _ = self.commands.send(Command::Request(request.frame()));
    }

    /// Asks about rooms: the list, a new one, or a change of members. The answer comes as
    /// [`Event::Rooms`] or [`Event::Room`] (or [`Event::RoomRefused`]).
    pub fn rooms(&self, request: RoomRequest) {
        let _ = self.commands.send(Command::Request(request.frame()));
    }

    /// Asks for the safety number of this person and `user`, from the devices in the
    /// encryption group of their direct room (made if need be): [`Event::SafetyNumber`],
    /// or [`Event::LocalError`] when there is none yet.
    pub fn verify(&self, user: &str) {
        let _ = self.commands.send(Command::Verify { user: user.to_string() });
    }

    /// Asks the relay for a fresh status; an `Event::Status` follows.
    pub fn request_status(&self) {
        let _ = self.commands.send(Command::Status);
    }

    /// Closes the connection and stops the client.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

/// The client's state across connections.
pub(crate) struct Core {
    /// The device's end-to-end state (why not, if its store cannot be opened: nothing can
    /// be sent or read then).
    pub secure: Result<Secure, String>,
    /// Offers of our uploads, to send to their room's members.
    pub file_offers: mpsc::UnboundedReceiver<crate::transfers::OfferToSend>,
    /// Files the relay offered whose key has not come yet (their sender's offer follows).
    pub unkeyed: BTreeMap<FileId, FileInfo>,
    /// Users whose safety number was asked for, until their direct room's group is ready.
    pub verifying: Vec<String>,
    /// The highest sequence number read on this connection.
    pub read_upto: u64,
    /// The room messages without one go to, once the relay said which (for this
    /// connection's rooms; asked again after a change of rooms).
    pub default_room: Option<String>,
    /// Messages waiting for this device when it connected, and how many it has read since:
    /// once it read them all, every file offer of theirs is here.
    pub backlog: u64,
    pub messages_read: u64,
    /// Where a `receive_all` whose listing came saves files, while some files' keys are
    /// still on their way.
    pub receive_listed: Option<PathBuf>,
    /// The pages of a file listing, held until the keys of its files are here (so that
    /// their names can be shown), and whether its last page came.
    pub listing: Vec<(Vec<FileEntry>, Vec<FileEntry>)>,
    pub listing_done: bool,
    /// Until when a listing waits for keys still on their way.
    pub keys_due: Option<std::time::Instant>,
    pub options: ClientOptions,
    pub events: mpsc::UnboundedSender<Event>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// Messages not yet stored, in the order they were sent.
    pub outbox: Vec<Outgoing>,
    /// Messages up to this sequence number were reported in this run (the relay delivers
    /// in sequence order, so a redelivery after a reconnect is at or below it).
    pub shown_upto: u64,
    /// Messages up to this sequence number are in the history on disk.
    pub kept_upto: u64,
    pub saved: SavedState,
    pub state_dir: StateDir,
    pub history: History,
    pub transfers: Transfers,
    /// Files offered to us and not saved yet.
    pub offers: BTreeMap<FileId, Offer>,
    /// Where a pending `receive_all` saves files, until the relay's listing comes.
    pub receive_into: Option<PathBuf>,
    /// Where every new offer is received at once, after `receive_as_offered`.
    pub receive_as_offered: Option<PathBuf>,
    /// The room whose files `receive_all` and `receive_as_offered` take (all with none).
    pub receive_room: Option<String>,
    /// Numbers downloads that `receive_all` starts (uploads get theirs from the handle).
    pub next_download: TransferId,
    /// Device and room requests made while no connection was up, sent once one is.
    pub requests: Vec<ClientControl>,
    /// Our rooms.
    pub rooms: Rooms,
    /// A delivery on this connection could not be written to the history: no later one is
    /// acknowledged on it (the relay's cursor for this device must not pass it).
    pub acks_held: bool,
}

impl Core {
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    pub fn emit_status(&self, status: Status) {
        self.emit(Event::Status(status));
    }

    /// Writes the saved state (atomically, fsynced) on a blocking thread; a failure is
    /// reported.
    pub async fn save_state(&self) {
        let (dir, saved) = (self.state_dir.clone(), self.saved.clone());
        let written = tokio::task::spawn_blocking(move || dir.save(&saved)).await.map_err(std::io::Error::other);
        if let Err(e) = written.and_then(|r| r) {
            tracing::warn!(error = %e, dir = %self.state_dir.dir.display(), "cannot save client state");
            self.emit(Event::LocalError { reason: format!("cannot save the client's state: {e}") });
        }
    }

    /// Appends to the history (off the workers), reporting a failure.
    pub async fn remember(&self, records: Vec<Record>, durable: bool) -> bool {
        match self.history.append(records, durable).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the chat history");
                self.emit(Event::LocalError { reason: format!("cannot write the chat history: {e}") });
                false
            }
        }
    }

    /// Answers a queued message and drops it from the outbox. A stored one's history line
    /// goes into `history`, for the caller to write with others.
    pub fn settle(&mut self, id: MessageId, result: Result<Sent, SendError>, history: &mut Vec<Record>) {
        if let Some(pos) = self.outbox.iter().position(|o| o.id == id) {
            let outgoing = self.outbox.remove(pos);
            match (&result, &outgoing.content) {
                (Ok(sent), Content::Text(text)) => {
                    let from = self.options.identity.user.clone();
                    history.push(Record::Line(ChatLine::mine(id, sent, from, text.clone())));
                    self.emit(Event::Stored { id, seq: sent.seq, room: sent.room.clone(), time_ms: sent.time_ms })
                }
                // A file's offer: the upload's own events tell of the file.
                (Ok(_), Content::File(_)) => {}
                (Err(e), _) => self.emit(Event::SendFailed { id, reason: e.to_string() }),
            }
            if let Some(reply) = outgoing.reply {
                let _ = reply.send(result);
            }
        }
    }

    /// Takes a command while no connection is up. Returns false on shutdown.
    fn queue_offline(&mut self, command: Option<Command>) -> bool {
        match command {
            Some(Command::Send(outgoing)) => self.outbox.push(outgoing),
            Some(Command::SendFile { transfer, path, room, name }) => self.queue_upload(transfer, path, room, name),
            Some(Command::ReceiveAll { out_dir, keep, room }) => self.receive(out_dir, keep, room),
            Some(Command::Receive { file_id, out_dir }) => self.receive_one(file_id, out_dir),
            Some(Command::Cancel { transfer }) => self.cancel(transfer),
            Some(Command::Request(request)) => self.requests.push(request),
            Some(Command::Verify { user }) => self.verifying.push(user),
            Some(Command::Status | Command::ListFiles) => {}
            Some(Command::Shutdown) | None => return false,
        }
        true
    }

    /// Queues an upload to `room` (none: the default room), offered as `name` (default:
    /// its file name); it starts when connected.
    pub fn queue_upload(&mut self, transfer: TransferId, path: PathBuf, room: Option<String>, name: Option<String>) {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {
                let name = name
                    .filter(|n| !n.trim().is_empty())
                    .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_default();
                let queued = Event::UploadQueued {
                    transfer,
                    room: room.clone(),
                    path: path.clone(),
                    name: name.clone(),
                    size: meta.len(),
                };
                self.emit(queued);
                self.transfers.add(transfer, Job::Upload { path, room, name });
            }
            Ok(_) => self.emit(Event::TransferFailed {
                transfer,
                file_id: None,
                reason: format!("{} is not a file", path.display()),
            }),
            Err(e) => self.emit(Event::TransferFailed {
                transfer,
                file_id: None,
                reason: format!("cannot read {}: {e}", path.display()),
            }),
        }
    }

    /// Queues a download of every offer not saved or queued yet; returns how many.
    pub fn queue_downloads(&mut self, out_dir: PathBuf) -> usize {
        let offers: Vec<Offer> = self
            .offers
            .values()
            .filter(|o| self.takes_room(&o.room) && !self.transfers.has_download(o.file_id))
            .cloned()
            .collect();
        for offer in &offers {
            self.queue_download(offer.clone(), out_dir.clone());
        }
        offers.len()
    }

    /// Queues a download of one offer.
    fn queue_download(&mut self, offer: Offer, out_dir: PathBuf) {
        let transfer = self.next_download;
        self.next_download += 1;
        let (file_id, name, size) = (offer.file_id, offer.name.clone(), offer.size);
        self.emit(Event::DownloadQueued { transfer, file_id, name, size });
        self.transfers.add(transfer, Job::Download { offer, out_dir });
    }

    /// Takes the relay's offer of a file: held until its sender's encrypted offer (its
    /// name and key) is here too, then [`Core::offered`].
    pub fn relay_offered(&mut self, info: FileInfo) -> bool {
        if self.saved.fetched.contains(&info.file_id) {
            return false;
        }
        let known = self.secure.as_ref().ok().and_then(|s| s.file_offer(info.file_id));
        let offer = Offer::new(info.clone(), known.as_ref());
        if !offer.readable() {
            self.unkeyed.insert(info.file_id, info);
            return true;
        }
        self.offered(offer)
    }

    /// A member's encrypted offer came: the relay's offer of that file, if it came first,
    /// can be told now.
    pub fn key_arrived(&mut self, offer: &FileOffer) {
        if let Some(info) = self.unkeyed.remove(&offer.file_id) {
            self.offered(Offer::new(info, Some(offer)));
        }
    }

    /// Tells the listing that came, and receives what it offered, once the keys of its
    /// files are here (or every message that waited was read, so those still without one
    /// never get it here).
    pub fn release_listing(&mut self) {
        // The offered files whose keys are not here yet are the unkeyed ones. A key is on
        // its way while messages that waited are still coming, and for a while after (its
        // sender's offer follows its upload's start).
        let keys_missing = !self.unkeyed.is_empty();
        if !self.listing_done {
            return;
        }
        if keys_missing {
            let now = std::time::Instant::now();
            let grace = *self.keys_due.get_or_insert(now + KEY_GRACE);
            if self.messages_read < self.backlog || now < grace {
                return;
            }
        }
        self.keys_due = None;
        self.listing_done = false;
        let pages = std::mem::take(&mut self.listing);
        let count = pages.len();
        for (i, (incoming, outgoing)) in pages.into_iter().enumerate() {
            let listed = |entries: Vec<FileEntry>| -> Vec<Listed> {
                let secure = self.secure.as_ref().ok();
                entries
                    .into_iter()
                    .map(|e| {
                        let offer = secure.and_then(|s| s.file_offer(e.info.file_id));
                        Listed::new(e, offer.as_ref())
                    })
                    .collect()
            };
            let (incoming, outgoing) = (listed(incoming), listed(outgoing));
            self.emit(Event::Files { incoming, outgoing, last: i + 1 == count });
        }
        let Some(out_dir) = self.receive_listed.take() else { return };
        let unreadable: Vec<FileInfo> = self.unkeyed.values().filter(|i| self.takes_room(&i.room)).cloned().collect();
        let count = self.queue_downloads(out_dir) + unreadable.len();
        self.emit(Event::Receiving { count });
        for info in unreadable {
            let transfer = self.next_download;
            self.next_download += 1;
            let reason = format!(
                "file {} from {} cannot be received on this device: its key was sent before this device was in \
                 the room's encryption group",
                info.file_id, info.from
            );
            self.emit(Event::TransferFailed { transfer, file_id: Some(info.file_id), reason });
        }
    }

    /// Takes an offer, unless the file was already saved. An offer is told to the user
    /// when new, and again when a file offered while arriving is committed.
    pub fn offered(&mut self, offer: Offer) -> bool {
        if self.saved.fetched.contains(&offer.file_id) {
            return false;
        }
        let known = self.offers.insert(offer.file_id, offer.clone());
        let queue = self
            .receive_as_offered
            .clone()
            .filter(|_| self.takes_room(&offer.room) && !self.transfers.has_download(offer.file_id));
        if known.as_ref().is_none_or(|old| old.blake3 != offer.blake3) {
            self.emit(Event::FileOffered(offer.clone()));
        }
        if let Some(out_dir) = queue {
            self.queue_download(offer, out_dir);
        }
        true
    }

    /// Whether receiving takes the files of `room`.
    fn takes_room(&self, room: &str) -> bool {
        self.receive_room.as_deref().is_none_or(|r| r == room)
    }

    /// Starts receiving what is offered (in `room`, or in every room) into `out_dir` (the
    /// download folder by default), once the relay's listing comes; with `keep`, every
    /// later offer too.
    pub fn receive(&mut self, out_dir: Option<PathBuf>, keep: bool, room: Option<String>) {
        self.receive_room = room;
        let out_dir = out_dir.unwrap_or_else(|| self.options.download_dir());
        if keep {
            self.receive_as_offered = Some(out_dir.clone());
        }
        self.receive_into = Some(out_dir);
    }

    /// Queues the download of one offered file, unless it is being fetched already.
    pub fn receive_one(&mut self, file_id: FileId, out_dir: Option<PathBuf>) {
        if self.transfers.has_download(file_id) {
            return;
        }
        match self.offers.get(&file_id).cloned() {
            Some(offer) => {
                let out_dir = out_dir.unwrap_or_else(|| self.options.download_dir());
                self.queue_download(offer, out_dir);
            }
            None => self.emit(Event::LocalError { reason: format!("file {file_id} is not offered to you (any more)") }),
        }
    }

    /// Records a saved file, so that it is never fetched twice.
    pub async fn saved_file(&mut self, file_id: FileId) {
        self.offers.remove(&file_id);
        self.saved.fetched.push(file_id);
        let excess = self.saved.fetched.len().saturating_sub(FETCHED_KEPT);
        self.saved.fetched.drain(..excess);
        self.save_state().await;
    }

    pub fn cancel(&mut self, transfer: TransferId) {
        if self.transfers.cancel(transfer) {
            self.emit(Event::TransferFailed { transfer, file_id: None, reason: "cancelled".into() });
        }
    }

    async fn run(mut self) {
        let server = self.options.server().to_string();
        let mut backoff = FIRST_BACKOFF;
        loop {
            // Built for each connection: a renewed certificate is used from the next one.
            let identity = self.options.identity.clone();
            let config = match quic_config(&identity) {
                Ok(config) => config,
                Err(ending) => return self.stop_refused(ending.reason).await,
            };
            self.emit(Event::Connection(ConnectionState::Connecting { server: server.clone() }));
            let attempt = async {
                let remote = resolve(&server).await?;
                let endpoint = endpoint_for(remote)?;
                let connection = connect(&endpoint, config.clone(), remote, &identity, &server).await?;
                Ok::<_, Ending>((endpoint, connection))
            };
            let ending = match attempt.await {
                Ok((endpoint, connection)) => match session::run(&mut self, connection).await {
                    Outcome::Shutdown => {
                        // Let the goodbye reach the relay, so the peer sees us go at once.
                        let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
                        break;
                    }
                    Outcome::Ended { ending, welcomed } => {
                        if welcomed {
                            backoff = FIRST_BACKOFF;
                        }
                        ending
                    }
                },
                Err(ending) => ending,
            };
            self.transfers.connection_lost();
            if ending.fatal {
                return self.stop_refused(ending.reason).await;
            }
            let wait = jittered(backoff);
            self.emit(Event::Connection(ConnectionState::Reconnecting {
                reason: ending.reason,
                retry_in_ms: wait.as_millis() as u64,
            }));
            backoff = (backoff * 2).min(MAX_BACKOFF);
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    command = self.commands.recv() => {
                        if !self.queue_offline(command) {
                            self.finish().await;
                            return;
                        }
                    }
                }
            }
        }
        self.finish().await;
    }

    /// Takes a renewed certificate: used from the next connection, and written to the
    /// identity file (atomically, 0600) when there is one.
    pub async fn renewed(&mut self, cert_pem: String) {
        let mut identity = self.options.identity.clone();
        identity.cert_pem = cert_pem;
        if let Err(e) = Identity::parse(&identity.to_text()) {
            self.emit(Event::LocalError { reason: format!("the renewed certificate is unusable: {e}") });
            return;
        }
        let not_after_s = qchat_shared::tls::parse_certs(&identity.cert_pem, "certificate")
            .ok()
            .and_then(|certs| certs.first().and_then(|c| qchat_shared::tls::validity(c)))
            .map(|(_, end)| end)
            .unwrap_or_default();
        if !crate::enroll::certificate_matches_key(&identity) {
            self.emit(Event::LocalError {
                reason: "the relay sent a certificate for another key; it is not used".into(),
            });
            return;
        }
        if let Some(path) = self.options.identity_path.clone() {
            let text = identity.to_text();
            let written = tokio::task::spawn_blocking(move || {
                qchat_shared::replace::replace_file(&path, text.as_bytes(), qchat_shared::replace::Readers::Owner)
            })
            .await;
            if !matches!(written, Ok(Ok(()))) {
                let reason = "the renewed certificate could not be written to the identity file; it is used until \
                              the client stops, and renewed again next time";
                self.emit(Event::LocalError { reason: reason.into() });
            }
        }
        self.options.identity = identity;
        self.emit(Event::Renewed { not_after_s });
    }

    async fn stop_refused(mut self, reason: String) {
        for outgoing in self.outbox.drain(..) {
            if let Some(reply) = outgoing.reply {
                let _ = reply.send(Err(SendError::Stopped(reason.clone())));
            }
        }
        self.save_state().await;
        self.emit(Event::Connection(ConnectionState::Refused { reason }));
    }

    async fn finish(mut self) {
        for outgoing in self.outbox.drain(..) {
            if let Some(reply) = outgoing.reply {
                let _ = reply.send(Err(SendError::Stopped("the client was shut down".into())));
            }
        }
        self.save_state().await;
        self.emit(Event::Connection(ConnectionState::Closed));
    }
}

/// `base` give or take a quarter, so that many clients do not retry in step.
fn jittered(base: Duration) -> Duration {
    let quarter = base.as_millis() as u64 / 4;
    let offset = if quarter == 0 { 0 } else { rand::random::<u64>() % (2 * quarter) };
    Duration::from_millis(base.as_millis() as u64 - quarter + offset)
}
