//! What the window shows, as plain data: the rooms (with unread counts), the chat log,
//! the transfers, the link to the relay. It changes only by applying the core's events (and the user's own sends), so it
//! is tested without any window.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use qchat_client::history::ChatLine;
use qchat_client::offer::Listed;
use qchat_client::{ConnectionState, Event, TransferId};
use qchat_shared::frame::{DeviceInfo, FileId, FileState, MessageId, RoomInfo};
use qchat_shared::names::direct_room;

/// The link to the relay, as the status line tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Connected,
    Reconnecting { reason: String },
    Refused { reason: String },
    Closed,
}

/// Which way a file moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// Where a transfer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    Queued,
    Uploading,
    /// Uploaded and verified; waiting to be fetched.
    OnRelay,
    /// A member saved it.
    PeerHasIt,
    /// Offered to us; press Receive.
    Offered,
    Downloading,
    Saved(PathBuf),
    Failed(String),
    Expired,
}

impl Stage {
    pub fn is_running(&self) -> bool {
        matches!(self, Stage::Queued | Stage::Uploading | Stage::Downloading)
    }
}

/// Bytes per second, smoothed over the last few progress reports.
#[derive(Debug, Clone, Default)]
pub struct Speed {
    last: Option<(Instant, u64)>,
    pub bytes_per_s: f64,
}

impl Speed {
    fn sample(&mut self, now: Instant, done: u64) {
        if let Some((at, before)) = self.last {
            let dt = now.duration_since(at).as_secs_f64();
            if dt > 0.0 && done >= before {
                let rate = (done - before) as f64 / dt;
                self.bytes_per_s = if self.bytes_per_s == 0.0 { rate } else { 0.7 * self.bytes_per_s + 0.3 * rate };
            }
        }
        self.last = Some((now, done));
    }
}

/// One file in the left panel.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub transfer: Option<TransferId>,
    pub file_id: Option<FileId>,
    /// The room it is in (none: an upload to the default room, until the relay says).
    pub room: Option<String>,
    pub name: String,
    pub size: u64,
    pub done: u64,
    pub direction: Direction,
    pub stage: Stage,
    pub speed: Speed,
    /// While a file offered to us is still being uploaded: the bytes the relay holds.
    pub arriving: Option<u64>,
}

impl Transfer {
    fn new(direction: Direction, name: String, size: u64, stage: Stage) -> Self {
        Transfer {
            transfer: None,
            file_id: None,
            room: None,
            name,
            size,
            done: 0,
            direction,
            stage,
            speed: Speed::default(),
            arriving: None,
        }
    }

    /// Time left at the current speed.
    pub fn time_left(&self) -> Option<Duration> {
        (self.stage.is_running() && self.speed.bytes_per_s > 1.0)
            .then(|| Duration::from_secs_f64(self.size.saturating_sub(self.done) as f64 / self.speed.bytes_per_s))
    }
}

/// Everything the window shows.
#[derive(Debug, Clone)]
pub struct Model {
    pub me: String,
    /// The relay's only other user, when it has exactly one.
    pub peer: Option<String>,
    pub peer_online: bool,
    pub link: Link,
    /// Our rooms, by name.
    pub rooms: Vec<RoomInfo>,
    /// The room shown (a direct room may be shown before it exists: it does once written to).
    pub selected: Option<String>,
    /// Messages not seen yet, per room.
    pub unread: BTreeMap<String, usize>,
    /// Whether the window has the focus (unread counts grow in the shown room without it).
    pub focused: bool,
    /// Every room's lines, in the relay's order.
    pub lines: Vec<ChatLine>,
    pub transfers: Vec<Transfer>,
    /// The last error worth a person's attention.
    pub notice: Option<String>,
    /// The devices panel, when it is open.
    pub devices: Option<Devices>,
    /// The safety number with a person, once asked for: (user, digits).
    pub safety: Option<(String, String)>,
    /// The chat log shows its newest line: new lines keep it there. Scrolled up to read
    /// back, new lines leave the view where it is and are counted in `below`.
    pub follow: bool,
    /// Lines that arrived in the shown room below the view while it was scrolled up.
    pub below: usize,
    /// Per room, the last line (its order number) seen when the room was left or the
    /// window lost the focus: lines after it are new when the room is shown again.
    pub seen_upto: BTreeMap<String, u64>,
    /// Lines of the shown room after this one came since it was last looked at (the
    /// "new" divider goes before the first of them).
    pub new_after: Option<u64>,
    /// How many of the shown room's newest lines the log lays out ("Show earlier" adds a
    /// page): a long history costs a frame no more than a page of it.
    pub shown: usize,
    /// Ctrl+F: the words searched for in the shown room's history (the log shows only the
    /// lines that have them).
    pub search: Option<String>,
    /// The window's language.
    pub lang: crate::text::Lang,
    /// The transfer clicked last (Esc cancels it while it runs).
    pub selected_transfer: Option<TransferId>,
}

