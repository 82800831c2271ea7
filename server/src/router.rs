//! Who is online: the live connections of each user, presence, and fan-out of deliveries
//! and control frames to every connection of a user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use qchat_shared::codes::CloseCode;
use qchat_shared::frame::RelayControl;
use qchat_shared::limits::MAX_CONNECTIONS_PER_USER;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::delivery::DeliveryFlow;
use crate::store::StoredMessage;

/// One live connection, as the router sees it.
#[derive(Clone)]
pub struct LiveConnection {
    pub id: u64,
    pub connection: quinn::Connection,
    /// The device it is of.
    pub device: String,
    /// When it said `Hello` (ms since the epoch).
    pub connected_ms: i64,
    /// The serial number of the client's certificate, to find it when it is revoked.
    pub serial: Vec<u8>,
    /// Messages to deliver on this connection, in sequence order. When the queue is full
    /// the message is dropped here and the flow told: the delivery task then reads what it
    /// missed from the store, where every message is anyway.
    pub deliveries: mpsc::Sender<Arc<StoredMessage>>,
    pub flow: Arc<DeliveryFlow>,
    /// Notices from elsewhere (presence, receipts, offers) for this connection's control
    /// stream. A connection that lets this queue fill is closed: it reconnects and gets
    /// the state again (receipts and offers are replayed, presence is in the welcome).
    pub notices: mpsc::Sender<RelayControl>,
}

/// What registering a connection changed.
pub struct Registered {
    /// The user's oldest connection, pushed out to make room.
    pub evicted: Option<LiveConnection>,
    /// The user had no connection before this one.
    pub came_online: bool,
}

/// The live connections of every user.
#[derive(Default)]
pub struct Router {
    users: Mutex<HashMap<String, Vec<LiveConnection>>>,
}

impl Router {
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<LiveConnection>>> {
        self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a connection; beyond the per-device limit the device's oldest one makes room.
    pub fn register(&self, user: &str, live: LiveConnection) -> Registered {
        let mut users = self.users();
        let list = users.entry(user.to_string()).or_default();
        let came_online = list.is_empty();
        let of_device = list.iter().filter(|c| c.device == live.device).count();
        let evicted = (of_device >= MAX_CONNECTIONS_PER_USER)
            .then(|| list.iter().position(|c| c.device == live.device))
            .flatten()
            .map(|oldest| list.remove(oldest));
        list.push(live);
        Registered { evicted, came_online }
    }

    /// Removes a connection; returns true when it was the user's last.
    pub fn unregister(&self, user: &str, id: u64) -> bool {
        let mut users = self.users();
        let Some(list) = users.get_mut(user) else { return false };
        let before = list.len();
        list.retain(|c| c.id != id);
        let went_offline = before > 0 && list.is_empty() && before != list.len();
        if list.is_empty() {
            users.remove(user);
        }
        went_offline
    }

    pub fn is_online(&self, user: &str) -> bool {
        self.users().get(user).is_some_and(|l| !l.is_empty())
    }

    /// Queues a committed event on every live connection of its audience (a message not
    /// on the device that wrote it).
    pub fn deliver(&self, message: StoredMessage) {
        let message = Arc::new(message);
        let users = self.users();
        for user in &message.audience {
            let devices = users.get(user).into_iter().flatten();
            for live in devices.filter(|live| message.goes_to_device(user, &live.device)) {
                if let Err(TrySendError::Full(_)) = live.deliveries.try_send(message.clone()) {
                    live.flow.lag();
                }
            }
        }
    }

    /// Sends a control frame to every live connection of `user`.
    pub fn notify(&self, user: &str, frame: RelayControl) {
        if let Some(list) = self.users().get(user) {
            for live in list {
                if let Err(TrySendError::Full(_)) = live.notices.try_send(frame.clone()) {
                    tracing::info!(connection = live.id, "a connection does not read its notices; closing it");
                    let reason = "this connection fell behind reading the relay's notices; reconnect";
                    live.connection.close(CloseCode::Reconnect.to_varint(), reason.as_bytes());
                }
            }
        }
    }

    /// Every live connection of every user.
    pub fn all(&self) -> Vec<(String, LiveConnection)> {
        self.users().iter().flat_map(|(user, list)| list.iter().map(move |c| (user.clone(), c.clone()))).collect()
    }
}
