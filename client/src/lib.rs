//! The qchat client core: connects to the relay, sends and receives chat, reconnects with
//! backoff, and reports everything as one stream of [`Event`]s. It knows nothing of any
//! UI: `qchat-cli` and the desktop client are thin layers over it.
//!
//! - [`client`]: the [`Client`] handle and the reconnect loop;
//! - [`session`]: one live connection (control stream, chat streams, deliveries);
//! - [`connect`]: the endpoint and the handshake;
//! - [`enroll`]: joining with an invite (a key made here), and certificate renewal;
//! - [`refusal`]: turning connection errors into reasons a person can act on;
//! - [`reorder`]: deliveries put back in the relay's order, with a bound;
//! - [`rooms`]: the rooms this user is in, kept up to date;
//! - [`secure`], [`offer`]: end-to-end encryption (each room an MLS group) and what sealed
//!   messages hold (texts, and files' names and keys);
//! - [`event`]: what the core reports;
//! - [`transfers`], [`upload`], [`download`]: files, one stream each, resumable;
//! - [`state`], [`history`]: what the client keeps on disk, per identity;
//! - [`args`]: the command-line options the client programs share.

pub mod args;
pub mod client;
pub mod connect;
pub mod download;
pub mod enroll;
pub mod event;
pub mod history;
pub mod offer;
pub mod refusal;
pub mod reorder;
pub mod rooms;
pub mod secure;
pub mod session;
pub mod state;
pub mod transfers;
pub mod upload;

pub use client::{Client, ClientOptions, DeviceRequest, SendError};
pub use event::{ConnectionState, Event, IncomingMessage, TransferId};
pub use rooms::RoomRequest;
