//! One live connection to the relay: the control stream (hello, acknowledgements,
//! receipts, presence), one stream per message sent, and the delivery streams the relay
//! opens, put back in order.

use std::time::{Duration, Instant};

use qchat_shared::codes::CloseCode;
use qchat_shared::frame::{
    ChatSend, ClientControl, Deliver, FileState, Hello, MessageId, Open, RelayControl, SendReply,
};
use qchat_shared::io::{read_frame, write_frame, ReadFrameError};
use qchat_shared::limits::{FIRST_FRAME_DEADLINE, MAX_ACKS_PER_FRAME, MAX_TEXT};
use qchat_shared::transport::CHAT_PRIORITY;
use qchat_shared::window::ConnectionWindows;
use std::collections::{BTreeMap, HashSet};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::{Command, Core, Outgoing, SendError, Sent};
use crate::event::{ConnectionState, Event, IncomingMessage};
use crate::history::{ChatLine, Record};
use crate::offer::Content;
use crate::refusal::{explain, Ending};
use crate::reorder::Reorder;
use crate::secure::Reading;
use crate::transfers::{Job, Outcome as TransferOutcome};

/// How long the relay may take to answer a message with `Stored`.
const STORED_DEADLINE: Duration = Duration::from_secs(30);
/// How often a changed receipt cursor is written to disk.
const SAVE_EVERY: Duration = Duration::from_millis(500);

/// How a session ended.
pub(crate) enum Outcome {
    Shutdown,
    Ended { ending: Ending, welcomed: bool },
}

/// What a send task found.
enum SendResult {
    Reply(SendReply),
    /// The stream failed; whether to retry depends on the connection.
    Failed(String),
    /// No answer in time: the link may be dead without knowing it yet.
    NoAnswer,
}

/// Frames from the relay's control stream queued for the session loop; a full queue stops
/// the reading of the stream, and QUIC's flow control then holds the relay back.
const CONTROL_QUEUE: usize = 64;
/// Deliveries read and queued for the session loop (the same backpressure).
const DELIVERY_QUEUE: usize = 256;

/// Answers to our messages settled in one go, at most.
const RESULTS_AT_ONCE: usize = 256;
/// Deliveries taken in (and written to the history) in one go, at most.
const DELIVERIES_AT_ONCE: usize = 256;

/// What the delivery reader found on one stream.
type DeliveryRead = Result<Deliver, String>;

