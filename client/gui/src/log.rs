//! The shown room's chat log in memory: a stretch of its history read from disk a page at
//! a time, and the lines that came since. It never holds more than [`MAX_LOADED`] lines,
//! however long the history: reading back drops the newest lines, reading on drops the
//! oldest (they are read again when wanted).

use qchat_client::history::{ChatLine, Page};
use qchat_shared::frame::MessageId;

/// Lines read at a time ("Show earlier" adds this many).
pub const PAGE: usize = 300;
/// The most lines the log holds.
pub const MAX_LOADED: usize = 5 * PAGE;

/// Why a page of the history was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The room was shown: the log starts from this page.
    Open,
    /// "Show earlier": it goes before the first line.
    Earlier,
    /// "Show later": it goes after the last line.
    Later,
    /// To the newest line: the log is this page.
    Newest,
}

/// The lines of one room that the window holds.
#[derive(Debug, Clone, Default)]
pub struct Log {
    /// The room they are of (none: no room shown yet).
    pub room: Option<String>,
    /// In the relay's order.
    pub lines: Vec<ChatLine>,
    /// How many lines the room has on disk before the first of `lines`.
    pub earlier: usize,
    /// How many it has after the last (0: the log reaches the newest line).
    pub later: usize,
    /// The room's first page has not come from disk yet.
    pub opening: bool,
}

impl Log {
    /// The log of `room`, empty until its first page comes.
    pub fn opening(room: String) -> Self {
        Log { room: Some(room), opening: true, ..Log::default() }
    }

    /// Whether it holds the lines of `room`.
    pub fn is_of(&self, room: &str) -> bool {
        self.room.as_deref() == Some(room)
    }

    /// The order number of the first line held.
    pub fn first_seq(&self) -> Option<u64> {
        self.lines.iter().find_map(|l| l.seq)
    }

    /// The order number of the newest line held.
    pub fn last_seq(&self) -> Option<u64> {
        self.lines.iter().rev().find_map(|l| l.seq)
    }

    pub fn line_mut(&mut self, id: MessageId) -> Option<&mut ChatLine> {
        self.lines.iter_mut().find(|l| l.id == id)
    }

    /// Takes a page read from disk. Lines that came while it was read are kept where they
    /// belong (once), if the page reaches the newest line.
    pub fn paged(&mut self, why: Why, page: Page) {
        self.opening = false;
        match why {
            Why::Open | Why::Newest => {
                // Opening, what it holds came while the page was read; else it is replaced
                // (nothing newer is held while the log stops short of the end).
                let came = std::mem::take(&mut self.lines);
                self.lines = page.lines;
                (self.earlier, self.later) = (page.earlier, page.later);
                if self.later == 0 && why == Why::Open {
                    for line in came {
                        self.add(line);
                    }
                }
                let excess = self.lines.len().saturating_sub(MAX_LOADED);
                self.drop_oldest(excess);
            }
            Why::Earlier => {
                let mut lines: Vec<ChatLine> =
                    page.lines.into_iter().filter(|l| !self.lines.iter().any(|h| h.id == l.id)).collect();
                lines.append(&mut self.lines);
                self.lines = lines;
                self.earlier = page.earlier;
                let excess = self.lines.len().saturating_sub(MAX_LOADED);
                self.lines.truncate(self.lines.len() - excess);
                self.later += excess;
            }
            Why::Later => {
                for line in page.lines {
                    self.add(line);
                }
                self.later = page.later;
                let excess = self.lines.len().saturating_sub(MAX_LOADED);
                self.drop_oldest(excess);
            }
        }
    }

    fn drop_oldest(&mut self, count: usize) {
        self.lines.drain(..count);
        self.earlier += count;
    }

    /// A new line of this room. It is held if the log reaches the newest line (the oldest
    /// held goes when it is full and `following` the end); otherwise it is counted as on
    /// disk after the log. Returns whether it is held.
    pub fn arrived(&mut self, line: ChatLine, following: bool) -> bool {
        if self.lines.iter().any(|l| l.id == line.id) {
            return true;
        }
        if !self.opening && (self.later > 0 || (self.lines.len() >= MAX_LOADED && !following)) {
            self.later += 1;
            return false;
        }
        self.add(line);
        let excess = self.lines.len().saturating_sub(MAX_LOADED);
        if !self.opening {
            self.drop_oldest(excess);
        }
        true
    }

