//! An emulated wide-area link (this kernel has no `tc netem`): a UDP proxy whose each
//! direction is a bottleneck of a set rate with a drop-tail queue, a propagation delay and
//! random loss. Packets leave the bottleneck paced at the rate, one by one, not in
//! timer-tick bursts: each direction runs on a thread of its own that sleeps until just
//! before a packet is due and waits the last stretch out precisely. So that the emulator
//! is not the bottleneck at loopback rates, it reads many datagrams per system call
//! (`recvmmsg` and GRO, through quinn-udp) and, when several are due at once because the
//! thread fell behind, sends them in one call (GSO).

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
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
    /// The largest UDP payload the link carries; a larger datagram is dropped, as a
    /// router drops a packet too big for the next hop that may not be fragmented.
    pub mtu: usize,
}

/// The largest UDP payload an Ethernet path carries (1500 bytes less IPv4's and UDP's
/// headers).
pub const ETHERNET_MTU: usize = 1_472;

impl LinkSpec {
    /// A link of `rate_mbit` Mbit/s, `rtt_ms` round trip, `loss` random loss, a queue of
    /// one round trip, and Ethernet's packet size.
    pub fn new(rate_mbit: u64, rtt_ms: u64, loss: f64) -> Self {
        let rtt = Duration::from_millis(rtt_ms);
        LinkSpec {
            rate_bps: rate_mbit * 1_000_000,
            rtt,
            loss,
            queue: rtt.max(Duration::from_millis(5)),
            mtu: ETHERNET_MTU,
        }
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
/// The most one read returns per datagram slot (GRO joins up to 64 KiB of segments).
const READ_SLOT: usize = 65_536;
/// The most one send carries (the largest UDP payload, as GSO segments).
const SEND_BYTES: usize = 65_000;

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
        let front = Side::bind()?;
        let back = Side::bind()?;
        let addr = front.socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        let (up_tx, up_rx) = mpsc::sync_channel(HANDOFF);
        let (down_tx, down_rx) = mpsc::sync_channel(HANDOFF);
        let mut threads = Vec::new();
        // Client to server: read at the front (noting who the client is), leave from the
        // back; and the way back.
        let client_seen = client.clone();
        threads.push(pump(front.clone(), stop.clone(), up_tx, move |from| {
            *client_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
        })?);
        threads.push(pump(back.clone(), stop.clone(), down_tx, |_| {})?);
        let (stop_up, stop_down) = (stop.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            bottleneck(spec, up_rx, &stop_up, |datagrams, stride| back.send(server, datagrams, stride))
        }));
        threads.push(std::thread::spawn(move || {
            bottleneck(spec, down_rx, &stop_down, |datagrams, stride| {
                if let Some(to) = *client.lock().unwrap_or_else(|p| p.into_inner()) {
                    front.send(to, datagrams, stride);
                }
            })
        }));
        Ok(EmulatedLink { addr, stop, threads })
    }
}

/// One of the link's two sockets, with what quinn-udp knows of it (GSO, GRO).
#[derive(Clone)]
struct Side {
    socket: Arc<UdpSocket>,
    state: Arc<UdpSocketState>,
}

impl Side {
    /// A socket on loopback, non-blocking, with GRO on where the kernel has it.
    fn bind() -> std::io::Result<Side> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Side { socket: Arc::new(socket), state: Arc::new(state) })
    }

    /// Sends `datagrams` (segments of `stride` bytes, the last maybe shorter) to `to`, as
    /// many in each call as the kernel's GSO takes; a full socket buffer drops them, as a
    /// router would.
    fn send(&self, to: SocketAddr, datagrams: &[u8], stride: usize) {
        let most = stride * self.state.max_gso_segments().max(1);
        for run in datagrams.chunks(most) {
            let transmit = Transmit {
                destination: to,
                ecn: None,
                contents: run,
                segment_size: (run.len() > stride).then_some(stride),
                src_ip: None,
            };
            let _ = self.state.send((&*self.socket).into(), &transmit);
        }
    }
}