/// Serves one connection until it ends or the client shuts down.
pub(crate) async fn run(core: &mut Core, connection: quinn::Connection) -> Outcome {
    let user = core.options.identity.user.clone();
    let server = core.options.server().to_string();
    let who = (user, server);
    let hello = Open::Hello(Hello { receipts_after: core.saved.receipts_after });
    // This connection gets again whatever was not acknowledged on the last.
    core.acks_held = false;
    let windows = ConnectionWindows::new(connection.clone(), core.transfers.context.windows.clone());
    let Ok((mut control_send, control_recv)) = connection.open_bi().await else {
        return ended(false, &connection, &who).await;
    };
    let _ = control_send.set_priority(CHAT_PRIORITY);
    if write_frame(&mut control_send, &hello).await.is_err() {
        return ended(false, &connection, &who).await;
    }

    let mut tasks = JoinSet::new();
    let (relay_tx, mut from_relay) = mpsc::channel(CONTROL_QUEUE);
    tasks.spawn(read_control(control_recv, relay_tx));
    let (deliver_tx, mut deliveries) = mpsc::channel(DELIVERY_QUEUE);
    // Even a client that does not take delivery reads what comes, to keep its rooms'
    // groups in step (it neither shows nor acknowledges it).
    tasks.spawn(accept_deliveries(connection.clone(), deliver_tx));
    // These carry one item per message or transfer of this user's own: the outbox and the
    // transfer list bound them.
    let (result_tx, mut results) = mpsc::unbounded_channel();
    let (outcome_tx, mut outcomes) = mpsc::unbounded_channel();
    let (send_queue, queue_rx) = mpsc::unbounded_channel();
    tasks.spawn(send_in_order(connection.clone(), queue_rx, result_tx));
    // Messages go once their room's group is ready, after the welcome.
    let mut dispatched: HashSet<MessageId> = HashSet::new();
    if let Ok(secure) = core.secure.as_mut() {
        secure.connected();
    }
    // Sealed again on this connection, in the group as it is now (the relay stores an id
    // once, so one that was stored keeps its first form).
    core.outbox.iter_mut().for_each(|o| o.sealed = None);
    core.default_room = None;
    core.read_upto = 0;

    let mut welcomed = false;
    let mut stashed: Option<Command> = None;
    let mut reorder = Reorder::default();
    let mut dirty = false;
    let mut save_tick = tokio::time::interval(SAVE_EVERY);
    let outcome = loop {
        let gap = reorder.gap_deadline();
        tokio::select! {
            command = next_command(&mut stashed, &mut core.commands) => match command {
                Some(Command::Send(outgoing)) => {
                    // Every send already waiting comes along, so that a burst is sealed
                    // in one go; a command of another kind is kept for the next turn.
                    let mut next = Some(outgoing);
                    let mut taken = 0;
                    while let Some(outgoing) = next.take() {
                        let (id, refused) = (outgoing.id, refuse_locally(&outgoing.content));
                        core.outbox.push(outgoing);
                        if let Some(reason) = refused {
                            core.settle(id, Err(SendError::Refused(reason)), &mut Vec::new());
                        }
                        taken += 1;
                        if taken < SENDS_AT_ONCE {
                            match core.commands.try_recv() {
                                Ok(Command::Send(outgoing)) => next = Some(outgoing),
                                Ok(other) => stashed = Some(other),
                                Err(_) => {}
                            }
                        }
                    }
                    if welcomed {
                        let frames = dispatch(core, &send_queue, &mut dispatched);
                        if write_all(&mut control_send, frames).await.is_err() {
                            break ended(welcomed, &connection, &who).await;
                        }
                    }
                }
                Some(Command::Status) => {
                    if write_frame(&mut control_send, &ClientControl::Status).await.is_err() {
                        break ended(welcomed, &connection, &who).await;
                    }
                }
                Some(Command::SendFile { transfer, path, room, name }) => core.queue_upload(transfer, path, room, name),
                Some(Command::ReceiveAll { out_dir, keep, room }) => {
                    core.receive(out_dir, keep, room);
                    if write_frame(&mut control_send, &ClientControl::ListFiles).await.is_err() {
                        break ended(welcomed, &connection, &who).await;
                    }
                }
                Some(Command::Receive { file_id, out_dir }) => core.receive_one(file_id, out_dir),
                Some(Command::ListFiles) => {
                    if write_frame(&mut control_send, &ClientControl::ListFiles).await.is_err() {
                        break ended(welcomed, &connection, &who).await;
                    }
                }
                Some(Command::Cancel { transfer }) => core.cancel(transfer),
                Some(Command::Verify { user }) => {
                    core.verifying.push(user);
                    if welcomed {
                        let frames = dispatch(core, &send_queue, &mut dispatched);
                        if write_all(&mut control_send, frames).await.is_err() {
                            break ended(welcomed, &connection, &who).await;
                        }
                    }
                }
                Some(Command::Request(request)) => {
                    if write_frame(&mut control_send, &request).await.is_err() {
                        break ended(welcomed, &connection, &who).await;
                    }
                }
                Some(Command::Shutdown) | None => {
                    // Finish the control stream and let the relay read it all (the last
                    // acknowledgements and fetches), then say goodbye.
                    let _ = control_send.finish();
                    let _ = tokio::time::timeout(Duration::from_secs(1), control_send.stopped()).await;
                    connection.close(CloseCode::Normal.to_varint(), b"bye");
                    break Outcome::Shutdown;
                }
            },
            frame = from_relay.recv() => match frame {
                Some(frame) => {
                    if let RelayControl::Welcome(_) = &frame {
                        welcomed = true;
                        if core.receive_into.is_some()
                            && write_frame(&mut control_send, &ClientControl::ListFiles).await.is_err()
                        {
                            break ended(welcomed, &connection, &who).await;
                        }
                        let mut requests: Vec<ClientControl> = renewal(core).into_iter().collect();
                        requests.append(&mut core.requests);
                        if let (Ok(secure), RelayControl::Welcome(status)) = (core.secure.as_mut(), &frame) {
                            requests.extend(secure.publish(status.key_packages));
                        }
                        let mut written = true;
                        for request in requests {
                            written &= write_frame(&mut control_send, &request).await.is_ok();
                        }
                        if !written {
                            break ended(welcomed, &connection, &who).await;
                        }
                    }
                    let mut tell = Vec::new();
                    dirty |= on_control(core, frame, &mut tell).await;
                    if welcomed {
                        tell.extend(dispatch(core, &send_queue, &mut dispatched));
                    }
                    if write_all(&mut control_send, tell).await.is_err() {
                        break ended(welcomed, &connection, &who).await;
                    }
                }
                None => break ended(welcomed, &connection, &who).await,
            },
            // Deliveries wait for the welcome, so that `Connected` is reported first.
            Some(read) = deliveries.recv(), if welcomed => {
                // Deliveries that came together are written together: one fsync, not one
                // each.
                let waiting = std::iter::from_fn(|| deliveries.try_recv().ok()).take(DELIVERIES_AT_ONCE - 1);
                let ready: Result<Vec<Deliver>, String> = std::iter::once(read).chain(waiting).try_fold(Vec::new(), |mut ready, read| {
                    ready.extend(read.and_then(|d| reorder.push(d, Instant::now()).map_err(|e| e.to_string()))?);
                    Ok(ready)
                });
                let ready = match ready {
                    Ok(ready) => ready,
                    Err(reason) => break lost_delivery(&connection, welcomed, &reason, &who).await,
                };
                let (acks, mut tell) = take_in_order(core, ready).await;
                if !acks.is_empty() && send_acks(&mut control_send, acks).await.is_err() {
                    break ended(welcomed, &connection, &who).await;
                }
                tell.extend(dispatch(core, &send_queue, &mut dispatched));
                if write_all(&mut control_send, tell).await.is_err() {
                    break ended(welcomed, &connection, &who).await;
                }
                if core.rooms.take_stale() && write_frame(&mut control_send, &ClientControl::ListRooms).await.is_err() {
                    break ended(welcomed, &connection, &who).await;
                }
            }
            _ = sleep_until(gap), if gap.is_some() => {
                break lost_delivery(&connection, welcomed, "a message from the relay did not arrive in time", &who).await;
            }
            Some(first) = results.recv() => {
                // Answers that came together are settled together, with one history write.
                let mut answers = vec![first];
                // (The count first: a result taken past it would be lost.)
                while answers.len() < RESULTS_AT_ONCE {
                    let Ok(next) = results.try_recv() else { break };
                    answers.push(next);
                }
                let mut history = Vec::new();
                for (id, result) in answers {
                    if let Some(resend) = on_send_result(core, &connection, id, result, &mut history) {
                        let _ = send_queue.send(resend);
                    } else {
                        dispatched.remove(&id);
                    }
                }
                core.remember(history, false).await;
            }
            Some((transfer, outcome)) = outcomes.recv() => {
                let job = core.transfers.finished(transfer, &outcome);
                if let (TransferOutcome::Failed, Some(Job::Download { offer, .. })) = (&outcome, job) {
                    // Not tried again by itself (a new listing offers it again).
                    core.offers.remove(&offer.file_id);
                }
                if let TransferOutcome::Saved { file_id, path, blake3 } = outcome {
                    core.saved_file(file_id).await;
                    let told = write_frame(&mut control_send, &ClientControl::Fetched { file_id }).await;
                    core.emit(Event::FileSaved { transfer, file_id, path, blake3 });
                    if told.is_err() {
                        break ended(welcomed, &connection, &who).await;
                    }
                }
            }
            Some((room, offer, reply)) = core.file_offers.recv() => {
                // An upload began: its name and key go to the room's members, sealed, once
                // (the id is the file's, so a resumed upload's offer is stored once).
                let id = MessageId(offer.file_id.0);
                if let Ok(secure) = core.secure.as_ref() {
                    secure.keep_offer(&offer);
                }
                match core.outbox.iter_mut().find(|o| o.id == id) {
                    Some(queued) => queued.reply = Some(reply),
                    None => {
                        let content = Content::File(offer);
                        core.outbox.push(Outgoing { id, room: Some(room), content, sealed: None, reply: Some(reply) });
                    }
                }
                if welcomed {
                    let frames = dispatch(core, &send_queue, &mut dispatched);
                    if write_all(&mut control_send, frames).await.is_err() {
                        break ended(welcomed, &connection, &who).await;
                    }
                }
            }
            _ = save_tick.tick() => {
                core.release_listing();
                if dirty {
                    core.save_state().await;
                    dirty = false;
                }
            }
        }
        if welcomed {
            core.transfers.start_waiting(&windows, &mut tasks, &outcome_tx);
        }
    };
    tasks.abort_all();
    if dirty {
        core.save_state().await;
    }
    outcome
}

