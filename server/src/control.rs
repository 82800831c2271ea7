//! The control stream of one connection, on the relay's side: the replies to its requests
//! (status, listings, acknowledgements, fetches) and the notices for it, written by one
//! task; a reply waits for room in a bounded queue, so a client that does not read is not
//! read either.

use qchat_shared::codes::CloseCode;
use std::collections::BTreeMap;

use qchat_shared::frame::{ClientControl, MessageId, RelayControl};
use qchat_shared::io::{read_frame, write_frame, ReadFrameError};
use qchat_shared::limits::MAX_ACKS_PER_FRAME;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::delivery::DeliveryFlow;
use crate::listing::{self, ListingError};
use crate::relay::RelayState;
use crate::session::close;
use crate::store::Receipt;

/// Receipts replayed to a reconnecting sender, at most.
const RECEIPT_REPLAY: usize = 10_000;

/// Receipts as `Delivered` frames, one per sender and up to [`MAX_ACKS_PER_FRAME`]
/// messages each: a peer acknowledging a long backlog sends its sender a few notices, not
/// one per message.
fn receipt_frames(receipts: Vec<Receipt>) -> Vec<(String, RelayControl)> {
    let mut by_sender: BTreeMap<String, (Vec<(MessageId, u64)>, u64)> = BTreeMap::new();
    for r in receipts {
        let (messages, upto) = by_sender.entry(r.sender).or_default();
        messages.push((r.id, r.seq));
        *upto = (*upto).max(r.all_delivered_upto);
    }
    let mut frames = Vec::new();
    for (sender, (messages, upto)) in by_sender {
        for chunk in messages.chunks(MAX_ACKS_PER_FRAME) {
            let frame = RelayControl::Delivered { messages: chunk.to_vec(), all_delivered_upto: upto };
            frames.push((sender.clone(), frame));
        }
    }
    frames
}

/// Replays receipts above the client's cursor; false when the connection went.
pub async fn replay_receipts(state: &RelayState, user: &str, after: u64, replies: &mpsc::Sender<RelayControl>) -> bool {
    match state.store.receipts(user, after, RECEIPT_REPLAY).await {
        Ok(receipts) => {
            for (_, frame) in receipt_frames(receipts) {
                if replies.send(frame).await.is_err() {
                    return false;
                }
            }
        }
        Err(e) => warn!(error = %e, "cannot replay receipts"),
    }
    true
}

/// Writes this connection's replies and the notices for it on its control stream. A write
/// that fails ends the connection with the reason, so it is never left half alive.
pub async fn write_control(
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut replies: mpsc::Receiver<RelayControl>,
    mut notices: mpsc::Receiver<RelayControl>,
) {
    loop {
        let frame = tokio::select! {
            Some(frame) = replies.recv() => frame,
            Some(frame) = notices.recv() => frame,
            else => return,
        };
        if let Err(e) = write_frame(&mut send, &frame).await {
            debug!(error = %e, "cannot write on the control stream; closing the connection");
            let reason = format!("the relay could not write on the control stream: {e}");
            close(&connection, CloseCode::Reconnect, &reason);
            return;
        }
    }
}

/// Reads the client's requests on the control stream. Each reply waits for room in the
/// connection's reply queue, so a client that does not read its replies stops being read.
pub async fn read_control(
    state: &RelayState,
    connection: &quinn::Connection,
    user: &str,
    recv: &mut quinn::RecvStream,
    replies: &mpsc::Sender<RelayControl>,
    flow: &DeliveryFlow,
) {
    loop {
        let request = match read_frame::<ClientControl, _>(recv).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(ReadFrameError::Io(e)) => {
                debug!(error = %e, "control stream ended");
                return;
            }
            Err(ReadFrameError::Frame(e)) => {
                warn!(error = %e, "bad frame on the control stream");
                close(connection, CloseCode::Protocol, &format!("bad frame on the control stream: {e}"));
                return;
            }
        };
        if let ClientControl::Ack { seqs } = &request {
            flow.acknowledged(seqs.len());
        }
        if !answer(state, connection, user, request, replies).await {
            return;
        }
    }
}

/// Answers one request from the control stream; false when the connection is done.
async fn answer(
    state: &RelayState,
    connection: &quinn::Connection,
    user: &str,
    request: ClientControl,
    replies: &mpsc::Sender<RelayControl>,
) -> bool {
    match request {
        ClientControl::Ack { seqs } if seqs.len() <= MAX_ACKS_PER_FRAME => {
            acknowledge(state, user, seqs, replies).await
        }
        ClientControl::Ack { seqs } => {
            warn!(count = seqs.len(), "too many acknowledgements in one frame");
            close(connection, CloseCode::Protocol, "too many acknowledgements in one frame");
            false
        }
        ClientControl::Status => match state.status(user).await {
            Ok(status) => replies.send(RelayControl::Status(status)).await.is_ok(),
            Err(e) => {
                warn!(error = %e, "cannot read status");
                true
            }
        },
        ClientControl::ListFiles => match listing::send_files(state, user, replies).await {
            Ok(()) => true,
            Err(ListingError::Gone) => false,
            Err(e) => {
                warn!(error = %e, "cannot list files");
                close(connection, CloseCode::Reconnect, &format!("the relay could not list the files: {e}"));
                false
            }
        },
        ClientControl::Fetched { file_id } => {
            match state.store.mark_fetched(user, file_id).await {
                Ok(Some(sender)) => {
                    info!(file = %file_id, "fetched");
                    state.router.notify(&sender, RelayControl::FileFetched { file_id });
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "cannot record a fetch"),
            }
            true
        }
    }
}

/// Records acknowledgements, confirms them and tells the senders; false when the
/// connection went.
async fn acknowledge(state: &RelayState, user: &str, seqs: Vec<u64>, replies: &mpsc::Sender<RelayControl>) -> bool {
    match state.store.mark_delivered(user, seqs.clone()).await {
        Ok(receipts) => {
            for (sender, frame) in receipt_frames(receipts) {
                state.router.notify(&sender, frame);
            }
            replies.send(RelayControl::AckConfirmed { seqs }).await.is_ok()
        }
        Err(e) => {
            warn!(error = %e, "cannot record deliveries");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_go_out_in_frames_per_sender_that_fit() {
        let receipt = |sender: &str, seq: u64| Receipt {
            id: MessageId([seq as u8; 16]),
            seq,
            sender: sender.into(),
            all_delivered_upto: seq,
        };
        let mut receipts: Vec<Receipt> = (1..=2500).map(|seq| receipt("alice", seq)).collect();
        receipts.push(receipt("bob", 7));
        let frames = receipt_frames(receipts);
        assert_eq!(frames.iter().filter(|(s, _)| s == "alice").count(), 3);
        for (_, frame) in &frames {
            qchat_shared::codec::encode(frame).expect("fits a frame");
        }
        let RelayControl::Delivered { messages, all_delivered_upto } = &frames[0].1 else { panic!() };
        assert_eq!((messages.len(), *all_delivered_upto), (MAX_ACKS_PER_FRAME, 2500));
    }
}
