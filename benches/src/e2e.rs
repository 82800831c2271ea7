//! Two real qchat clients (alice and bob) through the relay child: file throughput,
//! chat latency, durable messages per second.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use qchat_client::{Client, ClientOptions, ConnectionState, Event};
use qchat_shared::identity::Identity;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::report::{mib_per_s, Latency};

/// Writes `size` bytes of varied content.
pub fn write_payload(path: &Path, size: u64) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

/// The room alice and bob share (the relay has other users too: it is named).
pub fn direct() -> Option<String> {
    Some(qchat_shared::names::direct_room("alice", "bob"))
}

/// One client and its events.
pub struct Peer {
    pub client: Client,
    events: UnboundedReceiver<Event>,
}

impl Peer {
    /// Starts a client of `identity` with its data in `dir`, and waits until it is connected.
    pub async fn start(identity: Identity, addr: SocketAddr, dir: &Path) -> Result<Peer> {
        let mut options = ClientOptions::new(identity);
        options.server = Some(addr.to_string());
        options.data_dir = Some(dir.join("clients"));
        options.download_dir = Some(dir.join(format!("downloads-{}", options.identity.user)));
        let (client, events) = Client::start(options);
        let mut peer = Peer { client, events };
        peer.until(|e| match e {
            Event::Connection(ConnectionState::Connected(_)) => Some(Ok(())),
            Event::Connection(ConnectionState::Refused { reason }) => Some(Err(reason)),
            _ => None,
        })
        .await?
        .map_err(anyhow::Error::msg)?;
        Ok(peer)
    }

    pub async fn until<T>(&mut self, mut pick: impl FnMut(Event) -> Option<T>) -> Result<T> {
        let wait = async {
            while let Some(event) = self.events.recv().await {
                if let Some(found) = pick(event) {
                    return Ok(found);
                }
            }
            bail!("the client stopped")
        };
        tokio::time::timeout(Duration::from_secs(600), wait).await.context("timed out")?
    }
}

impl Peer {
    /// Waits until the relay has committed the upload `transfer`.
    pub async fn uploaded(&mut self, transfer: qchat_client::TransferId) -> Result<()> {
        self.until(|e| match e {
            Event::Uploaded { transfer: t, .. } if t == transfer => Some(Ok(())),
            Event::TransferFailed { transfer: t, reason, .. } if t == transfer => Some(Err(reason)),
            _ => None,
        })
        .await?
        .map_err(anyhow::Error::msg)
    }

    /// Waits until a download is saved and verified; where it was saved.
    pub async fn saved(&mut self) -> Result<PathBuf> {
        self.until(|e| match e {
            Event::FileSaved { path, .. } => Some(Ok(path)),
            Event::TransferFailed { reason, .. } => Some(Err(reason)),
            _ => None,
        })
        .await?
        .map_err(anyhow::Error::msg)
    }

    /// The client and its events, to read them elsewhere.
    pub fn into_parts(self) -> (Client, UnboundedReceiver<Event>) {
        (self.client, self.events)
    }

    /// Shuts the client down and waits until it has closed its connection.
    pub async fn stop(mut self) {
        self.client.shutdown();
        let _ = self.until(|e| matches!(e, Event::Connection(ConnectionState::Closed)).then_some(())).await;
    }
}

/// The two clients.
pub struct E2e {
    alice: Peer,
    bob: Peer,
}

impl E2e {
    pub async fn connect(pki: &Path, addr: SocketAddr, dir: &Path) -> Result<E2e> {
        let alice = Peer::start(Identity::load(&pki.join("alice.qchat"))?, addr, dir).await?;
        let bob = Peer::start(Identity::load(&pki.join("bob.qchat"))?, addr, dir).await?;
        Ok(E2e { alice, bob })
    }

    /// MiB/s of an upload, from the first byte to the relay's verified commit.
    pub async fn upload(&mut self, file: &Path) -> Result<f64> {
        let size = std::fs::metadata(file)?.len();
        let start = Instant::now();
        let transfer = self.alice.client.send_file_to(direct(), file);
        self.alice.uploaded(transfer).await?;
        Ok(mib_per_s(size, start.elapsed()))
    }

