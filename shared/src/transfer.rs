//! Moves file bytes between a file on disk and a QUIC stream in fixed-size chunks
//! ([`CHUNK`]), hashing with BLAKE3 on the way. Disk I/O runs on a blocking thread (which
//! also hashes when sending); a bounded queue between it and the stream gives backpressure
//! both ways, so memory stays at a few chunks whatever the file's size.

use std::fs::File;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::append::{Appender, ChunkReader};
use crate::chunk::{ChunkBuf, ChunkPool};
use crate::codes::StreamCode;
use crate::frame::Blake3;
use crate::in_order::InOrder;
use crate::limits::CHUNK;
use crate::seal::{Opener, SealError, Sealer};

/// Chunks queued between the stream and the disk thread that writes them.
const DEPTH: usize = 4;
/// Bytes of a file that may wait in quinn's send buffer not yet sent (besides what is in
/// flight, and the chunk written once they are below it), when [`SendOptions::connection`]
/// is given. quinn takes what the send window allows, which is sized for far paths: on a
/// fast one the sender's own packets lag its writes, and the whole window (20 MiB) sat in
/// the relay's memory during every download. This much keeps the connection busy for
/// milliseconds at a gigabyte a second.
pub const QUEUE_AHEAD: u64 = 4 << 20;
/// How often a sender that is [`QUEUE_AHEAD`] ahead looks again.
const QUEUE_LOOK_EVERY: Duration = Duration::from_millis(1);
/// Chunks read ahead of the stream when sending. Little is needed: QUIC's own send buffer
/// (the connection's send window) is the queue that keeps the path busy, and every chunk
/// read ahead of it is a MiB held per transfer.
const READ_AHEAD: usize = 2;

/// Why moving file bytes failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("the disk is full")]
    DiskFull,
    #[error("disk error: {0}")]
    Disk(io::Error),
    #[error("the connection failed: {0}")]
    Stream(String),
    #[error("the stream ended after {got} of {expected} bytes")]
    Short { got: u64, expected: u64 },
    #[error("no bytes moved for {} s", .0.as_secs())]
    Stalled(Duration),
    #[error("the other side reset the stream ({0:?})")]
    Reset(StreamCode),
    #[error("{0}")]
    Sealed(SealError),
}

/// Awaits `step`, or fails as stalled when `stall` passes first.
async fn within<T>(stall: Option<Duration>, step: impl std::future::Future<Output = T>) -> Result<T, TransferError> {
    match stall {
        None => Ok(step.await),
        Some(limit) => tokio::time::timeout(limit, step).await.map_err(|_| TransferError::Stalled(limit)),
    }
}

impl From<io::Error> for TransferError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
            TransferError::DiskFull
        } else {
            TransferError::Disk(e)
        }
    }
}

/// A copy of a writer's error, told again.
fn copy_of(error: Option<&TransferError>) -> TransferError {
    match error {
        Some(TransferError::DiskFull) => TransferError::DiskFull,
        Some(e) => TransferError::Disk(io::Error::other(e.to_string())),
        None => TransferError::Disk(io::Error::other("the writer stopped")),
    }
}

/// The receiving end: chunks are hashed as they arrive (while their bytes are still in the
/// CPU's cache) and go to a thread that appends them to a file, so disk waits and hashing
/// overlap.
pub struct Sink {
    chunks: Option<mpsc::Sender<ChunkBuf>>,
    spare: ChunkPool,
    /// The writer thread, until its end was awaited (its error is then in `failed`).
    writer: Option<JoinHandle<io::Result<File>>>,
    failed: Option<TransferError>,
    hasher: blake3::Hasher,
    /// Bytes of the file (from its start) known to be on disk after an fsync.
    pub durable: Arc<AtomicU64>,
}

/// How a [`Sink`] writes.
#[derive(Default)]
pub struct SinkOptions<'a> {
    /// Fsync each time this many bytes were added, and move [`Sink::durable`] on.
    pub sync_every: Option<u64>,
    /// The file's path: with it, the bulk may bypass the page cache (see [`crate::append`]).
    pub path: Option<&'a Path>,
    /// Told, on the writer's thread, how many bytes of the file are in it after each write
    /// (so that a reader of the same file can follow).
    pub on_disk: Option<Box<dyn Fn(u64) + Send>>,
}

