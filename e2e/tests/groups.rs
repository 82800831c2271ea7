//! Rooms as MLS groups across real device stores: adding, removing, joining by oneself,
//! competing commits, and what a removed member or a stranger can read.

use qchat_e2e::{Candidate, Commit, Device, Incoming, Issued, Opened};

struct Relay {
    seq: u64,
}

impl Relay {
    /// Delivers one commit to every device, in the room's order.
    fn commit(&mut self, room: &str, commit: &Commit, devices: &mut [&mut Device], members: &[&str]) -> Vec<Opened> {
        self.seq += 1;
        let incoming = Incoming::Commit { commit: &commit.commit, welcome: commit.welcome.as_deref() };
        devices.iter_mut().map(|d| d.receive(room, self.seq, incoming, &|u| members.contains(&u)).unwrap()).collect()
    }

    fn message(&mut self, room: &str, bytes: &[u8], devices: &mut [&mut Device]) -> Vec<Opened> {
        self.seq += 1;
        devices.iter_mut().map(|d| d.receive(room, self.seq, Incoming::Message(bytes), &|_| true).unwrap()).collect()
    }
}

fn device(dir: &tempfile::TempDir, identity: &str) -> Device {
    let file = dir.path().join(format!("{}.db", identity.replace('/', "_")));
    Device::open(&file, identity, None).unwrap()
}

fn candidate(device: &mut Device) -> Candidate {
    Candidate {
        identity: device.identity().to_string(),
        signature_key: device.signature_key().to_vec(),
        key_package: device.key_packages(1, false).unwrap().remove(0),
    }
}

/// Alice and bob with the group of room `pair` made and joined.
fn pair(dir: &tempfile::TempDir) -> (Device, Device, Relay) {
    let mut alice = device(dir, "alice/laptop");
    let mut bob = device(dir, "bob/main");
    let mut relay = Relay { seq: 0 };
    let first = alice.change("pair", &[candidate(&mut bob)], &[]).unwrap();
    relay.commit("pair", &first, &mut [&mut alice, &mut bob], &["alice", "bob"]);
    (alice, bob, relay)
}

fn text(opened: &Opened) -> Option<&[u8]> {
    match opened {
        Opened::Message { plaintext, .. } => Some(plaintext),
        _ => None,
    }
}

