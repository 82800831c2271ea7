//! Through a lossy link: loss, delay, reordering and duplicates, and a blackout. Files
//! arrive verified, chat keeps flowing, nothing shows twice.

use std::time::Duration;

use qchat_client::Event;
use qchat_tests::proxy::{Impairment, LossyLink};
use qchat_tests::{write_file, TestRelay};

fn bad_network() -> Impairment {
    Impairment {
        drop: 0.05,
        duplicate: 0.02,
        reorder: 0.10,
        reorder_by: Duration::from_millis(15),
        delay: Duration::from_millis(25),
        blackout: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn under_loss_delay_and_reordering_a_file_arrives_verified_and_chat_flows() {
    let relay = TestRelay::start().await;
    let alice_link = LossyLink::start(relay.addr, bad_network()).await;
    let bob_link = LossyLink::start(relay.addr, bad_network()).await;
    let mut alice = relay.client_via("alice", alice_link.addr);
    let mut bob = relay.client_via("bob", bob_link.addr);
    (alice.patience, bob.patience) = (Duration::from_secs(240), Duration::from_secs(240));
    alice.connected().await;
    bob.connected().await;

    let path = write_file(&relay.tmp.path().join("lossy.bin"), 4 << 20);
    let transfer = alice.client.send_file(&path);
    let sent: Vec<_> = (0..20).map(|i| alice.client.send(format!("over a bad link {i}"))).collect();
    let got = bob.messages(20).await;
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), sent, "every message, once, in order");
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));

    alice.uploaded(transfer).await;
    let (saved, failed) = bob.receive_all().await;
    assert!(failed.is_empty(), "{failed:?}");
    qchat_tests::same_content(&saved[0], &path);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_ten_second_blackout_both_sides_carry_on_and_nothing_is_doubled() {
    let relay = TestRelay::start().await;
    let alice_link = LossyLink::start(relay.addr, Impairment::default()).await;
    let bob_link = LossyLink::start(relay.addr, Impairment::default()).await;
    let mut alice = relay.client_via("alice", alice_link.addr);
    let mut bob = relay.client_via("bob", bob_link.addr);
    alice.connected().await;
    bob.connected().await;
    alice.client.send_and_wait("before").await.unwrap();
    assert_eq!(bob.messages(1).await[0].text, "before");

    let path = write_file(&relay.tmp.path().join("blackout.bin"), 24 << 20);
    let transfer = alice.client.send_file(&path);
    alice.expect("upload progress", |e| matches!(e, Event::Progress { .. }).then_some(())).await;
    alice_link.set(|i| i.blackout = true);
    bob_link.set(|i| i.blackout = true);
    let during: Vec<_> = (0..5).map(|i| alice.client.send(format!("during {i}"))).collect();
    tokio::time::sleep(Duration::from_secs(10)).await;
    alice_link.set(|i| i.blackout = false);
    bob_link.set(|i| i.blackout = false);

    // Each on its own stream, lost and sent again in any order: they still arrive once each,
    // in the order they were sent.
    let got = bob.messages(5).await;
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), during, "in order, once each");
    alice.uploaded(transfer).await;
    bob.client.send_and_wait("after").await.unwrap();
    assert_eq!(alice.messages(1).await[0].text, "after");
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(event) = bob.events.try_recv() {
        assert!(!matches!(event, Event::Message(_)), "a message came twice: {event:?}");
    }
}
