//! Sizes and deadlines that both ends agree on.

use std::time::Duration;

/// Largest encoded frame (payload after the length prefix).
pub const MAX_FRAME: usize = 64 * 1024;

/// Longest chat message, in bytes of UTF-8.
pub const MAX_TEXT: usize = 32 * 1024;

/// How long a peer may take to write the first frame on a stream it opened.
pub const FIRST_FRAME_DEADLINE: Duration = Duration::from_secs(10);

/// How many live connections one user may have at once; one more evicts the oldest.
pub const MAX_CONNECTIONS_PER_USER: usize = 4;

/// How many delivery acknowledgements fit in one `Ack` frame.
pub const MAX_ACKS_PER_FRAME: usize = 1024;

/// File bytes move between disk and stream in pieces of this size: each side holds a few
/// of them at a time, whatever the file's size.
pub const CHUNK: usize = 1024 * 1024;

/// Longest file name a sender may give, in bytes of UTF-8.
pub const MAX_FILE_NAME: usize = 1024;

/// Members one room may have at once.
pub const MAX_ROOM_MEMBERS: usize = 256;

/// Rooms one user may be in at once (direct ones included).
pub const MAX_ROOMS_PER_USER: usize = 256;

/// Rooms (direct ones too) one user may make in a day: each puts others in a room, so
/// this bounds how fast anyone fills the others' [`MAX_ROOMS_PER_USER`].
pub const MAX_ROOMS_MADE_PER_DAY: usize = 64;

/// Largest sealed chat message or commit (with its Welcome), in bytes: what fits a frame.
pub const MAX_SEALED: usize = 60 * 1024;

/// Key packages the relay keeps per device (besides its last-resort one).
pub const MAX_KEY_PACKAGES: usize = 32;

/// Key packages a device keeps on the relay: it publishes more when fewer are left.
pub const KEY_PACKAGES_TARGET: usize = 16;
