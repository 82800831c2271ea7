//! Room events in the store: messages committed once per id, pending deliveries per
//! device (each with its cursor, through its person's memberships), and receipts: who in a
//! room has received what, and when every member has.

use qchat_shared::frame::{Body, MessageId};
use rusqlite::{params, OptionalExtension, Row, Transaction};

use async_trait::async_trait;

use super::interfaces::{MessageStore, Queued};
use super::rooms::{decode_body, resolve, Users};
use super::{now_ms, Store, StoreError};

/// An event of a room as committed: a message, or a change of members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its place among everything stored (each device's cursor counts in it).
    pub seq: u64,
    pub id: MessageId,
    pub room: String,
    /// Its place in its room.
    pub room_seq: u64,
    pub sender: String,
    /// The device it came from (none for messages stored before devices): a message goes
    /// to every other device of its sender too.
    pub sender_device: Option<String>,
    pub body: Body,
    pub time_ms: i64,
    /// Who it goes to, as it is committed (for live delivery; empty when read back).
    pub audience: Vec<String>,
}

impl StoredMessage {
    /// Whether it goes to `device` of `user`: a member's, except the device that wrote a
    /// message (changes of members go to every device).
    pub fn goes_to_device(&self, user: &str, device: &str) -> bool {
        !(matches!(self.body, Body::Text(_) | Body::Sealed(_))
            && self.sender == user
            && self.sender_device.as_deref().is_none_or(|from| from == device))
    }
}

/// The answer to storing a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub room: String,
    pub room_seq: u64,
    pub time_ms: i64,
    /// False when the id was stored before: this is a resend, nothing new was written.
    pub fresh: bool,
}

/// Messages of `sender` in `room` that reached `by`, for the sender's receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub id: MessageId,
    pub seq: u64,
    pub room: String,
    pub sender: String,
    pub by: String,
    /// It has now reached every member of its room.
    pub everyone: bool,
    /// Every message of `sender`, in any room, up to this sequence number has reached
    /// every member of its room.
    pub all_delivered_upto: u64,
}

const COLUMNS: &str = "m.seq, m.id, m.room, m.room_seq, m.sender, m.sender_device, m.kind, m.body, m.created_ms";

fn stored_message(r: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    let id: Vec<u8> = r.get(1)?;
    Ok(StoredMessage {
        seq: r.get::<_, i64>(0)? as u64,
        id: MessageId(id.try_into().unwrap_or_default()),
        room: r.get(2)?,
        room_seq: r.get::<_, i64>(3)? as u64,
        sender: r.get(4)?,
        sender_device: r.get(5)?,
        body: decode_body(r.get(6)?, r.get(7)?),
        time_ms: r.get(8)?,
        audience: Vec::new(),
    })
}

/// The events a device of `?1` (device `?2`) gets: its person's rooms' events while they
/// were a member, except the messages it wrote itself (a message stored before devices
/// went to its sender's only device).
pub(super) const FOR_DEVICE: &str = "messages AS m JOIN members AS mb ON mb.room = m.room AND mb.user = ?1
    AND m.room_seq >= mb.since_seq AND (mb.until_seq IS NULL OR m.room_seq <= mb.until_seq)
    WHERE NOT (m.kind = 0 AND m.sender = ?1 AND (m.sender_device IS NULL OR m.sender_device = ?2))";

