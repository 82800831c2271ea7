//! Test harness: a real relay on 127.0.0.1 with a throwaway PKI in a temp directory, and
//! real clients (the client core, or raw quinn connections that speak the protocol by
//! hand to misbehave), a lossy link ([`proxy`]), an emulated wide-area link ([`link`]),
//! and a relay that misbehaves ([`fake_relay`]).

pub mod fake_relay;
pub mod link;
pub mod proxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use qchat_client::{Client, ClientOptions, ConnectionState, Event, IncomingMessage};
use qchat_server::{Relay, RelayConfig, RelayLimits};
use qchat_shared::frame::{Hello, Open, Status};
use qchat_shared::identity::Identity;
use qchat_shared::io::write_frame;
use tokio::sync::mpsc::UnboundedReceiver;

/// How long a test waits for any one thing.
pub const WAIT: Duration = Duration::from_secs(20);

/// Logs to the test output when RUST_LOG is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
}

/// A relay on 127.0.0.1 with its own PKI (alice and bob) and data directory.
pub struct TestRelay {
    pub relay: Option<Relay>,
    pub limits: RelayLimits,
    pub addr: SocketAddr,
    pub pki: PathBuf,
    pub data: PathBuf,
    pub clients_dir: PathBuf,
    pub tmp: tempfile::TempDir,
}

impl TestRelay {
    /// Mints a PKI (alice, bob) and starts a relay on a free port.
    pub async fn start() -> Self {
        Self::start_with(RelayLimits::default()).await
    }

    /// Like [`TestRelay::start`] with chosen limits.
    pub async fn start_with(limits: RelayLimits) -> Self {
        Self::start_with_people(limits, &["alice", "bob"]).await
    }

    /// A relay whose PKI has identities (from `qchat-certs user`) for `people` only: with
    /// none, everyone comes in with invites.
    pub async fn start_with_people(limits: RelayLimits, people: &[&str]) -> Self {
        init_logging();
        // The relay's binary and the clients' set this as they start; the tests host both.
        qchat_shared::allocator::tune();
        let tmp = tempfile::tempdir().expect("temp dir");
        let pki = tmp.path().join("pki");
        qchat_certs::init(&pki, &["localhost".into(), "127.0.0.1".into()]).expect("init PKI");
        for name in people {
            qchat_certs::issue_user(&pki, name, "127.0.0.1:21567").expect("issue user");
        }
        let data = tmp.path().join("data");
        let relay = start_relay(&pki, &data, "127.0.0.1:0".parse().unwrap(), limits.clone()).await;
        TestRelay {
            limits,
            addr: relay.local_addr(),
            relay: Some(relay),
            clients_dir: tmp.path().join("clients"),
            pki,
            data,
            tmp,
        }
    }

    /// Stops the relay (as a clean shutdown).
    pub async fn stop(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.shutdown().await;
        }
    }

    /// Stops the relay and starts it again on the same data directory and port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.relay = Some(start_relay(&self.pki, &self.data, self.addr, self.limits.clone()).await);
    }

    /// The operator's invite for `name` (as `qchat-server invite NAME --server ADDR`), with
    /// the relay running.
    pub async fn invite(&self, name: &str, lifetime: Duration) -> String {
        let made = qchat_server::admin::make_invite(&self.dirs(), name, Some(self.addr.to_string()), lifetime).await;
        made.expect("an invite").invite.to_string()
    }

    /// Joins with an invite as a new device called `device`: its identity.
    /// (It publishes the device's key packages, as `qchat-cli join` does.)
    pub async fn join(&self, line: &str, device: &str) -> Identity {
        let identity = qchat_client::enroll::join(line, device).await.expect("joined").identity;
        qchat_client::enroll::publish_keys(self.client_options(identity.clone())).await.expect("keys published");
        identity
    }

    /// Issues another identity in this PKI.
    pub fn issue(&self, name: &str) -> Identity {
        let path = qchat_certs::issue_user(&self.pki, name, &self.addr.to_string()).expect("issue user");
        Identity::load(&path).expect("load identity")
    }

    pub fn identity(&self, name: &str) -> Identity {
        Identity::load(&self.pki.join(format!("{name}.qchat"))).expect("load identity")
    }

    /// A client for `name` that takes delivery of messages.
    pub fn client(&self, name: &str) -> TestClient {
        self.client_for(self.identity(name))
    }

    /// The running relay.
    pub fn relay(&self) -> &Relay {
        self.relay.as_ref().expect("the relay is running")
    }

    /// Serves the relay's metrics on a free local port; returns its address.
    pub async fn serve_metrics(&mut self) -> SocketAddr {
        let relay = self.relay.as_mut().expect("the relay is running");
        relay.serve_metrics("127.0.0.1:0".parse().unwrap()).await.expect("metrics served")
    }

    /// The relay's directories, as the operator's subcommands take them.
    pub fn dirs(&self) -> qchat_server::admin::Dirs {
        qchat_server::admin::Dirs { pki: self.pki.clone(), data: self.data.clone() }
    }

    /// Where a user's test client saves files.
    pub fn downloads(&self, name: &str) -> PathBuf {
        self.tmp.path().join("downloads").join(name)
    }

    /// A client for `name` that reaches the relay through `addr` (a proxy).
    pub fn client_via(&self, name: &str, addr: SocketAddr) -> TestClient {
        let mut client = self.client_options(self.identity(name));
        client.server = Some(addr.to_string());
        TestClient::start(client)
    }

    /// Options for a client of `identity` on this relay (downloads and state in the temp dir).
    pub fn client_options(&self, identity: Identity) -> ClientOptions {
        let mut options = ClientOptions::new(identity);
        options.download_dir = Some(self.downloads(&options.identity.user));
        options.server = Some(self.addr.to_string());
        options.data_dir = Some(self.clients_dir.clone());
        options
    }

    /// Clients for alice and bob, both connected.
    pub async fn pair(&self) -> (TestClient, TestClient) {
        let (mut alice, mut bob) = (self.client("alice"), self.client("bob"));
        alice.connected().await;
        bob.connected().await;
        (alice, bob)
    }

    /// A client for any identity, pointed at this relay.
    pub fn client_for(&self, identity: Identity) -> TestClient {
        TestClient::start(self.client_options(identity))
    }

    /// A raw QUIC connection for `name` with the control stream open (Hello sent).
    pub async fn raw(&self, name: &str) -> RawConnection {
        raw_connect(&self.identity(name), self.addr).await
    }
}