#[test]
fn members_read_a_removed_member_cannot_and_a_device_can_join_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut alice = device(&dir, "alice/laptop");
    let issued = Issued::make("bob/main").unwrap();
    let mut bob = Device::open(&dir.path().join("bob.db"), "bob/main", Some(&issued)).unwrap();
    let mut carol = device(&dir, "carol/pc");
    let mut relay = Relay { seq: 0 };
    let everyone = ["alice", "bob", "carol"];

    // Bob has never run: the relay serves the key package made with his identity.
    let bob_candidate = Candidate {
        identity: "bob/main".into(),
        signature_key: issued.signature_key().to_vec(),
        key_package: issued.key_package.clone(),
    };
    let made = alice.change("team", &[bob_candidate, candidate(&mut carol)], &[]).unwrap();
    assert_eq!(made.added, ["bob/main", "carol/pc"]);
    assert_eq!(alice.epoch("team").unwrap(), Some(0), "in force only once the relay delivers it");
    let opened = relay.commit("team", &made, &mut [&mut alice, &mut bob, &mut carol], &everyone);
    assert!(matches!(&opened[0], Opened::Confirmed { added, .. } if added.len() == 2));
    assert!(matches!(&opened[1], Opened::Joined { by, .. } if by == "alice/laptop"));
    assert!(matches!(&opened[2], Opened::Joined { .. }));
    assert_eq!(bob.epoch("team").unwrap(), Some(1));

    let hello = alice.seal("team", b"hello team").unwrap();
    assert!(!hello.windows(5).any(|w| w == b"hello"), "the relay carries no plaintext");
    let opened = relay.message("team", &hello, &mut [&mut bob, &mut carol]);
    assert_eq!(text(&opened[0]), Some(&b"hello team"[..]));
    assert!(matches!(&opened[1], Opened::Message { sender, .. } if sender == "alice/laptop"));
    // Delivered again (a reconnect before the acknowledgement): the same answer.
    let again = bob.receive("team", relay.seq, Incoming::Message(&hello), &|_| true).unwrap();
    assert_eq!(text(&again), Some(&b"hello team"[..]));

    let removal = alice.change("team", &[], &["carol/pc".to_string()]).unwrap();
    let opened = relay.commit("team", &removal, &mut [&mut alice, &mut bob, &mut carol], &["alice", "bob"]);
    assert!(matches!(&opened[1], Opened::Changed { removed, .. } if removed == &["carol/pc".to_string()]));
    assert_eq!(carol.epoch("team").unwrap(), None, "carol is out of the group");
    let secret = alice.seal("team", b"after carol left").unwrap();
    let opened = relay.message("team", &secret, &mut [&mut bob, &mut carol]);
    assert_eq!(text(&opened[0]), Some(&b"after carol left"[..]));
    assert!(matches!(&opened[1], Opened::Unreadable { .. }), "a removed member cannot read: {:?}", opened[1]);

    // Alice's new phone joins by itself from the group info the relay keeps.
    let mut phone = device(&dir, "alice/phone");
    let (epoch, info) = alice.group_info("team").unwrap();
    let join = phone.join("team", &info).unwrap();
    assert_eq!(join.epoch, epoch);
    let opened = relay.commit("team", &join, &mut [&mut alice, &mut bob, &mut phone], &["alice", "bob"]);
    assert!(matches!(&opened[0], Opened::Changed { added, .. } if added == &["alice/phone".to_string()]));
    assert!(matches!(&opened[2], Opened::Confirmed { .. }));
    let from_phone = phone.seal("team", b"from the phone").unwrap();
    assert_eq!(text(&relay.message("team", &from_phone, &mut [&mut bob])[0]), Some(&b"from the phone"[..]));

    // Someone who is not a member cannot sneak in: bob refuses and leaves the group.
    let mut mallory = device(&dir, "mallory/x");
    let (_, info) = alice.group_info("team").unwrap();
    let sneak = mallory.join("team", &info).unwrap();
    let opened = relay.commit("team", &sneak, &mut [&mut bob], &["alice", "bob"]);
    assert!(matches!(&opened[0], Opened::Unreadable { reason } if reason.contains("mallory")));
    assert_eq!(bob.epoch("team").unwrap(), None);
}

#[test]
fn of_two_commits_from_one_epoch_the_relay_s_first_wins_and_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob, mut relay) = pair(&dir);

    // Both change the group from the same epoch; the relay orders alice's first.
    let mut carol = device(&dir, "carol/pc");
    let from_alice = alice.change("pair", &[candidate(&mut carol)], &[]).unwrap();
    let from_bob = bob.change("pair", &[], &[]).unwrap();
    assert_eq!(from_alice.epoch, from_bob.epoch);
    assert!(bob.has_pending("pair").unwrap());
    let opened = relay.commit("pair", &from_alice, &mut [&mut alice, &mut bob, &mut carol], &["alice", "bob", "carol"]);
    assert!(matches!(&opened[1], Opened::Changed { added, .. } if added == &["carol/pc".to_string()]));
    assert!(!bob.has_pending("pair").unwrap(), "bob's commit is void");
    assert_eq!(bob.epoch("pair").unwrap(), alice.epoch("pair").unwrap());

    // A commit the relay refused outright is dropped too, and the group goes on.
    let refused = bob.change("pair", &[], &[]).unwrap();
    drop(refused);
    bob.refused("pair").unwrap();
    assert!(!bob.has_pending("pair").unwrap());

    let epoch = alice.epoch("pair").unwrap();
    drop(alice);
    let mut alice = device(&dir, "alice/laptop");
    assert_eq!(alice.epoch("pair").unwrap(), epoch);
    let sealed = alice.seal("pair", b"after a restart").unwrap();
    let opened = relay.message("pair", &sealed, &mut [&mut bob, &mut carol]);
    assert_eq!(text(&opened[0]), Some(&b"after a restart"[..]));
    assert_eq!(text(&opened[1]), Some(&b"after a restart"[..]));
}

