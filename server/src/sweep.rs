//! Retention: files fetched are kept for a while (default 7 days), files never fetched
//! expire later (default 30 days); then their bodies go and their senders are told.
//! Messages likewise: delivered ones go after their retention, undelivered ones after
//! their expiry (their senders are told). SQLite reuses the freed pages, so the database
//! stops growing once retention has come round.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use qchat_shared::display::Escaped;
use qchat_shared::frame::{MessageId, RelayControl};
use qchat_shared::limits::MAX_ACKS_PER_FRAME;
use tracing::{info, warn};

use crate::relay::RelayState;

/// Sweeps at the configured interval, forever.
pub async fn run(state: Arc<RelayState>) {
    let mut tick = tokio::time::interval(state.limits.sweep_every);
    loop {
        tick.tick().await;
        sweep_once(&state).await;
    }
}

/// Sweeps what is due now; returns how many files went.
pub async fn sweep_once(state: &RelayState) -> usize {
    sweep_messages(state).await;
    if let Err(e) = state.store.sweep_devices().await {
        tracing::warn!(error = %e, "cannot sweep old invites and certificates");
    }
    sweep_files(state).await
}

async fn sweep_messages(state: &RelayState) {
    let retention = state.limits.message_retention.as_millis() as i64;
    let expiry = state.limits.message_expiry.as_millis() as i64;
    loop {
        match state.store.sweep_messages(retention, expiry).await {
            Ok(sweep) => {
                let mut by_sender: BTreeMap<String, Vec<(MessageId, u64)>> = BTreeMap::new();
                for message in sweep.expired {
                    info!(seq = message.seq, sender = %Escaped(&message.sender), "an undelivered message expired");
                    by_sender.entry(message.sender).or_default().push((message.id, message.seq));
                }
                for (sender, messages) in by_sender {
                    for chunk in messages.chunks(MAX_ACKS_PER_FRAME) {
                        state.router.notify(&sender, RelayControl::MessageExpired { messages: chunk.to_vec() });
                    }
                }
                if !sweep.more {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "message sweep failed");
                return;
            }
        }
    }
}

async fn sweep_files(state: &RelayState) -> usize {
    let retention = state.limits.retention.as_millis() as i64;
    let expiry = state.limits.expiry.as_millis() as i64;
    let swept = match state.store.sweep_due(retention, expiry).await {
        Ok(swept) => swept,
        Err(e) => {
            warn!(error = %e, "sweep failed");
            return 0;
        }
    };
    for file in &swept {
        let reason = format!("file {} expired on the relay before it was complete", file.file_id);
        state.arrivals.end(file.file_id, crate::arrivals::Arrival::Withdrawn(reason));
        let spool = state.spool.clone();
        let id = file.file_id;
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || spool.remove(id)).await {
            warn!(file = %id, error = %e, "cannot remove a swept file's body");
        }
        info!(file = %id, sender = %file.sender, fetched = file.fetched, "swept");
        let frame = RelayControl::FileExpired { file_id: id, fetched: file.fetched };
        state.router.notify(&file.sender, frame);
    }
    swept.len()
}

/// Removes spool files that no row holds (left by a crash mid-sweep).
pub async fn remove_orphans(state: &RelayState) {
    let Ok(held) = state.store.held_files().await else { return };
    let keep: HashSet<_> = held.into_iter().collect();
    let spool = state.spool.clone();
    match tokio::task::spawn_blocking(move || spool.remove_orphans(&keep)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => info!(removed = n, "removed spool files that no record holds"),
        Ok(Err(e)) => warn!(error = %e, "cannot clean the spool"),
        Err(_) => {}
    }
}
