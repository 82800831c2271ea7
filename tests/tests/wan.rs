//! The emulated wide-area link itself: it holds its rate and its round trip, paces packets
//! out one by one, and is fast enough to stand for the links people have.

use std::io::IoSliceMut;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use qchat_tests::link::{EmulatedLink, LinkSpec};
use qchat_tests::{write_file, TestRelay};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};

/// One link at a time: they measure speed, and share two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sends datagrams of `size` bytes through `spec` for `secs`, as fast as the sender can
/// (many per system call, as quinn sends: GSO out, `recvmmsg` and GRO in, so that the
/// emulator is what is measured); returns the bytes that came out per second and the
/// first datagram's one-way time.
fn blast(spec: LinkSpec, size: usize, secs: f64) -> (f64, Duration) {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_state = UdpSocketState::new((&sink).into()).unwrap();
    let link = EmulatedLink::start(sink.local_addr().unwrap(), spec).unwrap();
    let source = UdpSocket::bind("127.0.0.1:0").unwrap();
    let source_state = UdpSocketState::new((&source).into()).unwrap();
    source.set_nonblocking(false).unwrap();
    let to = link.addr;
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        let segments = source_state.max_gso_segments().clamp(1, 64_000 / size);
        let datagrams = vec![7u8; size * segments];
        let transmit =
            Transmit { destination: to, ecn: None, contents: &datagrams, segment_size: Some(size), src_ip: None };
        while started.elapsed().as_secs_f64() < secs {
            let _ = source_state.send((&source).into(), &transmit);
        }
    });
    let mut storage = vec![0u8; 65_536 * BATCH_SIZE];
    let mut slots: Vec<IoSliceMut> = storage.chunks_mut(65_536).map(IoSliceMut::new).collect();
    let mut metas = [RecvMeta::default(); BATCH_SIZE];
    let (mut bytes, mut first, mut last) = (0u64, None, started);
    while last.elapsed() < Duration::from_millis(200) || first.is_none() && started.elapsed().as_secs_f64() < secs {
        match sink_state.recv((&sink).into(), &mut slots, &mut metas) {
            Ok(count) => {
                first.get_or_insert_with(|| started.elapsed());
                bytes += metas[..count].iter().map(|meta| meta.len as u64).sum::<u64>();
                last = Instant::now();
            }
            Err(_) => std::thread::sleep(Duration::from_micros(50)),
        }
    }
    sender.join().unwrap();
    let first = first.expect("something came through");
    let span = last.duration_since(started).saturating_sub(first).as_secs_f64().max(1e-3);
    (bytes as f64 / span, first)
}

#[test]
fn the_link_holds_its_rate_and_its_delay() {
    let _serial = ONE_AT_A_TIME.blocking_lock();
    let spec = LinkSpec::new(80, 40, 0.0);
    let (rate, first) = blast(spec, 1200, 1.0);
    let limit = spec.rate_bps as f64 / 8.0;
    println!("80 Mbit/s link: {:.1} MB/s out, first datagram after {first:?}", rate / 1e6);
    assert!(rate <= limit * 1.05, "{rate} B/s through a {limit} B/s link");
    assert!(rate >= limit * 0.8, "{rate} B/s: the link should be full");
    assert!(first >= Duration::from_millis(20), "one way is half the round trip: {first:?}");
    assert!(first < Duration::from_millis(80), "{first:?}");
}

#[test]
fn the_link_carries_a_hundred_megabytes_a_second() {
    let _serial = ONE_AT_A_TIME.blocking_lock();
    let spec = LinkSpec::new(2_000, 2, 0.0);
    // Best of three, as the benchmarks count: the machine's speed drifts.
    let rate = (0..3).map(|_| blast(spec, 1400, 1.0).0).fold(0.0, f64::max);
    println!("2 Gbit/s link: {:.1} MB/s out (best of 3)", rate / 1e6);
    assert!(rate >= 100e6, "the emulator carried only {:.1} MB/s", rate / 1e6);
}

/// The largest packet alice's connection to `addr` has found the path carries, once its
/// path MTU discovery has had `settle` to run, and how many of its probes were lost.
async fn packet_size_found(relay: &TestRelay, addr: std::net::SocketAddr, settle: Duration) -> (u16, u64) {
    let (_endpoint, connection) = qchat_tests::raw_handshake(&relay.identity("alice"), addr).await;
    tokio::time::sleep(settle).await;
    let path = connection.stats().path;
    (path.current_mtu, path.lost_plpmtud_probes)
}

#[tokio::test(flavor = "multi_thread")]
async fn packets_grow_past_ethernet_where_the_path_carries_them_and_not_where_it_does_not() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let relay = TestRelay::start().await;
    let (loopback, _) = packet_size_found(&relay, relay.addr, Duration::from_millis(500)).await;
    let ethernet_size = qchat_tests::link::ETHERNET_MTU;
    assert!(
        usize::from(loopback) > ethernet_size,
        "loopback carries large datagrams, yet packets stayed at {loopback}"
    );

    let link = EmulatedLink::start(relay.addr, LinkSpec::new(100, 20, 0.0)).unwrap();
    let (ethernet, lost) = packet_size_found(&relay, link.addr, Duration::from_secs(3)).await;
    assert!(usize::from(ethernet) <= ethernet_size, "a {ethernet_size} byte link carried {ethernet} byte packets");
    assert!(lost > 0, "larger packets were never tried");
}

/// Uploads `size` bytes from alice through a link of `spec` to a fresh relay; returns the
/// seconds from `send-file` to the relay's commit and the share of the link that is.
async fn upload_through(spec: LinkSpec, size: u64) -> (f64, f64) {
    let relay = TestRelay::start().await;
    let link = EmulatedLink::start(relay.addr, spec).unwrap();
    let mut alice = relay.client_via("alice", link.addr);
    alice.patience = Duration::from_secs(600);
    alice.connected().await;
    let path = write_file(&relay.tmp.path().join("far.bin"), size);
    let started = Instant::now();
    let transfer = alice.client.send_file(&path);
    alice.uploaded(transfer).await;
    let seconds = started.elapsed().as_secs_f64();
    (seconds, size as f64 * 8.0 / seconds / spec.rate_bps as f64)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_goes_through_a_slow_far_link_at_the_links_speed() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (seconds, share) = upload_through(LinkSpec::new(100, 40, 0.0), 8 << 20).await;
    println!("8 MiB over 100 Mbit/s, 40 ms: {seconds:.2} s, {:.0}% of the link", share * 100.0);
    assert!(share <= 1.05, "faster than the link: {share}");
    assert!(share >= 0.4, "only {:.0}% of the link", share * 100.0);
}

/// Figures for the long-fat-pipe work, not a check: `cargo test -p qchat-tests --test wan
/// -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn figures_on_a_far_fast_link() {
    let _serial = ONE_AT_A_TIME.lock().await;
    for (rtt_ms, loss) in [(200, 0.0), (100, 0.005)] {
        let (seconds, share) = upload_through(LinkSpec::new(400, rtt_ms, loss), 64 << 20).await;
        println!(
            "64 MiB up over 400 Mbit/s, {rtt_ms} ms, loss {loss}: {seconds:.1} s, {:.0}% of the link",
            share * 100.0
        );
    }
}
