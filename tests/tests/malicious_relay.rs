//! A relay that lies or loses things cannot hurt the client: a download never grows past
//! the offered size, a delivery lost or far out of order makes the client reconnect
//! instead of waiting forever, and what the relay says is checked against what it offered.

use std::time::Duration;

use qchat_client::{ConnectionState, Event};
use qchat_shared::frame::{
    ClientControl, Deliver, DownloadReply, FileEntry, FileId, FileInfo, FileState, MessageId, Open, RelayControl,
};
use qchat_shared::io::write_frame;
use qchat_tests::fake_relay::{FakeRelay, FakeSession};
use qchat_tests::{TestClient, TestRelay};

/// A test PKI, a fake relay with its certificate, and bob's client connected to it.
async fn bob_at_a_fake_relay() -> (TestRelay, FakeRelay, TestClient, FakeSession) {
    let relay = TestRelay::start().await;
    let fake = FakeRelay::start(&relay.pki);
    let mut options = relay.client_options(relay.identity("bob"));
    options.server = Some(fake.addr.to_string());
    let bob = TestClient::start(options);
    let session = fake.accept("bob", "alice").await;
    (relay, fake, bob, session)
}

fn deliver(index: u64, text: &str) -> Deliver {
    Deliver {
        index,
        id: MessageId([index as u8 + 1; 16]),
        seq: index + 1,
        room: "alice+bob".into(),
        room_seq: index + 1,
        from: "alice".into(),
        body: qchat_shared::frame::Body::Text(text.into()),
        time_ms: 0,
    }
}

fn offer(bytes: &[u8]) -> FileInfo {
    FileInfo {
        file_id: FileId([5; 16]),
        room: "alice+bob".into(),
        plain_name: Some("small.txt".into()),
        size: bytes.len() as u64,
        from: "alice".into(),
        blake3: Some(*blake3::hash(bytes).as_bytes()),
        time_ms: 0,
    }
}

/// Waits for the client to reconnect; returns the reason it gave.
async fn reconnects(client: &mut TestClient) -> String {
    client
        .expect("a reconnect", |e| match e {
            Event::Connection(ConnectionState::Reconnecting { reason, .. }) => Some(reason),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn a_delivery_that_never_arrives_makes_the_client_reconnect_and_nothing_is_skipped() {
    let (_relay, fake, mut bob, session) = bob_at_a_fake_relay().await;
    // Delivery 0 starts and never ends; delivery 1 arrives whole and must wait for it.
    let mut stuck = session.connection.open_uni().await.unwrap();
    stuck.write_all(&[0, 0]).await.unwrap();
    session.deliver(&deliver(1, "second")).await;
    let reason = reconnects(&mut bob).await;
    assert!(reason.contains("lost"), "{reason}");

    let again = fake.accept("bob", "alice").await;
    again.deliver(&deliver(1, "second")).await;
    again.deliver(&deliver(0, "first")).await;
    let texts: Vec<String> = bob.messages(2).await.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["first", "second"], "in the relay's order, each once");
    drop(stuck);
}

#[tokio::test]
async fn a_delivery_far_ahead_of_the_missing_one_is_not_held() {
    let (_relay, _fake, mut bob, session) = bob_at_a_fake_relay().await;
    let started = std::time::Instant::now();
    session.deliver(&deliver(1_000_000, "from the future")).await;
    let reason = reconnects(&mut bob).await;
    assert!(reason.contains("lost"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5), "at once, not after a timeout");
}

/// Offers `offered` to bob, who receives it; the fake relay answers the download with
/// `ready` and then writes `body`. Returns what bob's client reported.
async fn receive_from_a_lying_relay(
    offered: FileInfo,
    ready: FileInfo,
    body: Vec<u8>,
) -> (TestRelay, Result<std::path::PathBuf, String>) {
    let (relay, _fake, mut bob, mut session) = bob_at_a_fake_relay().await;
    bob.connected().await;
    bob.client.receive_all(None);
    assert_eq!(session.request().await, ClientControl::ListFiles);
    let entry = FileEntry { info: offered, state: FileState::Offered };
    session.send(&RelayControl::Files { incoming: vec![entry], outgoing: vec![], last: true }).await;
    let (mut send, _recv, open) = session.accept_stream().await;
    assert!(matches!(open, Open::Download(_)), "{open:?}");
    write_frame(&mut send, &DownloadReply::Ready(ready)).await.unwrap();
    // The client may stop reading at any point: a failed write is fine.
    let _ = send.write_all(&body).await;
    let _ = send.finish();
    let ended = bob
        .expect("the download's end", |e| match e {
            Event::FileSaved { path, .. } => Some(Ok(path)),
            Event::TransferFailed { reason, .. } => Some(Err(reason)),
            _ => None,
        })
        .await;
    (relay, ended)
}

#[tokio::test]
async fn a_download_never_grows_past_the_offered_size() {
    let bytes = b"ten bytes!".to_vec();
    let offered = offer(&bytes);
    let bigger = FileInfo { size: 1 << 40, ..offered.clone() };
    let (relay, ended) = receive_from_a_lying_relay(offered, bigger, vec![7; 4 << 20]).await;
    let reason = ended.expect_err("refused");
    assert!(reason.contains("offered 10"), "{reason}");
    let partial = qchat_client::download::partial_path(&relay.downloads("bob"), FileId([5; 16]));
    let held = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert_eq!(held, 0, "nothing of the oversized body was written");
    assert!(!relay.downloads("bob").join("small.txt").exists());
}

#[tokio::test]
async fn bytes_past_the_offered_size_are_not_written() {
    let bytes = b"ten bytes!".to_vec();
    let offered = offer(&bytes);
    let mut body = bytes.clone();
    body.extend(vec![0xee; 1 << 20]);
    let (_relay, ended) = receive_from_a_lying_relay(offered.clone(), offered, body).await;
    let path = ended.expect("the offered bytes verify");
    assert_eq!(std::fs::read(path).unwrap(), bytes, "exactly the offered bytes");
}