#[async_trait]
impl MessageStore for Store {
    /// Stores a message once, in the room `target` resolves to for its sender: a resend of
    /// a known id returns the original answer. Queues the message at once (so messages
    /// queued one after another get increasing sequence numbers) and resolves once it is
    /// durable.
    fn store_message(
        &self,
        id: MessageId,
        (sender, sender_device): (&str, &str),
        target: Option<&str>,
        sealed: Vec<u8>,
        max_waiting_bytes: u64,
        users: Users,
    ) -> Queued<Stored> {
        let (sender, sender_device) = (sender.to_string(), sender_device.to_string());
        let target = target.map(str::to_string);
        Box::pin(self.submit_publishing(move |txn| {
            if let Some(known) = earlier(txn, id, &sender)? {
                return Ok((known, Vec::new()));
            }
            let mut made = Vec::new();
            let room = resolve(txn, (&sender, &sender_device), target.as_deref(), &users, &mut made)?;
            let waiting: i64 = txn
                .query_row("SELECT message_bytes FROM waiting WHERE user = ?1", params![sender], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            if waiting as u64 + sealed.len() as u64 + super::schema::MESSAGE_OVERHEAD > max_waiting_bytes {
                return Err(StoreError::Refused(
                    format!(
                        "your messages waiting on the relay for someone offline take {} of your {} share \
                         (each counts its encrypted size and 256 bytes); they go once they are delivered (or expire)",
                        qchat_shared::units::human_bytes(waiting as u64),
                        qchat_shared::units::human_bytes(max_waiting_bytes)
                    )
                    .into(),
                ));
            }
            let message = super::rooms::append(txn, &room, (&sender, &sender_device), id, Body::Sealed(sealed))?;
            let stored =
                Stored { seq: message.seq, room, room_seq: message.room_seq, time_ms: message.time_ms, fresh: true };
            made.push(message);
            Ok((stored, made))
        }))
    }

    /// Events for `device` of `user` with a sequence number above `after` and its cursor,
    /// oldest first.
    async fn pending(
        &self,
        (user, device): (&str, &str),
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.submit(
            move |txn| {
                let after = (after as i64).max(cursor(txn, &user, &device)?);
                let sql = format!("SELECT {COLUMNS} FROM {FOR_DEVICE} AND m.seq > ?3 ORDER BY m.seq LIMIT ?4");
                let mut stmt = txn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![user, device, after, limit as i64], stored_message)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            },
            |_| {},
        )
        .await
    }

