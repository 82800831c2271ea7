//! The client's end-to-end side: the device's MLS store (`mls.db` in its state
//! directory), whether each room's group is ready to send in, bringing a group up to the
//! room's members (one question to the relay and at most one commit at a time per room),
//! and opening what the relay delivers, once each.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use qchat_e2e::{Candidate, Device, Incoming, Issued, Opened};
use qchat_shared::frame::{Body, ClientControl, Deliver, DeviceKey, FileId, RoomInfo};
use qchat_shared::identity::Identity;
use qchat_shared::limits::KEY_PACKAGES_TARGET;

use crate::offer::{Content, FileOffer};
use crate::state::StateDir;

/// What a delivered event is, for the history and the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    Text(String),
    /// A member's file offer (its key is kept for the download).
    File(FileOffer),
    /// Something about the room's encryption, in words (a device joined, a message this
    /// device cannot read).
    Notice(String),
    /// A change of the room's members.
    Change,
    /// Nothing to show (a commit of a group this device is not in, our own commit).
    Silent,
}

/// The MLS identity and any keys issued with an identity file.
fn device_identity(identity: &Identity) -> (String, Option<Issued>) {
    let device = identity.device().unwrap_or_else(|| "device".into());
    let issued = identity
        .e2e
        .as_deref()
        .and_then(|b64| data_encoding::BASE64.decode(b64.as_bytes()).ok())
        .and_then(|json| serde_json::from_slice::<Issued>(&json).ok());
    (qchat_e2e::identity(&identity.user, &device), issued)
}

/// The relay's key packages as the devices to add.
fn candidates(add: Vec<DeviceKey>) -> Vec<Candidate> {
    add.into_iter()
        .map(|d| Candidate { identity: d.identity, signature_key: d.signature_key, key_package: d.key_package })
        .collect()
}

/// A change of a room's group in words (none if it only concerns this device): every
/// device that comes in is announced, so that one minted behind its person's back is seen.
fn news(by: &str, added: &[String], removed: &[String], me: &str) -> Option<String> {
    let told: Vec<String> = added
        .iter()
        .filter(|a| *a != me)
        .map(|a| format!("new device in the room's encryption: {a} (added by {by})"))
        .chain(removed.iter().filter(|r| *r != me).map(|r| format!("{r} is no longer in the room's encryption")))
        .collect();
    (!told.is_empty()).then(|| told.join("; "))
}

/// The end-to-end state of a running client.
pub struct Secure {
    /// Behind a lock only so that the client's state can be shared across threads (the
    /// store's connection is not `Sync`); one task uses it.
    device: Mutex<Device>,
    /// Rooms whose group held every member's device at the relay's last answer.
    ready: HashSet<String>,
    /// The rooms asked about on this connection, in order (the relay answers in order),
    /// each with its question's number.
    asked: VecDeque<(Option<String>, u64)>,
    /// Questions asked on this connection so far.
    questions: u64,
    /// Rooms whose group was put in doubt (a device joined, the members changed) and the
    /// number of the first question asked after: answers to earlier ones are out of date.
    doubted: std::collections::HashMap<String, u64>,
    /// Likewise for every room (a device joined or went somewhere).
    all_doubted: u64,
    /// Rooms with a commit of ours out, and the number of the question it answered.
    commit_asked: std::collections::HashMap<String, u64>,
    /// Rooms with a question or a commit out on this connection.
    busy: HashSet<Option<String>>,
    /// Rooms with a commit of ours out: no second one until the relay answers it (two
    /// questions about one room, by name and as the default room, can both be answered).
    committing: HashSet<String>,
}

impl Secure {
    pub fn open(dir: &StateDir, identity: &Identity) -> Result<Secure, String> {
        std::fs::create_dir_all(&dir.dir).map_err(|e| format!("cannot make {}: {e}", dir.dir.display()))?;
        let (name, issued) = device_identity(identity);
        let device = Device::open(&dir.dir.join("mls.db"), &name, issued.as_ref()).map_err(|e| e.to_string())?;
        let (ready, asked, busy, committing, doubted) = Default::default();
        Ok(Secure {
            device: Mutex::new(device),
            ready,
            asked,
            questions: 0,
            doubted,
            all_doubted: 0,
            commit_asked: Default::default(),
            busy,
            committing,
        })
    }

    fn device(&self) -> MutexGuard<'_, Device> {
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection: questions of the last one will not be answered, and the members
    /// may have changed while away.
    pub fn connected(&mut self) {
        self.ready.clear();
        self.asked.clear();
        self.doubted.clear();
        self.all_doubted = 0;
        self.questions = 0;
        self.commit_asked.clear();
        self.busy.clear();
        self.committing.clear();
    }

