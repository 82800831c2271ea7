//! A stream's bytes in order, read as they arrive, including those that come past a lost
//! packet. quinn gives a stream more credit only for what the application has read. Read
//! in order, a loss stops the sender once a stream window has arrived behind the gap: on
//! a long path that is most of a round trip with nothing new sent, at every loss. [`InOrder`]
//! reads out of order instead. It keeps what came past the gap (up to [`FREE_AHEAD`]
//! without drawing on the process's [`WindowBudget`], more drawn from it) and hands the
//! bytes over in order once the gap is filled, so the sender goes on while the lost bytes
//! are sent again.
//!
//! It reads in order until [`InOrder::read_past_gaps`] is called: a relay calls it only
//! once a stream holds a transfer slot, so what a peer can make it keep past gaps is
//! [`FREE_AHEAD`] per slot plus what the budget grants (at most [`MAX_HOLD`] a stream),
//! never per stream it opens. Past that, quinn keeps what arrives, as it would anyway, up
//! to the stream's window.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};

use crate::codes::StreamCode;
use crate::window::{Hold, WindowBudget};

/// Bytes past a gap that are held without drawing on the budget.
pub const FREE_AHEAD: u64 = crate::limits::CHUNK as u64;
/// The most one stream holds from the budget: what arrives in a round trip on a path its
/// window fills, so one transfer (or one user's few) cannot take the whole budget.
pub const MAX_HOLD: u64 = crate::transport::STREAM_WINDOW;
/// What one kept piece costs beyond its bytes (its share of the map's node, its
/// allocation's header): counted, so that a peer sending a byte per packet past a gap
/// cannot make many small pieces hold far more memory than their bytes say.
const PIECE_COST: u64 = 128;
/// With what waits at (or over) what it may cost, a read takes at most this much (one
/// meant to fill the gap too): quinn hands out the lowest offset it holds, which may still
/// be past the gap.
const GAP_READ: usize = 1200;
/// How far past the budget (and [`FREE_AHEAD`]) what waits may go before the stream is
/// stopped with [`StreamCode::TooLarge`]: an honest sender fills its gap long before; one
/// that trickles bytes into a gap to be read past it without end does not.
const OVER_BUDGET_LIMIT: u64 = crate::limits::CHUNK as u64;
/// A kept piece shorter than this is joined to the piece it follows, so that reading a byte
/// at a time (probing whether a gap has filled) does not cost a piece per byte.
const JOIN_BELOW: usize = 4096;
/// How much is taken from (and given back to) the budget at a time.
const HOLD_STEP: u64 = crate::limits::CHUNK as u64;
/// With the budget spent, how often one byte is read to see whether the gap is filled
/// (quinn hands out the lowest offset it holds first).
const PROBE_EVERY: Duration = Duration::from_millis(2);

/// Where [`InOrder`] reads: a QUIC stream's receiving side (in tests, a scripted one).
pub trait ChunkSource: Unpin {
    /// Polls for the next piece, as `quinn::RecvStream::read_chunk` does.
    fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        ordered: bool,
    ) -> Poll<Result<Option<quinn::Chunk>, quinn::ReadError>>;
    /// Asks the peer to stop sending, with `code`.
    fn stop(&mut self, code: quinn::VarInt);
}

impl ChunkSource for quinn::RecvStream {
    fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        ordered: bool,
    ) -> Poll<Result<Option<quinn::Chunk>, quinn::ReadError>> {
        pin!(self.read_chunk(max, ordered)).poll(cx)
    }

    fn stop(&mut self, code: quinn::VarInt) {
        let _ = quinn::RecvStream::stop(self, code);
    }
}

