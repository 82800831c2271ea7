//! File bytes to and from disk around the page cache. On Linux the bulk goes through
//! O_DIRECT in aligned chunks: copying gigabytes through the page cache costs more CPU than
//! the rest of a transfer, and the relay does not read a file back soon. Reads land in the
//! buffer that is then sent, so a chunk is never copied on its way out. The unaligned head
//! and tail, and every other OS or file system, use ordinary reads and writes.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use crate::chunk::{ChunkBuf, ChunkPool, ALIGN};
use crate::limits::CHUNK;

/// Appends to a file that already holds `pos` bytes.
pub struct Appender {
    file: File,
    pos: u64,
    #[cfg(target_os = "linux")]
    direct: Option<linux::Direct>,
}

impl Appender {
    /// Appends through `file` (positioned at its end, `pos`); with `path` on Linux, the
    /// aligned bulk goes through a second, O_DIRECT descriptor of the same file.
    pub fn new(file: File, pos: u64, path: Option<&Path>) -> Appender {
        #[cfg(target_os = "linux")]
        let direct = path.and_then(linux::Direct::open);
        #[cfg(not(target_os = "linux"))]
        let _ = path;
        Appender {
            file,
            pos,
            #[cfg(target_os = "linux")]
            direct,
        }
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(direct) = self.direct.as_mut() {
            let result = direct.write(&self.file, self.pos, data);
            self.pos += data.len() as u64;
            return result;
        }
        self.file.write_all(data)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Appends a chunk; a whole, aligned one goes to disk straight from its buffer.
    pub fn write_chunk(&mut self, chunk: &ChunkBuf) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(direct) = self.direct.as_mut() {
            if chunk.len() == CHUNK && direct.write_whole(chunk.as_slice(), self.pos)? {
                self.pos += CHUNK as u64;
                return Ok(());
            }
        }
        self.write(chunk.as_slice())
    }

    /// Bytes of the file that are in it now (readable by another descriptor): all written
    /// but what waits in the aligned stage.
    pub fn on_disk(&self) -> u64 {
        #[cfg(target_os = "linux")]
        if let Some(direct) = &self.direct {
            return self.pos - direct.staged() as u64;
        }
        self.pos
    }

    /// Makes everything written so far durable except what waits in the aligned stage;
    /// returns the durable length.
    pub fn sync(&mut self) -> io::Result<u64> {
        self.file.sync_data()?;
        #[cfg(target_os = "linux")]
        if let Some(direct) = &self.direct {
            return Ok(self.pos - direct.staged() as u64);
        }
        Ok(self.pos)
    }

    /// Writes out what is staged and fsyncs; returns the file.
    pub fn finish(mut self) -> io::Result<File> {
        #[cfg(target_os = "linux")]
        if let Some(direct) = self.direct.take() {
            direct.flush_tail(&self.file, self.pos)?;
        }
        self.file.sync_all()?;
        Ok(self.file)
    }
}

/// Reads a file from its current position in chunks of at most [`CHUNK`] bytes.
pub struct ChunkReader {
    file: File,
    pos: u64,
    /// Chunks come back here once QUIC has sent them (the process's pool for sending).
    pool: ChunkPool,
    #[cfg(target_os = "linux")]
    direct: Option<File>,
}

impl ChunkReader {
    /// Reads `file` from `pos` (its current position); with `path` on Linux, aligned chunks
    /// are read through a second, O_DIRECT descriptor of the same file.
    pub fn new(file: File, pos: u64, path: Option<&Path>) -> ChunkReader {
        #[cfg(target_os = "linux")]
        let direct = path.and_then(linux::open_direct_read);
        #[cfg(not(target_os = "linux"))]
        let _ = path;
        ChunkReader {
            file,
            pos,
            pool: ChunkPool::for_sending(),
            #[cfg(target_os = "linux")]
            direct,
        }
    }

