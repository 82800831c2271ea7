//! Devices and invites in the store: a person's devices (each with its delivery cursor and
//! certificates), one-time invites (only their secrets' digests), revocation.

use rusqlite::{params, OptionalExtension, Row, Transaction};

use async_trait::async_trait;

use super::interfaces::DeviceStore;
use super::{now_ms, Store, StoreError};

/// Devices one person may have (revoked ones do not count).
pub const MAX_DEVICES: i64 = 16;
/// Invites of one person that wait to be used, at most.
pub const MAX_OPEN_INVITES: i64 = 16;
/// Invites made for one person in a day, at most (so that a loop of link, join and revoke
/// cannot grow the tables and the CRL without end).
pub const MAX_INVITES_A_DAY: i64 = 32;
const DAY_MS: i64 = 24 * 3600 * 1000;
/// How long a used or expired invite's row is kept (so that it is refused as "already
/// used" or "expired" rather than "invalid").
const INVITE_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// One device as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    pub user: String,
    pub id: String,
    pub name: String,
    pub enrolled_ms: i64,
    pub last_seen_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

fn device_row(r: &Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        user: r.get(0)?,
        id: r.get(1)?,
        name: r.get(2)?,
        enrolled_ms: r.get(3)?,
        last_seen_ms: r.get(4)?,
        revoked_ms: r.get(5)?,
    })
}

const DEVICE_COLUMNS: &str = "user, id, name, enrolled_ms, last_seen_ms, revoked_ms";

/// What a revocation revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The serials of the certificates to put on the CRL.
    pub serials: Vec<Vec<u8>>,
    pub devices: usize,
    pub invites: usize,
}

/// What an invite's check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteCheck {
    /// It may be used, for this user.
    Valid { user: String },
    /// It may not, and why, in the words a person sees: "invalid", "already used",
    /// "expired", "revoked", or a limit.
    Refused(String),
}

/// A device that enrolls: its certificate is signed already.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub user: String,
    pub device: String,
    pub name: String,
    pub serial: Vec<u8>,
    pub not_after_ms: i64,
}

