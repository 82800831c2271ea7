//! Files in the store: uploads with their fsynced checkpoints, commits, offers, fetches,
//! quota, and what is due to be swept.

use qchat_shared::frame::{Blake3, FileEntry, FileId, FileInfo, FileState};
use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::rooms::{resolve, Users};
use async_trait::async_trait;

use super::interfaces::FileStore;
use super::{now_ms, Store, StoreError};

/// Where an upload starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSlot {
    pub file_id: FileId,
    /// Bytes the relay already holds (at the last checkpoint).
    pub held: u64,
    /// When the upload first began (Unix milliseconds).
    pub created_ms: i64,
    /// The room it goes to.
    pub room: String,
}

/// A file removed from the relay by the sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweptFile {
    pub file_id: FileId,
    pub sender: String,
    pub fetched: bool,
}

const COLUMNS: &str = "id, name, size, sender, blake3, created_ms, held, committed_ms, fetched_ms, swept_ms, room";

fn file_id(bytes: Vec<u8>) -> FileId {
    FileId(bytes.try_into().unwrap_or_default())
}

fn entry(row: &Row<'_>) -> rusqlite::Result<FileEntry> {
    let blake3: Option<Vec<u8>> = row.get(4)?;
    let info = FileInfo {
        file_id: file_id(row.get(0)?),
        room: row.get(10)?,
        plain_name: Some(row.get::<_, String>(1)?).filter(|name| !name.is_empty()),
        size: row.get::<_, i64>(2)? as u64,
        from: row.get(3)?,
        blake3: blake3.and_then(|b| Blake3::try_from(b).ok()),
        time_ms: row.get(5)?,
    };
    let held = row.get::<_, i64>(6)? as u64;
    let (committed, fetched, swept): (Option<i64>, Option<i64>, Option<i64>) = (row.get(7)?, row.get(8)?, row.get(9)?);
    let state = match (committed, fetched, swept) {
        (_, fetched, Some(_)) => FileState::Expired { fetched: fetched.is_some() },
        (None, _, None) => FileState::Uploading { held },
        (Some(_), None, None) => FileState::Offered,
        (Some(_), Some(_), None) => FileState::Fetched,
    };
    Ok(FileEntry { info, state })
}

/// One page of the files `listing` shows `device` of `user`, after row `after`, in the
/// order they were created; each with its row, to ask for the next page.
fn entries_page(
    txn: &Transaction<'_>,
    listing: Listing,
    (user, device): (&str, &str),
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, FileEntry)>, StoreError> {
    let columns = listing.columns();
    let filter = listing.filter("?4");
    let sql = format!("SELECT {columns}, rowid FROM files WHERE {filter} AND rowid > ?2 ORDER BY rowid LIMIT ?3");
    let mut stmt = txn.prepare_cached(&sql)?;
    let row = |r: &Row<'_>| Ok((r.get(11)?, entry(r)?));
    let rows = if sql.contains("?4") {
        stmt.query_map(params![user, after, limit as i64, device], row)?.collect::<Result<Vec<_>, _>>()
    } else {
        stmt.query_map(params![user, after, limit as i64], row)?.collect::<Result<Vec<_>, _>>()
    };
    Ok(rows?)
}

/// Which of a user's files a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Committed files of others in the user's rooms, offered since the user joined the
    /// room and the device enrolled, fetched or not, until their row is dropped; "fetched"
    /// means by this device.
    Incoming,
    /// Every file the user sent, in any state, until its row is dropped; "fetched" means by
    /// a member.
    Outgoing,
    /// The incoming files this device has not fetched and the relay still holds: its
    /// offers.
    Offers,
}

/// A file `?1` may fetch: offered by someone else to a room `?1` is in, since they joined.
pub(super) const FOR_MEMBER: &str = "sender != ?1 AND EXISTS (SELECT 1 FROM members
    WHERE members.room = files.room AND members.user = ?1 AND members.until_seq IS NULL
    AND members.added_ms <= files.created_ms)";

