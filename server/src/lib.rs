//! The qchat relay: accepts mutually authenticated QUIC connections, stores every message
//! durably in SQLite, and delivers it to each live connection of the recipient.
//!
//! - [`relay`]: the endpoint, the accept loop, PKI reloading and shutdown;
//! - [`session`]: one client connection (control stream, chat streams, deliveries);
//! - [`router`]: live connections per user and presence;
//! - [`store`]: the SQLite store on its own thread, with group commit;
//! - [`bootstrap`]: the default data directory and the demo PKI made on first start.

pub mod bootstrap;
pub mod relay;
pub mod router;
pub mod session;
pub mod store;

pub use relay::{Relay, RelayConfig, RelayError};
