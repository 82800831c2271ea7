//! What the window shows, as plain data: the rooms (with unread counts), the chat log,
//! the transfers, the link to the relay. It changes only by applying the core's events (and the user's own sends), so it
//! is tested without any window.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use qchat_client::history::{ChatLine, Found, Page, Place, Places, Span};
use qchat_client::offer::Listed;
use qchat_client::{ConnectionState, Event, TransferId};
use qchat_shared::frame::{DeviceInfo, FileId, FileState, MessageId, RoomInfo};
use qchat_shared::names::direct_room;

use crate::log::{Log, Why, MAX_LOADED, PAGE};

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
    /// The relay has listed our rooms (before, `rooms` is empty for want of news).
    rooms_listed: bool,
    /// The room shown (a direct room may be shown before it exists: it does once written to).
    pub selected: Option<String>,
    /// Messages not seen yet, per room.
    pub unread: BTreeMap<String, usize>,
    /// Whether the window has the focus (unread counts grow in the shown room without it).
    pub focused: bool,
    /// The shown room's lines, as far as they are read from disk (never the whole history).
    pub log: Log,
    /// Lines that are not in the history on disk: our messages the relay has not stored
    /// yet, and notices of this run (at most [`NOTICES_KEPT`]), shown at the end of their room.
    pub extra: Vec<ChatLine>,
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
    /// Per room, where the user was: the last line seen (lines after it are new when the
    /// room is shown again) and, reading back, the place in the log. Kept on disk.
    pub places: BTreeMap<String, Place>,
    /// Rooms whose place changed since it was last written down.
    pub places_changed: std::collections::BTreeSet<String>,
    /// Lines of the shown room after this one came since it was last looked at (the
    /// "new" divider goes before the first of them).
    pub new_after: Option<u64>,
    /// The log's last viewport: how far down it is scrolled, and how tall its content is.
    pub viewport: (f32, f32),
    /// Reads of the history asked for and not answered yet, by number.
    pub asked: BTreeMap<u64, Read>,
    next_read: u64,
    /// The places were read from disk (rooms are read only after, to open at their place).
    places_read: bool,
    /// A room was chosen (by the user, or as the one shown last): the first room is no
    /// longer picked for the window.
    picked: bool,
    /// Per room, the newest line the places' unread count took in.
    counted_upto: BTreeMap<String, u64>,
    /// A page of the shown room to read next (asked by "Show earlier", "Show later", or the
    /// button to the newest lines).
    wanted: Option<(Why, Span)>,
    /// What the search of the shown room found, for the words it names.
    pub found: Option<Found>,
    /// Ctrl+F: the words searched for in the shown room's history (the log shows only the
    /// lines that have them).
    pub search: Option<String>,
    /// The window's language.
    pub lang: crate::text::Lang,
    /// The transfer clicked last (Esc cancels it while it runs).
    pub selected_transfer: Option<TransferId>,
}

/// Notices of this run kept for the window (they are not in the history on disk).
pub const NOTICES_KEPT: usize = 100;

/// Messages a search shows at most (the count says how many match).
pub const FOUND_SHOWN: usize = PAGE;

/// A read of the history the window waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// Where the user was in each room.
    Places,
    /// Lines of `room`.
    Page { room: String, why: Why, span: Span },
    /// The messages of `room` with `words`.
    Search { room: String, words: String },
}

/// What a read of the history gave.
#[derive(Debug, Clone)]
pub enum Answer {
    Places(Places),
    Page(Page),
    Found(Found),
}

