//! `--scp`: the same file copied by scp (AES-128-GCM) to an sshd of our own on 127.0.0.1,
//! the anchor the handoff is measured against (the classic scp protocol, `-O`: no sftp
//! server needed). Needs `sshd` (Debian: openssh-server).

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// An sshd that runs until dropped.
struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keygen(path: &Path) -> Result<()> {
    let status = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", ""]).arg("-f").arg(path).status()?;
    if !status.success() {
        bail!("ssh-keygen failed");
    }
    Ok(())
}

/// Makes the child started by `command` run on `cpu` alone.
#[cfg(target_os = "linux")]
fn pin_child(command: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure makes one system call and allocates nothing.
    unsafe {
        command.pre_exec(move || crate::pin::to_cpu(cpu));
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_child(_command: &mut Command, _cpu: usize) {}

/// Seconds scp takes to copy `file` into `dir` through a fresh loopback sshd (on core
/// `sshd_cpu` alone, if given).
pub fn time_scp(dir: &Path, file: &Path, sshd_cpu: Option<usize>) -> Result<f64> {
    let sshd_bin = ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("--scp needs sshd (apt-get install openssh-server)")?;
    std::fs::create_dir_all(dir)?;
    let (host_key, user_key) = (dir.join("host_key"), dir.join("user_key"));
    keygen(&host_key)?;
    keygen(&user_key)?;
    std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n",
            host_key.display(),
            dir.join("authorized_keys").display(),
            dir.join("sshd.pid").display()
        ),
    )?;
    // sshd wants its privilege-separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let mut command = Command::new(sshd_bin);
    command.arg("-D").arg("-f").arg(&config).stderr(Stdio::null());
    if let Some(cpu) = sshd_cpu {
        pin_child(&mut command, cpu);
    }
    let sshd = Sshd(command.spawn()?);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("sshd did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let dest = dir.join("copied.bin");
    let started = Instant::now();
    let status = Command::new("scp")
        .args(["-q", "-O", "-c", "aes128-gcm@openssh.com", "-P", &port.to_string(), "-i"])
        .arg(&user_key)
        .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
        .arg(file)
        .arg(format!("{user}@127.0.0.1:{}", dest.display()))
        .status()?;
    let seconds = started.elapsed().as_secs_f64();
    drop(sshd);
    if !status.success() {
        bail!("scp failed");
    }
    std::fs::remove_file(dest)?;
    Ok(seconds)
}