impl Listing {
    /// Its filter, with `?1` the user and `device` the parameter of the device.
    fn filter(self, device: &str) -> String {
        let since_enrolled =
            format!("created_ms >= (SELECT enrolled_ms FROM devices WHERE user = ?1 AND id = {device})");
        match self {
            Listing::Incoming => format!("{FOR_MEMBER} AND committed_ms IS NOT NULL AND {since_enrolled}"),
            Listing::Outgoing => "sender = ?1".to_string(),
            Listing::Offers => format!(
                "{FOR_MEMBER} AND committed_ms IS NOT NULL AND swept_ms IS NULL AND {since_enrolled}
                 AND NOT EXISTS (SELECT 1 FROM fetches WHERE file = files.id AND device = {device} AND user = ?1)"
            ),
        }
    }

    /// Its columns ([`entry`]'s): a recipient's listing tells what this device fetched.
    fn columns(self) -> String {
        match self {
            Listing::Outgoing => COLUMNS.to_string(),
            Listing::Incoming | Listing::Offers => COLUMNS.replace(
                "fetched_ms",
                "(SELECT at_ms FROM fetches WHERE file = files.id AND device = ?4 AND user = ?1)",
            ),
        }
    }
}

/// Limits an upload must fit.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    pub max_file_size: u64,
    pub quota: u64,
    /// Files of one sender on the relay not fetched yet (a zero-byte file counts too).
    pub max_waiting_files: u64,
}

/// Starts a new upload of `sender`'s to `room`, within the size limit, the sender's count
/// of unfetched files and quota.
fn new_upload(
    txn: &Transaction<'_>,
    sender: &str,
    room: String,
    size: u64,
    limits: UploadLimits,
) -> Result<UploadSlot, StoreError> {
    // The limit is of the file itself, which the relay knows from its sealed size (the
    // quota counts what the spool holds).
    let own = qchat_shared::seal::plain_len(size).unwrap_or(size);
    if own > limits.max_file_size {
        return Err(StoreError::Refused(
            format!(
                "the file is {}; this relay takes files of at most {}",
                qchat_shared::units::human_bytes(own),
                qchat_shared::units::human_bytes(limits.max_file_size)
            )
            .into(),
        ));
    }
    let waiting: i64 = txn.query_row(
        "SELECT COUNT(*) FROM files WHERE sender = ?1 AND fetched_ms IS NULL AND swept_ms IS NULL",
        params![sender],
        |r| r.get(0),
    )?;
    if waiting as u64 >= limits.max_waiting_files {
        return Err(StoreError::Refused(
            format!(
                "you have {waiting} files on the relay that nobody has fetched yet, and {} is the \
                         limit; wait until they are fetched (or expire)",
                limits.max_waiting_files
            )
            .into(),
        ));
    }
    // Counted in the files' own sizes too (a sealed file's tags and hash, 16 bytes a
    // segment and 48 more, are the relay's overhead, not the sender's).
    let used: i64 = txn.query_row(
        &format!(
            "SELECT COALESCE(SUM(CASE WHEN name = '' THEN MAX(size - 32 - {tag} * ((size + {seg} - 1) / {seg}), 0)
                                     ELSE size END), 0)
             FROM files WHERE sender = ?1 AND swept_ms IS NULL",
            tag = qchat_shared::seal::TAG,
            seg = qchat_shared::seal::SEALED_SEGMENT
        ),
        params![sender],
        |r| r.get(0),
    )?;
    if used as u64 + own > limits.quota {
        return Err(StoreError::Refused(
            format!(
                "over your quota: you have {} on the relay, this file is {}, the quota is {}; \
                         wait until your earlier files are fetched and expire",
                qchat_shared::units::human_bytes(used as u64),
                qchat_shared::units::human_bytes(own),
                qchat_shared::units::human_bytes(limits.quota)
            )
            .into(),
        ));
    }
    let file_id = FileId::random();
    let created_ms = now_ms();
    txn.execute(
        // The name travels encrypted: the relay keeps none.
        "INSERT INTO files (id, sender, room, name, size, created_ms) VALUES (?1, ?2, ?3, '', ?4, ?5)",
        params![&file_id.0[..], sender, room, size as i64, created_ms],
    )?;
    Ok(UploadSlot { file_id, held: 0, created_ms, room })
}

