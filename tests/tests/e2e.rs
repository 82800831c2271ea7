//! End to end: what the relay holds is ciphertext only. A message and a file go from alice
//! to bob and carol through a real relay; afterwards no run of either (nor the file's
//! name) is anywhere in its data directory. A relay that alters a spooled file is caught,
//! a removed member cannot read what comes after, and a new device is announced.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use qchat_client::state::StateDir;
use qchat_client::{Event, RoomRequest};
use qchat_e2e::{Device, Incoming, Opened};
use qchat_server::RelayLimits;
use qchat_tests::{same_content, write_file, TestClient, TestRelay};

const SECRET: &str = "the key is under the third stone from the old mill, 7731";
const FILE_NAME: &str = "quarterly-plan-zebra-orchid.bin";

/// Alice, bob and carol, connected, with `team` made by alice for the three.
async fn team() -> (TestRelay, BTreeMap<&'static str, TestClient>) {
    let relay = TestRelay::start_with_people(RelayLimits::default(), &["alice", "bob", "carol"]).await;
    let mut clients = BTreeMap::new();
    for name in ["alice", "bob", "carol"] {
        let mut client = relay.client(name);
        client.connected().await;
        clients.insert(name, client);
    }
    let members = vec!["bob".to_string(), "carol".to_string()];
    let alice = clients.get_mut("alice").unwrap();
    alice.room(RoomRequest::Create { name: "team".into(), members }).await.expect("the room is made");
    (relay, clients)
}

/// Every byte of every file under `dir` (not the relay's socket).
fn all_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else if path.is_file() {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// The first file under `dir` that holds one of `needles`, or one of the 64-byte blocks of
/// `content` at any offset.
fn holds_any(dir: &Path, needles: &[&[u8]], content: &[u8]) -> Option<String> {
    let blocks: HashSet<&[u8]> = content.chunks_exact(64).collect();
    for (path, bytes) in all_bytes(dir) {
        if needles.iter().any(|n| bytes.windows(n.len()).any(|w| w == *n)) {
            return Some(format!("{path} holds a plaintext string"));
        }
        if bytes.windows(64).any(|w| blocks.contains(w)) {
            return Some(format!("{path} holds a 64-byte run of the file"));
        }
    }
    None
}

#[tokio::test]
async fn a_message_and_a_file_reach_bob_and_carol_and_the_relay_holds_no_plaintext_of_either() {
    let (relay, mut clients) = team().await;
    let alice = clients.get_mut("alice").unwrap();
    alice.client.send_and_wait_to(Some("team".into()), SECRET).await.expect("stored");
    let path = write_file(&relay.tmp.path().join(FILE_NAME), 300_000);
    let transfer = alice.client.send_file_to(Some("team".into()), &path);
    alice.uploaded(transfer).await;

    for name in ["bob", "carol"] {
        let client = clients.get_mut(name).unwrap();
        let got = client.messages(1).await;
        assert_eq!((got[0].room.as_str(), got[0].text.as_str()), ("team", SECRET), "{name} reads it");
        let (saved, failed) = client.receive_all().await;
        assert!(failed.is_empty(), "{name}: {failed:?}");
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].file_name().unwrap(), FILE_NAME, "{name} gets the name from the encrypted offer");
        same_content(&saved[0], &path);
    }
    for (_, client) in clients {
        client.stop().await;
    }
    let content = std::fs::read(&path).unwrap();
    let needles: [&[u8]; 3] = [SECRET.as_bytes(), FILE_NAME.as_bytes(), b"third stone"];
    assert_eq!(holds_any(&relay.data, &needles, &content), None);
    // The check itself finds plaintext where there is some.
    assert!(holds_any(&relay.tmp.path().join("downloads"), &needles, &content).is_some());
}

#[tokio::test]
async fn a_relay_that_flips_a_byte_of_a_spooled_file_makes_the_download_fail_and_saves_nothing() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    let path = write_file(&relay.tmp.path().join("ledger.bin"), 3 << 20);
    let transfer = alice.client.send_file(&path);
    let file_id = alice.uploaded(transfer).await;
    let spooled = relay.data.join("spool").join(file_id.to_string());
    let mut bytes = std::fs::read(&spooled).unwrap();
    bytes[(2 << 20) + 77] ^= 0x01;
    std::fs::write(&spooled, bytes).unwrap();

    let (saved, failed) = bob.receive_all().await;
    assert!(saved.is_empty(), "{saved:?}");
    assert!(failed[0].contains("altered"), "{failed:?}");
    assert!(!relay.downloads("bob").join("ledger.bin").exists(), "nothing under the final name");
    let partial = qchat_client::download::partial_path(&relay.downloads("bob"), file_id);
    assert!(!partial.exists(), "nor a partial file that would resume into it");
}

/// Opens `room`'s event `room_seq` (a sealed message) with `name`'s device store, as a
/// relay that kept delivering to them would let them.
fn read_with_the_device_of(relay: &TestRelay, name: &str, room: &str, room_seq: u64, sealed: &[u8]) -> Opened {
    let identity = relay.identity(name);
    let dir = StateDir::under(&relay.tmp.path().join("clients"), &identity);
    let me = qchat_e2e::identity(name, &identity.device().unwrap());
    let mut device = Device::open(&dir.dir.join("mls.db"), &me, None).unwrap();
    device.receive(room, room_seq, Incoming::Message(sealed), &|_| true).unwrap()
}

