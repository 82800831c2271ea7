//! The conversations as this client has seen them, kept on disk per identity so that
//! they are still there after a restart: `history.db` (SQLite, 0600) holds messages,
//! changes of rooms' members, receipts, and where the user was in each room. A window
//! reads it a page at a time ([`History::read`]), so a long history costs neither memory
//! nor time at start. Writes run on a blocking thread, never on tokio's workers; messages
//! from the peer are fsynced before the client acknowledges them to the relay.

mod legacy;
mod store;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use qchat_shared::frame::{Body, MessageId};
use serde::{Deserialize, Serialize};

use crate::state::StateDir;
use store::Store;

/// One line of the chat log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine {
    pub id: MessageId,
    /// The relay's order; a message of ours not stored yet has none.
    pub seq: Option<u64>,
    /// The room it is in (none for a line of a client from before rooms, until
    /// [`assign_rooms`] gives it one; a message not stored yet is in the room it was sent to,
    /// or the default room).
    #[serde(default)]
    pub room: String,
    pub from: String,
    pub text: String,
    /// The relay's commit time (Unix milliseconds); for a message not stored yet, when it
    /// was written.
    pub time_ms: i64,
    /// Written by this user.
    pub mine: bool,
    /// Every member of its room received it.
    pub delivered: bool,
    /// Who received it (a message of ours).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub received_by: Vec<String>,
    /// A change of the room's members, in words, rather than a message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notice: bool,
    /// For a notice of a change of the room: which change (the text has it in English).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<crate::rooms::Change>,
}

impl ChatLine {
    /// A line about the room (a change of its members or of its encryption), not a message.
    pub fn notice(id: MessageId, seq: Option<u64>, room: String, from: String, text: String, time_ms: i64) -> Self {
        ChatLine {
            id,
            seq,
            room,
            from,
            text,
            time_ms,
            mine: false,
            delivered: false,
            received_by: Vec::new(),
            notice: true,
            change: None,
        }
    }

    /// A line about a change of the room that `body` (from `by`) makes.
    pub fn change(id: MessageId, seq: u64, room: String, by: String, body: &Body, time_ms: i64) -> Self {
        let text = crate::rooms::describe(&by, body);
        ChatLine { change: crate::rooms::Change::of(body), ..ChatLine::notice(id, Some(seq), room, by, text, time_ms) }
    }

    /// A message of ours the relay stored.
    pub fn mine(id: MessageId, sent: &crate::client::Sent, from: String, text: String) -> Self {
        ChatLine {
            id,
            seq: Some(sent.seq),
            room: sent.room.clone(),
            from,
            text,
            time_ms: sent.time_ms,
            mine: true,
            delivered: false,
            received_by: Vec::new(),
            notice: false,
            change: None,
        }
    }

    /// Records that `by` received it, and whether everyone has now.
    pub fn received(&mut self, by: &str, everyone: bool) {
        if !self.received_by.iter().any(|b| b == by) {
            self.received_by.push(by.to_string());
        }
        self.delivered |= everyone;
    }

    /// Where the line goes in the log: stored lines in the relay's order, then ours not yet
    /// stored, in the order they were written.
    pub fn order(&self) -> (bool, Option<u64>, i64) {
        (self.seq.is_none(), self.seq, self.time_ms)
    }
}

/// One line of the history file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Record {
    Line(ChatLine),
    /// Every member received it (all a receipt said before rooms).
    Delivered(MessageId),
    /// `by` received it; with `everyone`, so has every member.
    Receipt {
        id: MessageId,
        by: String,
        everyone: bool,
    },
}

/// Which lines of a room to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Its newest lines, this many at most.
    Newest(usize),
    /// The `limit` lines just before the line with this `seq`.
    Before { seq: u64, limit: usize },
    /// The `limit` lines from the line with this `seq` on (it included).
    From { seq: u64, limit: usize },
    /// `limit` lines from `before` lines back from the line with this `seq` (it included):
    /// a place in the room with what leads up to it.
    Around { seq: u64, before: usize, limit: usize },
}

