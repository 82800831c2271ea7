//! File streams on the relay: uploads into the spool (hashed as written, checkpointed,
//! verified before commit) and downloads out of it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use qchat_shared::codes::StreamCode;
use qchat_shared::frame::{
    DownloadEnd, DownloadReply, DownloadStart, FileInfo, FileState, RelayControl, UploadEnd, UploadReply, UploadStart,
};
use qchat_shared::in_order::InOrder;
use qchat_shared::io::{read_frame, write_frame};
use qchat_shared::limits::FIRST_FRAME_DEADLINE;
use qchat_shared::transfer::{self, Growing, SendOptions, Sink, SinkOptions, TransferError};
use qchat_shared::transport::FILE_PRIORITY;
use qchat_shared::window::{ConnectionWindows, Direction};
use tracing::{debug, info, warn};

use crate::arrivals::{Arrival, ArrivingFile, Following, Upload, RESUME_PATIENCE};
use crate::relay::RelayState;
use crate::store::UploadSlot;

/// The spool file is fsynced and its length checkpointed after every this many bytes.
const CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;
/// How often a running upload's durable length is written to the store.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// How an upload or download ended early.
enum Stop {
    /// Tell the client why.
    Refuse(String),
    /// The stream or connection is gone; nobody to tell.
    Gone,
}

const DISK_FULL: &str = "the relay's disk is full; nothing was kept. Ask the relay's owner to free space";

/// Serves one upload stream.
pub async fn upload(
    state: Arc<RelayState>,
    caller: crate::session::Caller,
    windows: &Arc<ConnectionWindows>,
    mut send: quinn::SendStream,
    mut recv: InOrder,
    start: UploadStart,
) {
    let _ = send.set_priority(FILE_PRIORITY);
    let reply = match receive_upload(&state, &caller, windows, &mut send, &mut recv, start).await {
        Ok(reply) => reply,
        Err(Stop::Refuse(reason)) => {
            info!(%reason, "upload refused");
            state.metrics.refused("upload");
            UploadReply::Refused { reason }
        }
        Err(Stop::Gone) => return,
    };
    if write_frame(&mut send, &reply).await.is_ok() {
        let _ = send.finish();
    }
}

