//! One client connection: who it is (from its certificate), whether it may come in (a
//! member, not revoked, not one too many before `Hello`), its welcome, and the chat and
//! file streams it opens. Its control stream is [`crate::control`]'s, its deliveries
//! [`crate::delivery`]'s.

use std::sync::Arc;

use qchat_shared::codec::FrameError;
use qchat_shared::codes::{CloseCode, StreamCode};
use qchat_shared::frame::{ChatSend, Open, RelayControl, SendReply};
use qchat_shared::in_order::InOrder;
use qchat_shared::io::{read_frame, write_frame, ReadFrameError};
use qchat_shared::limits::{FIRST_FRAME_DEADLINE, MAX_SEALED};
use qchat_shared::transport::CHAT_PRIORITY;
use qchat_shared::window::ConnectionWindows;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, info, warn, Instrument};

use crate::delivery::DeliveryFlow;
use crate::listing::{self, ListingError};
use crate::relay::RelayState;
use crate::router::LiveConnection;
use crate::store::Stored;
use crate::turnstile::{Ticket, Turnstile};
use crate::{control, delivery};

/// Live messages queued per connection before it counts as lagging (see
/// [`delivery::deliver`]).
const DELIVERY_QUEUE: usize = 256;
/// This connection's own replies queued for its control stream; a full queue stops the
/// reading of its requests.
const REPLY_QUEUE: usize = 16;
/// Notices from elsewhere queued per connection before it is closed as not reading.
const NOTICE_QUEUE: usize = 1024;

/// Who a connection is: a person and one of their devices, from its certificate.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub device: String,
    /// The certificate names the device (a joined device's does; one from `qchat-certs
    /// user`, and its renewals, do not).
    pub named: bool,
    /// The certificate is in the last third of its life: it may be renewed, once per
    /// connection (set once it was).
    pub renewable: bool,
    pub renewed: Arc<std::sync::atomic::AtomicBool>,
}

impl Caller {
    /// The pair the store's per-device queries take.
    pub fn key(&self) -> (&str, &str) {
        (&self.user, &self.device)
    }
}

/// What a client's certificate says.
struct Certified {
    caller: Caller,
    serial: Vec<u8>,
    /// It names no device: an identity from `qchat-certs user`.
    from_certs_tool: bool,
    not_after_ms: i64,
}

/// Serves one connection until it ends: an enrollment, or a chat connection, which must
/// have presented a certificate of the relay's CA (checked in the handshake).
pub async fn run(state: Arc<RelayState>, connection: quinn::Connection) {
    let remote = connection.remote_address();
    let alpn = connection
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    if alpn.as_deref() == Some(qchat_shared::ENROLL_ALPN) {
        let span = tracing::info_span!("enroll", %remote);
        return crate::enroll::run(state, connection).instrument(span).await;
    }
    let Some(certified) = certified(&connection) else {
        let reason =
            "the relay asked for a certificate and none was sent: use a .qchat identity file (or join with an invite)";
        connection.close(CloseCode::Protocol.to_varint(), reason.as_bytes());
        return;
    };
    let Caller { user, device, .. } = &certified.caller;
    let span = tracing::info_span!("session", %user, %device, %remote, conn = connection.stable_id());
    serve(state, connection, certified).instrument(span).await;
}

/// The user name from the client's certificate (its subject CN), never from what it says,
/// its device (its OU, or one made from the serial for a certificate of `qchat-certs`),
/// and the certificate's serial number.
fn certified(connection: &quinn::Connection) -> Option<Certified> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    let leaf = certs.first()?;
    let user = qchat_shared::tls::common_name(leaf)?;
    let serial = qchat_shared::tls::serial(leaf)?;
    let named = qchat_shared::tls::device_of(leaf);
    let from_certs_tool = named.is_none();
    let validity = qchat_shared::tls::validity(leaf);
    let now_s = time::OffsetDateTime::now_utc().unix_timestamp();
    let caller = Caller {
        user,
        named: named.is_some(),
        device: named.unwrap_or_else(|| qchat_shared::identity::legacy_device_id(&serial)),
        renewable: validity.is_some_and(|(start, end)| end - now_s < (end - start) / 3),
        renewed: Default::default(),
    };
    let not_after_ms = validity.map(|(_, end)| end.saturating_mul(1000)).unwrap_or(i64::MAX);
    Some(Certified { caller, serial, from_certs_tool, not_after_ms })
}

