//! Fetching one file from the relay on a stream of its own: into `<file id>.part`, resumed
//! from what that holds, hashed as written, renamed to its (sanitized, unique) name only
//! when the hash matches the sender's.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use qchat_shared::frame::{DownloadReply, DownloadStart, FileId, FileInfo, Open};
use qchat_shared::hash::hash_prefix;
use qchat_shared::io::{read_frame, write_frame};
use qchat_shared::names::{numbered, sanitize_file_name};
use qchat_shared::transfer::{self, Sink, TransferError};
use qchat_shared::transport::FILE_PRIORITY;

use crate::event::{Event, TransferId};
use crate::transfers::{Outcome, Throttle, TransferContext};

/// The partial file of a download, named by the file's id.
pub fn partial_path(out_dir: &Path, file_id: FileId) -> PathBuf {
    out_dir.join(format!("{file_id}.part"))
}

/// Opens (or creates) the partial file and hashes what it already holds.
fn open_partial(path: &Path, size: u64) -> std::io::Result<(File, blake3::Hasher, u64)> {
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    let mut held = file.metadata()?.len();
    if held > size {
        file.set_len(0)?;
        held = 0;
    }
    let hasher = hash_prefix(&mut file, held)?;
    file.seek(SeekFrom::Start(held))?;
    Ok((file, hasher, held))
}

/// Moves the verified partial file to a free name in `out_dir`, never over an existing
/// file (`name (1).ext` and so on).
fn place(out_dir: &Path, name: &str, partial: &Path) -> std::io::Result<PathBuf> {
    let name = sanitize_file_name(name);
    for n in 0..10_000 {
        let candidate = out_dir.join(if n == 0 { name.clone() } else { numbered(&name, n) });
        // Claim the name first, so two downloads never pick the same one.
        match OpenOptions::new().write(true).create_new(true).open(&candidate) {
            Ok(_) => {
                std::fs::rename(partial, &candidate)?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free name for the file"))
}

/// Downloads `offer` into `out_dir`; reports progress and the result as events.
pub async fn run(
    ctx: &TransferContext,
    connection: &quinn::Connection,
    transfer: TransferId,
    offer: FileInfo,
    out_dir: PathBuf,
) -> Outcome {
    let Ok(_permit) = ctx.permits.acquire().await else { return Outcome::Interrupted };
    match fetch(ctx, connection, transfer, &offer, &out_dir).await {
        Ok(outcome) => outcome,
        Err(reason) if connection.close_reason().is_none() => ctx.fail(transfer, Some(offer.file_id), reason),
        Err(_) => Outcome::Interrupted,
    }
}

async fn fetch(
    ctx: &TransferContext,
    connection: &quinn::Connection,
    transfer: TransferId,
    offer: &FileInfo,
    out_dir: &Path,
) -> Result<Outcome, String> {
    let file_id = offer.file_id;
    let partial = partial_path(out_dir, file_id);
    let (dir, part, size) = (out_dir.to_path_buf(), partial.clone(), offer.size);
    let opened = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        open_partial(&part, size)
    })
    .await
    .map_err(|e| e.to_string())?;
    let (file, hasher, offset) = match opened {
        Ok(opened) => opened,
        Err(e) => return Ok(ctx.fail(transfer, Some(file_id), format!("cannot write in {}: {e}", out_dir.display()))),
    };

    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    let _ = send.set_priority(FILE_PRIORITY);
    write_frame(&mut send, &Open::Download(DownloadStart { file_id, offset })).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    let info = match read_frame::<DownloadReply, _>(&mut recv).await {
        Ok(Some(DownloadReply::Ready(info))) => info,
        Ok(Some(DownloadReply::Refused { reason })) => return Ok(ctx.fail(transfer, Some(file_id), reason)),
        other => return Err(format!("unexpected answer from the relay: {other:?}")),
    };
    let Some(expected) = info.blake3 else {
        return Ok(ctx.fail(transfer, Some(file_id), "the relay offered a file without its hash".into()));
    };
    if offset > 0 {
        ctx.emit(Event::Resumed { transfer, file_id, offset });
    }

    let mut sink = Sink::start(file, hasher, offset, None, Some(&partial));
    let mut throttle = Throttle::new();
    let total = info.size;
    let progress = |done: u64| {
        if throttle.ready(offset + done, total) {
            ctx.emit(Event::Progress { transfer, file_id, done: offset + done, total });
        }
    };
    let received = transfer::receive(&mut recv, &mut sink, total - offset, progress).await;
    let finished = sink.finish().await;
    let disk_full = format!(
        "the disk is full where files are saved ({}); free some space and receive again: it resumes",
        out_dir.display()
    );
    match (received, finished) {
        (Err(TransferError::DiskFull), _) | (_, Err(TransferError::DiskFull)) => {
            Ok(ctx.fail(transfer, Some(file_id), disk_full))
        }
        (Err(TransferError::Stream(e)), _) => Err(e),
        (Err(e), _) | (Ok(()), Err(e)) => Ok(ctx.fail(transfer, Some(file_id), e.to_string())),
        (Ok(()), Ok((_, hasher))) => {
            if *hasher.finalize().as_bytes() != expected {
                let _ = tokio::fs::remove_file(&partial).await;
                let reason = format!(
                    "{} does not match its BLAKE3 hash (damaged on the relay or on the way); nothing was saved, \
                     receive it again",
                    info.name
                );
                return Ok(ctx.fail(transfer, Some(file_id), reason));
            }
            let (dir, name, part) = (out_dir.to_path_buf(), info.name.clone(), partial.clone());
            let placed = tokio::task::spawn_blocking(move || place(&dir, &name, &part)).await;
            match placed {
                Ok(Ok(path)) => Ok(Outcome::Saved { file_id, path, blake3: expected }),
                Ok(Err(e)) => Ok(ctx.fail(transfer, Some(file_id), format!("cannot save the file: {e}"))),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_name_gets_a_number_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"old").unwrap();
        let part = dir.path().join("x.part");
        std::fs::write(&part, b"new").unwrap();
        let placed = place(dir.path(), "a.txt", &part).unwrap();
        assert_eq!(placed, dir.path().join("a (1).txt"));
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"old");
        assert_eq!(std::fs::read(placed).unwrap(), b"new");
        std::fs::write(&part, b"evil").unwrap();
        let placed = place(dir.path(), "..\\..\\x", &part).unwrap();
        assert_eq!(placed.parent().unwrap(), dir.path());
    }

    #[test]
    fn a_partial_longer_than_the_file_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("p.part");
        std::fs::write(&part, b"0123456789").unwrap();
        let (_, hasher, held) = open_partial(&part, 4).unwrap();
        assert_eq!(held, 0);
        assert_eq!(hasher.finalize(), blake3::hash(b""));
        std::fs::write(&part, b"0123").unwrap();
        let (_, hasher, held) = open_partial(&part, 10).unwrap();
        assert_eq!((held, hasher.finalize()), (4, blake3::hash(b"0123")));
    }
}
