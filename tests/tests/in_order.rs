//! A file's stream read out of order: bytes that come past a lost packet are read on, so
//! the sender is not held up by the gap, and handed over in order; what waits for a gap
//! is drawn from the budget and given back, and with none left the gap still fills. Until
//! it is told to read past gaps (a relay does once the stream holds a transfer slot), it
//! reads in order and keeps nothing.

use std::sync::Arc;
use std::time::Duration;

use qchat_shared::in_order::{InOrder, FREE_AHEAD};
use qchat_shared::window::WindowBudget;
use qchat_tests::fake_relay::FakeRelay;
use qchat_tests::link::{EmulatedLink, LinkSpec};
use qchat_tests::TestRelay;

/// The byte at `offset` of the test stream.
fn byte_at(offset: u64) -> u8 {
    (offset.wrapping_mul(2_654_435_761) >> 11) as u8
}

/// Sends `size` bytes on one stream over a link of `spec` and reads them through
/// [`InOrder`] drawing on `budget`, `read` bytes at a time, past gaps or not, checking each
/// byte; returns the most it held past a gap after a read.
async fn through_link(spec: LinkSpec, size: u64, budget: Arc<WindowBudget>, read: usize, past_gaps: bool) -> u64 {
    let relay = TestRelay::start().await;
    let server = FakeRelay::start(&relay.pki);
    let link = EmulatedLink::start(server.addr, spec).unwrap();
    let endpoint = server.endpoint.clone();
    let accepting = tokio::spawn(async move { endpoint.accept().await.unwrap().await.unwrap() });
    let (_endpoint, connection) = qchat_tests::raw_handshake(&relay.identity("alice"), link.addr).await;
    let sender = tokio::spawn(async move {
        let mut stream = connection.open_uni().await.unwrap();
        let data: Vec<u8> = (0..size).map(byte_at).collect();
        stream.write_all(&data).await.unwrap();
        stream.finish().unwrap();
        let _ = stream.stopped().await;
        connection
    });
    let accepted = accepting.await.unwrap();
    let mut reader = InOrder::new(accepted.accept_uni().await.unwrap(), budget.clone());
    if past_gaps {
        reader.read_past_gaps();
    }
    let mut buf = vec![0; read];
    let (mut at, mut most) = (0u64, 0u64);
    let reading = async {
        while let Some(n) = reader.read(&mut buf).await.unwrap() {
            for (i, byte) in buf[..n].iter().enumerate() {
                assert_eq!(*byte, byte_at(at + i as u64), "byte {} came out of order", at + i as u64);
            }
            at += n as u64;
            most = most.max(reader.waiting());
        }
    };
    tokio::time::timeout(Duration::from_secs(120), reading).await.expect("the stream was read to its end");
    assert_eq!(at, size, "every byte came");
    assert_eq!(reader.waiting(), 0);
    drop(reader);
    assert_eq!(budget.granted(), 0, "what was held went back to the budget");
    sender.await.unwrap();
    most
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_past_a_lost_packet_are_read_on_and_handed_over_in_order() {
    let budget = WindowBudget::new(64 << 20);
    let most = through_link(LinkSpec::new(400, 40, 0.01), 16 << 20, budget, 64 * 1024, true).await;
    println!("held at most {most} bytes past a gap");
    assert!(most > 0, "nothing was read past a lost packet");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_budget_spent_a_gap_still_fills_and_little_waits_for_it() {
    let read = 64 * 1024;
    let most = through_link(LinkSpec::new(400, 40, 0.01), 16 << 20, WindowBudget::new(0), read, true).await;
    println!("held at most {most} bytes past a gap");
    assert!(most <= FREE_AHEAD + read as u64, "{most} bytes held with no budget");
}

#[tokio::test(flavor = "multi_thread")]
async fn until_told_to_read_past_gaps_it_reads_in_order_and_keeps_nothing() {
    let budget = WindowBudget::new(64 << 20);
    let most = through_link(LinkSpec::new(400, 40, 0.01), 4 << 20, budget, 64 * 1024, false).await;
    assert_eq!(most, 0, "bytes past a gap were kept before the stream was allowed to");
}