    /// MiB/s of downloading everything offered, to verified and saved; and where it was
    /// saved.
    pub async fn download(&mut self, size: u64) -> Result<(f64, PathBuf)> {
        let start = Instant::now();
        self.bob.client.receive_all(None);
        let saved = self.bob.saved().await?;
        Ok((mib_per_s(size, start.elapsed()), saved))
    }

    /// One message from alice to bob, send to receipt at bob.
    async fn one_message(&mut self, text: String) -> Result<Duration> {
        let start = Instant::now();
        let id = self.alice.client.send_to(direct(), text);
        self.bob.until(|e| matches!(e, Event::Message(m) if m.id == id).then_some(())).await?;
        Ok(start.elapsed())
    }

    /// Latency of `n` messages one after the other, idle.
    pub async fn chat_latency(&mut self, n: usize) -> Result<Latency> {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            samples.push(self.one_message(format!("idle {i}")).await?);
        }
        Ok(Latency::from(samples))
    }

    /// Latency of messages alice sends while she uploads `file`: only samples sent before
    /// the upload ended count; at least `n` are taken (the upload is repeated if needed).
    pub async fn chat_latency_during_upload(&mut self, file: &Path, n: usize) -> Result<Latency> {
        let mut samples = Vec::with_capacity(n);
        while samples.len() < n {
            let transfer = self.alice.client.send_file_to(direct(), file);
            // Wait until bytes move, then chat until the upload is committed.
            self.alice
                .until(|e| matches!(e, Event::Progress { transfer: t, .. } if t == transfer).then_some(()))
                .await?;
            let mut batch = Vec::new();
            loop {
                let sent_at = Instant::now();
                let latency = self.one_message(format!("busy {}", samples.len() + batch.len())).await?;
                batch.push((sent_at, latency));
                if let Some(done_at) = self.upload_done(transfer)? {
                    samples.extend(batch.iter().filter(|(at, _)| *at < done_at).map(|(_, l)| *l));
                    break;
                }
            }
        }
        Ok(Latency::from(samples))
    }

    /// If the upload ended, when (as seen now: the events since the last look).
    fn upload_done(&mut self, transfer: qchat_client::TransferId) -> Result<Option<Instant>> {
        while let Ok(event) = self.alice.events.try_recv() {
            match event {
                Event::Uploaded { transfer: t, .. } if t == transfer => return Ok(Some(Instant::now())),
                Event::TransferFailed { transfer: t, reason, .. } if t == transfer => bail!("upload failed: {reason}"),
                _ => {}
            }
        }
        Ok(None)
    }

    /// Seconds from alice's `send_file` to bob's verified, saved file, bob already waiting
    /// for files as they are offered (the handoff, with cut-through).
    pub async fn handoff(&mut self, file: &Path) -> Result<f64> {
        // First what waits from the chat figures' uploads, so that only the handoff moves.
        self.bob.client.receive_all(None);
        let waiting = self.bob.until(|e| if let Event::Receiving { count } = e { Some(count) } else { None }).await?;
        for _ in 0..waiting {
            std::fs::remove_file(self.bob.saved().await?)?;
        }
        self.bob.client.receive_as_offered(None);
        // Let the request reach the relay's listing before the upload starts.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        self.alice.client.send_file_to(direct(), file);
        let saved = self.bob.saved().await?;
        let seconds = started.elapsed().as_secs_f64();
        std::fs::remove_file(saved)?;
        Ok(seconds)
    }

    /// Shuts both clients down and waits until each has saved its state and closed.
    pub async fn stop(self) {
        self.alice.stop().await;
        self.bob.stop().await;
    }

    /// Messages per second stored durably (until the last `Stored`), sent all at once.
    pub async fn messages_per_second(&mut self, n: usize) -> Result<f64> {
        let start = Instant::now();
        for i in 0..n {
            self.alice.client.send_to(direct(), format!("burst {i}"));
        }
        for _ in 0..n {
            self.alice
                .until(|e| match e {
                    Event::Stored { .. } => Some(Ok(())),
                    Event::SendFailed { reason, .. } => Some(Err(reason)),
                    _ => None,
                })
                .await?
                .map_err(|reason| anyhow::anyhow!("a message was not stored: {reason}"))?;
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    }
}
