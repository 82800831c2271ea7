//! Chat messages in the store: commit once per id, pending deliveries per device (each
//! with its cursor), receipts.

use std::sync::Arc;

use qchat_shared::frame::MessageId;
use rusqlite::{params, OptionalExtension, Transaction};

use super::{now_ms, Store, StoreError};

/// A message as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub seq: u64,
    pub id: MessageId,
    pub sender: String,
    /// The device it came from (none for messages stored before devices): it goes to
    /// every other device of its sender too.
    pub sender_device: Option<String>,
    pub recipient: String,
    pub text: String,
    pub time_ms: i64,
}

/// The answer to storing a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub time_ms: i64,
    /// False when the id was stored before: this is a resend, nothing new was written.
    pub fresh: bool,
}

/// A message that reached its recipient, for its sender's receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub id: MessageId,
    pub seq: u64,
    pub sender: String,
    /// Every message of `sender` up to this sequence number is delivered.
    pub all_delivered_upto: u64,
}

impl Store {
    /// Stores a message once: a resend of a known id returns the original answer.
    /// Queues the message at once (so messages queued one after another get increasing
    /// sequence numbers) and resolves once it is durable.
    pub fn store_message(
        &self,
        id: MessageId,
        (sender, sender_device): (&str, &str),
        recipient: &str,
        text: &str,
        max_waiting_bytes: u64,
    ) -> impl std::future::Future<Output = Result<Stored, StoreError>> + use<> {
        let (sender, recipient, text) = (sender.to_string(), recipient.to_string(), text.to_string());
        let sender_device = sender_device.to_string();
        let feed = self.feed.clone();
        let message = Arc::new(std::sync::Mutex::new(None::<StoredMessage>));
        let published = message.clone();
        self.submit(
            move |txn| {
                let time_ms = now_ms();
                let waiting: i64 = txn
                    .query_row("SELECT message_bytes FROM waiting WHERE user = ?1", params![sender], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0);
                if waiting as u64 + text.len() as u64 + super::schema::MESSAGE_OVERHEAD > max_waiting_bytes {
                    // A resend of a message stored before the share filled up is answered.
                    if let Some(known) = earlier(txn, id, &sender)? {
                        return Ok(known);
                    }
                    return Err(StoreError::Refused(
                        format!(
                            "your messages waiting on the relay for someone offline take {} of your {} share \
                             (each counts its text and 256 bytes); they go once they are delivered (or expire)",
                            qchat_shared::units::human_bytes(waiting as u64),
                            qchat_shared::units::human_bytes(max_waiting_bytes)
                        )
                        .into(),
                    ));
                }
                let inserted = txn.execute(
                    "INSERT INTO messages (id, sender, sender_device, recipient, body, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                    params![&id.0[..], sender, sender_device, recipient, text, time_ms],
                )?;
                if inserted == 1 {
                    let seq = txn.last_insert_rowid() as u64;
                    let sender_device = Some(sender_device);
                    *message.lock().expect("not poisoned") =
                        Some(StoredMessage { seq, id, sender, sender_device, recipient, text, time_ms });
                    return Ok(Stored { seq, time_ms, fresh: true });
                }
                earlier(txn, id, &sender)?.ok_or_else(|| StoreError::Db("a message id vanished".into()))
            },
            move |_| {
                if let Some(message) = published.lock().expect("not poisoned").take() {
                    let _ = feed.send(message);
                }
            },
        )
    }

