//! An emulated wide-area link (this kernel has no `tc netem`): a UDP proxy whose each
//! direction is a bottleneck of a set rate with a drop-tail queue, a propagation delay and
//! random loss. Packets leave the bottleneck paced at the rate, one by one, not in
//! timer-tick bursts: each direction runs on a thread of its own that sleeps until just
//! before a packet is due and waits the last stretch out precisely.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::Rng;

/// What the link is like, the same in each direction.
#[derive(Debug, Clone, Copy)]
pub struct LinkSpec {
    /// The bottleneck's rate, in bits per second.
    pub rate_bps: u64,
    /// The round trip the link adds (half of it each way).
    pub rtt: Duration,
    /// Chance that a packet is lost at random (apart from queue overflow).
    pub loss: f64,
    /// How much the bottleneck queue holds, as time at the rate (about one round trip
    /// is what a well-sized router has).
    pub queue: Duration,
}

impl LinkSpec {
    /// A link of `rate_mbit` Mbit/s, `rtt_ms` round trip, `loss` random loss, and a queue
    /// of one round trip.
    pub fn new(rate_mbit: u64, rtt_ms: u64, loss: f64) -> Self {
        let rtt = Duration::from_millis(rtt_ms);
        LinkSpec { rate_bps: rate_mbit * 1_000_000, rtt, loss, queue: rtt.max(Duration::from_millis(5)) }
    }

    /// How long `bytes` take to pass the bottleneck.
    fn serialization(&self, bytes: usize) -> Duration {
        Duration::from_nanos((bytes as u64 * 8).saturating_mul(1_000_000_000) / self.rate_bps.max(1))
    }
}

/// Datagrams queued towards a direction's thread; the queue in time is what bounds it.
const HANDOFF: usize = 65_536;
/// Closer than this to a packet's time, the thread spins instead of sleeping.
const SPIN: Duration = Duration::from_micros(200);

/// A running emulated link; clients connect to [`EmulatedLink::addr`].
pub struct EmulatedLink {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for EmulatedLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl EmulatedLink {
    /// Starts a link in front of `server` (one client address at a time, as a test needs).
    pub fn start(server: SocketAddr, spec: LinkSpec) -> std::io::Result<EmulatedLink> {
        let front = UdpSocket::bind("127.0.0.1:0")?;
        let back = UdpSocket::bind("127.0.0.1:0")?;
        for socket in [&front, &back] {
            socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        }
        let addr = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        let (up_tx, up_rx) = mpsc::sync_channel(HANDOFF);
        let (down_tx, down_rx) = mpsc::sync_channel(HANDOFF);
        let (front, back) = (Arc::new(front), Arc::new(back));
        let mut threads = Vec::new();
        // Client to server: read at the front (noting who the client is), leave from the
        // back; and the way back.
        let client_seen = client.clone();
        threads.push(pump(front.clone(), stop.clone(), up_tx, move |from| {
            *client_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
        }));
        threads.push(pump(back.clone(), stop.clone(), down_tx, |_| {}));
        let (stop_up, stop_down) = (stop.clone(), stop.clone());
        let up_out = back.clone();
        threads.push(std::thread::spawn(move || {
            bottleneck(spec, up_rx, &stop_up, |datagram| {
                let _ = up_out.send_to(datagram, server);
            })
        }));
        let down_out = front.clone();
        threads.push(std::thread::spawn(move || {
            bottleneck(spec, down_rx, &stop_down, |datagram| {
                if let Some(to) = *client.lock().unwrap_or_else(|p| p.into_inner()) {
                    let _ = down_out.send_to(datagram, to);
                }
            })
        }));
        Ok(EmulatedLink { addr, stop, threads })
    }
}

/// Reads datagrams from `socket` into a bottleneck's input until `stop`, telling `seen`
/// where each came from; a full input drops the datagram, as a full queue would.
fn pump(
    socket: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    input: SyncSender<Vec<u8>>,
    mut seen: impl FnMut(SocketAddr) + Send + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Ordering::Acquire) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                seen(from);
                let _ = input.try_send(buf[..n].to_vec());
            }
        }
    })
}

/// One direction: datagrams arrive on `input`, wait their turn at the rate (dropped when
/// the queue is full or at random), travel half the round trip, and go to `deliver`.
fn bottleneck(spec: LinkSpec, input: Receiver<Vec<u8>>, stop: &AtomicBool, mut deliver: impl FnMut(&[u8])) {
    let one_way = spec.rtt / 2;
    // When the bottleneck is next free, and the packets on their way out, by exit time.
    let mut free_at = Instant::now();
    let mut in_flight: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut rng = rand::thread_rng();
    let mut admit = |datagram: Vec<u8>, now: Instant, free_at: &mut Instant, line: &mut VecDeque<_>| {
        let start = (*free_at).max(now);
        if start.duration_since(now) > spec.queue || rng.gen_bool(spec.loss.clamp(0.0, 1.0)) {
            return; // tail drop, or random loss
        }
        *free_at = start + spec.serialization(datagram.len());
        line.push_back((*free_at + one_way, datagram));
    };
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        while let Ok(datagram) = input.try_recv() {
            admit(datagram, now, &mut free_at, &mut in_flight);
        }
        while in_flight.front().is_some_and(|(exit, _)| *exit <= Instant::now()) {
            if let Some((_, datagram)) = in_flight.pop_front() {
                deliver(&datagram);
            }
        }
        let wait = in_flight
            .front()
            .map_or(Duration::from_millis(20), |(exit, _)| exit.saturating_duration_since(Instant::now()));
        if wait > SPIN {
            match input.recv_timeout(wait - SPIN) {
                Ok(datagram) => admit(datagram, Instant::now(), &mut free_at, &mut in_flight),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            std::thread::yield_now();
        }
    }
}
