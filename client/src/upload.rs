//! Sending one file to the relay on a stream of its own: resume where the relay stopped,
//! hash while sending, and let the relay check the hash before it commits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use qchat_shared::codes::StreamCode;
use qchat_shared::frame::{FileId, Open, UploadEnd, UploadReply, UploadStart};
use qchat_shared::io::{read_frame, write_frame};
use qchat_shared::seal::{sealed_len, FileKey, Sealer};
use qchat_shared::transfer::{self, Sealed, SendOptions, TransferError};
use qchat_shared::transport::FILE_PRIORITY;
use qchat_shared::window::{ConnectionWindows, Direction};

use crate::event::{Event, TransferId};
use crate::offer::FileOffer;
use crate::state::UploadRecord;
use crate::transfers::{Outcome, Throttle, TransferContext};

/// The local file's identity, for resuming: size and modification time.
struct Local {
    size: u64,
    modified_ms: i64,
    name: String,
}

fn inspect(path: &Path) -> Result<Local, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let modified_ms =
        meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as i64);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} has no file name", path.display()))?;
    Ok(Local { size: meta.len(), modified_ms, name })
}

/// Uploads `path` to `room` (the default room with none), offered as `name`; reports
/// progress and the result as events.
pub async fn run(
    ctx: &TransferContext,
    windows: &Arc<ConnectionWindows>,
    transfer: TransferId,
    (path, room, name): (PathBuf, Option<String>, String),
    cancelled: Arc<AtomicBool>,
) -> Outcome {
    let connection = windows.connection();
    let local = match inspect(&path) {
        Ok(local) if !name.is_empty() => Local { name, ..local },
        Ok(local) => local,
        Err(reason) => return ctx.fail(transfer, None, reason),
    };
    let Ok(_permit) = ctx.permits.acquire().await else { return Outcome::Interrupted };
    match send_file(ctx, windows, transfer, (&path, room), &local, cancelled).await {
        Ok(outcome) => outcome,
        Err((file_id, reason)) if connection.close_reason().is_none() => ctx.fail(transfer, file_id, reason),
        Err(_) => Outcome::Interrupted,
    }
}

type Failure = (Option<FileId>, String);

/// The upload's stream. If the user cancels the transfer (its task is dropped with
/// `cancelled` set), the stream is reset with [`StreamCode::Cancelled`] and the relay drops
/// what it holds, and a download following the upload fails at once. A cut connection or
/// a client that stops keeps the upload on the relay, for a resume.
struct UploadStream {
    send: quinn::SendStream,
    cancelled: Arc<AtomicBool>,
}

impl Drop for UploadStream {
    fn drop(&mut self) {
        if self.cancelled.load(Ordering::Acquire) {
            let _ = self.send.reset(StreamCode::Cancelled.to_varint());
        }
    }
}