    /// The next chunk of at most `want` bytes (empty at the end of the file).
    pub fn read(&mut self, want: usize) -> io::Result<bytes::Bytes> {
        let want = want.min(CHUNK);
        #[cfg(target_os = "linux")]
        if let Some(direct) = &self.direct {
            if self.pos.is_multiple_of(ALIGN as u64) {
                let mut buf = self.pool.take(want.div_ceil(ALIGN) * ALIGN);
                match linux::read_direct(direct, self.pos, &mut buf) {
                    Ok(got) => {
                        buf.set_len(got.min(want));
                        self.pos += buf.len() as u64;
                        return Ok(self.pool.share(buf));
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                    Err(e) => return Err(e),
                }
            }
        }
        // Up to the next aligned offset (or all of it, without O_DIRECT).
        #[cfg(target_os = "linux")]
        let want = if self.direct.is_some() { want.min(ALIGN - (self.pos % ALIGN as u64) as usize) } else { want };
        let mut buf = self.pool.take(want);
        let got = self.read_into(buf.as_mut_slice())?;
        buf.set_len(got);
        Ok(self.pool.share(buf))
    }

    /// Reads the next bytes into `buf` (all of it, unless the file ends first); returns
    /// how many. Through the page cache: for a caller that has a buffer of its own.
    pub fn read_into(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = read_at_most(&self.file, self.pos, buf)?;
        self.pos += got as u64;
        Ok(got)
    }
}

/// Fills `buf` from `pos` unless the file ends first; returns the bytes read.
fn read_at_most(file: &File, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match read_at(file, pos + got as u64, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(unix)]
fn read_at(file: &File, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, pos)
}

#[cfg(windows)]
fn read_at(file: &File, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, pos)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    use std::path::Path;

    use super::{ChunkBuf, ALIGN, CHUNK};

