//! The control stream of one connection, on the relay's side: the replies to its requests
//! (status, listings, acknowledgements, fetches) and the notices for it, written by one
//! task; a reply waits for room in a bounded queue, so a client that does not read is not
//! read either.

use qchat_shared::codes::CloseCode;
use std::collections::BTreeMap;

use qchat_shared::frame::{ClientControl, MessageId, RelayControl, RoomInfo};
use qchat_shared::io::{read_frame, write_frame, ReadFrameError};
use qchat_shared::limits::{MAX_ACKS_PER_FRAME, MAX_ROOM_MEMBERS, MAX_SEALED};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::delivery::DeliveryFlow;
use crate::devices::{self, DeviceError};
use crate::listing::{self, ListingError};
use crate::relay::RelayState;
use crate::session::{close, Caller};
use crate::store::{GroupPlan, Receipt, RoomChange};

/// Receipts replayed to a reconnecting sender, at most.
const RECEIPT_REPLAY: usize = 10_000;

/// The receipts of one sender, room and member, gathered into frames.
#[derive(Default)]
struct ReceiptGroup {
    messages: Vec<(MessageId, u64)>,
    everyone: Vec<u64>,
    upto: u64,
}

/// Receipts as `Delivered` frames, one per sender, room and member who received, up to
/// [`MAX_ACKS_PER_FRAME`] messages each: a member acknowledging a long backlog sends its
/// senders a few notices, not one per message.
fn receipt_frames(receipts: Vec<Receipt>) -> Vec<(String, RelayControl)> {
    let mut groups: BTreeMap<(String, String, String), ReceiptGroup> = BTreeMap::new();
    for r in receipts {
        let group = groups.entry((r.sender, r.room, r.by)).or_default();
        group.messages.push((r.id, r.seq));
        if r.everyone {
            group.everyone.push(r.seq);
        }
        group.upto = group.upto.max(r.all_delivered_upto);
    }
    let mut frames = Vec::new();
    for ((sender, room, by), group) in groups {
        for chunk in group.messages.chunks(MAX_ACKS_PER_FRAME) {
            let everyone = chunk.iter().map(|(_, seq)| *seq).filter(|seq| group.everyone.contains(seq)).collect();
            let frame = RelayControl::Delivered {
                room: room.clone(),
                by: by.clone(),
                messages: chunk.to_vec(),
                everyone,
                all_delivered_upto: group.upto,
            };
            frames.push((sender.clone(), frame));
        }
    }
    frames
}

/// Sends `user`'s rooms as `Rooms` pages that each fit a frame, the last marked; returns
/// their names, or none when the connection went.
pub async fn send_rooms(state: &RelayState, user: &str, replies: &mpsc::Sender<RelayControl>) -> Option<Vec<String>> {
    let rooms = match state.rooms_of(user).await {
        Ok(rooms) => rooms,
        Err(e) => {
            warn!(error = %e, "cannot read the rooms");
            Vec::new()
        }
    };
    let names = rooms.iter().map(|r| r.name.clone()).collect();
    for frame in room_pages(rooms) {
        replies.send(frame).await.ok()?;
    }
    Some(names)
}