async fn receive_upload(
    state: &Arc<RelayState>,
    caller: &crate::session::Caller,
    windows: &Arc<ConnectionWindows>,
    send: &mut quinn::SendStream,
    recv: &mut InOrder,
    start: UploadStart,
) -> Result<UploadReply, Stop> {
    if qchat_shared::seal::plain_len(start.size).is_err() {
        return Err(Stop::Refuse(format!("{} bytes cannot be a sealed file", start.size)));
    }
    let user = caller.user.as_str();
    let size = start.size;
    state.know_direct_room(start.room.as_deref()).await;
    let _slot = state.transfers.acquire(user).await.ok_or(Stop::Gone)?;
    recv.read_past_gaps();
    let limits = state.limits.upload_limits();
    let slot = state
        .store
        .start_upload(caller.key(), start.room.as_deref(), start.size, start.resume, limits, state.users())
        .await
        .map_err(|e| Stop::Refuse(e.to_string()))?;
    let audience = state.store.room_members(&slot.room).await.map_err(|e| Stop::Refuse(e.to_string()))?;
    let audience: Vec<String> = audience.into_iter().filter(|m| m != user).collect();
    let spool = state.spool.clone();
    let opened = tokio::task::spawn_blocking(move || spool.open_for_append(slot.file_id, slot.held)).await;
    let (file, hasher, held) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => return Err(drop_upload(state, slot, None, TransferError::from(e)).await),
        Err(e) => return Err(Stop::Refuse(format!("the relay failed: {e}"))),
    };
    info!(file = %slot.file_id, size = start.size, held, "upload");
    state.metrics.transfer("upload");
    let ready = UploadReply::Ready { file_id: slot.file_id, offset: held, room: slot.room.clone() };
    write_frame(send, &ready).await.map_err(|_| Stop::Gone)?;

    // Offered at once to the room's members, as arriving: a download can follow the upload.
    let offer = FileInfo {
        file_id: slot.file_id,
        room: slot.room.clone(),
        plain_name: None,
        size: start.size,
        from: user.to_string(),
        blake3: None,
        time_ms: slot.created_ms,
    };
    let arrival = state.arrivals.begin(&offer, held);
    for member in &audience {
        state.router.notify(member, RelayControl::FileOffered(offer.clone()));
    }
    let spool_path = state.spool.path(slot.file_id);
    let written = arrival.file.clone();
    let options = SinkOptions {
        sync_every: Some(CHECKPOINT_BYTES),
        path: Some(&spool_path),
        on_disk: Some(Box::new(move |on_disk| written.wrote(on_disk))),
    };
    let mut sink = Sink::start(file, hasher, held, options);
    let checkpoints =
        tokio::spawn(keep_checkpoints(state.clone(), slot.clone(), sink.durable.clone(), arrival.file.clone()));
    let mut counted = 0;
    let stall = Some(state.limits.stall_timeout);
    let tuner = windows.tune(Direction::Receive);
    let received = transfer::receive(recv, &mut sink, start.size - held, stall, |done| {
        state.stats.upload_bytes.fetch_add(done - counted, Ordering::Relaxed);
        counted = done;
    })
    .await;
    drop(tuner);
    checkpoints.abort();
    if let Err(e) = received {
        // Keep what arrived: fsync it and checkpoint it, so a resume need not send it again.
        let flushed = sink.finish().await;
        return Err(match (e, flushed) {
            (TransferError::DiskFull, _) | (_, Err(TransferError::DiskFull)) => {
                drop_upload(state, slot, Some(arrival), TransferError::DiskFull).await
            }
            (TransferError::Reset(StreamCode::Cancelled), _) => {
                info!(file = %slot.file_id, "upload cancelled by its sender");
                let _ = drop_upload(state, slot, Some(arrival), TransferError::Reset(StreamCode::Cancelled)).await;
                Stop::Gone
            }
            (e, Ok((file, _))) => {
                let durable = file.metadata().map(|m| m.len()).unwrap_or(held);
                let _ = state.store.checkpoint(slot.file_id, durable).await;
                debug!(error = %e, durable, "upload interrupted; kept for resume");
                match e {
                    TransferError::Short { got, expected } => {
                        Stop::Refuse(format!("the upload ended after {got} of {expected} bytes; resume it"))
                    }
                    TransferError::Stalled(limit) => {
                        info!(file = %slot.file_id, durable, "upload stalled; its slot is given back");
                        Stop::Refuse(format!(
                            "no bytes arrived for {} s, so the relay gave this upload's slot to others; what \
                             arrived is kept: send the file again to resume",
                            limit.as_secs()
                        ))
                    }
                    _ => Stop::Gone,
                }
            }
            (_, Err(e)) => Stop::Refuse(format!("the relay could not write the file: {e}")),
        });
    }
    let end = match tokio::time::timeout(FIRST_FRAME_DEADLINE, read_frame::<UploadEnd, _>(recv)).await {
        Ok(Ok(Some(end))) => end,
        _ => return Err(Stop::Refuse("the upload did not end with the file's hash".into())),
    };
    let (_, hasher) = match sink.finish().await {
        Ok(done) => done,
        Err(e) => return Err(drop_upload(state, slot, Some(arrival), e).await),
    };
    let blake3 = *hasher.finalize().as_bytes();
    if blake3 != end.blake3 {
        warn!(file = %slot.file_id, "hash mismatch; upload dropped");
        let mismatch = TransferError::Disk(std::io::Error::other("hash mismatch"));
        let _ = drop_upload(state, slot, Some(arrival), mismatch).await;
        return Err(Stop::Refuse(
            "the file's BLAKE3 hash does not match what arrived (it changed while it was sent, or was damaged \
             on the way); nothing was kept, send it again"
                .into(),
        ));
    }
    let (members, offer) = match state.store.commit_upload(slot.file_id, blake3, user).await {
        Ok(committed) => committed,
        Err(e) => {
            // The sender left the room meanwhile (or the store failed): nothing is offered.
            let reason = e.to_string();
            let _ = drop_upload(state, slot, Some(arrival), TransferError::Disk(std::io::Error::other(reason.clone())))
                .await;
            return Err(Stop::Refuse(reason));
        }
    };
    info!(file = %slot.file_id, size, room = %qchat_shared::display::Escaped(&slot.room), recipients = members.len(), "stored file");
    arrival.end(Arrival::Committed(blake3));
    for member in &members {
        state.router.notify(member, RelayControl::FileOffered(offer.clone()));
    }
    Ok(UploadReply::Committed { file_id: slot.file_id, blake3 })
}