    pub fn open_direct_read(path: &Path) -> Option<File> {
        OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).ok()
    }

    /// Fills `buf` (of an aligned length) from an aligned `pos` straight from the disk;
    /// returns the bytes read, fewer at the end of the file.
    pub fn read_direct(fd: &File, pos: u64, buf: &mut ChunkBuf) -> io::Result<usize> {
        let memory = buf.as_mut_slice();
        let mut got = 0;
        while got < memory.len() {
            let n = fd.read_at(&mut memory[got..], pos + got as u64)?;
            got += n;
            // A short read is the end of the file (and would leave the offset unaligned).
            if n == 0 || !n.is_multiple_of(ALIGN) {
                break;
            }
        }
        Ok(got)
    }

    /// The O_DIRECT side: an aligned stage of one chunk; its length is what waits in it.
    pub struct Direct {
        fd: File,
        stage: ChunkBuf,
    }

    impl Direct {
        pub fn open(path: &Path) -> Option<Direct> {
            let fd = OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok()?;
            Some(Direct { fd, stage: ChunkBuf::default() })
        }

        pub fn staged(&self) -> usize {
            self.stage.len()
        }

        /// Writes a whole aligned chunk at `pos` when nothing waits in the stage and `pos` is
        /// aligned; false when it cannot (the caller then uses [`Direct::write`]).
        pub fn write_whole(&mut self, chunk: &[u8], pos: u64) -> io::Result<bool> {
            if !self.stage.is_empty() || !pos.is_multiple_of(ALIGN as u64) {
                return Ok(false);
            }
            match self.fd.write_all_at(chunk, pos) {
                Ok(()) => Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
                Err(e) => Err(e),
            }
        }

        /// Appends `data` to a file whose length is `pos`.
        pub fn write(&mut self, file: &File, pos: u64, mut data: &[u8]) -> io::Result<()> {
            let mut pos = pos;
            // An unaligned end goes through the page cache until it is aligned.
            if self.stage.is_empty() && !pos.is_multiple_of(ALIGN as u64) {
                let n = (ALIGN - (pos % ALIGN as u64) as usize).min(data.len());
                file.write_all_at(&data[..n], pos)?;
                pos += n as u64;
                data = &data[n..];
            }
            while !data.is_empty() {
                let filled = self.stage.len();
                let n = (CHUNK - filled).min(data.len());
                self.stage.set_len(filled + n);
                self.stage.as_mut_slice()[filled..].copy_from_slice(&data[..n]);
                pos += n as u64;
                data = &data[n..];
                if self.stage.len() == CHUNK {
                    let stage_pos = pos - CHUNK as u64;
                    let stage = self.stage.as_slice();
                    if let Err(e) = self.fd.write_all_at(stage, stage_pos) {
                        // A file system without O_DIRECT: the page cache will do.
                        if e.raw_os_error() != Some(libc::EINVAL) {
                            return Err(e);
                        }
                        file.write_all_at(stage, stage_pos)?;
                    }
                    self.stage.set_len(0);
                }
            }
            Ok(())
        }

        /// Writes the last, partial stage through the page cache; `pos` is the length.
        pub fn flush_tail(self, file: &File, pos: u64) -> io::Result<()> {
            if !self.stage.is_empty() {
                file.write_all_at(self.stage.as_slice(), pos - self.stage.len() as u64)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn any_mix_of_offsets_and_sizes_lands_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        for (start, pieces) in
            [(0usize, vec![1usize, CHUNK - 1, CHUNK, 7]), (100, vec![CHUNK + 5, 3 * CHUNK]), (4096, vec![0, 10, CHUNK])]
        {
            let path = dir.path().join(format!("f{start}"));
            let head = pattern(start, 9);
            std::fs::write(&path, &head).unwrap();
            let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.seek(SeekFrom::End(0)).unwrap();
            let mut appender = Appender::new(file, start as u64, Some(&path));
            let mut expected = head.clone();
            for (i, len) in pieces.iter().enumerate() {
                let piece = pattern(*len, i as u8);
                appender.write(&piece).unwrap();
                expected.extend(piece);
            }
            assert!(appender.sync().unwrap() <= expected.len() as u64);
            appender.finish().unwrap();
            assert!(std::fs::read(&path).unwrap() == expected, "start {start}, pieces {pieces:?}");
        }
    }
}

#[cfg(test)]
mod reader_tests {
    use super::*;

    #[test]
    fn chunks_read_back_byte_for_byte_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3 * CHUNK + 1234).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        for start in [0usize, 1, 4095, 4096, CHUNK + 17] {
            let file = std::fs::File::open(&path).unwrap();
            let mut reader = ChunkReader::new(file, start as u64, Some(&path));
            let mut back = Vec::new();
            loop {
                let chunk = reader.read(CHUNK).unwrap();
                if chunk.is_empty() {
                    break;
                }
                assert!(chunk.len() <= CHUNK);
                back.extend_from_slice(&chunk);
            }
            assert!(back == data[start..], "from {start}");
        }
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::*;
    use std::io::{Seek, SeekFrom};

    fn chunk(seed: u8, len: usize) -> ChunkBuf {
        let mut buf = ChunkBuf::default();
        buf.set_len(len);
        for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(13).wrapping_add(seed);
        }
        buf
    }

    #[test]
    fn whole_chunks_and_pieces_interleave_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        for start in [0usize, 100, 4096] {
            let path = dir.path().join(format!("c{start}"));
            std::fs::write(&path, vec![7u8; start]).unwrap();
            let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.seek(SeekFrom::End(0)).unwrap();
            let mut appender = Appender::new(file, start as u64, Some(&path));
            let mut expected = vec![7u8; start];
            for (seed, len) in [(1u8, CHUNK), (2, CHUNK), (3, 10), (4, CHUNK), (5, CHUNK - 10), (6, CHUNK), (7, 3)] {
                let piece = chunk(seed, len);
                appender.write_chunk(&piece).unwrap();
                expected.extend_from_slice(piece.as_slice());
            }
            appender.finish().unwrap();
            assert!(std::fs::read(&path).unwrap() == expected, "start {start}");
        }
    }
}
