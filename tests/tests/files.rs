//! Files through a real relay: boundary sizes, a large file, chat during a transfer,
//! resumes that send nothing twice, a damaged spool, hostile names, limits, retention.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use qchat_client::Event;
use qchat_server::RelayLimits;
use qchat_shared::limits::CHUNK;
use qchat_shared::seal::sealed_len;
use qchat_tests::{same_content, wait_for_bytes, write_file, TestRelay};

#[tokio::test]
async fn boundary_sizes_arrive_verified() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    let sizes = [0, 1, CHUNK as u64 - 1, CHUNK as u64, CHUNK as u64 + 1, 3 * CHUNK as u64 + 17];
    let dir = relay.tmp.path().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    let mut sources = Vec::new();
    for size in sizes {
        let path = write_file(&dir.join(format!("size-{size}.bin")), size);
        let transfer = alice.client.send_file(&path);
        alice.uploaded(transfer).await;
        sources.push(path);
    }
    let (saved, failed) = bob.receive_all().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(saved.len(), sizes.len());
    for source in &sources {
        let name = source.file_name().unwrap();
        same_content(source, &relay.downloads("bob").join(name));
    }
    // Nothing is left half-done: no partial files.
    let partials = std::fs::read_dir(relay.downloads("bob"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "part"));
    assert_eq!(partials.count(), 0);
    // The sender hears that the peer has them.
    alice.expect("fetched", |e| matches!(e, Event::FileFetched { .. }).then_some(())).await;
}

#[tokio::test]
async fn a_large_file_does_not_hold_up_chat() {
    let size: u64 = 256 << 20;
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    let path = write_file(&relay.tmp.path().join("big.bin"), size);
    let transfer = alice.client.send_file(&path);
    wait_for_bytes(&relay.relay().stats().upload_bytes, size / 8).await;

    // Chat while the upload runs: each message arrives long before the file is done.
    let mut latencies = Vec::new();
    for i in 0..5 {
        let sent = Instant::now();
        bob.client.send(format!("ping {i}"));
        alice.messages(1).await;
        latencies.push(sent.elapsed());
    }
    let held = relay.relay().stats().upload_bytes.load(Ordering::Relaxed);
    assert!(held < size, "the upload was still running while chat flowed");
    let worst = latencies.iter().max().unwrap();
    assert!(*worst < Duration::from_millis(500), "chat waited behind the file: {latencies:?}");

    alice.uploaded(transfer).await;
    let (saved, failed) = bob.receive_all().await;
    assert!(failed.is_empty(), "{failed:?}");
    same_content(&path, &saved[0]);
}

#[tokio::test]
async fn two_files_at_once_in_each_direction() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    let dir = relay.tmp.path();
    let a1 = write_file(&dir.join("a1.bin"), 3 << 20);
    let a2 = write_file(&dir.join("a2.bin"), 5 << 20);
    let b1 = write_file(&dir.join("b1.bin"), 4 << 20);
    let b2 = write_file(&dir.join("b2.bin"), 1 << 20);
    let (ta1, ta2) = (alice.client.send_file(&a1), alice.client.send_file(&a2));
    let (tb1, tb2) = (bob.client.send_file(&b1), bob.client.send_file(&b2));
    alice.uploaded_all(&[ta1, ta2]).await;
    bob.uploaded_all(&[tb1, tb2]).await;
    let (bob_saved, bob_failed) = bob.receive_all().await;
    let (alice_saved, alice_failed) = alice.receive_all().await;
    assert!(bob_failed.is_empty() && alice_failed.is_empty());
    assert_eq!((bob_saved.len(), alice_saved.len()), (2, 2));
    same_content(&a1, &relay.downloads("bob").join("a1.bin"));
    same_content(&a2, &relay.downloads("bob").join("a2.bin"));
    same_content(&b1, &relay.downloads("alice").join("b1.bin"));
    same_content(&b2, &relay.downloads("alice").join("b2.bin"));
}

