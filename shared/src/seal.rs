//! File bodies encrypted end to end: AES-256-GCM over fixed-size segments under a random
//! per-file key, in the manner of age's STREAM. A segment's nonce is its index with a flag
//! on the last one, so a relay that alters, drops, reorders, repeats or truncates segments
//! is caught. The plaintext's BLAKE3 rides in the last segment (nothing is hashed before
//! the first byte moves), and the recipient checks it before a file gets its name.
//!
//! The sealed stream is `data ‖ blake3(data)` cut into [`SEGMENT`]-byte pieces, each
//! followed by its 16-byte tag; the last piece is shorter or equal. Encryption is
//! deterministic for a key, so an upload resumes anywhere by sealing again.

use bytes::Bytes;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::chunk::{ChunkBuf, ChunkPool};
use crate::frame::Blake3;

/// Plaintext bytes per sealed segment: a chunk buffer less one O_DIRECT block, so a
/// segment and its tag fit one chunk and plaintext writes stay aligned.
pub const SEGMENT: usize = crate::limits::CHUNK - crate::chunk::ALIGN;

/// Bytes of each segment's authentication tag.
pub const TAG: usize = 16;

/// Bytes of a sealed segment that is not the last.
pub const SEALED_SEGMENT: usize = SEGMENT + TAG;

/// Bytes of the plaintext hash at the end of the stream.
const HASH: usize = 32;

/// A file's key: random, sent to the room's members inside an end-to-end encrypted offer.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileKey(pub [u8; 32]);

impl FileKey {
    pub fn random() -> FileKey {
        FileKey(rand::random())
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("a 32-byte AES-256 key"))
    }
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

/// Why sealed bytes did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("segment {0} of the file was altered, reordered or cut (it does not decrypt)")]
    Forged(u64),
    #[error("the file's bytes decrypted but their hash is not the sender's")]
    WrongHash,
    #[error("{0} sealed bytes cannot be a sealed file")]
    BadLength(u64),
}

/// How many segments a file of `plain` bytes seals into.
fn segments(plain: u64) -> u64 {
    (plain + HASH as u64).div_ceil(SEGMENT as u64)
}

/// Bytes of a sealed file of `plain` bytes.
pub fn sealed_len(plain: u64) -> u64 {
    plain + HASH as u64 + TAG as u64 * segments(plain)
}

/// The plaintext length of a sealed file of `sealed` bytes, if it can be one.
pub fn plain_len(sealed: u64) -> Result<u64, SealError> {
    let count = sealed.div_ceil(SEALED_SEGMENT as u64);
    sealed
        .checked_sub(count * TAG as u64 + HASH as u64)
        .filter(|plain| sealed_len(*plain) == sealed)
        .ok_or(SealError::BadLength(sealed))
}

/// Where plaintext from `held` bytes on can resume: the start of the segment holding it,
/// as (plaintext offset, sealed offset).
pub fn resume_point(held: u64) -> (u64, u64) {
    let index = held / SEGMENT as u64;
    (index * SEGMENT as u64, index * SEALED_SEGMENT as u64)
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&index.to_be_bytes());
    bytes[11] = u8::from(last);
    Nonce::assume_unique_for_key(bytes)
}

/// Seals a file's bytes as they are read: push the plaintext in order, take the sealed
/// segments out; [`Sealer::finish`] adds the hash and seals the last one. It hashes the
/// sealed bytes too (the relay checks that hash). Segments are sealed in place in chunk
/// buffers of the pool files are read into for sending ([`ChunkPool::for_sending`]), which
/// take them back once QUIC is done with them: sealing allocates nothing per segment.
pub struct Sealer {
    key: LessSafeKey,
    index: u64,
    pool: ChunkPool,
    /// The segment being filled, and how many plaintext bytes it holds.
    pending: ChunkBuf,
    filled: usize,
    plain_hash: blake3::Hasher,
    sealed_hash: blake3::Hasher,
}

impl Sealer {
    pub fn new(key: &FileKey) -> Sealer {
        let pool = ChunkPool::for_sending();
        Sealer {
            key: key.aead(),
            index: 0,
            pending: pool.take(SEGMENT),
            pool,
            filled: 0,
            plain_hash: blake3::Hasher::new(),
            sealed_hash: blake3::Hasher::new(),
        }
    }