/// Drops an upload that cannot go on (disk full, hash mismatch, cancelled), body and row;
/// downloads following it are told it will not be complete.
async fn drop_upload(state: &RelayState, slot: UploadSlot, arrival: Option<Upload>, error: TransferError) -> Stop {
    if let Some(arrival) = arrival {
        arrival.end(Arrival::Withdrawn(format!("the upload was dropped: {error}")));
    }
    let spool = state.spool.clone();
    let _ = tokio::task::spawn_blocking(move || spool.remove(slot.file_id)).await;
    let _ = state.store.drop_upload(slot.file_id).await;
    match error {
        TransferError::DiskFull => {
            warn!("disk full: upload dropped");
            Stop::Refuse(DISK_FULL.into())
        }
        e => Stop::Refuse(format!("the relay could not write the file: {e}")),
    }
}

/// Records the upload's durable length in the store as it grows, and tells the members it
/// is offered to how much has arrived.
async fn keep_checkpoints(
    state: Arc<RelayState>,
    slot: UploadSlot,
    durable: Arc<std::sync::atomic::AtomicU64>,
    arriving: Arc<ArrivingFile>,
) {
    let (mut last, mut told) = (slot.held, slot.held);
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    loop {
        tick.tick().await;
        let now = durable.load(Ordering::Acquire);
        if now > last && state.store.checkpoint(slot.file_id, now).await.is_ok() {
            last = now;
        }
        if let Some(held) = arriving.on_disk().filter(|&held| held > told) {
            // The room's members now: someone removed meanwhile hears no more.
            let members = state.store.room_members(&slot.room).await.unwrap_or_default();
            for member in members.iter().filter(|m| **m != arriving.info.from) {
                state.router.notify(member, RelayControl::FileArriving { file_id: slot.file_id, held });
            }
            told = held;
        }
    }
}

/// Serves one download stream.
pub async fn download(
    state: Arc<RelayState>,
    user: String,
    windows: &Arc<ConnectionWindows>,
    mut send: quinn::SendStream,
    start: DownloadStart,
) {
    let _ = send.set_priority(FILE_PRIORITY);
    if let Err(Stop::Refuse(reason)) = send_download(&state, &user, windows, &mut send, start).await {
        info!(%reason, "download refused");
        state.metrics.refused("download");
        if write_frame(&mut send, &DownloadReply::Refused { reason }).await.is_ok() {
            let _ = send.finish();
        }
    }
}

