//! Rooms as MLS groups: making and changing a room's group (one commit at a time, in the
//! order the relay accepts them), joining from a Welcome or from the room's GroupInfo, and
//! opening each room event once, however often it is delivered.

use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::*;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use tls_codec::Deserialize as _;

use crate::device::{check_key_package, Device};
use crate::provider::Provider;
use crate::{mls, user_of, E2eError, CIPHERSUITE};

/// Epochs whose keys a member keeps, for messages written just before a commit that the
/// relay ordered after it.
const PAST_EPOCHS: usize = 8;

/// A device to add to a room's group, as the relay gave it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub identity: String,
    /// Its signing key as the relay knows it: the key package must carry this one.
    pub signature_key: Vec<u8>,
    pub key_package: Vec<u8>,
}

/// A commit this device made, for the relay to order: it takes effect for this device
/// when the relay delivers it back (see [`Device::receive`]).
#[derive(Debug, Clone)]
pub struct Commit {
    /// The epoch it moves the group on from.
    pub epoch: u64,
    pub commit: Vec<u8>,
    /// For the devices it adds.
    pub welcome: Option<Vec<u8>>,
    /// The devices it adds.
    pub added: Vec<String>,
    /// Devices left out, and why (a key package that did not check out).
    pub rejected: Vec<(String, String)>,
}

/// A room event for the group, as the relay delivered it.
#[derive(Debug, Clone, Copy)]
pub enum Incoming<'a> {
    /// An application message.
    Message(&'a [u8]),
    /// A commit, with the Welcome for the devices it adds.
    Commit { commit: &'a [u8], welcome: Option<&'a [u8]> },
}

/// What a room event was, once opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Opened {
    /// A message and the device that wrote it (`user/device`).
    Message { sender: String, plaintext: Vec<u8> },
    /// Another device's commit, now in force: the devices it added and removed.
    Changed { by: String, added: Vec<String>, removed: Vec<String> },
    /// This device joined the room's group, added by `by`.
    Joined { by: String, members: Vec<String> },
    /// This device's own commit, now in force.
    Confirmed { added: Vec<String>, removed: Vec<String> },
    /// Not readable here, and why (sent before this device was in the group, not meant for
    /// it, or refused).
    Unreadable { reason: String },
}

fn group_id(room: &str) -> GroupId {
    GroupId::from_slice(room.as_bytes())
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder().use_ratchet_tree_extension(true).max_past_epochs(PAST_EPOCHS).build()
}

fn identity_of(credential: &Credential) -> String {
    BasicCredential::try_from(credential.clone())
        .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
        .unwrap_or_default()
}

fn to_message(bytes: &[u8]) -> Result<MlsMessageIn, String> {
    MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| format!("malformed MLS message: {e}"))
}

/// The group's members (identity and signing key).
/// Keeps what event `room_seq` of `room` opened to (it is answered the same if it comes again).
fn keep_opened(tx: &rusqlite::Transaction<'_>, room: &str, room_seq: u64, opened: &Opened) -> Result<(), E2eError> {
    let outcome = serde_json::to_string(opened).map_err(|e| E2eError::Store(e.to_string()))?;
    tx.prepare_cached("INSERT INTO qchat_opened (room, room_seq, outcome) VALUES (?1, ?2, ?3)")?.execute(params![
        room,
        room_seq as i64,
        outcome
    ])?;
    Ok(())
}

fn members_of(group: &MlsGroup) -> Vec<(String, Vec<u8>)> {
    group.members().map(|m| (identity_of(&m.credential), m.signature_key)).collect()
}

impl Device {
    fn load(&self, provider: &Provider<'_>, room: &str) -> Result<Option<MlsGroup>, E2eError> {
        MlsGroup::load(provider.storage(), &group_id(room)).map_err(mls)
    }

    fn active(&self, provider: &Provider<'_>, room: &str) -> Result<Option<MlsGroup>, E2eError> {
        Ok(self.load(provider, room)?.filter(MlsGroup::is_active))
    }

    /// Forgets the room's group (removed from it, or out of step with the others).
    fn drop_group(&self, provider: &Provider<'_>, room: &str) -> Result<(), E2eError> {
        if let Some(mut group) = self.load(provider, room)? {
            group.delete(provider.storage()).map_err(mls)?;
        }
        Ok(())
    }

