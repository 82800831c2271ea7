//! The relay as a child process (this same executable in relay mode), so that its memory
//! can be measured on its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use qchat_server::{Relay, RelayConfig};
use tokio::io::AsyncBufReadExt;

/// Runs a relay until stdin closes; prints `listening on ADDR` first.
/// (`main` has set the allocator as the relay's binary does.)
pub async fn serve(pki: PathBuf, data: PathBuf) -> Result<()> {
    let relay = Relay::start(RelayConfig::new(pki, data, "127.0.0.1:0".parse()?)).await?;
    println!("listening on {}", relay.local_addr());
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = stdin.next_line().await {}
    relay.shutdown().await;
    Ok(())
}

/// A relay running in a child process.
pub struct RelayChild {
    child: Child,
    pub addr: SocketAddr,
}

impl RelayChild {
    /// Starts the relay child; with `cpu`, it runs on that core alone.
    pub async fn spawn(pki: &Path, data: &Path, cpu: Option<usize>) -> Result<RelayChild> {
        let mut command = Command::new(std::env::current_exe()?);
        if let Some(cpu) = cpu {
            command.arg("--cpu").arg(cpu.to_string());
        }
        let mut child = command
            .arg("--relay-mode")
            .arg("--pki")
            .arg(pki)
            .arg("--data")
            .arg(data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("relay stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
        })
        .await??;
        let addr = line.trim().strip_prefix("listening on ").context("relay did not start")?.parse()?;
        Ok(RelayChild { child, addr })
    }

    /// The relay's peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM")?;
        Ok(kib / 1024.0)
    }

    /// Starts the peak memory count again from what the relay holds now.
    pub fn reset_peak_rss(&self) -> Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").context("resetting VmHWM")
    }

    /// CPU seconds the relay has used so far (user + system).
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) of the process whose `/proc/.../stat` is at `path`.
pub fn cpu_seconds(path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(path)?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').context("odd stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields.get(11).context("utime")?.parse::<f64>()? + fields.get(12).context("stime")?.parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// UDP datagrams this machine dropped so far because a socket's receive buffer was full
/// (`RcvbufErrors` in `/proc/net/snmp`; 0 where that file does not exist).
pub fn udp_receive_buffer_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { return 0 };
    let column = names.split_whitespace().position(|n| n == "RcvbufErrors");
    column.and_then(|c| values.split_whitespace().nth(c)).and_then(|v| v.parse().ok()).unwrap_or(0)
}
