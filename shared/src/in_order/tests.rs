//! [`InOrder`] against a scripted stream that behaves as quinn's does once read out of
//! order: the pieces that have arrived are handed out lowest offset first, never twice.
//! Arrival orders, budgets and read sizes are drawn at random, and the patterns a hostile
//! sender can make (a byte per packet past a gap, a trickle into the gap, a reset right
//! after data) are played exactly, which a real link cannot do on demand.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use proptest::prelude::*;

use super::*;

/// The byte at `offset` of every test stream.
fn byte_at(offset: u64) -> u8 {
    (offset.wrapping_mul(2_654_435_761) >> 11) as u8
}

fn stream_of(len: u64) -> Bytes {
    (0..len).map(byte_at).collect::<Vec<u8>>().into()
}

/// What reaches the receiving side next.
enum Arrival {
    Piece(Range<u64>),
    Reset(u32),
}

/// A stream's receiving side: with each poll the next arrival comes in (more if nothing
/// can be handed out yet); what has arrived and not been read is handed out lowest offset
/// first, split at the reader's `max`, and an ordered read takes only the next offset.
struct Script {
    data: Bytes,
    arrivals: VecDeque<Arrival>,
    held: BTreeMap<u64, Bytes>,
    /// Bytes handed out so far (in order, as long as only ordered reads were made).
    read: u64,
    reset: Option<u32>,
    /// The reset was told: from then on every read is an end, as quinn's are.
    all_read: bool,
    stopped: Option<quinn::VarInt>,
    unordered_reads: usize,
}

impl Script {
    fn new(data: Bytes, arrivals: impl IntoIterator<Item = Arrival>) -> Script {
        Script {
            data,
            arrivals: arrivals.into_iter().collect(),
            held: BTreeMap::new(),
            read: 0,
            reset: None,
            all_read: false,
            stopped: None,
            unordered_reads: 0,
        }
    }

    /// Takes in the next arrival; false once there is none.
    fn arrive(&mut self) -> bool {
        match self.arrivals.pop_front() {
            Some(Arrival::Piece(range)) => {
                let overlaps =
                    self.held.range(..range.end).next_back().is_some_and(|(at, b)| at + b.len() as u64 > range.start);
                assert!(!overlaps, "a test sent {range:?} twice: quinn would not hand it out again");
                self.held.insert(range.start, self.data.slice(range.start as usize..range.end as usize));
                true
            }
            Some(Arrival::Reset(code)) => {
                self.reset = Some(code);
                true
            }
            None => false,
        }
    }

    /// Whether the contents of `piece` lie in the script's own buffer.
    fn lends(&self, piece: &Bytes) -> bool {
        self.data.as_ptr_range().contains(&piece.as_ptr())
    }
}

impl ChunkSource for Script {
    fn poll_chunk(
        &mut self,
        _cx: &mut Context<'_>,
        max: usize,
        ordered: bool,
    ) -> Poll<Result<Option<quinn::Chunk>, quinn::ReadError>> {
        if self.stopped.is_some() {
            return Poll::Ready(Err(quinn::ReadError::ClosedStream));
        }
        self.unordered_reads += usize::from(!ordered);
        let mut more = self.arrive();
        loop {
            if self.all_read {
                return Poll::Ready(Ok(None));
            }
            if let Some(code) = self.reset {
                self.all_read = true;
                return Poll::Ready(Err(quinn::ReadError::Reset(code.into())));
            }
            if let Some(mut entry) = self.held.first_entry() {
                if !ordered || *entry.key() == self.read {
                    let offset = *entry.key();
                    let bytes = if entry.get().len() > max {
                        let rest = entry.get_mut().split_off(max);
                        let head = entry.remove();
                        self.held.insert(offset + max as u64, rest);
                        head
                    } else {
                        entry.remove()
                    };
                    self.read += bytes.len() as u64;
                    return Poll::Ready(Ok(Some(quinn::Chunk { offset, bytes })));
                }
            }
            if !more {
                self.all_read = self.held.is_empty() && self.read == self.data.len() as u64;
                if self.all_read {
                    return Poll::Ready(Ok(None));
                }
                // Nothing more will come: a real stream would wait here for ever.
                return Poll::Pending;
            }
            more = self.arrive();
        }
    }

    fn stop(&mut self, code: quinn::VarInt) {
        self.stopped = Some(code);
    }
}

/// How a read of the whole stream went.
struct Outcome {
    bytes: Vec<u8>,
    end: Result<(), quinn::ReadError>,
    /// The most `ahead` cost after a read, and the most pieces it had.
    most_cost: u64,
    most_pieces: usize,
}