    /// The room's group epoch on this device, if it is in the group.
    pub fn epoch(&self, room: &str) -> Result<Option<u64>, E2eError> {
        let provider = Provider::new(&self.crypto, &self.connection);
        Ok(self.active(&provider, room)?.map(|g| g.epoch().as_u64()))
    }

    /// The devices in the room's group (identity and signing key), this one included.
    pub fn members(&self, room: &str) -> Result<Vec<(String, Vec<u8>)>, E2eError> {
        let provider = Provider::new(&self.crypto, &self.connection);
        Ok(self.active(&provider, room)?.map(|g| members_of(&g)).unwrap_or_default())
    }

    /// Whether a commit of this device waits for the relay in `room`.
    pub fn has_pending(&self, room: &str) -> Result<bool, E2eError> {
        Ok(self
            .connection
            .query_row("SELECT 1 FROM qchat_pending WHERE room = ?1 AND merged = 0", [room], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Makes a commit that adds `add` and removes `remove` (identities) in the room's
    /// group, making the group first if this device has none. The group moves on only
    /// when the relay delivers the commit back; [`Device::refused`] drops it.
    pub fn change(&mut self, room: &str, add: &[Candidate], remove: &[String]) -> Result<Commit, E2eError> {
        self.loaded.remove(room);
        let tx = self.connection.unchecked_transaction()?;
        let provider = Provider::new(&self.crypto, &tx);
        let (mut group, provisional) = match self.active(&provider, room)? {
            Some(group) => (group, false),
            None => {
                self.drop_group(&provider, room)?;
                let config = MlsGroupCreateConfig::builder()
                    .ciphersuite(CIPHERSUITE)
                    .use_ratchet_tree_extension(true)
                    .max_past_epochs(PAST_EPOCHS)
                    .build();
                let group =
                    MlsGroup::new_with_group_id(&provider, &self.signer, &config, group_id(room), self.credential())
                        .map_err(mls)?;
                (group, true)
            }
        };
        if group.pending_commit().is_some() {
            group.clear_pending_commit(provider.storage()).map_err(mls)?;
        }
        let present: Vec<(String, Vec<u8>)> = members_of(&group);
        let (mut packages, mut added, mut rejected) = (Vec::new(), Vec::new(), Vec::new());
        for candidate in add {
            if present.iter().any(|(identity, _)| identity == &candidate.identity) {
                continue;
            }
            match check_key_package(&self.crypto, &candidate.key_package, &candidate.identity, &candidate.signature_key)
            {
                Ok(package) => {
                    packages.push(package);
                    added.push(candidate.identity.clone());
                }
                Err(reason) => rejected.push((candidate.identity.clone(), reason)),
            }
        }
        let removed: Vec<LeafNodeIndex> = group
            .members()
            .filter(|m| identity_of(&m.credential) != self.identity && remove.contains(&identity_of(&m.credential)))
            .map(|m| m.index)
            .collect();
        let nothing = packages.is_empty() && removed.is_empty();
        let epoch = group.epoch().as_u64();
        let bundle = group
            .commit_builder()
            .propose_adds(packages)
            .propose_removals(removed)
            .force_self_update(nothing)
            .load_psks(provider.storage())
            .map_err(mls)?
            .build(provider.rand(), provider.crypto(), &self.signer, |_| true)
            .map_err(mls)?
            .stage_commit(&provider)
            .map_err(mls)?;
        let (commit, welcome, _) = bundle.into_messages();
        let commit = commit.to_bytes().map_err(mls)?;
        let welcome = welcome.map(|w| w.to_bytes()).transpose().map_err(mls)?;
        tx.execute(
            "INSERT OR REPLACE INTO qchat_pending (room, commit_bytes, provisional) VALUES (?1, ?2, ?3)",
            params![room, commit, provisional],
        )?;
        tx.commit()?;
        Ok(Commit { epoch, commit, welcome, added, rejected })
    }

    /// Makes a commit that brings this device into the room's group from the group's
    /// `group_info` (which the relay keeps), for a member's device nobody added.
    pub fn join(&mut self, room: &str, group_info: &[u8]) -> Result<Commit, E2eError> {
        self.loaded.remove(room);
        let MlsMessageBodyIn::GroupInfo(info) = to_message(group_info).map_err(E2eError::Refused)?.extract() else {
            return Err(E2eError::Refused("the relay's group info is not one".into()));
        };
        let info: VerifiableGroupInfo = info;
        if info.group_id() != &group_id(room) {
            return Err(E2eError::Refused("the relay gave the group info of another room".into()));
        }
        let tx = self.connection.unchecked_transaction()?;
        let provider = Provider::new(&self.crypto, &tx);
        self.drop_group(&provider, room)?;
        let epoch = info.epoch().as_u64();
        let (_group, bundle) = MlsGroup::external_commit_builder()
            .with_config(join_config())
            .build_group(&provider, info, self.credential())
            .map_err(mls)?
            .load_psks(provider.storage())
            .map_err(mls)?
            .build(provider.rand(), provider.crypto(), &self.signer, |_| true)
            .map_err(mls)?
            .finalize(&provider)
            .map_err(mls)?;
        let commit = bundle.into_commit().to_bytes().map_err(mls)?;
        tx.execute(
            "INSERT OR REPLACE INTO qchat_pending (room, commit_bytes, provisional) VALUES (?1, ?2, 1)",
            params![room, commit],
        )?;
        tx.commit()?;
        Ok(Commit { epoch, commit, welcome: None, added: vec![self.identity.clone()], rejected: Vec::new() })
    }

    /// The relay took this device's pending commit in `room`: it is in force at once (the
    /// relay's delivery of it, later, is then only confirmed). What it added and removed.
    pub fn confirm(&mut self, room: &str) -> Result<(Vec<String>, Vec<String>), E2eError> {
        self.loaded.remove(room);
        let tx = self.connection.unchecked_transaction()?;
        let provider = Provider::new(&self.crypto, &tx);
        let merged = self.merge_pending(&provider, room)?;
        tx.execute("UPDATE qchat_pending SET merged = 1 WHERE room = ?1", [room])?;
        tx.commit()?;
        Ok(merged)
    }

    fn merge_pending(&self, provider: &Provider<'_>, room: &str) -> Result<(Vec<String>, Vec<String>), E2eError> {
        let mut group = self.load(provider, room)?.ok_or(E2eError::NotInGroup)?;
        let Some(staged) = group.pending_commit() else { return Ok((Vec::new(), Vec::new())) };
        let changed = changes(&group, staged);
        group.merge_pending_commit(provider).map_err(mls)?;
        Ok(changed)
    }

    /// The relay did not take this device's pending commit in `room` (another came first):
    /// it is dropped, with a group that only it would have made.
    pub fn refused(&mut self, room: &str) -> Result<(), E2eError> {
        self.loaded.remove(room);
        let tx = self.connection.unchecked_transaction()?;
        let provider = Provider::new(&self.crypto, &tx);
        self.drop_pending(&provider, room)?;
        tx.commit()?;
        Ok(())
    }

    fn drop_pending(&self, provider: &Provider<'_>, room: &str) -> Result<(), E2eError> {
        let pending: Option<bool> = self
            .connection
            .query_row("SELECT provisional FROM qchat_pending WHERE room = ?1", [room], |r| r.get(0))
            .optional()?;
        match pending {
            Some(true) => self.drop_group(provider, room)?,
            Some(false) => {
                if let Some(mut group) = self.load(provider, room)? {
                    group.clear_pending_commit(provider.storage()).map_err(mls)?;
                }
            }
            None => {}
        }
        self.connection.execute("DELETE FROM qchat_pending WHERE room = ?1", [room])?;
        Ok(())
    }

    /// The room's group info as this device sees it, for the relay to hand to devices that
    /// join by themselves.
    pub fn group_info(&self, room: &str) -> Result<(u64, Vec<u8>), E2eError> {
        let provider = Provider::new(&self.crypto, &self.connection);
        let group = self.active(&provider, room)?.ok_or(E2eError::NotInGroup)?;
        let info = group.export_group_info(provider.crypto(), &self.signer, true).map_err(mls)?;
        Ok((group.epoch().as_u64(), info.to_bytes().map_err(mls)?))
    }

    /// Encrypts `plaintext` for the room's group.
    pub fn seal(&mut self, room: &str, plaintext: &[u8]) -> Result<Vec<u8>, E2eError> {
        let mut sealed = self.seal_all(room, &[plaintext])?;
        Ok(sealed.pop().unwrap_or_default())
    }

    /// Encrypts each of `plaintexts` for the room's group, in order: the group is loaded
    /// once and its ratchet written in one transaction (a burst of messages costs one
    /// load and one commit, not one each).
    pub fn seal_all(&mut self, room: &str, plaintexts: &[&[u8]]) -> Result<Vec<Vec<u8>>, E2eError> {
        let kept = self.loaded.remove(room);
        let tx = self.connection.unchecked_transaction()?;
        let provider = Provider::new(&self.crypto, &tx);
        let mut group = match kept {
            Some(group) => group,
            None => self.active(&provider, room)?.ok_or(E2eError::NotInGroup)?,
        };
        let sealed = plaintexts
            .iter()
            .map(|plaintext| {
                group.create_message(&provider, &self.signer, plaintext).map_err(mls)?.to_bytes().map_err(mls)
            })
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        self.loaded.insert(room.to_string(), group);
        Ok(sealed)
    }

    /// Opens event `room_seq` of `room`: once, in the room's order; the same answer again
    /// if it comes again. `may_join(user)` says whether `user` is a member of the room at
    /// this event: a commit that brings in a device of anyone else is refused (and this
    /// device leaves the group rather than follow it).
    pub fn receive(
        &mut self,
        room: &str,
        room_seq: u64,
        incoming: Incoming<'_>,
        may_join: &dyn Fn(&str) -> bool,
    ) -> Result<Opened, E2eError> {
        match incoming {
            // (It looks for an answer given before itself.)
            Incoming::Message(bytes) => Ok(self.receive_messages(room, &[(room_seq, bytes)])?.remove(0)),
            Incoming::Commit { commit, welcome } => {
                if let Some(cached) = self.opened_before(room, room_seq)? {
                    return Ok(cached);
                }
                self.loaded.remove(room);
                let tx = self.connection.unchecked_transaction()?;
                let provider = Provider::new(&self.crypto, &tx);
                let opened = self.open_commit(&provider, room, (commit, welcome), may_join)?;
                keep_opened(&tx, room, room_seq, &opened)?;
                tx.commit()?;
                Ok(opened)
            }
        }
    }

    /// Opens application messages of one room, `(room_seq, bytes)` in the room's order, as
    /// [`Device::receive`] opens each, but in one transaction with the group loaded once
    /// (a burst costs one load and one commit, not one each).
    pub fn receive_messages(&mut self, room: &str, messages: &[(u64, &[u8])]) -> Result<Vec<Opened>, E2eError> {
        let kept = self.loaded.remove(room);
        let tx = self.connection.unchecked_transaction()?;
        let provider = Provider::new(&self.crypto, &tx);
        let mut group = match kept {
            Some(group) => Some(group),
            None => self.active(&provider, room)?,
        };
        let mut opened = Vec::with_capacity(messages.len());
        for &(room_seq, bytes) in messages {
            if let Some(cached) = self.opened_before(room, room_seq)? {
                opened.push(cached);
                continue;
            }
            let outcome = self.open_message(&provider, &mut group, bytes);
            if matches!(outcome, Opened::Unreadable { .. }) {
                // What a failed message left in memory is not trusted: the store's is.
                group = self.active(&provider, room)?;
            }
            keep_opened(&tx, room, room_seq, &outcome)?;
            opened.push(outcome);
        }
        tx.commit()?;
        if let Some(group) = group {
            self.loaded.insert(room.to_string(), group);
        }
        Ok(opened)
    }

    /// What event `room_seq` of `room` opened to, if it was opened before.
    fn opened_before(&self, room: &str, room_seq: u64) -> Result<Option<Opened>, E2eError> {
        let cached: Option<String> = self
            .connection
            .prepare_cached("SELECT outcome FROM qchat_opened WHERE room = ?1 AND room_seq = ?2")?
            .query_row(params![room, room_seq as i64], |r| r.get(0))
            .optional()?;
        cached.map(|c| serde_json::from_str(&c).map_err(|e| E2eError::Store(e.to_string()))).transpose()
    }

    /// Opens one application message with the room's group (none: this device is not in it).
    fn open_message(&self, provider: &Provider<'_>, group: &mut Option<MlsGroup>, bytes: &[u8]) -> Opened {
        let unreadable = |reason: &str| Opened::Unreadable { reason: reason.to_string() };
        let Some(group) = group.as_mut() else {
            return unreadable("sent before this device was in the room's encryption group");
        };
        let message = match to_message(bytes).map(MlsMessageIn::try_into_protocol_message) {
            Ok(Ok(message)) => message,
            _ => return unreadable("not an MLS message"),
        };
        match group.process_message(provider, message) {
            Ok(processed) => {
                let sender = identity_of(processed.credential());
                match processed.into_content() {
                    ProcessedMessageContent::ApplicationMessage(app) => {
                        Opened::Message { sender, plaintext: app.into_bytes() }
                    }
                    _ => unreadable("a group message that is not a chat message"),
                }
            }
            Err(e) => Opened::Unreadable { reason: format!("it does not decrypt on this device ({e:?})") },
        }
    }

    fn open_commit(
        &self,
        provider: &Provider<'_>,
        room: &str,
        (commit, welcome): (&[u8], Option<&[u8]>),
        may_join: &dyn Fn(&str) -> bool,
    ) -> Result<Opened, E2eError> {
        let pending: Option<(Vec<u8>, bool)> = self
            .connection
            .query_row("SELECT commit_bytes, merged FROM qchat_pending WHERE room = ?1", [room], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        match pending {
            Some((ours, merged)) if ours == commit => {
                let (added, removed) =
                    if merged { (Vec::new(), Vec::new()) } else { self.merge_pending(provider, room)? };
                self.connection.execute("DELETE FROM qchat_pending WHERE room = ?1", [room])?;
                return Ok(Opened::Confirmed { added, removed });
            }
            // Ours is in force already; this one is the next.
            Some((_, true)) => {
                self.connection.execute("DELETE FROM qchat_pending WHERE room = ?1", [room])?;
            }
            // Another commit came first: ours is void.
            Some((_, false)) => self.drop_pending(provider, room)?,
            None => {}
        }
        match self.active(provider, room)? {
            Some(mut group) => {
                let message = match to_message(commit).map(MlsMessageIn::try_into_protocol_message) {
                    Ok(Ok(message)) => message,
                    _ => return Ok(Opened::Unreadable { reason: "not an MLS commit".into() }),
                };
                let processed = match group.process_message(provider, message) {
                    Ok(processed) => processed,
                    Err(e) => {
                        // Out of step with the others: leave the group, join again later.
                        self.drop_group(provider, room)?;
                        return Ok(Opened::Unreadable {
                            reason: format!("a change this device could not follow ({e:?})"),
                        });
                    }
                };
                let by = identity_of(processed.credential());
                let external = matches!(processed.sender(), Sender::NewMemberCommit);
                let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
                    return Ok(Opened::Unreadable { reason: "not an MLS commit".into() });
                };
                let (mut added, removed) = changes(&group, &staged);
                if external {
                    added.push(by.clone());
                }
                if let Some(stranger) = added.iter().find(|identity| !may_join(user_of(identity))) {
                    self.drop_group(provider, room)?;
                    return Ok(Opened::Unreadable {
                        reason: format!(
                            "a change brought in {stranger}, who is not a member: this device left the room's group"
                        ),
                    });
                }
                group.merge_staged_commit(provider, *staged).map_err(mls)?;
                Ok(Opened::Changed { by, added, removed })
            }
            None => {
                let Some(welcome) = welcome else {
                    return Ok(Opened::Unreadable { reason: "a change of a group this device is not in".into() });
                };
                let MlsMessageBodyIn::Welcome(welcome) = to_message(welcome).map_err(E2eError::Refused)?.extract()
                else {
                    return Ok(Opened::Unreadable { reason: "not an MLS welcome".into() });
                };
                self.drop_group(provider, room)?;
                let staged = match StagedWelcome::new_from_welcome(provider, &join_config(), welcome, None) {
                    Ok(staged) => staged,
                    Err(e) => {
                        return Ok(Opened::Unreadable { reason: format!("a welcome not for this device ({e:?})") })
                    }
                };
                let by = staged.welcome_sender().map(|s| identity_of(s.credential())).unwrap_or_default();
                let members: Vec<String> = staged.members().map(|m| identity_of(&m.credential)).collect();
                if let Some(stranger) = members.iter().find(|identity| !may_join(user_of(identity))) {
                    return Ok(Opened::Unreadable {
                        reason: format!("a welcome to a group with {stranger}, who is not a member: refused"),
                    });
                }
                staged.into_group(provider).map_err(mls)?;
                Ok(Opened::Joined { by, members })
            }
        }
    }
}

/// The identities a staged commit adds and removes.
fn changes(group: &MlsGroup, staged: &StagedCommit) -> (Vec<String>, Vec<String>) {
    let added =
        staged.add_proposals().map(|p| identity_of(p.add_proposal().key_package().leaf_node().credential())).collect();
    let removed = staged
        .remove_proposals()
        .filter_map(|p| group.member(p.remove_proposal().removed()).map(identity_of))
        .collect();
    (added, removed)
}
