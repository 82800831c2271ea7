//! BLAKE3 over files on disk (blocking: call from a blocking thread).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::frame::Blake3;

/// Hashes the first `len` bytes of `file` (from its start), leaving the position at `len`.
/// Fails if the file is shorter.
pub fn hash_prefix(file: &mut File, len: u64) -> io::Result<blake3::Hasher> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = blake3::Hasher::new();
    let copied = io::copy(&mut file.take(len), &mut hasher)?;
    if copied != len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("file holds {copied} of {len} bytes")));
    }
    Ok(hasher)
}

/// The BLAKE3 hash of a whole file.
pub fn hash_file(path: &Path) -> io::Result<Blake3> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path)?)?;
    Ok(*hasher.finalize().as_bytes())
}