/// Lines the log lays out at first, and adds with each "Show earlier".
pub const PAGE: usize = 300;

/// The devices panel: this person's devices, and an invite for another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    /// As the relay listed them (`None` until it answered).
    pub list: Option<Vec<DeviceInfo>>,
    /// An invite line for another device, once asked for.
    pub invite: Option<String>,
}

impl Model {
    pub fn new(me: &str) -> Self {
        Model {
            me: me.to_string(),
            peer: None,
            peer_online: false,
            link: Link::Connecting,
            rooms: Vec::new(),
            selected: None,
            unread: BTreeMap::new(),
            focused: true,
            lines: Vec::new(),
            transfers: Vec::new(),
            notice: None,
            devices: None,
            safety: None,
            follow: true,
            below: 0,
            seen_upto: BTreeMap::new(),
            new_after: None,
            shown: PAGE,
            search: None,
            lang: crate::text::Lang::default(),
            selected_transfer: None,
        }
    }

    /// Files offered to us in the shown room and not being fetched yet.
    pub fn offers(&self) -> usize {
        self.shown_transfers().filter(|t| t.stage == Stage::Offered).count()
    }

    /// Whether `room` is the one shown.
    fn shows(&self, room: &str) -> bool {
        self.selected.as_deref() == Some(room)
    }

    /// The shown room's lines.
    pub fn shown_lines(&self) -> impl Iterator<Item = &ChatLine> {
        self.lines.iter().filter(|l| self.shows(&l.room))
    }

    /// The shown room's files (and uploads the relay has not placed yet).
    pub fn shown_transfers(&self) -> impl Iterator<Item = &Transfer> {
        self.transfers.iter().filter(|t| t.room.as_deref().is_none_or(|r| self.shows(r)))
    }

    /// The shown room, if we are in it yet.
    pub fn shown_room(&self) -> Option<&RoomInfo> {
        self.rooms.iter().find(|r| Some(&r.name) == self.selected.as_ref())
    }

    /// Shows `room` (at its newest line) and marks it read; lines that came since it was
    /// last looked at get the "new" divider. The room left is remembered as seen.
    pub fn select(&mut self, room: String) {
        if let Some(left) = self.selected.clone().filter(|left| *left != room) {
            self.looked_at(&left);
        }
        self.selected = Some(room);
        self.shown = PAGE;
        self.looked_back();
        self.follow_to_end();
    }

    /// The shown room's lines the log lays out (its newest `shown`), and how many earlier
    /// ones it leaves out.
    pub fn page(&self) -> (usize, Vec<&ChatLine>) {
        let lines: Vec<&ChatLine> = match self.search.as_deref().map(str::to_lowercase) {
            Some(words) if !words.trim().is_empty() => {
                self.shown_lines().filter(|l| l.text.to_lowercase().contains(words.trim())).collect()
            }
            _ => self.shown_lines().collect(),
        };
        let earlier = lines.len().saturating_sub(self.shown);
        (earlier, lines[earlier..].to_vec())
    }

    /// The shown room is looked at again (shown, or the window has the focus back): it is
    /// read, and what came since it was last seen is marked new. The view stays put.
    pub fn looked_back(&mut self) {
        let Some(room) = self.selected.clone() else { return };
        self.new_after = self.seen_upto.get(&room).copied().filter(|&seen| self.last_seq(&room) > Some(seen));
        self.unread.remove(&room);
    }

    /// The shown room is looked at no more (the window lost the focus): what it shows now
    /// is seen.
    pub fn looked_away(&mut self) {
        if let Some(room) = self.selected.clone() {
            self.looked_at(&room);
        }
    }

    fn looked_at(&mut self, room: &str) {
        if let Some(seq) = self.last_seq(room) {
            self.seen_upto.insert(room.to_string(), seq);
        }
    }

    /// The order number of `room`'s newest stored line.
    fn last_seq(&self, room: &str) -> Option<u64> {
        self.lines.iter().rev().filter(|l| l.room == room).find_map(|l| l.seq)
    }