async fn send_download(
    state: &RelayState,
    user: &str,
    windows: &Arc<ConnectionWindows>,
    send: &mut quinn::SendStream,
    start: DownloadStart,
) -> Result<(), Stop> {
    let (info, following) = match file_to_send(state, user, start.file_id).await? {
        Some(found) => found,
        None => return Err(Stop::Refuse(format!("no file {} waits for you on this relay", start.file_id))),
    };
    if start.offset > info.size {
        return Err(Stop::Refuse(format!("the file has {} bytes, not {}", info.size, start.offset)));
    }
    let _slot = state.transfers.acquire(user).await.ok_or(Stop::Gone)?;
    let spool = state.spool.clone();
    let file = match tokio::task::spawn_blocking(move || spool.open_for_read(start.file_id, start.offset)).await {
        Ok(Ok(file)) => file,
        _ => return Err(Stop::Refuse("the relay cannot read that file any more".into())),
    };
    let len = info.size - start.offset;
    info!(file = %info.file_id, offset = start.offset, len, arriving = following.is_some(), "download");
    state.metrics.transfer("download");
    write_frame(send, &DownloadReply::Ready(info)).await.map_err(|_| Stop::Gone)?;
    let mut counted = 0;
    let spool_path = state.spool.path(start.file_id);
    let _tuner = windows.tune(Direction::Send);
    let growing =
        following.clone().map(|file| Box::new(Following { file, patience: RESUME_PATIENCE }) as Box<dyn Growing>);
    let options = SendOptions {
        path: Some(&spool_path),
        stall: Some(state.limits.stall_timeout),
        growing,
        hasher: None,
        seal: None,
        connection: Some(windows.connection().clone()),
    };
    let sent = transfer::send(send, file, len, options, |done| {
        state.stats.download_bytes.fetch_add(done - counted, Ordering::Relaxed);
        counted = done;
    })
    .await;
    let result = match (sent, &following) {
        (Ok(_), None) => Ok(()),
        // Every byte went out: the hash follows once the upload commits.
        (Ok(_), Some(arriving)) => {
            let arriving = arriving.clone();
            match tokio::task::spawn_blocking(move || arriving.wait_end(RESUME_PATIENCE)).await {
                Ok(Ok(blake3)) => write_frame(send, &DownloadEnd { blake3 }).await.map_err(|_| Stop::Gone),
                Ok(Err(reason)) => Err(withdrawn(send, &reason)),
                Err(_) => Err(Stop::Gone),
            }
        }
        (Err(TransferError::Disk(e)), Some(_)) => Err(withdrawn(send, &e.to_string())),
        (Err(e), _) => {
            if let TransferError::Stalled(_) = e {
                info!(file = %start.file_id, "download stalled; its slot is given back");
                let _ = send.reset(StreamCode::Timeout.to_varint());
            }
            debug!(error = %e, "download interrupted");
            Err(Stop::Gone)
        }
    };
    if let Some(arriving) = following {
        state.arrivals.release(arriving);
    }
    result?;
    let _ = send.finish();
    Ok(())
}

/// Tells a follower that the file will not be complete.
fn withdrawn(send: &mut quinn::SendStream, reason: &str) -> Stop {
    info!(%reason, "the upload a download followed was withdrawn");
    let _ = send.reset(StreamCode::Withdrawn.to_varint());
    Stop::Gone
}

/// The file `user` asks for: its offer, and, while it is still arriving, the arrival to
/// follow.
async fn file_to_send(
    state: &RelayState,
    user: &str,
    file_id: qchat_shared::frame::FileId,
) -> Result<Option<(FileInfo, Option<Arc<ArrivingFile>>)>, Stop> {
    let entry = match state.store.file_for(user, file_id).await {
        Ok(Some(entry)) => entry,
        Ok(None) => return Ok(None),
        Err(e) => return Err(Stop::Refuse(e.to_string())),
    };
    let FileState::Uploading { held } = entry.state else { return Ok(Some((entry.info, None))) };
    let (arriving, fresh) = state.arrivals.follow(&entry.info, held);
    if !fresh {
        return Ok(Some((entry.info, Some(arriving))));
    }
    // Nothing in memory: the upload is paused, or it committed (or went) just now.
    match state.store.file_for(user, file_id).await {
        Ok(Some(again)) if matches!(again.state, FileState::Uploading { .. }) => Ok(Some((again.info, Some(arriving)))),
        again => {
            state.arrivals.release(arriving);
            match again {
                Ok(found) => Ok(found.map(|entry| (entry.info, None))),
                Err(e) => Err(Stop::Refuse(e.to_string())),
            }
        }
    }
}
