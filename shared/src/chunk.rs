//! Chunk buffers: aligned 1 MiB blocks ([`ChunkBuf`]) that O_DIRECT can use as they are,
//! and a [`ChunkPool`] that takes them back when the disk, or QUIC, is done with them, so
//! moving a file allocates (and the kernel zeroes) a handful of buffers, not one per chunk.
//! What is sent (files read, and sealed segments) shares one pool
//! ([`ChunkPool::for_sending`]): a buffer one transfer's QUIC stream gave back serves the
//! next transfer, so transfers that take turns on a connection's window do not each keep a
//! window's worth of buffers.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use crate::limits::CHUNK;

/// Alignment O_DIRECT asks for (offsets, lengths and memory).
pub const ALIGN: usize = 4096;

/// A chunk buffer whose bytes start at an aligned address, so that a whole chunk can go to
/// disk with O_DIRECT without being copied first.
pub struct ChunkBuf {
    memory: Vec<u8>,
    start: usize,
    len: usize,
}

impl Default for ChunkBuf {
    fn default() -> Self {
        let memory = vec![0u8; CHUNK + ALIGN];
        let start = memory.as_ptr().align_offset(ALIGN);
        ChunkBuf { memory, start, len: 0 }
    }
}

impl ChunkBuf {
    /// A buffer with no memory, to stand where one was taken out; it holds nothing and
    /// no pool keeps it.
    pub fn placeholder() -> ChunkBuf {
        ChunkBuf { memory: Vec::new(), start: 0, len: 0 }
    }

    fn is_placeholder(&self) -> bool {
        self.memory.is_empty()
    }

    /// Sets how many bytes the chunk holds (at most [`CHUNK`]).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(CHUNK).min(self.memory.len().saturating_sub(self.start));
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.memory[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.memory[self.start..self.start + self.len]
    }
}

/// Spare chunk buffers; its clones share them. Buffers come back through a [`Recycler`]
/// (from another thread) or when the last [`Bytes`] made by [`ChunkPool::share`] is
/// dropped; beyond the pool's capacity they are freed.
#[derive(Clone)]
pub struct ChunkPool {
    spare: Arc<Spare>,
}

struct Spare {
    buffers: Mutex<Vec<ChunkBuf>>,
    capacity: usize,
}

impl Spare {
    /// The spare buffers (a panic elsewhere while they were held leaves them usable).
    fn buffers(&self) -> std::sync::MutexGuard<'_, Vec<ChunkBuf>> {
        self.buffers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Gives buffers back to their [`ChunkPool`].
#[derive(Clone)]
pub struct Recycler(Arc<Spare>);

impl Recycler {
    /// Keeps `buf` as a spare, unless the pool has all it keeps (then it is freed).
    pub fn give_back(&self, buf: ChunkBuf) {
        let mut buffers = self.0.buffers();
        if buffers.len() < self.0.capacity && !buf.is_placeholder() {
            buffers.push(buf);
        }
    }
}

/// Spare buffers the process keeps for what it sends, whatever the number of
/// transfers: what comes back while the readers are busy is taken again at once, so
/// more would only sit in memory after a burst.
const SENDING_SPARES: usize = 4;

impl ChunkPool {
    /// A pool that keeps at most `capacity` spare buffers.
    pub fn new(capacity: usize) -> ChunkPool {
        ChunkPool { spare: Arc::new(Spare { buffers: Mutex::new(Vec::with_capacity(capacity)), capacity }) }
    }

    /// The process's pool for files read to send and sealed segments (see the module's
    /// doc).
    pub fn for_sending() -> ChunkPool {
        static SENDING: OnceLock<ChunkPool> = OnceLock::new();
        SENDING.get_or_init(|| ChunkPool::new(SENDING_SPARES)).clone()
    }

    /// A buffer holding `len` bytes of whatever it held before.
    pub fn take(&self, len: usize) -> ChunkBuf {
        let spare = self.spare.buffers().pop();
        let mut buf = spare.unwrap_or_default();
        buf.set_len(len);
        buf
    }

    /// Spare buffers held now.
    pub fn spares(&self) -> usize {
        self.spare.buffers().len()
    }

    /// A handle that gives buffers back to this pool from anywhere.
    pub fn recycler(&self) -> Recycler {
        Recycler(self.spare.clone())
    }

    /// The buffer's bytes as [`Bytes`] (no copy); the buffer comes back to this pool once
    /// every clone and slice of them is dropped.
    pub fn share(&self, buf: ChunkBuf) -> Bytes {
        Bytes::from_owner(Shared { buf: Some(buf), home: self.recycler() })
    }
}

/// The owner behind [`ChunkPool::share`]'s `Bytes`.
struct Shared {
    buf: Option<ChunkBuf>,
    home: Recycler,
}

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], ChunkBuf::as_slice)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.home.give_back(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_bytes_come_back_to_the_pool_when_the_last_slice_goes() {
        let pool = ChunkPool::new(4);
        let mut buf = pool.take(3);
        buf.as_mut_slice().copy_from_slice(b"abc");
        let address = buf.as_slice().as_ptr();
        let bytes = pool.share(buf);
        let tail = bytes.slice(1..);
        drop(bytes);
        assert_eq!(pool.spares(), 0, "a slice is still alive");
        assert_eq!(&tail[..], b"bc");
        drop(tail);
        let again = pool.take(CHUNK);
        assert_eq!(again.as_slice().as_ptr(), address, "the same buffer is handed out again");
        assert_eq!(again.len(), CHUNK);
    }

    #[test]
    fn clones_share_their_spares_and_keep_no_more_than_the_capacity() {
        let pool = ChunkPool::new(2);
        let other = pool.clone();
        let bufs: Vec<Bytes> = (0..3).map(|_| other.share(other.take(CHUNK))).collect();
        let addresses: Vec<*const u8> = bufs.iter().map(|b| b.as_ptr()).collect();
        drop(bufs);
        assert_eq!(pool.spares(), 2, "the third buffer was freed");
        let again = pool.take(1);
        assert!(addresses.contains(&again.as_slice().as_ptr()), "a buffer another clone gave back");
    }

    #[test]
    fn a_placeholder_is_never_kept() {
        let pool = ChunkPool::new(2);
        pool.recycler().give_back(ChunkBuf::placeholder());
        assert_eq!(pool.spares(), 0);
        assert_eq!(pool.take(7).len(), 7, "a real buffer comes out");
    }

    #[test]
    fn buffers_are_aligned_for_o_direct() {
        let pool = ChunkPool::new(1);
        let buf = pool.take(CHUNK);
        assert_eq!(buf.as_slice().as_ptr() as usize % ALIGN, 0);
    }
}
