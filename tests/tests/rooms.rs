//! Rooms of three and more: one order for every member's devices, receipts from every
//! member, files to each member, and the edges of membership (a non-member, a removed
//! member), against a real relay; and a qchat 1 data directory brought into rooms.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use qchat_client::{Event, RoomRequest};
use qchat_server::RelayLimits;
use qchat_shared::frame::{Body, DownloadReply, DownloadStart, FileId, Open};
use qchat_shared::io::{read_frame, write_frame};
use qchat_tests::{write_file, TestClient, TestRelay};

/// A relay of alice, bob, carol and dave, each connected, with `team` made by alice for
/// alice, bob and carol.
async fn team(limits: RelayLimits) -> (TestRelay, BTreeMap<&'static str, TestClient>) {
    let relay = TestRelay::start_with_people(limits, &["alice", "bob", "carol", "dave"]).await;
    let mut clients = BTreeMap::new();
    for name in ["alice", "bob", "carol", "dave"] {
        let mut client = relay.client(name);
        client.connected().await;
        clients.insert(name, client);
    }
    let members = vec!["bob".to_string(), "carol".to_string()];
    let room = clients.get_mut("alice").unwrap().room(RoomRequest::Create { name: "team".into(), members }).await;
    let room = room.expect("the room is made");
    let names: Vec<&str> = room.members.iter().map(|m| m.user.as_str()).collect();
    assert_eq!((names, room.creator.as_deref(), room.direct), (vec!["alice", "bob", "carol"], Some("alice"), false));
    (relay, clients)
}

/// The next `n` messages of `room` a client gets, as (room_seq, from, text).
async fn room_messages(client: &mut TestClient, room: &str, n: usize) -> Vec<(u64, String, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = client.expect("a room message", |e| match e {
            Event::Message(m) if m.room == room => Some(m),
            _ => None,
        });
        let m = m.await;
        got.push((m.room_seq, m.from, m.text));
    }
    got
}

/// Waits for a change of `room`'s members; returns who made it and what it was.
async fn change(client: &mut TestClient, room: &str) -> (String, Body) {
    client
        .expect("a change of members", |e| match e {
            Event::RoomChanged { room: r, by, change, .. } if r == room => Some((by, change)),
            _ => None,
        })
        .await
}

/// The next list of rooms a client gets (after connecting, or after a change).
async fn rooms_listed(client: &mut TestClient) -> Vec<qchat_shared::frame::RoomInfo> {
    client
        .expect("the rooms", |e| match e {
            Event::Rooms(rooms) => Some(rooms),
            _ => None,
        })
        .await
}

