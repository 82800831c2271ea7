//! Deliveries to one connection: what waited in the store, then live messages, each on a
//! unidirectional stream of its own, numbered so the client can restore the order.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use qchat_shared::codes::CloseCode;
use qchat_shared::frame::Deliver;
use qchat_shared::io::write_frame;
use qchat_shared::transport::CHAT_PRIORITY;
use tokio::sync::{mpsc, Notify};
use tracing::warn;

use crate::relay::RelayState;
use crate::session::{close, Caller};
use crate::store::StoredMessage;

/// Messages read from the store per query while catching a connection up.
const PENDING_PAGE: usize = 500;

/// Deliveries in flight (sent, not acknowledged) per connection, at most: below what the
/// client holds while it waits for a missing one (its reorder bound), so a lost packet
/// never pushes a later delivery past that bound.
pub const DELIVERY_WINDOW: u64 = 128;

/// What a connection's delivery task shares with the router and the control stream.
#[derive(Default)]
pub struct DeliveryFlow {
    /// The live queue overflowed: read from the store what was dropped.
    lagged: AtomicBool,
    lag_wake: Notify,
    /// Deliveries this connection has acknowledged (they are acknowledged in order).
    acked: AtomicU64,
    ack_wake: Notify,
}

impl DeliveryFlow {
    /// The router dropped a live message: the delivery task reads it from the store.
    pub fn lag(&self) {
        self.lagged.store(true, Ordering::Release);
        self.lag_wake.notify_one();
    }

    /// The client acknowledged this many more deliveries.
    pub fn acknowledged(&self, count: usize) {
        self.acked.fetch_add(count as u64, Ordering::AcqRel);
        self.ack_wake.notify_one();
    }

    /// Waits until delivery `index` fits in the window.
    async fn room_for(&self, index: u64) {
        while index >= self.acked.load(Ordering::Acquire) + DELIVERY_WINDOW {
            self.ack_wake.notified().await;
        }
    }
}

/// Delivers what waited for this user, then live messages, one stream each, in order, at
/// most [`DELIVERY_WINDOW`] unacknowledged. When the live queue overflowed, what was
/// dropped is read from the store again. A delivery that fails while the connection is up
/// closes it: the client reconnects and gets everything it has not acknowledged, in order.
pub async fn deliver(
    state: Arc<RelayState>,
    connection: quinn::Connection,
    caller: Caller,
    mut live: mpsc::Receiver<Arc<StoredMessage>>,
    flow: Arc<DeliveryFlow>,
) {
    let mut cursor = Cursor { index: 0, last_seq: 0, flow: flow.clone() };
    let delivered = async {
        cursor.catch_up(&state, &connection, &caller).await?;
        loop {
            tokio::select! {
                message = live.recv() => {
                    let Some(message) = message else { break };
                    if flow.lagged.swap(false, Ordering::AcqRel) {
                        cursor.catch_up(&state, &connection, &caller).await?;
                    }
                    cursor.send(&connection, &message).await?;
                }
                _ = flow.lag_wake.notified() => {
                    if flow.lagged.swap(false, Ordering::AcqRel) {
                        cursor.catch_up(&state, &connection, &caller).await?;
                    }
                }
            }
        }
        Ok::<(), DeliveryFailed>(())
    };
    if let Err(DeliveryFailed(reason)) = delivered.await {
        if connection.close_reason().is_none() {
            warn!(%reason, "a delivery failed; closing the connection so that it is sent again");
            close(&connection, CloseCode::Reconnect, &format!("a delivery failed ({reason}); reconnect"));
        }
    }
}

/// Why a delivery could not be made.
struct DeliveryFailed(String);

/// Where a connection's deliveries are: the next stream index and the last message sent.
struct Cursor {
    index: u64,
    last_seq: u64,
    flow: Arc<DeliveryFlow>,
}

impl Cursor {
    /// Sends every stored message after the last one sent, a page at a time.
    async fn catch_up(
        &mut self,
        state: &RelayState,
        connection: &quinn::Connection,
        caller: &Caller,
    ) -> Result<(), DeliveryFailed> {
        loop {
            let page = state
                .store
                .pending(caller.key(), self.last_seq, PENDING_PAGE)
                .await
                .map_err(|e| DeliveryFailed(format!("cannot read waiting messages: {e}")))?;
            if page.is_empty() {
                return Ok(());
            }
            for message in page {
                self.send(connection, &message).await?;
            }
        }
    }

    /// Sends one message, unless it was sent already, once the window has room.
    async fn send(&mut self, connection: &quinn::Connection, message: &StoredMessage) -> Result<(), DeliveryFailed> {
        if message.seq <= self.last_seq {
            return Ok(());
        }
        self.flow.room_for(self.index).await;
        send_delivery(connection, self.index, message).await.map_err(DeliveryFailed)?;
        self.index += 1;
        self.last_seq = message.seq;
        Ok(())
    }
}

async fn send_delivery(connection: &quinn::Connection, index: u64, message: &StoredMessage) -> Result<(), String> {
    let frame = Deliver {
        index,
        id: message.id,
        seq: message.seq,
        room: message.room.clone(),
        room_seq: message.room_seq,
        from: message.sender.clone(),
        body: message.body.clone(),
        time_ms: message.time_ms,
    };
    tracing::debug!(index, seq = message.seq, "delivering");
    let mut stream = connection.open_uni().await.map_err(|e| e.to_string())?;
    let _ = stream.set_priority(CHAT_PRIORITY);
    write_frame(&mut stream, &frame).await.map_err(|e| e.to_string())?;
    stream.finish().map_err(|e| e.to_string())
}
