//! Fetching one file from the relay on a stream of its own: into `<file id>.part` in the
//! folder [`PARTIAL_DIR`] (where no offered name can reach, whatever its case), resumed from
//! what that holds, hashed as written, and renamed to its (sanitized, unique) name only
//! when the hash matches the sender's and every handle on it is closed (Windows refuses
//! to rename an open file on FAT and some network shares). Nothing the relay says is
//! trusted further than the offer: the size, the file and the hash must be the offered
//! ones, and no byte past the offered size is written.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qchat_shared::codes::StreamCode;
use qchat_shared::frame::{DownloadEnd, DownloadReply, DownloadStart, FileId, FileInfo, Open};
use qchat_shared::hash::hash_prefix;
use qchat_shared::in_order::InOrder;
use qchat_shared::io::{read_frame, write_frame, ReadFrameError};
use qchat_shared::names::{numbered, sanitize_file_name};
use qchat_shared::seal::{resume_point, Opener};
use qchat_shared::transfer::{self, Sink, SinkOptions, TransferError};
use qchat_shared::transport::FILE_PRIORITY;
use qchat_shared::window::{ConnectionWindows, Direction};

use crate::event::{Event, TransferId};
use crate::offer::{Cipher, Offer};
use crate::transfers::{Outcome, Throttle, TransferContext};

/// The folder inside the download folder that holds partial files. A saved name never
/// starts with a dot, so no offered file can be saved over it or into it.
pub const PARTIAL_DIR: &str = ".qchat-partial";

/// The partial file of a download, named by the file's id.
pub fn partial_path(out_dir: &Path, file_id: FileId) -> PathBuf {
    out_dir.join(PARTIAL_DIR).join(format!("{file_id}.part"))
}

/// Opens (or creates) the partial file and hashes what it already holds. With `segment`,
/// what it holds is cut back to a whole number of sealed segments (a resume fetches the
/// segment it was in again, whole, to open it).
fn open_partial(path: &Path, size: u64, sealed: bool) -> std::io::Result<(File, blake3::Hasher, u64)> {
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    let mut held = file.metadata()?.len();
    if held > size {
        held = 0;
    }
    if sealed {
        held = resume_point(held).0;
    }
    if held != file.metadata()?.len() {
        file.set_len(held)?;
    }
    let hasher = hash_prefix(&mut file, held)?;
    file.seek(SeekFrom::Start(held))?;
    Ok((file, hasher, held))
}

/// Where a file offered as `name` goes in `out_dir`: a name with `/` (a file sent with
/// its folder) in the same folders, without `.` and `..` parts, each part made safe as a
/// file name (no separators, no device names), at most [`MAX_FOLDERS`] deep; returns the
/// folder and the file's name.
pub fn destination(out_dir: &Path, name: &str) -> (PathBuf, String) {
    let kept = |p: &&str| !p.trim().is_empty() && !matches!(p.trim(), "." | "..");
    let mut parts: Vec<String> = name.split('/').filter(kept).map(sanitize_file_name).collect();
    let file = parts.pop().unwrap_or_else(|| sanitize_file_name(name));
    let folders = parts.len().min(MAX_FOLDERS);
    (parts[..folders].iter().fold(out_dir.to_path_buf(), |dir, part| dir.join(part)), file)
}

/// Folders a received file may be saved in, below the download folder.
pub const MAX_FOLDERS: usize = 16;

