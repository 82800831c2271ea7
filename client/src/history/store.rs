//! `history.db`: the SQLite file behind [`super::History`], its schema (numbered
//! migrations), and its queries. Everything here blocks; the caller runs it off tokio's
//! workers.

use std::path::Path;

use qchat_shared::frame::MessageId;
use rusqlite::{params, Connection, OptionalExtension, Row};
use rusqlite_migration::{Migrations, M};

use super::{legacy, ChatLine, Found, Page, Place, Places, Record, RoomPlace, Span};

/// The first schema: lines by room in the relay's order, who received each, and where
/// the user was in each room.
pub(super) const V1: &str = "
CREATE TABLE lines (
    id BLOB PRIMARY KEY,
    -- The relay's order (a line that never got one, from an old history, sorts last).
    seq INTEGER NOT NULL,
    room TEXT NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    mine INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    notice INTEGER NOT NULL
);
CREATE INDEX lines_by_room ON lines (room, seq);
CREATE TABLE receipts (
    id BLOB NOT NULL,
    by_user TEXT NOT NULL,
    UNIQUE (id, by_user)
);
CREATE TABLE places (
    room TEXT PRIMARY KEY,
    seen_upto INTEGER,
    reading_from INTEGER,
    reading_at REAL,
    shown_ms INTEGER NOT NULL
);
";

/// A notice of a change of the room keeps which change it is (JSON of
/// [`crate::rooms::Change`]), so that a window tells it in its own language.
const V2: &str = "ALTER TABLE lines ADD COLUMN about TEXT;";

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(V1), M::up(V2)])
}

/// A `seq` for a line with none (an old history's): after every stored line.
const NO_SEQ: i64 = i64::MAX;

const LINE_COLUMNS: &str = "id, seq, room, sender, text, time_ms, mine, delivered, notice, about";

/// One open history database.
pub struct Store {
    conn: Connection,
    /// `PRAGMA synchronous` is FULL (every commit fsynced) rather than NORMAL.
    synced: bool,
}

