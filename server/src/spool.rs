//! File bodies: the [`BlobStore`] interface, and [`Spool`], its default on the relay's disk
//! (`data/spool/<file id>`, named by the id the relay gave, never by a name a client sent).
//! Blocking calls: run them off tokio's workers.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use qchat_shared::frame::FileId;
use qchat_shared::hash::hash_prefix;

/// Where file bodies live while the relay holds them. Uploads append to, and downloads
/// read from, a local file (the transfer code fsyncs it, and reads it as the writer
/// grows it); a backend on object storage would keep these as its local stage and move a
/// committed body out (and back on demand) behind the same calls.
pub trait BlobStore: Send + Sync {
    /// The local file of a body (for reading it as it grows, and for page-cache hints).
    fn path(&self, id: FileId) -> PathBuf;
    /// Opens an upload's body to append from `held` (cut back to it, its prefix hashed
    /// again); returns the bytes really held.
    fn open_for_append(&self, id: FileId, held: u64) -> io::Result<(File, blake3::Hasher, u64)>;
    /// Opens a body for reading from `offset`.
    fn open_for_read(&self, id: FileId, offset: u64) -> io::Result<File>;
    /// Removes a body; a missing one is fine.
    fn remove(&self, id: FileId) -> io::Result<()>;
    /// Removes every body not in `keep`; returns how many.
    fn remove_orphans(&self, keep: &HashSet<FileId>) -> io::Result<usize>;
    /// The bytes and the number of bodies held now.
    fn usage(&self) -> (u64, u64);
}

/// The bytes and the number of files in the spool directory `dir` (none if it is absent).
pub fn usage_of(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return (0, 0) };
    entries
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .filter(|meta| meta.is_file())
        .fold((0, 0), |(bytes, files), meta| (bytes + meta.len(), files + 1))
}

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Opens (creating) `dir`.
    pub fn open(dir: PathBuf) -> io::Result<Spool> {
        std::fs::create_dir_all(&dir)?;
        Ok(Spool { dir })
    }
}

impl BlobStore for Spool {
    fn path(&self, id: FileId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Opens an upload's file to append from `held`: anything past the last checkpoint (left
    /// by a crash or a cut connection) is cut off, and the prefix is hashed again. Returns the
    /// bytes really held, which is less than `held` only if the file lost bytes it had.
    fn open_for_append(&self, id: FileId, held: u64) -> io::Result<(File, blake3::Hasher, u64)> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(self.path(id))?;
        let held = held.min(file.metadata()?.len());
        file.set_len(held)?;
        let hasher = hash_prefix(&mut file, held)?;
        file.seek(SeekFrom::Start(held))?;
        Ok((file, hasher, held))
    }

    /// Opens a committed file for reading from `offset`.
    fn open_for_read(&self, id: FileId, offset: u64) -> io::Result<File> {
        let mut file = File::open(self.path(id))?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(file)
    }

    /// Removes a file's body; a missing one is fine.
    fn remove(&self, id: FileId) -> io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes every spool file that is not in `keep` (left by a crash between a sweep's
    /// commit and its deletions, or by anything else); returns how many.
    fn remove_orphans(&self, keep: &HashSet<FileId>) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let known = name.to_str().and_then(FileId::from_hex).is_some_and(|id| keep.contains(&id));
            if !known {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn usage(&self) -> (u64, u64) {
        usage_of(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn append_cuts_back_to_the_checkpoint_and_rehashes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path().join("spool")).unwrap();
        let id = FileId::random();
        let (mut file, _, _) = spool.open_for_append(id, 0).unwrap();
        file.write_all(b"hello world, and more after the checkpoint").unwrap();
        let (mut file, hasher, held) = spool.open_for_append(id, 5).unwrap();
        assert_eq!((hasher.finalize(), held), (blake3::hash(b"hello"), 5));
        file.write_all(b"!").unwrap();
        assert_eq!(std::fs::read(spool.path(id)).unwrap(), b"hello!");
        let (_, _, held) = spool.open_for_append(id, 100).unwrap();
        assert_eq!(held, 6, "never more than the file really holds");

        let stray = dir.path().join("spool").join("not-an-id");
        std::fs::write(&stray, b"x").unwrap();
        let keep: HashSet<_> = [id].into();
        assert_eq!(spool.remove_orphans(&keep).unwrap(), 1);
        assert!(spool.path(id).exists());
    }
}