impl Sink {
    /// Starts appending to `file`, which already holds `offset` bytes that `hasher` has
    /// seen.
    pub fn start(file: File, hasher: blake3::Hasher, offset: u64, options: SinkOptions<'_>) -> Sink {
        let SinkOptions { sync_every, path, on_disk } = options;
        let mut appender = Appender::new(file, offset, path);
        let (chunks, mut rx) = mpsc::channel::<ChunkBuf>(DEPTH);
        // Every buffer that can be alive at once: one being filled, the queue, one being
        // written; so after the first few chunks none is allocated again.
        let spare = ChunkPool::new(DEPTH + 2);
        let recycler = spare.recycler();
        let durable = Arc::new(AtomicU64::new(offset));
        let durable_w = durable.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let (mut written, mut synced) = (offset, offset);
            while let Some(chunk) = rx.blocking_recv() {
                appender.write_chunk(&chunk)?;
                written += chunk.len() as u64;
                recycler.give_back(chunk);
                if let Some(report) = &on_disk {
                    report(appender.on_disk());
                }
                if sync_every.is_some_and(|every| written - synced >= every) {
                    synced = appender.sync()?;
                    durable_w.store(synced, Ordering::Release);
                }
            }
            let file = appender.finish()?;
            durable_w.store(written, Ordering::Release);
            if let Some(report) = &on_disk {
                report(written);
            }
            Ok(file)
        });
        Sink { chunks: Some(chunks), spare, writer: Some(writer), failed: None, hasher, durable }
    }

    /// A buffer of `len` bytes to fill, reusing one the writer has finished with.
    fn buffer(&self, len: usize) -> ChunkBuf {
        self.spare.take(len)
    }

    /// Queues a chunk; if the writer failed, returns its error.
    async fn push(&mut self, chunk: ChunkBuf) -> Result<(), TransferError> {
        self.hasher.update(chunk.as_slice());
        let sent = match &self.chunks {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            self.chunks = None;
            Err(self.writer_error().await)
        }
    }

    /// Why the writer stopped early (awaited once; asked again, the same answer).
    async fn writer_error(&mut self) -> TransferError {
        let error = match self.writer.take() {
            Some(writer) => match writer.await {
                Ok(Err(e)) => e.into(),
                Ok(Ok(_)) => TransferError::Disk(io::Error::other("the writer stopped")),
                Err(e) => TransferError::Disk(io::Error::other(e.to_string())),
            },
            None => return copy_of(self.failed.as_ref()),
        };
        self.failed = Some(copy_of(Some(&error)));
        error
    }

    /// Writes out what is queued, fsyncs, and returns the file and the hash state.
    pub async fn finish(mut self) -> Result<(File, blake3::Hasher), TransferError> {
        self.chunks = None;
        let Some(writer) = self.writer.take() else { return Err(copy_of(self.failed.as_ref())) };
        match writer.await {
            Ok(Ok(file)) => Ok((file, self.hasher)),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(TransferError::Disk(io::Error::other(e.to_string()))),
        }
    }
}

/// Reads into `buf` until it is full, the stream ends or fails, or `stall` passes with no
/// byte; returns how many bytes it holds and, when short, why.
async fn fill(recv: &mut InOrder, buf: &mut [u8], stall: Option<Duration>) -> (usize, Option<TransferError>) {
    let mut filled = 0;
    while filled < buf.len() {
        match within(stall, recv.read(&mut buf[filled..])).await {
            Ok(Ok(Some(n))) => filled += n,
            Ok(Ok(None)) => return (filled, None),
            Ok(Err(quinn::ReadError::Reset(code))) => {
                return (filled, Some(TransferError::Reset(StreamCode::from_varint(code))))
            }
            Ok(Err(e)) => return (filled, Some(TransferError::Stream(e.to_string()))),
            Err(stalled) => return (filled, Some(stalled)),
        }
    }
    (filled, None)
}

/// Reads exactly `len` bytes from `recv` into `sink`, calling `progress` with the bytes
/// received so far after each chunk. With `stall`, fails when no byte arrives for that
/// long (what did arrive is in the sink).
pub async fn receive(
    recv: &mut InOrder,
    sink: &mut Sink,
    len: u64,
    stall: Option<Duration>,
    mut progress: impl FnMut(u64),
) -> Result<(), TransferError> {
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(CHUNK as u64) as usize;
        let mut buf = sink.buffer(want);
        let (filled, ended) = fill(recv, buf.as_mut_slice(), stall).await;
        if filled < want {
            // Keep what did arrive: a resume need not send it again.
            buf.set_len(filled);
            sink.push(buf).await?;
            let got = done + filled as u64;
            progress(got);
            return Err(ended.unwrap_or(TransferError::Short { got, expected: len }));
        }
        done += want as u64;
        sink.push(buf).await?;
        progress(done);
    }
    Ok(())
}

