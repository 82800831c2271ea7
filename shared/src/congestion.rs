//! Congestion control: quinn's BBR, with its window held to what the path has shown it
//! can carry.
//!
//! quinn 0.11's BBR keeps growing its congestion window on a long path (to 200 MB on a
//! 400 Mbit/s, 200 ms link, measured), and quinn paces at the window over the round trip,
//! so it sends in bursts far above the link's rate, overflows the bottleneck's queue, and
//! loses a third of its packets. [`BoundedBbr`] measures the rate the peer acknowledges,
//! round trip by round trip, and bounds the window to a multiple of that rate times the
//! path's shortest round trip (the bandwidth-delay product): twice while the rate still
//! grows (slow start's pace), [`STEADY_GAIN`] once it stops growing, which fills the pipe
//! and leaves most of a router's queue free. On a near link (whose round trip is mostly
//! the hosts' own delays, not the path's) BBR's window is far too small, so the window is
//! never below a floor of [`MIN_WINDOW`] that losses halve and loss-free round trips grow
//! back, as a loss-based controller would.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{BbrConfig, Controller, ControllerFactory};
use quinn_proto::RttEstimator;

/// The floor's highest value: what a near link needs (it fills loopback here, and more
/// in flight only queues chat behind file bytes: a 4 MiB floor took chat's p99 during a
/// transfer from 17 to 29 ms and raw QUIC from 604 to 427 MiB/s, `qchat-bench --quick`).
pub const MIN_WINDOW: u64 = 1024 * 1024;
/// The floor never goes below this.
const LEAST_FLOOR: u64 = 64 * 1024;
/// The bound while the acknowledged rate still grows, in bandwidth-delay products.
const STARTUP_GAIN: f64 = 2.0;
/// The bound once the rate stopped growing.
pub const STEADY_GAIN: f64 = 1.5;
/// Round trips the highest rate is remembered for.
const RATE_MEMORY: usize = 10;
/// The rate counts as still growing while it rose by this factor within three round trips.
const GROWTH: f64 = 1.25;

/// Builds a [`BoundedBbr`] per connection.
#[derive(Debug, Default)]
pub struct BoundedBbrConfig {
    bbr: Arc<BbrConfig>,
}

impl ControllerFactory for BoundedBbrConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(BoundedBbr { inner: self.bbr.clone().build(now, current_mtu), rate: RateBound::new(now) })
    }
}

/// quinn's BBR whose window is bounded by [`RateBound`].
pub struct BoundedBbr {
    inner: Box<dyn Controller>,
    rate: RateBound,
}