/// Reads `reader` to its end (or error), `read` bytes at a time, on a runtime whose clock
/// moves on whenever everything waits (the probe's sleeps take no real time).
fn read_to_end<S: ChunkSource>(reader: &mut InOrder<S>, read: usize) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    runtime.block_on(async {
        let mut outcome = Outcome { bytes: Vec::new(), end: Ok(()), most_cost: 0, most_pieces: 0 };
        let mut buf = vec![0; read];
        loop {
            let next = tokio::time::timeout(Duration::from_secs(3600), reader.read(&mut buf)).await;
            match next.expect("the reader waited for bytes that had all arrived") {
                Ok(Some(n)) => outcome.bytes.extend_from_slice(&buf[..n]),
                Ok(None) => break,
                Err(e) => {
                    outcome.end = Err(e);
                    break;
                }
            }
            outcome.most_cost = outcome.most_cost.max(reader.ahead_cost());
            outcome.most_pieces = outcome.most_pieces.max(reader.ahead.len());
        }
        outcome
    })
}

/// The most `ahead` may cost after a read: the free bytes and the budget's share, the
/// margin over it, and one read of the gap.
fn cost_bound(budget: u64) -> u64 {
    FREE_AHEAD + budget.min(MAX_HOLD) + OVER_BUDGET_LIMIT + GAP_READ as u64 + PIECE_COST
}

fn is_too_large(end: &Result<(), quinn::ReadError>) -> bool {
    matches!(end, Err(quinn::ReadError::Reset(code)) if *code == StreamCode::TooLarge.to_varint())
}

/// A stream of `len` bytes cut at `cuts` and sent with each piece moved later by up to
/// `delays[i]` places.
fn reordered(len: u64, cuts: &[u64], delays: &[usize]) -> Vec<Arrival> {
    let mut edges: Vec<u64> = cuts.iter().map(|c| c % (len + 1)).chain([0, len]).collect();
    edges.sort_unstable();
    edges.dedup();
    let mut pieces: Vec<(usize, Range<u64>)> = edges
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i + delays.get(i % delays.len().max(1)).copied().unwrap_or(0), w[0]..w[1]))
        .collect();
    pieces.sort_by_key(|(at, range)| (*at, range.start));
    pieces.into_iter().map(|(_, range)| Arrival::Piece(range)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Whatever the order pieces come in, what is handed over is the stream; what waits
    /// past a gap stays within its bound and the budget's share comes back. With the
    /// budget a stream may hold, nothing is refused.
    #[test]
    fn hands_over_the_stream_whatever_the_arrival_order(
        len in 0u64..4_000_000,
        cuts in prop::collection::vec(any::<u64>(), 0..600),
        delays in prop::collection::vec(0usize..1200, 1..64),
        budget in prop_oneof![Just(0u64), 1u64..4_000_000, Just(64 << 20)],
        read in 1usize..200_000,
        past_gaps in any::<bool>(),
    ) {
        let data = stream_of(len);
        let window = WindowBudget::new(budget);
        let mut reader = InOrder::new(Script::new(data.clone(), reordered(len, &cuts, &delays)), window.clone());
        if past_gaps {
            reader.read_past_gaps();
        }
        let outcome = read_to_end(&mut reader, read);
        prop_assert!(data.starts_with(&outcome.bytes), "bytes handed over out of order");
        prop_assert!(outcome.most_cost <= cost_bound(budget), "{} held past a gap", outcome.most_cost);
        match &outcome.end {
            Ok(()) => prop_assert_eq!(outcome.bytes.len() as u64, len),
            end => prop_assert!(is_too_large(end) && budget < MAX_HOLD, "{:?} with a budget of {}", end, budget),
        }
        if !past_gaps {
            prop_assert_eq!(reader.recv.unordered_reads, 0);
            prop_assert_eq!(outcome.most_cost, 0);
        }
        drop(reader);
        prop_assert_eq!(window.granted(), 0, "what was held went back to the budget");
    }
}

/// A byte per packet past a gap: `count` one-byte pieces at every other offset after a
/// gap at 0, then (if `fill`) the bytes between them.
fn byte_per_packet(count: u64, fill: bool) -> (Bytes, Vec<Arrival>) {
    let len = 2 * count + 1;
    let sparse = (0..count).map(|i| Arrival::Piece(2 * i + 1..2 * i + 2));
    let between = (0..=count).map(|i| Arrival::Piece(2 * i..2 * i + 1)).filter(|_| fill);
    (stream_of(len), sparse.chain(between).collect())
}

#[test]
fn one_byte_pieces_past_a_gap_are_counted_with_their_overhead_and_stopped() {
    let (data, arrivals) = byte_per_packet(40_000, false);
    let mut reader = InOrder::new(Script::new(data, arrivals), WindowBudget::new(0));
    reader.read_past_gaps();
    let outcome = read_to_end(&mut reader, 64 * 1024);
    assert!(is_too_large(&outcome.end), "{:?}", outcome.end);
    assert_eq!(reader.recv.stopped, Some(StreamCode::TooLarge.to_varint()));
    // Counted as bytes alone, all 40,000 would have been kept.
    let most = (cost_bound(0) / (1 + PIECE_COST)) as usize;
    assert!(outcome.most_pieces <= most, "{} pieces kept, at most {most} allowed", outcome.most_pieces);
    assert!(outcome.bytes.is_empty());
}

