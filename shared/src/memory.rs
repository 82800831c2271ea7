//! Process-wide allocator tuning for moving gigabytes. File chunks are 1 MiB buffers that
//! are freed on another thread once QUIC has sent them; by default glibc hands each such
//! buffer straight back to the kernel and maps fresh, zeroed pages for the next, so every
//! chunk costs hundreds of page faults. Keeping freed chunks in the heap avoids that.

/// Call once at the start of a program that moves files (a no-op off glibc).
pub fn keep_freed_chunks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 64 * 1024 * 1024;
        // SAFETY: mallopt only changes allocator parameters; it is called before the
        // program allocates file chunks, and its result is advice we may ignore.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
        }
    }
}
