//! The database's schema as numbered migrations (`rusqlite_migration`, kept in SQLite's
//! `user_version`): a relay opening an older database brings it up to date in one
//! transaction before it serves anyone. A migration, once released, is never edited:
//! a change is a new one at the end.

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

/// qchat 1's schema, as its relays created it (their `user_version` is 0); public so that
/// tests can make a qchat 1 data directory.
pub const V1: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           BLOB NOT NULL UNIQUE,
    sender       TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    delivered_ms INTEGER
);
CREATE INDEX IF NOT EXISTS messages_pending ON messages (recipient, seq) WHERE delivered_ms IS NULL;
CREATE INDEX IF NOT EXISTS messages_unreceived ON messages (sender, seq) WHERE delivered_ms IS NULL;
CREATE INDEX IF NOT EXISTS messages_by_sender ON messages (sender, seq);
CREATE TABLE IF NOT EXISTS files (
    id           BLOB PRIMARY KEY,
    sender       TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    name         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    held         INTEGER NOT NULL DEFAULT 0,
    blake3       BLOB,
    created_ms   INTEGER NOT NULL,
    committed_ms INTEGER,
    fetched_ms   INTEGER,
    swept_ms     INTEGER
);
CREATE INDEX IF NOT EXISTS files_by_recipient ON files (recipient, created_ms);
CREATE INDEX IF NOT EXISTS files_by_sender ON files (sender, created_ms);
";