#[test]
#[ignore = "a timing, run by hand"]
fn timing_of_many_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob, mut relay) = pair(&dir);
    let t = std::time::Instant::now();
    let sealed: Vec<Vec<u8>> = (0..2000).map(|i| alice.seal("pair", format!("m{i}").as_bytes()).unwrap()).collect();
    let sealing = t.elapsed();
    let t = std::time::Instant::now();
    for s in &sealed {
        relay.message("pair", s, &mut [&mut bob]);
    }
    eprintln!("2000 seals {sealing:?}, 2000 opens {:?}", t.elapsed());
}

#[test]
fn a_burst_sealed_at_once_opens_in_order_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob, mut relay) = pair(&dir);
    let plaintexts: Vec<Vec<u8>> = (0..300).map(|i| format!("burst {i}").into_bytes()).collect();
    let burst: Vec<&[u8]> = plaintexts.iter().map(Vec::as_slice).collect();
    let sealed = alice.seal_all("pair", &burst).unwrap();
    assert_eq!(sealed.len(), 300);
    for (bytes, plaintext) in sealed.iter().zip(&plaintexts) {
        let opened = relay.message("pair", bytes, &mut [&mut bob]);
        assert_eq!(text(&opened[0]), Some(plaintext.as_slice()));
    }
    assert!(alice.seal_all("pair", &[]).unwrap().is_empty());
    // The ratchet was written: alice's store, opened again, seals what bob can still read.
    drop(alice);
    let mut alice = device(&dir, "alice/laptop");
    let after = alice.seal("pair", b"after the reopen").unwrap();
    let opened = relay.message("pair", &after, &mut [&mut bob]);
    assert_eq!(text(&opened[0]), Some(&b"after the reopen"[..]));
    assert_eq!(
        alice.seal_all("nowhere", &[b"x"]).unwrap_err().to_string(),
        qchat_e2e::E2eError::NotInGroup.to_string()
    );
}

#[test]
fn a_run_of_messages_opens_in_one_go_past_a_forged_one_and_the_same_again_if_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob, _relay) = pair(&dir);
    let plaintexts: Vec<Vec<u8>> = (0..5).map(|i| format!("run {i}").into_bytes()).collect();
    let burst: Vec<&[u8]> = plaintexts.iter().map(Vec::as_slice).collect();
    let sealed = alice.seal_all("pair", &burst).unwrap();
    let forged = {
        let mut bytes = sealed[2].clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        bytes
    };
    // Events 10.. of the room: the third is forged, the fourth is garbage.
    let run: Vec<(u64, &[u8])> =
        vec![(10, &sealed[0]), (11, &sealed[1]), (12, &forged), (13, b"not mls"), (14, &sealed[3]), (15, &sealed[4])];
    let opened = bob.receive_messages("pair", &run).unwrap();
    let texts: Vec<Option<&[u8]>> = opened.iter().map(text).collect();
    assert_eq!(texts, [Some(&b"run 0"[..]), Some(b"run 1"), None, None, Some(b"run 3"), Some(b"run 4")]);
    assert!(
        matches!(&opened[2], Opened::Unreadable { reason } if reason.contains("does not decrypt")),
        "{:?}",
        opened[2]
    );
    assert!(matches!(&opened[3], Opened::Unreadable { reason } if reason.contains("not an MLS message")));
    // Delivered again (after a reconnect), the same answers, one by one or as a run.
    assert_eq!(bob.receive_messages("pair", &run).unwrap(), opened);
    assert_eq!(bob.receive("pair", 14, Incoming::Message(&sealed[3]), &|_| true).unwrap(), opened[4]);
    // A room this device is not in: each unreadable, none an error.
    let elsewhere = bob.receive_messages("elsewhere", &run[..2]).unwrap();
    assert!(elsewhere.iter().all(|o| matches!(o, Opened::Unreadable { .. })));
}
