//! The running relay's local socket, `DATA/relay.sock` (Unix only): `qchat-server status`
//! asks it who is connected now. The socket is 0600 in the 0700 data directory, so only
//! root and the relay's own user can open it; it reads nothing from its callers and
//! answers each with one JSON line.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::relay::RelayState;

/// What the running relay says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveReport {
    pub pid: u32,
    pub version: String,
    pub listen: String,
    pub started_ms: i64,
    /// File transfers being served now.
    pub transfers: usize,
    /// How long it keeps fetched files, and files nobody fetched (ms): what its sweep uses.
    pub retention_ms: u64,
    pub expiry_ms: u64,
    pub connections: Vec<LiveConnectionReport>,
}

/// One connection of a device, live now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveConnectionReport {
    pub user: String,
    pub device: String,
    /// The address it connects from, as the relay sees it.
    pub from: String,
    pub since_ms: i64,
}

/// Where the relay with data directory `data` listens for `status`.
pub fn socket_path(data: &Path) -> PathBuf {
    data.join("relay.sock")
}

/// What the relay says now.
pub fn report(state: &RelayState, listen: std::net::SocketAddr, started_ms: i64) -> LiveReport {
    let mut connections: Vec<LiveConnectionReport> = state
        .router
        .all()
        .into_iter()
        .map(|(user, live)| LiveConnectionReport {
            user,
            device: live.device.clone(),
            from: live.connection.remote_address().to_string(),
            since_ms: live.connected_ms,
        })
        .collect();
    connections.sort_by(|a, b| (&a.user, &a.device, a.since_ms).cmp(&(&b.user, &b.device, b.since_ms)));
    LiveReport {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        listen: listen.to_string(),
        started_ms,
        transfers: state.transfers.in_use(),
        retention_ms: state.limits.retention.as_millis() as u64,
        expiry_ms: state.limits.expiry.as_millis() as u64,
        connections,
    }
}

/// The bound socket, before the relay serves on it.
pub struct LocalSocket {
    #[cfg(unix)]
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl LocalSocket {
    /// Binds `path`. A socket left by a relay that died is replaced; one that a live relay
    /// answers on is an error: two relays must not share a data directory.
    #[cfg(unix)]
    pub fn bind(path: PathBuf) -> std::io::Result<LocalSocket> {
        use std::os::unix::fs::PermissionsExt;

        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another relay runs on this data directory (its socket answers)",
            ));
        }
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(LocalSocket { listener, path })
    }

    /// Without Unix sockets there is nothing to bind.
    #[cfg(not(unix))]
    pub fn bind(path: PathBuf) -> std::io::Result<LocalSocket> {
        Ok(LocalSocket { path })
    }

    /// Where it is (removed when the relay stops).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers every caller with the relay's report, until the task is aborted.
    #[cfg(unix)]
    pub fn serve(
        self,
        state: std::sync::Arc<RelayState>,
        listen: std::net::SocketAddr,
        started_ms: i64,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        use tokio::io::AsyncWriteExt;

        let listener = tokio::net::UnixListener::from_std(self.listener)?;
        Ok(tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    // Out of file descriptors, say: wait rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let mut line = serde_json::to_vec(&report(&state, listen, started_ms)).unwrap_or_default();
                line.push(b'\n');
                // A caller that does not read gets a second, then it is dropped.
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(&line)).await;
                });
            }
        }))
    }

    /// Without Unix sockets, nothing is served.
    #[cfg(not(unix))]
    pub fn serve(
        self,
        _state: std::sync::Arc<RelayState>,
        _listen: std::net::SocketAddr,
        _started_ms: i64,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        Ok(tokio::spawn(async {}))
    }
}

/// Asks the relay of data directory `data` for its report: `Ok(None)` when none runs.
#[cfg(unix)]
pub fn ask(data: &Path) -> anyhow::Result<Option<LiveReport>> {
    use anyhow::Context;
    use std::io::{BufRead, BufReader};

    let path = socket_path(data);
    let stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(e) => anyhow::bail!("cannot ask the running relay at {}: {e}", path.display()),
    };
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .with_context(|| format!("the relay at {} did not answer in 5 s", path.display()))?;
    Ok(Some(serde_json::from_str(&line).context("the running relay's answer")?))
}

/// Without Unix sockets, `status` cannot see the running relay's connections.
#[cfg(not(unix))]
pub fn ask(_data: &Path) -> anyhow::Result<Option<LiveReport>> {
    Ok(None)
}