    /// Messages for `device` of `user` with a sequence number above `after` and its cursor,
    /// oldest first: those to its person, and those its person sent from another device.
    pub async fn pending(
        &self,
        (user, device): (&str, &str),
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.submit(
            move |txn| {
                let after = (after as i64).max(cursor(txn, &user, &device)?);
                let mut stmt = txn.prepare_cached(
                    "SELECT seq, id, sender, sender_device, recipient, body, created_ms FROM messages
                         WHERE recipient = ?1 AND seq > ?3
                     UNION ALL
                     SELECT seq, id, sender, sender_device, recipient, body, created_ms FROM messages
                         WHERE sender = ?1 AND sender_device IS NOT NULL AND sender_device != ?2 AND seq > ?3
                     ORDER BY seq LIMIT ?4",
                )?;
                let rows = stmt.query_map(params![user, device, after, limit as i64], |r| {
                    let id: Vec<u8> = r.get(1)?;
                    Ok(StoredMessage {
                        seq: r.get::<_, i64>(0)? as u64,
                        id: MessageId(id.try_into().unwrap_or_default()),
                        sender: r.get(2)?,
                        sender_device: r.get(3)?,
                        recipient: r.get(4)?,
                        text: r.get(5)?,
                        time_ms: r.get(6)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            },
            |_| {},
        )
        .await
    }

    /// Records that `device` of `recipient` received these messages (it acknowledges them in
    /// order: its cursor moves to the last); returns the receipts for their senders, the
    /// first time a device of the recipient has one.
    pub async fn mark_delivered(
        &self,
        (recipient, device): (&str, &str),
        seqs: Vec<u64>,
    ) -> Result<Vec<Receipt>, StoreError> {
        let (recipient, device) = (recipient.to_string(), device.to_string());
        self.submit(
            move |txn| {
                let now = now_ms();
                if let Some(last) = seqs.iter().max() {
                    txn.execute(
                        "UPDATE devices SET cursor = MAX(cursor, ?3) WHERE user = ?1 AND id = ?2",
                        params![recipient, device, *last as i64],
                    )?;
                }
                let mut receipts = Vec::new();
                let mut stmt = txn.prepare_cached(
                    "UPDATE messages SET delivered_ms = ?1
                     WHERE seq = ?2 AND recipient = ?3 AND delivered_ms IS NULL RETURNING id, sender",
                )?;
                for seq in seqs {
                    let row = stmt
                        .query_row(params![now, seq as i64, recipient], |r| {
                            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
                        })
                        .optional()?;
                    if let Some((id, sender)) = row {
                        let id = MessageId(id.try_into().unwrap_or_default());
                        receipts.push(Receipt { id, seq, sender, all_delivered_upto: 0 });
                    }
                }
                for receipt in &mut receipts {
                    receipt.all_delivered_upto = delivered_watermark(txn, &receipt.sender)?;
                }
                Ok(receipts)
            },
            |_| {},
        )
        .await
    }

    /// Receipts for `sender`'s delivered messages above `after`, to replay on reconnect.
    pub async fn receipts(&self, sender: &str, after: u64, limit: usize) -> Result<Vec<Receipt>, StoreError> {
        let sender = sender.to_string();
        self.submit(
            move |txn| {
                let upto = delivered_watermark(txn, &sender)?;
                let mut stmt = txn.prepare_cached(
                    "SELECT id, seq FROM messages WHERE sender = ?1 AND seq > ?2 AND delivered_ms IS NOT NULL
                     ORDER BY seq LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![sender, after as i64, limit as i64], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
                })?;
                let mut receipts = Vec::new();
                for row in rows {
                    let (id, seq) = row?;
                    receipts.push(Receipt {
                        id: MessageId(id.try_into().unwrap_or_default()),
                        seq: seq as u64,
                        sender: sender.clone(),
                        all_delivered_upto: upto,
                    });
                }
                Ok(receipts)
            },
            |_| {},
        )
        .await
    }

    /// How many messages wait for this device of `user`, and how many of `user`'s wait for
    /// the peer.
    pub async fn waiting(&self, (user, device): (&str, &str)) -> Result<(u64, u64), StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.submit(
            move |txn| {
                let after = cursor(txn, &user, &device)?;
                let for_device: i64 = txn.query_row(
                    "SELECT COUNT(*) FROM messages WHERE recipient = ?1 AND seq > ?2",
                    params![user, after],
                    |r| r.get(0),
                )?;
                let for_peer: i64 = txn.query_row(
                    "SELECT COUNT(*) FROM messages WHERE sender = ?1 AND delivered_ms IS NULL",
                    params![user],
                    |r| r.get(0),
                )?;
                Ok((for_device as u64, for_peer as u64))
            },
            |_| {},
        )
        .await
    }
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
    let row: Option<(i64, i64, String)> = txn
        .query_row("SELECT seq, created_ms, sender FROM messages WHERE id = ?1", params![&id.0[..]], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    match row {
        None => Ok(None),
        Some((_, _, first_sender)) if first_sender != sender => {
            Err(StoreError::Refused("that message id belongs to another user".into()))
        }
        Some((seq, time_ms, _)) => Ok(Some(Stored { seq: seq as u64, time_ms, fresh: false })),
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

impl Store {
    /// Deletes delivered messages older than `retention_ms` (since delivery) that every
    /// device that should have them has (its cursor is past them; the device that sent one
    /// does not need it, nor does one enrolled after it), every message older than
    /// `expiry_ms` (since it was stored; the undelivered ones are returned), up to
    /// [`SWEEP_BATCH`] of each, so that one sweep never holds the store long; returns the
    /// expired ones, so their senders can be told. The caller repeats while any went.
    pub async fn sweep_messages(&self, retention_ms: i64, expiry_ms: i64) -> Result<MessageSweep, StoreError> {
        self.submit(
            move |txn| {
                let now = now_ms();
                let retained = txn.execute(
                    "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages AS m
                         WHERE delivered_ms IS NOT NULL AND delivered_ms + ?2 <= ?1
                         AND NOT EXISTS (SELECT 1 FROM devices AS d
                             WHERE d.user IN (m.sender, m.recipient) AND d.revoked_ms IS NULL AND d.cursor < m.seq
                             AND (d.user = m.recipient OR (m.sender_device IS NOT NULL AND d.id != m.sender_device)))
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
            let stored = store.store_message(*id, ("alice", "a1"), "bob", &format!("m{i}"), u64::MAX).await.unwrap();
            assert!(stored.fresh);
            seqs.push(stored.seq);
            assert_eq!(feed.recv().await.unwrap().seq, stored.seq);
        }
        let again = store.store_message(ids[1], ("alice", "a1"), "bob", "m1", u64::MAX).await.unwrap();
        assert_eq!((again.seq, again.fresh), (seqs[1], false));
        assert!(feed.try_recv().is_err(), "a resend is not delivered again");
        let foreign = store.store_message(ids[1], ("bob", "b1"), "alice", "x", u64::MAX).await;
        assert!(matches!(foreign, Err(StoreError::Refused(_))));

        let receipts = store.mark_delivered(("bob", "b1"), vec![seqs[1]]).await.unwrap();
        assert_eq!(receipts.len(), 1);
        assert_eq!(receipts[0].all_delivered_upto, seqs[0] - 1);
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
        assert_eq!(pending.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs, "from the first not delivered on");
        assert_eq!(store.waiting(("bob", "b1")).await.unwrap(), (1, 0));
        assert_eq!(store.waiting(("alice", "a1")).await.unwrap(), (0, 2));
        let receipts = store.receipts("alice", 0, 100).await.unwrap();
        assert_eq!(receipts.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![seqs[1]]);
    }

    const OVERHEAD: u64 = crate::store::schema::MESSAGE_OVERHEAD;

    #[tokio::test]
    async fn a_message_goes_to_every_other_device_of_both_people() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _feed, _thread) = open(&dir.path().join("relay.db")).unwrap();
        for (user, device) in [("alice", "a1"), ("alice", "a2"), ("bob", "b1")] {
            store.device_connected(user, device, false, device.as_bytes().to_vec(), i64::MAX).await.unwrap();
        }
        let sent = store.store_message(MessageId::random(), ("alice", "a1"), "bob", "hi", u64::MAX).await.unwrap();
        let seqs = |page: Vec<StoredMessage>| page.iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(seqs(store.pending(("bob", "b1"), 0, 10).await.unwrap()), [sent.seq]);
        assert_eq!(seqs(store.pending(("alice", "a2"), 0, 10).await.unwrap()), [sent.seq], "her other device");
        assert!(store.pending(("alice", "a1"), 0, 10).await.unwrap().is_empty(), "not back to where it came from");

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
            .store_message(MessageId::random(), ("alice", "a1"), "bob", "0123456789", 15 + OVERHEAD)
            .await
            .unwrap();
        let err = store
            .store_message(MessageId::random(), ("alice", "a1"), "bob", "abcdef", 15 + OVERHEAD)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("waiting on the relay"), "{err}");
        store
            .store_message(MessageId::random(), ("bob", "b1"), "alice", "abcdef", 15 + OVERHEAD)
            .await
            .expect("bob has his own share");
        store.mark_delivered(("bob", "b1"), vec![first.seq]).await.unwrap();
        let second =
            store.store_message(MessageId::random(), ("alice", "a1"), "bob", "abcdef", 15 + OVERHEAD).await.unwrap();

        let expired = store.sweep_messages(i64::MAX / 2, 0).await.unwrap().expired;
        let mut seqs: Vec<u64> = expired.iter().filter(|m| m.sender == "alice").map(|m| m.seq).collect();
        seqs.sort();
        assert_eq!(seqs, [second.seq], "the undelivered one expired; the delivered one is kept for retention");
        assert!(store.pending(("bob", "b1"), 0, 10).await.unwrap().is_empty());
        store.sweep_messages(0, i64::MAX / 2).await.unwrap();
        assert!(store.receipts("alice", 0, 10).await.unwrap().is_empty(), "delivered and past retention: gone");
        store
            .store_message(MessageId::random(), ("alice", "a1"), "bob", "0123456789abcde", 15 + 2 * OVERHEAD)
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
                    store.store_message(MessageId::random(), ("a", "a1"), "b", &i.to_string(), u64::MAX).await
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
