//! End-to-end keys in the store: the key packages each device publishes (handed out once
//! each, the last-resort one as often as needed), and each room's MLS group as the relay
//! orders it: its epoch (one commit taken per epoch, in the room's sequence) and its latest
//! group info. The relay reads none of it; it only decides the order.

use std::sync::Arc;

use async_trait::async_trait;
use qchat_shared::frame::{Body, DeviceKey, MessageId};
use qchat_shared::identity::IssuedKeys;
use qchat_shared::limits::MAX_KEY_PACKAGES;
use rusqlite::{params, OptionalExtension, Transaction};

use super::interfaces::KeyStore;
use super::rooms::{append, current_members, is_member, resolve};
use super::{Store, StoreError, Users};

/// The keys issued with a user's identity from `qchat-certs user` (read from the PKI).
pub type IssuedLookup = Arc<dyn Fn(&str) -> Option<IssuedKeys> + Send + Sync>;

/// How a room's group should change, for the device that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlan {
    pub room: String,
    /// Commits taken so far (0: no group yet).
    pub epoch: u64,
    pub group_info: Option<Vec<u8>>,
    /// The sequence number of the room's latest commit that the asking device has not
    /// acknowledged yet: it is on its way, and may bring the device in (a Welcome).
    pub unread_commit: Option<u64>,
    pub add: Vec<DeviceKey>,
    /// Every device that should be in the group (`user/device`).
    pub devices: Vec<String>,
    pub missing: Vec<String>,
}

fn refused(reason: impl Into<String>) -> StoreError {
    StoreError::Refused(reason.into().into())
}

/// A member's device that should be in the room's group: its identity and signing key
/// (none until it publishes one, or has keys issued with it).
struct Expected {
    user: String,
    device: String,
    signature_key: Option<Vec<u8>>,
    issued: Option<Vec<u8>>,
}

/// The devices of `user` that should be in a group: the ones not revoked, or, for a user
/// from `qchat-certs user` who has never connected, the device their keys were issued for.
fn devices_of(txn: &Transaction<'_>, user: &str, issued: &IssuedLookup) -> Result<Vec<Expected>, StoreError> {
    let mut stmt = txn.prepare_cached("SELECT id, e2e_key FROM devices WHERE user = ?1 AND revoked_ms IS NULL")?;
    let rows = stmt.query_map([user], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<Vec<u8>>>(1)?)))?;
    let mut devices = Vec::new();
    let keys = issued(user);
    for row in rows {
        let (device, signature_key) = row?;
        let issued_here = keys.as_ref().filter(|k| k.device == device);
        devices.push(Expected {
            user: user.to_string(),
            signature_key: signature_key.or_else(|| issued_here.map(|k| k.signature_key.clone())),
            issued: issued_here.map(|k| k.key_package.clone()),
            device,
        });
    }
    let ever_connected: bool =
        txn.query_row("SELECT EXISTS (SELECT 1 FROM devices WHERE user = ?1)", [user], |r| r.get(0))?;
    if let (Some(keys), false) = (keys, ever_connected) {
        devices.push(Expected {
            user: user.to_string(),
            device: keys.device,
            signature_key: Some(keys.signature_key),
            issued: Some(keys.key_package),
        });
    }
    Ok(devices)
}