/// SQL, about a row of `files`: every device that is to fetch the file has (each device,
/// not revoked, enrolled before the file was sent, of each member but its sender who was
/// in the room then and still is). The sweep keeps a fetched file only its retention once
/// this holds; `status` shows the same.
pub const EVERY_DEVICE_FETCHED: &str = "NOT EXISTS (
    SELECT 1 FROM members AS mb JOIN devices AS d ON d.user = mb.user
    WHERE mb.room = files.room AND mb.until_seq IS NULL AND mb.user != files.sender
    AND mb.added_ms <= files.created_ms
    AND d.revoked_ms IS NULL AND d.enrolled_ms <= files.created_ms
    AND NOT EXISTS (SELECT 1 FROM fetches
        WHERE file = files.id AND fetches.device = d.id AND fetches.user = d.user))";

#[async_trait]
impl FileStore for Store {
    /// Starts an upload to the room `target` resolves to for `sender`, or resumes `resume`
    /// if it is an unfinished upload of `sender` of the same size and name (to a room the
    /// sender is still in). Refuses what is over the size limit or the sender's quota.
    #[allow(clippy::too_many_arguments)]
    async fn start_upload(
        &self,
        (sender, device): (&str, &str),
        target: Option<&str>,
        size: u64,
        resume: Option<FileId>,
        limits: UploadLimits,
        users: Users,
    ) -> Result<UploadSlot, StoreError> {
        let (sender, device) = (sender.to_string(), device.to_string());
        let target = target.map(str::to_string);
        self.submit_publishing(move |txn| {
            if let Some(id) = resume {
                let held: Option<(i64, i64, String)> = txn
                    .query_row(
                        "SELECT held, created_ms, room FROM files WHERE id = ?1 AND sender = ?2 AND size = ?3
                         AND name = '' AND committed_ms IS NULL AND swept_ms IS NULL",
                        params![&id.0[..], sender, size as i64],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                if let Some((held, created_ms, room)) = held {
                    if super::rooms::is_member(txn, &room, &sender)? {
                        return Ok((UploadSlot { file_id: id, held: held as u64, created_ms, room }, Vec::new()));
                    }
                }
            }
            let mut made = Vec::new();
            let room = resolve(txn, (&sender, &device), target.as_deref(), &users, &mut made)?;
            let slot = new_upload(txn, &sender, room, size, limits)?;
            Ok((slot, made))
        })
        .await
    }

    /// Records that the spool file holds `held` bytes on disk (after an fsync).
    async fn checkpoint(&self, file_id: FileId, held: u64) -> Result<(), StoreError> {
        self.submit(
            move |txn| {
                txn.execute(
                    "UPDATE files SET held = ?2 WHERE id = ?1 AND committed_ms IS NULL AND held < ?2",
                    params![&file_id.0[..], held as i64],
                )?;
                Ok(())
            },
            |_| {},
        )
        .await
    }

    /// Commits a complete, verified upload of `sender`, still a member of its room; returns
    /// what to offer the room's members, and who they are.
    async fn commit_upload(
        &self,
        file_id: FileId,
        blake3: Blake3,
        sender: &str,
    ) -> Result<(Vec<String>, FileInfo), StoreError> {
        let sender = sender.to_string();
        self.submit(
            move |txn| {
                let room: String =
                    txn.query_row("SELECT room FROM files WHERE id = ?1", params![&file_id.0[..]], |r| r.get(0))?;
                if !super::rooms::is_member(txn, &room, &sender)? {
                    return Err(StoreError::Refused(
                        format!("you are no longer in {room}, so the file was not offered there").into(),
                    ));
                }
                txn.execute(
                    "UPDATE files SET blake3 = ?2, committed_ms = ?3, held = size WHERE id = ?1",
                    params![&file_id.0[..], &blake3[..], now_ms()],
                )?;
                let sql = format!("SELECT {COLUMNS} FROM files WHERE id = ?1");
                let info = txn.query_row(&sql, params![&file_id.0[..]], |r| Ok(entry(r)?.info))?;
                let members = super::rooms::current_members(txn, &info.room)?;
                Ok((members.into_iter().filter(|m| *m != info.from).collect(), info))
            },
            |_| {},
        )
        .await
    }

    /// Forgets an upload (its hash did not match, or the disk filled).
    async fn drop_upload(&self, file_id: FileId) -> Result<(), StoreError> {
        self.submit(
            move |txn| {
                txn.execute("DELETE FROM files WHERE id = ?1 AND committed_ms IS NULL", params![&file_id.0[..]])?;
                Ok(())
            },
            |_| {},
        )
        .await
    }

    /// A file `user` may fetch that is still held: committed (waiting or fetched) or still
    /// arriving.
    async fn file_for(&self, user: &str, file_id: FileId) -> Result<Option<FileEntry>, StoreError> {
        let user = user.to_string();
        self.submit(
            move |txn| {
                let sql = format!("SELECT {COLUMNS} FROM files WHERE {FOR_MEMBER} AND id = ?2 AND swept_ms IS NULL");
                Ok(txn.query_row(&sql, params![user, &file_id.0[..]], entry).optional()?)
            },
            |_| {},
        )
        .await
    }

    /// Records that `device` of `user` saved and verified a file; returns its sender the
    /// first time a device of `user` has it.
    async fn mark_fetched(&self, (user, device): (&str, &str), file_id: FileId) -> Result<Option<String>, StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.submit(
            move |txn| {
                let now = now_ms();
                let sql = format!(
                    "INSERT INTO fetches (file, device, user, at_ms) SELECT id, ?3, ?1, ?4 FROM files
                     WHERE {FOR_MEMBER} AND id = ?2 AND committed_ms IS NOT NULL ON CONFLICT DO NOTHING"
                );
                if txn.execute(&sql, params![user, &file_id.0[..], device, now])? == 0 {
                    return Ok(None);
                }
                txn.execute(
                    "UPDATE files SET fetched_ms = ?2 WHERE id = ?1 AND fetched_ms IS NULL",
                    params![&file_id.0[..], now],
                )?;
                let fetches: i64 = txn.query_row(
                    "SELECT COUNT(*) FROM fetches WHERE file = ?1 AND user = ?2",
                    params![&file_id.0[..], user],
                    |r| r.get(0),
                )?;
                let sender =
                    txn.query_row("SELECT sender FROM files WHERE id = ?1", params![&file_id.0[..]], |r| r.get(0));
                Ok((fetches == 1).then_some(sender?))
            },
            |_| {},
        )
        .await
    }

