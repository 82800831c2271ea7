//! Nothing grows with use or with a hostile peer, and no user can hurt the other: queues
//! push back, transfer slots are shared fairly and given back when stalled, connections
//! that never say `Hello` are capped, revocation has no window, what waits is capped, old
//! messages go, and the relay's files are private.

use std::time::{Duration, Instant};

use qchat_client::Event;
use qchat_server::RelayLimits;
use qchat_shared::codes::CloseCode;
use qchat_shared::frame::{ClientControl, Hello, Open, UploadReply, UploadStart};
use qchat_shared::io::{read_frame, write_frame};
use qchat_tests::{raw_handshake, write_file, TestClient, TestRelay};

fn close_code(error: &quinn::ConnectionError) -> Option<CloseCode> {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => Some(CloseCode::from_varint(close.error_code)),
        _ => None,
    }
}

/// The resident memory of this process (the relay runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().split(' ').next()?.parse().ok());
    kib.unwrap_or(0) * 1024
}

async fn chat_still_works(alice: &mut TestClient, bob: &mut TestClient) {
    let text = format!("still here {}", rand::random::<u32>());
    alice.client.send_and_wait(text.as_str()).await.expect("alice's message is stored");
    let got = bob.messages(1).await;
    assert_eq!(got[0].text, text);
}

#[tokio::test]
async fn a_client_that_never_reads_its_replies_stops_being_read() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    // Something to list, so that each reply has some size.
    for i in 0..20 {
        let path = write_file(&relay.tmp.path().join(format!("f{i}.bin")), 10);
        let transfer = alice.client.send_file(&path);
        alice.uploaded(transfer).await;
    }
    let mut raw = relay.raw("bob").await;
    let before = rss();
    let request = qchat_shared::codec::encode(&ClientControl::ListFiles).unwrap();
    let batch: Vec<u8> = request.iter().copied().cycle().take(request.len() * 10_000).collect();
    let mut written = 0u64;
    let stalled = loop {
        match tokio::time::timeout(Duration::from_secs(2), raw.control.0.write_all(&batch)).await {
            Ok(result) => result.expect("the relay keeps the stream open"),
            Err(_) => break true,
        }
        written += batch.len() as u64;
        if written > 64 << 20 {
            break false;
        }
    };
    assert!(stalled, "the relay read {written} bytes of requests whose replies nobody read");
    let grown = rss().saturating_sub(before);
    assert!(grown < 64 << 20, "the relay grew by {grown} bytes");
    chat_still_works(&mut alice, &mut bob).await;
    chat_still_works(&mut bob, &mut alice).await;
}

/// Opens an upload (of a sealed file of `size` bytes) on a raw connection and returns its
/// streams once the relay is ready.
async fn raw_upload(connection: &quinn::Connection, size: u64) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let size = qchat_shared::seal::sealed_len(size);
    write_frame(&mut send, &Open::Upload(UploadStart { room: None, size, resume: None })).await.unwrap();
    let ready = read_frame::<UploadReply, _>(&mut recv).await.unwrap();
    assert!(matches!(ready, Some(UploadReply::Ready { .. })), "{ready:?}");
    (send, recv)
}