    /// The log was scrolled: to its end (new lines keep it there), or up.
    pub fn scrolled(&mut self, at_end: bool) {
        self.follow = at_end;
        if at_end {
            self.below = 0;
        }
    }

    /// The log goes to its newest line and stays there.
    pub fn follow_to_end(&mut self) {
        self.follow = true;
        self.below = 0;
    }

    /// Shows a message of ours at once, before the relay has it (no tick yet).
    pub fn sending(&mut self, id: MessageId, text: String, now_ms: i64) {
        let line = ChatLine {
            id,
            seq: None,
            room: self.selected.clone().unwrap_or_default(),
            from: self.me.clone(),
            text,
            time_ms: now_ms,
            mine: true,
            delivered: false,
            received_by: Vec::new(),
            notice: false,
        };
        self.lines.push(line);
    }

    /// Picks a room to show when none is (or the shown one is gone): the first room, or
    /// the direct room with the relay's only other user.
    fn keep_a_room_shown(&mut self) {
        let direct = self.peer.as_ref().map(|peer| direct_room(&self.me, peer));
        let gone = self
            .selected
            .as_ref()
            .is_some_and(|s| !self.rooms.iter().any(|r| &r.name == s) && Some(s) != direct.as_ref());
        if self.selected.is_none() || gone {
            self.selected = self.rooms.first().map(|r| r.name.clone()).or(direct);
        }
    }

    /// Counts a new line of `room` as unread, unless it is in view; one in the shown room
    /// below a log scrolled up is counted for the "new messages" button.
    fn arrived(&mut self, room: &str) {
        if !(self.focused && self.shows(room)) {
            *self.unread.entry(room.to_string()).or_default() += 1;
        }
        if self.shows(room) && !self.follow {
            self.below += 1;
        }
    }

    fn line(&mut self, id: MessageId) -> Option<&mut ChatLine> {
        self.lines.iter_mut().find(|l| l.id == id)
    }

    /// Puts `line` in its place in the (ordered) log, after any line of the same order.
    fn place(&mut self, line: ChatLine) {
        let order = line.order();
        let at = self.lines.partition_point(|l| l.order() <= order);
        self.lines.insert(at, line);
    }

    fn by_transfer(&mut self, transfer: TransferId) -> Option<&mut Transfer> {
        self.transfers.iter_mut().find(|t| t.transfer == Some(transfer))
    }

    fn by_file(&mut self, file_id: FileId) -> Option<&mut Transfer> {
        self.transfers.iter_mut().find(|t| t.file_id == Some(file_id))
    }