/// Reads a sealed file's segments from `recv`, from the opener's position to the end, and
/// puts their plaintext into `sink`; `progress` gets the sealed bytes received so far. A
/// segment cut short is dropped (a resume fetches it whole); one that does not open ends
/// the transfer. The caller checks the hash with [`Opener::verify`].
pub async fn receive_sealed(
    recv: &mut InOrder,
    sink: &mut Sink,
    opener: &mut Opener,
    stall: Option<Duration>,
    mut progress: impl FnMut(u64),
) -> Result<(), TransferError> {
    let mut done = 0u64;
    loop {
        let want = opener.next_len();
        if want == 0 {
            return Ok(());
        }
        let mut buf = sink.buffer(want);
        let (filled, ended) = fill(recv, buf.as_mut_slice(), stall).await;
        if filled < want {
            let got = done + filled as u64;
            return Err(ended.unwrap_or(TransferError::Short { got, expected: got - filled as u64 + want as u64 }));
        }
        let data = opener.open(buf.as_mut_slice()).map_err(TransferError::Sealed)?;
        buf.set_len(data);
        done += want as u64;
        sink.push(buf).await?;
        progress(done);
    }
}

/// A file that is still being written: how far it may be read.
pub trait Growing: Send + 'static {
    /// Blocks until the file holds more than `pos` bytes, and returns how many it holds; an
    /// error (the file will not be complete) ends the transfer.
    fn wait_beyond(&self, pos: u64) -> io::Result<u64>;
}

/// What [`send`] needs besides the stream and the file.
#[derive(Default)]
pub struct SendOptions<'a> {
    /// Has seen the bytes before the file's position: the hash of the whole file is
    /// returned.
    pub hasher: Option<blake3::Hasher>,
    /// The file's path: with it, the bulk may bypass the page cache.
    pub path: Option<&'a Path>,
    /// Fail when the peer takes no byte for this long.
    pub stall: Option<Duration>,
    /// The file is still being written: read only what it holds, waiting for more.
    pub growing: Option<Box<dyn Growing>>,
    /// Encrypt the file on the way ([`Sealed`]): the hash returned is the sealed stream's.
    pub seal: Option<Sealed>,
    /// The connection the stream belongs to: with it, little more than [`QUEUE_AHEAD`] of
    /// the file waits unsent (see [`Backlog`]).
    pub connection: Option<quinn::Connection>,
}

/// What every QUIC packet carries besides stream data, at least: a short header's first
/// byte, a one-byte packet number and the 16-byte AEAD tag (a connection id only adds).
const PACKET_OVERHEAD_AT_LEAST: u64 = 18;