    /// Records that `device` of `user` received these events (a device acknowledges in
    /// order: its cursor moves to the last, and so does its person's place in each room);
    /// returns the receipts for the senders of the messages that reached `user` first
    /// with these.
    async fn mark_delivered(&self, (user, device): (&str, &str), seqs: Vec<u64>) -> Result<Vec<Receipt>, StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.submit(
            move |txn| {
                let Some(last) = seqs.iter().max() else { return Ok(Vec::new()) };
                txn.execute(
                    "UPDATE devices SET cursor = MAX(cursor, ?3) WHERE user = ?1 AND id = ?2",
                    params![user, device, *last as i64],
                )?;
                // How far in each room these take the person: per membership (someone
                // removed and added again has one for each time in the room).
                let mut reached: std::collections::BTreeMap<(String, i64), i64> = Default::default();
                let mut stmt = txn.prepare_cached(
                    "SELECT m.room, mb.since_seq, m.room_seq FROM messages AS m JOIN members AS mb
                         ON mb.room = m.room AND mb.user = ?2 AND m.room_seq >= mb.since_seq
                         AND (mb.until_seq IS NULL OR m.room_seq <= mb.until_seq)
                     WHERE m.seq = ?1",
                )?;
                for seq in &seqs {
                    let row: Option<(String, i64, i64)> = stmt
                        .query_row(params![*seq as i64, user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()?;
                    if let Some((room, since, room_seq)) = row {
                        let upto = reached.entry((room, since)).or_default();
                        *upto = (*upto).max(room_seq);
                    }
                }
                let mut receipts = Vec::new();
                for ((room, since), upto) in reached {
                    receipts.extend(reach(txn, &user, (&room, since), upto)?);
                }
                let mut watermarks = std::collections::HashMap::new();
                for receipt in &mut receipts {
                    if !watermarks.contains_key(&receipt.sender) {
                        watermarks.insert(receipt.sender.clone(), delivered_watermark(txn, &receipt.sender)?);
                    }
                    receipt.all_delivered_upto = watermarks[&receipt.sender];
                }
                Ok(receipts)
            },
            |_| {},
        )
        .await
    }

    /// Receipts for `sender`'s messages above `after` that reached someone, to replay on
    /// reconnect: one for each member who has each.
    async fn receipts(&self, sender: &str, after: u64, limit: usize) -> Result<Vec<Receipt>, StoreError> {
        let sender = sender.to_string();
        self.submit(
            move |txn| {
                let upto = delivered_watermark(txn, &sender)?;
                let mut stmt = txn.prepare_cached(
                    "SELECT m.id, m.seq, m.room, mb.user, m.delivered_ms IS NOT NULL FROM messages AS m
                     JOIN members AS mb ON mb.room = m.room AND mb.user != m.sender
                         AND m.room_seq >= mb.since_seq AND (mb.until_seq IS NULL OR m.room_seq <= mb.until_seq)
                         AND mb.delivered_upto >= m.room_seq
                     WHERE m.sender = ?1 AND m.kind = 0 AND m.seq > ?2 ORDER BY m.seq LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![sender, after as i64, limit as i64], |r| {
                    Ok(Receipt {
                        id: MessageId(r.get::<_, Vec<u8>>(0)?.try_into().unwrap_or_default()),
                        seq: r.get::<_, i64>(1)? as u64,
                        room: r.get(2)?,
                        sender: sender.clone(),
                        by: r.get(3)?,
                        everyone: r.get(4)?,
                        all_delivered_upto: upto,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            },
            |_| {},
        )
        .await
    }

    /// How many messages wait for this device of `user`, and how many of `user`'s messages
    /// have not reached every member of their room yet.
    async fn waiting(&self, (user, device): (&str, &str)) -> Result<(u64, u64), StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.submit(
            move |txn| {
                let after = cursor(txn, &user, &device)?;
                let sql = format!("SELECT COUNT(*) FROM {FOR_DEVICE} AND m.kind = 0 AND m.seq > ?3");
                let for_device: i64 = txn.query_row(&sql, params![user, device, after], |r| r.get(0))?;
                let for_others: i64 = txn.query_row(
                    "SELECT COUNT(*) FROM messages WHERE sender = ?1 AND delivered_ms IS NULL",
                    params![user],
                    |r| r.get(0),
                )?;
                Ok((for_device as u64, for_others as u64))
            },
            |_| {},
        )
        .await
    }

    /// Deletes delivered messages older than `retention_ms` (since every member had them)
    /// that every device that should have them has (a device of a member then, whose
    /// cursor is past them; the device that sent one does not need it, nor does one
    /// enrolled after it), every message older than
    /// `expiry_ms` (since it was stored; the undelivered ones are returned), up to
    /// [`SWEEP_BATCH`] of each, so that one sweep never holds the store long; returns the
    /// expired ones, so their senders can be told. The caller repeats while any went.
    async fn sweep_messages(&self, retention_ms: i64, expiry_ms: i64) -> Result<MessageSweep, StoreError> {
        self.submit(
            move |txn| {
                let now = now_ms();
                let retained = txn.execute(
                    "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages AS m
                         WHERE delivered_ms IS NOT NULL AND delivered_ms + ?2 <= ?1
                         AND NOT EXISTS (SELECT 1 FROM members AS mb JOIN devices AS d ON d.user = mb.user
                             WHERE mb.room = m.room AND m.room_seq >= mb.since_seq
                             AND (mb.until_seq IS NULL OR m.room_seq <= mb.until_seq)
                             AND d.revoked_ms IS NULL AND d.cursor < m.seq
                             AND NOT (m.kind = 0 AND d.user = m.sender
                                 AND (m.sender_device IS NULL OR d.id = m.sender_device)))
                         ORDER BY delivered_ms LIMIT ?3)",
                    params![now, retention_ms, SWEEP_BATCH as i64],
                )?;
                // A device that never comes back holds nothing past the expiry either.
                let expired_delivered = txn.execute(
                    "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages
                         WHERE delivered_ms IS NOT NULL AND created_ms + ?2 <= ?1 ORDER BY created_ms LIMIT ?3)",
                    params![now, expiry_ms, SWEEP_BATCH as i64],
                )?;
                let mut stmt = txn.prepare_cached(
                    "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages
                         WHERE delivered_ms IS NULL AND created_ms + ?2 <= ?1 ORDER BY created_ms LIMIT ?3)
                     RETURNING id, seq, sender",
                )?;
                let rows = stmt.query_map(params![now, expiry_ms, SWEEP_BATCH as i64], |r| {
                    Ok(ExpiredMessage {
                        id: MessageId(r.get::<_, Vec<u8>>(0)?.try_into().unwrap_or_default()),
                        seq: r.get::<_, i64>(1)? as u64,
                        sender: r.get(2)?,
                    })
                })?;
                let expired = rows.collect::<Result<Vec<_>, _>>()?;
                let more = retained == SWEEP_BATCH || expired_delivered == SWEEP_BATCH || expired.len() == SWEEP_BATCH;
                Ok(MessageSweep { more, expired })
            },
            |_| {},
        )
        .await
    }
}

/// Moves `user`'s place in `room`, in their membership since `since`, up to `upto`;
/// returns a receipt for each message of someone else it passes, marking those that every
/// member now has as delivered.
fn reach(txn: &Transaction<'_>, user: &str, (room, since): (&str, i64), upto: i64) -> Result<Vec<Receipt>, StoreError> {
    let before: Option<i64> = txn
        .query_row(
            "SELECT delivered_upto FROM members WHERE room = ?1 AND user = ?2 AND since_seq = ?3",
            params![room, user, since],
            |r| r.get(0),
        )
        .optional()?;
    let Some(before) = before.filter(|b| *b < upto) else { return Ok(Vec::new()) };
    txn.execute(
        "UPDATE members SET delivered_upto = ?4 WHERE room = ?1 AND user = ?2 AND since_seq = ?3",
        params![room, user, since, upto],
    )?;
    let mut stmt = txn.prepare_cached(
        "SELECT id, seq, sender, room_seq FROM messages
         WHERE room = ?1 AND room_seq > ?2 AND room_seq <= ?3 AND kind = 0 AND sender != ?4 ORDER BY room_seq",
    )?;
    let passed = stmt.query_map(params![room, before, upto, user], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
    })?;
    let passed = passed.collect::<Result<Vec<_>, _>>()?;
    let now = now_ms();
    let mut complete = txn.prepare_cached(
        "UPDATE messages SET delivered_ms = ?2 WHERE seq = ?1 AND delivered_ms IS NULL AND NOT EXISTS (
             SELECT 1 FROM members AS mb WHERE mb.room = messages.room AND mb.user != messages.sender
             AND mb.since_seq <= messages.room_seq AND (mb.until_seq IS NULL OR mb.until_seq >= messages.room_seq)
             AND mb.delivered_upto < messages.room_seq)",
    )?;
    let mut receipts = Vec::new();
    for (id, seq, sender, _) in passed {
        let everyone = complete.execute(params![seq, now])? == 1;
        receipts.push(Receipt {
            id: MessageId(id.try_into().unwrap_or_default()),
            seq: seq as u64,
            room: room.to_string(),
            sender,
            by: user.to_string(),
            everyone,
            all_delivered_upto: 0,
        });
    }
    Ok(receipts)
}