/// Lines of one room, in the relay's order, and how many it has on either side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub lines: Vec<ChatLine>,
    /// Lines before the first of `lines`.
    pub earlier: usize,
    /// Lines after the last of `lines`.
    pub later: usize,
}

/// What a search of a room found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The words looked for, as compared (trimmed, lower case).
    pub words: String,
    /// How many messages have them.
    pub count: usize,
    /// The newest of those, in the relay's order.
    pub lines: Vec<ChatLine>,
}

/// Where the user was in a room, for the window to come back to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Place {
    /// The last line seen: lines after it are new.
    pub seen_upto: Option<u64>,
    /// Reading back: the first line laid out and how far down (0 to 1) the view was.
    pub reading: Option<(u64, f32)>,
}

/// Where the user was in the rooms, as kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Places {
    pub rooms: Vec<RoomPlace>,
    /// The room shown last.
    pub last_shown: Option<String>,
}

/// Where the user was in one room, and what came after.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomPlace {
    pub room: String,
    pub place: Place,
    /// Messages from others after the last line seen.
    pub unread: usize,
    /// The room's newest stored line when this was read.
    pub last_seq: Option<u64>,
}

/// The history of one identity; cheap to clone (clones share the open database).
#[derive(Clone)]
pub struct History {
    dir: PathBuf,
    me: String,
    store: Arc<Mutex<Option<Store>>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("dir", &self.dir).finish()
    }
}

impl History {
    /// The history in `state`'s folder of the user `me` (opened when first used, so that a
    /// failure to open it is reported where it matters, by each call).
    pub fn new(state: &StateDir, me: &str) -> Self {
        History { dir: state.dir.clone(), me: me.to_string(), store: Arc::new(Mutex::new(None)) }
    }

    /// Runs `f` on the open store, opening it first if need be (blocking).
    fn with<T>(&self, f: impl FnOnce(&mut Store) -> rusqlite::Result<T>) -> std::io::Result<T> {
        let mut store = self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if store.is_none() {
            *store = Some(Store::open(&self.dir, &self.me).map_err(std::io::Error::other)?);
        }
        f(store.as_mut().expect("opened above")).map_err(std::io::Error::other)
    }