fn resumed_offset(event: Event) -> Option<u64> {
    match event {
        Event::Resumed { offset, .. } => Some(offset),
        _ => None,
    }
}

#[tokio::test]
async fn an_upload_cut_mid_way_resumes_and_sends_nothing_twice() {
    let size: u64 = 64 << 20;
    let relay = TestRelay::start().await;
    let (mut alice, _bob) = relay.pair().await;
    let path = write_file(&relay.tmp.path().join("cut.bin"), size);
    let transfer = alice.client.send_file(&path);
    wait_for_bytes(&relay.relay().stats().upload_bytes, size / 3).await;
    relay.relay().disconnect("alice");
    let offset = alice.expect("a resume", resumed_offset).await;
    assert!(offset >= size / 3, "resumed from {offset}");
    alice.uploaded(transfer).await;
    let received = relay.relay().stats().upload_bytes.load(Ordering::Relaxed);
    assert_eq!(received, sealed_len(size), "the relay received every (sealed) byte exactly once");
}

#[tokio::test]
async fn sending_the_same_file_again_resumes_it_after_a_relay_restart() {
    let size: u64 = 64 << 20;
    let mut relay = TestRelay::start().await;
    let (alice, _bob) = relay.pair().await;
    let path = write_file(&relay.tmp.path().join("restart.bin"), size);
    alice.client.send_file(&path);
    wait_for_bytes(&relay.relay().stats().upload_bytes, size / 2).await;
    alice.stop().await;
    relay.restart().await;

    // A new run of the client (as `qchat-cli send-file` again) finds its record.
    let mut alice = relay.client("alice");
    alice.connected().await;
    let transfer = alice.client.send_file(&path);
    let offset = alice.expect("a resume", resumed_offset).await;
    assert!(offset > 0, "resumed from {offset}");
    alice.uploaded(transfer).await;
    let sent_again = relay.relay().stats().upload_bytes.load(Ordering::Relaxed);
    // What the relay held, counted in the file's bytes: of the sealed bytes, only the
    // rest was sent (the offset is told in the file's own bytes, the relay counts sealed).
    let rest = sealed_len(size) - offset;
    assert!(sent_again <= rest && rest - sent_again < sealed_len(size) - size, "sent {sent_again} of {rest}");
    let mut bob = relay.client("bob");
    bob.connected().await;
    let (saved, failed) = bob.receive_all().await;
    assert!(failed.is_empty(), "{failed:?}");
    same_content(&path, &saved[0]);
}

#[tokio::test]
async fn a_download_cut_mid_way_resumes_and_one_killed_resumes_from_its_partial() {
    let size: u64 = 64 << 20;
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    let path = write_file(&relay.tmp.path().join("down.bin"), size);
    let transfer = alice.client.send_file(&path);
    alice.uploaded(transfer).await;

    // Cut the connection half way: the client reconnects and resumes by itself.
    bob.client.receive_all(None);
    wait_for_bytes(&relay.relay().stats().download_bytes, size / 2).await;
    relay.relay().disconnect("bob");
    let offset = bob.expect("a resume", resumed_offset).await;
    assert!(offset > 0);
    let saved = bob
        .expect("the file", |e| match e {
            Event::FileSaved { path, .. } => Some(path),
            _ => None,
        })
        .await;
    same_content(&path, &saved);
    // Sent again: only what was on its way at the cut (the relay counts what it handed to
    // QUIC, at most bob's stream window ahead of what he holds). Starting over would send
    // the half already counted again.
    let sent = relay.relay().stats().download_bytes.load(Ordering::Relaxed);
    let in_flight = qchat_shared::transport::STREAM_WINDOW + 2 * CHUNK as u64;
    assert!(in_flight < size / 2, "the test's file is too small to tell");
    assert!(sent < size + in_flight, "more than what was in flight was sent again ({sent} for {size})");

    // Stop the client mid-download: a new one resumes from the partial file.
    let second = write_file(&relay.tmp.path().join("second.bin"), size);
    let transfer = alice.client.send_file(&second);
    alice.uploaded(transfer).await;
    let before = relay.relay().stats().download_bytes.load(Ordering::Relaxed);
    bob.client.receive_all(None);
    wait_for_bytes(&relay.relay().stats().download_bytes, before + size / 3).await;
    bob.stop().await;
    let mut bob = relay.client("bob");
    bob.connected().await;
    bob.client.receive_all(None);
    let offset = bob.expect("a resume from the partial file", resumed_offset).await;
    assert!(offset > 0);
    let saved = bob
        .expect("the second file", |e| match e {
            Event::FileSaved { path, .. } => Some(path),
            Event::TransferFailed { reason, .. } => panic!("{reason}"),
            _ => None,
        })
        .await;
    same_content(&second, &saved);
}