    /// Takes the next plaintext bytes; returns the segments they complete (a segment is
    /// held back until more bytes show it is not the last).
    pub fn push(&mut self, data: &[u8]) -> Vec<Bytes> {
        self.plain_hash.update(data);
        let mut out = Vec::new();
        self.append(data, &mut out);
        out
    }

    /// Lets `read` put the next plaintext bytes (at most `max`) straight into the segment
    /// being filled, so they are not copied; returns how many it read and the segments
    /// completed before them.
    pub fn read_into(
        &mut self,
        max: usize,
        read: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<(usize, Vec<Bytes>)> {
        let mut out = Vec::new();
        if self.filled == SEGMENT {
            out.push(self.seal_pending(false));
        }
        let start = self.filled;
        let room = (SEGMENT - start).min(max);
        let got = read(&mut self.pending.as_mut_slice()[start..start + room])?.min(room);
        self.plain_hash.update(&self.pending.as_slice()[start..start + got]);
        self.filled += got;
        Ok((got, out))
    }

    /// Adds the plaintext's hash and seals what is left; returns those segments, the
    /// BLAKE3 of the whole sealed stream and that of the plaintext.
    pub fn finish(mut self) -> (Vec<Bytes>, Blake3, Blake3) {
        let hash = *self.plain_hash.finalize().as_bytes();
        let mut out = Vec::new();
        self.append(&hash, &mut out);
        out.push(self.seal_pending(true));
        (out, *self.sealed_hash.finalize().as_bytes(), hash)
    }

    /// Copies `data` into the pending segment, sealing each one it fills once more bytes
    /// follow.
    fn append(&mut self, mut data: &[u8], out: &mut Vec<Bytes>) {
        while !data.is_empty() {
            if self.filled == SEGMENT {
                out.push(self.seal_pending(false));
            }
            let take = data.len().min(SEGMENT - self.filled);
            self.pending.as_mut_slice()[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
        }
    }

    fn seal_pending(&mut self, last: bool) -> Bytes {
        // After the last segment nothing more is filled.
        let next = if last { ChunkBuf::placeholder() } else { self.pool.take(SEGMENT) };
        let mut segment = std::mem::replace(&mut self.pending, next);
        let filled = std::mem::take(&mut self.filled);
        segment.set_len(filled);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.index, last), Aad::empty(), segment.as_mut_slice())
            .expect("a segment is far below AES-GCM's limit");
        segment.set_len(filled + TAG);
        segment.as_mut_slice()[filled..].copy_from_slice(tag.as_ref());
        self.sealed_hash.update(segment.as_slice());
        self.index += 1;
        self.pool.share(segment)
    }
}

impl Drop for Sealer {
    /// A sealer dropped before its end (an upload cut or cancelled) gives its buffer back.
    fn drop(&mut self) {
        let pending = std::mem::replace(&mut self.pending, ChunkBuf::placeholder());
        self.pool.recycler().give_back(pending);
    }
}

/// Opens a sealed file segment by segment, in order, from any segment boundary on.
pub struct Opener {
    key: LessSafeKey,
    plain: u64,
    index: u64,
    count: u64,
    hash: Vec<u8>,
}

impl Opener {
    /// Opens a sealed file of `sealed` bytes from the segment that starts at plaintext
    /// byte `from` (a multiple of [`SEGMENT`], see [`resume_point`]).
    pub fn new(key: &FileKey, sealed: u64, from: u64) -> Result<Opener, SealError> {
        let plain = plain_len(sealed)?;
        Ok(Opener {
            key: key.aead(),
            plain,
            index: from / SEGMENT as u64,
            count: segments(plain),
            hash: Vec::with_capacity(HASH),
        })
    }

    /// The plaintext length of the file.
    pub fn plain_len(&self) -> u64 {
        self.plain
    }

    /// Bytes of the next sealed segment (zero once the last is open).
    pub fn next_len(&self) -> usize {
        match self.count.saturating_sub(self.index) {
            0 => 0,
            1 => (sealed_len(self.plain) - self.index * SEALED_SEGMENT as u64) as usize,
            _ => SEALED_SEGMENT,
        }
    }