#[tokio::test]
async fn a_removed_member_cannot_read_what_comes_after_even_if_the_relay_gives_it_to_them() {
    let (relay, mut clients) = team().await;
    let alice = clients.get_mut("alice").unwrap();
    alice.client.send_and_wait_to(Some("team".into()), "before").await.unwrap();
    for name in ["bob", "carol"] {
        clients.get_mut(name).unwrap().messages(1).await;
    }
    let alice = clients.get_mut("alice").unwrap();
    alice.room(RoomRequest::Remove { room: "team".into(), user: "carol".into() }).await.unwrap();
    let after = alice.client.send_and_wait_to(Some("team".into()), "after carol left").await.unwrap();
    let bob = clients.get_mut("bob").unwrap();
    let got = bob.messages(1).await;
    assert_eq!(got[0].text, "after carol left");
    for (_, client) in clients {
        client.stop().await;
    }
    // Take the message's ciphertext from the relay's database and hand it to carol anyway.
    let db = rusqlite::Connection::open(relay.data.join("relay.db")).unwrap();
    let (room_seq, sealed): (i64, Vec<u8>) = db
        .query_row("SELECT room_seq, body FROM messages WHERE seq = ?1", [after.seq as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let opened = read_with_the_device_of(&relay, "carol", "team", room_seq as u64, &sealed);
    assert!(matches!(opened, Opened::Unreadable { .. }), "carol read it: {opened:?}");
}

/// Asks `client` for its safety number with `user` and waits for it.
async fn safety_number(client: &mut TestClient, user: &str) -> String {
    client.client.verify(user);
    client
        .expect("a safety number", |e| match e {
            Event::SafetyNumber { user: u, number, .. } if u == user => Some(number),
            Event::LocalError { reason } => panic!("{reason}"),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn both_people_see_the_same_safety_number_and_a_new_device_changes_it_and_is_announced() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    alice.client.send_and_wait("hello").await.unwrap();
    bob.messages(1).await;
    let seen_by_alice = safety_number(&mut alice, "bob").await;
    let seen_by_bob = safety_number(&mut bob, "alice").await;
    assert_eq!(seen_by_alice, seen_by_bob);
    assert_eq!(seen_by_alice.chars().filter(char::is_ascii_digit).count(), 60);

    // Bob links a phone; once it is in the room's group, alice hears of it and the number
    // changes.
    let line = relay.invite("bob", std::time::Duration::from_secs(600)).await;
    let phone_identity = relay.join(&line, "phone").await;
    let mut phone = relay.client_for(phone_identity);
    phone.connected().await;
    alice.client.send_and_wait("who is there now?").await.unwrap();
    let notice = alice
        .expect("the new device announced", |e| match e {
            Event::Notice { text, .. } if text.contains("new device") => Some(text),
            _ => None,
        })
        .await;
    assert!(notice.contains("bob/"), "{notice}");
    assert_eq!(phone.messages(1).await[0].text, "who is there now?", "the phone reads what comes after");
    let now = safety_number(&mut alice, "bob").await;
    assert_ne!(now, seen_by_alice, "a new device changes the safety number");
}

#[tokio::test]
async fn a_revoked_device_cannot_read_what_comes_after() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    let line = relay.invite("bob", std::time::Duration::from_secs(600)).await;
    let phone_identity = relay.join(&line, "phone").await;
    let phone_device = phone_identity.device().unwrap();
    let mut phone = relay.client_for(phone_identity.clone());
    phone.connected().await;
    alice.client.send_and_wait("to both of bob's devices").await.unwrap();
    assert_eq!(phone.messages(1).await[0].text, "to both of bob's devices");
    phone.stop().await;

    bob.client.devices(qchat_client::DeviceRequest::Revoke(phone_device.clone()));
    bob.expect("revoked", |e| matches!(e, Event::DeviceRevoked { .. }).then_some(())).await;
    // Alice hears of it and takes the phone out of the group before her next message.
    alice
        .expect("the revocation told", |e| match e {
            Event::Notice { text, .. } if text.contains("revoked") => Some(()),
            _ => None,
        })
        .await;
    let after = alice.client.send_and_wait("after the phone was revoked").await.unwrap();
    // (Bob's laptop read the first while waiting for the revocation.)
    assert_eq!(bob.messages(1).await[0].text, "after the phone was revoked");
    alice.stop().await;
    bob.stop().await;

    let db = rusqlite::Connection::open(relay.data.join("relay.db")).unwrap();
    let (room_seq, sealed): (i64, Vec<u8>) = db
        .query_row("SELECT room_seq, body FROM messages WHERE seq = ?1", [after.seq as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let dir = StateDir::under(&relay.tmp.path().join("clients"), &phone_identity);
    let me = qchat_e2e::identity("bob", &phone_device);
    let mut device = Device::open(&dir.dir.join("mls.db"), &me, None).unwrap();
    let opened = device.receive("alice+bob", room_seq as u64, Incoming::Message(&sealed), &|_| true).unwrap();
    assert!(matches!(opened, Opened::Unreadable { .. }), "the revoked phone read it: {opened:?}");
}