/// Checks an invite by id and secret digest. A wrong secret is "invalid", like an unknown
/// id, so that a guess learns nothing; only the holder of the secret hears its state.
fn check(txn: &Transaction<'_>, id: &str, digest: &[u8; 32]) -> Result<InviteCheck, StoreError> {
    /// An invite's digest, user, expiry, use and revocation.
    type InviteRow = (Vec<u8>, String, i64, Option<i64>, Option<i64>);
    let row: Option<InviteRow> = txn
        .query_row(
            "SELECT digest, user, expires_ms, used_ms, revoked_ms FROM invites WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let refused = |why: &str| Ok(InviteCheck::Refused(why.to_string()));
    let Some((stored, user, expires_ms, used, revoked)) = row else { return refused("invalid") };
    // blake3::Hash compares in constant time.
    let matches = <[u8; 32]>::try_from(stored).is_ok_and(|s| blake3::Hash::from(s) == blake3::Hash::from(*digest));
    if !matches {
        return refused("invalid");
    }
    if revoked.is_some() {
        return refused("revoked");
    }
    if used.is_some() {
        return refused("already used");
    }
    if expires_ms <= now_ms() {
        return refused("expired");
    }
    Ok(InviteCheck::Valid { user })
}

fn open_devices(txn: &Transaction<'_>, user: &str) -> Result<i64, StoreError> {
    Ok(txn.query_row("SELECT COUNT(*) FROM devices WHERE user = ?1 AND revoked_ms IS NULL", params![user], |r| {
        r.get(0)
    })?)
}

fn max_seq(txn: &Transaction<'_>) -> Result<i64, StoreError> {
    Ok(txn.query_row("SELECT COALESCE(MAX(seq), 0) FROM messages", [], |r| r.get(0))?)
}

fn add_certificate(
    txn: &Transaction<'_>,
    user: &str,
    device: &str,
    serial: &[u8],
    not_after_ms: i64,
) -> Result<(), StoreError> {
    txn.execute(
        "INSERT INTO device_certs (serial, user, device, not_after_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (serial) DO NOTHING",
        params![serial, user, device, not_after_ms],
    )?;
    Ok(())
}

#[async_trait]
impl DeviceStore for Store {
    /// Records a new invite for `user` (only its secret's digest), made by their device
    /// `created_by` (none for the operator's), unless too many of theirs wait to be used or
    /// were made today.
    async fn create_invite(
        &self,
        user: &str,
        id: &str,
        digest: [u8; 32],
        expires_ms: i64,
        created_by: Option<&str>,
    ) -> Result<(), StoreError> {
        let (user, id, created_by) = (user.to_string(), id.to_string(), created_by.map(str::to_string));
        self.submit(
            move |txn| {
                let now = now_ms();
                let open: i64 = txn.query_row(
                    "SELECT COUNT(*) FROM invites WHERE user = ?1 AND used_ms IS NULL AND revoked_ms IS NULL
                     AND expires_ms > ?2",
                    params![user, now],
                    |r| r.get(0),
                )?;
                if open >= MAX_OPEN_INVITES {
                    return Err(StoreError::Refused(
                        format!("{open} invites for {user} wait to be used; use or let one expire first").into(),
                    ));
                }
                let today: i64 = txn.query_row(
                    "SELECT COUNT(*) FROM invites WHERE user = ?1 AND created_ms > ?2",
                    params![user, now - DAY_MS],
                    |r| r.get(0),
                )?;
                if today >= MAX_INVITES_A_DAY {
                    return Err(StoreError::Refused(
                        format!("{today} invites were made for {user} in the last day; try again tomorrow").into(),
                    ));
                }
                txn.execute(
                    "INSERT INTO invites (id, digest, user, created_ms, expires_ms, created_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![id, &digest[..], user, now, expires_ms, created_by],
                )?;
                Ok(())
            },
            |_| {},
        )
        .await
    }

    /// Whether an invite may be used now (it is used only by [`Store::redeem_invite`]).
    async fn check_invite(&self, id: &str, digest: [u8; 32]) -> Result<InviteCheck, StoreError> {
        let id = id.to_string();
        self.submit(move |txn| check(txn, &id, &digest), |_| {}).await
    }

    /// Uses an invite for a device whose certificate is signed: checks it again, marks it
    /// used and adds the device, whose cursor starts at the last message stored (it gets
    /// what comes from now on), all in one transaction, so an invite works once.
    async fn redeem_invite(&self, id: &str, digest: [u8; 32], new: NewDevice) -> Result<InviteCheck, StoreError> {
        let id = id.to_string();
        self.submit(
            move |txn| {
                let checked = check(txn, &id, &digest)?;
                if checked != (InviteCheck::Valid { user: new.user.clone() }) {
                    return Ok(checked);
                }
                if open_devices(txn, &new.user)? >= MAX_DEVICES {
                    return Ok(InviteCheck::Refused(format!(
                        "{} has {MAX_DEVICES} devices already; revoke one first",
                        new.user
                    )));
                }
                let now = now_ms();
                txn.execute(
                    "UPDATE invites SET used_ms = ?2, device = ?3 WHERE id = ?1",
                    params![id, now, new.device],
                )?;
                txn.execute(
                    "INSERT INTO devices (user, id, name, enrolled_ms, cursor) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![new.user, new.device, new.name, now, max_seq(txn)?],
                )?;
                add_certificate(txn, &new.user, &new.device, &new.serial, new.not_after_ms)?;
                Ok(checked)
            },
            |_| {},
        )
        .await
    }

    /// Records that a device connected with a certificate, and returns it as it was before
    /// (`last_seen_ms` is its previous connection), or `None` when the device is revoked. A device the store does not know yet (a certificate from
    /// `qchat-certs user`, which names none) is added as the person's device since the
    /// start: it gets what waits for its person and the files they have not fetched.
    async fn device_connected(
        &self,
        user: &str,
        device: &str,
        from_certs_tool: bool,
        serial: Vec<u8>,
        not_after_ms: i64,
    ) -> Result<Option<DeviceRow>, StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.submit(
            move |txn| {
                let now = now_ms();
                let known: Option<DeviceRow> = txn
                    .query_row(
                        &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE user = ?1 AND id = ?2"),
                        params![user, device],
                        device_row,
                    )
                    .optional()?;
                match known {
                    Some(row) if row.revoked_ms.is_some() => return Ok(None),
                    Some(_) => {}
                    None => {
                        let (name, enrolled_ms) = if from_certs_tool { ("identity file", 0) } else { ("unknown", now) };
                        // From the first message of someone else its person has not received.
                        let cursor: i64 = txn.query_row(
                            "SELECT COALESCE(MIN(m.seq) - 1, (SELECT COALESCE(MAX(seq), 0) FROM messages))
                             FROM messages AS m JOIN members AS mb ON mb.room = m.room AND mb.user = ?1
                                 AND mb.until_seq IS NULL
                             WHERE m.room_seq > mb.delivered_upto AND m.sender != ?1",
                            params![user],
                            |r| r.get(0),
                        )?;
                        txn.execute(
                            "INSERT INTO devices (user, id, name, enrolled_ms, cursor) VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![user, device, name, enrolled_ms, cursor],
                        )?;
                        // What its person fetched in a direct room before devices, it has.
                        txn.execute(
                            "INSERT INTO fetches (file, device, user, at_ms) SELECT id, ?2, ?1, fetched_ms FROM files
                             WHERE fetched_ms IS NOT NULL AND sender != ?1 AND room IN (SELECT name FROM rooms
                                 WHERE direct = 1 AND name IN (SELECT room FROM members WHERE user = ?1))
                             ON CONFLICT DO NOTHING",
                            params![user, device],
                        )?;
                    }
                }
                add_certificate(txn, &user, &device, &serial, not_after_ms)?;
                let before = txn
                    .query_row(
                        &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE user = ?1 AND id = ?2"),
                        params![user, device],
                        device_row,
                    )
                    .optional()?;
                txn.execute(
                    "UPDATE devices SET last_seen_ms = ?3 WHERE user = ?1 AND id = ?2",
                    params![user, device, now],
                )?;
                Ok(before)
            },
            |_| {},
        )
        .await
    }

    /// The device a certificate (by serial) of `user` was given to, if the store knows it.
    async fn device_of_serial(&self, user: &str, serial: Vec<u8>) -> Result<Option<String>, StoreError> {
        let user = user.to_string();
        self.submit(
            move |txn| {
                Ok(txn
                    .query_row(
                        "SELECT device FROM device_certs WHERE serial = ?1 AND user = ?2",
                        params![serial, user],
                        |r| r.get(0),
                    )
                    .optional()?)
            },
            |_| {},
        )
        .await
    }

    /// The devices of `users` not revoked that enrolled after `since_ms`, oldest first.
    async fn devices_enrolled_since(&self, users: Vec<String>, since_ms: i64) -> Result<Vec<DeviceRow>, StoreError> {
        self.submit(
            move |txn| {
                let mut stmt = txn.prepare_cached(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices WHERE user = ?1 AND enrolled_ms > ?2 AND revoked_ms IS NULL
                     ORDER BY enrolled_ms"
                ))?;
                let mut rows = Vec::new();
                for user in users {
                    rows.extend(stmt.query_map(params![user, since_ms], device_row)?.collect::<Result<Vec<_>, _>>()?);
                }
                Ok(rows)
            },
            |_| {},
        )
        .await
    }

    /// Records a renewed certificate of a device that is not revoked; false if it is.
    async fn renew_device(
        &self,
        user: &str,
        device: &str,
        serial: Vec<u8>,
        not_after_ms: i64,
    ) -> Result<bool, StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.submit(
            move |txn| {
                let live: Option<i64> = txn
                    .query_row(
                        "SELECT 1 FROM devices WHERE user = ?1 AND id = ?2 AND revoked_ms IS NULL",
                        params![user, device],
                        |r| r.get(0),
                    )
                    .optional()?;
                if live.is_some() {
                    add_certificate(txn, &user, &device, &serial, not_after_ms)?;
                }
                Ok(live.is_some())
            },
            |_| {},
        )
        .await
    }

    /// The devices of `user` (of everyone with `None`), revoked ones too, by enrollment.
    async fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceRow>, StoreError> {
        let user = user.map(str::to_string);
        self.submit(
            move |txn| {
                let mut stmt = txn.prepare_cached(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices WHERE ?1 IS NULL OR user = ?1 ORDER BY user, enrolled_ms, id"
                ))?;
                let rows = stmt.query_map(params![user], device_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            },
            |_| {},
        )
        .await
    }

    /// Revokes one device of `user`, or with `None` every device of theirs and every invite
    /// for them not used yet. Returns the serials of the certificates to put on the CRL
    /// (those not past their end) and how many devices and invites it revoked, or `None`
    /// when there was no such device.
    async fn revoke_devices(&self, user: &str, device: Option<&str>) -> Result<Option<Revoked>, StoreError> {
        let (user, device) = (user.to_string(), device.map(str::to_string));
        self.submit(
            move |txn| {
                let now = now_ms();
                let changed = txn.execute(
                    "UPDATE devices SET revoked_ms = ?3 WHERE user = ?1 AND (?2 IS NULL OR id = ?2)
                     AND revoked_ms IS NULL",
                    params![user, device, now],
                )?;
                if device.is_some() && changed == 0 {
                    return Ok(None);
                }
                // A person's open invites go with them; a device's, with it (a stolen one
                // cannot leave an invite behind).
                let invites = txn.execute(
                    "UPDATE invites SET revoked_ms = ?3 WHERE user = ?1 AND (?2 IS NULL OR created_by = ?2)
                     AND used_ms IS NULL AND revoked_ms IS NULL AND expires_ms > ?3",
                    params![user, device, now],
                )?;
                let mut stmt = txn.prepare_cached(
                    "SELECT serial FROM device_certs WHERE user = ?1 AND (?2 IS NULL OR device = ?2)
                     AND not_after_ms > ?3",
                )?;
                let serials = stmt.query_map(params![user, device, now], |r| r.get::<_, Vec<u8>>(0))?;
                let serials = serials.collect::<Result<Vec<_>, _>>()?;
                Ok(Some(Revoked { serials, devices: changed, invites }))
            },
            |_| {},
        )
        .await
    }

    /// Removes invites used or expired a while ago, and certificates past their end.
    async fn sweep_devices(&self) -> Result<(), StoreError> {
        self.submit(
            |txn| {
                let now = now_ms();
                txn.execute(
                    "DELETE FROM invites WHERE MIN(expires_ms, COALESCE(used_ms, expires_ms), COALESCE(revoked_ms, expires_ms)) + ?2 <= ?1",
                    params![now, INVITE_KEPT_MS],
                )?;
                txn.execute("DELETE FROM device_certs WHERE not_after_ms <= ?1", params![now])?;
                Ok(())
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

    fn new_device(user: &str, device: &str) -> NewDevice {
        NewDevice {
            user: user.into(),
            device: device.into(),
            name: "laptop".into(),
            serial: device.as_bytes().to_vec(),
            not_after_ms: i64::MAX,
        }
    }

    #[tokio::test]
    async fn an_invite_works_once_and_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _feed, _thread) = open(&dir.path().join("relay.db")).unwrap();
        let digest = [9; 32];
        store.create_invite("alice", "aaaaaaaa", digest, now_ms() + 60_000, None).await.unwrap();
        store.create_invite("alice", "bbbbbbbb", digest, now_ms() - 1, None).await.unwrap();
        let refused = |why: &str| InviteCheck::Refused(why.into());
        assert_eq!(store.check_invite("aaaaaaaa", [8; 32]).await.unwrap(), refused("invalid"));
        assert_eq!(store.check_invite("zzzzzzzz", digest).await.unwrap(), refused("invalid"));
        assert_eq!(store.check_invite("bbbbbbbb", digest).await.unwrap(), refused("expired"));
        let valid = InviteCheck::Valid { user: "alice".into() };
        assert_eq!(store.check_invite("aaaaaaaa", digest).await.unwrap(), valid);
        assert_eq!(store.redeem_invite("aaaaaaaa", digest, new_device("alice", "d1")).await.unwrap(), valid);
        assert_eq!(
            store.redeem_invite("aaaaaaaa", digest, new_device("alice", "d2")).await.unwrap(),
            refused("already used")
        );
        let devices = store.devices(Some("alice")).await.unwrap();
        assert_eq!(devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["d1"]);

        store.create_invite("alice", "cccccccc", digest, now_ms() + 60_000, Some("d1")).await.unwrap();
        let revoked = store.revoke_devices("alice", None).await.unwrap().unwrap();
        assert_eq!(revoked, Revoked { serials: vec![b"d1".to_vec()], devices: 1, invites: 1 });
        assert_eq!(store.check_invite("cccccccc", digest).await.unwrap(), refused("revoked"));
        assert!(store.device_connected("alice", "d1", false, b"d1".to_vec(), i64::MAX).await.unwrap().is_none());
        assert_eq!(store.revoke_devices("alice", Some("nope")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn open_invites_and_devices_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _feed, _thread) = open(&dir.path().join("relay.db")).unwrap();
        for i in 0..MAX_OPEN_INVITES {
            store.create_invite("bob", &format!("i{i}"), [i as u8; 32], now_ms() + 60_000, None).await.unwrap();
        }
        let err = store.create_invite("bob", "one-more", [0; 32], now_ms() + 60_000, None).await.unwrap_err();
        assert!(err.to_string().contains("wait to be used"), "{err}");
        for i in 0..MAX_OPEN_INVITES - 1 {
            let redeemed =
                store.redeem_invite(&format!("i{i}"), [i as u8; 32], new_device("bob", &format!("d{i}"))).await;
            assert!(matches!(redeemed.unwrap(), InviteCheck::Valid { .. }));
        }
        store.device_connected("bob", "legacy", true, vec![1], i64::MAX).await.unwrap().unwrap();
        let last = MAX_OPEN_INVITES - 1;
        let refused =
            store.redeem_invite(&format!("i{last}"), [last as u8; 32], new_device("bob", "dx")).await.unwrap();
        assert!(matches!(refused, InviteCheck::Refused(ref why) if why.contains("revoke one first")), "{refused:?}");
    }
}
