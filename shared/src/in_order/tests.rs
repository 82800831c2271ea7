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
    /// Nothing arrives during this poll.
    Nothing,
}

/// A stream's receiving side: with each poll the next arrival comes in (more if nothing
/// can be handed out yet); what has arrived and not been read is handed out lowest offset
/// first, split at the reader's `max`, and an ordered read takes only the next offset.
struct Script {
    data: Bytes,
    arrivals: VecDeque<Arrival>,
    /// What has arrived and not been handed out, by offset.
    held: BTreeMap<u64, Bytes>,
    /// Every range that has arrived (start to end): quinn drops what comes again.
    arrived: BTreeMap<u64, u64>,
    /// Bytes handed out so far (in order, as long as only ordered reads were made).
    handed_out: u64,
    reset: Option<u32>,
    /// Every byte was handed out, the reset was told, or the reader stopped the stream:
    /// from then on every read is an end, as quinn's are.
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
            arrived: BTreeMap::new(),
            handed_out: 0,
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
                let again = self.arrived.range(..range.end).next_back().is_some_and(|(_, &end)| end > range.start);
                assert!(!again, "a test sent {range:?} twice: quinn would not hand it out again");
                self.arrived.insert(range.start, range.end);
                self.held.insert(range.start, self.data.slice(range.start as usize..range.end as usize));
                true
            }
            Some(Arrival::Reset(code)) => {
                self.reset = Some(code);
                true
            }
            Some(Arrival::Nothing) => true,
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
                if !ordered || *entry.key() == self.handed_out {
                    let offset = *entry.key();
                    let bytes = if entry.get().len() > max {
                        let rest = entry.get_mut().split_off(max);
                        let head = entry.remove();
                        self.held.insert(offset + max as u64, rest);
                        head
                    } else {
                        entry.remove()
                    };
                    self.handed_out += bytes.len() as u64;
                    return Poll::Ready(Ok(Some(quinn::Chunk { offset, bytes })));
                }
            }
            if !more {
                self.all_read = self.held.is_empty() && self.handed_out == self.data.len() as u64;
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
        self.all_read = true;
    }
}

/// How a read of the whole stream ended.
#[derive(Debug)]
enum End {
    Finished,
    Failed(quinn::ReadError),
    /// Every byte had arrived and the reader still waited (an hour on the paused clock).
    Stalled,
}

impl End {
    fn is_too_large(&self) -> bool {
        matches!(self, End::Failed(quinn::ReadError::Reset(code)) if *code == StreamCode::TooLarge.to_varint())
    }
}

/// What a read of the whole stream handed over, and how it ended.
struct Outcome {
    bytes: Vec<u8>,
    end: End,
}

/// A runtime whose clock moves on whenever everything waits (the probe's sleeps take no
/// real time).
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap()
}

/// Reads `reader` to its end, `read` bytes at a time, on a [`paused_runtime`]; reads past
/// gaps from its `switch_after`th read on, if given.
fn read_to_end<S: ChunkSource>(reader: &mut InOrder<S>, read: usize, switch_after: Option<usize>) -> Outcome {
    paused_runtime().block_on(async {
        let mut bytes = Vec::new();
        let mut buf = vec![0; read];
        for reads in 0.. {
            if switch_after == Some(reads) {
                reader.read_past_gaps();
            }
            let Ok(next) = tokio::time::timeout(Duration::from_secs(3600), reader.read(&mut buf)).await else {
                return Outcome { bytes, end: End::Stalled };
            };
            match next {
                Ok(Some(n)) => bytes.extend_from_slice(&buf[..n]),
                Ok(None) => break,
                Err(e) => return Outcome { bytes, end: End::Failed(e) },
            }
        }
        Outcome { bytes, end: End::Finished }
    })
}

/// The most `ahead` may ever cost: the free bytes and the budget's share, the margin over
/// them, and one read of [`GAP_READ`] as a piece of its own.
fn cost_bound(budget: u64) -> u64 {
    FREE_AHEAD + budget.min(MAX_HOLD) + OVER_BUDGET_LIMIT + GAP_READ as u64 + PIECE_COST
}

