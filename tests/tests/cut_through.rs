//! Cut-through: a recipient who is online gets a file's offer as soon as its upload starts,
//! and a download that follows the upload, finishing verified right after the commit; an
//! upload that is cut and resumed is followed on, and one that is cancelled fails its
//! download clearly, with nothing saved.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use qchat_client::Event;
use qchat_shared::limits::CHUNK;
use qchat_tests::link::{EmulatedLink, LinkSpec};
use qchat_tests::{same_content, write_file, TestClient, TestRelay};

/// Alice's uplink: slow enough that an upload of a few MiB takes a second or more.
fn slow_uplink() -> LinkSpec {
    LinkSpec::new(40, 10, 0.0)
}

/// A relay; alice connected through a slow link, bob on loopback receiving every file as
/// it is offered.
async fn alice_far_and_bob_waiting() -> (TestRelay, EmulatedLink, TestClient, TestClient) {
    let relay = TestRelay::start().await;
    let link = EmulatedLink::start(relay.addr, slow_uplink()).unwrap();
    let mut alice = relay.client_via("alice", link.addr);
    let mut bob = relay.client("bob");
    alice.connected().await;
    bob.connected().await;
    bob.client.receive_as_offered(None);
    (relay, link, alice, bob)
}

/// Bob waits for files as they are offered; returns when each saved path came.
async fn bob_receives(bob: &mut TestClient, n: usize) -> Vec<(Instant, PathBuf)> {
    let mut saved = Vec::new();
    while saved.len() < n {
        let path = bob
            .expect("a saved file", |e| match e {
                Event::FileSaved { path, .. } => Some(path),
                Event::TransferFailed { reason, .. } => panic!("download failed: {reason}"),
                _ => None,
            })
            .await;
        saved.push((Instant::now(), path));
    }
    saved
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_recipient_downloads_while_the_upload_runs_and_has_it_right_after_the_commit() {
    let (relay, _link, mut alice, mut bob) = alice_far_and_bob_waiting().await;
    // 8 MiB at 40 Mbit/s: about 1.7 s of upload.
    let path = write_file(&relay.tmp.path().join("big.bin"), 8 << 20);
    let started = Instant::now();
    let transfer = alice.client.send_file(&path);

    let offer = bob
        .expect("an arriving offer", |e| match e {
            Event::FileOffered(offer) => Some(offer),
            _ => None,
        })
        .await;
    assert!(offer.blake3.is_none(), "offered while arriving, before its hash is known");
    let first_bytes = bob
        .expect("download progress", |e| match e {
            Event::Progress { done, .. } if done > 0 => Some(Instant::now()),
            _ => None,
        })
        .await;
    let (uploaded, saved) = tokio::join!(
        async {
            alice.uploaded(transfer).await;
            Instant::now()
        },
        bob_receives(&mut bob, 1)
    );
    let (saved_at, saved_path) = &saved[0];
    println!(
        "offer after {:?}, first bytes at bob after {:?}, upload committed after {:?}, saved after {:?}",
        first_bytes.duration_since(started),
        first_bytes.duration_since(started),
        uploaded.duration_since(started),
        saved_at.duration_since(started)
    );
    assert!(first_bytes < uploaded, "bob's download began before the upload ended");
    assert!(
        saved_at.saturating_duration_since(uploaded) < Duration::from_secs(2),
        "saved {:?} after the commit",
        saved_at.saturating_duration_since(uploaded)
    );
    same_content(&path, saved_path);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_of_boundary_sizes_are_followed_and_verified() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    bob.client.receive_as_offered(None);
    let chunk = CHUNK as u64;
    let sizes = [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 17];
    let mut sent = Vec::new();
    for (i, size) in sizes.into_iter().enumerate() {
        let path = write_file(&relay.tmp.path().join(format!("f{i}.bin")), size);
        let transfer = alice.client.send_file(&path);
        alice.uploaded(transfer).await;
        sent.push(path);
    }
    let saved = bob_receives(&mut bob, sizes.len()).await;
    let mut saved: Vec<PathBuf> = saved.into_iter().map(|(_, p)| p).collect();
    saved.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    for (original, copy) in sent.iter().zip(&saved) {
        same_content(original, copy);
    }
    assert!(relay.relay().arrivals().is_empty(), "nothing of the uploads stays in memory");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_upload_fails_the_download_following_it_and_nothing_is_saved() {
    let (relay, _link, alice, mut bob) = alice_far_and_bob_waiting().await;
    let path = write_file(&relay.tmp.path().join("cancelled.bin"), 32 << 20);
    let transfer = alice.client.send_file(&path);
    bob.expect("download progress", |e| matches!(e, Event::Progress { done, .. } if done > 0).then_some(())).await;
    alice.client.cancel(transfer);
    let reason = bob
        .expect("the download to fail", |e| match e {
            Event::TransferFailed { reason, .. } => Some(reason),
            Event::FileSaved { .. } => panic!("a cancelled file was saved"),
            _ => None,
        })
        .await;
    assert!(reason.contains("will not arrive"), "{reason}");
    let downloads = relay.downloads("bob");
    let left: Vec<_> = walk(&downloads);
    assert!(left.is_empty(), "nothing is kept of a withdrawn file: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_is_cut_resumes_and_the_download_keeps_following_it() {
    let (relay, link, alice, mut bob) = alice_far_and_bob_waiting().await;
    let path = write_file(&relay.tmp.path().join("cut.bin"), 12 << 20);
    alice.client.send_file(&path);
    bob.expect("download progress", |e| matches!(e, Event::Progress { done, .. } if done > 1 << 20).then_some(()))
        .await;
    // Alice's client goes away mid-upload; a new one sends the same file again.
    alice.stop().await;
    let mut alice = relay.client_via("alice", link.addr);
    alice.connected().await;
    let transfer = alice.client.send_file(&path);
    let resumed = alice
        .expect("the upload to resume", |e| match e {
            Event::Resumed { offset, .. } => Some(offset),
            Event::Uploaded { .. } => Some(0),
            _ => None,
        })
        .await;
    assert!(resumed > 0, "the upload resumed where it stopped");
    alice.uploaded(transfer).await;
    let saved = bob_receives(&mut bob, 1).await;
    same_content(&path, &saved[0].1);
}

/// Every file under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