/// Rooms in `Rooms` pages within the frame limit (a room of the most members fits one).
fn room_pages(rooms: Vec<RoomInfo>) -> Vec<RelayControl> {
    let budget = listing::PAGE_BUDGET;
    let mut pages = vec![Vec::new()];
    let mut bytes = 0;
    for room in rooms {
        let len = qchat_shared::codec::encoded_len(&room).unwrap_or(budget);
        if bytes + len > budget && pages.last().is_some_and(|p| !p.is_empty()) {
            pages.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        pages.last_mut().expect("one page at least").push(room);
    }
    let count = pages.len();
    pages.into_iter().enumerate().map(|(i, rooms)| RelayControl::Rooms { rooms, last: i + 1 == count }).collect()
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
/// that fails ends the connection with the reason, so it is never left half alive. The
/// first reply is the welcome: notices wait for it, since one made after its snapshot
/// (someone coming online) must not reach the client before the older word.
pub async fn write_control(
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut replies: mpsc::Receiver<RelayControl>,
    mut notices: mpsc::Receiver<RelayControl>,
) {
    let mut welcomed = false;
    loop {
        let frame = tokio::select! {
            Some(frame) = replies.recv() => frame,
            Some(frame) = notices.recv(), if welcomed => frame,
            else => return,
        };
        welcomed = true;
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
        if let ClientControl::Ack { seqs } | ClientControl::Seen { seqs } = &request {
            flow.acknowledged(seqs.len().min(MAX_ACKS_PER_FRAME));
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
        ClientControl::Seen { .. } => true,
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
                    state.router.notify(&sender, RelayControl::FileFetched { file_id, by: caller.user.clone() });
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "cannot record a fetch"),
            }
            true
        }
        ClientControl::ListRooms => send_rooms(state, &caller.user, replies).await.is_some(),
        ClientControl::CreateRoom { .. }
        | ClientControl::AddMember { .. }
        | ClientControl::RemoveMember { .. }
        | ClientControl::LeaveRoom { .. } => {
            let reply = room_request(state, caller, request).await.unwrap_or_else(|reason| {
                info!(%reason, "a room request was refused");
                state.metrics.refused("room");
                RelayControl::RoomRefused { reason }
            });
            replies.send(reply).await.is_ok()
        }
        ClientControl::PublishKeys { .. }
        | ClientControl::GroupState { .. }
        | ClientControl::Commit { .. }
        | ClientControl::GroupInfo { .. } => match group_request(state, caller, request).await {
            Some(reply) => replies.send(reply).await.is_ok(),
            None => true,
        },
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
                devices::create_invite(state.store.as_ref(), user, state.limits.invite_lifetime, Some(&caller.device))
                    .await?;
            info!(invite = %invite.id, "an invite for another device");
            RelayControl::Invite { id: invite.id, secret: invite.secret.to_vec(), expires_ms: invite.expires_ms }
        }
        ClientControl::ListDevices => {
            let rows = state.store.devices(Some(user)).await?;
            let devices = rows.iter().filter(|d| d.revoked_ms.is_none()).map(|d| devices::info(d, &caller.device));
            RelayControl::Devices { devices: devices.collect() }
        }
        ClientControl::RevokeDevice { device } => {
            let revoked = devices::revoke(state.store.as_ref(), &state.pki_dir, user, Some(&device)).await?;
            info!(%device, "a device revoked by its person");
            state.revoke_now(&revoked.serials);
            let gone = RelayControl::DeviceGone { user: user.to_string(), device: device.clone() };
            for other in state.others_of(user).await {
                state.router.notify(&other, gone.clone());
            }
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

/// Answers a request about end-to-end keys and groups (the relay orders, it cannot read).
async fn group_request(state: &RelayState, caller: &Caller, request: ClientControl) -> Option<RelayControl> {
    match request {
        ClientControl::PublishKeys { signature_key, mut key_packages } => {
            if key_packages.iter().any(|p| p.len() > MAX_SEALED) || signature_key.len() > 256 {
                return Some(RelayControl::DeviceRefused { reason: "a key package is too large".into() });
            }
            // The last of the packages is the device's last-resort one.
            let last_resort = key_packages.pop();
            match state.store.publish_keys(caller.key(), signature_key, key_packages, last_resort).await {
                Ok(held) => Some(RelayControl::KeysPublished { held }),
                Err(e) => {
                    warn!(error = %e, "keys not published");
                    Some(RelayControl::DeviceRefused { reason: format!("end-to-end keys not published: {e}") })
                }
            }
        }
        ClientControl::GroupState { room, have } => {
            if have.len() > 4 * MAX_ROOM_MEMBERS {
                return Some(RelayControl::GroupRefused {
                    room: room.unwrap_or_default(),
                    reason: "too many devices".into(),
                });
            }
            if let Some(peer) = room.as_deref().and_then(qchat_shared::names::direct_pair) {
                state.is_user_now(if peer.0 == caller.user { peer.1 } else { peer.0 }).await;
            }
            let plan = state.store.group_plan(caller.key(), room.as_deref(), have, state.users(), state.issued_keys());
            Some(match plan.await {
                Ok(plan) => {
                    let GroupPlan { room, epoch, group_info, unread_commit, add, devices, missing } = plan;
                    RelayControl::GroupState { room, epoch, group_info, unread_commit, add, devices, missing }
                }
                Err(e) => RelayControl::GroupRefused { room: room.unwrap_or_default(), reason: e.to_string() },
            })
        }
        ClientControl::Commit { room, epoch, commit, welcome } => {
            match state.store.commit(caller.key(), &room, epoch, commit, welcome).await {
                Ok(room_seq) => {
                    info!(room = %qchat_shared::display::Escaped(&room), epoch, room_seq, "a group changed");
                    Some(RelayControl::Committed { room, epoch: epoch + 1 })
                }
                Err(e) => Some(RelayControl::CommitRefused { room, reason: e.to_string() }),
            }
        }
        ClientControl::GroupInfo { room, epoch, group_info } => {
            if let Err(e) = state.store.set_group_info(&caller.user, &room, epoch, group_info).await {
                debug!(error = %e, "group info not kept");
            }
            None
        }
        _ => unreachable!("only group requests come here"),
    }
}

/// Answers a request about rooms: the list, or a change of one's members (the store checks
/// who may make it).
async fn room_request(state: &RelayState, caller: &Caller, request: ClientControl) -> Result<RelayControl, String> {
    let (room, change) = match request {
        ClientControl::CreateRoom { name, members } => (name, RoomChange::Create { members }),
        ClientControl::AddMember { room, user } => (room, RoomChange::Add { user }),
        ClientControl::RemoveMember { room, user } => (room, RoomChange::Remove { user }),
        ClientControl::LeaveRoom { room } => (room, RoomChange::Leave),
        _ => unreachable!("only changes of rooms come here"),
    };
    // Someone issued a moment ago may not be in the relay's list yet: it is read again.
    let named: Vec<&String> = match &change {
        RoomChange::Create { members } => members.iter().collect(),
        RoomChange::Add { user } => vec![user],
        _ => Vec::new(),
    };
    for user in named {
        state.is_user_now(user).await;
    }
    let row = state.store.change_room(caller.key(), &room, change, state.users()).await.map_err(|e| e.to_string())?;
    info!(room = %qchat_shared::display::Escaped(&room), "a room changed");
    Ok(RelayControl::Room(state.room_info(row)))
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
            room: "team".into(),
            sender: sender.into(),
            by: "carol".into(),
            everyone: seq.is_multiple_of(2),
            all_delivered_upto: seq,
        };
        let mut receipts: Vec<Receipt> = (1..=2500).map(|seq| receipt("alice", seq)).collect();
        receipts.push(receipt("bob", 7));
        let frames = receipt_frames(receipts);
        assert_eq!(frames.iter().filter(|(s, _)| s == "alice").count(), 3);
        for (_, frame) in &frames {
            qchat_shared::codec::encode(frame).expect("fits a frame");
        }
        let RelayControl::Delivered { messages, all_delivered_upto, everyone, .. } = &frames[0].1 else { panic!() };
        assert_eq!((messages.len(), *all_delivered_upto), (MAX_ACKS_PER_FRAME, 2500));
        assert_eq!(everyone.len(), MAX_ACKS_PER_FRAME / 2, "those every member has, of this frame's");
    }
}