/// Reads datagrams from `side` into a bottleneck's input until `stop`, telling `seen`
/// where each came from; a full input drops the datagram, as a full queue would. The
/// thread waits for the socket on a small runtime of its own and reads what is there in
/// batches.
fn pump(
    side: Side,
    stop: Arc<AtomicBool>,
    input: SyncSender<Vec<u8>>,
    mut seen: impl FnMut(SocketAddr) + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let socket = side.socket.try_clone()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    Ok(std::thread::spawn(move || {
        runtime.block_on(async move {
            let Ok(socket) = tokio::net::UdpSocket::from_std(socket) else { return };
            let mut storage = vec![0u8; READ_SLOT * BATCH_SIZE];
            let mut slots: Vec<IoSliceMut> = storage.chunks_mut(READ_SLOT).map(IoSliceMut::new).collect();
            let mut metas = [RecvMeta::default(); BATCH_SIZE];
            while !stop.load(Ordering::Acquire) {
                match tokio::time::timeout(Duration::from_millis(50), socket.readable()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => continue, // look at `stop` again
                }
                let read = socket.try_io(tokio::io::Interest::READABLE, || {
                    side.state.recv((&socket).into(), &mut slots, &mut metas)
                });
                let Ok(count) = read else { continue };
                for (slot, meta) in slots.iter().zip(&metas).take(count) {
                    seen(meta.addr);
                    for datagram in slot[..meta.len].chunks(meta.stride.max(1)) {
                        let _ = input.try_send(datagram.to_vec());
                    }
                }
            }
        })
    }))
}

/// One direction: datagrams arrive on `input`, wait their turn at the rate (dropped when
/// the queue is full or at random), travel half the round trip, and go to `deliver`, which
/// takes those due at the same time together (datagrams of one size, the last maybe
/// shorter, and that size).
fn bottleneck(spec: LinkSpec, input: Receiver<Vec<u8>>, stop: &AtomicBool, mut deliver: impl FnMut(&[u8], usize)) {
    let one_way = spec.rtt / 2;
    // When the bottleneck is next free, and the packets on their way out, by exit time.
    let mut free_at = Instant::now();
    let mut in_flight: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut together = Vec::with_capacity(SEND_BYTES);
    let mut rng = rand::thread_rng();
    let mut admit = |datagram: Vec<u8>, now: Instant, free_at: &mut Instant, line: &mut VecDeque<_>| {
        let start = (*free_at).max(now);
        if datagram.len() > spec.mtu
            || start.duration_since(now) > spec.queue
            || rng.gen_bool(spec.loss.clamp(0.0, 1.0))
        {
            return; // too big, tail drop, or random loss
        }
        *free_at = start + spec.serialization(datagram.len());
        line.push_back((*free_at + one_way, datagram));
    };
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        while let Ok(datagram) = input.try_recv() {
            admit(datagram, now, &mut free_at, &mut in_flight);
        }
        loop {
            let stride = take_due(&mut in_flight, Instant::now(), &mut together);
            if together.is_empty() {
                break;
            }
            deliver(&together, stride);
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

/// Moves the datagrams due by `now` that can leave in one send into `together`: the
/// first's size is the stride, and a shorter one ends the run. Returns the stride.
fn take_due(in_flight: &mut VecDeque<(Instant, Vec<u8>)>, now: Instant, together: &mut Vec<u8>) -> usize {
    together.clear();
    let mut stride = 0;
    while let Some((exit, datagram)) = in_flight.front() {
        let size = datagram.len();
        let fits = together.is_empty() || (size <= stride && together.len() + size <= SEND_BYTES);
        if *exit > now || !fits {
            break;
        }
        if together.is_empty() {
            stride = size;
        }
        together.extend_from_slice(datagram);
        in_flight.pop_front();
        if size < stride {
            break;
        }
    }
    stride
}
