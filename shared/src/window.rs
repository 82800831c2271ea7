//! Flow-control windows that grow while a file moves to what its path needs (twice the
//! bandwidth-delay product, measured), drawing on one memory budget for the whole process.
//!
//! A connection starts with [`BASE_WINDOW`]: one file stream's window
//! ([`crate::transport::STREAM_WINDOW`], fixed) and room for chat beside it. Each transfer
//! running on it starts a [`Tuner`]: each round trip it measures the bytes the path
//! delivered (by the connection's own count), and when they show the connection's window
//! is what holds its transfers back (moving a window's worth per round trip: several
//! files at once on one connection), it asks the [`WindowBudget`] for more, about doubling
//! the window per round trip. What was granted goes back to the budget when the transfer
//! ends. A hostile peer can make us hold at most the base and what it was granted, and
//! all grants together stay within the budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::VarInt;

/// What every connection may have in flight towards us (or buffered towards its peer)
/// with no transfer's grant: one file stream's window and 4 MiB that chat can always use.
pub const BASE_WINDOW: u64 = crate::transport::STREAM_WINDOW + 4 * 1024 * 1024;
/// The most one transfer's window may grow to beyond the base: twice the
/// bandwidth-delay product of a 650 Mbit/s path with a round trip of 200 ms.
pub const MAX_TRANSFER_WINDOW: u64 = 32 * 1024 * 1024;
/// The relay's default budget: five transfers at twice a 400 Mbit/s × 200 ms path.
pub const DEFAULT_BUDGET: u64 = 96 * 1024 * 1024;
/// Shortest and longest time between two measurements.
const MIN_TICK: Duration = Duration::from_millis(10);
const MAX_TICK: Duration = Duration::from_millis(250);

/// Bytes of window the process may grant beyond the connections' base windows.
#[derive(Debug)]
pub struct WindowBudget {
    limit: u64,
    granted: AtomicU64,
}

impl WindowBudget {
    pub fn new(limit: u64) -> Arc<WindowBudget> {
        Arc::new(WindowBudget { limit, granted: AtomicU64::new(0) })
    }

    /// Takes up to `want` bytes; returns how many it got (what is left, if less).
    fn take(&self, want: u64) -> u64 {
        let mut got = 0;
        let _ = self.granted.fetch_update(Ordering::AcqRel, Ordering::Acquire, |granted| {
            got = want.min(self.limit.saturating_sub(granted));
            Some(granted + got)
        });
        got
    }

