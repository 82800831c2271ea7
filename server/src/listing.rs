//! File listings and the offers replayed on connect, read from the store a page at a time
//! and sent as frames that each fit the frame limit, however many files there are.

use qchat_shared::codec::encoded_len;
use qchat_shared::frame::{FileEntry, RelayControl};
use qchat_shared::limits::MAX_FRAME;
use tokio::sync::mpsc;

use crate::relay::RelayState;
use crate::session::Caller;
use crate::store::{Listing, StoreError};

/// Rows read from the store per query.
const ROWS_PER_QUERY: usize = 256;
/// What one page of a listing may hold: room left in a frame for the enum tag, the
/// lengths and `last`.
pub const PAGE_BUDGET: usize = MAX_FRAME - 64;

/// Why a listing stopped.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a file entry cannot be encoded: {0}")]
    Encode(#[from] qchat_shared::codec::FrameError),
    /// The connection's writer is gone.
    #[error("the connection is closing")]
    Gone,
}

/// Collects entries into `Files` pages that fit one frame.
#[derive(Default)]
struct Pages {
    incoming: Vec<FileEntry>,
    outgoing: Vec<FileEntry>,
    bytes: usize,
}

impl Pages {
    /// Adds an entry; returns the full page it did not fit on, to send first.
    fn add(&mut self, listing: Listing, entry: FileEntry) -> Result<Option<RelayControl>, ListingError> {
        let len = encoded_len(&entry)?;
        let full = (self.bytes + len > PAGE_BUDGET).then(|| self.take(false));
        self.bytes += len;
        match listing {
            Listing::Outgoing => self.outgoing.push(entry),
            Listing::Incoming | Listing::Offers => self.incoming.push(entry),
        }
        Ok(full)
    }

    fn take(&mut self, last: bool) -> RelayControl {
        let page = std::mem::take(self);
        RelayControl::Files { incoming: page.incoming, outgoing: page.outgoing, last }
    }
}

/// Sends `user`'s files (for them, then from them) as one or more `Files` pages, the last
/// marked; waits whenever the connection's queue is full.
pub async fn send_files(
    state: &RelayState,
    caller: &Caller,
    out: &mpsc::Sender<RelayControl>,
) -> Result<(), ListingError> {
    let mut pages = Pages::default();
    for listing in [Listing::Incoming, Listing::Outgoing] {
        let mut after = 0;
        loop {
            let rows = state.store.list_page(caller.key(), listing, after, ROWS_PER_QUERY).await?;
            let Some(&(last_row, _)) = rows.last() else { break };
            after = last_row;
            for (_, entry) in rows {
                if let Some(full) = pages.add(listing, entry)? {
                    out.send(full).await.map_err(|_| ListingError::Gone)?;
                }
            }
        }
    }
    out.send(pages.take(true)).await.map_err(|_| ListingError::Gone)
}

/// Sends every file waiting for this device as a `FileOffered`, oldest first.
pub async fn replay_offers(
    state: &RelayState,
    caller: &Caller,
    out: &mpsc::Sender<RelayControl>,
) -> Result<(), ListingError> {
    let mut after = 0;
    loop {
        let rows = state.store.list_page(caller.key(), Listing::Offers, after, ROWS_PER_QUERY).await?;
        let Some(&(last_row, _)) = rows.last() else { return Ok(()) };
        after = last_row;
        for (_, entry) in rows {
            out.send(RelayControl::FileOffered(entry.info)).await.map_err(|_| ListingError::Gone)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qchat_shared::codec::{decode, encode};
    use qchat_shared::frame::{FileId, FileInfo, FileState};
    use qchat_shared::limits::MAX_FILE_NAME;

    fn entry(name_len: usize) -> FileEntry {
        FileEntry {
            info: FileInfo {
                file_id: FileId::random(),
                room: "r".repeat(65),
                plain_name: Some("n".repeat(name_len)),
                size: u64::MAX,
                from: "a".repeat(32),
                blake3: Some([9; 32]),
                time_ms: i64::MAX,
            },
            state: FileState::Uploading { held: u64::MAX },
        }
    }

    #[test]
    fn pages_of_the_largest_entries_still_fit_a_frame() {
        let mut pages = Pages::default();
        let mut frames = Vec::new();
        for i in 0..500 {
            let listing = if i % 2 == 0 { Listing::Incoming } else { Listing::Outgoing };
            frames.extend(pages.add(listing, entry(MAX_FILE_NAME)).unwrap());
        }
        frames.push(pages.take(true));
        let mut entries = 0;
        for frame in &frames {
            let bytes = encode(frame).expect("every page fits a frame");
            let (back, _): (RelayControl, usize) = decode(&bytes).expect("and decodes");
            assert_eq!(&back, frame);
            if let RelayControl::Files { incoming, outgoing, .. } = frame {
                entries += incoming.len() + outgoing.len();
            }
        }
        assert_eq!(entries, 500);
        assert!(frames.len() > 5, "{} pages", frames.len());
        assert!(matches!(frames.last(), Some(RelayControl::Files { last: true, .. })));
        assert_eq!(frames.iter().filter(|f| matches!(f, RelayControl::Files { last: true, .. })).count(), 1);
    }

    #[test]
    fn pages_of_the_smallest_entries_decode_too() {
        // Small on the wire, larger in memory: what bincode's decode limit counts.
        let mut pages = Pages::default();
        let mut frames = Vec::new();
        for _ in 0..5000 {
            frames.extend(pages.add(Listing::Incoming, entry(1)).unwrap());
        }
        frames.push(pages.take(true));
        for frame in &frames {
            let bytes = encode(frame).unwrap();
            decode::<RelayControl>(&bytes).expect("a full page decodes");
        }
    }

    #[test]
    fn an_empty_listing_is_one_last_page() {
        assert_eq!(Pages::default().take(true), RelayControl::Files { incoming: vec![], outgoing: vec![], last: true });
    }
}