#[test]
fn one_byte_pieces_past_a_gap_are_copied_out_drawn_from_the_budget_and_handed_over() {
    let (data, arrivals) = byte_per_packet(40_000, true);
    let window = WindowBudget::new(64 << 20);
    let mut reader = InOrder::new(Script::new(data.clone(), arrivals), window.clone());
    reader.read_past_gaps();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    // Read until all 40,000 wait (the first read takes them all: they fit its buffer).
    let mut first = [0u8; 1];
    let n = runtime.block_on(reader.read(&mut first)).unwrap();
    assert_eq!(n, Some(1));
    assert_eq!(reader.ahead.len(), 40_000);
    assert!(reader.ahead.values().all(|piece| !reader.recv.lends(piece)), "a kept piece still holds the datagram");
    let cost = reader.ahead_cost();
    assert_eq!(cost, 40_000 * (1 + PIECE_COST));
    assert!(window.granted() >= cost - FREE_AHEAD, "{} taken from the budget for {cost}", window.granted());
    let outcome = read_to_end(&mut reader, 4096);
    assert!(outcome.end.is_ok(), "{:?}", outcome.end);
    assert_eq!([&first[..], &outcome.bytes].concat(), data);
    drop(reader);
    assert_eq!(window.granted(), 0, "what was held went back to the budget");
}

/// A gap at `0..gap`, the `ahead` bytes after it, then (interleaved with `trickle` more
/// bytes further on, if any) the gap one `step` at a time.
fn gap_filled_late(gap: u64, ahead: u64, step: u64, trickle: u64) -> (Bytes, Vec<Arrival>) {
    let piece = 16 * 1024;
    let len = gap + ahead + trickle;
    let past = (gap..gap + ahead).step_by(piece as usize).map(|at| Arrival::Piece(at..(at + piece).min(gap + ahead)));
    let mut arrivals: Vec<Arrival> = past.collect();
    let far_step = GAP_READ as u64;
    let mut far = (gap + ahead..len).step_by(far_step as usize);
    for at in (0..gap).step_by(step as usize) {
        arrivals.push(Arrival::Piece(at..(at + step).min(gap)));
        if let Some(f) = far.next() {
            arrivals.push(Arrival::Piece(f..(f + far_step).min(len)));
        }
    }
    arrivals.extend(far.map(|f| Arrival::Piece(f..(f + far_step).min(len))));
    (stream_of(len), arrivals)
}

#[test]
fn over_the_budget_an_honest_gap_still_fills_a_packet_at_a_time() {
    let (data, arrivals) = gap_filled_late(256 * 1024, FREE_AHEAD + 512 * 1024, 1200, 0);
    let mut reader = InOrder::new(Script::new(data.clone(), arrivals), WindowBudget::new(0));
    reader.read_past_gaps();
    let outcome = read_to_end(&mut reader, 64 * 1024);
    assert!(outcome.end.is_ok(), "{:?}", outcome.end);
    assert!(outcome.bytes == data, "the stream came out changed");
}

#[test]
fn a_sender_trickling_bytes_into_the_gap_to_be_read_past_it_is_stopped() {
    // Each byte into the gap lets a read take the next piece; the pieces go on past it.
    let (data, arrivals) = gap_filled_late(64 * 1024, FREE_AHEAD + 16 * 1024, 1, 64 << 20);
    let mut reader = InOrder::new(Script::new(data, arrivals), WindowBudget::new(0));
    reader.read_past_gaps();
    let outcome = read_to_end(&mut reader, 64 * 1024);
    assert!(is_too_large(&outcome.end), "{:?}", outcome.end);
    assert!(outcome.most_cost <= cost_bound(0), "{} held past the gap", outcome.most_cost);
    assert!((outcome.bytes.len() as u64) < 64 * 1024, "stopped before the gap filled");
}

#[test]
fn a_reset_right_after_bytes_are_handed_over_is_the_next_reads_answer() {
    for past_gaps in [false, true] {
        let arrivals = [Arrival::Piece(0..1000), Arrival::Reset(7)];
        let mut reader = InOrder::new(Script::new(stream_of(5000), arrivals), WindowBudget::new(0));
        if past_gaps {
            reader.read_past_gaps();
        }
        let outcome = read_to_end(&mut reader, 4096);
        assert_eq!(outcome.bytes.len(), 1000);
        assert!(matches!(outcome.end, Err(quinn::ReadError::Reset(code)) if code == 7u32.into()), "{:?}", outcome.end);
    }
}