/// Whether any message reaches `client` within `wait`.
async fn gets_a_message_within(client: &mut TestClient, wait: Duration) -> bool {
    let events = &mut client.events;
    tokio::time::timeout(wait, async {
        while let Some(event) = events.recv().await {
            if let Event::Message(_) = event {
                return;
            }
        }
        std::future::pending::<()>().await
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn room_messages_reach_every_members_devices_in_one_order_and_tick_when_all_have_them() {
    let (relay, mut c) = team(RelayLimits::default()).await;
    // Bob's second device, joined with an invite.
    let line = relay.invite("bob", Duration::from_secs(3600)).await;
    let phone_identity = relay.join(&line, "phone").await;
    let phone_id = phone_identity.device().unwrap();
    let mut phone = relay.client_for(phone_identity);
    phone.connected().await;
    for who in ["bob", "carol"] {
        let (by, made) = change(c.get_mut(who).unwrap(), "team").await;
        assert_eq!(by, "alice");
        assert_eq!(made, Body::Created { members: vec!["alice".into(), "bob".into(), "carol".into()] });
    }
    // Everyone has heard of the phone before writing: a message sealed before its writer
    // knew of a device is one that device cannot read (MLS: it was not in the group yet).
    for who in ["alice", "bob", "carol"] {
        let client = c.get_mut(who).unwrap();
        let is_phone =
            |e: &Event| matches!(e, Event::DeviceAdded { user, device } if user == "bob" && device.id == phone_id);
        client.expect("bob's new device", |e| is_phone(&e).then_some(())).await;
    }

    // Three people write at once: everyone sees one order.
    let mut sends = Vec::new();
    for who in ["alice", "bob", "carol"] {
        for i in 0..5 {
            let client = c[who].client.clone();
            sends.push(tokio::spawn(async move {
                client.send_and_wait_to(Some("team".into()), format!("{who} {i}")).await.unwrap()
            }));
        }
    }
    let mut mine = Vec::new();
    for send in sends {
        let sent = send.await.unwrap();
        assert_eq!(sent.room, "team");
        mine.push(sent);
    }
    // Alice's own view: the others' messages, and her receipts (who has each, and when
    // everyone has).
    let (alice_sees, receipts) = messages_and_receipts(c.get_mut("alice").unwrap(), 10, 5).await;
    for (id, by) in &receipts {
        let sorted: Vec<&str> = by.iter().map(String::as_str).collect();
        assert_eq!(sorted, ["bob", "carol"], "✓✓ for {id}, and a receipt from each of the others");
    }
    let bob_sees = room_messages(c.get_mut("bob").unwrap(), "team", 10).await;
    let carol_sees = room_messages(c.get_mut("carol").unwrap(), "team", 10).await;
    let phone_sees = room_messages(&mut phone, "team", 15).await;
    let order = |seen: &[(u64, String, String)]| seen.iter().map(|(n, _, _)| *n).collect::<Vec<_>>();
    // Every message once, in the room's order (the commits of its encryption group take
    // numbers of that order too).
    let numbers = order(&phone_sees);
    assert!(numbers.windows(2).all(|w| w[0] < w[1]) && numbers[0] >= 2, "every message once, in order: {numbers:?}");
    for (theirs, who) in [(&alice_sees, "alice"), (&bob_sees, "bob"), (&carol_sees, "carol")] {
        let expected: Vec<_> = phone_sees.iter().filter(|(_, from, _)| from != who).cloned().collect();
        assert_eq!(*theirs, expected, "{who} sees the others' messages in the same order");
    }
    assert!(!gets_a_message_within(c.get_mut("dave").unwrap(), Duration::from_millis(300)).await, "not dave's");
}

/// Reads `client`'s events until it has `n` messages of `team` and `everyone` of its own
/// messages have reached every member, with a receipt from each of the two others; returns
/// the messages, and for each of those who has it (sorted). (Receipts of two members come
/// through their own connections, so the one that completes a message may come first.)
async fn messages_and_receipts(
    client: &mut TestClient,
    n: usize,
    everyone: usize,
) -> (Vec<(u64, String, String)>, BTreeMap<String, Vec<String>>) {
    let (mut messages, mut by, mut complete) = (Vec::new(), BTreeMap::<String, Vec<String>>::new(), BTreeSet::new());
    let done = |by: &BTreeMap<String, Vec<String>>, complete: &BTreeSet<String>| {
        complete.len() >= everyone && complete.iter().all(|id| by[id].len() >= 2)
    };
    while messages.len() < n || !done(&by, &complete) {
        match client.expect("a message or a receipt", Some).await {
            Event::Message(m) if m.room == "team" => messages.push((m.room_seq, m.from, m.text)),
            Event::Delivered { id, by: who, everyone, room, .. } if room == "team" => {
                let list = by.entry(id.to_string()).or_default();
                list.push(who);
                list.sort();
                if everyone {
                    complete.insert(id.to_string());
                }
            }
            _ => {}
        }
    }
    by.retain(|id, _| complete.contains(id));
    (messages, by)
}

#[tokio::test]
async fn a_non_member_is_refused_and_a_removed_member_gets_nothing_new() {
    let (relay, mut c) = team(RelayLimits::default()).await;
    let source = write_file(&relay.tmp.path().join("plan.pdf"), 100_000);
    let transfer = c["alice"].client.send_file_to(Some("team".into()), &source);
    let before = c.get_mut("alice").unwrap().uploaded(transfer).await;

    // Dave is on the relay but not in the room: refused at once, and the file is not his.
    let refused = c["dave"].client.send_and_wait_to(Some("team".into()), "let me in").await.unwrap_err();
    assert!(refused.to_string().contains("you are not in a room named team"), "{refused}");
    let dave = c.get_mut("dave").unwrap();
    let added = dave.room(RoomRequest::Add { room: "team".into(), user: "dave".into() }).await.unwrap_err();
    assert!(added.contains("not in a room named team"), "{added}");
    let raw = relay.raw("dave").await;
    assert!(download_refused(&raw, before).await.contains("waits for you"));
    let bob = c.get_mut("bob").unwrap();
    let by_bob = bob.room(RoomRequest::Add { room: "team".into(), user: "dave".into() }).await.unwrap_err();
    assert!(by_bob.contains("only alice adds members"), "{by_bob}");

    // Carol is removed: she hears of it, then gets nothing sent after, and cannot fetch.
    let alice = c.get_mut("alice").unwrap();
    let room = alice.room(RoomRequest::Remove { room: "team".into(), user: "carol".into() }).await.unwrap();
    assert!(!room.has("carol"));
    let carol = c.get_mut("carol").unwrap();
    loop {
        if let (_, Body::Removed { user }) = change(carol, "team").await {
            assert_eq!(user, "carol");
            break;
        }
    }
    c["alice"].client.send_and_wait_to(Some("team".into()), "after carol left").await.unwrap();
    assert_eq!(room_messages(c.get_mut("bob").unwrap(), "team", 1).await[0].2, "after carol left");
    let carol = c.get_mut("carol").unwrap();
    assert!(!gets_a_message_within(carol, Duration::from_millis(500)).await, "nothing after her removal");
    let raw = relay.raw("carol").await;
    assert!(download_refused(&raw, before).await.contains("waits for you"), "a file of the room she left");
    let refused = c["carol"].client.send_and_wait_to(Some("team".into()), "still here?").await.unwrap_err();
    assert!(refused.to_string().contains("not in a room named team"), "{refused}");
    // Not on reconnect either.
    let mut carol_again = relay.client("carol");
    carol_again.connected().await;
    let rooms = rooms_listed(&mut carol_again).await;
    assert!(rooms.iter().all(|r| r.name != "team"), "{rooms:?}");
    assert!(!gets_a_message_within(&mut carol_again, Duration::from_millis(300)).await);
}

/// Asks for file `file_id` on a raw connection; the relay's reason for refusing.
async fn download_refused(raw: &qchat_tests::RawConnection, file_id: FileId) -> String {
    let (mut send, mut recv) = raw.connection.open_bi().await.unwrap();
    write_frame(&mut send, &Open::Download(DownloadStart { file_id, offset: 0 })).await.unwrap();
    match read_frame::<DownloadReply, _>(&mut recv).await.unwrap() {
        Some(DownloadReply::Refused { reason }) => reason,
        other => panic!("not refused: {other:?}"),
    }
}

/// Waits until the sender hears that someone fetched `file_id`; returns who.
async fn fetched_by(sender: &mut TestClient, file_id: FileId) -> String {
    sender
        .expect("a fetch", |e| match e {
            Event::FileFetched { file_id: f, by } if f == file_id => Some(by),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn a_file_to_a_room_is_received_by_each_member_and_kept_until_all_have_it() {
    let limits = RelayLimits { retention: Duration::ZERO, ..RelayLimits::default() };
    let (relay, mut c) = team(limits).await;
    let source = write_file(&relay.tmp.path().join("minutes.txt"), (1 << 20) + 1);
    let transfer = c["alice"].client.send_file_to(Some("team".into()), &source);
    let file_id = c.get_mut("alice").unwrap().uploaded(transfer).await;

    let (saved, failed) = c.get_mut("bob").unwrap().receive_all().await;
    assert!(failed.is_empty(), "{failed:?}");
    qchat_tests::same_content(&saved[0], &source);
    assert_eq!(fetched_by(c.get_mut("alice").unwrap(), file_id).await, "bob");
    relay.relay().sweep_now().await;
    let spooled = relay.data.join("spool").join(file_id.to_string());
    assert!(spooled.exists(), "kept: carol has not fetched it");

    let (saved, failed) = c.get_mut("carol").unwrap().receive_all().await;
    assert!(failed.is_empty(), "{failed:?}");
    qchat_tests::same_content(&saved[0], &source);
    assert_eq!(fetched_by(c.get_mut("alice").unwrap(), file_id).await, "carol");
    assert_eq!(relay.relay().sweep_now().await, 1, "every member has it: swept after the retention");
    assert!(!spooled.exists());
    let (saved, _) = c.get_mut("dave").unwrap().receive_all().await;
    assert!(saved.is_empty(), "never offered to someone outside the room");
}

#[tokio::test]
async fn the_direct_room_appears_when_either_writes_and_a_two_person_relay_needs_no_names() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    let sent = alice.client.send_and_wait("no room named").await.unwrap();
    assert_eq!(sent.room, "alice+bob");
    let (by, made) = change(&mut bob, "alice+bob").await;
    assert_eq!((by.as_str(), made), ("alice", Body::Created { members: vec!["alice".into(), "bob".into()] }));
    assert_eq!(room_messages(&mut bob, "alice+bob", 1).await[0].2, "no room named");
    let rooms = alice
        .expect("the rooms after the change", |e| match e {
            Event::Rooms(rooms) if !rooms.is_empty() => Some(rooms),
            _ => None,
        })
        .await;
    assert!(rooms[0].direct && rooms[0].creator.is_none());
    let refused = alice.room(RoomRequest::Add { room: "alice+bob".into(), user: "bob".into() }).await.unwrap_err();
    assert!(refused.contains("stays between its two people"), "{refused}");
}

#[tokio::test]
async fn a_qchat_1_data_directory_keeps_its_history_and_waiting_file_as_the_direct_room() {
    let mut relay = TestRelay::start().await;
    relay.stop().await;
    // Replace the data directory with one as a qchat 1 relay left it: one message bob
    // has, one waiting for him, one file offered to him, its body in the spool.
    std::fs::remove_dir_all(&relay.data).unwrap();
    std::fs::create_dir_all(relay.data.join("spool")).unwrap();
    let body = b"a file from the old days".to_vec();
    let file_id = FileId([0xab; 16]);
    std::fs::write(relay.data.join("spool").join(file_id.to_string()), &body).unwrap();
    {
        let db = rusqlite::Connection::open(relay.data.join("relay.db")).unwrap();
        db.execute_batch(qchat_server::store::schema::V1).unwrap();
        // An hour ago: well within the relay's retention.
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 - 3_600_000;
        db.execute(
            "INSERT INTO messages (id, sender, recipient, body, created_ms, delivered_ms)
             VALUES (?1, 'alice', 'bob', 'read a while ago', ?3, ?3), (?2, 'alice', 'bob', 'still waiting', ?3, NULL)",
            rusqlite::params![&[1u8; 16][..], &[2u8; 16][..], now],
        )
        .unwrap();
        let hash = blake3::hash(&body);
        db.execute(
            "INSERT INTO files (id, sender, recipient, name, size, held, blake3, created_ms, committed_ms)
             VALUES (?1, 'alice', 'bob', 'old.txt', ?2, ?2, ?3, ?4, ?4)",
            rusqlite::params![&file_id.0[..], body.len() as i64, &hash.as_bytes()[..], now],
        )
        .unwrap();
    }
    relay.restart().await;

    let mut bob = relay.client("bob");
    let status = bob.connected().await;
    assert_eq!(status.waiting_for_you, 1);
    let got = room_messages(&mut bob, "alice+bob", 1).await;
    assert_eq!(got, [(2, "alice".to_string(), "still waiting".to_string())], "numbered in its room");
    let (saved, failed) = bob.receive_all().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(std::fs::read(&saved[0]).unwrap(), body);

    let mut alice = relay.client("alice");
    alice.connected().await;
    let rooms = rooms_listed(&mut alice).await;
    assert_eq!(rooms.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["alice+bob"]);
    assert!(rooms[0].direct);
    // The conversation goes on in it.
    let sent = alice.client.send_and_wait("hello again").await.unwrap();
    assert_eq!(sent.room, "alice+bob");
    // After the first commit of the room's encryption group, which comes with it.
    assert!(room_messages(&mut bob, "alice+bob", 1).await[0].0 > 2);
}

#[tokio::test]
async fn someone_issued_a_moment_ago_can_be_put_in_a_room_at_once() {
    let relay = TestRelay::start().await;
    let mut alice = relay.client("alice");
    alice.connected().await;
    relay.issue("carol");
    let members = vec!["carol".to_string()];
    let room = alice.room(RoomRequest::Create { name: "new".into(), members }).await;
    assert!(room.expect("carol is a user already").has("carol"));
    relay.issue("dave");
    let sent = alice.client.send_and_wait_to(Some("alice+dave".into()), "welcome, dave").await;
    assert_eq!(sent.expect("dave is a user already").room, "alice+dave");
}