#[tokio::test]
async fn a_damaged_spool_file_is_caught_by_the_receiver() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    let path = write_file(&relay.tmp.path().join("flip.bin"), 2 << 20);
    let transfer = alice.client.send_file(&path);
    let file_id = alice.uploaded(transfer).await;
    let spooled = relay.data.join("spool").join(file_id.to_string());
    let mut bytes = std::fs::read(&spooled).unwrap();
    bytes[1 << 20] ^= 0x01;
    std::fs::write(&spooled, bytes).unwrap();

    let (saved, failed) = bob.receive_all().await;
    assert!(saved.is_empty());
    assert!(failed[0].contains("altered on the relay or on the way"), "{failed:?}");
    let left: Vec<_> = std::fs::read_dir(relay.downloads("bob")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [qchat_client::download::PARTIAL_DIR], "nothing under the final name");
    let partials = std::fs::read_dir(relay.downloads("bob").join(qchat_client::download::PARTIAL_DIR)).unwrap();
    assert_eq!(partials.count(), 0, "no partial either");
}

#[tokio::test]
async fn hostile_names_land_inside_the_download_folder_and_same_names_both_arrive() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    let names = ["..\\..\\x", "CON", "line\nbreak", &"n".repeat(250), "same.txt"];
    for (i, name) in names.iter().enumerate() {
        let dir = relay.tmp.path().join(format!("src{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let transfer = alice.client.send_file(write_file(&dir.join(name), 100 + i as u64));
        alice.uploaded(transfer).await;
    }
    let other = relay.tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let transfer = alice.client.send_file(write_file(&other.join("same.txt"), 7));
    alice.uploaded(transfer).await;

    let (saved, failed) = bob.receive_all().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(saved.len(), names.len() + 1);
    let folder = relay.downloads("bob");
    for path in &saved {
        assert_eq!(path.parent().unwrap(), folder, "{path:?} is inside the folder");
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(!name.contains('\n') && !name.contains('\\') && name.len() <= 200, "{name:?}");
    }
    let mut names: Vec<_> = saved.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
    names.sort();
    assert!(names.contains(&"same.txt".to_string()) && names.contains(&"same (1).txt".to_string()), "{names:?}");
    assert!(names.contains(&"_CON".to_string()), "{names:?}");
}

#[tokio::test]
async fn size_limit_and_quota_are_refused_clearly() {
    let limits = RelayLimits { max_file_size: 4 << 20, quota: 6 << 20, ..RelayLimits::default() };
    let relay = TestRelay::start_with(limits).await;
    let (mut alice, _bob) = relay.pair().await;
    let dir = relay.tmp.path();
    let too_big = alice.client.send_file(write_file(&dir.join("big.bin"), (4 << 20) + 1));
    let reason = alice.refused_transfer(too_big).await;
    assert!(reason.contains("at most 4.0 MiB"), "{reason}");
    let first = alice.client.send_file(write_file(&dir.join("four.bin"), 4 << 20));
    alice.uploaded(first).await;
    let over = alice.client.send_file(write_file(&dir.join("three.bin"), 3 << 20));
    let reason = alice.refused_transfer(over).await;
    assert!(reason.contains("quota"), "{reason}");
    let fits = alice.client.send_file(write_file(&dir.join("two.bin"), 2 << 20));
    alice.uploaded(fits).await;
}

#[tokio::test]
async fn fetched_files_are_swept_after_the_retention_and_the_sender_is_told() {
    let limits = RelayLimits { retention: Duration::ZERO, ..RelayLimits::default() };
    let relay = TestRelay::start_with(limits).await;
    let (mut alice, mut bob) = relay.pair().await;
    let transfer = alice.client.send_file(write_file(&relay.tmp.path().join("keep.bin"), 1000));
    let file_id = alice.uploaded(transfer).await;
    assert_eq!(relay.relay().sweep_now().await, 0, "not fetched yet, so not swept");
    let (saved, _) = bob.receive_all().await;
    assert_eq!(saved.len(), 1);
    alice.expect("fetched", |e| matches!(e, Event::FileFetched { .. }).then_some(())).await;
    assert_eq!(relay.relay().sweep_now().await, 1);
    assert!(!relay.data.join("spool").join(file_id.to_string()).exists());
    let (id, fetched) = alice
        .expect("the expiry notice", |e| match e {
            Event::FileExpired { file_id, fetched, .. } => Some((file_id, fetched)),
            _ => None,
        })
        .await;
    assert_eq!((id, fetched), (file_id, true));
}

#[tokio::test]
async fn an_altered_partial_download_is_caught_by_the_hash_and_fetched_again() {
    let size: u64 = 32 << 20;
    let relay = TestRelay::start().await;
    let (mut alice, bob) = relay.pair().await;
    let path = write_file(&relay.tmp.path().join("tamper.bin"), size);
    let transfer = alice.client.send_file(&path);
    let file_id = alice.uploaded(transfer).await;

    bob.client.receive_all(None);
    wait_for_bytes(&relay.relay().stats().download_bytes, size / 2).await;
    bob.stop().await;
    let partial = qchat_client::download::partial_path(&relay.downloads("bob"), file_id);
    let mut bytes = std::fs::read(&partial).expect("a partial file is left");
    assert!(!bytes.is_empty());
    bytes[0] ^= 0xff;
    std::fs::write(&partial, bytes).unwrap();

    let mut bob = relay.client("bob");
    bob.connected().await;
    let (saved, failed) = bob.receive_all().await;
    assert!(saved.is_empty());
    assert!(failed[0].contains("altered"), "{failed:?}");
    assert!(!partial.exists(), "the bad partial file is gone");
    let (saved, failed) = bob.receive_all().await;
    assert!(failed.is_empty(), "{failed:?}");
    same_content(&path, &saved[0]);
}

#[tokio::test]
async fn files_sent_with_their_folder_land_in_the_same_folders_and_a_hostile_name_stays_inside() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    let sent = [
        ("holiday/a.jpg", 1000u64),
        ("holiday/day 2/b.jpg", CHUNK as u64 + 1),
        ("../../outside.txt", 10),
        ("/etc/cron.d/evil", 10),
    ];
    let mut transfers = Vec::new();
    for (i, (name, size)) in sent.iter().enumerate() {
        let source = write_file(&relay.tmp.path().join(format!("source-{i}")), *size);
        transfers.push(alice.client.send_file_named(None, source, Some(name.to_string())));
    }
    alice.uploaded_all(&transfers).await;
    let (saved, failed) = bob.receive_all().await;
    assert!(failed.is_empty(), "{failed:?}");
    let downloads = relay.downloads("bob");
    let mut landed: Vec<String> =
        saved.iter().map(|p| p.strip_prefix(&downloads).unwrap().to_string_lossy().into_owned()).collect();
    landed.sort();
    assert_eq!(landed, ["etc/cron.d/evil", "holiday/a.jpg", "holiday/day 2/b.jpg", "outside.txt"]);
    assert_eq!(std::fs::metadata(downloads.join("holiday/day 2/b.jpg")).unwrap().len(), CHUNK as u64 + 1);
    assert!(!downloads.parent().unwrap().join("outside.txt").exists(), "nothing above the download folder");
}
