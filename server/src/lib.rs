//! The qchat relay: accepts mutually authenticated QUIC connections, stores every message
//! durably in SQLite, and delivers it to each live connection of the recipient.
//!
//! - [`relay`]: the endpoint, the accept loop, PKI reloading and shutdown;
//! - [`session`]: one client connection: admission, `Hello`, chat and file streams;
//! - [`control`]: its control stream (requests, replies, notices), with backpressure;
//! - [`delivery`]: its deliveries, from the store and live, in order;
//! - [`router`]: live connections per user (and device) and presence;
//! - [`enroll`]: a device without a certificate redeems an invite for one;
//! - [`devices`]: invites, device certificates, renewal and revocation;
//! - [`attempts`]: failed enrollments per address, bounded;
//! - [`files`]: upload and download streams;
//! - [`listing`]: file listings and offer replays, in pages that fit a frame;
//! - [`slots`]: fair shares of transfer slots, and connections not past `Hello` yet;
//! - [`spool`]: file bodies on disk, named by file id;
//! - [`sweep`]: retention and expiry of files and messages;
//! - [`turnstile`]: one connection's messages stored in the order they were sent;
//! - [`store`]: the SQLite store on its own thread, with group commit;
//! - [`bootstrap`]: the default data directory and the demo PKI made on first start;
//! - [`admin`]: the operator's subcommands (invite, users, devices, revoke);
//! - [`status`]: the operator's view of everything the relay holds;
//! - [`local`]: the running relay's local socket, which `status` asks who is connected;
//! - [`options`]: the relay's flags and config file;
//! - [`metrics`]: Prometheus metrics over HTTP on a local address.

pub mod admin;
pub mod arrivals;
pub mod attempts;
pub mod bootstrap;
pub mod control;
pub mod delivery;
pub mod devices;
pub mod enroll;
pub mod files;
pub mod listing;
pub mod local;
pub mod metrics;
pub mod options;
pub mod relay;
pub mod router;
pub mod session;
pub mod slots;
pub mod spool;
pub mod status;
pub mod store;
pub mod sweep;
pub mod turnstile;

pub use relay::{Relay, RelayConfig, RelayError, RelayLimits};
