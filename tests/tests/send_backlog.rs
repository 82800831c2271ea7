//! A file sent faster than its link carries it: quinn takes what the send window allows
//! (sized for far paths, 20 MiB), so without a limit the sender's memory holds that much of
//! the file written and not yet sent. With the stream's connection given
//! (`SendOptions::connection`), little more than `QUEUE_AHEAD` waits besides what is in
//! flight, and a peer that goes away is heard at once, not after the stall timeout.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qchat_shared::congestion::MIN_WINDOW;
use qchat_shared::limits::CHUNK;
use qchat_shared::transfer::{self, SendOptions, TransferError, QUEUE_AHEAD};
use qchat_tests::fake_relay::FakeRelay;
use qchat_tests::link::{EmulatedLink, LinkSpec};
use qchat_tests::TestRelay;

const SIZE: u64 = 24 << 20;

/// A sender and a receiver connected over an emulated 100 Mbit/s link, and a file of
/// [`SIZE`] bytes to send.
struct SlowLink {
    _relay: TestRelay,
    _link: EmulatedLink,
    _endpoint: quinn::Endpoint,
    sender: quinn::Connection,
    receiver: quinn::Connection,
    file: PathBuf,
}

impl SlowLink {
    async fn start() -> SlowLink {
        let relay = TestRelay::start().await;
        let server = FakeRelay::start(&relay.pki);
        let link = EmulatedLink::start(server.addr, LinkSpec::new(100, 2, 0.0)).unwrap();
        let endpoint = server.endpoint.clone();
        let accepting = tokio::spawn(async move { endpoint.accept().await.unwrap().await.unwrap() });
        let (endpoint, sender) = qchat_tests::raw_handshake(&relay.identity("alice"), link.addr).await;
        let receiver = accepting.await.unwrap();
        let file = relay.tmp.path().join("sent.bin");
        std::fs::write(&file, vec![7u8; SIZE as usize]).unwrap();
        SlowLink { _relay: relay, _link: link, _endpoint: endpoint, sender, receiver, file }
    }

    /// Sends the file, limited or not, while the receiver reads it; with `leave_after`, the
    /// receiver closes its connection once it has read that much. Returns what the send came
    /// to, and the most it had written beyond what was read.
    async fn send(&self, limited: bool, leave_after: Option<u64>) -> (Result<(), TransferError>, u64) {
        let read = Arc::new(AtomicU64::new(0));
        let reader = {
            let (read, receiver) = (read.clone(), self.receiver.clone());
            tokio::spawn(async move {
                let mut recv = receiver.accept_uni().await.unwrap();
                let mut buf = vec![0; 64 * 1024];
                while let Ok(Some(n)) = recv.read(&mut buf).await {
                    let total = read.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                    if leave_after.is_some_and(|leave| total >= leave) {
                        receiver.close(0u32.into(), b"gone");
                        return;
                    }
                }
            })
        };
        let mut stream = self.sender.open_uni().await.unwrap();
        let options = SendOptions {
            connection: limited.then(|| self.sender.clone()),
            stall: Some(Duration::from_secs(60)),
            ..SendOptions::default()
        };
        let mut most = 0;
        let file = std::fs::File::open(&self.file).unwrap();
        let sending = transfer::send(&mut stream, file, SIZE, options, |written| {
            most = most.max(written.saturating_sub(read.load(Ordering::Relaxed)));
        });
        let sent = tokio::time::timeout(Duration::from_secs(90), sending).await.expect("the send ended");
        if sent.is_ok() {
            stream.finish().unwrap();
            reader.await.unwrap();
            assert_eq!(read.load(Ordering::Relaxed), SIZE);
        }
        (sent.map(|_| ()), most)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sender_on_a_slow_link_keeps_little_of_the_file_waiting() {
    let link = SlowLink::start().await;
    let (sent, limited) = link.send(true, None).await;
    sent.unwrap();
    let (sent, unlimited) = link.send(false, None).await;
    sent.unwrap();
    println!("written ahead of the reader at most: {limited} bytes limited, {unlimited} not");
    // The limit, a chunk written at once, what is in flight or queued on the link (twice
    // the congestion window's floor), and 2 MiB for a reader the machine is slow to run.
    let bound = QUEUE_AHEAD + CHUNK as u64 + 2 * MIN_WINDOW + (2 << 20);
    assert!(limited <= bound, "{limited} bytes waited, more than {bound}");
    // Unlimited, the sender runs ahead by about the stream's 16 MiB window.
    assert!(
        unlimited > 12 << 20,
        "the link does not make a sender run ahead ({unlimited} bytes): the test tells nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_goes_away_is_heard_at_once_by_a_waiting_sender() {
    // Once the connection is closed its counts stand still: a sender waiting for them to
    // show its backlog sent would wait for the stall timeout (60 s here).
    let link = SlowLink::start().await;
    let started = Instant::now();
    let (sent, _) = link.send(true, Some(2 << 20)).await;
    let took = started.elapsed();
    assert!(sent.is_err(), "the send went on after the receiver left");
    assert!(took < Duration::from_secs(10), "the sender heard the receiver left after {took:?}, not at once");
}