    /// Opens the next segment in place; returns how many of its first bytes are the
    /// file's (the rest, if any, is the hash, which the opener keeps).
    pub fn open(&mut self, segment: &mut [u8]) -> Result<usize, SealError> {
        let index = self.index;
        let last = index + 1 == self.count;
        if index >= self.count || segment.len() != self.next_len() {
            return Err(SealError::Forged(index));
        }
        let opened =
            self.key.open_in_place(nonce(index, last), Aad::empty(), segment).map_err(|_| SealError::Forged(index))?;
        let start = index * SEGMENT as u64;
        let data = self.plain.saturating_sub(start).min(opened.len() as u64) as usize;
        self.hash.extend_from_slice(&opened[data..]);
        self.index += 1;
        Ok(data)
    }

    /// After the last segment: checks the plaintext's hash against the sender's.
    pub fn verify(&self, plain_hash: &Blake3) -> Result<(), SealError> {
        if self.index < self.count {
            return Err(SealError::Forged(self.index));
        }
        if self.hash.as_slice() == plain_hash {
            Ok(())
        } else {
            Err(SealError::WrongHash)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(key: &FileKey, data: &[u8], pieces: usize) -> (Vec<Vec<u8>>, Blake3) {
        let mut sealer = Sealer::new(key);
        let mut segments = Vec::new();
        for piece in data.chunks(pieces.max(1)) {
            segments.extend(sealer.push(piece).iter().map(|b| b.to_vec()));
        }
        let (tail, hash, plain) = sealer.finish();
        assert_eq!(&plain, blake3::hash(data).as_bytes());
        segments.extend(tail.iter().map(|b| b.to_vec()));
        (segments, hash)
    }

    fn open(key: &FileKey, segments: &[Vec<u8>]) -> Result<Vec<u8>, SealError> {
        let total: u64 = segments.iter().map(|s| s.len() as u64).sum();
        let mut opener = Opener::new(key, total, 0)?;
        let mut plain = Vec::new();
        for segment in segments {
            let mut segment = segment.clone();
            let data = opener.open(&mut segment)?;
            plain.extend_from_slice(&segment[..data]);
        }
        opener.verify(blake3::hash(&plain).as_bytes())?;
        Ok(plain)
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn every_boundary_size_round_trips_with_the_predicted_length() {
        let key = FileKey::random();
        let s = SEGMENT;
        for len in [0, 1, s - HASH - 1, s - HASH, s - HASH + 1, s - 1, s, s + 1, 2 * s - HASH, 2 * s + 7] {
            let data = content(len);
            for pieces in [len.max(1), 4096, 1_000_003] {
                let (segments, sealed_hash) = seal(&key, &data, pieces);
                let total: u64 = segments.iter().map(|s| s.len() as u64).sum();
                assert_eq!(total, sealed_len(len as u64), "length of {len}");
                assert_eq!(plain_len(total), Ok(len as u64));
                assert!(segments[..segments.len() - 1].iter().all(|s| s.len() == SEALED_SEGMENT));
                let stream: Vec<u8> = segments.concat();
                assert_eq!(&sealed_hash, blake3::hash(&stream).as_bytes());
                assert_eq!(open(&key, &segments).unwrap(), data, "content of {len}");
            }
        }
    }

    #[test]
    fn sealing_again_gives_the_same_bytes_so_a_resume_can_continue_anywhere() {
        let key = FileKey::random();
        let data = content(2 * SEGMENT + 5);
        assert_eq!(seal(&key, &data, 4096).0, seal(&key, &data, 1 << 20).0);
        let (segments, _) = seal(&key, &data, 4096);
        let total: u64 = segments.iter().map(|s| s.len() as u64).sum();
        let (plain_from, sealed_from) = resume_point(SEGMENT as u64 + 10);
        assert_eq!((plain_from, sealed_from), (SEGMENT as u64, SEALED_SEGMENT as u64));
        let mut opener = Opener::new(&key, total, plain_from).unwrap();
        let mut rest = Vec::new();
        for segment in &segments[1..] {
            let mut segment = segment.clone();
            let data = opener.open(&mut segment).unwrap();
            rest.extend_from_slice(&segment[..data]);
        }
        assert_eq!(rest, data[SEGMENT..]);
    }

    #[test]
    fn a_flipped_dropped_reordered_or_cut_segment_is_caught() {
        let key = FileKey::random();
        let data = content(3 * SEGMENT);
        let (segments, _) = seal(&key, &data, 1 << 20);
        assert_eq!(segments.len(), 4);

        let mut flipped = segments.clone();
        flipped[1][100] ^= 1;
        assert_eq!(open(&key, &flipped), Err(SealError::Forged(1)));

        let mut reordered = segments.clone();
        reordered.swap(0, 1);
        assert_eq!(open(&key, &reordered), Err(SealError::Forged(0)));

        // Cut after a whole segment: the one that would be last is not marked last.
        let mut opener = Opener::new(&key, 2 * SEALED_SEGMENT as u64, 0).unwrap();
        let mut first = segments[0].clone();
        assert!(opener.open(&mut first).is_ok());
        let mut second = segments[1].clone();
        assert_eq!(opener.open(&mut second), Err(SealError::Forged(1)));
        let dropped: Vec<Vec<u8>> = [&segments[..1], &segments[2..]].concat();
        assert!(open(&key, &dropped).is_err());

        let other = FileKey::random();
        assert_eq!(open(&other, &segments), Err(SealError::Forged(0)));
    }

    #[test]
    fn lengths_no_sealed_file_can_have_are_refused() {
        for bad in [0, 1, HASH as u64 + TAG as u64 - 1] {
            assert_eq!(plain_len(bad), Err(SealError::BadLength(bad)));
        }
        assert_eq!(plain_len((HASH + TAG) as u64), Ok(0));
        // One byte more than a full segment cannot start a new one (it needs its tag).
        assert!(plain_len(SEALED_SEGMENT as u64 + 1).is_err());
    }

    #[test]
    fn reading_straight_into_segments_seals_the_same_bytes_as_pushing() {
        let key = FileKey::random();
        let sizes = [0, 1, SEGMENT - 33, SEGMENT - 32, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 5];
        // How much a read may take, and how much of that the file gives at once (a short
        // read, as from a file still being written).
        let reads = [(1 << 20, usize::MAX), (SEGMENT - 1, usize::MAX), (4096, usize::MAX), (1 << 20, 1000), (1, 1)];
        for len in sizes {
            let data = content(len);
            let (pushed, pushed_hash) = seal(&key, &data, 1 << 20);
            for (max, gives) in reads {
                if max == 1 && len > SEGMENT {
                    continue; // a byte at a time through a megabyte says nothing new
                }
                let mut sealer = Sealer::new(&key);
                let (mut read, mut at) = (Vec::new(), 0);
                while at < data.len() {
                    let (got, segments) = sealer
                        .read_into(max, |buf| {
                            let n = buf.len().min(data.len() - at).min(gives);
                            buf[..n].copy_from_slice(&data[at..at + n]);
                            Ok(n)
                        })
                        .unwrap();
                    assert!(got > 0 && got <= max);
                    at += got;
                    read.extend(segments.iter().map(|b| b.to_vec()));
                }
                let (tail, hash, plain) = sealer.finish();
                read.extend(tail.iter().map(|b| b.to_vec()));
                assert_eq!((read, hash), (pushed.clone(), pushed_hash), "{len} bytes, reads of {max} giving {gives}");
                assert_eq!(&plain, blake3::hash(&data).as_bytes());
            }
        }
    }

    #[test]
    #[ignore = "a timing, run by hand (qchat-bench measures it too)"]
    fn sealing_and_opening_run_at_gigabytes_per_second() {
        let key = FileKey::random();
        let chunk = content(1 << 20);
        let started = std::time::Instant::now();
        let mut sealer = Sealer::new(&key);
        let mut segments = Vec::new();
        for _ in 0..512 {
            segments.extend(sealer.push(&chunk).iter().map(|b| b.to_vec()));
        }
        segments.extend(sealer.finish().0.iter().map(|b| b.to_vec()));
        let seal = started.elapsed();
        let total: u64 = segments.iter().map(|s| s.len() as u64).sum();
        let started = std::time::Instant::now();
        let mut opener = Opener::new(&key, total, 0).unwrap();
        for segment in &mut segments {
            opener.open(segment).unwrap();
        }
        let open = started.elapsed();
        let rate = |d: std::time::Duration| 512.0 / d.as_secs_f64();
        eprintln!("512 MiB: seal {:.0} MiB/s, open {:.0} MiB/s (one core)", rate(seal), rate(open));
    }
}
