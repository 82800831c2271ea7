//! Chat through a real relay: both directions, receipts, order, offline delivery,
//! several connections per user.

use std::collections::HashSet;

use qchat_client::{ConnectionState, Event};
use qchat_shared::frame::{ChatSend, MessageId, Open, SendReply};
use qchat_shared::io::{read_frame, write_frame};
use qchat_tests::{RawConnection, TestRelay};

#[tokio::test]
async fn both_directions_with_stored_and_delivered_ticks() {
    let relay = TestRelay::start().await;
    let mut alice = relay.client("alice");
    alice.connected().await;
    let mut bob = relay.client("bob");
    let status = bob.connected().await;
    assert_eq!(status.user, "bob");
    assert_eq!(status.peer.as_deref(), Some("alice"));
    assert!(status.peer_online, "alice connected first, so bob sees her online");

    let sent = alice.client.send_and_wait("hello, bob").await.unwrap();
    let got = bob.messages(1).await;
    assert_eq!((got[0].id, got[0].from.as_str(), got[0].text.as_str()), (sent.id, "alice", "hello, bob"));
    assert_eq!(got[0].seq, sent.seq);
    let delivered = alice
        .expect("the delivered receipt", |e| match e {
            Event::Delivered { id, .. } => Some(id),
            _ => None,
        })
        .await;
    assert_eq!(delivered, sent.id);

    let reply = bob.client.send_and_wait("hi alice ✓ ünïcode").await.unwrap();
    assert!(reply.seq > sent.seq, "one conversation, one sequence");
    let got = alice.messages(1).await;
    assert_eq!((got[0].from.as_str(), got[0].text.as_str()), ("bob", "hi alice ✓ ünïcode"));
}

#[tokio::test]
async fn a_thousand_messages_at_once_arrive_complete_once_and_in_order() {
    let relay = TestRelay::start().await;
    let mut alice = relay.client("alice");
    let mut bob = relay.client("bob");
    alice.connected().await;
    bob.connected().await;
    let sent: Vec<MessageId> = (0..1000).map(|i| alice.client.send(format!("message {i}"))).collect();
    let ids: HashSet<MessageId> = sent.iter().copied().collect();
    let got = bob.messages(1000).await;
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), sent, "every message, once, in the order sent");
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "shown in the relay's order");
    let stored = {
        let mut seen = HashSet::new();
        while seen.len() < 1000 {
            alice
                .expect("stored", |e| match e {
                    Event::Stored { id, .. } => Some(seen.insert(id)),
                    _ => None,
                })
                .await;
        }
        seen
    };
    assert_eq!(stored, ids);
    // No duplicates turn up afterwards.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    while let Ok(event) = bob.events.try_recv() {
        assert!(!matches!(event, Event::Message(_)), "duplicate delivery: {event:?}");
    }
}

