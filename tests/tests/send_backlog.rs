//! A file sent faster than its link carries it: quinn takes what the send window allows
//! (sized for far paths, 20 MiB), so without a limit the sender's memory holds that much of
//! the file written and not yet sent. With the stream's connection given
//! (`SendOptions::connection`), at most a few MiB wait besides what is in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use qchat_shared::congestion::MIN_WINDOW;
use qchat_shared::limits::CHUNK;
use qchat_shared::transfer::{self, SendOptions, QUEUE_AHEAD};
use qchat_tests::fake_relay::FakeRelay;
use qchat_tests::link::{EmulatedLink, LinkSpec};
use qchat_tests::TestRelay;

/// Sends a 24 MiB file over a 100 Mbit/s link, limited or not; returns the most the
/// sender had written beyond what the receiver had read, sampled as it goes.
async fn most_written_ahead(limited: bool) -> u64 {
    let size: u64 = 24 << 20;
    let relay = TestRelay::start().await;
    let server = FakeRelay::start(&relay.pki);
    let link = EmulatedLink::start(server.addr, LinkSpec::new(100, 2, 0.0)).unwrap();
    let endpoint = server.endpoint.clone();
    let accepting = tokio::spawn(async move { endpoint.accept().await.unwrap().await.unwrap() });
    let (_endpoint, connection) = qchat_tests::raw_handshake(&relay.identity("alice"), link.addr).await;
    let accepted = accepting.await.unwrap();

    let path = relay.tmp.path().join("sent.bin");
    std::fs::write(&path, vec![7u8; size as usize]).unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let reader = {
        let read = read.clone();
        tokio::spawn(async move {
            let mut recv = accepted.accept_uni().await.unwrap();
            let mut buf = vec![0; 64 * 1024];
            while let Some(n) = recv.read(&mut buf).await.unwrap() {
                read.fetch_add(n as u64, Ordering::Relaxed);
            }
            accepted
        })
    };
    let mut stream = connection.open_uni().await.unwrap();
    let options = SendOptions { connection: limited.then(|| connection.clone()), ..SendOptions::default() };
    let mut most = 0;
    let file = std::fs::File::open(&path).unwrap();
    let sending = transfer::send(&mut stream, file, size, options, |written| {
        most = most.max(written.saturating_sub(read.load(Ordering::Relaxed)));
    });
    tokio::time::timeout(Duration::from_secs(60), sending).await.expect("sent in time").unwrap();
    stream.finish().unwrap();
    let _accepted = reader.await.unwrap();
    assert_eq!(read.load(Ordering::Relaxed), size);
    most
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sender_on_a_slow_link_keeps_little_of_the_file_waiting() {
    let limited = most_written_ahead(true).await;
    let unlimited = most_written_ahead(false).await;
    println!("written ahead of the reader at most: {limited} bytes limited, {unlimited} not");
    // The limit, a chunk written at once, and what is in flight or queued on the link (the
    // congestion window's floor, twice).
    let bound = QUEUE_AHEAD + CHUNK as u64 + 2 * MIN_WINDOW;
    assert!(limited <= bound, "{limited} bytes waited, more than {bound}");
    assert!(unlimited > bound, "the link does not make a sender run ahead ({unlimited} bytes): the test tells nothing");
}