/// Reads a QUIC stream out of order and hands its bytes over in order; see the module.
pub struct InOrder<S: ChunkSource = quinn::RecvStream> {
    recv: S,
    /// The stream offset of the next byte to hand over.
    next: u64,
    /// Bytes that came past a gap, by stream offset, each piece in an allocation of its
    /// own; no two overlap.
    ahead: BTreeMap<u64, Bytes>,
    ahead_bytes: u64,
    /// What `ahead` costs beyond [`FREE_AHEAD`], from the budget.
    hold: Hold,
    /// While the budget is spent and nothing came in order: when to look again.
    probe: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The last bytes read were the next in order: more may follow them at once.
    last_in_order: bool,
    /// Bytes past a gap are read (see [`InOrder::read_past_gaps`]).
    past_gaps: bool,
    /// An error that came after bytes were handed over: it is the next read's answer
    /// (quinn tells a reset only once).
    failed: Option<quinn::ReadError>,
    /// The most `ahead` has cost at once.
    peak_cost: u64,
}

impl<S: ChunkSource> InOrder<S> {
    /// Reads `recv` from its start, in order until [`InOrder::read_past_gaps`]; then holds
    /// bytes past a gap from `budget`.
    pub fn new(recv: S, budget: Arc<WindowBudget>) -> InOrder<S> {
        InOrder {
            recv,
            next: 0,
            ahead: BTreeMap::new(),
            ahead_bytes: 0,
            hold: Hold::new(budget),
            probe: None,
            last_in_order: true,
            past_gaps: false,
            failed: None,
            peak_cost: 0,
        }
    }

    /// From now on, reads the bytes that come past a gap too. quinn cannot go back to
    /// reading in order after this.
    pub fn read_past_gaps(&mut self) {
        self.past_gaps = true;
    }