/// qchat 2: listings in pages (by rowid), retention of messages and of swept files' rows,
/// and a running count of what each sender's waiting messages cost, kept by triggers: a
/// message costs its bytes plus 256 for its row and indexes, so that the cap bounds rows
/// too (a flood of one-byte messages fills it as surely as long ones).
const V2: &str = "
DROP INDEX files_by_recipient;
DROP INDEX files_by_sender;
CREATE INDEX files_to ON files (recipient);
CREATE INDEX files_from ON files (sender);
CREATE INDEX files_swept ON files (swept_ms) WHERE swept_ms IS NOT NULL;
CREATE INDEX messages_delivered ON messages (delivered_ms) WHERE delivered_ms IS NOT NULL;
CREATE INDEX messages_undelivered_since ON messages (created_ms) WHERE delivered_ms IS NULL;
CREATE TABLE waiting (
    user          TEXT PRIMARY KEY,
    message_bytes INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO waiting (user, message_bytes)
    SELECT sender, SUM(length(CAST(body AS BLOB)) + 256) FROM messages WHERE delivered_ms IS NULL GROUP BY sender;
CREATE TRIGGER waiting_add AFTER INSERT ON messages BEGIN
    INSERT INTO waiting (user, message_bytes) VALUES (new.sender, length(CAST(new.body AS BLOB)) + 256)
        ON CONFLICT (user) DO UPDATE SET message_bytes = message_bytes + excluded.message_bytes;
END;
CREATE TRIGGER waiting_delivered AFTER UPDATE OF delivered_ms ON messages
    WHEN old.delivered_ms IS NULL AND new.delivered_ms IS NOT NULL BEGIN
    UPDATE waiting SET message_bytes = message_bytes - length(CAST(old.body AS BLOB)) - 256 WHERE user = old.sender;
END;
CREATE TRIGGER waiting_removed AFTER DELETE ON messages WHEN old.delivered_ms IS NULL BEGIN
    UPDATE waiting SET message_bytes = message_bytes - length(CAST(old.body AS BLOB)) - 256 WHERE user = old.sender;
END;
";

/// qchat 4: devices. Each device of a person has its own row (made when it enrolls with an
/// invite, or when a certificate from `qchat-certs user` first connects) with its own
/// delivery cursor: every message for its person, or sent by its person from another of
/// their devices, up to `cursor` has reached it. Files are fetched per device. A message
/// records the device it came from, so that it goes to its sender's other devices; the
/// ones stored before (no device) went to their sender's only device. A device's public
/// key for end-to-end encryption will live in `e2e_key`.
const V3: &str = "
CREATE TABLE devices (
    user         TEXT NOT NULL,
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    enrolled_ms  INTEGER NOT NULL,
    last_seen_ms INTEGER,
    revoked_ms   INTEGER,
    cursor       INTEGER NOT NULL DEFAULT 0,
    e2e_key      BLOB,
    PRIMARY KEY (user, id)
) WITHOUT ROWID;
CREATE TABLE device_certs (
    serial       BLOB PRIMARY KEY,
    user         TEXT NOT NULL,
    device       TEXT NOT NULL,
    not_after_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX device_certs_of ON device_certs (user, device);
CREATE TABLE invites (
    id           TEXT PRIMARY KEY,
    digest       BLOB NOT NULL,
    user         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    used_ms      INTEGER,
    revoked_ms   INTEGER,
    created_by   TEXT,
    device       TEXT
) WITHOUT ROWID;
CREATE INDEX invites_expiry ON invites (expires_ms);
CREATE INDEX invites_of ON invites (user, created_ms);
CREATE TABLE fetches (
    file         BLOB NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    device       TEXT NOT NULL,
    at_ms        INTEGER NOT NULL,
    PRIMARY KEY (file, device)
) WITHOUT ROWID;
ALTER TABLE messages ADD COLUMN sender_device TEXT;
CREATE INDEX messages_to ON messages (recipient, seq);
";

/// qchat 5: rooms. Every message (`messages.room`, was `recipient`) and file
/// (`files.room`) belongs to a room; a room numbers its events (`room_seq`: messages, and
/// changes of its members, `kind` > 0) in one order. A membership covers the room's events
/// from `since_seq` (the event that added the member) to `until_seq` (the one that removed
/// them, or none while they are in), and `delivered_upto` is how far a device of theirs
/// has received. `made_by` is who made a room (`creator`, who changes its members, passes
/// on when they leave), to bound the rooms one user makes. A two-person relay's conversation becomes the direct room of its two
/// people, with every message and file it had; a fetch records whose device made it.
const V4: &str = "
CREATE TABLE rooms (
    name         TEXT PRIMARY KEY,
    direct       INTEGER NOT NULL DEFAULT 0,
    creator      TEXT,
    made_by      TEXT,
    created_ms   INTEGER NOT NULL,
    last_seq     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX rooms_made ON rooms (made_by, created_ms);
CREATE TABLE members (
    room           TEXT NOT NULL,
    user           TEXT NOT NULL,
    since_seq      INTEGER NOT NULL,
    until_seq      INTEGER,
    added_ms       INTEGER NOT NULL,
    delivered_upto INTEGER NOT NULL,
    PRIMARY KEY (room, user, since_seq)
) WITHOUT ROWID;
CREATE INDEX members_of ON members (user, room);
ALTER TABLE messages RENAME COLUMN recipient TO room;
ALTER TABLE messages ADD COLUMN room_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET room = CASE WHEN sender < room THEN sender || '+' || room ELSE room || '+' || sender END;
UPDATE messages SET room_seq = numbered.n FROM
    (SELECT seq, ROW_NUMBER() OVER (PARTITION BY room ORDER BY seq) AS n FROM messages) AS numbered
    WHERE messages.seq = numbered.seq;
CREATE INDEX messages_in_room ON messages (room, room_seq);
ALTER TABLE fetches ADD COLUMN user TEXT;
UPDATE fetches SET user = (SELECT recipient FROM files WHERE files.id = fetches.file);
ALTER TABLE files RENAME COLUMN recipient TO room;
UPDATE files SET room = CASE WHEN sender < room THEN sender || '+' || room ELSE room || '+' || sender END;
INSERT INTO rooms (name, direct, created_ms, last_seq)
    SELECT room, 1, MIN(at), MAX(room_seq) FROM (
        SELECT room, created_ms AS at, room_seq FROM messages
        UNION ALL SELECT room, created_ms, 0 FROM files)
    GROUP BY room;
INSERT INTO members (room, user, since_seq, added_ms, delivered_upto)
    SELECT name, who, 1, 0, COALESCE((SELECT MAX(room_seq) FROM messages
        WHERE messages.room = pairs.name AND sender != pairs.who AND delivered_ms IS NOT NULL), 0)
    FROM (SELECT name, substr(name, 1, instr(name, '+') - 1) AS who FROM rooms
          UNION ALL SELECT name, substr(name, instr(name, '+') + 1) FROM rooms) AS pairs;
";

/// qchat 6: end to end. Messages arrive sealed (MLS application messages, stored as BLOBs
/// in `messages.body`, kind 0 like the plain texts before them, which stay as they were);
/// each room's MLS commits are events of kind 5, and the room keeps its group's epoch
/// (`mls_epoch`: the number of commits taken, 0 while it has no group) and the latest group
/// info. Devices publish key packages (`key_packages`; a device's signing key is its
/// `devices.e2e_key`). New files have an empty `name`: it travels encrypted.
const V5: &str = "
ALTER TABLE rooms ADD COLUMN mls_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN group_info BLOB;
CREATE TABLE key_packages (
    id          INTEGER PRIMARY KEY,
    user        TEXT NOT NULL,
    device      TEXT NOT NULL,
    package     BLOB NOT NULL,
    last_resort INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX key_packages_of ON key_packages (user, device, last_resort);
";

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(V1), M::up(V2), M::up(V3), M::up(V4), M::up(V5)])
}

/// What each waiting message costs beyond its text, in the sender's share.
pub const MESSAGE_OVERHEAD: u64 = 256;

/// The schema version this relay runs.
pub fn latest_version() -> usize {
    5
}

/// Brings the database up to the latest schema.
pub fn migrate(conn: &mut Connection) -> Result<(), rusqlite_migration::Error> {
    migrations().to_latest(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_are_valid() {
        migrations().validate().unwrap();
    }

    #[test]
    fn a_qchat_1_database_keeps_its_data_and_counts_what_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(V1).unwrap();
            conn.execute_batch(
                "INSERT INTO messages (id, sender, recipient, body, created_ms) VALUES (x'01', 'alice', 'bob', 'héllo', 1);
                 INSERT INTO messages (id, sender, recipient, body, created_ms, delivered_ms)
                     VALUES (x'02', 'alice', 'bob', 'old', 1, 2);
                 INSERT INTO files (id, sender, recipient, name, size, created_ms) VALUES (x'03', 'bob', 'alice', 'f', 9, 1);",
            )
            .unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, latest_version());
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM messages"), 2);
        assert_eq!(count("SELECT COUNT(*) FROM files"), 1);
        assert_eq!(count("SELECT message_bytes FROM waiting WHERE user = 'alice'"), 6 + 256, "bytes, not characters");
        conn.execute("UPDATE messages SET delivered_ms = 5 WHERE id = x'01'", []).unwrap();
        assert_eq!(count("SELECT message_bytes FROM waiting WHERE user = 'alice'"), 0);
        migrate(&mut conn).unwrap();
    }

    #[test]
    fn a_qchat_3_database_gets_devices_and_keeps_its_messages_for_the_first_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            Migrations::new(vec![M::up(V1), M::up(V2)]).to_latest(&mut conn).unwrap();
            conn.execute_batch(
                "INSERT INTO messages (id, sender, recipient, body, created_ms) VALUES (x'01', 'alice', 'bob', 'hi', 1);",
            )
            .unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM messages WHERE sender_device IS NULL"), 1, "kept, from no device");
        assert_eq!(count("SELECT COUNT(*) FROM devices"), 0, "devices appear when they connect");
        assert_eq!(count("SELECT message_bytes FROM waiting WHERE user = 'alice'"), 2 + 256);
    }

    #[test]
    fn a_two_person_conversation_becomes_their_direct_room_numbered_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            Migrations::new(vec![M::up(V1), M::up(V2), M::up(V3)]).to_latest(&mut conn).unwrap();
            conn.execute_batch(
                "INSERT INTO messages (id, sender, recipient, body, created_ms, delivered_ms)
                     VALUES (x'01', 'bob', 'alice', 'one', 1, 2), (x'02', 'alice', 'bob', 'two', 3, 4),
                            (x'03', 'bob', 'alice', 'three', 5, NULL);
                 INSERT INTO files (id, sender, recipient, name, size, created_ms, fetched_ms)
                     VALUES (x'04', 'alice', 'bob', 'f', 9, 1, 2);
                 INSERT INTO fetches (file, device, at_ms) VALUES (x'04', 'b1', 2);",
            )
            .unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        let rows = |sql: &str| -> Vec<String> {
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
        };
        assert_eq!(
            rows("SELECT room || ' ' || room_seq || ' ' || body FROM messages ORDER BY seq"),
            ["alice+bob 1 one", "alice+bob 2 two", "alice+bob 3 three"]
        );
        assert_eq!(rows("SELECT name || ' ' || direct || ' ' || last_seq FROM rooms"), ["alice+bob 1 3"]);
        assert_eq!(
            rows("SELECT user || ' ' || since_seq || ' ' || delivered_upto FROM members ORDER BY user"),
            ["alice 1 1", "bob 1 2"],
            "each has what was delivered to them"
        );
        assert_eq!(rows("SELECT room FROM files"), ["alice+bob"]);
        assert_eq!(rows("SELECT user FROM fetches"), ["bob"]);
    }

    #[test]
    fn a_qchat_5_database_keeps_its_plain_messages_and_files_and_has_no_groups_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            Migrations::new(vec![M::up(V1), M::up(V2), M::up(V3), M::up(V4)]).to_latest(&mut conn).unwrap();
            conn.execute_batch(
                "INSERT INTO rooms (name, direct, created_ms, last_seq) VALUES ('alice+bob', 1, 1, 1);
                 INSERT INTO messages (id, sender, room, room_seq, kind, body, created_ms)
                     VALUES (x'01', 'alice', 'alice+bob', 1, 0, 'waiting for bob', 1);
                 INSERT INTO files (id, sender, room, name, size, created_ms) VALUES (x'04', 'alice', 'alice+bob', 'f.txt', 9, 1);",
            )
            .unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        let rows = |sql: &str| -> Vec<String> {
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
        };
        assert_eq!(rows("SELECT body FROM messages"), ["waiting for bob"]);
        assert_eq!(rows("SELECT name FROM files"), ["f.txt"]);
        assert_eq!(
            rows("SELECT name || ' ' || mls_epoch || ' ' || (group_info IS NULL) FROM rooms"),
            ["alice+bob 0 1"]
        );
        assert_eq!(rows("SELECT COUNT(*) || '' FROM key_packages"), ["0"]);
    }
}