async fn raw_send(raw: &RawConnection, id: MessageId, text: &str) -> SendReply {
    let (mut send, mut recv) = raw.connection.open_bi().await.unwrap();
    write_frame(&mut send, &Open::Send(ChatSend { id, room: "alice+bob".into(), sealed: text.as_bytes().to_vec() }))
        .await
        .unwrap();
    send.finish().unwrap();
    read_frame::<SendReply, _>(&mut recv).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_resent_message_id_is_stored_and_delivered_once() {
    let relay = TestRelay::start().await;
    let raw = relay.raw("alice").await;
    let id = MessageId::random();
    let first = raw_send(&raw, id, "only once").await;
    let second = raw_send(&raw, id, "only once").await;
    assert_eq!(first, second, "the resend gets the original Stored");
    assert!(matches!(first, SendReply::Stored { .. }));
    raw_send(&raw, MessageId::random(), "marker").await;

    let mut bob = relay.client("bob");
    let status = bob.connected().await;
    assert_eq!(status.waiting_for_you, 2, "the resend was stored once");
    // Bytes that are not an MLS message of the room's group reach bob as what they are.
    for _ in 0..2 {
        let notice = bob
            .expect("a notice", |e| match e {
                Event::Notice { text, .. } => Some(text),
                Event::Message(m) => panic!("raw bytes shown as a message: {m:?}"),
                _ => None,
            })
            .await;
        assert!(notice.contains("cannot read"), "{notice}");
    }
}

#[tokio::test]
async fn offline_messages_wait_across_a_relay_restart_and_arrive_in_order() {
    let mut relay = TestRelay::start().await;
    let mut alice = relay.client("alice");
    alice.connected().await;
    for i in 0..5 {
        alice.client.send_and_wait(format!("while you were away {i}")).await.unwrap();
    }
    alice.client.shutdown();
    relay.restart().await;

    let mut bob = relay.client("bob");
    let status = bob.connected().await;
    assert_eq!(status.waiting_for_you, 5);
    assert!(!status.peer_online);
    let got = bob.messages(5).await;
    let texts: Vec<_> = got.iter().map(|m| m.text.clone()).collect();
    assert_eq!(texts, (0..5).map(|i| format!("while you were away {i}")).collect::<Vec<_>>());

    // Acknowledged messages do not come again, not even after another restart.
    bob.acks_confirmed(got.iter().map(|m| m.seq)).await;
    bob.client.shutdown();
    relay.restart().await;
    let mut bob = relay.client("bob");
    assert_eq!(bob.connected().await.waiting_for_you, 0);
}

#[tokio::test]
async fn receipts_for_an_offline_sender_are_replayed_when_it_returns() {
    let relay = TestRelay::start().await;
    let mut alice = relay.client("alice");
    alice.connected().await;
    let sent = alice.client.send_and_wait("tick me later").await.unwrap();
    alice.client.shutdown();
    alice.expect("closed", |e| matches!(e, Event::Connection(ConnectionState::Closed)).then_some(())).await;

    let mut bob = relay.client("bob");
    bob.connected().await;
    let got = bob.messages(1).await;
    bob.acks_confirmed([got[0].seq]).await;

    let mut alice = relay.client("alice");
    alice.connected().await;
    let id = alice
        .expect("a replayed receipt", |e| match e {
            Event::Delivered { id, .. } => Some(id),
            _ => None,
        })
        .await;
    assert_eq!(id, sent.id);
}

#[tokio::test]
async fn every_connection_of_the_recipient_gets_each_message_and_presence_follows() {
    let relay = TestRelay::start().await;
    let mut alice = relay.client("alice");
    alice.connected().await;
    let mut gui = relay.client("bob");
    let mut script = relay.client("bob");
    gui.connected().await;
    script.connected().await;
    let online = alice
        .expect("bob online", |e| match e {
            Event::Presence { user, online } => Some((user, online)),
            _ => None,
        })
        .await;
    assert_eq!(online, ("bob".to_string(), true));

    alice.client.send_and_wait("to both of you").await.unwrap();
    assert_eq!(gui.messages(1).await[0].text, "to both of you");
    assert_eq!(script.messages(1).await[0].text, "to both of you");

    gui.client.shutdown();
    script.client.shutdown();
    let offline = alice
        .expect("bob offline", |e| match e {
            Event::Presence { online: false, user } => Some(user),
            _ => None,
        })
        .await;
    assert_eq!(offline, "bob");
}

/// Whether `client` ends up seeing `peer` online: its welcome's word, then every presence
/// change that came after it (what the window shows).
async fn sees_online(client: &mut qchat_tests::TestClient, peer: &str) -> bool {
    let mut online = client.connected().await.peer_online;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    while let Ok(event) = client.events.try_recv() {
        if let Event::Presence { user, online: now } = event {
            if user == peer {
                online = now;
            }
        }
    }
    online
}

#[tokio::test]
async fn two_people_connecting_at_once_each_see_the_other_online() {
    // A presence change made after a welcome's snapshot must not overtake that welcome,
    // or the older word (offline) is what stays on screen.
    for _ in 0..10 {
        let relay = TestRelay::start().await;
        let mut alice = relay.client("alice");
        let mut bob = relay.client("bob");
        assert!(sees_online(&mut alice, "bob").await, "alice sees bob offline");
        assert!(sees_online(&mut bob, "alice").await, "bob sees alice offline");
        alice.stop().await;
        bob.stop().await;
    }
}

#[tokio::test]
async fn a_fifth_connection_takes_the_place_of_the_oldest() {
    let relay = TestRelay::start().await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = relay.client("bob");
        c.connected().await;
        clients.push(c);
    }
    let mut fifth = relay.client("bob");
    fifth.connected().await;
    let reason = clients[0].refused().await;
    assert!(reason.contains("took this one's place"), "{reason}");

    // The other four still receive.
    let mut alice = relay.client("alice");
    alice.connected().await;
    alice.client.send_and_wait("still there?").await.unwrap();
    for c in clients.iter_mut().skip(1).chain(std::iter::once(&mut fifth)) {
        assert_eq!(c.messages(1).await[0].text, "still there?");
    }
}

#[tokio::test]
async fn too_long_and_empty_messages_are_refused_clearly() {
    let relay = TestRelay::start().await;
    let mut alice = relay.client("alice");
    alice.connected().await;
    let limit = qchat_shared::limits::MAX_TEXT;
    let err = alice.client.send_and_wait("x".repeat(limit + 1)).await.unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    assert!(alice.client.send_and_wait("").await.is_err());
    alice.client.send_and_wait("x".repeat(limit)).await.expect("exactly the limit is fine");
}
