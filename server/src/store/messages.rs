//! Chat messages in the store: commit once per id, pending deliveries, receipts.

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
        sender: &str,
        recipient: &str,
        text: &str,
        max_waiting_bytes: u64,
    ) -> impl std::future::Future<Output = Result<Stored, StoreError>> + use<> {
        let (sender, recipient, text) = (sender.to_string(), recipient.to_string(), text.to_string());
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
                    "INSERT INTO messages (id, sender, recipient, body, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO NOTHING",
                    params![&id.0[..], sender, recipient, text, time_ms],
                )?;
                if inserted == 1 {
                    let seq = txn.last_insert_rowid() as u64;
                    *message.lock().expect("not poisoned") =
                        Some(StoredMessage { seq, id, sender, recipient, text, time_ms });
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

    /// Messages waiting for `recipient` with a sequence number above `after`, oldest first.
    pub async fn pending(&self, recipient: &str, after: u64, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        let recipient = recipient.to_string();
        self.submit(
            move |txn| {
                let mut stmt = txn.prepare_cached(
                    "SELECT seq, id, sender, recipient, body, created_ms FROM messages
                     WHERE recipient = ?1 AND delivered_ms IS NULL AND seq > ?2 ORDER BY seq LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![recipient, after as i64, limit as i64], |r| {
                    let id: Vec<u8> = r.get(1)?;
                    Ok(StoredMessage {
                        seq: r.get::<_, i64>(0)? as u64,
                        id: MessageId(id.try_into().unwrap_or_default()),
                        sender: r.get(2)?,
                        recipient: r.get(3)?,
                        text: r.get(4)?,
                        time_ms: r.get(5)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            },
            |_| {},
        )
        .await
    }

    /// Records that `recipient` received these messages; returns the receipts for their
    /// senders (only for messages not marked before).
    pub async fn mark_delivered(&self, recipient: &str, seqs: Vec<u64>) -> Result<Vec<Receipt>, StoreError> {
        let recipient = recipient.to_string();
        self.submit(
            move |txn| {
                let now = now_ms();
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

    /// How many messages wait for `user`, and how many of `user`'s wait for the peer.
    pub async fn waiting(&self, user: &str) -> Result<(u64, u64), StoreError> {
        let user = user.to_string();
        self.submit(
            move |txn| {
                let count = |sql: &str| -> Result<u64, StoreError> {
                    Ok(txn.query_row(sql, params![user], |r| r.get::<_, i64>(0))? as u64)
                };
                Ok((
                    count("SELECT COUNT(*) FROM messages WHERE recipient = ?1 AND delivered_ms IS NULL")?,
                    count("SELECT COUNT(*) FROM messages WHERE sender = ?1 AND delivered_ms IS NULL")?,
                ))
            },
            |_| {},
        )
        .await
    }
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
    /// Deletes delivered messages older than `retention_ms` (since delivery) and
    /// undelivered ones older than `expiry_ms` (since they were stored), up to
    /// [`SWEEP_BATCH`] of each, so that one sweep never holds the store long; returns the
    /// expired ones, so their senders can be told. The caller repeats while any went.
    pub async fn sweep_messages(&self, retention_ms: i64, expiry_ms: i64) -> Result<MessageSweep, StoreError> {
        self.submit(
            move |txn| {
                let now = now_ms();
                let retained = txn.execute(
                    "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages
                         WHERE delivered_ms IS NOT NULL AND delivered_ms + ?2 <= ?1 ORDER BY delivered_ms LIMIT ?3)",
                    params![now, retention_ms, SWEEP_BATCH as i64],
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
                Ok(MessageSweep { more: retained == SWEEP_BATCH || expired.len() == SWEEP_BATCH, expired })
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
        let ids: Vec<MessageId> = (0..3).map(|_| MessageId::random()).collect();
        let mut seqs = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let stored = store.store_message(*id, "alice", "bob", &format!("m{i}"), u64::MAX).await.unwrap();
            assert!(stored.fresh);
            seqs.push(stored.seq);
            assert_eq!(feed.recv().await.unwrap().seq, stored.seq);
        }
        let again = store.store_message(ids[1], "alice", "bob", "m1", u64::MAX).await.unwrap();
        assert_eq!((again.seq, again.fresh), (seqs[1], false));
        assert!(feed.try_recv().is_err(), "a resend is not delivered again");
        let foreign = store.store_message(ids[1], "bob", "alice", "x", u64::MAX).await;
        assert!(matches!(foreign, Err(StoreError::Refused(_))));

        let receipts = store.mark_delivered("bob", vec![seqs[1]]).await.unwrap();
        assert_eq!(receipts.len(), 1);
        assert_eq!(receipts[0].all_delivered_upto, seqs[0] - 1);
        assert!(store.mark_delivered("bob", vec![seqs[1]]).await.unwrap().is_empty());
        assert!(store.mark_delivered("alice", vec![seqs[0]]).await.unwrap().is_empty(), "not hers");
        drop(store);
        thread.join().unwrap();

        let (store, _feed, _thread) = open(&path).unwrap();
        let pending = store.pending("bob", 0, 100).await.unwrap();
        assert_eq!(pending.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![seqs[0], seqs[2]]);
        assert_eq!(store.waiting("bob").await.unwrap(), (2, 0));
        assert_eq!(store.waiting("alice").await.unwrap(), (0, 2));
        let receipts = store.receipts("alice", 0, 100).await.unwrap();
        assert_eq!(receipts.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![seqs[1]]);
    }

    const OVERHEAD: u64 = crate::store::schema::MESSAGE_OVERHEAD;

    #[tokio::test]
    async fn waiting_bytes_are_capped_and_expired_messages_go() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _feed, _thread) = open(&dir.path().join("relay.db")).unwrap();
        let first =
            store.store_message(MessageId::random(), "alice", "bob", "0123456789", 15 + OVERHEAD).await.unwrap();
        let err = store.store_message(MessageId::random(), "alice", "bob", "abcdef", 15 + OVERHEAD).await.unwrap_err();
        assert!(err.to_string().contains("waiting on the relay"), "{err}");
        store
            .store_message(MessageId::random(), "bob", "alice", "abcdef", 15 + OVERHEAD)
            .await
            .expect("bob has his own share");
        store.mark_delivered("bob", vec![first.seq]).await.unwrap();
        let second = store.store_message(MessageId::random(), "alice", "bob", "abcdef", 15 + OVERHEAD).await.unwrap();

        let expired = store.sweep_messages(i64::MAX / 2, 0).await.unwrap().expired;
        let mut seqs: Vec<u64> = expired.iter().filter(|m| m.sender == "alice").map(|m| m.seq).collect();
        seqs.sort();
        assert_eq!(seqs, [second.seq], "the undelivered one expired; the delivered one is kept for retention");
        assert!(store.pending("bob", 0, 10).await.unwrap().is_empty());
        store.sweep_messages(0, i64::MAX / 2).await.unwrap();
        assert!(store.receipts("alice", 0, 10).await.unwrap().is_empty(), "delivered and past retention: gone");
        store
            .store_message(MessageId::random(), "alice", "bob", "0123456789abcde", 15 + 2 * OVERHEAD)
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
                    store.store_message(MessageId::random(), "a", "b", &i.to_string(), u64::MAX).await
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
