//! Failed enrollments per address: a wrong, used or expired invite counts; past the limit
//! an address is refused for the rest of the minute, so guessing is bounded while honest
//! joins (which do not fail) always go through.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window the limit counts in.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; when full, the stale ones go, and a new address beyond
/// that is refused until room frees (a flood of addresses cannot take memory).
const ADDRESSES: usize = 4096;

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
        let map = self.map();
        match map.get(&address) {
            Some((since, failures)) => since.elapsed() >= WINDOW || *failures < self.limit,
            None => map.len() < ADDRESSES || map.values().any(|(since, _)| since.elapsed() >= WINDOW),
        }
    }

    /// Counts a failed attempt of `address`.
    pub fn failed(&self, address: IpAddr) {
        let mut map = self.map();
        if map.len() >= ADDRESSES && !map.contains_key(&address) {
            map.retain(|_, (since, _)| since.elapsed() < WINDOW);
            if map.len() >= ADDRESSES {
                return;
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
    fn a_flood_of_addresses_is_bounded() {
        let attempts = FailedAttempts::new(1);
        for i in 0..(ADDRESSES as u32 + 10) {
            attempts.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(attempts.map().len() <= ADDRESSES);
        assert!(!attempts.allowed(IpAddr::from([250, 0, 0, 1])), "full of fresh failures: a new address waits");
    }
}