impl Controller for BoundedBbr {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool, rtt: &RttEstimator) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
        self.rate.on_ack(now, bytes, rtt.min());
    }

    fn on_end_acks(&mut self, now: Instant, in_flight: u64, app_limited: bool, largest: Option<u64>) {
        self.inner.on_end_acks(now, in_flight, app_limited, largest);
    }

    fn on_congestion_event(&mut self, now: Instant, sent: Instant, persistent: bool, lost_bytes: u64) {
        self.inner.on_congestion_event(now, sent, persistent, lost_bytes);
        self.rate.on_loss();
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.rate.window(self.inner.window())
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(BoundedBbr { inner: self.inner.clone_box(), rate: self.rate.clone() })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// The acknowledged rate, per round trip, and the window bound it gives.
#[derive(Debug, Clone)]
pub struct RateBound {
    interval_start: Instant,
    interval_bytes: u64,
    /// The rate of each of the last round trips, newest last, in bytes per second.
    rates: Vec<f64>,
    min_rtt: Duration,
    bound: u64,
    /// The least the window may be, whatever BBR says: [`MIN_WINDOW`], halved by each loss
    /// and grown back an eighth per round trip without one. On a near path BBR's own
    /// window (its rate times a round trip of microseconds) is far too small for the
    /// hosts' real delays; losses from overflowing buffers then hold the window back, as
    /// they would for CUBIC.
    floor: u64,
    lost_since: bool,
    /// While the rate grows: a slow start's window, grown by every byte acknowledged, so
    /// that it doubles each round trip (see [`RateBound::window`]). Losses do not shrink it,
    /// as they do not shrink BBR's: the bound (twice what the path delivers) holds it.
    slow_start: u64,
    /// [`grows`] of `rates`.
    growing: bool,
}

/// Whether the best of the last three round trips' `rates` is well above the best before.
fn grows(rates: &[f64]) -> bool {
    let n = rates.len();
    if n <= 3 {
        return true;
    }
    let recent = rates[n - 3..].iter().copied().fold(0.0, f64::max);
    let before = rates[..n - 3].iter().copied().fold(0.0, f64::max);
    recent >= before * GROWTH
}

impl RateBound {
    pub fn new(now: Instant) -> Self {
        RateBound {
            interval_start: now,
            interval_bytes: 0,
            rates: Vec::new(),
            min_rtt: Duration::MAX,
            bound: u64::MAX,
            floor: MIN_WINDOW,
            lost_since: false,
            slow_start: MIN_WINDOW,
            growing: true,
        }
    }

    /// Counts `bytes` acknowledged at `now`; each time a round trip has passed, the bound
    /// is worked out again. While the rate grows, the bound also follows the round trip
    /// under way (from a quarter of it on): the last whole round trip's rate is what was
    /// sent two round trips ago, and a bound on it alone lets the window grow only by √2
    /// each round trip.
    pub fn on_ack(&mut self, now: Instant, bytes: u64, min_rtt: Duration) {
        self.interval_bytes += bytes;
        self.min_rtt = self.min_rtt.min(min_rtt);
        let growing = self.growing();
        if growing {
            self.slow_start = self.slow_start.saturating_add(bytes);
        }
        let elapsed = now.saturating_duration_since(self.interval_start);
        let rate_now = self.interval_bytes as f64 / elapsed.as_secs_f64().max(1e-9);
        if elapsed < self.min_rtt.max(Duration::from_millis(1)) {
            if growing && !self.rates.is_empty() && elapsed >= self.min_rtt / 4 {
                let best = self.best().max(rate_now);
                self.bound = self.bound.max(self.bdp_times(STARTUP_GAIN, best));
            }
            return;
        }
        self.rates.push(rate_now);
        if self.rates.len() > RATE_MEMORY {
            self.rates.remove(0);
        }
        self.growing = grows(&self.rates);
        (self.interval_start, self.interval_bytes) = (now, 0);
        if !std::mem::take(&mut self.lost_since) {
            self.floor = (self.floor + self.floor / 8).min(MIN_WINDOW);
        }
        let growing = self.growing();
        self.bound = self.bdp_times(if growing { STARTUP_GAIN } else { STEADY_GAIN }, self.best());
        if !growing {
            // Should the rate grow again, the slow start goes on from the bound.
            self.slow_start = self.slow_start.min(self.bound);
        }
    }

    /// The best rate of the remembered round trips.
    fn best(&self) -> f64 {
        self.rates.iter().copied().fold(0.0, f64::max)
    }

    /// `gain` bandwidth-delay products at `rate`, but never below the floor.
    fn bdp_times(&self, gain: f64, rate: f64) -> u64 {
        ((gain * rate * self.min_rtt.as_secs_f64()) as u64).max(self.floor)
    }

    /// A loss (or congestion mark): the floor halves, down to [`LEAST_FLOOR`].
    pub fn on_loss(&mut self) {
        self.lost_since = true;
        self.floor = (self.floor / 2).max(LEAST_FLOOR);
    }

    /// Whether the rate still grows (worked out once a round trip, as the rates change:
    /// quinn asks for the window at every packet).
    fn growing(&self) -> bool {
        self.growing
    }

    pub fn bound(&self) -> u64 {
        self.bound.max(self.floor)
    }

    /// The congestion window, given BBR's own (`bbr`). While the acknowledged rate still
    /// grows, a slow start's window within the bound: it doubles each round trip until the
    /// path is full, and then holds at twice the bandwidth-delay product, what a queue of
    /// one round trip takes. BBR's own window grows more slowly from the floor it starts
    /// under (by the bytes acknowledged on top of a window of a few packets): on a 400
    /// Mbit/s, 200 ms link it took ten round trips, not four, to fill the link. Once the
    /// rate stops growing, BBR's window within the bound.
    pub fn window(&self, bbr: u64) -> u64 {
        if self.growing() {
            return self.slow_start.max(self.floor).min(self.bound());
        }
        bbr.max(self.floor).min(self.bound())
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Acknowledges `rate` bytes per second for `rtts` round trips of `rtt`, in 10 acks each.
    fn feed(bound: &mut RateBound, now: &mut Instant, rate: f64, rtt: Duration, rtts: usize) {
        for _ in 0..rtts * 10 {
            *now += rtt / 10;
            bound.on_ack(*now, (rate * rtt.as_secs_f64() / 10.0) as u64, rtt);
        }
    }

    #[test]
    fn a_steady_long_path_is_bounded_to_one_and_a_half_bandwidth_delay_products() {
        let (mut now, rtt) = (Instant::now(), Duration::from_millis(200));
        let mut bound = RateBound::new(now);
        assert_eq!(bound.bound(), u64::MAX, "nothing is known at first");
        // 50 MB/s over 200 ms: a bandwidth-delay product of 10 MB.
        feed(&mut bound, &mut now, 50e6, rtt, 8);
        let bdp = 10e6;
        assert!((bound.bound() as f64 - STEADY_GAIN * bdp).abs() < 0.05 * bdp, "{}", bound.bound());
    }

    #[test]
    fn a_growing_rate_gets_room_to_double() {
        let (mut now, rtt) = (Instant::now(), Duration::from_millis(100));
        let mut bound = RateBound::new(now);
        let mut rate = 1e6;
        for _ in 0..6 {
            feed(&mut bound, &mut now, rate, rtt, 1);
            rate *= 2.0;
        }
        let last = rate / 2.0;
        let expected = (STARTUP_GAIN * last * 0.1).max(MIN_WINDOW as f64);
        assert!((bound.bound() as f64 - expected).abs() < 0.05 * expected, "{} vs {expected}", bound.bound());
    }

    #[test]
    fn while_the_rate_grows_the_window_doubles_each_round_trip_whatever_bbr_says() {
        let (mut now, rtt) = (Instant::now(), Duration::from_millis(200));
        let mut bound = RateBound::new(now);
        let small_bbr = 100 * 1024;
        assert_eq!(bound.window(small_bbr), MIN_WINDOW, "nothing measured: a slow start from the floor");
        // Each round trip the path delivers (and the peer acknowledges) the window of the
        // round trip before.
        let mut window = bound.window(small_bbr);
        for _ in 0..3 {
            feed(&mut bound, &mut now, window as f64 / rtt.as_secs_f64(), rtt, 1);
            let next = bound.window(small_bbr);
            assert!((next as f64 - 2.0 * window as f64).abs() < 0.1 * window as f64, "{window} to {next}");
            window = next;
        }
        // From 1 to 8 MiB; the link is full at 50 MB/s (a 10 MB bandwidth-delay product),
        // more than 8 MiB a round trip: the window holds
        // at twice that while the rate looks as if it grows, then BBR's window (here 12 MB)
        // counts again, within 1.5 bandwidth-delay products.
        feed(&mut bound, &mut now, 50e6, rtt, 1);
        assert!(bound.window(small_bbr) <= 21_000_000, "{}", bound.window(small_bbr));
        feed(&mut bound, &mut now, 50e6, rtt, 8);
        assert_eq!(bound.window(12_000_000), 12_000_000);
        assert!((bound.window(40_000_000) as f64 - 15e6).abs() < 0.05 * 15e6);
    }

    #[test]
    fn a_slow_start_after_a_quiet_spell_never_goes_below_the_floor() {
        let (mut now, rtt) = (Instant::now(), Duration::from_millis(1));
        let mut bound = RateBound::new(now);
        // Losses hold a steady near link's bound low, and the slow start with it.
        for _ in 0..30 {
            bound.on_loss();
            feed(&mut bound, &mut now, 50e6, rtt, 1);
        }
        // The floor grows back over clean round trips; then the rate rises again.
        feed(&mut bound, &mut now, 50e6, rtt, 40);
        assert_eq!(bound.floor(), MIN_WINDOW);
        feed(&mut bound, &mut now, 500e6, rtt, 1);
        assert!(bound.growing());
        assert!(bound.window(0) >= MIN_WINDOW, "{}", bound.window(0));
    }

    #[test]
    fn losses_halve_the_floor_and_clean_round_trips_grow_it_back() {
        let (mut now, rtt) = (Instant::now(), Duration::from_millis(1));
        let mut bound = RateBound::new(now);
        bound.on_loss();
        bound.on_loss();
        assert_eq!(bound.floor(), MIN_WINDOW / 4);
        for _ in 0..20 {
            bound.on_loss();
        }
        assert_eq!(bound.floor(), LEAST_FLOOR, "never below the least floor");
        feed(&mut bound, &mut now, 1e6, rtt, 100);
        assert_eq!(bound.floor(), MIN_WINDOW, "grown back after loss-free round trips");
    }

    #[test]
    fn a_near_link_is_never_held_below_the_minimum() {
        let (mut now, rtt) = (Instant::now(), Duration::from_micros(100));
        let mut bound = RateBound::new(now);
        feed(&mut bound, &mut now, 700e6, rtt, 20);
        assert_eq!(bound.bound(), MIN_WINDOW);
    }
}