    /// Applies one event from the core.
    pub fn apply(&mut self, event: Event, now: Instant) {
        match event {
            Event::History(lines) => {
                let pending = std::mem::replace(&mut self.lines, lines);
                self.lines.extend(pending);
                self.lines.sort_by_key(ChatLine::order);
            }
            Event::Connection(state) => self.connection(state),
            Event::Message(m) => {
                if self.line(m.id).is_none() {
                    // One of ours from another of our devices is shown as ours.
                    let mine = m.from == self.me;
                    if !mine {
                        self.arrived(&m.room);
                    }
                    self.place(ChatLine {
                        id: m.id,
                        seq: Some(m.seq),
                        room: m.room,
                        from: m.from,
                        text: m.text,
                        time_ms: m.time_ms,
                        mine,
                        delivered: !mine,
                        received_by: Vec::new(),
                        notice: false,
                    });
                }
            }
            Event::RoomChanged { id, seq, room, by, change, time_ms } => {
                if self.line(id).is_none() {
                    let text = qchat_client::rooms::describe(&by, &change);
                    self.place(ChatLine::notice(id, Some(seq), room, by, text, time_ms));
                }
            }
            Event::Rooms(rooms) => {
                self.rooms = rooms;
                // Nothing stays unread in a room we are no longer in.
                let rooms = &self.rooms;
                self.unread.retain(|name, _| rooms.iter().any(|r| &r.name == name));
                self.keep_a_room_shown();
            }
            Event::Room(room) => {
                if room.has(&self.me) {
                    self.select(room.name);
                }
            }
            Event::RoomRefused { reason } => self.notice = Some(reason),
            Event::Notice { room, text, time_ms } => {
                self.place(ChatLine::notice(MessageId::random(), None, room, String::new(), text, time_ms))
            }
            Event::SafetyNumber { user, number, .. } => self.safety = Some((user, number)),
            Event::Stored { id, seq, room, time_ms } => {
                if let Some(at) = self.lines.iter().position(|l| l.id == id) {
                    let line = self.lines.remove(at);
                    self.place(ChatLine { seq: Some(seq), room, time_ms, ..line });
                }
            }
            Event::SendFailed { id, reason } => {
                self.lines.retain(|l| l.id != id || l.seq.is_some());
                self.notice = Some(format!("message not sent: {reason}"));
            }
            Event::Delivered { id, by, everyone, .. } => {
                if let Some(line) = self.line(id) {
                    line.received(&by, everyone);
                }
            }
            Event::Presence { user, online } => {
                if self.peer.as_deref() == Some(user.as_str()) {
                    self.peer_online = online;
                }
                for member in self.rooms.iter_mut().flat_map(|r| r.members.iter_mut()).filter(|m| m.user == user) {
                    member.online = online;
                }
            }
            Event::Status(status) => {
                self.peer = status.peer;
                self.peer_online = status.peer_online;
                self.keep_a_room_shown();
            }
            Event::Files { outgoing, .. } => self.outgoing_files(outgoing),
            Event::AckConfirmed { .. } => {}
            Event::MessageExpired { .. } => {
                self.notice = Some("a message of yours expired on the relay before it was delivered".into())
            }
            Event::LocalError { reason } => self.notice = Some(reason),
            Event::Devices(list) => {
                if let Some(panel) = &mut self.devices {
                    panel.list = Some(list);
                }
            }
            Event::DeviceInvite { line, .. } => {
                if let Some(panel) = &mut self.devices {
                    panel.invite = Some(line);
                }
            }
            Event::DeviceRevoked { id } => {
                if let Some(list) = self.devices.as_mut().and_then(|p| p.list.as_mut()) {
                    list.retain(|d| d.id != id);
                }
                self.notice = Some(format!("device {id} is revoked: it cannot connect any more"));
            }
            Event::DeviceRefused { reason } => self.notice = Some(reason),
            Event::DeviceAdded { user, device } => {
                // Everyone hears of a new device: one nobody expected is worth a look.
                let whose = if user == self.me { "you have".to_string() } else { format!("{user} has") };
                self.notice = Some(format!("{whose} a new device: {} ({})", device.name, device.id));
                if let Some(list) = self.devices.as_mut().and_then(|p| p.list.as_mut()).filter(|_| user == self.me) {
                    list.push(device);
                }
            }
            Event::Renewed { .. } => {}
            event => self.file_event(event, now),
        }
    }

    /// Shows the files we sent that the relay knows of (after a restart of the window), and
    /// brings the rows shown already up to date (after a reconnect: fetched or expired
    /// meanwhile).
    fn outgoing_files(&mut self, entries: Vec<Listed>) {
        for entry in entries {
            let listed = match entry.state {
                FileState::Fetched => Some(Stage::PeerHasIt),
                FileState::Expired { .. } => Some(Stage::Expired),
                _ => None,
            };
            if let Some(row) = self.by_file(entry.info.file_id) {
                if let (Some(stage), false) = (listed, row.stage.is_running()) {
                    row.stage = stage;
                }
                continue;
            }
            let (stage, done) = match entry.state {
                FileState::Uploading { held } => {
                    (Stage::Failed("interrupted: send the file again to resume".into()), held)
                }
                FileState::Offered => (Stage::OnRelay, entry.info.size),
                FileState::Fetched => (Stage::PeerHasIt, entry.info.size),
                FileState::Expired { .. } => (Stage::Expired, entry.info.size),
            };
            let mut row = Transfer::new(Direction::Up, entry.info.name, entry.info.size, stage);
            (row.file_id, row.done, row.room) = (Some(entry.info.file_id), done, Some(entry.info.room));
            self.transfers.push(row);
        }
    }

    fn connection(&mut self, state: ConnectionState) {
        self.link = match state {
            ConnectionState::Connecting { .. } => Link::Connecting,
            ConnectionState::Connected(status) => {
                self.peer = status.peer;
                self.peer_online = status.peer_online;
                self.keep_a_room_shown();
                Link::Connected
            }
            ConnectionState::Reconnecting { reason, .. } => {
                self.peer_online = false;
                Link::Reconnecting { reason }
            }
            ConnectionState::Refused { reason } => {
                self.peer_online = false;
                Link::Refused { reason }
            }
            ConnectionState::Closed => Link::Closed,
        }
    }