/// Where a device's deliveries are: every message for it up to here has reached it (0 for
/// a device the store does not know).
fn cursor(txn: &Transaction<'_>, user: &str, device: &str) -> Result<i64, StoreError> {
    Ok(txn
        .query_row("SELECT cursor FROM devices WHERE user = ?1 AND id = ?2", params![user, device], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// The answer given when message `id` was stored before (a resend), if it was.
fn earlier(txn: &Transaction<'_>, id: MessageId, sender: &str) -> Result<Option<Stored>, StoreError> {
    let row: Option<(i64, i64, String, String, i64)> = txn
        .query_row(
            "SELECT seq, created_ms, sender, room, room_seq FROM messages WHERE id = ?1",
            params![&id.0[..]],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    match row {
        None => Ok(None),
        Some((_, _, first_sender, _, _)) if first_sender != sender => {
            Err(StoreError::Refused("that message id belongs to another user".into()))
        }
        Some((seq, time_ms, _, room, room_seq)) => {
            Ok(Some(Stored { seq: seq as u64, room, room_seq: room_seq as u64, time_ms, fresh: false }))
        }
    }
}

/// Messages deleted of each kind per call of [`Store::sweep_messages`], at most.
pub const SWEEP_BATCH: usize = 1000;

/// What one call of [`Store::sweep_messages`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSweep {
    /// The undelivered messages that expired.
    pub expired: Vec<ExpiredMessage>,
    /// A batch was full: call again.
    pub more: bool,
}

/// A message removed before anyone received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredMessage {
    pub id: MessageId,
    pub seq: u64,
    pub sender: String,
}

/// The highest sequence number up to which every message of `sender` is delivered.
fn delivered_watermark(txn: &Transaction<'_>, sender: &str) -> Result<u64, StoreError> {
    let first_undelivered: Option<i64> = txn.query_row(
        "SELECT MIN(seq) FROM messages WHERE sender = ?1 AND delivered_ms IS NULL",
        params![sender],
        |r| r.get(0),
    )?;
    Ok(match first_undelivered {
        Some(seq) => seq as u64 - 1,
        None => txn.query_row("SELECT COALESCE(MAX(seq), 0) FROM messages", [], |r| r.get::<_, i64>(0))? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open;
    use crate::store::sealed;
    use crate::store::DeviceStore;

    /// A relay of two people, alice and bob: a message goes to their direct room.
    fn two() -> Users {
        std::sync::Arc::new(vec!["alice".into(), "bob".into()])
    }

    /// The sequence numbers of the messages (not the changes of members) in `page`.
    fn texts(page: &[StoredMessage]) -> Vec<u64> {
        page.iter().filter(|m| m.body.is_message()).map(|m| m.seq).collect()
    }

    #[tokio::test]
    async fn stores_once_delivers_in_order_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let (store, mut feed, thread) = open(&path).unwrap();
        store.device_connected("bob", "b1", true, vec![1], i64::MAX).await.unwrap();
        store.device_connected("alice", "a1", true, vec![2], i64::MAX).await.unwrap();
        let ids: Vec<MessageId> = (0..3).map(|_| MessageId::random()).collect();
        let mut seqs = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let stored = store
                .store_message(*id, ("alice", "a1"), None, sealed(&format!("m{i}")), u64::MAX, two())
                .await
                .unwrap();
            assert!(stored.fresh);
            assert_eq!((stored.room.as_str(), stored.room_seq), ("alice+bob", i as u64 + 2), "after its making");
            seqs.push(stored.seq);
            let published = feed.recv().await.unwrap();
            if i == 0 {
                assert_eq!(published.body, Body::Created { members: vec!["alice".into(), "bob".into()] });
                assert_eq!(feed.recv().await.unwrap().seq, stored.seq);
            } else {
                assert_eq!(published.seq, stored.seq);
            }
        }
        let again = store.store_message(ids[1], ("alice", "a1"), None, sealed("m1"), u64::MAX, two()).await.unwrap();
        assert_eq!((again.seq, again.fresh), (seqs[1], false));
        assert!(feed.try_recv().is_err(), "a resend is not delivered again");
        let foreign = store.store_message(ids[1], ("bob", "b1"), None, sealed("x"), u64::MAX, two()).await;
        assert!(matches!(foreign, Err(StoreError::Refused(_))));

        let receipts = store.mark_delivered(("bob", "b1"), vec![seqs[0] - 1, seqs[0], seqs[1]]).await.unwrap();
        assert_eq!(
            receipts.iter().map(|r| (r.seq, r.everyone)).collect::<Vec<_>>(),
            [(seqs[0], true), (seqs[1], true)]
        );
        assert_eq!((receipts[0].by.as_str(), receipts[0].all_delivered_upto), ("bob", seqs[2] - 1));
        assert!(store.mark_delivered(("bob", "b1"), vec![seqs[1]]).await.unwrap().is_empty());
        assert!(store.mark_delivered(("alice", "a1"), vec![seqs[0]]).await.unwrap().is_empty(), "not hers");
        drop(store);
        thread.join().unwrap();

        let (store, _feed, _thread) = open(&path).unwrap();
        let pending = store.pending(("bob", "b1"), 0, 100).await.unwrap();
        assert_eq!(pending.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![seqs[2]], "past b1's cursor");
        let new_device = store.device_connected("bob", "b2", true, vec![3], i64::MAX).await.unwrap().unwrap();
        assert_eq!(new_device.enrolled_ms, 0, "a certificate of qchat-certs: bob's device since the start");
        let pending = store.pending(("bob", "b2"), 0, 100).await.unwrap();
        assert_eq!(texts(&pending), [seqs[2]], "from the first bob has not received on");
        assert_eq!(store.waiting(("bob", "b1")).await.unwrap(), (1, 0));
        assert_eq!(store.waiting(("alice", "a1")).await.unwrap(), (0, 1), "her last message has not reached bob");
        let receipts = store.receipts("alice", 0, 100).await.unwrap();
        assert_eq!(receipts.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![seqs[0], seqs[1]]);
    }

    const OVERHEAD: u64 = crate::store::schema::MESSAGE_OVERHEAD;

    #[tokio::test]
    async fn a_message_goes_to_every_other_device_of_both_people() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _feed, _thread) = open(&dir.path().join("relay.db")).unwrap();
        for (user, device) in [("alice", "a1"), ("alice", "a2"), ("bob", "b1")] {
            store.device_connected(user, device, false, device.as_bytes().to_vec(), i64::MAX).await.unwrap();
        }
        let sent = store
            .store_message(MessageId::random(), ("alice", "a1"), None, sealed("hi"), u64::MAX, two())
            .await
            .unwrap();
        let seqs = |page: Vec<StoredMessage>| texts(&page);
        assert_eq!(seqs(store.pending(("bob", "b1"), 0, 10).await.unwrap()), [sent.seq]);
        assert_eq!(seqs(store.pending(("alice", "a2"), 0, 10).await.unwrap()), [sent.seq], "her other device");
        assert!(
            texts(&store.pending(("alice", "a1"), 0, 10).await.unwrap()).is_empty(),
            "not back to where it came from"
        );

        store.mark_delivered(("bob", "b1"), vec![sent.seq]).await.unwrap();
        store.sweep_messages(0, i64::MAX / 2).await.unwrap();
        assert_eq!(seqs(store.pending(("alice", "a2"), 0, 10).await.unwrap()), [sent.seq], "kept until a2 has it");
        store.mark_delivered(("alice", "a2"), vec![sent.seq]).await.unwrap();
        store.sweep_messages(0, i64::MAX / 2).await.unwrap();
        assert!(store.receipts("alice", 0, 10).await.unwrap().is_empty(), "every device has it: gone");
    }

    #[tokio::test]
    async fn waiting_bytes_are_capped_and_expired_messages_go() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _feed, _thread) = open(&dir.path().join("relay.db")).unwrap();
        store.device_connected("bob", "b1", true, vec![1], i64::MAX).await.unwrap();
        let first = store
            .store_message(MessageId::random(), ("alice", "a1"), None, sealed("0123456789"), 15 + OVERHEAD, two())
            .await
            .unwrap();
        let err = store
            .store_message(MessageId::random(), ("alice", "a1"), None, sealed("abcdef"), 15 + OVERHEAD, two())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("waiting on the relay"), "{err}");
        store
            .store_message(MessageId::random(), ("bob", "b1"), None, sealed("abcdef"), 15 + OVERHEAD, two())
            .await
            .expect("bob has his own share");
        store.mark_delivered(("bob", "b1"), vec![first.seq]).await.unwrap();
        let second = store
            .store_message(MessageId::random(), ("alice", "a1"), None, sealed("abcdef"), 15 + OVERHEAD, two())
            .await
            .unwrap();

        let expired = store.sweep_messages(i64::MAX / 2, 0).await.unwrap().expired;
        let mut seqs: Vec<u64> = expired.iter().filter(|m| m.sender == "alice").map(|m| m.seq).collect();
        seqs.sort();
        assert_eq!(seqs, [second.seq], "the undelivered one expired; the delivered one is kept for retention");
        assert!(store.pending(("bob", "b1"), 0, 10).await.unwrap().is_empty());
        store.sweep_messages(0, i64::MAX / 2).await.unwrap();
        assert!(store.receipts("alice", 0, 10).await.unwrap().is_empty(), "delivered and past retention: gone");
        store
            .store_message(
                MessageId::random(),
                ("alice", "a1"),
                None,
                sealed("0123456789abcde"),
                15 + 2 * OVERHEAD,
                two(),
            )
            .await
            .expect("all freed");
    }

    #[tokio::test]
    async fn many_concurrent_messages_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut feed, _thread) = open(&dir.path().join("relay.db")).unwrap();
        let tasks: Vec<_> = (0..500)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .store_message(
                            MessageId::random(),
                            ("alice", "a1"),
                            None,
                            sealed(&i.to_string()),
                            u64::MAX,
                            two(),
                        )
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let mut last = 0;
        for _ in 0..500 {
            let seq = feed.recv().await.unwrap().seq;
            assert!(seq > last, "feed is in sequence order");
            last = seq;
        }
    }
}