    /// Puts `line` in its place (after any line of the same order), unless it is held.
    fn add(&mut self, line: ChatLine) {
        if self.lines.iter().any(|l| l.id == line.id) {
            return;
        }
        let order = line.order();
        let at = self.lines.partition_point(|l| l.order() <= order);
        self.lines.insert(at, line);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn line(seq: u64) -> ChatLine {
        from_bob(seq, "team")
    }

    /// A message of bob's in `room`, numbered `seq` (its id made from it).
    pub(crate) fn from_bob(seq: u64, room: &str) -> ChatLine {
        let mut id = [0; 16];
        id[..8].copy_from_slice(&seq.to_be_bytes());
        ChatLine {
            id: MessageId(id),
            seq: Some(seq),
            room: room.into(),
            from: "bob".into(),
            text: format!("m{seq}"),
            time_ms: seq as i64,
            mine: false,
            delivered: true,
            received_by: Vec::new(),
            notice: false,
            change: None,
        }
    }

    fn page(seqs: std::ops::RangeInclusive<u64>, earlier: usize, later: usize) -> Page {
        Page { lines: seqs.map(line).collect(), earlier, later }
    }

    fn seqs(log: &Log) -> Vec<u64> {
        log.lines.iter().filter_map(|l| l.seq).collect()
    }

    #[test]
    fn a_line_that_comes_while_the_first_page_is_read_is_kept_once() {
        let mut log = Log::opening("team".into());
        assert!(log.arrived(line(11), true));
        log.paged(Why::Open, page(8..=11, 7, 0));
        assert_eq!((seqs(&log), log.earlier, log.later), (vec![8, 9, 10, 11], 7, 0));
        // The same, when the read did not see it yet.
        let mut log = Log::opening("team".into());
        log.arrived(line(11), true);
        log.paged(Why::Open, page(8..=10, 7, 0));
        assert_eq!(seqs(&log), [8, 9, 10, 11]);
    }

    #[test]
    fn the_log_never_holds_more_than_its_bound_whichever_way_one_reads() {
        let total = 3 * MAX_LOADED as u64;
        let mut log = Log::opening("team".into());
        let newest = total - PAGE as u64 + 1..=total;
        log.paged(Why::Open, page(newest, total as usize - PAGE, 0));
        // Back to the first line, a page at a time.
        while log.earlier > 0 {
            let first = log.first_seq().unwrap();
            let from = first.saturating_sub(PAGE as u64).max(1);
            log.paged(Why::Earlier, page(from..=first - 1, from as usize - 1, 0));
            assert!(log.lines.len() <= MAX_LOADED);
            assert_eq!(log.earlier + log.lines.len() + log.later, total as usize, "every line accounted for");
        }
        assert_eq!((log.first_seq(), log.later), (Some(1), total as usize - MAX_LOADED));
        // Then on, a page at a time: the oldest go.
        let last = log.last_seq().unwrap();
        log.paged(Why::Later, page(last + 1..=last + PAGE as u64, 0, log.later - PAGE));
        assert_eq!((log.lines.len(), log.earlier, log.first_seq()), (MAX_LOADED, PAGE, Some(PAGE as u64 + 1)));
    }

    #[test]
    fn new_lines_are_held_at_the_end_or_counted_when_the_log_does_not_reach_it() {
        let mut log = Log::opening("team".into());
        log.paged(Why::Open, page(1..=MAX_LOADED as u64, 0, 0));
        let next = MAX_LOADED as u64 + 1;
        assert!(log.arrived(line(next), true), "following the end: held, the oldest goes");
        assert_eq!((log.lines.len(), log.earlier, log.first_seq()), (MAX_LOADED, 1, Some(2)));
        assert!(!log.arrived(line(next + 1), false), "reading back in a full log: counted, not held");
        assert_eq!(log.later, 1);
        assert!(!log.arrived(line(next + 2), true), "nor once the log stops short of the end");
        assert_eq!(log.later, 2);
        assert!(log.arrived(line(next), true), "a line held already is not counted again");
        assert_eq!(log.later, 2);
        log.paged(Why::Newest, page(next - 1..=next + 2, next as usize - 2, 0));
        assert_eq!((seqs(&log), log.later), (vec![next - 1, next, next + 1, next + 2], 0));
    }
}