async fn start_relay(pki: &std::path::Path, data: &std::path::Path, listen: SocketAddr, limits: RelayLimits) -> Relay {
    let mut config = RelayConfig::new(pki.to_path_buf(), data.to_path_buf(), listen);
    config.limits = limits;
    // A port just released may take a moment to bind again.
    for _ in 0..50 {
        match Relay::start(config.clone()).await {
            Ok(relay) => return relay,
            Err(qchat_server::RelayError::Bind { .. }) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("relay failed to start: {e}"),
        }
    }
    panic!("could not bind {listen} again");
}

/// A client core and its events.
pub struct TestClient {
    pub client: Client,
    pub events: UnboundedReceiver<Event>,
    /// How long to wait for any one thing (longer over a lossy link).
    pub patience: Duration,
    /// Every acknowledgement the relay confirmed so far, whatever was being waited for.
    confirmed: std::collections::HashSet<u64>,
}

impl TestClient {
    pub fn start(options: ClientOptions) -> Self {
        let (client, events) = Client::start(options);
        TestClient { client, events, patience: WAIT, confirmed: Default::default() }
    }

    /// Waits for the next event that `pick` accepts.
    pub async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(Event) -> Option<T>) -> T {
        let confirmed = &mut self.confirmed;
        let events = &mut self.events;
        let found = tokio::time::timeout(self.patience, async {
            while let Some(event) = events.recv().await {
                if let Event::AckConfirmed { seqs } = &event {
                    confirmed.extend(seqs);
                }
                if let Some(found) = pick(event) {
                    return Some(found);
                }
            }
            None
        });
        match found.await {
            Ok(Some(found)) => found,
            Ok(None) => panic!("the client stopped before {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }

    /// Shuts the client down and waits until it has stopped (its events end), so that its
    /// files are no longer being written.
    pub async fn stop(mut self) {
        self.client.shutdown();
        let stopped = tokio::time::timeout(self.patience, async { while self.events.recv().await.is_some() {} });
        stopped.await.expect("the client stops after shutdown");
    }

    /// Waits until connected; panics if refused.
    pub async fn connected(&mut self) -> Status {
        self.expect("a connection", |e| match e {
            Event::Connection(ConnectionState::Connected(status)) => Some(status),
            Event::Connection(ConnectionState::Refused { reason }) => panic!("refused: {reason}"),
            _ => None,
        })
        .await
    }

    /// Waits for a refusal and returns its reason; panics if it connects.
    pub async fn refused(&mut self) -> String {
        self.expect("a refusal", |e| match e {
            Event::Connection(ConnectionState::Refused { reason }) => Some(reason),
            Event::Connection(ConnectionState::Connected(_)) => panic!("connected, expected a refusal"),
            _ => None,
        })
        .await
    }

    /// Waits until the relay has confirmed the acknowledgement of every one of `seqs`.
    pub async fn acks_confirmed(&mut self, seqs: impl IntoIterator<Item = u64>) {
        let mut waiting: std::collections::HashSet<u64> = seqs.into_iter().collect();
        waiting.retain(|seq| !self.confirmed.contains(seq));
        while !waiting.is_empty() {
            let confirmed = self
                .expect("ack confirmations", |e| match e {
                    Event::AckConfirmed { seqs } => Some(seqs),
                    _ => None,
                })
                .await;
            for seq in confirmed {
                waiting.remove(&seq);
            }
        }
    }

    /// Waits for an upload to be committed; panics if it fails.
    pub async fn uploaded(&mut self, transfer: qchat_client::TransferId) -> qchat_shared::frame::FileId {
        self.expect("an upload", |e| match e {
            Event::Uploaded { transfer: t, file_id, .. } if t == transfer => Some(file_id),
            Event::TransferFailed { transfer: t, reason, .. } if t == transfer => panic!("upload failed: {reason}"),
            _ => None,
        })
        .await
    }

    /// Waits for a transfer to fail and returns why.
    pub async fn refused_transfer(&mut self, transfer: qchat_client::TransferId) -> String {
        self.expect("a failed transfer", |e| match e {
            Event::TransferFailed { transfer: t, reason, .. } if t == transfer => Some(reason),
            _ => None,
        })
        .await
    }

    /// Waits for several uploads to be committed, in any order.
    pub async fn uploaded_all(&mut self, transfers: &[qchat_client::TransferId]) {
        let mut waiting: std::collections::HashSet<_> = transfers.iter().copied().collect();
        while !waiting.is_empty() {
            self.expect("uploads", |e| match e {
                Event::Uploaded { transfer, .. } => Some(waiting.remove(&transfer)),
                Event::TransferFailed { transfer, reason, .. } if waiting.contains(&transfer) => {
                    panic!("upload failed: {reason}")
                }
                _ => None,
            })
            .await;
        }
    }

    /// Runs `receive_all` and waits for every file to be saved or to fail; returns the saved
    /// paths and the failure reasons.
    pub async fn receive_all(&mut self) -> (Vec<PathBuf>, Vec<String>) {
        self.client.receive_all(None);
        let count = self
            .expect("the receive count", |e| match e {
                Event::Receiving { count } => Some(count),
                _ => None,
            })
            .await;
        let (mut saved, mut failed) = (Vec::new(), Vec::new());
        while saved.len() + failed.len() < count {
            let ended = self
                .expect("a download to end", |e| match e {
                    Event::FileSaved { path, .. } => Some(Ok(path)),
                    Event::TransferFailed { reason, .. } => Some(Err(reason)),
                    _ => None,
                })
                .await;
            match ended {
                Ok(path) => saved.push(path),
                Err(reason) => failed.push(reason),
            }
        }
        (saved, failed)
    }

    /// Asks for a change of rooms and waits for the answer: the room as it is after, or
    /// the refusal's reason.
    pub async fn room(&mut self, request: qchat_client::RoomRequest) -> Result<qchat_shared::frame::RoomInfo, String> {
        self.client.rooms(request);
        self.expect("an answer about rooms", |e| match e {
            Event::Room(room) => Some(Ok(room)),
            Event::RoomRefused { reason } => Some(Err(reason)),
            _ => None,
        })
        .await
    }

    /// Collects the next `n` messages.
    pub async fn messages(&mut self, n: usize) -> Vec<IncomingMessage> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let message = self
                .expect(&format!("message {} of {n}", out.len() + 1), |e| match e {
                    Event::Message(m) => Some(m),
                    _ => None,
                })
                .await;
            out.push(message);
        }
        out
    }
}

