//! Rooms in the store: who is in each, the room a message or file goes to (membership is
//! checked here and nowhere else), and each room's one sequence of events (messages and
//! changes of members), which the relay numbers.

use qchat_shared::frame::{Body, MessageId};
use qchat_shared::limits::{MAX_ROOMS_MADE_PER_DAY, MAX_ROOMS_PER_USER, MAX_ROOM_MEMBERS};
use qchat_shared::names::{direct_pair, direct_room, validate_room_name, validate_user_name};
use rusqlite::types::Value;
use rusqlite::{params, OptionalExtension, Transaction};

use super::messages::StoredMessage;
use async_trait::async_trait;

use super::interfaces::RoomStore;
use super::{now_ms, Store, StoreError};

/// A room as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    pub name: String,
    pub direct: bool,
    pub creator: Option<String>,
    /// Its members now, in the order they joined.
    pub members: Vec<String>,
    /// The number of its latest event.
    pub last_seq: u64,
}

/// The users of the relay, for the checks that need them: a new member or the other
/// person of a direct room must be one, and "the relay's only other user" is a default.
pub type Users = std::sync::Arc<Vec<String>>;

fn refused(reason: impl Into<String>) -> StoreError {
    StoreError::Refused(reason.into().into())
}

/// Which kind number and value a body is stored as (`messages.kind`, `messages.body`): a
/// message is kind 0, plain text from before end to end encryption or a sealed BLOB.
pub(super) fn encode_body(body: &Body) -> (i64, Value) {
    match body {
        Body::Text(text) => (0, Value::Text(text.clone())),
        Body::Sealed(sealed) => (0, Value::Blob(sealed.clone())),
        Body::Created { members } => (1, Value::Text(members.join(","))),
        Body::Added { user } => (2, Value::Text(user.clone())),
        Body::Removed { user } => (3, Value::Text(user.clone())),
        Body::Left => (4, Value::Text(String::new())),
        Body::Commit { .. } => (5, Value::Blob(qchat_shared::codec::encode(body).unwrap_or_default())),
    }
}

/// The body stored as `kind` and `value`.
pub(super) fn decode_body(kind: i64, value: Value) -> Body {
    let text = |value: Value| match value {
        Value::Text(text) => text,
        _ => String::new(),
    };
    match (kind, value) {
        (0, Value::Blob(sealed)) => Body::Sealed(sealed),
        (1, value) => {
            Body::Created { members: text(value).split(',').filter(|m| !m.is_empty()).map(str::to_string).collect() }
        }
        (2, value) => Body::Added { user: text(value) },
        (3, value) => Body::Removed { user: text(value) },
        (4, _) => Body::Left,
        (5, Value::Blob(bytes)) => qchat_shared::codec::decode::<Body>(&bytes)
            .map(|(body, _)| body)
            .unwrap_or(Body::Commit { epoch: 0, commit: Vec::new(), welcome: None }),
        (_, value) => Body::Text(text(value)),
    }
}

/// The members of `room` now, in the order they joined.
pub(super) fn current_members(txn: &Transaction<'_>, room: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        txn.prepare_cached("SELECT user FROM members WHERE room = ?1 AND until_seq IS NULL ORDER BY since_seq, user")?;
    let rows = stmt.query_map(params![room], |r| r.get(0))?;
    Ok(rows.collect::<Result<Vec<String>, _>>()?)
}