/// Closes a connection with a code and a reason a person can read.
pub(crate) fn close(connection: &quinn::Connection, code: CloseCode, reason: &str) {
    connection.close(code.to_varint(), reason.as_bytes());
}

async fn serve(state: Arc<RelayState>, connection: quinn::Connection, certified: Certified) {
    let Certified { mut caller, serial, from_certs_tool, not_after_ms } = certified;
    let user = caller.user.clone();
    if !state.is_user_now(&user).await {
        info!("refused: not one of this relay's users");
        state.metrics.refused("not_a_user");
        let reason = format!("{user} is not one of this relay's users; ask its operator for an invite");
        close(&connection, CloseCode::NotAMember, &reason);
        return;
    }
    let pending = match state.pending.enter(&user) {
        Ok(pending) => pending,
        Err(reason) => {
            info!(%reason, "refused: too many connections before Hello");
            state.metrics.refused("too_many_pending");
            close(&connection, CloseCode::Reconnect, &reason);
            return;
        }
    };
    if from_certs_tool {
        // A renewed certificate of `qchat-certs user`'s: the device its serial was given to.
        match state.store.device_of_serial(&user, serial.clone()).await {
            Ok(Some(device)) => caller.device = device,
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cannot look up a certificate's device"),
        }
    }
    let seen = state.store.device_connected(&user, &caller.device, from_certs_tool, serial.clone(), not_after_ms).await;
    let seen_before = match seen {
        Ok(Some(row)) => row.last_seen_ms,
        Ok(None) => {
            info!("refused: the device is revoked");
            state.metrics.refused("revoked");
            close(&connection, CloseCode::Revoked, &format!("this device of {user} has been revoked"));
            return;
        }
        Err(e) => {
            warn!(error = %e, "cannot record the device");
            close(&connection, CloseCode::Shutdown, &e.to_string());
            return;
        }
    };
    let Some((control_send, mut control_recv, receipts_after)) = open_control(&connection).await else {
        return;
    };
    drop(pending);
    // Checked before registering (so a refused connection pushes no one out) and again
    // after (so a reload of the PKI in between is seen by one side or the other).
    if !admitted(&state, &connection, &user, &serial) {
        return;
    }

    let (deliveries, deliveries_rx) = mpsc::channel(DELIVERY_QUEUE);
    let (replies, replies_rx) = mpsc::channel(REPLY_QUEUE);
    let (notices, notices_rx) = mpsc::channel(NOTICE_QUEUE);
    let flow = Arc::new(DeliveryFlow::default());
    let id = state.next_connection_id();
    let live = LiveConnection {
        id,
        connection: connection.clone(),
        device: caller.device.clone(),
        connected_ms: crate::store::now_ms(),
        serial: serial.clone(),
        deliveries,
        flow: flow.clone(),
        notices,
    };
    let registered = state.router.register(&user, live);
    if !admitted(&state, &connection, &user, &serial) {
        state.router.unregister(&user, id);
        return;
    }
    if let Some(old) = registered.evicted {
        info!(evicted = old.id, "a fifth connection takes the place of the oldest");
        let reason = format!(
            "another connection of {user} took this one's place (at most {} at once)",
            qchat_shared::limits::MAX_CONNECTIONS_PER_USER
        );
        close(&old.connection, CloseCode::Evicted, &reason);
    }
    info!(connection = id, "connected");
    state.metrics.connections.inc();
    if registered.came_online {
        state.tell_presence(&user, true).await;
    }
    let mut tasks = JoinSet::new();
    tasks.spawn(control::write_control(connection.clone(), control_send, replies_rx, notices_rx).in_current_span());
    let delivery = delivery::deliver(state.clone(), connection.clone(), caller.clone(), deliveries_rx, flow.clone());
    tasks.spawn(delivery.in_current_span());
    if greet(&state, &connection, &caller, receipts_after, &replies).await
        && replay_new_devices(&state, &caller, seen_before, &replies).await
    {
        tokio::select! {
            _ = accept_streams(&state, &connection, &caller) => {}
            _ = control::read_control(&state, &connection, &caller, &mut control_recv, &replies, &flow) => {}
        }
    }
    tasks.abort_all();
    // The control stream is gone: so is the session, even if file streams still hold the
    // connection.
    if connection.close_reason().is_none() {
        close(&connection, CloseCode::Normal, "the control stream ended");
    }
    if state.router.unregister(&user, id) {
        state.tell_presence(&user, false).await;
    }
    info!(connection = id, reason = %connection.close_reason().map(|r| r.to_string()).unwrap_or_default(), "disconnected");
}