async fn send_file(
    ctx: &TransferContext,
    windows: &Arc<ConnectionWindows>,
    transfer: TransferId,
    (path, room): (&Path, Option<String>),
    local: &Local,
    cancelled: Arc<AtomicBool>,
) -> Result<Outcome, Failure> {
    let fail = |file_id: Option<FileId>| move |e: String| (file_id, e);
    let (owned, size, modified_ms) = (path.to_path_buf(), local.size, local.modified_ms);
    let known = ctx.with_book(move |book| book.find(&owned, size, modified_ms)).await.flatten();
    let (resume, key) = match known {
        Some((file_id, key)) => (Some(file_id), key),
        None => (None, FileKey::random()),
    };
    let (send, mut recv) = windows.connection().open_bi().await.map_err(|e| (None, e.to_string()))?;
    let mut stream = UploadStream { send, cancelled };
    let send = &mut stream.send;
    let _ = send.set_priority(FILE_PRIORITY);
    let sealed_size = sealed_len(local.size);
    let start = UploadStart { room, size: sealed_size, resume };
    write_frame(send, &Open::Upload(start)).await.map_err(|e| (None, e.to_string()))?;
    let (file_id, offset, room) = match read_frame::<UploadReply, _>(&mut recv).await {
        Ok(Some(UploadReply::Ready { file_id, offset, room })) => (file_id, offset, room),
        Ok(Some(UploadReply::Refused { reason })) => {
            ctx.forget_upload(path).await;
            return Ok(ctx.fail(transfer, None, format!("the relay refused {}: {reason}", local.name)));
        }
        other => return Err((None, format!("unexpected answer from the relay: {other:?}"))),
    };
    let record = UploadRecord {
        path: path.to_path_buf(),
        size: local.size,
        modified_ms: local.modified_ms,
        file_id,
        key: key.clone(),
    };
    ctx.with_book(move |book| book.remember(record)).await;
    // Its name and key go to the room's members, sealed, while the bytes move.
    let offer = FileOffer { file_id, name: local.name.clone(), size: local.size, key: key.clone() };
    let (offer_stored, offer_answer) = tokio::sync::oneshot::channel();
    let _ = ctx.offers.send((room.clone(), offer, offer_stored));
    // Progress counts the file's own bytes (the relay counts sealed ones).
    let plain = |sealed: u64| (sealed as u128 * local.size as u128 / sealed_size.max(1) as u128) as u64;
    if offset > 0 {
        ctx.emit(Event::Resumed { transfer, file_id, offset: plain(offset) });
    }

    let owned = path.to_path_buf();
    let file = tokio::task::spawn_blocking(move || std::fs::File::open(owned))
        .await
        .map_err(|e| (Some(file_id), e.to_string()))?
        .map_err(|e| (Some(file_id), format!("cannot read {}: {e}", path.display())))?;
    let mut throttle = Throttle::new();
    let total = local.size;
    let tuner = windows.tune(Direction::Send);
    let progress = |done: u64| {
        if throttle.ready(offset + done, sealed_size) {
            ctx.emit(Event::Progress { transfer, file_id, done: plain(offset + done), total });
        }
    };
    // Sealed from the start (the relay's hash covers all of it), sent from the offset.
    let plain_hash = Arc::new(std::sync::OnceLock::new());
    let seal = Sealed { sealer: Sealer::new(&key), skip: offset, plain_hash: plain_hash.clone() };
    let options =
        SendOptions { seal: Some(seal), connection: Some(windows.connection().clone()), ..SendOptions::default() };
    let sent = transfer::send(send, file, total, options, progress).await;
    drop(tuner);
    let blake3 = match sent {
        Ok(Some(hash)) => hash,
        Ok(None) => return Err((Some(file_id), "no hash".into())),
        Err(TransferError::Stream(e)) => return Err((Some(file_id), e)),
        Err(e) => return Err((Some(file_id), format!("reading {}: {e}", path.display()))),
    };
    write_frame(send, &UploadEnd { blake3 }).await.map_err(|e| e.to_string()).map_err(fail(Some(file_id)))?;
    let _ = send.finish();
    match read_frame::<UploadReply, _>(&mut recv).await {
        Ok(Some(UploadReply::Committed { file_id, .. })) => {
            // Done once its offer is stored too: without it no one could open the file.
            match offer_answer.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    ctx.forget_upload(path).await;
                    return Ok(ctx.fail(
                        transfer,
                        Some(file_id),
                        format!("the file's encrypted offer was not sent: {e}"),
                    ));
                }
                Err(_) => return Err((Some(file_id), "the file's encrypted offer was not sent".into())),
            }
            ctx.forget_upload(path).await;
            // The file's own hash, as its recipients check it (the relay's is of the sealed
            // bytes).
            let blake3 = plain_hash.get().copied().unwrap_or_default();
            let (path, name, size) = (path.to_path_buf(), local.name.clone(), local.size);
            ctx.emit(Event::Uploaded { transfer, file_id, room, path, name, size, blake3 });
            Ok(Outcome::Uploaded)
        }
        Ok(Some(UploadReply::Refused { reason })) => {
            ctx.forget_upload(path).await;
            Ok(ctx.fail(transfer, Some(file_id), reason))
        }
        other => Err((Some(file_id), format!("the relay did not confirm the upload: {other:?}"))),
    }
}
