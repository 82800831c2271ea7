//! The relay's Prometheus metrics (`--metrics 127.0.0.1:9108`): counters kept as things
//! happen, gauges read when scraped, served as OpenMetrics text at `/metrics` over plain
//! HTTP. Put it on a local address: it has no authentication.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::relay::RelayState;

/// Why a connection, a join or a request was refused (the `reason` label).
pub type Labels = Vec<(&'static str, &'static str)>;

/// What the relay counts as it runs.
pub struct Metrics {
    /// Connections that said `Hello` and were admitted.
    pub connections: Counter,
    /// Events stored in rooms: messages, changes of members, commits of keys.
    pub messages: Counter,
    /// Uploads and downloads started (label `kind`).
    pub transfers: Family<Labels, Counter>,
    /// Refusals, by `reason`.
    pub refusals: Family<Labels, Counter>,
    /// How long the store's group commits take, in seconds.
    pub store_commit: Histogram,
}

impl Metrics {
    /// Counters at zero, and the store's commit times.
    pub fn new(store_commit: Histogram) -> Metrics {
        Metrics {
            connections: Counter::default(),
            messages: Counter::default(),
            transfers: Family::default(),
            refusals: Family::default(),
            store_commit,
        }
    }

    /// Counts a refusal for `reason` (a fixed word, e.g. `revoked`).
    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// Counts a transfer started, `kind` being `upload` or `download`.
    pub fn transfer(&self, kind: &'static str) {
        self.transfers.get_or_create(&vec![("kind", kind)]).inc();
    }
}

/// The metrics as OpenMetrics text, with the gauges read now.
pub async fn scrape(state: &RelayState) -> String {
    let metrics = &state.metrics;
    let spool = state.spool.clone();
    let (spool_bytes, spool_files) = tokio::task::spawn_blocking(move || spool.usage()).await.unwrap_or_default();
    let mut registry = Registry::with_prefix("qchat");
    registry.register("connections", "Connections admitted (past Hello)", metrics.connections.clone());
    registry.register("connected", "Connections open now", ConstGauge::new(state.router.all().len() as i64));
    registry.register("messages", "Room events stored (messages, member and key changes)", metrics.messages.clone());
    registry.register(
        "file_bytes_in",
        "File bytes received from uploads",
        ConstCounter::new(state.stats.upload_bytes.load(Ordering::Relaxed)),
    );
    registry.register(
        "file_bytes_out",
        "File bytes sent to downloads",
        ConstCounter::new(state.stats.download_bytes.load(Ordering::Relaxed)),
    );
    registry.register("transfers", "File transfers started, by kind", metrics.transfers.clone());
    registry.register(
        "transfers_active",
        "File transfers served now",
        ConstGauge::new(state.transfers.in_use() as i64),
    );
    registry.register("refusals", "Connections, joins and requests refused, by reason", metrics.refusals.clone());
    registry.register("store_commit_seconds", "Time of one group commit of the store", metrics.store_commit.clone());
    registry.register("spool_bytes", "Bytes of file bodies in the spool", ConstGauge::new(spool_bytes as i64));
    registry.register("spool_files", "File bodies in the spool", ConstGauge::new(spool_files as i64));
    let mut text = String::new();
    let _ = encode(&mut text, &registry);
    text
}

/// Serves `/metrics` on `addr` until the task is aborted; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<RelayState>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    // A few scrapers at once; more wait in the kernel's backlog.
    let at_once = Arc::new(tokio::sync::Semaphore::new(8));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, say: wait rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = at_once.clone().acquire_owned().await else { return };
            let state = state.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &state)).await;
                drop(permit);
            });
        }
    });
    Ok((bound, task))
}

/// Reads one request's head (at most 8 KiB) and answers it: the metrics for `GET
/// /metrics`, 404 otherwise.
async fn answer(mut stream: tokio::net::TcpStream, state: &RelayState) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (status, kind, body) = if method == b"GET" && (path == b"/metrics" || path.starts_with(b"/metrics?")) {
        ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", scrape(state).await)
    } else {
        ("404 Not Found", "text/plain; charset=utf-8", "qchat serves /metrics only\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
