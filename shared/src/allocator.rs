//! The allocator's settings for every qchat process: large buffers are mapped on their own,
//! cost memory only where they are touched, and go back to the system when freed.
//!
//! glibc serves an allocation above its mmap threshold (128 KiB at first) with a mapping of
//! its own, but once such a block is freed it raises the threshold to that block's size, so
//! later 1 MiB chunk buffers come from its per-thread arenas, where freed ones stay
//! resident. A fixed threshold keeps resident memory near what is really held: in
//! `qchat-bench --size 2G --rounds 1` the relay peaked at 44 MiB with it and 65 MiB without.
//! It matters for quinn's receive buffer too (13 MiB per endpoint for 6,500-byte datagrams,
//! of which a batch of reads touches at most 2 MiB: 32 reads of up to 64 KiB): from the heap it is zeroed, so all of it is
//! resident; mapped, only what datagrams were read into. The chunk pools keep the buffers
//! they reuse, so mapping is rare.

/// Allocations at least this large get a mapping of their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Applies the allocator settings (with glibc; elsewhere there is nothing to do). They hold
/// for the whole process, from the call on: call it as `main` starts, before any
/// endpoint is made.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets one of the allocator's parameters.
        let applied = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if applied != 1 {
            tracing::warn!("the allocator did not take its mmap threshold");
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// Freed 1 MiB blocks are unmapped at once, so the process's resident memory falls
    /// back; glibc's own dynamic threshold would keep them in the heap.
    #[test]
    fn a_freed_chunk_buffer_leaves_resident_memory() {
        super::tune();
        let resident = || -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        // Freed once, as glibc's dynamic threshold would take it.
        drop(vec![1u8; 1 << 20]);
        let before = resident();
        // 128 MiB, so that what other tests allocate meanwhile cannot hide the fall; a small
        // block kept after each, so that freed ones cannot merge into the heap's top and be
        // trimmed that way.
        let (blocks, kept): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
            (0..128).map(|i| (vec![i as u8 | 1; 1 << 20], vec![1u8; 64])).unzip();
        let held = resident();
        drop(blocks);
        let after = resident();
        assert!(held >= before + 100 * 1024, "128 MiB touched: {before} kB, then {held} kB");
        assert!(after + 100 * 1024 <= held, "128 MiB freed but still resident: {held} kB, then {after} kB");
        drop(kept);
    }
}
