//! Failed enrollments per address: a wrong, used or expired invite (or one that never came)
//! counts; past the limit an address is refused for the rest of the minute, so guessing is
//! bounded while honest joins (which do not fail) go through. An IPv6 address counts by its
//! /64, which one machine usually has whole.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window the limit counts in.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; when full, the stale ones go, then the one whose minute
/// began first (a flood of addresses takes no more memory, and never locks others out).
const ADDRESSES: usize = 4096;

/// What an address counts as: itself, or its /64 for IPv6.
fn key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
    }
}

/// Enrollments one address may have running at once.
pub const AT_ONCE_PER_ADDRESS: usize = 4;

/// The enrollments running from each address, so that one address cannot hold every slot.
#[derive(Default)]
pub struct RunningAttempts {
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One running enrollment; its address's count goes down when it is dropped.
pub struct Running<'a> {
    of: &'a RunningAttempts,
    address: IpAddr,
}

impl RunningAttempts {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.by_address.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an enrollment of `address`, unless it has [`AT_ONCE_PER_ADDRESS`] running.
    /// The map holds only addresses with one running, so it is bounded by the slots.
    pub fn start(&self, address: IpAddr) -> Option<Running<'_>> {
        let address = key(address);
        let mut map = self.map();
        let running = map.entry(address).or_insert(0);
        if *running >= AT_ONCE_PER_ADDRESS {
            return None;
        }
        *running += 1;
        Some(Running { of: self, address })
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut map = self.of.map();
        if let Some(running) = map.get_mut(&self.address) {
            *running -= 1;
            if *running == 0 {
                map.remove(&self.address);
            }
        }
    }
}

/// Failed attempts per address in the current minute.
pub struct FailedAttempts {
    limit: u32,
    by_address: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailedAttempts {
    pub fn new(limit: u32) -> Self {
        FailedAttempts { limit: limit.max(1), by_address: Mutex::new(HashMap::new()) }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.by_address.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `address` may try now.
    pub fn allowed(&self, address: IpAddr) -> bool {
        match self.map().get(&key(address)) {
            Some((since, failures)) => since.elapsed() >= WINDOW || *failures < self.limit,
            None => true,
        }
    }

    /// Counts a failed attempt of `address`.
    pub fn failed(&self, address: IpAddr) {
        let address = key(address);
        let mut map = self.map();
        if map.len() >= ADDRESSES && !map.contains_key(&address) {
            map.retain(|_, (since, _)| since.elapsed() < WINDOW);
            if map.len() >= ADDRESSES {
                let oldest = map.iter().min_by_key(|(_, (since, _))| *since).map(|(a, _)| *a);
                if let Some(oldest) = oldest {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(address).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_stopped_after_its_failures_and_others_are_not() {
        let attempts = FailedAttempts::new(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(attempts.allowed(a));
            attempts.failed(a);
        }
        assert!(!attempts.allowed(a));
        assert!(attempts.allowed(b));
    }

    #[test]
    fn a_flood_of_addresses_is_bounded_and_locks_nobody_else_out() {
        let attempts = FailedAttempts::new(1);
        for i in 0..(ADDRESSES as u32 + 10) {
            attempts.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(attempts.map().len() <= ADDRESSES);
        assert!(attempts.allowed(IpAddr::from([250, 0, 0, 1])), "a new address may still try");
    }

    #[test]
    fn one_address_runs_a_few_enrollments_at_once() {
        let running = RunningAttempts::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..AT_ONCE_PER_ADDRESS).map(|_| running.start(a).unwrap()).collect();
        assert!(running.start(a).is_none());
        assert!(running.start("10.0.0.2".parse().unwrap()).is_some(), "others go on");
        drop(held);
        assert!(running.start(a).is_some());
        assert!(running.map().len() <= 1, "only addresses with one running are kept");
    }

    #[test]
    fn an_ipv6_network_counts_as_one() {
        let attempts = FailedAttempts::new(2);
        attempts.failed("2001:db8::1".parse().unwrap());
        attempts.failed("2001:db8::2:3".parse().unwrap());
        assert!(!attempts.allowed("2001:db8::ffff".parse().unwrap()));
        assert!(attempts.allowed("2001:db8:0:1::1".parse().unwrap()), "another /64");
    }
}