#[tokio::test]
async fn sixteen_slow_uploads_of_alice_leave_room_for_bob() {
    let relay = TestRelay::start().await;
    let mut bob = relay.client("bob");
    bob.connected().await;
    let raw = relay.raw("alice").await;
    // Sixteen uploads that trickle: progress, so none of them counts as stalled.
    let mut streams = Vec::new();
    for _ in 0..16 {
        let opened = tokio::time::timeout(Duration::from_secs(1), raw_upload(&raw.connection, 1 << 30));
        match opened.await {
            Ok(streams_of_one) => streams.push(streams_of_one),
            Err(_) => break, // over alice's share: it waits its turn
        }
    }
    assert!(!streams.is_empty());
    let trickle = tokio::spawn(async move {
        loop {
            for (send, _) in &mut streams {
                let _ = send.write_all(&[0; 1024]).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let path = write_file(&relay.tmp.path().join("bob.bin"), 1 << 20);
    let started = Instant::now();
    let transfer = bob.client.send_file(&path);
    bob.uploaded(transfer).await;
    assert!(started.elapsed() < Duration::from_secs(5), "bob waited {:?}", started.elapsed());
    trickle.abort();
}

#[tokio::test]
async fn a_stalled_upload_gives_its_slot_back() {
    let limits = RelayLimits { max_transfers: 1, stall_timeout: Duration::from_secs(2), ..RelayLimits::default() };
    let relay = TestRelay::start_with(limits).await;
    let mut bob = relay.client("bob");
    bob.connected().await;
    let raw = relay.raw("alice").await;
    let (mut send, mut recv) = raw_upload(&raw.connection, 1000).await;
    send.write_all(&[1; 10]).await.unwrap();
    let path = write_file(&relay.tmp.path().join("bob.bin"), 4096);
    let transfer = bob.client.send_file(&path);
    bob.uploaded(transfer).await;
    let reply = read_frame::<UploadReply, _>(&mut recv).await.unwrap();
    match reply {
        Some(UploadReply::Refused { reason }) => assert!(reason.contains("no bytes arrived for 2 s"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn connections_that_never_say_hello_are_capped() {
    let relay = TestRelay::start().await;
    let per_user = RelayLimits::default().max_pending_per_user;
    let mut parked = Vec::new();
    for _ in 0..per_user {
        parked.push(raw_handshake(&relay.identity("alice"), relay.addr).await);
    }
    // Let the relay count them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_endpoint, one_more) = raw_handshake(&relay.identity("alice"), relay.addr).await;
    let error = tokio::time::timeout(Duration::from_secs(5), one_more.closed()).await.expect("refused at once");
    assert_eq!(close_code(&error), Some(CloseCode::Reconnect), "{error:?}");
    assert!(error.to_string().contains("already opening"), "{error}");
    // Bob is not affected, and alice can connect once a parked one goes.
    relay.client("bob").connected().await;
    parked.clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.client("alice").connected().await;
}

#[tokio::test]
async fn a_connection_parked_before_hello_is_refused_after_a_revocation() {
    let relay = TestRelay::start().await;
    let mut live = relay.client("alice");
    live.connected().await;
    let (_endpoint, parked) = raw_handshake(&relay.identity("alice"), relay.addr).await;
    qchat_certs::revoke(&relay.pki, "alice").unwrap();
    let reason = live.refused().await;
    assert!(reason.contains("revoked"), "{reason}");
    let (mut send, _recv) = parked.open_bi().await.unwrap();
    write_frame(&mut send, &Open::Hello(Hello { receipts_after: 0 })).await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), parked.closed()).await.expect("closed");
    assert_eq!(close_code(&error), Some(CloseCode::Revoked), "{error:?}");
}

#[tokio::test]
async fn waiting_files_and_message_bytes_are_capped_with_clear_errors() {
    // One encrypted message of 60 characters and its 256 bytes fit; two do not.
    let limits = RelayLimits { max_waiting_files: 3, max_waiting_message_bytes: 900, ..RelayLimits::default() };
    let relay = TestRelay::start_with(limits).await;
    let (mut alice, bob) = relay.pair().await;
    // Bob is online and takes the files' encrypted offers (messages), not the files.
    for i in 0..3 {
        let empty = write_file(&relay.tmp.path().join(format!("empty{i}")), 0);
        let transfer = alice.client.send_file(&empty);
        alice.uploaded(transfer).await;
    }
    let one_more = write_file(&relay.tmp.path().join("empty3"), 0);
    let transfer = alice.client.send_file(&one_more);
    let reason = alice.refused_transfer(transfer).await;
    assert!(reason.contains("3 files on the relay that nobody has fetched"), "{reason}");

    bob.stop().await;
    alice.client.send_and_wait("x".repeat(60)).await.unwrap();
    let refused = alice.client.send_and_wait("y".repeat(60)).await.unwrap_err();
    assert!(refused.to_string().contains("waiting on the relay"), "{refused}");
    // Once bob takes them, there is room again.
    let mut bob = relay.client("bob");
    bob.connected().await;
    bob.messages(1).await;
    let (saved, failed) = bob.receive_all().await;
    assert_eq!((saved.len(), failed.len()), (3, 0));
    let transfer = alice.client.send_file(&one_more);
    alice.uploaded(transfer).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while alice.client.send_and_wait("y".repeat(60)).await.is_err() {
        assert!(Instant::now() < deadline, "the delivered bytes were never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_undelivered_message_expires_and_its_sender_is_told() {
    let limits = RelayLimits {
        message_expiry: Duration::from_millis(500),
        sweep_every: Duration::from_secs(3600),
        ..RelayLimits::default()
    };
    let relay = TestRelay::start_with(limits).await;
    let mut alice = relay.client("alice");
    alice.connected().await;
    let sent = alice.client.send_and_wait("nobody reads this").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    relay.relay().sweep_now().await;
    let (id, seq) = alice
        .expect("the expiry", |e| match e {
            Event::MessageExpired { id, seq } => Some((id, seq)),
            _ => None,
        })
        .await;
    assert_eq!((id, seq), (sent.id, sent.seq));
    let mut bob = relay.client("bob");
    let status = bob.connected().await;
    assert_eq!(status.waiting_for_you, 0, "it is gone from the relay");
}

#[tokio::test]
async fn delivered_messages_go_after_their_retention() {
    let limits = RelayLimits { message_retention: Duration::ZERO, ..RelayLimits::default() };
    let relay = TestRelay::start_with(limits).await;
    let (mut alice, mut bob) = relay.pair().await;
    for i in 0..50 {
        alice.client.send(format!("m{i}"));
    }
    bob.messages(50).await;
    let db = rusqlite::Connection::open(relay.data.join("relay.db")).unwrap();
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("SELECT COUNT(*) FROM messages WHERE delivered_ms IS NULL") > 0 {
        assert!(Instant::now() < deadline, "bob's acknowledgements never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.relay().sweep_now().await;
    let left = count("SELECT COUNT(*) FROM messages");
    assert_eq!(left, 0, "delivered and past retention");
    chat_still_works(&mut alice, &mut bob).await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_relays_and_the_clients_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    let path = write_file(&relay.tmp.path().join("secret.bin"), 100);
    let transfer = alice.client.send_file(&path);
    let file_id = alice.uploaded(transfer).await;
    chat_still_works(&mut alice, &mut bob).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&relay.data), 0o700, "the data directory");
    for file in ["relay.db", "relay.db-wal", "relay.db-shm"] {
        assert_eq!(mode(&relay.data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&relay.data.join("spool").join(file_id.to_string())), 0o600, "a spool file");
    let state = std::fs::read_dir(relay.clients_dir.join("clients")).unwrap();
    let mut seen = 0;
    for dir in state {
        let dir = dir.unwrap().path();
        for name in ["history.db", "history.db-wal", "state.json"] {
            if dir.join(name).exists() {
                assert_eq!(mode(&dir.join(name)), 0o600, "{}", dir.join(name).display());
                seen += 1;
            }
        }
    }
    assert!(seen >= 4, "the clients' files were checked");
}

#[tokio::test]
async fn a_history_that_cannot_be_written_is_reported_and_not_acknowledged() {
    let relay = TestRelay::start().await;
    let mut alice = relay.client("alice");
    alice.connected().await;
    let mut bob = relay.client("bob");
    bob.connected().await;
    bob.stop().await;
    // Bob's history database becomes a folder: it cannot be opened, nor written.
    let bob_dir = std::fs::read_dir(relay.clients_dir.join("clients"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("bob@"))
        .expect("bob's state folder");
    for name in ["history.db", "history.db-wal", "history.db-shm"] {
        let _ = std::fs::remove_file(bob_dir.join(name));
    }
    std::fs::create_dir_all(bob_dir.join("history.db")).unwrap();
    alice.client.send_and_wait("keep me").await.unwrap();
    let mut bob = relay.client("bob");
    let reason = bob
        .expect("the error", |e| match e {
            Event::LocalError { reason } => Some(reason),
            _ => None,
        })
        .await;
    assert!(reason.contains("history"), "{reason}");
    bob.stop().await;
    let status = relay.client("alice").connected().await;
    assert_eq!(status.waiting_for_peer, 1, "not acknowledged, so it waits on the relay");
}

#[tokio::test]
async fn deliveries_wait_for_acknowledgements_beyond_a_window() {
    let relay = TestRelay::start().await;
    let mut alice = relay.client("alice");
    alice.connected().await;
    for i in 0..300 {
        alice.client.send(format!("m{i}"));
    }
    alice.client.send_and_wait("last").await.unwrap();
    let raw = relay.raw("bob").await;
    let window = qchat_server::delivery::DELIVERY_WINDOW as usize;
    let mut received = 0;
    while let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(2), raw.connection.accept_uni()).await {
        let delivery = read_frame::<qchat_shared::frame::Deliver, _>(&mut stream).await.unwrap().unwrap();
        assert_eq!(delivery.index, received as u64);
        received += 1;
    }
    assert_eq!(received, window, "a client that acknowledges nothing gets the window, no more");
}