    /// The stream, to stop it.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.recv
    }

    /// Bytes that arrived past a gap and wait for it: their bytes alone (what they cost
    /// against the budget counts each piece's overhead too).
    pub fn waiting(&self) -> u64 {
        self.ahead_bytes
    }

    /// The most that what waited past a gap has cost at once, overhead included: for logs
    /// and tests.
    pub fn peak_cost(&self) -> u64 {
        self.peak_cost
    }

    /// What `ahead` costs: its bytes and [`PIECE_COST`] a piece.
    fn ahead_cost(&self) -> u64 {
        self.ahead_bytes + PIECE_COST * self.ahead.len() as u64
    }

    /// Holds from the budget what `ahead` costs beyond [`FREE_AHEAD`] (up to [`MAX_HOLD`]),
    /// in steps of [`HOLD_STEP`]; gives back what is a step or more beyond that.
    fn fit_hold(&mut self) {
        let need = self.ahead_cost().saturating_sub(FREE_AHEAD).min(MAX_HOLD);
        if need > self.hold.bytes() {
            self.hold.cover(need.next_multiple_of(HOLD_STEP).min(MAX_HOLD));
        } else if self.hold.bytes() > need + HOLD_STEP {
            self.hold.release_to(need.next_multiple_of(HOLD_STEP));
        }
    }

    /// Reads the next bytes into `buf`, as `quinn::RecvStream::read` does: how many, or
    /// `None` once the stream has ended.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, quinn::ReadError> {
        std::future::poll_fn(|cx| self.poll_read_some(cx, buf)).await
    }

    fn poll_read_some(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<Option<usize>, quinn::ReadError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(Some(0)));
        }
        if let Some(error) = self.failed.take() {
            return Poll::Ready(Err(error));
        }
        let mut filled = 0;
        loop {
            filled += self.hand_over(&mut buf[filled..]);
            if filled == buf.len() {
                return Poll::Ready(Ok(Some(filled)));
            }
            let allowed = FREE_AHEAD + self.hold.bytes();
            let cost = self.ahead_cost();
            if cost > allowed + OVER_BUDGET_LIMIT {
                let error = self.give_up();
                return Poll::Ready(if filled > 0 {
                    self.failed = Some(error);
                    Ok(Some(filled))
                } else {
                    Err(error)
                });
            }
            let max = if cost <= allowed {
                // What is read may all come past the gap: little more than is allowed.
                (buf.len() - filled).min(((allowed - cost) as usize).max(GAP_READ))
            } else if self.last_in_order {
                // The gap is being filled: read what it lacks, a little at a time.
                self.ahead.first_key_value().map_or(1, |(&at, _)| ((at - self.next) as usize).min(GAP_READ))
            } else if filled > 0 {
                return Poll::Ready(Ok(Some(filled)));
            } else {
                let probe = self.probe.get_or_insert_with(|| Box::pin(tokio::time::sleep(PROBE_EVERY)));
                ready!(probe.as_mut().poll(cx));
                self.probe = None;
                1
            };
            let chunk = match self.recv.poll_chunk(cx, max, !self.past_gaps) {
                Poll::Ready(Ok(Some(chunk))) => chunk,
                // What was handed over goes first; an end comes again, an error is kept.
                Poll::Ready(Err(e)) if filled > 0 => {
                    self.failed = Some(e);
                    return Poll::Ready(Ok(Some(filled)));
                }
                _ if filled > 0 => return Poll::Ready(Ok(Some(filled))),
                Poll::Ready(Ok(None)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            self.last_in_order = chunk.offset == self.next;
            if self.last_in_order {
                let take = chunk.bytes.len().min(buf.len() - filled);
                buf[filled..filled + take].copy_from_slice(&chunk.bytes[..take]);
                (filled, self.next) = (filled + take, self.next + take as u64);
                self.keep(self.next, chunk.bytes.slice(take..));
            } else {
                self.keep(chunk.offset, chunk.bytes);
            }
        }
    }

    /// Stops the stream as [`StreamCode::TooLarge`] and lets go of what waited; returns the
    /// error every read answers from now on.
    fn give_up(&mut self) -> quinn::ReadError {
        let code = StreamCode::TooLarge.to_varint();
        self.recv.stop(code);
        self.ahead.clear();
        self.ahead_bytes = 0;
        self.hold.release_to(0);
        quinn::ReadError::Reset(code)
    }

    /// Copies what is next in order from `ahead` into `buf`; returns how many bytes.
    fn hand_over(&mut self, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let Some(entry) = self.ahead.first_entry() else { break };
            if *entry.key() != self.next {
                break;
            }
            let bytes = entry.remove();
            let take = bytes.len().min(buf.len() - done);
            buf[done..done + take].copy_from_slice(&bytes[..take]);
            (done, self.next) = (done + take, self.next + take as u64);
            self.ahead_bytes -= take as u64;
            if take < bytes.len() {
                self.ahead.insert(self.next, bytes.slice(take..));
            }
        }
        if done > 0 {
            self.fit_hold();
        }
        done
    }

    /// Keeps bytes read at `offset` until they are next (any part before the next offset,
    /// which quinn never hands out twice, is dropped); draws on the budget for them. They
    /// are copied: quinn's piece shares the allocation of the whole datagram it came in,
    /// which a byte kept for long would otherwise hold. A small piece is joined to the one
    /// it follows ([`JOIN_BELOW`]).
    fn keep(&mut self, offset: u64, mut bytes: Bytes) {
        let mut offset = offset;
        if offset < self.next {
            let skip = (self.next - offset).min(bytes.len() as u64);
            bytes = bytes.slice(skip as usize..);
            offset += skip;
        }
        if bytes.is_empty() {
            return;
        }
        self.ahead_bytes += bytes.len() as u64;
        let before = self.ahead.range_mut(..offset).next_back();
        match before {
            Some((&at, piece)) if at + piece.len() as u64 == offset && piece.len() + bytes.len() < JOIN_BELOW => {
                *piece = [&piece[..], &bytes[..]].concat().into();
            }
            _ => {
                if let Some(replaced) = self.ahead.insert(offset, Bytes::copy_from_slice(&bytes)) {
                    self.ahead_bytes -= replaced.len() as u64;
                }
            }
        }
        self.peak_cost = self.peak_cost.max(self.ahead_cost());
        self.fit_hold();
    }
}

impl<S: ChunkSource> AsyncRead for InOrder<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let read = ready!(this.poll_read_some(cx, buf.initialize_unfilled()))?;
        buf.advance(read.unwrap_or(0));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests;