/// Whether the connection may be served (a member, not revoked); closes it if not.
fn admitted(state: &RelayState, connection: &quinn::Connection, user: &str, serial: &[u8]) -> bool {
    match state.still_admitted(user, serial) {
        Ok(()) => true,
        Err((code, reason)) => {
            info!(?code, "refused: no longer admitted");
            state.metrics.refused("not_admitted");
            close(connection, code, &reason);
            false
        }
    }
}

/// Sends the welcome, then replays the receipts and offers a connection missed. Returns
/// false when the connection went meanwhile.
async fn greet(
    state: &RelayState,
    connection: &quinn::Connection,
    caller: &Caller,
    receipts_after: u64,
    replies: &mpsc::Sender<RelayControl>,
) -> bool {
    let user = caller.user.as_str();
    match state.status(caller).await {
        Ok(status) => {
            if replies.send(RelayControl::Welcome(status)).await.is_err() {
                return false;
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot read status");
            close(connection, CloseCode::Shutdown, &e.to_string());
            return false;
        }
    }
    if !control::replay_receipts(state, user, receipts_after, replies).await {
        return false;
    }
    let Some(rooms) = control::send_rooms(state, user, replies).await else { return false };
    match listing::replay_offers(state, caller, replies).await {
        Ok(()) => {
            for offer in state.arrivals.arriving_for(user, &rooms) {
                if replies.send(RelayControl::FileOffered(offer)).await.is_err() {
                    return false;
                }
            }
            true
        }
        Err(ListingError::Gone) => false,
        Err(e) => {
            warn!(error = %e, "cannot replay file offers");
            true
        }
    }
}

/// Tells a device that was here before of the devices (its person's, and of those who
/// share a room with them) that joined since it last connected, as `DeviceAdded`; false
/// when the connection went.
async fn replay_new_devices(
    state: &RelayState,
    caller: &Caller,
    seen_before: Option<i64>,
    replies: &mpsc::Sender<RelayControl>,
) -> bool {
    let Some(since) = seen_before else { return true };
    let others = state.others_of(&caller.user).await;
    let users = std::iter::once(caller.user.clone()).chain(others).collect();
    let rows = match state.store.devices_enrolled_since(users, since).await {
        Ok(rows) => rows,
        Err(e) => {
            warn!(error = %e, "cannot read the devices that joined");
            return true;
        }
    };
    for row in rows.iter().filter(|d| d.id != caller.device || d.user != caller.user) {
        let device = crate::devices::info(row, &caller.device);
        if replies.send(RelayControl::DeviceAdded { user: row.user.clone(), device }).await.is_err() {
            return false;
        }
    }
    true
}

/// Waits for the control stream and its `Hello`, within the first-frame deadline.
async fn open_control(connection: &quinn::Connection) -> Option<(quinn::SendStream, quinn::RecvStream, u64)> {
    let accepted = timeout(FIRST_FRAME_DEADLINE, connection.accept_bi()).await;
    let Ok(Ok((send, mut recv))) = accepted else {
        close(connection, CloseCode::Protocol, "no control stream in time");
        return None;
    };
    match timeout(FIRST_FRAME_DEADLINE, read_frame::<Open, _>(&mut recv)).await {
        Ok(Ok(Some(Open::Hello(hello)))) => {
            let _ = send.set_priority(CHAT_PRIORITY);
            Some((send, recv, hello.receipts_after))
        }
        other => {
            debug!(?other, "bad control stream opening");
            close(connection, CloseCode::Protocol, "the first stream must start with Hello");
            None
        }
    }
}

/// Accepts the chat streams a client opens, one task each.
async fn accept_streams(state: &Arc<RelayState>, connection: &quinn::Connection, caller: &Caller) {
    let mut turnstile = Turnstile::default();
    let windows = ConnectionWindows::new(connection.clone(), state.windows.clone());
    while let Ok((send, recv)) = connection.accept_bi().await {
        let (state, windows) = (state.clone(), windows.clone());
        let caller = caller.clone();
        tokio::spawn(handle_stream(state, caller, windows, send, recv, turnstile.ticket()).in_current_span());
    }
}

async fn handle_stream(
    state: Arc<RelayState>,
    caller: Caller,
    windows: Arc<ConnectionWindows>,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    ticket: Ticket,
) {
    // An upload reads out of order once it holds a slot (see `files::upload`).
    let mut recv = InOrder::new(recv, windows.budget().clone());
    let refuse = |send: &mut quinn::SendStream, recv: &mut InOrder, code: StreamCode| {
        let _ = send.reset(code.to_varint());
        let _ = recv.get_mut().stop(code.to_varint());
    };
    match timeout(FIRST_FRAME_DEADLINE, read_frame::<Open, _>(&mut recv)).await {
        Err(_) => {
            info!("a stream sent nothing in time; closing it");
            refuse(&mut send, &mut recv, StreamCode::Timeout);
        }
        Ok(Ok(Some(Open::Send(message)))) => {
            let _ = send.set_priority(CHAT_PRIORITY);
            state.know_direct_room(Some(&message.room)).await;
            ticket.wait().await;
            let stored = queue_message(&state, &caller, message);
            ticket.pass();
            let reply = stored.await;
            if write_frame(&mut send, &reply).await.is_ok() {
                let _ = send.finish();
            }
        }
        Ok(Ok(Some(Open::Upload(start)))) => {
            drop(ticket);
            crate::files::upload(state, caller, &windows, send, recv, start).await
        }
        Ok(Ok(Some(Open::Download(start)))) => {
            drop(ticket);
            crate::files::download(state, caller.user, &windows, send, start).await
        }
        Ok(Ok(Some(Open::Hello(_)))) => {
            warn!("a second control stream");
            refuse(&mut send, &mut recv, StreamCode::Malformed);
        }
        Ok(Ok(None)) => {}
        Ok(Err(ReadFrameError::Frame(FrameError::TooLarge(len)))) => {
            warn!(len, "oversized frame; closing that stream");
            refuse(&mut send, &mut recv, StreamCode::TooLarge);
        }
        Ok(Err(e)) => {
            warn!(error = %e, "malformed frame; closing that stream");
            refuse(&mut send, &mut recv, StreamCode::Malformed);
        }
    }
}

/// Checks a message and queues it in the store at once; the answer comes once it is durable.
fn queue_message(
    state: &RelayState,
    caller: &Caller,
    message: ChatSend,
) -> impl std::future::Future<Output = SendReply> + use<> {
    let checked = if message.sealed.is_empty() {
        Err("an empty message is not sent".to_string())
    } else if message.sealed.len() > MAX_SEALED {
        Err(format!("the message is {} bytes encrypted; the limit is {MAX_SEALED}", message.sealed.len()))
    } else {
        Ok(())
    };
    let id = message.id;
    let queued = checked.map(|()| {
        let limit = state.limits.max_waiting_message_bytes;
        let ChatSend { room, sealed, .. } = message;
        state.store.store_message(id, caller.key(), Some(&room), sealed, limit, state.users())
    });
    async move {
        match queued {
            Err(reason) => SendReply::Refused { reason },
            Ok(stored) => match stored.await {
                Ok(stored) => {
                    debug!(seq = stored.seq, fresh = stored.fresh, "stored");
                    let Stored { seq, room, room_seq, time_ms, .. } = stored;
                    SendReply::Stored { id, seq, room, room_seq, time_ms }
                }
                Err(e) => {
                    warn!(error = %e, "message not stored");
                    SendReply::Refused { reason: e.to_string() }
                }
            },
        }
    }
}