/// Sends taken from the command channel at once (and sealed together).
const SENDS_AT_ONCE: usize = 256;

/// The command kept back from the last turn, or else the next from the channel.
async fn next_command(
    stashed: &mut Option<Command>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Option<Command> {
    match stashed.take() {
        Some(command) => Some(command),
        None => commands.recv().await,
    }
}

/// A message as the sending task takes it: id, room and sealed bytes.
type Queued = (MessageId, String, Vec<u8>);

fn queued(outgoing: &Outgoing) -> Option<Queued> {
    outgoing.sealed.as_ref().map(|(room, sealed)| (outgoing.id, room.clone(), sealed.clone()))
}

/// Writes control frames in order.
async fn write_all(control: &mut quinn::SendStream, frames: Vec<ClientControl>) -> Result<(), ()> {
    for frame in frames {
        write_frame(control, &frame).await.map_err(|_| ())?;
    }
    Ok(())
}

/// Sends every queued message whose room's group is ready (sealing it first), and asks
/// the relay about the groups of the others; returns the questions to write.
fn dispatch(
    core: &mut Core,
    send_queue: &mpsc::UnboundedSender<Queued>,
    dispatched: &mut HashSet<MessageId>,
) -> Vec<ClientControl> {
    let secure = match core.secure.as_mut() {
        Ok(secure) => secure,
        Err(reason) => {
            let reason = format!("this device's end-to-end keys cannot be used: {reason}");
            let ids: Vec<MessageId> = core.outbox.iter().map(|o| o.id).collect();
            for id in ids {
                core.settle(id, Err(SendError::Refused(reason.clone())), &mut Vec::new());
            }
            return Vec::new();
        }
    };
    // What waits to be sealed in rooms whose group is ready, by room, in the outbox's order.
    let mut questions = Vec::new();
    let mut to_seal: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (at, outgoing) in core.outbox.iter_mut().enumerate() {
        if outgoing.sealed.is_some() || dispatched.contains(&outgoing.id) {
            continue;
        }
        if outgoing.room.is_none() {
            outgoing.room = core.default_room.clone();
        }
        match outgoing.room.as_deref() {
            Some(room) if secure.is_ready(room) => to_seal.entry(room.to_string()).or_default().push(at),
            room => questions.extend(secure.ask(room)),
        }
    }
    // Sealed per room in one go (one group load and one commit for a burst).
    let mut failed = Vec::new();
    for (room, ats) in to_seal {
        let contents: Vec<&Content> = ats.iter().map(|&at| &core.outbox[at].content).collect();
        match secure.seal_all(&room, &contents) {
            Ok(sealed) => {
                for (at, sealed) in ats.into_iter().zip(sealed) {
                    core.outbox[at].sealed = Some((room.clone(), sealed));
                }
            }
            Err(reason) => failed.extend(ats.iter().map(|&at| (core.outbox[at].id, reason.clone()))),
        }
    }
    for outgoing in &core.outbox {
        if dispatched.contains(&outgoing.id) {
            continue;
        }
        if let Some(message) = queued(outgoing) {
            dispatched.insert(outgoing.id);
            let _ = send_queue.send(message);
        }
    }
    for (id, reason) in failed {
        core.settle(id, Err(SendError::Refused(reason)), &mut Vec::new());
    }
    questions.extend(verify_ready(core));
    questions
}

/// Answers the safety-number questions whose direct room's group is ready; asks about the
/// others' groups.
fn verify_ready(core: &mut Core) -> Vec<ClientControl> {
    let Ok(secure) = core.secure.as_mut() else { return Vec::new() };
    let me = core.options.identity.user.clone();
    let mut questions = Vec::new();
    let mut answers = Vec::new();
    core.verifying.retain(|user| {
        let room = qchat_shared::names::direct_room(&me, user);
        if !secure.is_ready(&room) {
            questions.extend(secure.ask(Some(&room)));
            return true;
        }
        answers.push(match secure.safety_number(&me, user, &room) {
            Some((number, devices)) => Event::SafetyNumber { user: user.clone(), number, devices },
            None => Event::LocalError {
                reason: format!("no device of {user} is in your direct room's encryption group yet"),
            },
        });
        false
    });
    for answer in answers {
        core.emit(answer);
    }
    questions
}

/// A request for a new certificate, when this device's is in the last third of its life.
fn renewal(core: &Core) -> Option<ClientControl> {
    let now_s = time::OffsetDateTime::now_utc().unix_timestamp();
    if !crate::enroll::renewal_due(&core.options.identity, now_s) {
        return None;
    }
    match crate::enroll::renewal_request(&core.options.identity) {
        Ok(csr_der) => Some(ClientControl::Renew { csr_der }),
        Err(reason) => {
            core.emit(Event::LocalError { reason: format!("cannot ask for a new certificate: {reason}") });
            None
        }
    }
}

/// Sleeps until `deadline` (forever without one).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Ends a connection on which a delivery was lost: the next one gets every message not
/// acknowledged, in order, so nothing is skipped and nothing stalls.
async fn lost_delivery(
    connection: &quinn::Connection,
    welcomed: bool,
    reason: &str,
    who: &(String, String),
) -> Outcome {
    // A delivery also fails when the relay closed the connection: its reason comes first.
    if connection.close_reason().is_some() {
        return ended(welcomed, connection, who).await;
    }
    tracing::info!(%reason, "a delivery was lost; reconnecting");
    connection.close(CloseCode::Reconnect.to_varint(), b"a delivery was lost; reconnecting");
    let reason = format!("a message from the relay was lost on the way ({reason}); reconnecting to get it again");
    Outcome::Ended { ending: Ending { reason, fatal: false }, welcomed }
}

/// Waits for the connection's own error, which says why whatever failed first failed.
async fn ended(welcomed: bool, connection: &quinn::Connection, (user, server): &(String, String)) -> Outcome {
    let ending = match tokio::time::timeout(Duration::from_secs(2), connection.closed()).await {
        Ok(error) => explain(&error, user, server),
        Err(_) => {
            // The connection is up but its control stream failed: the relay sent what this
            // client cannot read.
            connection.close(CloseCode::Protocol.to_varint(), b"unreadable control stream");
            Ending {
                reason: format!(
                    "the relay at {server} sent something this client cannot read (another qchat version?)"
                ),
                fatal: false,
            }
        }
    };
    Outcome::Ended { ending, welcomed }
}

fn refuse_locally(content: &Content) -> Option<String> {
    let Content::Text(text) = content else { return None };
    if text.is_empty() {
        Some("an empty message is not sent".into())
    } else if text.len() > MAX_TEXT {
        Some(format!("the message is {} bytes; the limit is {MAX_TEXT}", text.len()))
    } else {
        None
    }
}

/// Handles a frame from the control stream; returns true when the saved state changed.
/// What to tell the relay after it (files already fetched, a group's commit) goes into
/// `tell`.
async fn on_control(core: &mut Core, frame: RelayControl, tell: &mut Vec<ClientControl>) -> bool {
    match frame {
        RelayControl::FileOffered(info) => {
            let file_id = info.file_id;
            if !core.relay_offered(info) {
                tell.push(ClientControl::Fetched { file_id });
            }
        }
        RelayControl::FileArriving { file_id, held } => core.emit(Event::FileArriving { file_id, held }),
        RelayControl::FileFetched { file_id, by } => core.emit(Event::FileFetched { file_id, by }),
        RelayControl::FileExpired { file_id, fetched } => {
            let offer = core.secure.as_ref().ok().and_then(|s| s.file_offer(file_id));
            let name = offer.map_or_else(|| format!("file {file_id}"), |o| o.name);
            core.emit(Event::FileExpired { file_id, name, fetched })
        }
        RelayControl::Files { incoming, outgoing, last } => {
            for entry in &incoming {
                if entry.state == FileState::Offered && !core.relay_offered(entry.info.clone()) {
                    tell.push(ClientControl::Fetched { file_id: entry.info.file_id });
                }
            }
            core.listing.push((incoming, outgoing));
            if last {
                core.receive_listed = core.receive_into.take();
                core.listing_done = true;
                core.release_listing();
            }
        }
        RelayControl::Welcome(status) => {
            (core.backlog, core.messages_read) = (status.waiting_for_you, 0);
            core.emit(Event::Connection(ConnectionState::Connected(status)))
        }
        RelayControl::Status(status) => core.emit_status(status),
        RelayControl::Presence { user, online } => {
            core.rooms.presence(&user, online);
            core.emit(Event::Presence { user, online });
        }
        RelayControl::Rooms { rooms, last } => {
            core.default_room = None;
            if core.rooms.listed(rooms, last) {
                core.emit(Event::Rooms(core.rooms.list()));
            }
        }
        RelayControl::Room(room) => {
            core.default_room = None;
            // Our change of its members: bring its group in line at once.
            if let Ok(secure) = core.secure.as_mut() {
                secure.unready(&room.name);
                tell.extend(secure.ask(Some(&room.name)));
            }
            core.rooms.update(&core.options.identity.user, room.clone());
            core.emit(Event::Room(room));
            core.emit(Event::Rooms(core.rooms.list()));
        }
        RelayControl::RoomRefused { reason } => core.emit(Event::RoomRefused { reason }),
        RelayControl::AckConfirmed { seqs } => core.emit(Event::AckConfirmed { seqs }),
        RelayControl::Delivered { room, by, messages, everyone, all_delivered_upto } => {
            let records = messages.iter().map(|(id, seq)| Record::Receipt {
                id: *id,
                by: by.clone(),
                everyone: everyone.contains(seq),
            });
            core.remember(records.collect(), false).await;
            for (id, seq) in messages {
                let (room, by, everyone) = (room.clone(), by.clone(), everyone.contains(&seq));
                core.emit(Event::Delivered { id, seq, room, by, everyone });
            }
            if all_delivered_upto > core.saved.receipts_after {
                core.saved.receipts_after = all_delivered_upto;
                return true;
            }
        }
        RelayControl::MessageExpired { messages } => {
            for (id, seq) in messages {
                core.emit(Event::MessageExpired { id, seq });
            }
        }
        RelayControl::Invite { id, secret, expires_ms } => match invite_line(core, id, secret) {
            Ok(line) => core.emit(Event::DeviceInvite { line, expires_ms }),
            Err(reason) => core.emit(Event::DeviceRefused { reason }),
        },
        RelayControl::Devices { devices } => core.emit(Event::Devices(devices)),
        RelayControl::DeviceRevoked { device } => core.emit(Event::DeviceRevoked { id: device }),
        RelayControl::DeviceRefused { reason } => core.emit(Event::DeviceRefused { reason }),
        RelayControl::DeviceAdded { user, device } => {
            // Its rooms' groups take the new device in before our next message.
            unready_rooms_of(core, &user);
            core.emit(Event::DeviceAdded { user, device })
        }
        RelayControl::DeviceGone { user, device } => {
            unready_rooms_of(core, &user);
            let time_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
            let text = format!("{user}'s device {device} was revoked: it is taken out of the room's encryption");
            for room in core.rooms.list().into_iter().filter(|r| r.has(&user)) {
                core.emit(Event::Notice { room: room.name, text: text.clone(), time_ms });
            }
        }
        RelayControl::Renewed { cert_pem } => core.renewed(cert_pem).await,
        RelayControl::KeysPublished { held } => core.emit(Event::KeysPublished { held }),
        RelayControl::GroupState { room, epoch, group_info, unread_commit, add, devices, missing } => {
            if !missing.is_empty() {
                tracing::debug!(?missing, "devices with no key package yet (they join by themselves)");
            }
            if let Ok(secure) = core.secure.as_mut() {
                // A commit on its way to us is read first (it may bring us in).
                let behind = unread_commit.is_some_and(|seq| seq > core.read_upto);
                let (target, made) = secure.answered(&room, (epoch, behind), group_info, (add, devices));
                if target.is_none() {
                    // The default room is this one now.
                    core.outbox.iter_mut().filter(|o| o.room.is_none()).for_each(|o| o.room = Some(room.clone()));
                    core.default_room = Some(room.clone());
                }
                match made {
                    Ok(commit) => tell.extend(commit),
                    Err(reason) => refuse_waiting(core, Some(&room), &reason),
                }
            }
        }
        RelayControl::GroupRefused { reason, .. } => {
            if let Ok(secure) = core.secure.as_mut() {
                let target = secure.refused_question();
                refuse_waiting(core, target.as_deref(), &reason);
                // A safety number asked for with someone there is no direct room with.
                let me = core.options.identity.user.clone();
                let asked = |user: &String| Some(qchat_shared::names::direct_room(&me, user)) == target;
                if let Some(user) = core.verifying.iter().find(|u| asked(u)).cloned() {
                    core.verifying.retain(|u| *u != user);
                    core.emit(Event::LocalError { reason: format!("no safety number with {user}: {reason}") });
                }
            }
        }
        RelayControl::Committed { room, .. } => {
            if let Ok(secure) = core.secure.as_mut() {
                let (info, news) = secure.committed(&room);
                tell.extend(info);
                if let Some(text) = news {
                    let time_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
                    core.emit(Event::Notice { room, text, time_ms });
                }
            }
        }
        RelayControl::CommitRefused { room, reason } => {
            tracing::info!(%room, %reason, "our commit was not taken; the group moves on first");
            if let Ok(secure) = core.secure.as_mut() {
                secure.commit_refused(&room);
            }
        }
    }
    false
}

/// The rooms `user` is in must check their groups before our next message in them; so must
/// every room whose members this client may not know yet (its list can lag behind the
/// relay's), so every ready room not known to be without `user`.
fn unready_rooms_of(core: &mut Core, user: &str) {
    if let Ok(secure) = core.secure.as_mut() {
        let without: HashSet<String> = core.rooms.list().into_iter().filter(|r| !r.has(user)).map(|r| r.name).collect();
        secure.unready_all(|room| !without.contains(room));
    }
}

/// Fails the messages waiting to go to `room` (the default room with none).
fn refuse_waiting(core: &mut Core, room: Option<&str>, reason: &str) {
    let ids: Vec<MessageId> =
        core.outbox.iter().filter(|o| o.sealed.is_none() && o.room.as_deref() == room).map(|o| o.id).collect();
    for id in ids {
        core.settle(id, Err(SendError::Refused(reason.to_string())), &mut Vec::new());
    }
}

/// The line of an invite the relay issued: the address this client reaches the relay at,
/// and the fingerprint of the CA in its identity.
fn invite_line(core: &Core, id: String, secret: Vec<u8>) -> Result<String, String> {
    let secret = secret.try_into().map_err(|_| "the relay sent an invite of another form".to_string())?;
    let ca = qchat_shared::tls::parse_certs(&core.options.identity.ca_pem, "the CA").map_err(|e| e.to_string())?;
    let invite = qchat_shared::invite::Invite {
        server: core.options.server().to_string(),
        ca_fingerprint: qchat_shared::invite::ca_fingerprint(&ca[0]),
        id,
        secret,
    };
    Ok(invite.to_string())
}

/// Opens each delivery (once; the device keeps what it opened) and says what to tell the
/// relay after them.
fn read_all(core: &mut Core, ready: &[Deliver]) -> (Vec<Reading>, Vec<ClientControl>) {
    let mut tell = Vec::new();
    let readings = match core.secure.as_mut() {
        Ok(secure) => {
            let rooms = &core.rooms;
            secure
                .read_all(ready, |room| rooms.get(room))
                .into_iter()
                .map(|(reading, frames)| {
                    tell.extend(frames);
                    reading
                })
                .collect()
        }
        Err(reason) => ready.iter().map(|_| Reading::Notice(format!("this device cannot decrypt: {reason}"))).collect(),
    };
    (readings, tell)
}

/// Reports deliveries that are next in order (once each) and returns what to acknowledge:
/// only what is on disk, so a crash or a full disk loses nothing the relay has let go of
/// (they are shown before the write: a crash before it brings them again, not shown twice
/// in one run, and shown again after a restart, as they were not kept).
/// A batch that could not be written is not acknowledged; when it comes again it is
/// written again, but not shown again. A client that does not take delivery only opens
/// them, to keep its groups in step. Also returns what to tell the relay.
async fn take_in_order(core: &mut Core, ready: Vec<Deliver>) -> (Vec<u64>, Vec<ClientControl>) {
    let (readings, tell) = read_all(core, &ready);
    core.read_upto = core.read_upto.max(ready.iter().map(|d| d.seq).max().unwrap_or(0));
    core.messages_read += ready.iter().filter(|d| d.body.is_message()).count() as u64;
    for reading in &readings {
        if let Reading::File(offer) = reading {
            core.key_arrived(offer);
        }
    }
    core.release_listing();
    let Some(last) = ready.iter().map(|d| d.seq).max() else { return (Vec::new(), tell) };
    if !core.options.receive {
        let mut tell = tell;
        for seqs in ready.iter().map(|d| d.seq).collect::<Vec<_>>().chunks(MAX_ACKS_PER_FRAME) {
            tell.push(ClientControl::Seen { seqs: seqs.to_vec() });
        }
        return (Vec::new(), tell);
    }
    if core.acks_held {
        // A batch before could not be written: acknowledging a later one would move this
        // device's cursor past it on the relay. Show, keep nothing, acknowledge nothing;
        // the next connection brings all of them again.
        show_new(core, &ready, &readings, last);
        return (Vec::new(), tell);
    }
    let me = core.options.identity.user.clone();
    let records = ready
        .iter()
        .zip(&readings)
        .filter(|(d, _)| d.seq > core.kept_upto)
        .filter_map(|(d, reading)| {
            // One of ours, sent from another of our devices: shown as ours.
            let mine = d.from == me;
            let line = |text: &String, notice: bool| ChatLine {
                id: d.id,
                seq: Some(d.seq),
                room: d.room.clone(),
                from: d.from.clone(),
                text: text.clone(),
                time_ms: d.time_ms,
                mine: mine && !notice,
                delivered: !mine && !notice,
                received_by: Vec::new(),
                notice,
                change: None,
            };
            Some(Record::Line(match reading {
                Reading::Text(text) => line(text, false),
                Reading::Notice(text) => line(text, true),
                Reading::Change => ChatLine::change(d.id, d.seq, d.room.clone(), d.from.clone(), &d.body, d.time_ms),
                Reading::File(_) | Reading::Silent => return None,
            }))
        })
        .collect();
    // Shown first: the fsync is what the acknowledgement waits for, not the reader.
    show_new(core, &ready, &readings, last);
    let kept = core.remember(records, true).await;
    if !kept {
        core.acks_held = true;
        return (Vec::new(), tell);
    }
    core.kept_upto = core.kept_upto.max(last);
    (ready.iter().map(|d| d.seq).collect(), tell)
}

/// Reports the deliveries not shown yet, once each; a change of members also changes our
/// rooms.
fn show_new(core: &mut Core, ready: &[Deliver], readings: &[Reading], last: u64) {
    let me = core.options.identity.user.clone();
    for (d, reading) in ready.iter().zip(readings).filter(|(d, _)| d.seq > core.shown_upto) {
        let (id, seq, room, room_seq, from, time_ms) =
            (d.id, d.seq, d.room.clone(), d.room_seq, d.from.clone(), d.time_ms);
        match reading {
            Reading::Text(text) => {
                let text = text.clone();
                core.emit(Event::Message(IncomingMessage { id, seq, room, room_seq, from, text, time_ms }));
            }
            Reading::Notice(text) => core.emit(Event::Notice { room, text: text.clone(), time_ms }),
            Reading::Change => {
                core.default_room = None;
                let changed = core.rooms.apply(&me, (&room, room_seq), &from, &d.body);
                core.emit(Event::RoomChanged { id, seq, room, by: from, change: d.body.clone(), time_ms });
                if changed {
                    core.emit(Event::Rooms(core.rooms.list()));
                }
            }
            Reading::File(_) | Reading::Silent => {}
        }
    }
    core.shown_upto = core.shown_upto.max(last);
}

async fn send_acks(control: &mut quinn::SendStream, acks: Vec<u64>) -> Result<(), ()> {
    for chunk in acks.chunks(MAX_ACKS_PER_FRAME) {
        write_frame(control, &ClientControl::Ack { seqs: chunk.to_vec() }).await.map_err(|_| ())?;
    }
    Ok(())
}

fn on_send_result(
    core: &mut Core,
    connection: &quinn::Connection,
    id: MessageId,
    result: SendResult,
    history: &mut Vec<Record>,
) -> Option<Queued> {
    match result {
        // Keep it and send it again (same id: the relay stores it once); if the link is
        // dead, the reconnect resends it.
        SendResult::NoAnswer => return core.outbox.iter().find(|o| o.id == id).and_then(queued),
        SendResult::Reply(SendReply::Stored { seq, room, time_ms, .. }) => {
            core.settle(id, Ok(Sent { id, seq, room, time_ms }), history)
        }
        SendResult::Reply(SendReply::Refused { reason }) => core.settle(id, Err(SendError::Refused(reason)), history),
        // The connection is going: the message stays queued and is sent again (same id, so
        // the relay stores it once) after the reconnect.
        SendResult::Failed(_) if connection.close_reason().is_some() => {}
        SendResult::Failed(reason) => core.settle(id, Err(SendError::Refused(reason)), history),
    }
    None
}

/// Opens one stream per message, one after another in the order they were sent (the relay
/// stores a connection's messages in stream order), and awaits the answers side by side.
async fn send_in_order(
    connection: quinn::Connection,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    results: mpsc::UnboundedSender<(MessageId, SendResult)>,
) {
    let mut answers = JoinSet::new();
    while let Some((id, room, sealed)) = queue.recv().await {
        match open_and_write(&connection, ChatSend { id, room, sealed }).await {
            Ok(recv) => {
                let results = results.clone();
                answers.spawn(async move {
                    let _ = results.send((id, await_answer(recv).await));
                });
            }
            Err(reason) => {
                let _ = results.send((id, SendResult::Failed(reason)));
            }
        }
    }
}

async fn open_and_write(connection: &quinn::Connection, message: ChatSend) -> Result<quinn::RecvStream, String> {
    let (mut send, recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    let _ = send.set_priority(CHAT_PRIORITY);
    write_frame(&mut send, &Open::Send(message)).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    Ok(recv)
}

async fn await_answer(mut recv: quinn::RecvStream) -> SendResult {
    match tokio::time::timeout(STORED_DEADLINE, read_frame::<SendReply, _>(&mut recv)).await {
        Ok(Ok(Some(reply))) => SendResult::Reply(reply),
        Ok(Ok(None)) => SendResult::Failed("the relay closed the message stream without an answer".into()),
        Ok(Err(e)) => SendResult::Failed(format!("the relay's answer was unreadable: {e}")),
        Err(_) => SendResult::NoAnswer,
    }
}

async fn read_control(mut recv: quinn::RecvStream, frames: mpsc::Sender<RelayControl>) {
    loop {
        match read_frame::<RelayControl, _>(&mut recv).await {
            Ok(Some(frame)) => {
                if frames.send(frame).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            // The connection went: its own error says why, to the session loop.
            Err(ReadFrameError::Io(e)) => {
                tracing::debug!(error = %e, "the relay's control stream ended");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the relay's control stream is unreadable");
                return;
            }
        }
    }
}

/// Reads each delivery stream the relay opens. A stream that cannot be read is reported,
/// so the session reconnects instead of waiting for it forever.
async fn accept_deliveries(connection: quinn::Connection, deliveries: mpsc::Sender<DeliveryRead>) {
    while let Ok(mut recv) = connection.accept_uni().await {
        let deliveries = deliveries.clone();
        tokio::spawn(async move {
            let read = match tokio::time::timeout(FIRST_FRAME_DEADLINE, read_frame::<Deliver, _>(&mut recv)).await {
                Ok(Ok(Some(deliver))) => {
                    tracing::debug!(index = deliver.index, seq = deliver.seq, "delivery received");
                    Ok(deliver)
                }
                Ok(Ok(None)) => Err("an empty delivery stream".to_string()),
                Ok(Err(e)) => Err(format!("an unreadable delivery: {e}")),
                Err(_) => Err(format!("a delivery not finished within {} s", FIRST_FRAME_DEADLINE.as_secs())),
            };
            let _ = deliveries.send(read).await;
        });
    }
}