    fn file_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::FileOffered(offer) => {
                let arriving = offer.blake3.is_none().then_some(0);
                match self.by_file(offer.file_id) {
                    // Offered again once committed: no longer arriving.
                    Some(row) => row.arriving = arriving,
                    None => {
                        self.arrived(&offer.room);
                        let mut row = Transfer::new(Direction::Down, offer.name, offer.size, Stage::Offered);
                        (row.file_id, row.room, row.arriving) = (Some(offer.file_id), Some(offer.room), arriving);
                        self.transfers.push(row);
                    }
                }
            }
            Event::FileArriving { file_id, held } => {
                if let Some(row) = self.by_file(file_id).filter(|row| row.arriving.is_some()) {
                    row.arriving = Some(held);
                }
            }
            Event::UploadQueued { transfer, room, name, size, .. } => {
                let mut row = Transfer::new(Direction::Up, name, size, Stage::Queued);
                (row.transfer, row.room) = (Some(transfer), room);
                self.transfers.push(row);
            }
            Event::DownloadQueued { transfer, file_id, .. } => {
                if let Some(t) = self.by_file(file_id) {
                    t.transfer = Some(transfer);
                    t.stage = Stage::Queued;
                }
            }
            Event::Resumed { transfer, file_id, offset } | Event::Progress { transfer, file_id, done: offset, .. } => {
                if let Some(t) = self.by_transfer(transfer) {
                    t.file_id = Some(file_id);
                    t.done = offset;
                    t.speed.sample(now, offset);
                    t.stage = match t.direction {
                        Direction::Up => Stage::Uploading,
                        Direction::Down => Stage::Downloading,
                    };
                }
            }
            Event::Uploaded { transfer, file_id, room, size, .. } => {
                if let Some(t) = self.by_transfer(transfer) {
                    (t.file_id, t.room, t.done, t.stage) = (Some(file_id), Some(room), size, Stage::OnRelay);
                }
            }
            Event::FileSaved { transfer, path, .. } => {
                if let Some(t) = self.by_transfer(transfer) {
                    t.done = t.size;
                    t.stage = Stage::Saved(path);
                }
            }
            Event::TransferFailed { transfer, reason, .. } => {
                self.notice = Some(reason.clone());
                if let Some(t) = self.by_transfer(transfer) {
                    t.stage = Stage::Failed(reason);
                }
            }
            Event::FileFetched { file_id, .. } => {
                if let Some(t) = self.by_file(file_id) {
                    t.stage = Stage::PeerHasIt;
                }
            }
            Event::FileExpired { file_id, .. } => {
                if let Some(t) = self.by_file(file_id).filter(|t| t.stage == Stage::OnRelay) {
                    t.stage = Stage::Expired;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qchat_client::IncomingMessage;
    use qchat_shared::frame::Body;

    #[test]
    fn my_message_gets_its_ticks_and_the_log_stays_in_relay_order() {
        let mut model = Model::new("alice");
        let now = Instant::now();
        let id = MessageId([1; 16]);
        model.sending(id, "hi".into(), 5);
        assert_eq!(model.lines[0].seq, None);
        let room = "alice+bob".to_string();
        model.select(room.clone());
        let (from, text) = ("bob".to_string(), "yo".to_string());
        let incoming =
            IncomingMessage { id: MessageId([2; 16]), seq: 7, room: room.clone(), room_seq: 2, from, text, time_ms: 9 };
        model.apply(Event::Message(incoming), now);
        model.apply(Event::Stored { id, seq: 6, room: room.clone(), time_ms: 8 }, now);
        assert_eq!(model.lines.iter().map(|l| l.seq).collect::<Vec<_>>(), [Some(6), Some(7)]);
        model.apply(Event::Delivered { id, seq: 6, room, by: "bob".into(), everyone: true }, now);
        assert!(model.lines[0].delivered);
        assert_eq!(model.lines[0].received_by, ["bob"]);
        assert!(model.unread.is_empty(), "seen: the room is shown and the window has the focus");
    }

    #[test]
    fn changes_of_members_take_their_place_and_a_room_left_leaves_nothing_unread() {
        let mut model = Model::new("alice");
        let now = Instant::now();
        let message = |seq: u64, room: &str| IncomingMessage {
            id: MessageId([seq as u8; 16]),
            seq,
            room: room.into(),
            room_seq: seq,
            from: "bob".into(),
            text: format!("m{seq}"),
            time_ms: seq as i64,
        };
        model.select("team".into());
        model.apply(Event::Message(message(1, "team")), now);
        let (id, room, by, time_ms) = (MessageId([2; 16]), "team".to_string(), "bob".to_string(), 2);
        let change = Body::Added { user: "carol".into() };
        model.apply(Event::RoomChanged { id, seq: 2, room, by, change: change.clone(), time_ms }, now);
        let (room, by) = ("team".to_string(), "bob".to_string());
        model.apply(Event::RoomChanged { id, seq: 2, room, by, change, time_ms }, now);
        model.apply(Event::Message(message(3, "team")), now);
        let texts: Vec<&str> = model.shown_lines().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["m1", "bob added carol", "m3"], "in the relay's order, once");

        model.apply(Event::Message(message(4, "other")), now);
        assert_eq!(model.unread.get("other"), Some(&1));
        let team = RoomInfo { name: "team".into(), direct: false, creator: None, members: vec![], last_seq: 3 };
        model.apply(Event::Rooms(vec![team]), now);
        assert!(model.unread.is_empty(), "not in \"other\" any more: nothing unread there");
    }

    #[test]
    fn a_download_goes_from_offered_to_saved_with_speed() {
        let mut model = Model::new("bob");
        model.select("alice+bob".into());
        let file_id = FileId([3; 16]);
        let t0 = Instant::now();
        let info = qchat_shared::frame::FileInfo {
            file_id,
            room: "alice+bob".into(),
            plain_name: Some("a.bin".into()),
            size: 1000,
            from: "alice".into(),
            blake3: None,
            time_ms: 0,
        };
        let offer = qchat_client::offer::Offer::new(info, None);
        model.apply(Event::FileOffered(offer.clone()), t0);
        assert_eq!(model.offers(), 1);
        assert_eq!(model.transfers[0].arriving, Some(0), "offered while it is still uploaded");
        model.apply(Event::FileArriving { file_id, held: 400 }, t0);
        assert_eq!(model.transfers[0].arriving, Some(400));
        model.apply(Event::FileOffered(qchat_client::offer::Offer { blake3: Some([1; 32]), ..offer }), t0);
        assert_eq!((model.offers(), model.transfers[0].arriving), (1, None), "the same row, now complete");
        model.apply(Event::DownloadQueued { transfer: 9, file_id, name: "a.bin".into(), size: 1000 }, t0);
        model.apply(Event::Progress { transfer: 9, file_id, done: 100, total: 1000 }, t0);
        model.apply(Event::Progress { transfer: 9, file_id, done: 600, total: 1000 }, t0 + Duration::from_secs(1));
        let t = &model.transfers[0];
        assert_eq!((t.done, &t.stage), (600, &Stage::Downloading));
        assert!((t.speed.bytes_per_s - 500.0).abs() < 1.0);
        assert_eq!(t.time_left(), Some(Duration::from_secs_f64(0.8)));
        model.apply(Event::FileSaved { transfer: 9, file_id, path: "/x/a.bin".into(), blake3: [0; 32] }, t0);
        assert_eq!(model.transfers[0].stage, Stage::Saved("/x/a.bin".into()));
        assert_eq!(model.offers(), 0);
    }

    #[test]
    fn rows_shown_already_take_what_the_relay_lists_after_a_reconnect() {
        let mut model = Model::new("alice");
        let info = qchat_shared::frame::FileInfo {
            file_id: FileId([4; 16]),
            room: "alice+bob".into(),
            plain_name: Some("plan.pdf".into()),
            size: 1000,
            from: "alice".into(),
            blake3: Some([1; 32]),
            time_ms: 0,
        };
        let listed = |state| Listed { info: qchat_client::offer::Offer::new(info.clone(), None), state };
        model.apply(
            Event::Files { outgoing: vec![listed(FileState::Offered)], incoming: vec![], last: true },
            Instant::now(),
        );
        assert_eq!(model.transfers[0].stage, Stage::OnRelay);
        // Bob fetched it while this window was offline: the next listing says so.
        model.apply(
            Event::Files { outgoing: vec![listed(FileState::Fetched)], incoming: vec![], last: true },
            Instant::now(),
        );
        assert_eq!((model.transfers.len(), &model.transfers[0].stage), (1, &Stage::PeerHasIt), "the same row, updated");
        model.apply(
            Event::Files { outgoing: vec![listed(FileState::Expired { fetched: true })], incoming: vec![], last: true },
            Instant::now(),
        );
        assert_eq!(model.transfers[0].stage, Stage::Expired);
    }
}
