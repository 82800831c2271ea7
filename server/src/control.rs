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
use crate::devices::{self, DeviceError};
use crate::listing::{self, ListingError};
use crate::relay::RelayState;
use crate::session::{close, Caller};
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
    caller: &Caller,
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
        if !answer(state, connection, caller, request, replies).await {
            return;
        }
    }
}

/// Answers one request from the control stream; false when the connection is done.
async fn answer(
    state: &RelayState,
    connection: &quinn::Connection,
    caller: &Caller,
    request: ClientControl,
    replies: &mpsc::Sender<RelayControl>,
) -> bool {
    match request {
        ClientControl::Ack { seqs } if seqs.len() <= MAX_ACKS_PER_FRAME => {
            acknowledge(state, caller, seqs, replies).await
        }
        ClientControl::Ack { seqs } => {
            warn!(count = seqs.len(), "too many acknowledgements in one frame");
            close(connection, CloseCode::Protocol, "too many acknowledgements in one frame");
            false
        }
        ClientControl::Status => match state.status(caller).await {
            Ok(status) => replies.send(RelayControl::Status(status)).await.is_ok(),
            Err(e) => {
                warn!(error = %e, "cannot read status");
                true
            }
        },
        ClientControl::ListFiles => match listing::send_files(state, caller, replies).await {
            Ok(()) => true,
            Err(ListingError::Gone) => false,
            Err(e) => {
                warn!(error = %e, "cannot list files");
                close(connection, CloseCode::Reconnect, &format!("the relay could not list the files: {e}"));
                false
            }
        },
        ClientControl::Fetched { file_id } => {
            match state.store.mark_fetched(caller.key(), file_id).await {
                Ok(Some(sender)) => {
                    info!(file = %file_id, "fetched");
                    state.router.notify(&sender, RelayControl::FileFetched { file_id });
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "cannot record a fetch"),
            }
            true
        }
        ClientControl::LinkDevice
        | ClientControl::ListDevices
        | ClientControl::RevokeDevice { .. }
        | ClientControl::Renew { .. } => {
            let reply = match device_request(state, caller, request).await {
                Ok(reply) => reply,
                Err(e) => {
                    warn!(error = %e, "a device request failed");
                    RelayControl::DeviceRefused { reason: e.to_string() }
                }
            };
            replies.send(reply).await.is_ok()
        }
    }
}

/// Answers a request about this person's devices.
async fn device_request(
    state: &RelayState,
    caller: &Caller,
    request: ClientControl,
) -> Result<RelayControl, crate::devices::DeviceError> {
    let user = caller.user.as_str();
    Ok(match request {
        ClientControl::LinkDevice => {
            // The client writes the line with the address it reaches the relay at.
            let invite =
                devices::create_invite(&state.store, user, state.limits.invite_lifetime, Some(&caller.device)).await?;
            info!(invite = %invite.id, "an invite for another device");
            RelayControl::Invite { id: invite.id, secret: invite.secret.to_vec(), expires_ms: invite.expires_ms }
        }
        ClientControl::ListDevices => {
            let rows = state.store.devices(Some(user)).await?;
            let devices = rows.iter().filter(|d| d.revoked_ms.is_none()).map(|d| devices::info(d, &caller.device));
            RelayControl::Devices { devices: devices.collect() }
        }
        ClientControl::RevokeDevice { device } => {
            let revoked = devices::revoke(&state.store, &state.pki_dir, user, Some(&device)).await?;
            info!(%device, "a device revoked by its person");
            state.revoke_now(&revoked.serials);
            RelayControl::DeviceRevoked { device }
        }
        ClientControl::Renew { csr_der } => {
            if !caller.renewable || caller.renewed.swap(true, std::sync::atomic::Ordering::AcqRel) {
                return Err(DeviceError::Refused(
                    "this device's certificate is renewed once, in the last third of its life, not before".into(),
                ));
            }
            let lifetime = state.limits.device_lifetime;
            // A certificate that named no device is renewed as one that names none (its
            // device and state directory stay what they were).
            let named = caller.named.then_some(caller.device.as_str());
            let cert = devices::sign(&state.pki_dir, user, named, csr_der, lifetime).await?;
            if !state.store.renew_device(user, &caller.device, cert.serial.clone(), cert.not_after_ms).await? {
                return Err(DeviceError::Refused("this device is revoked".into()));
            }
            info!("a device renewed its certificate");
            RelayControl::Renewed { cert_pem: cert.pem }
        }
        _ => unreachable!("only device requests come here"),
    })
}

/// Records acknowledgements, confirms them and tells the senders; false when the
/// connection went.
async fn acknowledge(
    state: &RelayState,
    caller: &Caller,
    seqs: Vec<u64>,
    replies: &mpsc::Sender<RelayControl>,
) -> bool {
    match state.store.mark_delivered(caller.key(), seqs.clone()).await {
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