/// Moves the verified partial file to a free name in `out_dir` (in the folders its name
/// gives), never over an existing file (`name (1).ext` and so on).
fn place(out_dir: &Path, name: &str, partial: &Path) -> std::io::Result<PathBuf> {
    let (dir, name) = destination(out_dir, name);
    std::fs::create_dir_all(&dir)?;
    for n in 0..10_000 {
        let candidate = dir.join(if n == 0 { name.clone() } else { numbered(&name, n) });
        // Claim the name first, so two downloads never pick the same one; close the claim
        // before the rename.
        match OpenOptions::new().write(true).create_new(true).open(&candidate) {
            Ok(claim) => {
                drop(claim);
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
    windows: &Arc<ConnectionWindows>,
    transfer: TransferId,
    offer: Offer,
    out_dir: PathBuf,
) -> Outcome {
    let Ok(_permit) = ctx.permits.acquire().await else { return Outcome::Interrupted };
    let connection = windows.connection();
    match fetch(ctx, windows, transfer, &offer, &out_dir).await {
        Ok(outcome) => outcome,
        Err(reason) if connection.close_reason().is_none() => ctx.fail(transfer, Some(offer.file_id), reason),
        Err(_) => Outcome::Interrupted,
    }
}

async fn fetch(
    ctx: &TransferContext,
    windows: &Arc<ConnectionWindows>,
    transfer: TransferId,
    offer: &Offer,
    out_dir: &Path,
) -> Result<Outcome, String> {
    let file_id = offer.file_id;
    let key = match &offer.cipher {
        Cipher::Sealed(key) => Some(key.clone()),
        Cipher::Plain => None,
        Cipher::Unknown => {
            let reason = format!(
                "{} cannot be received on this device: its key was sent before this device was in the room's \
                 encryption group",
                offer.name
            );
            return Ok(ctx.fail(transfer, Some(file_id), reason));
        }
    };
    let partial = partial_path(out_dir, file_id);
    let (dir, part, size, sealed) = (out_dir.join(PARTIAL_DIR), partial.clone(), offer.size, key.is_some());
    let opened = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        open_partial(&part, size, sealed)
    })
    .await
    .map_err(|e| e.to_string())?;
    let (file, hasher, held) = match opened {
        Ok(opened) => opened,
        Err(e) => return Ok(ctx.fail(transfer, Some(file_id), format!("cannot write in {}: {e}", out_dir.display()))),
    };
    // Where the relay's bytes resume: the same place for a plain file, the segment's start
    // for a sealed one.
    let offset = if sealed { resume_point(held).1 } else { held };

    let (mut send, recv) = windows.connection().open_bi().await.map_err(|e| e.to_string())?;
    let mut recv = InOrder::new(recv, windows.budget().clone());
    recv.read_past_gaps();
    let _ = send.set_priority(FILE_PRIORITY);
    write_frame(&mut send, &Open::Download(DownloadStart { file_id, offset })).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    let info = match read_frame::<DownloadReply, _>(&mut recv).await {
        Ok(Some(DownloadReply::Ready(info))) => info,
        Ok(Some(DownloadReply::Refused { reason })) => return Ok(ctx.fail(transfer, Some(file_id), reason)),
        other => return Err(format!("unexpected answer from the relay: {other:?}")),
    };
    if let Err(reason) = matches_offer(&info, offer, offset) {
        return Ok(ctx.fail(transfer, Some(file_id), reason));
    }
    // A file still arriving comes as the relay writes it; its hash follows its bytes.
    let arriving = info.blake3.is_none();
    if held > 0 {
        ctx.emit(Event::Resumed { transfer, file_id, offset: held });
    }

    let mut sink = Sink::start(file, hasher, held, SinkOptions { path: Some(&partial), ..SinkOptions::default() });
    let mut throttle = Throttle::new();
    let total = offer.size;
    let stored = info.size;
    let tuner = windows.tune(Direction::Receive);
    // Progress counts the file's own bytes.
    let plain = |at: u64| if sealed { (at as u128 * total as u128 / stored.max(1) as u128) as u64 } else { at };
    let progress = |done: u64| {
        if throttle.ready(offset + done, stored) {
            ctx.emit(Event::Progress { transfer, file_id, done: plain(offset + done), total });
        }
    };
    let mut opener = match &key {
        Some(key) => match Opener::new(key, stored, held) {
            Ok(opener) => Some(opener),
            Err(e) => return Ok(ctx.fail(transfer, Some(file_id), format!("{}: {e}", offer.name))),
        },
        None => None,
    };
    let mut received = match opener.as_mut() {
        Some(opener) => transfer::receive_sealed(&mut recv, &mut sink, opener, None, progress).await,
        None => transfer::receive(&mut recv, &mut sink, stored - offset, None, progress).await,
    };
    drop(tuner);
    let mut expected = info.blake3;
    if arriving && received.is_ok() {
        match read_frame::<DownloadEnd, _>(&mut recv).await {
            Ok(Some(end)) => expected = Some(end.blake3),
            Ok(None) => received = Err(TransferError::Short { got: stored, expected: stored }),
            Err(e) => received = Err(reset_code(&e).map_or(TransferError::Stream(e.to_string()), TransferError::Reset)),
        }
    }
    let finished = sink.finish().await;
    let disk_full = format!(
        "the disk is full where files are saved ({}); free some space and receive again: it resumes",
        out_dir.display()
    );
    let name = &offer.name;
    let damaged = |why: String| {
        format!("{name} was altered on the relay or on the way ({why}); nothing was saved, receive it again")
    };
    match (received, finished) {
        (Err(TransferError::DiskFull), _) | (_, Err(TransferError::DiskFull)) => {
            Ok(ctx.fail(transfer, Some(file_id), disk_full))
        }
        (Err(TransferError::Reset(StreamCode::Withdrawn)), _) => {
            let _ = tokio::fs::remove_file(&partial).await;
            let reason = format!(
                "{name} will not arrive: its upload was cancelled, refused or expired before it was complete; nothing \
                 was saved"
            );
            Ok(ctx.fail(transfer, Some(file_id), reason))
        }
        (Err(TransferError::Sealed(e)), _) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Ok(ctx.fail(transfer, Some(file_id), damaged(e.to_string())))
        }
        (Err(TransferError::Stream(e)), _) => Err(e),
        (Err(e), _) | (Ok(()), Err(e)) => Ok(ctx.fail(transfer, Some(file_id), e.to_string())),
        (Ok(()), Ok((file, hasher))) => {
            drop(file);
            let hash = *hasher.finalize().as_bytes();
            let verified = match &opener {
                Some(opener) => opener.verify(&hash).map_err(|e| damaged(e.to_string())),
                None if Some(hash) == expected => Ok(()),
                None => Err(damaged("it does not match its BLAKE3 hash".into())),
            };
            if let Err(reason) = verified {
                let _ = tokio::fs::remove_file(&partial).await;
                return Ok(ctx.fail(transfer, Some(file_id), reason));
            }
            let (dir, name, part) = (out_dir.to_path_buf(), offer.name.clone(), partial.clone());
            let placed = tokio::task::spawn_blocking(move || place(&dir, &name, &part)).await;
            match placed {
                Ok(Ok(path)) => Ok(Outcome::Saved { file_id, path, blake3: hash }),
                Ok(Err(e)) => Ok(ctx.fail(transfer, Some(file_id), format!("cannot save the file: {e}"))),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// The code a stream was reset with, if that is why reading a frame failed.
fn reset_code(error: &ReadFrameError) -> Option<StreamCode> {
    let ReadFrameError::Io(io) = error else { return None };
    match io.get_ref()?.downcast_ref::<quinn::ReadError>()? {
        quinn::ReadError::Reset(code) => Some(StreamCode::from_varint(*code)),
        _ => None,
    }
}

/// Checks the relay's `Ready` against the offer it made and the partial file: another
/// file, another size or hash, or a size below what is already held is refused.
fn matches_offer(info: &FileInfo, offer: &Offer, offset: u64) -> Result<(), String> {
    if info.file_id != offer.file_id {
        return Err(format!("the relay answered with file {} for file {}", info.file_id, offer.file_id));
    }
    if info.size != offer.stored_size {
        return Err(format!(
            "the relay now says {} has {} bytes; it offered {}",
            offer.name, info.size, offer.stored_size
        ));
    }
    if offer.blake3.is_some() && info.blake3 != offer.blake3 {
        return Err(format!("the relay now gives {} another hash than it offered", offer.name));
    }
    if offset > info.size {
        return Err(format!("{} bytes are already here, more than the file's {}", offset, info.size));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(size: u64) -> FileInfo {
        FileInfo {
            file_id: FileId([1; 16]),
            room: "alice+bob".into(),
            plain_name: Some("a.bin".into()),
            size,
            from: "alice".into(),
            blake3: Some([2; 32]),
            time_ms: 0,
        }
    }

    #[test]
    fn a_file_sent_with_its_folder_lands_in_the_same_folders_and_never_outside() {
        let out = Path::new("/home/bob/Downloads/qchat");
        let at = |name: &str| {
            let (dir, file) = destination(out, name);
            dir.join(file)
        };
        assert_eq!(at("beach.jpg"), out.join("beach.jpg"));
        assert_eq!(at("holiday/day 2/beach.jpg"), out.join("holiday").join("day 2").join("beach.jpg"));
        for hostile in ["../../.ssh/authorized_keys", "/etc/passwd", "a/../../b", "..", "holiday/", "//x"] {
            let path = at(hostile);
            assert!(path.starts_with(out), "{hostile:?} went to {}", path.display());
            assert!(path.components().all(|c| c != std::path::Component::ParentDir), "{hostile:?}: {}", path.display());
            assert!(path != out, "{hostile:?} names a file");
        }
        assert_eq!(at("a\\..\\b.txt"), out.join("a___b.txt"), "a backslash is not a folder");
        let deep = (0..40).map(|i| format!("d{i}")).collect::<Vec<_>>().join("/") + "/f.txt";
        assert_eq!(at(&deep).strip_prefix(out).unwrap().components().count(), MAX_FOLDERS + 1);
    }

    #[test]
    fn the_relay_cannot_change_what_it_offered() {
        let offered = Offer::new(info(100), None);
        assert_eq!(matches_offer(&info(100), &offered, 0), Ok(()));
        assert_eq!(matches_offer(&info(100), &offered, 100), Ok(()));
        let bigger = FileInfo { size: 1 << 40, ..info(100) };
        assert!(matches_offer(&bigger, &offered, 0).unwrap_err().contains("offered 100"));
        let other = FileInfo { file_id: FileId([3; 16]), ..info(100) };
        assert!(matches_offer(&other, &offered, 0).is_err());
        let rehashed = FileInfo { blake3: Some([4; 32]), ..info(100) };
        assert!(matches_offer(&rehashed, &offered, 0).is_err());
        // A size below the resume offset would make the bytes left wrap around.
        let small = Offer::new(info(10), None);
        assert!(matches_offer(&info(10), &small, 11).unwrap_err().contains("more than"));
    }

    #[test]
    fn an_offered_name_cannot_reach_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let other = partial_path(dir.path(), FileId([7; 16]));
        std::fs::create_dir_all(other.parent().unwrap()).unwrap();
        std::fs::write(&other, b"another download, half done").unwrap();
        let mine = partial_path(dir.path(), FileId([8; 16]));
        std::fs::write(&mine, b"hostile").unwrap();
        for name in [
            format!("{}.part", FileId([7; 16])),
            format!("{}.PART", FileId([7; 16])).to_uppercase(),
            PARTIAL_DIR.into(),
        ] {
            std::fs::write(&mine, b"hostile").unwrap();
            let placed = place(dir.path(), &name, &mine).unwrap();
            assert_eq!(placed.parent().unwrap(), dir.path(), "{name}");
            assert_ne!(placed, other);
        }
        assert_eq!(std::fs::read(&other).unwrap(), b"another download, half done");
    }

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
        let (_, hasher, held) = open_partial(&part, 4, false).unwrap();
        assert_eq!(held, 0);
        assert_eq!(hasher.finalize(), blake3::hash(b""));
        std::fs::write(&part, b"0123").unwrap();
        let (_, hasher, held) = open_partial(&part, 10, false).unwrap();
        assert_eq!((held, hasher.finalize()), (4, blake3::hash(b"0123")));
        // A sealed file resumes at a segment's start: a part of one is fetched again.
        let (_, _, held) = open_partial(&part, 10, true).unwrap();
        assert_eq!(held, 0);
        assert_eq!(std::fs::metadata(&part).unwrap().len(), 0);
    }
}