    fn give_back(&self, bytes: u64) {
        self.granted.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes granted now, over every connection.
    pub fn granted(&self) -> u64 {
        self.granted.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Bytes held from a [`WindowBudget`] for what is not a window (bytes that arrived past a
/// gap in a stream, [`crate::in_order`]); given back when dropped.
#[derive(Debug)]
pub struct Hold {
    budget: Arc<WindowBudget>,
    bytes: u64,
}

impl Hold {
    pub fn new(budget: Arc<WindowBudget>) -> Hold {
        Hold { budget, bytes: 0 }
    }

    /// Holds `bytes` in all, taking what more that needs as far as the budget allows (what
    /// it got is kept either way); returns whether it holds them all.
    pub fn cover(&mut self, bytes: u64) -> bool {
        if bytes > self.bytes {
            self.bytes += self.budget.take(bytes - self.bytes);
        }
        self.bytes >= bytes
    }

    /// Gives back what is held beyond `bytes`.
    pub fn release_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget.give_back(self.bytes - bytes);
            self.bytes = bytes;
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release_to(0);
    }
}

/// Which of a connection's windows a transfer needs: the receive window for bytes coming
/// in, the send window (bytes buffered until the peer acknowledges them) for bytes going
/// out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Receive,
    Send,
}

/// One connection's windows: the base plus what its transfers were granted.
#[derive(Debug)]
pub struct ConnectionWindows {
    connection: quinn::Connection,
    budget: Arc<WindowBudget>,
    receive_extra: AtomicU64,
    send_extra: AtomicU64,
}

impl ConnectionWindows {
    /// Sets `connection`'s windows to the base and returns the handle its transfers tune.
    pub fn new(connection: quinn::Connection, budget: Arc<WindowBudget>) -> Arc<ConnectionWindows> {
        let windows =
            ConnectionWindows { connection, budget, receive_extra: AtomicU64::new(0), send_extra: AtomicU64::new(0) };
        windows.apply(Direction::Receive, 0);
        windows.apply(Direction::Send, 0);
        Arc::new(windows)
    }

    fn extra(&self, direction: Direction) -> &AtomicU64 {
        match direction {
            Direction::Receive => &self.receive_extra,
            Direction::Send => &self.send_extra,
        }
    }

    fn apply(&self, direction: Direction, extra: u64) {
        let window = BASE_WINDOW + extra;
        match direction {
            Direction::Receive => self.connection.set_receive_window(VarInt::from_u64(window).unwrap_or(VarInt::MAX)),
            Direction::Send => self.connection.set_send_window(window),
        }
    }

    /// Adds `delta` (which may be negative) to the window in `direction`.
    fn change(&self, direction: Direction, delta: i64) {
        let counter = self.extra(direction);
        let extra = if delta >= 0 {
            counter.fetch_add(delta as u64, Ordering::AcqRel) + delta as u64
        } else {
            counter.fetch_sub(delta.unsigned_abs(), Ordering::AcqRel) - delta.unsigned_abs()
        };
        self.apply(direction, extra);
    }

    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// The process's budget these windows draw on.
    pub fn budget(&self) -> &Arc<WindowBudget> {
        &self.budget
    }

    /// The window now in `direction`.
    pub fn window(&self, direction: Direction) -> u64 {
        BASE_WINDOW + self.extra(direction).load(Ordering::Acquire)
    }

    /// Starts growing the window in `direction` for a transfer. Dropping the tuner gives
    /// its grant back.
    pub fn tune(self: &Arc<Self>, direction: Direction) -> Tuner {
        let grant = Arc::new(Grant { windows: self.clone(), direction, bytes: AtomicU64::new(0) });
        let task = tokio::spawn(grow(grant.clone()));
        Tuner { _grant: grant, task }
    }
}

/// What one transfer was granted; given back when dropped.
#[derive(Debug)]
struct Grant {
    windows: Arc<ConnectionWindows>,
    direction: Direction,
    bytes: AtomicU64,
}

impl Grant {
    /// Raises the grant towards `want` bytes, as far as the budget allows.
    fn raise_to(&self, want: u64) {
        let have = self.bytes.load(Ordering::Acquire);
        let want = want.min(MAX_TRANSFER_WINDOW);
        if want <= have {
            return;
        }
        let got = self.windows.budget.take(want - have);
        if got > 0 {
            self.bytes.fetch_add(got, Ordering::AcqRel);
            self.windows.change(self.direction, got as i64);
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let bytes = *self.bytes.get_mut();
        if bytes > 0 {
            self.windows.change(self.direction, -(bytes as i64));
            self.windows.budget.give_back(bytes);
        }
    }
}

/// Grows one transfer's window while it runs; see [`ConnectionWindows::tune`].
#[derive(Debug)]
pub struct Tuner {
    _grant: Arc<Grant>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tuner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The window a transfer needs: twice what it moved in the last round trip. While the
/// window holds it back, that is about twice the window, so the window doubles each round
/// trip; once the path is the limit, it settles at twice the bandwidth-delay product.
pub fn needed_window(moved: u64, elapsed: Duration, rtt: Duration) -> u64 {
    let rate = moved as f64 / elapsed.as_secs_f64().max(1e-6);
    (2.0 * rate * rtt.as_secs_f64()) as u64
}

/// Bytes the path delivered in `direction` so far, by the connection's own count: what
/// came in off the wire, or what went out and was not lost. Unlike the bytes a stream
/// hands over, these come at the path's pace, not in bursts when a loss is repaired.
fn delivered(stats: &quinn::ConnectionStats, direction: Direction) -> u64 {
    match direction {
        Direction::Receive => stats.udp_rx.bytes,
        Direction::Send => stats.udp_tx.bytes.saturating_sub(stats.path.lost_bytes),
    }
}

async fn grow(grant: Arc<Grant>) {
    let connection = grant.windows.connection.clone();
    let mut last = delivered(&connection.stats(), grant.direction);
    let mut at = Instant::now();
    loop {
        tokio::time::sleep(connection.rtt().clamp(MIN_TICK, MAX_TICK)).await;
        let stats = connection.stats();
        let now = delivered(&stats, grant.direction);
        // The round trip without queues: a queue that fills makes the round trip longer,
        // not the path's need.
        let need = needed_window(now.saturating_sub(last), at.elapsed(), stats.path.min_rtt);
        (last, at) = (now, Instant::now());
        grant.raise_to(need.saturating_sub(BASE_WINDOW));
        tracing::trace!(
            direction = ?grant.direction,
            rtt_ms = stats.path.rtt.as_millis() as u64,
            min_rtt_ms = stats.path.min_rtt.as_millis() as u64,
            cwnd = stats.path.cwnd,
            lost = stats.path.lost_packets,
            need,
            window = grant.windows.window(grant.direction),
            "window"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_never_grants_more_than_its_limit() {
        let budget = WindowBudget::new(10);
        assert_eq!(budget.take(4), 4);
        assert_eq!(budget.take(8), 6, "only what is left");
        assert_eq!(budget.take(1), 0);
        budget.give_back(5);
        assert_eq!((budget.granted(), budget.take(9)), (5, 5));
    }

    #[test]
    fn a_hold_takes_what_is_left_and_gives_all_back_when_dropped() {
        let budget = WindowBudget::new(10);
        let mut hold = Hold::new(budget.clone());
        assert!(hold.cover(6));
        assert!(!hold.cover(12), "only 10 to take");
        assert_eq!((hold.bytes(), budget.granted()), (10, 10));
        hold.release_to(4);
        assert_eq!(budget.granted(), 4);
        drop(hold);
        assert_eq!(budget.granted(), 0);
    }

    #[test]
    fn a_window_limited_transfer_asks_for_double_and_a_path_limited_one_for_twice_the_bdp() {
        let rtt = Duration::from_millis(200);
        // A 4 MiB window moves 4 MiB per round trip: it asks for 8.
        assert_eq!(needed_window(4 << 20, rtt, rtt), 8 << 20);
        // 50 MB/s over 200 ms is a 10 MB bandwidth-delay product.
        let need = needed_window(50_000_000, Duration::from_secs(1), rtt);
        assert_eq!(need, 20_000_000);
        // On loopback the round trip is tiny: nothing beyond the base is needed.
        let need = needed_window(600 << 20, Duration::from_secs(1), Duration::from_micros(500));
        assert!(need < BASE_WINDOW, "{need}");
    }
}
