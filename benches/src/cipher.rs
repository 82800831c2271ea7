//! What end-to-end encryption costs a file on one core: sealing and opening 1 MiB chunks
//! in memory (AES-256-GCM segments, `qchat_shared::seal`), beside BLAKE3 over the same bytes.

use std::time::Instant;

use qchat_shared::seal::{FileKey, Opener, Sealer};

use crate::report::mib_per_s;

/// MiB/s of sealing, opening and hashing `bytes` on this thread.
pub struct CipherFigures {
    pub seal: f64,
    pub open: f64,
    pub blake3: f64,
}

/// Seals `bytes` of varied content, as a sender does (each segment given up once made, as
/// QUIC gives it back once acknowledged), opens them again (checking the hash), and hashes
/// them.
pub fn measure(bytes: usize) -> CipherFigures {
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let chunks = bytes.div_ceil(chunk.len()).max(1);
    let key = FileKey::random();

    let started = Instant::now();
    let mut sealer = Sealer::new(&key);
    for _ in 0..chunks {
        std::hint::black_box(sealer.push(&chunk));
    }
    std::hint::black_box(sealer.finish());
    let seal = mib_per_s((chunks * chunk.len()) as u64, started.elapsed());

    // The same bytes sealed again, kept this time, to be opened.
    let mut sealer = Sealer::new(&key);
    let mut sealed: Vec<Vec<u8>> = Vec::new();
    for _ in 0..chunks {
        sealed.extend(sealer.push(&chunk).iter().map(|segment| segment.to_vec()));
    }
    let (tail, _, plain_hash) = sealer.finish();
    sealed.extend(tail.iter().map(|segment| segment.to_vec()));
    let total: u64 = sealed.iter().map(|s| s.len() as u64).sum();
    let started = Instant::now();
    let mut opener = Opener::new(&key, total, 0).expect("a sealed length");
    let mut hasher = blake3::Hasher::new();
    for segment in &mut sealed {
        let data = opener.open(segment).expect("opens");
        hasher.update(&segment[..data]);
    }
    opener.verify(hasher.finalize().as_bytes()).expect("the hash matches");
    let open = mib_per_s((chunks * chunk.len()) as u64, started.elapsed());
    assert_eq!(hasher.finalize().as_bytes(), &plain_hash);

    let started = Instant::now();
    let mut hasher = blake3::Hasher::new();
    for _ in 0..chunks {
        hasher.update(&chunk);
    }
    std::hint::black_box(hasher.finalize());
    let blake3 = mib_per_s((chunks * chunk.len()) as u64, started.elapsed());
    CipherFigures { seal, open, blake3 }
}