/// Takes one key package of a device: a one-time one if any is left (it is deleted), else
/// its last-resort one, else the one issued with its identity.
fn claim(txn: &Transaction<'_>, device: &Expected) -> Result<Option<Vec<u8>>, StoreError> {
    let row: Option<(i64, Vec<u8>, bool)> = txn
        .query_row(
            "SELECT id, package, last_resort FROM key_packages WHERE user = ?1 AND device = ?2
             ORDER BY last_resort, id LIMIT 1",
            params![device.user, device.device],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(match row {
        Some((id, package, last_resort)) => {
            if !last_resort {
                txn.execute("DELETE FROM key_packages WHERE id = ?1", [id])?;
            }
            Some(package)
        }
        None => device.issued.clone(),
    })
}

fn held(txn: &Transaction<'_>, (user, device): (&str, &str)) -> Result<u64, StoreError> {
    Ok(txn.query_row(
        "SELECT COUNT(*) FROM key_packages WHERE user = ?1 AND device = ?2 AND last_resort = 0",
        params![user, device],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

#[async_trait]
impl KeyStore for Store {
    async fn publish_keys(
        &self,
        (user, device): (&str, &str),
        signature_key: Vec<u8>,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<u64, StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.submit(
            move |txn| {
                let known: Option<Option<Vec<u8>>> = txn
                    .query_row("SELECT e2e_key FROM devices WHERE user = ?1 AND id = ?2", params![user, device], |r| {
                        r.get(0)
                    })
                    .optional()?;
                match known {
                    None => return Err(refused("this device is not known to the relay")),
                    Some(Some(key)) if key != signature_key => {
                        return Err(refused(
                            "this device published another signing key before; a device keeps its key \
                             (join again as a new device to change it)",
                        ))
                    }
                    Some(Some(_)) => {}
                    Some(None) => {
                        txn.execute(
                            "UPDATE devices SET e2e_key = ?3 WHERE user = ?1 AND id = ?2",
                            params![user, device, signature_key],
                        )?;
                    }
                }
                let room = MAX_KEY_PACKAGES.saturating_sub(held(txn, (&user, &device))? as usize);
                for package in packages.into_iter().take(room) {
                    txn.execute(
                        "INSERT INTO key_packages (user, device, package) VALUES (?1, ?2, ?3)",
                        params![user, device, package],
                    )?;
                }
                if let Some(package) = last_resort {
                    txn.execute(
                        "DELETE FROM key_packages WHERE user = ?1 AND device = ?2 AND last_resort = 1",
                        params![user, device],
                    )?;
                    txn.execute(
                        "INSERT INTO key_packages (user, device, package, last_resort) VALUES (?1, ?2, ?3, 1)",
                        params![user, device, package],
                    )?;
                }
                held(txn, (&user, &device))
            },
            |_| {},
        )
        .await
    }

    async fn key_packages_held(&self, device: (&str, &str)) -> Result<u64, StoreError> {
        let (user, device) = (device.0.to_string(), device.1.to_string());
        self.submit(move |txn| held(txn, (&user, &device)), |_| {}).await
    }

    async fn group_plan(
        &self,
        asker: (&str, &str),
        target: Option<&str>,
        have: Vec<String>,
        users: Users,
        issued: IssuedLookup,
    ) -> Result<GroupPlan, StoreError> {
        let (user, device) = (asker.0.to_string(), asker.1.to_string());
        let target = target.map(str::to_string);
        self.submit_publishing(move |txn| {
            let mut made = Vec::new();
            let room = resolve(txn, (&user, &device), target.as_deref(), &users, &mut made)?;
            let (epoch, group_info): (i64, Option<Vec<u8>>) =
                txn.query_row("SELECT mls_epoch, group_info FROM rooms WHERE name = ?1", [&room], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            let mut expected = Vec::new();
            for member in current_members(txn, &room)? {
                expected.extend(devices_of(txn, &member, &issued)?);
            }
            let identity = |d: &Expected| qchat_e2e_identity(&d.user, &d.device);
            let devices = expected.iter().map(identity).collect();
            let (mut add, mut missing) = (Vec::new(), Vec::new());
            for device in expected.iter().filter(|d| !have.contains(&identity(d))) {
                match (&device.signature_key, claim(txn, device)?) {
                    (Some(signature_key), Some(key_package)) => add.push(DeviceKey {
                        identity: identity(device),
                        signature_key: signature_key.clone(),
                        key_package,
                    }),
                    _ => missing.push(identity(device)),
                }
            }
            let sql = format!(
                "SELECT MAX(m.seq) FROM {FOR_DEVICE} AND m.room = ?3 AND m.kind = 5
                 AND m.seq > (SELECT cursor FROM devices WHERE user = ?1 AND id = ?2)",
                FOR_DEVICE = super::messages::FOR_DEVICE
            );
            let unread: Option<i64> = txn.query_row(&sql, params![user, device, room], |r| r.get(0))?;
            let unread_commit = unread.map(|seq| seq as u64);
            let plan = GroupPlan { room, epoch: epoch as u64, group_info, unread_commit, add, devices, missing };
            Ok((plan, made))
        })
        .await
    }

    async fn commit(
        &self,
        (user, device): (&str, &str),
        room: &str,
        epoch: u64,
        commit: Vec<u8>,
        welcome: Option<Vec<u8>>,
    ) -> Result<u64, StoreError> {
        let (user, device, room) = (user.to_string(), device.to_string(), room.to_string());
        self.submit_publishing(move |txn| {
            if !is_member(txn, &room, &user)? {
                return Err(refused(format!("you are not in a room named {room}")));
            }
            let current: i64 = txn.query_row("SELECT mls_epoch FROM rooms WHERE name = ?1", [&room], |r| r.get(0))?;
            if current as u64 != epoch {
                return Err(refused(format!(
                    "the room's group is at epoch {current}, not {epoch}: another change came first"
                )));
            }
            txn.execute("UPDATE rooms SET mls_epoch = mls_epoch + 1 WHERE name = ?1", [&room])?;
            let body = Body::Commit { epoch, commit, welcome };
            let event = append(txn, &room, (&user, &device), MessageId::random(), body)?;
            Ok((event.room_seq, vec![event]))
        })
        .await
    }

    async fn set_group_info(
        &self,
        user: &str,
        room: &str,
        epoch: u64,
        group_info: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let (user, room) = (user.to_string(), room.to_string());
        self.submit(
            move |txn| {
                if !is_member(txn, &room, &user)? {
                    return Err(refused(format!("you are not in a room named {room}")));
                }
                let changed = txn.execute(
                    "UPDATE rooms SET group_info = ?3 WHERE name = ?1 AND mls_epoch = ?2",
                    params![room, epoch as i64, group_info],
                )?;
                Ok(changed == 1)
            },
            |_| {},
        )
        .await
    }
}

/// A device's MLS identity, as its credential names it (see `qchat_e2e::identity`).
fn qchat_e2e_identity(user: &str, device: &str) -> String {
    format!("{user}/{device}")
}