    /// One page of a user's files after row `after` (0 for the first), oldest first, each
    /// with the row to continue from.
    async fn list_page(
        &self,
        (user, device): (&str, &str),
        listing: Listing,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, FileEntry)>, StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.submit(move |txn| entries_page(txn, listing, (&user, &device), after, limit), |_| {}).await
    }

    /// Marks as swept every file past its time: fetched ones `retention_ms` after their first
    /// fetch once every device of every member (but its sender) that was there when the
    /// file came has it,
    /// the others (unfetched, unfinished, or still missing on a device) after `expiry_ms`
    /// (and a fetched one never before its retention).
    /// Returns them, so their spool files can go. The
    /// rows of files swept more than `retention_ms` ago go too (their senders saw them
    /// expire in their listing for that long), so the table does not grow with use.
    async fn sweep_due(&self, retention_ms: i64, expiry_ms: i64) -> Result<Vec<SweptFile>, StoreError> {
        self.submit(
            move |txn| {
                let now = now_ms();
                txn.execute(
                    "DELETE FROM files WHERE swept_ms IS NOT NULL AND swept_ms + ?2 <= ?1",
                    params![now, retention_ms],
                )?;
                let sql = format!(
                    "UPDATE files SET swept_ms = ?1 WHERE swept_ms IS NULL AND (
                        (fetched_ms IS NOT NULL AND fetched_ms + ?2 <= ?1 AND {EVERY_DEVICE_FETCHED})
                        OR (COALESCE(committed_ms, created_ms) + ?3 <= ?1
                            AND (fetched_ms IS NULL OR fetched_ms + ?2 <= ?1)))
                     RETURNING id, sender, fetched_ms IS NOT NULL"
                );
                let mut stmt = txn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![now, retention_ms, expiry_ms], |r| {
                    Ok(SweptFile { file_id: file_id(r.get(0)?), sender: r.get(1)?, fetched: r.get(2)? })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            },
            |_| {},
        )
        .await
    }

    /// Ids of every file whose bytes the spool should still hold.
    async fn held_files(&self) -> Result<Vec<FileId>, StoreError> {
        self.submit(
            |txn| {
                let mut stmt = txn.prepare_cached("SELECT id FROM files WHERE swept_ms IS NULL")?;
                let rows = stmt.query_map([], |r| Ok(file_id(r.get(0)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            },
            |_| {},
        )
        .await
    }

    /// How many files wait for this device of `user`.
    async fn files_waiting(&self, (user, device): (&str, &str)) -> Result<u64, StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.submit(
            move |txn| {
                let sql = format!("SELECT COUNT(*) FROM files WHERE {}", Listing::Offers.filter("?2"));
                Ok(txn.query_row(&sql, params![user, device], |r| r.get::<_, i64>(0))? as u64)
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
    use crate::store::DeviceStore;

    const LIMITS: UploadLimits = UploadLimits { max_file_size: 1000, quota: 1500, max_waiting_files: 4 };

    /// A relay of two people, alice and bob: files go to their direct room.
    fn two() -> Users {
        std::sync::Arc::new(vec!["alice".into(), "bob".into()])
    }

    #[tokio::test]
    async fn upload_resume_commit_fetch_and_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _feed, _thread) = open(&dir.path().join("relay.db")).unwrap();
        for (user, device) in [("alice", "a1"), ("bob", "b1")] {
            store.device_connected(user, device, true, device.as_bytes().to_vec(), i64::MAX).await.unwrap();
        }
        let slot = store.start_upload(("alice", "a1"), None, 800, None, LIMITS, two()).await.unwrap();
        assert_eq!(slot.held, 0);
        store.checkpoint(slot.file_id, 300).await.unwrap();
        let resumed = store.start_upload(("alice", "a1"), None, 800, Some(slot.file_id), LIMITS, two()).await.unwrap();
        let room = "alice+bob".to_string();
        assert_eq!(resumed, UploadSlot { file_id: slot.file_id, held: 300, created_ms: slot.created_ms, room });
        let other_size =
            store.start_upload(("alice", "a1"), None, 10, Some(slot.file_id), LIMITS, two()).await.unwrap();
        assert_ne!(other_size.file_id, slot.file_id, "a different file is a new upload");
        let stolen = store.start_upload(("bob", "b1"), None, 800, Some(slot.file_id), LIMITS, two()).await.unwrap();
        assert_ne!(stolen.file_id, slot.file_id, "nobody resumes another user's upload");

        assert!(store.list_page(("bob", "b1"), Listing::Offers, 0, 10).await.unwrap().is_empty());
        let (members, info) = store.commit_upload(slot.file_id, [7; 32], "alice").await.unwrap();
        assert_eq!((members, info.size, info.blake3), (vec!["bob".to_string()], 800, Some([7; 32])));
        assert_eq!(store.list_page(("bob", "b1"), Listing::Offers, 0, 10).await.unwrap().len(), 1);
        assert_eq!(store.files_waiting(("bob", "b1")).await.unwrap(), 1);
        assert!(store.file_for("alice", slot.file_id).await.unwrap().is_none(), "only the recipient fetches");
        store.device_connected("bob", "b2", true, b"b2".to_vec(), i64::MAX).await.unwrap();
        assert_eq!(store.mark_fetched(("bob", "b1"), slot.file_id).await.unwrap().as_deref(), Some("alice"));
        assert_eq!(store.mark_fetched(("bob", "b1"), slot.file_id).await.unwrap(), None);
        assert!(store.sweep_due(0, i64::MAX / 2).await.unwrap().is_empty(), "kept: bob's b2 has not got it");
        assert_eq!(store.list_page(("bob", "b2"), Listing::Offers, 0, 10).await.unwrap().len(), 1);
        assert_eq!(store.mark_fetched(("bob", "b2"), slot.file_id).await.unwrap(), None, "the sender heard once");

        let swept = store.sweep_due(0, i64::MAX / 2).await.unwrap();
        assert_eq!(swept.len(), 1);
        assert!(swept[0].fetched);
        let outgoing = store.list_page(("alice", "a1"), Listing::Outgoing, 0, 10).await.unwrap();
        let states: Vec<_> = outgoing.iter().map(|(_, e)| e.state).collect();
        assert!(states.contains(&FileState::Expired { fetched: true }));
        // A retention period after the sweep, the row goes too.
        store.sweep_due(0, i64::MAX / 2).await.unwrap();
        let outgoing = store.list_page(("alice", "a1"), Listing::Outgoing, 0, 10).await.unwrap();
        assert!(outgoing.iter().all(|(_, e)| e.info.file_id != slot.file_id), "the swept row is dropped");
    }

    #[tokio::test]
    async fn size_limit_and_quota() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _feed, _thread) = open(&dir.path().join("relay.db")).unwrap();
        for (user, device) in [("alice", "a1"), ("bob", "b1")] {
            store.device_connected(user, device, true, device.as_bytes().to_vec(), i64::MAX).await.unwrap();
        }
        // The size limit is of the file itself (the relay sees it sealed), the quota of
        // what the spool holds.
        let sealed = qchat_shared::seal::sealed_len;
        let err = store.start_upload(("alice", "a1"), None, sealed(1001), None, LIMITS, two()).await.unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
        store.start_upload(("alice", "a1"), None, sealed(1000), None, LIMITS, two()).await.unwrap();
        let left = sealed(1500 - 1000);
        let err = store.start_upload(("alice", "a1"), None, left + 1, None, LIMITS, two()).await.unwrap_err();
        assert!(err.to_string().contains("quota"), "{err}");
        store.start_upload(("alice", "a1"), None, left, None, LIMITS, two()).await.unwrap();
        store.start_upload(("bob", "b1"), None, sealed(1000), None, LIMITS, two()).await.unwrap();
    }

    #[tokio::test]
    async fn waiting_files_are_capped_by_count_and_pages_cover_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _feed, _thread) = open(&dir.path().join("relay.db")).unwrap();
        for (user, device) in [("alice", "a1"), ("bob", "b1")] {
            store.device_connected(user, device, true, device.as_bytes().to_vec(), i64::MAX).await.unwrap();
        }
        let mut ids = Vec::new();
        for _ in 0..4 {
            let slot = store.start_upload(("alice", "a1"), None, 0, None, LIMITS, two()).await.unwrap();
            store.commit_upload(slot.file_id, [0; 32], "alice").await.unwrap();
            ids.push(slot.file_id);
        }
        let err = store.start_upload(("alice", "a1"), None, 0, None, LIMITS, two()).await.unwrap_err();
        assert!(err.to_string().contains("4 files on the relay that nobody has fetched"), "{err}");
        let (mut after, mut listed) = (0, Vec::new());
        loop {
            let page = store.list_page(("bob", "b1"), Listing::Offers, after, 3).await.unwrap();
            let Some(&(last, _)) = page.last() else { break };
            after = last;
            listed.extend(page.into_iter().map(|(_, e)| e.info.file_id));
        }
        assert_eq!(listed, ids, "every offer once, oldest first");
        store.mark_fetched(("bob", "b1"), ids[0]).await.unwrap();
        store.start_upload(("alice", "a1"), None, 0, None, LIMITS, two()).await.unwrap();
    }
}