/// Whether `user` is in `room` now.
pub(super) fn is_member(txn: &Transaction<'_>, room: &str, user: &str) -> Result<bool, StoreError> {
    Ok(txn
        .query_row(
            "SELECT 1 FROM members WHERE room = ?1 AND user = ?2 AND until_seq IS NULL",
            params![room, user],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn room_row(txn: &Transaction<'_>, name: &str) -> Result<Option<RoomRow>, StoreError> {
    let row: Option<(bool, Option<String>, i64)> = txn
        .query_row("SELECT direct, creator, last_seq FROM rooms WHERE name = ?1", params![name], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((direct, creator, last_seq)) = row else { return Ok(None) };
    let members = current_members(txn, name)?;
    Ok(Some(RoomRow { name: name.to_string(), direct, creator, members, last_seq: last_seq as u64 }))
}

/// The rooms `user` is in now.
fn rooms_of(txn: &Transaction<'_>, user: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        txn.prepare_cached("SELECT room FROM members WHERE user = ?1 AND until_seq IS NULL ORDER BY room")?;
    let rows = stmt.query_map(params![user], |r| r.get(0))?;
    Ok(rows.collect::<Result<Vec<String>, _>>()?)
}

/// Refuses when `user` is in as many rooms as one may be.
fn check_room_count(txn: &Transaction<'_>, user: &str) -> Result<(), StoreError> {
    if rooms_of(txn, user)?.len() >= MAX_ROOMS_PER_USER {
        return Err(refused(format!("{user} is in {MAX_ROOMS_PER_USER} rooms already, the most one can be in")));
    }
    Ok(())
}

/// Appends an event to `room`'s sequence; returns it as committed, with its audience: the
/// members it goes to (every member now, and one it removes).
pub(super) fn append(
    txn: &Transaction<'_>,
    room: &str,
    (sender, sender_device): (&str, &str),
    id: MessageId,
    body: Body,
) -> Result<StoredMessage, StoreError> {
    let room_seq: i64 = txn.query_row(
        "UPDATE rooms SET last_seq = last_seq + 1 WHERE name = ?1 RETURNING last_seq",
        params![room],
        |r| r.get(0),
    )?;
    let time_ms = now_ms();
    let (kind, text) = encode_body(&body);
    txn.execute(
        "INSERT INTO messages (id, sender, sender_device, room, room_seq, kind, body, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![&id.0[..], sender, sender_device, room, room_seq, kind, text, time_ms],
    )?;
    let seq = txn.last_insert_rowid() as u64;
    if kind != 0 {
        // A change of members waits for no one: it never counts in its sender's share.
        txn.execute("UPDATE messages SET delivered_ms = ?2 WHERE seq = ?1", params![seq as i64, time_ms])?;
    }
    let mut audience = current_members(txn, room)?;
    if let Body::Removed { user } = &body {
        audience.push(user.clone());
    } else if body == Body::Left {
        audience.push(sender.to_string());
    }
    Ok(StoredMessage {
        seq,
        id,
        room: room.to_string(),
        room_seq: room_seq as u64,
        sender: sender.to_string(),
        sender_device: Some(sender_device.to_string()),
        body,
        time_ms,
        audience,
    })
}

/// Makes a room with `members` (its first event, `Created`, is their first).
fn make_room(
    txn: &Transaction<'_>,
    name: &str,
    creator: (&str, &str),
    members: &[String],
    direct: bool,
) -> Result<StoredMessage, StoreError> {
    for member in members {
        check_room_count(txn, member)?;
    }
    let now = now_ms();
    let made_today: i64 = txn.query_row(
        "SELECT COUNT(*) FROM rooms WHERE made_by = ?1 AND created_ms > ?2",
        params![creator.0, now - 24 * 3600 * 1000],
        |r| r.get(0),
    )?;
    if made_today as usize >= MAX_ROOMS_MADE_PER_DAY {
        return Err(refused(format!(
            "you have made {MAX_ROOMS_MADE_PER_DAY} rooms (direct ones too) in the last day, the most one may; \
             try again tomorrow"
        )));
    }
    let owner = (!direct).then_some(creator.0);
    txn.execute(
        "INSERT INTO rooms (name, direct, creator, made_by, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, direct, owner, creator.0, now],
    )?;
    for member in members {
        txn.execute(
            "INSERT INTO members (room, user, since_seq, added_ms, delivered_upto) VALUES (?1, ?2, 1, ?3, 0)",
            params![name, member, now],
        )?;
    }
    append(txn, name, creator, MessageId::random(), Body::Created { members: members.to_vec() })
}

/// The room a message or file of `user` goes to: the one named, if `user` is in it (a
/// direct room with another user of the relay is made on first use), or by default the
/// user's only room, or the direct room with the relay's only other user. Events made on
/// the way (a new direct room's) go into `made`.
pub(super) fn resolve(
    txn: &Transaction<'_>,
    (user, device): (&str, &str),
    target: Option<&str>,
    users: &Users,
    made: &mut Vec<StoredMessage>,
) -> Result<String, StoreError> {
    let name = match target {
        Some(name) => name.to_string(),
        None => {
            let mine = rooms_of(txn, user)?;
            let others: Vec<&String> = users.iter().filter(|u| *u != user).collect();
            match (mine.as_slice(), others.as_slice()) {
                ([only], _) => return Ok(only.clone()),
                (_, [peer]) => direct_room(user, peer),
                ([], []) => return Err(refused("there is no one else on this relay yet")),
                ([], _) => return Err(refused("you are in no room yet: write to a person (--to USER) or make a room")),
                _ => {
                    return Err(refused(format!(
                        "you are in {} rooms: name one (--room NAME) or a person (--to USER)",
                        mine.len()
                    )))
                }
            }
        }
    };
    if is_member(txn, &name, user)? {
        return Ok(name);
    }
    let exists = txn.query_row("SELECT 1 FROM rooms WHERE name = ?1", params![name], |_| Ok(())).optional()?.is_some();
    match direct_pair(&name) {
        Some((a, b)) if !exists && (a == user || b == user) => {
            let other = if a == user { b } else { a };
            if !users.iter().any(|u| u == other) {
                return Err(refused(format!("there is no user {other} on this relay")));
            }
            made.push(make_room(txn, &name, (user, device), &[a.to_string(), b.to_string()], true)?);
            Ok(name)
        }
        _ => Err(refused(format!("you are not in a room named {name}"))),
    }
}

/// A change of a room's members that someone asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomChange {
    Create { members: Vec<String> },
    Add { user: String },
    Remove { user: String },
    Leave,
}

/// Checks and makes one change of `room`'s members by `actor`; returns its event.
fn change(
    txn: &Transaction<'_>,
    actor: (&str, &str),
    room: &str,
    request: RoomChange,
    users: &Users,
) -> Result<StoredMessage, StoreError> {
    let (user, _) = actor;
    let known = |name: &str| -> Result<(), StoreError> {
        validate_user_name(name).map_err(refused)?;
        if users.iter().any(|u| u == name) {
            Ok(())
        } else {
            Err(refused(format!("there is no user {name} on this relay")))
        }
    };
    if let RoomChange::Create { members } = request {
        validate_room_name(room).map_err(refused)?;
        let mut all = vec![user.to_string()];
        for member in members {
            known(&member)?;
            if !all.contains(&member) {
                all.push(member);
            }
        }
        if all.len() > MAX_ROOM_MEMBERS {
            return Err(refused(format!("a room has at most {MAX_ROOM_MEMBERS} members")));
        }
        if room_row(txn, room)?.is_some() {
            return Err(refused(format!("a room named {room} exists already")));
        }
        return make_room(txn, room, actor, &all, false);
    }
    let Some(row) = room_row(txn, room)?.filter(|r| r.members.iter().any(|m| m == user)) else {
        return Err(refused(format!("you are not in a room named {room}")));
    };
    if row.direct {
        return Err(refused("a direct conversation stays between its two people: make a room for more"));
    }
    let is_creator = row.creator.as_deref() == Some(user);
    let event = match request {
        RoomChange::Create { .. } => unreachable!("handled above"),
        RoomChange::Add { user: new } => {
            known(&new)?;
            if !is_creator {
                return Err(refused(format!("only {} adds members to {room}", row.creator.unwrap_or_default())));
            }
            if row.members.contains(&new) {
                return Err(refused(format!("{new} is in {room} already")));
            }
            if row.members.len() >= MAX_ROOM_MEMBERS {
                return Err(refused(format!("a room has at most {MAX_ROOM_MEMBERS} members")));
            }
            check_room_count(txn, &new)?;
            let seq: i64 =
                txn.query_row("SELECT last_seq + 1 FROM rooms WHERE name = ?1", params![room], |r| r.get(0))?;
            txn.execute(
                "INSERT INTO members (room, user, since_seq, added_ms, delivered_upto) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![room, new, seq, now_ms(), seq - 1],
            )?;
            append(txn, room, actor, MessageId::random(), Body::Added { user: new })?
        }
        RoomChange::Remove { user: gone } => {
            if !is_creator {
                return Err(refused(format!("only {} removes members from {room}", row.creator.unwrap_or_default())));
            }
            if gone == user {
                return Err(refused("to go yourself, leave the room"));
            }
            if !row.members.contains(&gone) {
                return Err(refused(format!("{gone} is not in {room}")));
            }
            end_membership(txn, room, &gone)?;
            append(txn, room, actor, MessageId::random(), Body::Removed { user: gone })?
        }
        RoomChange::Leave => {
            end_membership(txn, room, user)?;
            if is_creator {
                // The member there longest takes over adding and removing.
                let next = current_members(txn, room)?.into_iter().next();
                txn.execute("UPDATE rooms SET creator = ?2 WHERE name = ?1", params![room, next])?;
            }
            append(txn, room, actor, MessageId::random(), Body::Left)?
        }
    };
    Ok(event)
}

/// Ends `user`'s membership of `room` at the room's next event (the one that says so).
fn end_membership(txn: &Transaction<'_>, room: &str, user: &str) -> Result<(), StoreError> {
    txn.execute(
        "UPDATE members SET until_seq = (SELECT last_seq + 1 FROM rooms WHERE name = ?1)
         WHERE room = ?1 AND user = ?2 AND until_seq IS NULL",
        params![room, user],
    )?;
    Ok(())
}

#[async_trait]
impl RoomStore for Store {
    /// Makes a change of `room`'s members by `actor` (checked here: only its creator adds
    /// and removes, names must be users of the relay, limits hold); returns the room as it
    /// is after, and publishes the change to its members.
    async fn change_room(
        &self,
        actor: (&str, &str),
        room: &str,
        request: RoomChange,
        users: Users,
    ) -> Result<RoomRow, StoreError> {
        let (user, device, room) = (actor.0.to_string(), actor.1.to_string(), room.to_string());
        self.submit_publishing(move |txn| {
            let event = change(txn, (&user, &device), &room, request, &users)?;
            let row = room_row(txn, &room)?.ok_or_else(|| StoreError::Db("a room vanished".into()))?;
            Ok((row, vec![event]))
        })
        .await
    }

    /// The rooms `user` is in, by name.
    async fn rooms(&self, user: &str) -> Result<Vec<RoomRow>, StoreError> {
        let user = user.to_string();
        self.submit(
            move |txn| {
                let mut rows = Vec::new();
                for name in rooms_of(txn, &user)? {
                    rows.extend(room_row(txn, &name)?);
                }
                Ok(rows)
            },
            |_| {},
        )
        .await
    }

    /// The members of `room` now.
    async fn room_members(&self, room: &str) -> Result<Vec<String>, StoreError> {
        let room = room.to_string();
        self.submit(move |txn| current_members(txn, &room), |_| {}).await
    }

    /// Everyone who shares a room with `user` now (not `user`).
    async fn co_members(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let user = user.to_string();
        self.submit(
            move |txn| {
                let mut stmt = txn.prepare_cached(
                    "SELECT DISTINCT other.user FROM members AS mine JOIN members AS other ON other.room = mine.room
                     WHERE mine.user = ?1 AND mine.until_seq IS NULL AND other.until_seq IS NULL
                     AND other.user != ?1 ORDER BY other.user",
                )?;
                let rows = stmt.query_map(params![user], |r| r.get(0))?;
                Ok(rows.collect::<Result<Vec<String>, _>>()?)
            },
            |_| {},
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open;
    use crate::store::sealed;
    use crate::store::{DeviceStore, MessageStore};

    fn users(names: &[&str]) -> Users {
        std::sync::Arc::new(names.iter().map(|n| n.to_string()).collect())
    }

    #[tokio::test]
    async fn only_the_creator_changes_members_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut feed, _thread) = open(&dir.path().join("relay.db")).unwrap();
        let all = users(&["alice", "bob", "carol", "dave"]);
        let create = RoomChange::Create { members: vec!["bob".into(), "bob".into()] };
        let room = store.change_room(("alice", "a1"), "team", create, all.clone()).await.unwrap();
        assert_eq!((room.members, room.creator.as_deref()), (vec!["alice".to_string(), "bob".into()], Some("alice")));
        let created = feed.recv().await.unwrap();
        assert_eq!((created.room_seq, created.audience.len()), (1, 2));

        let again = store.change_room(("bob", "b1"), "team", RoomChange::Create { members: vec![] }, all.clone());
        assert!(again.await.unwrap_err().to_string().contains("exists already"));
        let by_bob = store.change_room(("bob", "b1"), "team", RoomChange::Add { user: "carol".into() }, all.clone());
        assert!(by_bob.await.unwrap_err().to_string().contains("only alice"));
        let stranger = store.change_room(("alice", "a1"), "team", RoomChange::Add { user: "eve".into() }, all.clone());
        assert!(stranger.await.unwrap_err().to_string().contains("no user eve"));
        let outsider = store.change_room(("carol", "c1"), "team", RoomChange::Leave, all.clone());
        assert!(outsider.await.unwrap_err().to_string().contains("not in a room named team"));

        store
            .change_room(("alice", "a1"), "team", RoomChange::Add { user: "carol".into() }, all.clone())
            .await
            .unwrap();
        assert_eq!(feed.recv().await.unwrap().room_seq, 2);
        let removed =
            store.change_room(("alice", "a1"), "team", RoomChange::Remove { user: "bob".into() }, all.clone());
        assert_eq!(removed.await.unwrap().members, ["alice", "carol"]);
        let event = feed.recv().await.unwrap();
        assert!(event.audience.contains(&"bob".to_string()), "the removed member hears of it");
        let left = store.change_room(("alice", "a1"), "team", RoomChange::Leave, all.clone()).await.unwrap();
        assert_eq!((left.members, left.creator.as_deref()), (vec!["carol".to_string()], Some("carol")));
        assert!(store.rooms("alice").await.unwrap().is_empty());
        assert_eq!(store.co_members("carol").await.unwrap(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_member_removed_and_added_again_still_completes_what_came_before() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _feed, _thread) = open(&dir.path().join("relay.db")).unwrap();
        let all = users(&["alice", "bob"]);
        store.device_connected("bob", "b1", false, vec![1], i64::MAX).await.unwrap();
        let create = RoomChange::Create { members: vec!["bob".into()] };
        store.change_room(("alice", "a1"), "team", create, all.clone()).await.unwrap();
        let mut sent = Vec::new();
        for text in ["one", "two"] {
            let stored = store.store_message(
                MessageId::random(),
                ("alice", "a1"),
                Some("team"),
                sealed(text),
                u64::MAX,
                all.clone(),
            );
            sent.push(stored.await.unwrap().seq);
        }
        for change in [RoomChange::Remove { user: "bob".into() }, RoomChange::Add { user: "bob".into() }] {
            store.change_room(("alice", "a1"), "team", change, all.clone()).await.unwrap();
        }
        // Bob comes back and takes everything at once: his first time in the room, his
        // removal, his second time.
        let seqs: Vec<u64> = store.pending(("bob", "b1"), 0, 100).await.unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(seqs.len(), 5, "made, one, two, removed, added");
        let receipts = store.mark_delivered(("bob", "b1"), seqs).await.unwrap();
        let complete: Vec<u64> = receipts.iter().filter(|r| r.everyone).map(|r| r.seq).collect();
        assert_eq!(complete, sent, "both reached everyone: bob has them from his first time in");
        assert_eq!(store.waiting(("alice", "a1")).await.unwrap().1, 0);
    }

    #[tokio::test]
    async fn one_user_makes_a_bounded_number_of_rooms_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _feed, _thread) = open(&dir.path().join("relay.db")).unwrap();
        let all = users(&["alice", "bob"]);
        for i in 0..MAX_ROOMS_MADE_PER_DAY {
            let create = RoomChange::Create { members: vec![] };
            store.change_room(("alice", "a1"), &format!("r{i}"), create, all.clone()).await.unwrap();
            store.change_room(("alice", "a1"), &format!("r{i}"), RoomChange::Leave, all.clone()).await.unwrap();
        }
        let create = RoomChange::Create { members: vec!["bob".into()] };
        let refused = store.change_room(("alice", "a1"), "one-more", create, all.clone()).await.unwrap_err();
        assert!(refused.to_string().contains("in the last day"), "{refused}");
        let direct =
            store.store_message(MessageId::random(), ("alice", "a1"), None, sealed("hi"), u64::MAX, all.clone());
        assert!(direct.await.unwrap_err().to_string().contains("in the last day"), "a direct room is a room too");
        let create = RoomChange::Create { members: vec![] };
        store.change_room(("bob", "b1"), "bobs", create, all).await.expect("bob has his own count");
    }
}
