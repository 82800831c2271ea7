//! `--pin`: each party of a hop on a core of its own, to show what the same code does when
//! the parties do not share cores. The clients (this process) run on [`CLIENTS_CPU`], the
//! relay child on [`RELAY_CPU`]; raw QUIC's receiver and scp's sshd go on the relay's core,
//! so that each hop and its limit are split the same way. A handoff has three parties
//! (alice, the relay, bob): pinned, alice and bob share the clients' core.

use anyhow::{bail, Result};

/// The core of this process: the clients, raw QUIC's sender, scp.
pub const CLIENTS_CPU: usize = 0;
/// The core of the relay, raw QUIC's receiver and sshd.
pub const RELAY_CPU: usize = 1;

/// Fails unless this process may run on both cores `--pin` puts the parties on.
pub fn check() -> Result<()> {
    let allowed = allowed_cpus()?;
    if !allowed.contains(&CLIENTS_CPU) || !allowed.contains(&RELAY_CPU) {
        bail!("--pin needs CPUs {CLIENTS_CPU} and {RELAY_CPU}, and this process may use {allowed:?}");
    }
    Ok(())
}

/// The cores the calling thread may run on.
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is an empty set for sched_getaffinity to fill; CPU_ISSET
    // only reads it, below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok((0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> Result<Vec<usize>> {
    bail!("--pin is for Linux")
}

/// Pins the calling thread, and the threads it starts from now on, to `cpu`.
#[cfg(target_os = "linux")]
pub fn to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it, and
    // sched_setaffinity only reads it.
    let failed = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn to_cpu(_cpu: usize) -> std::io::Result<()> {
    Err(std::io::Error::other("--pin is for Linux"))
}

/// A runtime whose threads all run on `cpu`: raw QUIC's receiving end when pinned.
pub fn runtime_on(cpu: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(move || {
            if let Err(e) = to_cpu(cpu) {
                eprintln!("cannot pin a thread to CPU {cpu}: {e}");
            }
        })
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pinned_thread_runs_only_on_its_core() {
        if let Err(e) = check() {
            eprintln!("skipped: {e}");
            return;
        }
        std::thread::spawn(|| {
            to_cpu(RELAY_CPU).unwrap();
            assert_eq!(allowed_cpus().unwrap(), vec![RELAY_CPU]);
            // SAFETY: sched_getcpu takes nothing and only answers.
            assert_eq!(unsafe { libc::sched_getcpu() }, RELAY_CPU as i32);
        })
        .join()
        .unwrap();
    }
}