/// Writes a file of `size` bytes of varied content (not all zeros, not repeating).
pub fn write_file(path: &std::path::Path, size: u64) -> PathBuf {
    use std::io::Write;
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ size;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create test file"));
    let mut left = size;
    while left > 0 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        let n = left.min(8) as usize;
        out.write_all(&bytes[..n]).unwrap();
        left -= n as u64;
    }
    out.flush().unwrap();
    path.to_path_buf()
}

/// Asserts that two files hold the same bytes (without printing them when they differ).
pub fn same_content(a: &std::path::Path, b: &std::path::Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} and {} differ ({} vs {} bytes)", a.display(), b.display(), x.len(), y.len());
}

/// Waits until `counter` passes `at`, checking every millisecond.
pub async fn wait_for_bytes(counter: &std::sync::atomic::AtomicU64, at: u64) {
    tokio::time::timeout(WAIT, async {
        while counter.load(std::sync::atomic::Ordering::Relaxed) < at {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the transfer never got that far");
}

/// A QUIC connection that speaks the protocol by hand.
pub struct RawConnection {
    pub endpoint: quinn::Endpoint,
    pub connection: quinn::Connection,
    pub control: (quinn::SendStream, quinn::RecvStream),
}

/// Connects with `identity` and completes the handshake, saying nothing yet.
pub async fn raw_handshake(identity: &Identity, addr: SocketAddr) -> (quinn::Endpoint, quinn::Connection) {
    let config = qchat_client::connect::quic_config(identity).expect("client config");
    let endpoint = qchat_client::connect::endpoint_for(addr).expect("endpoint");
    let connection = endpoint.connect_with(config, addr, "localhost").expect("connect").await.expect("handshake");
    (endpoint, connection)
}

/// Connects with `identity` and opens the control stream.
pub async fn raw_connect(identity: &Identity, addr: SocketAddr) -> RawConnection {
    let (endpoint, connection) = raw_handshake(identity, addr).await;
    let (mut send, recv) = connection.open_bi().await.expect("control stream");
    write_frame(&mut send, &Open::Hello(Hello { receipts_after: 0 })).await.expect("hello");
    RawConnection { endpoint, connection, control: (send, recv) }
}
