//! Puts the relay's deliveries back in the order it sent them (each comes on a stream of
//! its own, and streams may arrive in any order), holding at most a bounded number of
//! early ones, and noticing a gap that does not fill.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use qchat_shared::frame::Deliver;
use qchat_shared::transport::MAX_STREAMS;

/// Deliveries held while an earlier one is missing, at most: the relay cannot have more
/// streams than this open towards us, so one further ahead means one was lost.
pub const MAX_HELD: u64 = MAX_STREAMS as u64;
/// How long a gap may stay open before the delivery in it counts as lost.
pub const GAP_WAIT: Duration = Duration::from_secs(15);

/// Why the order cannot be restored on this connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delivery {index} came while delivery {next} is still missing")]
pub struct TooFarAhead {
    pub index: u64,
    pub next: u64,
}

/// The deliveries of one connection, in order.
#[derive(Default)]
pub struct Reorder {
    next: u64,
    held: BTreeMap<u64, Deliver>,
    /// Since when the next one has been missing while later ones wait.
    gap_since: Option<Instant>,
}

impl Reorder {
    /// Takes a delivery; returns those now ready, in order.
    pub fn push(&mut self, deliver: Deliver, now: Instant) -> Result<Vec<Deliver>, TooFarAhead> {
        if deliver.index >= self.next + MAX_HELD {
            return Err(TooFarAhead { index: deliver.index, next: self.next });
        }
        if deliver.index >= self.next {
            self.held.insert(deliver.index, deliver);
        }
        let mut ready = Vec::new();
        while let Some(d) = self.held.remove(&self.next) {
            ready.push(d);
            self.next += 1;
        }
        self.gap_since = match (self.held.is_empty(), ready.is_empty(), self.gap_since) {
            (true, _, _) => None,
            (false, true, Some(since)) => Some(since),
            (false, _, _) => Some(now),
        };
        Ok(ready)
    }

    /// When the open gap, if any, counts as a lost delivery.
    pub fn gap_deadline(&self) -> Option<Instant> {
        self.gap_since.map(|since| since + GAP_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qchat_shared::frame::MessageId;

    fn deliver(index: u64) -> Deliver {
        Deliver {
            index,
            id: MessageId([index as u8; 16]),
            seq: index.wrapping_mul(2),
            room: "a+b".into(),
            room_seq: index,
            from: "a".into(),
            body: qchat_shared::frame::Body::Text(String::new()),
            time_ms: 0,
        }
    }

    fn indexes(ready: Vec<Deliver>) -> Vec<u64> {
        ready.iter().map(|d| d.index).collect()
    }

    #[test]
    fn deliveries_come_out_in_the_relays_order_whatever_order_they_arrive_in() {
        let (mut reorder, now) = (Reorder::default(), Instant::now());
        assert!(reorder.push(deliver(2), now).unwrap().is_empty());
        assert!(reorder.push(deliver(1), now).unwrap().is_empty());
        assert_eq!(indexes(reorder.push(deliver(0), now).unwrap()), [0, 1, 2]);
        assert!(reorder.push(deliver(1), now).unwrap().is_empty(), "an old index is dropped");
        assert_eq!(reorder.push(deliver(3), now).unwrap().len(), 1);
    }

    #[test]
    fn a_delivery_too_far_ahead_is_refused_not_held() {
        let (mut reorder, now) = (Reorder::default(), Instant::now());
        reorder.push(deliver(MAX_HELD - 1), now).expect("the last one that can be in flight");
        assert_eq!(reorder.push(deliver(MAX_HELD), now), Err(TooFarAhead { index: MAX_HELD, next: 0 }));
        assert_eq!(reorder.push(deliver(u64::MAX), now).unwrap_err().index, u64::MAX);
    }

    #[test]
    fn a_gap_that_stays_open_has_a_deadline() {
        let (mut reorder, t0) = (Reorder::default(), Instant::now());
        assert_eq!(reorder.gap_deadline(), None);
        reorder.push(deliver(1), t0).unwrap();
        assert_eq!(reorder.gap_deadline(), Some(t0 + GAP_WAIT));
        reorder.push(deliver(2), t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(reorder.gap_deadline(), Some(t0 + GAP_WAIT), "more waiting does not move it");
        reorder.push(deliver(0), t0 + Duration::from_secs(6)).unwrap();
        assert_eq!(reorder.gap_deadline(), None, "filled");
    }
}