/// How much of a file waits in quinn's send buffer, not yet sent, from the connection's own
/// counts: what its stream has written, less what the connection has sent since (the bytes
/// of datagrams not lost, less the overhead every packet has at least). The estimate can
/// only come out smaller than the truth (other streams' bytes and the rest of each packet's
/// overhead count as sent), so a sender never waits for bytes that already left: at worst
/// the limit binds less, and the send window still bounds what waits. Where the estimate
/// falls to nothing it starts again from there, so what it over-counted does not pile up.
struct Backlog {
    connection: quinn::Connection,
    /// The connection's [`Backlog::net_sent`] when the stream had written nothing waiting.
    sent_at_start: u64,
    /// Done once the peer stopped the stream or the connection is gone (then the next write
    /// says so, and the counts stand still); `None` after.
    stopped: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Backlog {
    fn new(connection: quinn::Connection, stream: &quinn::SendStream) -> Backlog {
        let sent_at_start = Backlog::net_sent(&connection);
        let stopped = stream.stopped();
        Backlog {
            connection,
            sent_at_start,
            stopped: Some(Box::pin(async move {
                let _ = stopped.await;
            })),
        }
    }

    fn net_sent(connection: &quinn::Connection) -> u64 {
        let stats = connection.stats();
        let datagrams = stats.udp_tx.datagrams.saturating_sub(stats.path.lost_packets);
        let bytes = stats.udp_tx.bytes.saturating_sub(stats.path.lost_bytes);
        bytes.saturating_sub(datagrams * PACKET_OVERHEAD_AT_LEAST)
    }

    /// Of the `written` bytes, how many wait unsent.
    fn waiting(connection: &quinn::Connection, sent_at_start: &mut u64, written: u64) -> u64 {
        let sent = Backlog::net_sent(connection).saturating_sub(*sent_at_start);
        if sent >= written {
            *sent_at_start += sent - written;
            return 0;
        }
        written - sent
    }

    /// Returns once no more than [`QUEUE_AHEAD`] of the `written` bytes waits, or once the
    /// peer is gone.
    async fn room(&mut self, written: u64) {
        let Backlog { connection, sent_at_start, stopped } = self;
        let Some(gone) = stopped.as_mut() else { return };
        let caught_up = async {
            while Backlog::waiting(connection, sent_at_start, written) > QUEUE_AHEAD {
                tokio::time::sleep(QUEUE_LOOK_EVERY).await;
            }
        };
        let peer_gone = tokio::select! {
            () = caught_up => false,
            () = gone => true,
        };
        if peer_gone {
            *stopped = None;
        }
    }
}

/// How [`send`] encrypts a file: it reads the file from its start, seals all of it, and
/// sends the sealed bytes from `skip` on (what the relay already holds).
pub struct Sealed {
    pub sealer: Sealer,
    pub skip: u64,
    /// Set to the plaintext's BLAKE3 once all of it was read.
    pub plain_hash: Arc<std::sync::OnceLock<Blake3>>,
}

/// Of sealed `segment`, which starts at sealed byte `at`, the part from `skip` on.
fn unsent(segment: Bytes, at: u64, skip: u64) -> Option<Bytes> {
    let end = at + segment.len() as u64;
    (end > skip).then(|| segment.slice(skip.saturating_sub(at) as usize..))
}

/// Sends `len` bytes of `file` from its current position, chunk by chunk.
pub async fn send(
    stream: &mut quinn::SendStream,
    file: File,
    len: u64,
    options: SendOptions<'_>,
    mut progress: impl FnMut(u64),
) -> Result<Option<Blake3>, TransferError> {
    let SendOptions { hasher, path, stall, growing, mut seal, connection } = options;
    let mut backlog = connection.map(|connection| Backlog::new(connection, stream));
    // Bytes that go on the stream.
    let expected = seal.as_ref().map_or(len, |sealed| crate::seal::sealed_len(len) - sealed.skip);
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
    let path = path.map(Path::to_path_buf);
    let reader = tokio::task::spawn_blocking(move || {
        let mut hasher = hasher;
        let mut file = file;
        let pos = match io::Seek::stream_position(&mut file) {
            Ok(pos) => pos,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return None;
            }
        };
        let mut reader = ChunkReader::new(file, pos, path.as_deref());
        let (mut left, mut at) = (len, pos);
        // Sealed bytes made so far (when sealing).
        let mut sealed_at = 0u64;
        let mut send_sealed = |skip: u64, segments: Vec<Bytes>| {
            for segment in segments {
                let len = segment.len() as u64;
                if let Some(bytes) = unsent(segment, sealed_at, skip) {
                    if tx.blocking_send(Ok(bytes)).is_err() {
                        return false;
                    }
                }
                sealed_at += len;
            }
            true
        };
        // What may be read: all of it, or, of a growing file, what it is known to hold.
        let mut held = if growing.is_some() { 0 } else { u64::MAX };
        while left > 0 {
            if let Some(growing) = &growing {
                if held <= at {
                    match growing.wait_beyond(at) {
                        Ok(now) => held = now,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return None;
                        }
                    }
                }
            }
            let want = left.min(CHUNK as u64).min(held.saturating_sub(at)) as usize;
            // Sealed, the file is read straight into the segment being filled (no copy).
            let read = match seal.as_mut() {
                Some(sealed) => sealed.sealer.read_into(want, |buf| {
                    let got = reader.read_into(buf)?;
                    if let Some(h) = hasher.as_mut() {
                        h.update(&buf[..got]);
                    }
                    Ok(got)
                }),
                None => reader.read(want).map(|chunk| {
                    if let Some(h) = hasher.as_mut() {
                        h.update(&chunk);
                    }
                    (chunk.len(), vec![chunk])
                }),
            };
            let (got, pieces) = match read {
                Ok((0, _)) => {
                    let shorter =
                        io::Error::new(io::ErrorKind::UnexpectedEof, "the file got shorter while it was sent");
                    let _ = tx.blocking_send(Err(shorter));
                    return None;
                }
                Ok(read) => read,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return None;
                }
            };
            left -= got as u64;
            at += got as u64;
            let sent = match seal.as_ref() {
                Some(sealed) => send_sealed(sealed.skip, pieces),
                None => pieces.into_iter().all(|piece| tx.blocking_send(Ok(piece)).is_ok()),
            };
            if !sent {
                return None;
            }
        }
        match seal {
            Some(sealed) => {
                let (segments, hash, plain) = sealed.sealer.finish();
                let _ = sealed.plain_hash.set(plain);
                send_sealed(sealed.skip, segments).then_some(hash)
            }
            None => hasher.map(|h| *h.finalize().as_bytes()),
        }
    });
    let mut done = 0u64;
    while let Some(chunk) = rx.recv().await {
        let mut chunk = chunk?;
        if let Some(backlog) = backlog.as_mut() {
            within(stall, backlog.room(done)).await?;
        }
        done += chunk.len() as u64;
        while !chunk.is_empty() {
            within(stall, stream.write_chunks(std::slice::from_mut(&mut chunk)))
                .await?
                .map_err(|e| TransferError::Stream(e.to_string()))?;
        }
        progress(done);
    }
    let hash = reader.await.map_err(|e| TransferError::Disk(io::Error::other(e.to_string())))?;
    if done < expected {
        return Err(TransferError::Short { got: done, expected });
    }
    Ok(hash)
}
