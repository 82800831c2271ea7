//! Fair shares of what the relay has a fixed amount of: file-transfer slots (each user
//! may hold only a share of them, so one user cannot take them all) and connections that
//! have not said `Hello` yet (capped per user and overall).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A running transfer's hold on a slot of its user's share and of the relay's total.
pub struct TransferSlot {
    _own: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

/// The relay's transfer slots.
pub struct TransferSlots {
    total: Arc<Semaphore>,
    size: usize,
    per_user: usize,
    shares: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl TransferSlots {
    /// `total` slots on the relay, at most `per_user` of them held by one user.
    pub fn new(total: usize, per_user: usize) -> Self {
        TransferSlots { total: Arc::new(Semaphore::new(total)), size: total, per_user, shares: Mutex::default() }
    }

    fn share(&self, user: &str) -> Arc<Semaphore> {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        shares.entry(user.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_user))).clone()
    }

    /// Waits for a slot of `user`'s share, then for one of the relay's: a user over their
    /// share waits without holding any of the total.
    pub async fn acquire(&self, user: &str) -> Option<TransferSlot> {
        let own = self.share(user).acquire_owned().await.ok()?;
        let total = self.total.clone().acquire_owned().await.ok()?;
        Some(TransferSlot { _own: own, _total: total })
    }

    /// Slots free on the relay now.
    pub fn available(&self) -> usize {
        self.total.available_permits()
    }

    /// Slots held by transfers now.
    pub fn in_use(&self) -> usize {
        self.size.saturating_sub(self.available())
    }
}

/// Connections past their handshake that have not said `Hello`, per user and in all.
#[derive(Debug)]
pub struct PendingConnections {
    per_user: usize,
    total: usize,
    counts: Mutex<(usize, HashMap<String, usize>)>,
}

/// A connection counted as pending until this is dropped.
#[derive(Debug)]
pub struct Pending<'a> {
    owner: &'a PendingConnections,
    user: String,
}

impl PendingConnections {
    pub fn new(per_user: usize, total: usize) -> Self {
        PendingConnections { per_user, total, counts: Mutex::default() }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<String, usize>)> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new pending connection of `user`, or says why it is one too many.
    pub fn enter(&self, user: &str) -> Result<Pending<'_>, String> {
        let mut counts = self.counts();
        let (total, users) = &mut *counts;
        let mine = users.get(user).copied().unwrap_or(0);
        if mine >= self.per_user {
            return Err(format!("{mine} connections of {user} are already opening; try again in a moment"));
        }
        if *total >= self.total {
            return Err("the relay has too many connections opening at once; try again in a moment".into());
        }
        *total += 1;
        *users.entry(user.to_string()).or_default() += 1;
        Ok(Pending { owner: self, user: user.to_string() })
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut counts = self.owner.counts();
        let (total, users) = &mut *counts;
        *total -= 1;
        if let Some(n) = users.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                users.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_user_cannot_hold_every_transfer_slot() {
        let slots = TransferSlots::new(4, 2);
        let a1 = slots.acquire("alice").await.unwrap();
        let _a2 = slots.acquire("alice").await.unwrap();
        let third = tokio::time::timeout(std::time::Duration::from_millis(100), slots.acquire("alice")).await;
        assert!(third.is_err(), "alice waits for her own share");
        assert_eq!(slots.available(), 2, "and holds nothing of the total while she waits");
        let _b = slots.acquire("bob").await.expect("bob gets a slot at once");
        drop(a1);
        let _a3 = slots.acquire("alice").await.unwrap();
    }

    #[test]
    fn pending_connections_are_capped_per_user_and_in_all() {
        let pending = PendingConnections::new(2, 3);
        let a1 = pending.enter("alice").unwrap();
        let _a2 = pending.enter("alice").unwrap();
        assert!(pending.enter("alice").unwrap_err().contains("2 connections of alice"));
        let _b1 = pending.enter("bob").unwrap();
        assert!(pending.enter("bob").unwrap_err().contains("too many connections"));
        drop(a1);
        pending.enter("bob").expect("room again");
    }
}