/// Where the log is to be scrolled after a page came.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scroll {
    /// Nowhere: the view stays.
    Stay,
    /// To the newest line.
    End,
    /// To this offset from the top (a place kept from before).
    To(f32),
    /// To the "new" divider, if it is laid out (else to the end).
    Divider,
    /// Lines were put above: down by what they add to the content, so that what was in
    /// view stays (`(offset, content height)` before them).
    Below(f32, f32),
}

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
            rooms_listed: false,
            selected: None,
            unread: BTreeMap::new(),
            focused: true,
            log: Log::default(),
            extra: Vec::new(),
            transfers: Vec::new(),
            notice: None,
            devices: None,
            safety: None,
            follow: true,
            below: 0,
            places: BTreeMap::new(),
            places_changed: Default::default(),
            new_after: None,
            viewport: (0.0, 0.0),
            asked: BTreeMap::new(),
            next_read: 0,
            places_read: false,
            picked: false,
            counted_upto: BTreeMap::new(),
            wanted: None,
            found: None,
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

    /// The shown room's lines held: those read from disk, then ours not stored yet and
    /// notices.
    pub fn shown_lines(&self) -> impl Iterator<Item = &ChatLine> {
        let held = self.selected.as_deref().is_some_and(|room| self.log.is_of(room));
        let log = self.log.lines.iter().filter(move |_| held);
        log.chain(self.extra.iter().filter(|l| self.shows(&l.room)))
    }

    /// The shown room's files (and uploads the relay has not placed yet).
    pub fn shown_transfers(&self) -> impl Iterator<Item = &Transfer> {
        self.transfers.iter().filter(|t| t.room.as_deref().is_none_or(|r| self.shows(r)))
    }

    /// The shown room, if we are in it yet.
    pub fn shown_room(&self) -> Option<&RoomInfo> {
        self.rooms.iter().find(|r| Some(&r.name) == self.selected.as_ref())
    }

    /// Shows `room` (at the place it was left, or its newest line) and marks it read;
    /// lines that came since it was last looked at get the "new" divider. The room left is
    /// remembered as seen.
    pub fn select(&mut self, room: String) {
        self.picked = true;
        self.show(room);
    }

    fn show(&mut self, room: String) {
        if let Some(left) = self.selected.clone().filter(|left| *left != room) {
            self.looked_at(&left);
            self.places_changed.insert(left);
        }
        self.places_changed.insert(room.clone());
        self.selected = Some(room);
        self.found = None;
        self.new_after = None;
        self.looked_back();
        self.follow_to_end();
    }

    /// The shown room's lines the log lays out, with how many the room has before and
    /// after them on disk (searching: the messages found, and how many more match).
    pub fn page(&self) -> (usize, Vec<&ChatLine>, usize) {
        match (&self.found, self.searching()) {
            (Some(found), Some(_)) => (found.count - found.lines.len(), found.lines.iter().collect(), 0),
            (None, Some(_)) => (0, Vec::new(), 0),
            _ => (self.log.earlier, self.shown_lines().collect(), self.log.later),
        }
    }

    /// The words searched for, when there are any.
    fn searching(&self) -> Option<String> {
        self.search.as_deref().map(|w| w.trim().to_lowercase()).filter(|w| !w.is_empty())
    }

    /// The shown room is looked at again (shown, or the window has the focus back): it is
    /// read, and what came since it was last seen is marked new, as is what comes while it
    /// is shown (the divider stays where the user left off). The view stays put.
    pub fn looked_back(&mut self) {
        let Some(room) = self.selected.clone() else { return };
        self.new_after = self.places.get(&room).and_then(|p| p.seen_upto);
        self.unread.remove(&room);
    }

    /// Whether the log holds a line from someone else after the divider.
    pub fn has_new(&self) -> bool {
        self.new_after.is_some() && self.log.lines.iter().any(|l| !l.mine && l.seq > self.new_after)
    }

    /// The shown room is looked at no more (the window lost the focus): what it shows now
    /// is seen.
    pub fn looked_away(&mut self) {
        if let Some(room) = self.selected.clone() {
            self.looked_at(&room);
            self.places_changed.insert(room);
        }
    }

    /// Everything up to the newest line of `room` held is seen (if the log holds it).
    fn looked_at(&mut self, room: &str) {
        if let (Some(seq), true) = (self.log.last_seq(), self.log.is_of(room) && self.log.later == 0) {
            let place = self.places.entry(room.to_string()).or_default();
            place.seen_upto = place.seen_upto.max(Some(seq));
        }
    }

    /// The log was scrolled: to its end (new lines keep it there), or up; `offset` down
    /// from the top of its content, `content` high. Reading back, the place is kept.
    pub fn scrolled(&mut self, at_end: bool, offset: f32, content: f32) {
        self.follow = at_end;
        self.viewport = (offset, content);
        if at_end {
            self.below = 0;
        }
        let Some(room) = self.selected.clone().filter(|room| self.log.is_of(room) && self.searching().is_none()) else {
            return;
        };
        let reading = match (at_end && self.log.later == 0, self.log.first_seq()) {
            (false, Some(first)) => Some((first, offset)),
            _ => None,
        };
        let place = self.places.entry(room.clone()).or_default();
        if place.reading != reading {
            place.reading = reading;
            self.places_changed.insert(room);
        }
    }

    /// The log goes to its newest line and stays there (reading it from disk again when
    /// the log stops short of it).
    pub fn follow_to_end(&mut self) {
        self.follow = true;
        self.below = 0;
        if self.log.later > 0 {
            self.wanted = Some((Why::Newest, Span::Newest(PAGE)));
        }
    }

    /// "Show earlier": the page before the first line held.
    pub fn show_earlier(&mut self) {
        if let Some(seq) = self.log.first_seq().filter(|_| self.log.earlier > 0) {
            self.wanted = Some((Why::Earlier, Span::Before { seq, limit: PAGE }));
        }
    }

    /// "Show later": the page after the last line held.
    pub fn show_later(&mut self) {
        if let Some(seq) = self.log.last_seq().filter(|_| self.log.later > 0) {
            self.wanted = Some((Why::Later, Span::From { seq: seq + 1, limit: PAGE }));
        }
    }

    /// The next read of the history the window needs, numbered and recorded as asked:
    /// the places first, then the shown room's first page (from where it was left), a
    /// page asked for, or a search.
    pub fn next_read(&mut self) -> Option<(u64, Read)> {
        let read = self.read_needed()?;
        if self.asked.values().any(|asked| *asked == read) {
            return None;
        }
        self.next_read += 1;
        self.asked.insert(self.next_read, read.clone());
        Some((self.next_read, read))
    }

    fn read_needed(&mut self) -> Option<Read> {
        if !self.places_read {
            return Some(Read::Places);
        }
        let room = self.selected.clone()?;
        if !self.log.is_of(&room) {
            // Reads for the room left are of no use now.
            self.asked.retain(|_, read| !matches!(read, Read::Page { .. } | Read::Search { .. }));
            self.wanted = None;
            self.log = Log::opening(room.clone());
            let place = self.places.get(&room).copied().unwrap_or_default();
            let span = match place {
                Place { reading: Some((seq, _)), .. } => Span::From { seq, limit: MAX_LOADED },
                Place { seen_upto: Some(seq), .. } => Span::Around { seq, before: PAGE, limit: MAX_LOADED },
                _ => Span::Newest(PAGE),
            };
            return Some(Read::Page { room, why: Why::Open, span });
        }
        if let Some(words) = self.searching().filter(|w| self.found.as_ref().is_none_or(|f| f.words != *w)) {
            return Some(Read::Search { room, words });
        }
        let (why, span) = self.wanted.take()?;
        Some(Read::Page { room, why, span })
    }

    /// A read of the history came back; says where to scroll the log.
    pub fn answered(&mut self, number: u64, answer: Result<Answer, String>) -> Scroll {
        let Some(read) = self.asked.remove(&number) else { return Scroll::Stay };
        let answer = match answer {
            Ok(answer) => answer,
            Err(reason) => {
                self.notice = Some(format!("cannot read the chat history: {reason}"));
                if read == Read::Places {
                    // Nothing to come back to: the rooms open at their newest lines.
                    self.places_read = true;
                }
                return Scroll::Stay;
            }
        };
        match (read, answer) {
            (Read::Places, Answer::Places(places)) => {
                self.places_read = true;
                for kept in places.rooms {
                    if let Some(last) = kept.last_seq {
                        self.counted_upto.insert(kept.room.clone(), last);
                    }
                    if kept.unread > 0 && !self.shows(&kept.room) {
                        *self.unread.entry(kept.room.clone()).or_default() += kept.unread;
                    }
                    self.places.insert(kept.room, kept.place);
                }
                if let (Some(room), false) = (places.last_shown, self.picked) {
                    self.picked = true;
                    self.show(room);
                }
                Scroll::Stay
            }
            (Read::Page { room, why, .. }, Answer::Page(page)) if self.log.is_of(&room) => {
                let (offset, content) = self.viewport;
                self.log.paged(why, page);
                match why {
                    Why::Open => self.opened(&room),
                    Why::Earlier => Scroll::Below(offset, content),
                    Why::Later => Scroll::Stay,
                    Why::Newest => Scroll::End,
                }
            }
            (Read::Search { room, words }, Answer::Found(found))
                if self.shows(&room) && self.searching().as_deref() == Some(words.as_str()) =>
            {
                self.found = Some(found);
                Scroll::End
            }
            _ => Scroll::Stay,
        }
    }

    /// The shown room's first page came: where the view goes.
    fn opened(&mut self, room: &str) -> Scroll {
        let place = self.places.get(room).copied().unwrap_or_default();
        self.looked_back();
        match place {
            Place { reading: Some((seq, offset)), .. } if self.log.first_seq() == Some(seq) => {
                self.follow = false;
                Scroll::To(offset)
            }
            _ if self.has_new() => Scroll::Divider,
            _ => Scroll::End,
        }
    }

    /// The places that changed since they were written down, to write now.
    pub fn places_to_write(&mut self) -> Vec<(String, Place)> {
        // Looked at now, down to its end: the shown room is seen so far.
        if let Some(room) = self.selected.clone().filter(|_| self.focused && self.follow) {
            let before = self.places.get(&room).and_then(|p| p.seen_upto);
            self.looked_at(&room);
            if self.places.get(&room).and_then(|p| p.seen_upto) != before {
                self.places_changed.insert(room);
            }
        }
        let place = |room: &String| self.places.get(room).copied().unwrap_or_default();
        self.places_changed.iter().map(|room| (room.clone(), place(room))).collect()
    }

    /// These places are written down (a room whose place moved on since stays to write).
    pub fn places_written(&mut self, written: &[(String, Place)]) {
        for (room, place) in written {
            if self.places.get(room).copied().unwrap_or_default() == *place {
                self.places_changed.remove(room);
            }
        }
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
            change: None,
        };
        self.extra.push(line);
    }

    /// Picks a room to show when none is (or the shown one is gone): the first room, or
    /// the direct room with the relay's only other user.
    fn keep_a_room_shown(&mut self) {
        let direct = self.peer.as_ref().map(|peer| direct_room(&self.me, peer));
        // Until the relay lists the rooms, the one shown (the one shown last) may be in it.
        let gone = self.rooms_listed
            && self
                .selected
                .as_ref()
                .is_some_and(|s| !self.rooms.iter().any(|r| &r.name == s) && Some(s) != direct.as_ref());
        if self.selected.is_none() || gone {
            self.selected = self.rooms.first().map(|r| r.name.clone()).or(direct);
        }
    }

    /// Counts a new line of `room` (`seq` in the relay's order) as unread, unless it is in
    /// view or was counted from the history at start; one in the shown room below a log
    /// scrolled up is counted for the "new messages" button.
    fn arrived(&mut self, room: &str, seq: Option<u64>) {
        if seq.is_some() && seq <= self.counted_upto.get(room).copied() {
            return;
        }
        if !(self.focused && self.shows(room)) {
            *self.unread.entry(room.to_string()).or_default() += 1;
        }
        if self.shows(room) && !self.follow {
            self.below += 1;
        }
    }

    fn line(&mut self, id: MessageId) -> Option<&mut ChatLine> {
        match self.log.lines.iter().position(|l| l.id == id) {
            Some(at) => Some(&mut self.log.lines[at]),
            None => self.extra.iter_mut().find(|l| l.id == id),
        }
    }

    /// A new stored line: into the log if it is of the shown room (the history on disk
    /// has it either way).
    fn place(&mut self, line: ChatLine) {
        if self.log.room.as_deref() == Some(line.room.as_str()) {
            let following = self.follow;
            self.log.arrived(line, following);
        }
    }

    /// A notice of this run: shown at the end of its room's log, the oldest forgotten.
    fn place_notice(&mut self, line: ChatLine) {
        let notices = self.extra.iter().filter(|l| l.notice).count();
        if notices >= NOTICES_KEPT {
            if let Some(oldest) = self.extra.iter().position(|l| l.notice) {
                self.extra.remove(oldest);
            }
        }
        self.extra.push(line);
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
            Event::Connection(state) => self.connection(state),
            Event::Message(m) => {
                if self.line(m.id).is_none() {
                    // One of ours from another of our devices is shown as ours.
                    let mine = m.from == self.me;
                    if !mine {
                        self.arrived(&m.room, Some(m.seq));
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
                        change: None,
                    });
                }
            }
            Event::RoomChanged { id, seq, room, by, change, time_ms } => {
                if self.line(id).is_none() {
                    self.place(ChatLine::change(id, seq, room, by, &change, time_ms));
                }
            }
            Event::Rooms(rooms) => {
                self.rooms = rooms;
                self.rooms_listed = true;
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
                self.place_notice(ChatLine::notice(MessageId::random(), None, room, String::new(), text, time_ms))
            }
            Event::SafetyNumber { user, number, .. } => self.safety = Some((user, number)),
            Event::Stored { id, seq, room, time_ms } => {
                if let Some(at) = self.extra.iter().position(|l| l.id == id) {
                    let line = self.extra.remove(at);
                    self.place(ChatLine { seq: Some(seq), room, time_ms, ..line });
                }
            }
            Event::SendFailed { id, reason } => {
                self.extra.retain(|l| l.id != id);
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

    /// Drops the row a listing made for one of our files that a transfer of this window
    /// turns out to be moving (the listing overtook the transfer's first progress, and
    /// showed the file as an interrupted upload).
    fn drop_listed_copy(&mut self, file_id: FileId) {
        self.transfers.retain(|t| t.transfer.is_some() || t.file_id != Some(file_id) || t.stage.is_running());
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
                        self.arrived(&offer.room, None);
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
                self.drop_listed_copy(file_id);
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
                self.drop_listed_copy(file_id);
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
    use crate::log::tests::from_bob;
    use qchat_client::history::RoomPlace;
    use qchat_client::IncomingMessage;
    use qchat_shared::frame::Body;

    /// Answers the model's reads as a history would: `places` kept, `pages` for the pages
    /// asked (in turn; empty once they run out), nothing found. Returns the last scroll.
    fn answer_reads(model: &mut Model, places: Places, pages: &mut Vec<Page>) -> Scroll {
        let mut scroll = Scroll::Stay;
        let mut places = Some(places);
        while let Some((number, read)) = model.next_read() {
            let answer = match read {
                Read::Places => Answer::Places(places.take().unwrap_or_default()),
                Read::Page { .. } => Answer::Page(if pages.is_empty() { Page::default() } else { pages.remove(0) }),
                Read::Search { words, .. } => Answer::Found(Found { words, ..Found::default() }),
            };
            scroll = model.answered(number, Ok(answer));
        }
        scroll
    }

    /// Shows `room`, with nothing in the history.
    fn open_empty(model: &mut Model, room: &str) {
        model.select(room.into());
        answer_reads(model, Places::default(), &mut Vec::new());
    }

    #[test]
    fn my_message_gets_its_ticks_and_the_log_stays_in_relay_order() {
        let mut model = Model::new("alice");
        let now = Instant::now();
        let room = "alice+bob".to_string();
        open_empty(&mut model, &room);
        let id = MessageId([1; 16]);
        model.sending(id, "hi".into(), 5);
        assert_eq!(model.shown_lines().map(|l| l.seq).collect::<Vec<_>>(), [None], "shown before the relay has it");
        let (from, text) = ("bob".to_string(), "yo".to_string());
        let incoming =
            IncomingMessage { id: MessageId([2; 16]), seq: 7, room: room.clone(), room_seq: 2, from, text, time_ms: 9 };
        model.apply(Event::Message(incoming), now);
        model.apply(Event::Stored { id, seq: 6, room: room.clone(), time_ms: 8 }, now);
        assert_eq!(model.shown_lines().map(|l| l.seq).collect::<Vec<_>>(), [Some(6), Some(7)]);
        model.apply(Event::Delivered { id, seq: 6, room, by: "bob".into(), everyone: true }, now);
        assert!(model.log.lines[0].delivered);
        assert_eq!(model.log.lines[0].received_by, ["bob"]);
        assert!(model.unread.is_empty(), "seen: the room is shown and the window has the focus");
    }

    #[test]
    fn the_window_opens_where_it_was_left_with_what_came_meanwhile_unread() {
        let mut model = Model::new("alice");
        let now = Instant::now();
        // At start, the places come first: the room shown last is shown again.
        let kept = |room: &str, seen: u64, reading, unread, last| RoomPlace {
            room: room.into(),
            place: Place { seen_upto: Some(seen), reading },
            unread,
            last_seq: Some(last),
        };
        let places = Places {
            rooms: vec![kept("team", 40, None, 3, 43), kept("alice+bob", 10, Some((5, 120.0)), 2, 12)],
            last_shown: Some("team".into()),
        };
        // The team's page around the last line seen: 3 lines came after it.
        let page = Page { lines: (21..=43).map(|s| from_bob(s, "team")).collect(), earlier: 20, later: 0 };
        let scroll = answer_reads(&mut model, places, &mut vec![page]);
        assert_eq!(model.selected.as_deref(), Some("team"));
        assert_eq!((model.new_after, scroll), (Some(40), Scroll::Divider), "opened at the divider");
        assert_eq!(model.unread.get("alice+bob"), Some(&2), "unread in the room not shown");
        assert_eq!(model.unread.get("team"), None, "the team's 3 are in view");

        // Delivered again after a reconnect, a line counted from the history is not
        // counted twice; a line after it is.
        let message = |seq: u64| {
            let line = from_bob(seq, "alice+bob");
            let (id, room, from, text, time_ms) = (line.id, line.room, line.from, line.text, line.time_ms);
            Event::Message(IncomingMessage { id, seq, room, room_seq: seq, from, text, time_ms })
        };
        model.apply(message(12), now);
        assert_eq!(model.unread.get("alice+bob"), Some(&2));
        model.apply(message(13), now);
        assert_eq!(model.unread.get("alice+bob"), Some(&3));

        // The direct room was left while reading back: it opens at the same place.
        model.select("alice+bob".into());
        let page = Page { lines: (5..=13).map(|s| from_bob(s, "alice+bob")).collect(), earlier: 4, later: 0 };
        let asked = model.next_read().map(|(_, read)| read);
        let span = Span::From { seq: 5, limit: MAX_LOADED };
        assert_eq!(asked, Some(Read::Page { room: "alice+bob".into(), why: Why::Open, span }));
        let number = *model.asked.keys().next().unwrap();
        assert_eq!(model.answered(number, Ok(Answer::Page(page))), Scroll::To(120.0));
        assert!(!model.follow, "reading back: new lines do not move the view");
        assert!(model.places_changed.contains("team"), "the team's place is to be written down");

        // Show earlier keeps what is in view: the log goes down by what the page adds.
        model.scrolled(false, 30.0, 900.0);
        model.show_earlier();
        let page = Page { lines: (1..=4).map(|s| from_bob(s, "alice+bob")).collect(), earlier: 0, later: 9 };
        assert_eq!(answer_reads(&mut model, Places::default(), &mut vec![page]), Scroll::Below(30.0, 900.0));
        assert_eq!((model.log.first_seq(), model.log.earlier), (Some(1), 0));
        assert_eq!(model.places.get("alice+bob").and_then(|p| p.reading), Some((5, 30.0)));
    }

    #[test]
    fn a_search_answer_for_words_no_longer_searched_is_not_shown() {
        let mut model = Model::new("alice");
        open_empty(&mut model, "team");
        model.search = Some("hel".into());
        let first = model.next_read().unwrap();
        model.search = Some("hello".into());
        let second = model.next_read().unwrap();
        let found = |words: &str, count| Found { words: words.into(), count, lines: vec![from_bob(1, "team")] };
        model.answered(second.0, Ok(Answer::Found(found("hello", 1))));
        model.answered(first.0, Ok(Answer::Found(found("hel", 5))));
        let (more, lines, _) = model.page();
        assert_eq!((more, lines.len()), (0, 1), "the answer for the words in the field");
        model.search = None;
        assert_eq!(model.page().1.len(), 0, "the search closed: the log (empty here) again");
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
        open_empty(&mut model, "team");
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

    #[test]
    fn a_listing_that_overtakes_an_uploads_first_progress_shows_no_interrupted_copy() {
        let mut model = Model::new("alice");
        let (name, size) = ("map.pdf".to_string(), 1000);
        let path = PathBuf::from("/home/alice/map.pdf");
        model.apply(Event::UploadQueued { transfer: 7, room: None, path, name: name.clone(), size }, Instant::now());
        let uploading = |file_id, name: &str| Listed {
            info: qchat_client::offer::Offer::new(
                qchat_shared::frame::FileInfo {
                    file_id: FileId([file_id; 16]),
                    room: "alice+bob".into(),
                    plain_name: Some(name.into()),
                    size,
                    from: "alice".into(),
                    blake3: None,
                    time_ms: 0,
                },
                None,
            ),
            state: FileState::Uploading { held: 10 },
        };
        let outgoing = vec![uploading(5, "file 05050505"), uploading(6, "old.zip")];
        model.apply(Event::Files { outgoing, incoming: vec![], last: true }, Instant::now());
        assert_eq!(model.transfers.len(), 3, "the listing cannot tell the running one yet");
        let file_id = FileId([5; 16]);
        model.apply(Event::Progress { transfer: 7, file_id, done: 20, total: size }, Instant::now());
        let rows: Vec<(&str, Option<FileId>, bool)> =
            model.transfers.iter().map(|t| (t.name.as_str(), t.file_id, t.stage.is_running())).collect();
        assert_eq!(rows, [("map.pdf", Some(file_id), true), ("old.zip", Some(FileId([6; 16])), false)]);
    }
}