/// A stream of `len` bytes cut at `cuts`, its `i`th piece sent `delays[i % delays.len()]`
/// places later.
fn reordered(len: u64, cuts: &[u64], delays: &[usize]) -> Vec<Arrival> {
    let mut edges: Vec<u64> = cuts.iter().map(|c| c % (len + 1)).chain([0, len]).collect();
    edges.sort_unstable();
    edges.dedup();
    let mut pieces: Vec<(usize, Range<u64>)> =
        edges.windows(2).enumerate().map(|(i, w)| (i + delays[i % delays.len()], w[0]..w[1])).collect();
    pieces.sort_by_key(|(at, range)| (*at, range.start));
    pieces.into_iter().map(|(_, range)| Arrival::Piece(range)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Whatever order an honest sender's pieces come in, with any budget, the stream comes
    /// out whole; what waits past a gap stays within its bound, and the budget's share
    /// comes back. Until the reader is told to read past gaps, it keeps nothing.
    #[test]
    fn hands_over_the_stream_whatever_the_arrival_order(
        len in 0u64..4_000_000,
        cuts in prop::collection::vec(any::<u64>(), 0..600),
        delays in prop::collection::vec(0usize..1200, 1..64),
        budget in prop_oneof![Just(0u64), 1u64..4_000_000, Just(64 << 20)],
        read in 1usize..200_000,
        switch_after in prop::option::of(0usize..4),
    ) {
        let data = stream_of(len);
        let window = WindowBudget::new(budget);
        let mut reader = InOrder::new(Script::new(data.clone(), reordered(len, &cuts, &delays)), window.clone());
        let outcome = read_to_end(&mut reader, read, switch_after);
        prop_assert!(matches!(outcome.end, End::Finished), "{:?} with a budget of {}", outcome.end, budget);
        prop_assert!(outcome.bytes == data, "the stream came out changed");
        prop_assert!(reader.peak_cost() <= cost_bound(budget), "{} held past a gap", reader.peak_cost());
        if switch_after.is_none() {
            prop_assert_eq!(reader.recv.unordered_reads, 0);
            prop_assert_eq!(reader.peak_cost(), 0);
        }
        prop_assert_eq!(reader.waiting(), 0);
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
    let window = WindowBudget::new(0);
    let mut reader = InOrder::new(Script::new(data, arrivals), window.clone());
    reader.read_past_gaps();
    let outcome = read_to_end(&mut reader, 64 * 1024, None);
    // Counted as bytes alone, all 40,000 would have been kept, waiting for ever.
    assert!(outcome.end.is_too_large(), "{:?}", outcome.end);
    assert_eq!(reader.recv.stopped, Some(StreamCode::TooLarge.to_varint()));
    assert!(reader.peak_cost() <= cost_bound(0), "{} held", reader.peak_cost());
    assert!(outcome.bytes.is_empty());
    assert_eq!((reader.waiting(), reader.ahead.len()), (0, 0), "a stopped stream lets go of what waited");
}

#[test]
fn one_byte_pieces_past_a_gap_are_copied_out_drawn_from_the_budget_and_handed_over() {
    let (data, arrivals) = byte_per_packet(40_000, true);
    let window = WindowBudget::new(64 << 20);
    let mut reader = InOrder::new(Script::new(data.clone(), arrivals), window.clone());
    reader.read_past_gaps();
    let runtime = paused_runtime();
    // The first read keeps all 40,000 while it waits for the byte at 0: the budget covers
    // them.
    let mut first = [0u8; 1];
    let n = runtime.block_on(reader.read(&mut first)).unwrap();
    assert_eq!(n, Some(1));
    assert_eq!(reader.ahead.len(), 40_000);
    assert!(reader.ahead.values().all(|piece| !reader.recv.lends(piece)), "a kept piece still holds the datagram");
    let cost = reader.ahead_cost();
    assert_eq!(cost, 40_000 * (1 + PIECE_COST));
    assert!(window.granted() >= cost - FREE_AHEAD, "{} taken from the budget for {cost}", window.granted());
    let outcome = read_to_end(&mut reader, 4096, None);
    assert!(matches!(outcome.end, End::Finished), "{:?}", outcome.end);
    assert_eq!([&first[..], &outcome.bytes].concat(), data);
    drop(reader);
    assert_eq!(window.granted(), 0, "what was held went back to the budget");
}

/// A gap at `0..gap`, then the `ahead` bytes after it in 16 KiB pieces, then the gap one
/// `step` at a time, each step followed by a 16 KiB piece of `further` bytes beyond.
fn gap_filled_late(gap: u64, ahead: u64, step: u64, further: u64) -> (Bytes, Vec<Arrival>) {
    const PIECE: u64 = 16 * 1024;
    let len = gap + ahead + further;
    let pieces = |from: u64, to: u64| (from..to).step_by(PIECE as usize).map(move |at| at..(at + PIECE).min(to));
    let mut beyond = pieces(gap + ahead, len);
    let mut arrivals: Vec<Arrival> = pieces(gap, gap + ahead).map(Arrival::Piece).collect();
    for at in (0..gap).step_by(step as usize) {
        arrivals.push(Arrival::Piece(at..(at + step).min(gap)));
        arrivals.extend(beyond.next().map(Arrival::Piece));
    }
    arrivals.extend(beyond.map(Arrival::Piece));
    (stream_of(len), arrivals)
}

/// Reads an honest sender's `data`, arriving as `arrivals`, past gaps with no budget,
/// `read` bytes at a time; checks it comes out whole and returns the reader.
fn read_honest_with_no_budget(
    data: &Bytes,
    arrivals: impl IntoIterator<Item = Arrival>,
    read: usize,
) -> InOrder<Script> {
    let mut reader = InOrder::new(Script::new(data.clone(), arrivals), WindowBudget::new(0));
    reader.read_past_gaps();
    let outcome = read_to_end(&mut reader, read, None);
    assert!(matches!(outcome.end, End::Finished), "{:?}", outcome.end);
    assert!(outcome.bytes == *data, "the stream came out changed");
    reader
}

#[test]
fn over_the_budget_an_honest_gap_still_fills_a_packet_at_a_time() {
    let (data, arrivals) = gap_filled_late(256 * 1024, FREE_AHEAD + 512 * 1024, 1200, 0);
    read_honest_with_no_budget(&data, arrivals, 64 * 1024);
}

#[test]
fn a_gap_open_for_a_minute_of_probes_does_not_stop_an_honest_stream() {
    // With no budget left, what waits is probed a byte every 2 ms: 30,000 probes, each
    // kept as a piece of its own, would cost 3.9 MB, more than the margin allows.
    let gap = 1200;
    let len = gap + 2 * FREE_AHEAD;
    let past = (gap..len).step_by(16 * 1024).map(|at| Arrival::Piece(at..(at + 16 * 1024).min(len)));
    let arrivals = past.chain((0..30_000).map(|_| Arrival::Nothing)).chain([Arrival::Piece(0..gap)]);
    read_honest_with_no_budget(&stream_of(len), arrivals, 64 * 1024);
}

#[test]
fn a_large_read_past_a_gap_takes_no_more_than_is_allowed() {
    // quinn hands out what it joined as one piece (it does, past 2,048 pieces): read whole
    // into a large buffer, 3 MiB past the gap would be over the margin at once.
    let gap = 1200;
    let len = gap + 3 * FREE_AHEAD;
    let arrivals = [Arrival::Piece(gap..len), Arrival::Piece(0..gap)];
    let reader = read_honest_with_no_budget(&stream_of(len), arrivals, 4 << 20);
    assert!(reader.peak_cost() <= FREE_AHEAD + GAP_READ as u64 + 2 * PIECE_COST, "{} held", reader.peak_cost());
}

#[test]
fn a_sender_trickling_bytes_into_the_gap_to_be_read_past_it_is_stopped() {
    // Each byte into the gap is followed by 16 KiB beyond what waits, and each lets a read
    // meant for the gap take some of it: 1,200 bytes (read in full, 16 KiB).
    let (data, arrivals) = gap_filled_late(64 * 1024, FREE_AHEAD + 5000, 1, 16 << 20);
    let mut reader = InOrder::new(Script::new(data, arrivals), WindowBudget::new(0));
    reader.read_past_gaps();
    let outcome = read_to_end(&mut reader, 64 * 1024, None);
    assert!(outcome.end.is_too_large(), "{:?}", outcome.end);
    assert!(reader.peak_cost() <= cost_bound(0), "{} held past the gap", reader.peak_cost());
    assert!((outcome.bytes.len() as u64) < 64 * 1024, "stopped before the gap filled");
}

#[test]
fn a_reset_right_after_bytes_are_handed_over_is_the_next_reads_answer() {
    for switch_after in [None, Some(0)] {
        let arrivals = [Arrival::Piece(0..1000), Arrival::Reset(7)];
        let mut reader = InOrder::new(Script::new(stream_of(5000), arrivals), WindowBudget::new(0));
        let outcome = read_to_end(&mut reader, 4096, switch_after);
        assert_eq!(outcome.bytes.len(), 1000);
        let reset = matches!(outcome.end, End::Failed(quinn::ReadError::Reset(code)) if code == 7u32.into());
        assert!(reset, "{:?}", outcome.end);
    }
}