    pub fn is_ready(&self, room: &str) -> bool {
        self.ready.contains(room)
    }

    /// The room's members changed: check its group before the next message.
    pub fn unready(&mut self, room: &str) {
        self.ready.remove(room);
        // An answer on its way may predate the change: it does not make the room ready.
        self.doubted.insert(room.to_string(), self.questions);
    }

    /// Our commit in `room` is in force: the room is ready, unless its group was put in
    /// doubt after the commit was made (then the next message asks again).
    fn commit_in_force(&mut self, room: &str) {
        match self.commit_asked.remove(room) {
            Some(number) if !self.outdated(room, number) => {
                self.ready.insert(room.to_string());
            }
            _ => {}
        }
    }

    /// Whether question `number` was asked before `room`'s group was last put in doubt.
    fn outdated(&self, room: &str, number: u64) -> bool {
        number < self.all_doubted || self.doubted.get(room).is_some_and(|first| number < *first)
    }

    /// Every ready room that `pick` picks: check its group before the next message (and
    /// no answer on its way makes any room ready).
    pub fn unready_all(&mut self, pick: impl Fn(&str) -> bool) {
        self.all_doubted = self.questions;
        let picked: Vec<String> = self.ready.iter().filter(|room| pick(room)).cloned().collect();
        for room in picked {
            self.unready(&room);
        }
    }

    /// Key packages to top the relay's stock up with, when it holds `held`.
    pub fn publish(&mut self, held: u64) -> Option<ClientControl> {
        let want = KEY_PACKAGES_TARGET.saturating_sub(held as usize);
        if want == 0 {
            return None;
        }
        let mut device = self.device();
        let made = device.key_packages(want, true);
        let signature_key = device.signature_key().to_vec();
        match made {
            Ok(key_packages) => Some(ClientControl::PublishKeys { signature_key, key_packages }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot make key packages");
                None
            }
        }
    }

    /// The question that brings `room`'s group up to date, unless one is out already.
    pub fn ask(&mut self, room: Option<&str>) -> Option<ClientControl> {
        let key = room.map(str::to_string);
        if !self.busy.insert(key.clone()) {
            return None;
        }
        let have = match room {
            Some(room) => self.device().members(room).unwrap_or_default().into_iter().map(|(id, _)| id).collect(),
            None => Vec::new(),
        };
        self.asked.push_back((key.clone(), self.questions));
        self.questions += 1;
        Some(ClientControl::GroupState { room: key, have })
    }

    /// The relay's answer to the oldest question (key packages of devices to add, and every
    /// device that should be in the group): the target asked (none: the default room) and
    /// what to send now (a commit, if the group must change).
    pub fn answered(
        &mut self,
        room: &str,
        (epoch, behind): (u64, bool),
        group_info: Option<Vec<u8>>,
        (add, devices): (Vec<DeviceKey>, Vec<String>),
    ) -> (Option<String>, Result<Option<ClientControl>, String>) {
        let (target, number) = self.asked.pop_front().unwrap_or((None, u64::MAX));
        self.busy.remove(&target);
        let key = Some(room.to_string());
        if self.outdated(room, number) {
            // Asked before a device joined or the members changed: asked again next.
            return (target, Ok(None));
        }
        if self.committing.contains(room) || behind {
            // Our commit's answer comes first, or a commit on its way to us: the group is
            // looked at again after it.
            return (target, Ok(None));
        }
        let local = self.device().epoch(room).unwrap_or(None);
        // Only what is not so already: devices the group lacks, and ones it has.
        let present: Vec<String> =
            self.device().members(room).unwrap_or_default().into_iter().map(|(id, _)| id).collect();
        let add: Vec<DeviceKey> = add.into_iter().filter(|d| !present.contains(&d.identity)).collect();
        let remove: Vec<String> = present.iter().filter(|p| !devices.contains(p)).cloned().collect();
        tracing::debug!(%room, ?local, epoch, add = add.len(), remove = remove.len(), "what the room's group lacks");
        let made = match local {
            Some(local) if local == epoch && add.is_empty() && remove.is_empty() => {
                self.ready.insert(room.to_string());
                return (target, Ok(None));
            }
            // Behind: the commits that moved it on are on their way to us.
            Some(local) if local < epoch => return (target, Ok(None)),
            // Joining a group that exists, from its group info.
            None if epoch > 0 => match group_info {
                Some(info) => self.device().join(room, &info),
                None => return (target, Err("the room's encryption group is not ready yet".into())),
            },
            // In the group, or making it: add and remove what the room's members need.
            _ => self.device().change(room, &candidates(add), &remove),
        };
        match made {
            Ok(commit) => {
                for (who, why) in &commit.rejected {
                    tracing::warn!(device = %who, reason = %why, "a device's key package was refused");
                }
                self.busy.insert(key);
                self.committing.insert(room.to_string());
                self.commit_asked.insert(room.to_string(), number);
                let frame = ClientControl::Commit {
                    room: room.to_string(),
                    epoch: commit.epoch,
                    commit: commit.commit,
                    welcome: commit.welcome,
                };
                (target, Ok(Some(frame)))
            }
            Err(e) => (target, Err(format!("cannot encrypt for {room}: {e}"))),
        }
    }

