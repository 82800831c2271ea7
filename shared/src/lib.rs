//! qchat's wire protocol and the configuration both ends share: frames and their codec
//! (no sockets), error codes, limits, the identity-file format, and the TLS and QUIC
//! transport settings.

pub mod allocator;
pub mod append;
pub mod chunk;
pub mod codec;
pub mod codes;
pub mod congestion;
pub mod display;
pub mod frame;
pub mod hash;
pub mod hex;
pub mod identity;
pub mod in_order;
pub mod invite;
pub mod io;
pub mod limits;
pub mod logging;
pub mod names;
pub mod replace;
pub mod seal;
pub mod stop;
pub mod tls;
pub mod transfer;
pub mod transport;
pub mod units;
pub mod window;

/// The ALPN protocol id; it versions every frame type.
/// `qchat/2` paged file listings, bounded every queue and told senders of expired messages;
/// `qchat/3` offers a file while it is still arriving and lets its download follow the
/// upload (cut-through); `qchat/4` knows devices (each device of a person has its own
/// certificate and delivery cursor, and gets the messages its person sends from the
/// others); `qchat/5` has rooms (any number of users; every message and file goes to a
/// room, numbered by the relay per room, with its changes of members in the same order).
/// `qchat/6` is end to end encrypted (each room an MLS group of its members' devices,
/// files sealed under keys sent inside the group; the relay keeps key packages and orders
/// the groups' commits). A peer of another version is refused at the handshake with
/// "another version".
pub const ALPN: &[u8] = b"qchat/6";

/// The ALPN of enrollment: a device without a certificate proves an invite's secret and
/// gets its certificate signed ([`frame::EnrollRequest`]). A connection with this ALPN can
/// never reach the chat protocol.
pub const ENROLL_ALPN: &[u8] = b"qchat-enroll/1";

/// The relay's default UDP port (the original program's).
pub const DEFAULT_PORT: u16 = 21567;