    /// Runs `f` on a blocking thread.
    async fn off_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> rusqlite::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let history = self.clone();
        tokio::task::spawn_blocking(move || history.with(f)).await.map_err(std::io::Error::other)?
    }

    /// Appends `records` on a blocking thread; with `durable`, they are on disk (fsynced)
    /// when this returns.
    pub async fn append(&self, records: Vec<Record>, durable: bool) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.off_thread(move |store| store.append(&records, durable)).await
    }

    /// The lines of `room` that `span` names.
    pub async fn read(&self, room: String, span: Span) -> std::io::Result<Page> {
        self.off_thread(move |store| store.read(&room, span)).await
    }

    /// The newest `limit` messages of `room` with `words` in them (in any case), and how many
    /// there are.
    pub async fn search(&self, room: String, words: String, limit: usize) -> std::io::Result<Found> {
        self.off_thread(move |store| store.search(&room, &words, limit)).await
    }

    /// The newest stored line of `room`.
    pub async fn last_seq(&self, room: String) -> std::io::Result<Option<u64>> {
        self.off_thread(move |store| store.last_seq(&room)).await
    }

    /// Where the user was in each room, and the room shown last.
    pub async fn places(&self) -> std::io::Result<Places> {
        self.off_thread(|store| store.places()).await
    }

    /// Remembers where the user is in `room`; with `shown_ms`, that it is the room shown.
    pub async fn set_place(&self, room: String, place: Place, shown_ms: Option<i64>) -> std::io::Result<()> {
        self.off_thread(move |store| store.set_place(&room, &place, shown_ms)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::Change;

    fn line(seq: u64, mine: bool) -> ChatLine {
        ChatLine {
            id: MessageId([seq as u8; 16]),
            seq: Some(seq),
            room: "alice+bob".into(),
            from: if mine { "alice" } else { "bob" }.into(),
            text: format!("m{seq}"),
            time_ms: seq as i64,
            mine,
            delivered: false,
            received_by: Vec::new(),
            notice: false,
            change: None,
        }
    }

    /// `n` lines of the room `team`, seq 1 to n, with distinct ids.
    fn team_lines(n: u64) -> Vec<Record> {
        (1..=n)
            .map(|seq| {
                let mut id = [0; 16];
                id[..8].copy_from_slice(&seq.to_be_bytes());
                Record::Line(ChatLine { id: MessageId(id), room: "team".into(), ..line(seq, false) })
            })
            .collect()
    }

    fn history_in(dir: &std::path::Path) -> History {
        History::new(&StateDir { dir: dir.to_path_buf() }, "alice")
    }

    fn seqs(page: &Page) -> Vec<u64> {
        page.lines.iter().map(|l| l.seq.unwrap()).collect()
    }

    #[test]
    fn a_history_from_before_rooms_is_the_direct_room_and_receipts_say_who() {
        // A line as a client from before rooms wrote it: no room, no receipts by name.
        let mut old = serde_json::to_value(Record::Line(line(1, true))).unwrap();
        old["Line"].as_object_mut().unwrap().remove("room");
        let Record::Line(first) = serde_json::from_value(old).unwrap() else { panic!() };
        let mut lines = vec![first, ChatLine { room: String::new(), ..line(2, false) }];
        legacy::assign_rooms(&mut lines, "alice");
        assert!(lines.iter().all(|l| l.room == "alice+bob"));
        lines[0].received("bob", false);
        lines[0].received("bob", true);
        assert_eq!((lines[0].received_by.len(), lines[0].delivered), (1, true));
    }

    #[tokio::test]
    async fn survives_a_reopen_in_order_with_receipts() {
        let dir = tempfile::tempdir().unwrap();
        let history = history_in(dir.path());
        history.append(vec![Record::Line(line(3, false)), Record::Line(line(1, true))], true).await.unwrap();
        history.append(vec![Record::Delivered(MessageId([1; 16]))], false).await.unwrap();
        let receipt = |by: &str| Record::Receipt { id: MessageId([1; 16]), by: by.into(), everyone: false };
        history.append(vec![receipt("bob"), receipt("carol"), receipt("bob")], false).await.unwrap();
        history.append(vec![Record::Line(line(2, false)), Record::Line(line(2, false))], true).await.unwrap();
        drop(history);
        let page = history_in(dir.path()).read("alice+bob".into(), Span::Newest(10)).await.unwrap();
        assert_eq!((seqs(&page), page.earlier, page.later), (vec![1, 2, 3], 0, 0));
        assert!(page.lines[0].delivered && !page.lines[1].delivered);
        assert_eq!(page.lines[0].received_by, ["bob", "carol"], "each once, in the order they came");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("history.db")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the conversation is private");
        }
    }

    #[tokio::test]
    async fn pages_have_what_their_span_asks_at_every_boundary() {
        const LIMIT: usize = 4;
        for n in [0, 1, LIMIT - 1, LIMIT, LIMIT + 1, 3 * LIMIT] {
            let dir = tempfile::tempdir().unwrap();
            let history = history_in(dir.path());
            history.append(team_lines(n as u64), false).await.unwrap();
            let read = |span| history.read("team".into(), span);

            let newest = read(Span::Newest(LIMIT)).await.unwrap();
            let shown = n.min(LIMIT);
            assert_eq!(seqs(&newest), ((n - shown + 1) as u64..=n as u64).collect::<Vec<_>>(), "{n} lines");
            assert_eq!((newest.earlier, newest.later), (n - shown, 0), "{n} lines");

            // Going back a page at a time reaches the first line, and no further.
            let mut first = newest.lines.first().and_then(|l| l.seq);
            let mut seen = newest.lines.len();
            while let Some(seq) = first {
                let page = read(Span::Before { seq, limit: LIMIT }).await.unwrap();
                assert_eq!(page.later, seen, "{n} lines, before {seq}");
                assert_eq!(page.earlier + page.lines.len() + seen, n);
                seen += page.lines.len();
                first = page.lines.first().and_then(|l| l.seq);
            }
            assert_eq!(seen, n);

            // Around the line 3: two lines up to it, then what follows.
            let around = read(Span::Around { seq: 3, before: 2, limit: LIMIT }).await.unwrap();
            let expected: Vec<u64> = (if n >= 3 { 2 } else { 1 }..=n as u64).take(LIMIT).collect();
            assert_eq!(seqs(&around), expected, "{n} lines, around 3");

            let from = read(Span::From { seq: 2, limit: LIMIT }).await.unwrap();
            let expected: Vec<u64> = (2..=n as u64).take(LIMIT).collect();
            assert_eq!(seqs(&from), expected, "{n} lines");
            assert_eq!((from.earlier, from.later), (n.min(1), n.saturating_sub(1 + expected.len())), "{n} lines");
        }
        // Another room's lines are not this room's.
        let dir = tempfile::tempdir().unwrap();
        let history = history_in(dir.path());
        history.append(team_lines(3), false).await.unwrap();
        assert_eq!(history.read("other".into(), Span::Newest(5)).await.unwrap(), Page::default());
        assert_eq!(history.last_seq("team".into()).await.unwrap(), Some(3));
        assert_eq!(history.last_seq("other".into()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_search_finds_words_in_any_case_newest_first_with_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let history = history_in(dir.path());
        let said = ["Hello Bob", "ПРИВЕТ мир", "hello again", "你好 hello", "nothing"];
        let records = said.iter().enumerate().map(|(i, text)| {
            let seq = i as u64 + 1;
            Record::Line(ChatLine { text: text.to_string(), ..line(seq, false) })
        });
        history.append(records.collect(), false).await.unwrap();
        let found = history.search("alice+bob".into(), " HELLO ".into(), 2).await.unwrap();
        assert_eq!(found.count, 3);
        let texts: Vec<&str> = found.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["hello again", "你好 hello"], "the newest two, in order");
        let found = history.search("alice+bob".into(), "привет".into(), 10).await.unwrap();
        assert_eq!(found.count, 1, "not only ASCII is folded");
        assert_eq!(history.search("alice+bob".into(), "absent".into(), 10).await.unwrap().count, 0);
    }

    #[tokio::test]
    async fn places_are_kept_per_room_with_the_room_shown_last() {
        let dir = tempfile::tempdir().unwrap();
        let history = history_in(dir.path());
        assert_eq!(history.places().await.unwrap(), Places::default());
        history.append(team_lines(10), false).await.unwrap();
        let mine = Record::Line(ChatLine { room: "team".into(), ..line(11, true) });
        history.append(vec![mine], false).await.unwrap();
        let reading = Place { seen_upto: Some(7), reading: Some((3, 0.25)) };
        history.set_place("team".into(), reading, Some(100)).await.unwrap();
        history.set_place("alice+bob".into(), Place { seen_upto: Some(9), reading: None }, Some(200)).await.unwrap();
        // Leaving a room records its place without making it the one shown.
        history.set_place("team".into(), Place { seen_upto: Some(8), ..reading }, None).await.unwrap();
        drop(history);
        let places = history_in(dir.path()).places().await.unwrap();
        assert_eq!(places.last_shown.as_deref(), Some("alice+bob"));
        let team = places.rooms.iter().find(|p| p.room == "team").unwrap();
        assert_eq!(team.place, Place { seen_upto: Some(8), reading: Some((3, 0.25)) });
        assert_eq!((team.unread, team.last_seq), (2, Some(11)), "9 and 10 are unread; 11 is ours");
    }

    #[tokio::test]
    async fn an_old_history_file_is_imported_once_with_everything_it_said() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("history.jsonl");
        let mut first = serde_json::to_value(Record::Line(line(1, true))).unwrap();
        first["Line"].as_object_mut().unwrap().remove("room");
        let records = [
            first,
            serde_json::to_value(Record::Line(ChatLine { room: String::new(), ..line(2, false) })).unwrap(),
            serde_json::to_value(Record::Receipt { id: MessageId([1; 16]), by: "bob".into(), everyone: true }).unwrap(),
        ];
        let mut text: String = records.iter().map(|r| format!("{r}\n")).collect();
        text.push_str("not a record\n");
        std::fs::write(&old, text).unwrap();
        let history = history_in(dir.path());
        let page = history.read("alice+bob".into(), Span::Newest(10)).await.unwrap();
        assert_eq!(seqs(&page), [1, 2], "in the direct room of those days");
        assert!(page.lines[0].delivered);
        assert_eq!(page.lines[0].received_by, ["bob"]);
        assert!(!old.exists() && dir.path().join("history.jsonl.imported").exists());
        // Opened again: nothing is imported twice.
        drop(history);
        let page = history_in(dir.path()).read("alice+bob".into(), Span::Newest(10)).await.unwrap();
        assert_eq!(page.lines.len(), 2);
    }

    #[tokio::test]
    async fn a_change_of_the_room_is_kept_as_which_change_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let history = history_in(dir.path());
        let members = vec!["alice".to_string(), "bob".to_string()];
        let made = ChatLine::change(
            MessageId([7; 16]),
            4,
            "alice+bob".into(),
            "bob".into(),
            &Body::Created { members: members.clone() },
            0,
        );
        let left = ChatLine::change(MessageId([8; 16]), 5, "alice+bob".into(), "bob".into(), &Body::Left, 0);
        history.append(vec![Record::Line(made), Record::Line(left), Record::Line(line(6, false))], true).await.unwrap();
        drop(history);
        let page = history_in(dir.path()).read("alice+bob".into(), Span::Newest(10)).await.unwrap();
        let changes: Vec<_> = page.lines.iter().map(|l| (l.notice, l.change.clone())).collect();
        assert_eq!(changes, [(true, Some(Change::Created { members })), (true, Some(Change::Left)), (false, None)]);
        assert_eq!(page.lines[0].text, "bob made the room with alice, bob", "and in English words");
    }

    #[tokio::test]
    async fn a_history_of_the_first_schema_is_migrated_with_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let db = rusqlite::Connection::open(dir.path().join("history.db")).unwrap();
        db.execute_batch(store::V1).unwrap();
        db.pragma_update(None, "user_version", 1).unwrap();
        db.execute(
            "INSERT INTO lines VALUES (?1, 3, 'alice+bob', 'bob', 'bob added carol', 5, 0, 0, 1)",
            [&[9u8; 16][..]],
        )
        .unwrap();
        drop(db);
        let history = history_in(dir.path());
        let page = history.read("alice+bob".into(), Span::Newest(10)).await.unwrap();
        assert_eq!((page.lines[0].text.as_str(), page.lines[0].notice), ("bob added carol", true));
        assert_eq!(page.lines[0].change, None, "told as it was written");
        history.append(vec![Record::Line(line(4, false))], true).await.unwrap();
        assert_eq!(history.read("alice+bob".into(), Span::Newest(10)).await.unwrap().lines.len(), 2);
    }

    #[tokio::test]
    async fn a_history_of_a_newer_client_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let history = history_in(dir.path());
        history.append(team_lines(2), true).await.unwrap();
        drop(history);
        let db = rusqlite::Connection::open(dir.path().join("history.db")).unwrap();
        db.pragma_update(None, "user_version", 99).unwrap();
        drop(db);
        let error = history_in(dir.path()).read("team".into(), Span::Newest(5)).await.unwrap_err();
        assert!(error.to_string().contains("cannot be read"), "{error}");
        let db = rusqlite::Connection::open(dir.path().join("history.db")).unwrap();
        let kept: i64 = db.query_row("SELECT count(*) FROM lines", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, 2);
    }

    #[tokio::test]
    async fn a_write_that_fails_says_so() {
        let dir = tempfile::tempdir().unwrap();
        // The history's folder is a file: nothing can be written there.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        let history = history_in(&blocked);
        assert!(history.append(vec![Record::Line(line(1, false))], true).await.is_err());
    }
}