    /// The relay refused the oldest question: the target asked.
    pub fn refused_question(&mut self) -> Option<String> {
        let (target, _) = self.asked.pop_front().unwrap_or_default();
        self.busy.remove(&target);
        target
    }

    /// The relay took our commit in `room`: the group is up to date, and the relay gets
    /// its group info for devices that join by themselves. Also what to tell our user of
    /// the devices it brought in or took out.
    pub fn committed(&mut self, room: &str) -> (Option<ClientControl>, Option<String>) {
        self.busy.remove(&Some(room.to_string()));
        self.committing.remove(room);
        let changed = self.device().confirm(room);
        let (added, removed) = match changed {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot put our commit in force");
                return (None, None);
            }
        };
        self.commit_in_force(room);
        let me = self.device().identity().to_string();
        (self.group_info(room), news("this device", &added, &removed, &me))
    }

    fn group_info(&self, room: &str) -> Option<ClientControl> {
        let (epoch, group_info) = self.device().group_info(room).ok()?;
        Some(ClientControl::GroupInfo { room: room.to_string(), epoch, group_info })
    }

    /// The relay did not take our commit in `room`: ask again once the winner arrives.
    pub fn commit_refused(&mut self, room: &str) {
        if let Err(e) = self.device().refused(room) {
            tracing::warn!(error = %e, "cannot drop a refused commit");
        }
        self.busy.remove(&Some(room.to_string()));
        self.committing.remove(room);
        self.commit_asked.remove(room);
    }

    /// Seals each of `contents` for `room`, in order, in one go.
    pub fn seal_all(&mut self, room: &str, contents: &[&Content]) -> Result<Vec<Vec<u8>>, String> {
        let bytes: Vec<Vec<u8>> = contents.iter().map(|c| c.to_bytes()).collect();
        let plaintexts: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        self.device().seal_all(room, &plaintexts).map_err(|e| e.to_string())
    }

    /// The file offer kept for `file_id`.
    pub fn file_offer(&self, file_id: FileId) -> Option<FileOffer> {
        let bytes = self.device().secret(&file_id.0).ok().flatten()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keeps a file offer (its key) for the download, or for our own listing.
    pub fn keep_offer(&self, offer: &FileOffer) {
        let bytes = serde_json::to_vec(offer).unwrap_or_default();
        if let Err(e) = self.device().keep_secret(&offer.file_id.0, &bytes) {
            tracing::warn!(error = %e, "cannot keep a file's key");
        }
    }

    /// Opens one delivered event (once; the same answer if it comes again) and says what
    /// to send the relay after it. `room` is the room as we know it, if we do.
    pub fn read(&mut self, d: &Deliver, room: Option<&RoomInfo>) -> (Reading, Vec<ClientControl>) {
        let may_join = |user: &str| room.is_none_or(|r| r.has(user) || user == d.from);
        let opened = match &d.body {
            Body::Text(text) => return (Reading::Text(text.clone()), Vec::new()),
            Body::Sealed(sealed) => self.device().receive(&d.room, d.room_seq, Incoming::Message(sealed), &may_join),
            Body::Commit { commit, welcome, .. } => {
                let incoming = Incoming::Commit { commit, welcome: welcome.as_deref() };
                self.device().receive(&d.room, d.room_seq, incoming, &may_join)
            }
            _ => {
                self.unready(&d.room);
                return (Reading::Change, Vec::new());
            }
        };
        self.interpret(d, opened.map_err(|e| e.to_string()))
    }

    /// Opens deliveries in order, as [`Secure::read`] opens each; a run of sealed messages
    /// of one room is opened in one go (one group load and one commit for a burst).
    pub fn read_all<'r>(
        &mut self,
        deliveries: &[Deliver],
        room_of: impl Fn(&str) -> Option<&'r RoomInfo>,
    ) -> Vec<(Reading, Vec<ClientControl>)> {
        let mut read = Vec::with_capacity(deliveries.len());
        let mut rest = deliveries;
        while let Some(first) = rest.first() {
            let run = rest.iter().take_while(|d| matches!(d.body, Body::Sealed(_)) && d.room == first.room).count();
            if run < 2 {
                read.push(self.read(first, room_of(&first.room)));
                rest = &rest[1..];
                continue;
            }
            let (batch, after) = rest.split_at(run);
            let messages: Vec<(u64, &[u8])> = batch
                .iter()
                .filter_map(|d| match &d.body {
                    Body::Sealed(sealed) => Some((d.room_seq, sealed.as_slice())),
                    _ => None,
                })
                .collect();
            let opened = self.device().receive_messages(&first.room, &messages);
            match opened {
                Ok(opened) => read.extend(batch.iter().zip(opened).map(|(d, o)| self.interpret(d, Ok(o)))),
                Err(e) => read.extend(batch.iter().map(|d| self.interpret(d, Err(e.to_string())))),
            }
            rest = after;
        }
        read
    }

    /// What an opened event means for the user, and what to tell the relay after it.
    fn interpret(&mut self, d: &Deliver, opened: Result<Opened, String>) -> (Reading, Vec<ClientControl>) {
        tracing::debug!(room = %d.room, room_seq = d.room_seq, outcome = ?opened.as_ref().map(|o| match o {
            Opened::Message { .. } => "message".to_string(),
            other => format!("{other:?}"),
        }), "opened");
        let opened = match opened {
            Ok(opened) => opened,
            Err(e) => {
                return (Reading::Notice(format!("this device could not open an event of {}: {e}", d.room)), Vec::new())
            }
        };
        let room_key = Some(d.room.clone());
        match opened {
            Opened::Message { sender, plaintext } => {
                if qchat_e2e::user_of(&sender) != d.from {
                    let reason =
                        format!("a message the relay says is from {} is signed by {sender}: not shown", d.from);
                    return (Reading::Notice(reason), Vec::new());
                }
                match Content::from_bytes(&plaintext) {
                    Some(Content::Text(text)) => (Reading::Text(text), Vec::new()),
                    Some(Content::File(offer)) => {
                        self.keep_offer(&offer);
                        (Reading::File(offer), Vec::new())
                    }
                    None => {
                        (Reading::Notice(format!("{} sent something this version cannot show", d.from)), Vec::new())
                    }
                }
            }
            Opened::Unreadable { reason } if d.body.is_message() => {
                (Reading::Notice(format!("{} wrote a message this device cannot read: {reason}", d.from)), Vec::new())
            }
            Opened::Unreadable { reason } => {
                self.busy.remove(&room_key);
                self.committing.remove(&d.room);
                self.unready(&d.room);
                if reason.contains("not a member") {
                    (Reading::Notice(reason), Vec::new())
                } else {
                    (Reading::Silent, Vec::new())
                }
            }
            Opened::Confirmed { added, removed } => {
                // In force already if the relay's answer came first (then it was told).
                let first = !added.is_empty() || !removed.is_empty();
                self.busy.remove(&room_key);
                self.committing.remove(&d.room);
                self.commit_in_force(&d.room);
                let info = if first { self.group_info(&d.room) } else { None };
                let me = self.device().identity().to_string();
                let reading = news("this device", &added, &removed, &me).map_or(Reading::Silent, Reading::Notice);
                (reading, info.into_iter().collect())
            }
            Opened::Changed { by, added, removed } => {
                self.busy.remove(&room_key);
                self.committing.remove(&d.room);
                self.unready(&d.room);
                let me = self.device().identity().to_string();
                (news(&by, &added, &removed, &me).map_or(Reading::Silent, Reading::Notice), Vec::new())
            }
            Opened::Joined { .. } => {
                self.unready(&d.room);
                (Reading::Silent, Vec::new())
            }
        }
    }

    /// The safety number of this person and `user` from the devices in `room`'s group
    /// (a room both are in: their direct room), and the devices it covers.
    pub fn safety_number(&self, me: &str, user: &str, room: &str) -> Option<(String, Vec<String>)> {
        let members = self.device().members(room).ok()?;
        let keys_of = |who: &str| -> Vec<Vec<u8>> {
            members.iter().filter(|(id, _)| qchat_e2e::user_of(id) == who).map(|(_, key)| key.clone()).collect()
        };
        let (mine, theirs) = (keys_of(me), keys_of(user));
        if theirs.is_empty() {
            return None;
        }
        let devices = members
            .iter()
            .filter(|(id, _)| [me, user].contains(&qchat_e2e::user_of(id)))
            .map(|(id, key)| format!("{id} {}", qchat_e2e::safety::fingerprint(key)))
            .collect();
        Some((qchat_e2e::safety::safety_number((me, &mine), (user, &theirs)), devices))
    }
}