impl Store {
    /// Opens (or makes) `dir/history.db`, private to this user, at the newest schema, and
    /// imports a `history.jsonl` of an older client found beside it (renamed to
    /// `history.jsonl.imported` once in the database).
    pub fn open(dir: &Path, me: &str) -> Result<Store, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let path = dir.join("history.db");
        let mut conn = Connection::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot make {} private: {e}", path.display()))?;
        }
        let setup = |conn: &mut Connection| -> rusqlite::Result<()> {
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")
        };
        setup(&mut conn).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        migrations().to_latest(&mut conn).map_err(|e| format!("the history {} cannot be read: {e}", path.display()))?;
        let mut store = Store { conn, synced: false };
        store.import(&dir.join("history.jsonl"), me)?;
        Ok(store)
    }

    fn import(&mut self, old: &Path, me: &str) -> Result<(), String> {
        let mut lines = legacy::load(old).map_err(|e| format!("cannot read {}: {e}", old.display()))?;
        if lines.is_empty() && !old.exists() {
            return Ok(());
        }
        legacy::assign_rooms(&mut lines, me);
        let records: Vec<Record> = lines.into_iter().map(Record::Line).collect();
        self.append(&records, true).map_err(|e| format!("cannot import {}: {e}", old.display()))?;
        let done = old.with_extension("jsonl.imported");
        std::fs::rename(old, &done).map_err(|e| format!("cannot rename {}: {e}", old.display()))?;
        tracing::info!(from = %old.display(), "the chat history moved into history.db");
        Ok(())
    }

    /// Writes `records` in one transaction; with `durable`, it is on disk when this returns.
    pub fn append(&mut self, records: &[Record], durable: bool) -> rusqlite::Result<()> {
        if self.synced != durable {
            self.conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
            self.synced = durable;
        }
        let tx = self.conn.transaction()?;
        {
            let mut put_line = tx.prepare_cached(
                "INSERT INTO lines (id, seq, room, sender, text, time_ms, mine, delivered, notice, about)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, room = excluded.room,
                   sender = excluded.sender, text = excluded.text, time_ms = excluded.time_ms,
                   mine = excluded.mine, delivered = lines.delivered OR excluded.delivered,
                   notice = excluded.notice, about = excluded.about",
            )?;
            let mut put_receipt = tx.prepare_cached("INSERT OR IGNORE INTO receipts (id, by_user) VALUES (?1, ?2)")?;
            let mut delivered = tx.prepare_cached("UPDATE lines SET delivered = 1 WHERE id = ?1")?;
            for record in records {
                match record {
                    Record::Line(l) => {
                        let seq = l.seq.map_or(NO_SEQ, |s| s as i64);
                        put_line.execute(params![
                            &l.id.0[..],
                            seq,
                            l.room,
                            l.from,
                            l.text,
                            l.time_ms,
                            l.mine,
                            l.delivered,
                            l.notice,
                            l.change.as_ref().and_then(|change| serde_json::to_string(change).ok()),
                        ])?;
                        for by in &l.received_by {
                            put_receipt.execute(params![&l.id.0[..], by])?;
                        }
                    }
                    Record::Delivered(id) => {
                        delivered.execute([&id.0[..]])?;
                    }
                    Record::Receipt { id, by, everyone } => {
                        put_receipt.execute(params![&id.0[..], by])?;
                        if *everyone {
                            delivered.execute([&id.0[..]])?;
                        }
                    }
                }
            }
        }
        tx.commit()
    }

    /// The lines of `room` that `span` asks for, in the relay's order, with how many the
    /// room has before and after them.
    pub fn read(&self, room: &str, span: Span) -> rusqlite::Result<Page> {
        let span = match span {
            Span::Around { seq, before, limit } => Span::From { seq: self.back_from(room, seq, before)?, limit },
            span => span,
        };
        let (sql, from, limit) = match span {
            Span::Newest(limit) => ("seq < ?2 ORDER BY seq DESC", NO_SEQ, limit),
            Span::Before { seq, limit } => ("seq < ?2 ORDER BY seq DESC", seq as i64, limit),
            Span::From { seq, limit } => ("seq >= ?2 ORDER BY seq ASC", seq as i64, limit),
            Span::Around { .. } => unreachable!("made a From above"),
        };
        let sql = format!("SELECT {LINE_COLUMNS} FROM lines WHERE room = ?1 AND {sql}, id LIMIT ?3");
        let mut lines = Vec::new();
        {
            let mut select = self.conn.prepare_cached(&sql)?;
            let mut rows = select.query(params![room, from, limit as i64])?;
            while let Some(row) = rows.next()? {
                lines.push(self.line(row)?);
            }
        }
        if !matches!(span, Span::From { .. }) {
            lines.reverse();
        }
        // Lines without a relay's order are the newest: `Newest` includes them.
        if let Span::Newest(limit) = span {
            let mut unordered = self.conn.prepare_cached(&format!(
                "SELECT {LINE_COLUMNS} FROM lines WHERE room = ?1 AND seq = ?2 ORDER BY time_ms, id LIMIT ?3"
            ))?;
            let mut rows = unordered.query(params![room, NO_SEQ, limit as i64])?;
            while let Some(row) = rows.next()? {
                lines.push(self.line(row)?);
            }
            let excess = lines.len().saturating_sub(limit);
            lines.drain(..excess);
        }
        let seq_of = |l: &ChatLine| l.seq.map_or(NO_SEQ, |s| s as i64);
        let (earlier, later) = match (lines.first().map(seq_of), lines.last().map(seq_of)) {
            (Some(first), Some(last)) => (self.count(room, "seq < ?2", first)?, self.count(room, "seq > ?2", last)?),
            // Nothing in the span: everything is on one side of it.
            _ => match span {
                Span::Newest(_) => (self.count(room, "seq <= ?2", NO_SEQ)?, 0),
                Span::Before { seq, .. } => (0, self.count(room, "seq >= ?2", seq as i64)?),
                Span::From { seq, .. } | Span::Around { seq, .. } => (self.count(room, "seq < ?2", seq as i64)?, 0),
            },
        };
        Ok(Page { lines, earlier, later })
    }

    /// The `seq` of the line `back` lines up to `seq` (it the first of them), or the
    /// room's first line when it has fewer.
    fn back_from(&self, room: &str, seq: u64, back: usize) -> rusqlite::Result<u64> {
        let sql = "SELECT seq FROM lines WHERE room = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT 1 OFFSET ?3";
        let found: Option<i64> = self
            .conn
            .prepare_cached(sql)?
            .query_row(params![room, seq as i64, back.saturating_sub(1) as i64], |r| r.get(0))
            .optional()?;
        Ok(found.map_or(0, |seq| seq as u64))
    }

    fn count(&self, room: &str, condition: &str, seq: i64) -> rusqlite::Result<usize> {
        let sql = format!("SELECT count(*) FROM lines WHERE room = ?1 AND {condition}");
        self.conn.prepare_cached(&sql)?.query_row(params![room, seq], |r| r.get::<_, i64>(0)).map(|n| n as usize)
    }

    /// The lines of `room` whose text has `words` (in any case), the newest `limit` of
    /// them, and how many there are in all.
    pub fn search(&self, room: &str, words: &str, limit: usize) -> rusqlite::Result<Found> {
        let words = words.trim().to_lowercase();
        let mut lines = Vec::new();
        let mut count = 0;
        let mut select = self.conn.prepare_cached(&format!(
            "SELECT {LINE_COLUMNS} FROM lines WHERE room = ?1 AND notice = 0 ORDER BY seq DESC, id DESC"
        ))?;
        let mut rows = select.query([room])?;
        while let Some(row) = rows.next()? {
            if !row.get_ref(4)?.as_str().unwrap_or("").to_lowercase().contains(&words) {
                continue;
            }
            count += 1;
            if lines.len() < limit {
                lines.push(self.line(row)?);
            }
        }
        lines.reverse();
        Ok(Found { words, count, lines })
    }

    fn line(&self, row: &Row<'_>) -> rusqlite::Result<ChatLine> {
        let id: Vec<u8> = row.get(0)?;
        let id = MessageId(id.try_into().unwrap_or([0; 16]));
        let seq: i64 = row.get(1)?;
        let mut receipts = self.conn.prepare_cached("SELECT by_user FROM receipts WHERE id = ?1 ORDER BY rowid")?;
        let received_by = receipts.query_map([&id.0[..]], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        Ok(ChatLine {
            id,
            seq: (seq != NO_SEQ).then_some(seq as u64),
            room: row.get(2)?,
            from: row.get(3)?,
            text: row.get(4)?,
            time_ms: row.get(5)?,
            mine: row.get(6)?,
            delivered: row.get(7)?,
            received_by,
            notice: row.get(8)?,
            change: row.get::<_, Option<String>>(9)?.and_then(|about| serde_json::from_str(&about).ok()),
        })
    }

    /// The newest stored line of `room`, by the relay's order.
    pub fn last_seq(&self, room: &str) -> rusqlite::Result<Option<u64>> {
        let sql = "SELECT max(seq) FROM lines WHERE room = ?1 AND seq < ?2";
        let last: Option<i64> = self.conn.prepare_cached(sql)?.query_row(params![room, NO_SEQ], |r| r.get(0))?;
        Ok(last.map(|s| s as u64))
    }

    /// Where the user was in each room, and which room was shown last.
    pub fn places(&self) -> rusqlite::Result<Places> {
        let mut select = self.conn.prepare_cached(
            "SELECT room, seen_upto, reading_from, reading_at, shown_ms FROM places ORDER BY shown_ms DESC",
        )?;
        let places: Vec<(String, Place, i64)> = select
            .query_map([], |r| {
                let reading = match (r.get::<_, Option<i64>>(2)?, r.get::<_, Option<f64>>(3)?) {
                    (Some(from), Some(at)) => Some((from as u64, at as f32)),
                    _ => None,
                };
                let place = Place { seen_upto: r.get::<_, Option<i64>>(1)?.map(|s| s as u64), reading };
                Ok((r.get(0)?, place, r.get(4)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let last_shown = places.iter().find(|(_, _, shown)| *shown > 0).map(|(room, _, _)| room.clone());
        let mut rooms = Vec::with_capacity(places.len());
        for (room, place, _) in places {
            let unread = "seq > ?2 AND seq < ?3 AND mine = 0 AND notice = 0";
            let sql = format!("SELECT count(*) FROM lines WHERE room = ?1 AND {unread}");
            let after = place.seen_upto.map_or(-1, |s| s as i64);
            let unread: i64 = self.conn.prepare_cached(&sql)?.query_row(params![room, after, NO_SEQ], |r| r.get(0))?;
            let last_seq = self.last_seq(&room)?;
            rooms.push(RoomPlace { room, place, unread: unread as usize, last_seq });
        }
        Ok(Places { rooms, last_shown })
    }

    /// Records where the user is in `room`; with `shown_ms`, it is the room shown now.
    pub fn set_place(&self, room: &str, place: &Place, shown_ms: Option<i64>) -> rusqlite::Result<()> {
        let shown: Option<i64> =
            self.conn.query_row("SELECT shown_ms FROM places WHERE room = ?1", [room], |r| r.get(0)).optional()?;
        let shown = shown_ms.or(shown).unwrap_or(0);
        let (from, at) = place.reading.map_or((None, None), |(from, at)| (Some(from as i64), Some(at as f64)));
        self.conn.prepare_cached("INSERT OR REPLACE INTO places VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(params![
            room,
            place.seen_upto.map(|s| s as i64),
            from,
            at,
            shown
        ])?;
        Ok(())
    }
}
