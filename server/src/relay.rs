//! The relay: its QUIC endpoint, the accept loop, reloading the PKI (CRL and members)
//! while running, and a clean shutdown.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use qchat_certs::RelayMaterial;
use qchat_shared::codes::CloseCode;
use qchat_shared::display::Escaped;
use qchat_shared::frame::{Body, Member, RelayControl, RoomInfo, Status};
use qchat_shared::tls::{server_crypto, ServerTls};
use qchat_shared::window::WindowBudget;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use crate::arrivals::Arrivals;
use crate::router::Router;
use crate::session::Caller;
use crate::slots::{PendingConnections, TransferSlots};
use crate::spool::{BlobStore, Spool};
use crate::store::{self, Backend, RoomRow, StoreError, UploadLimits, Users};
use crate::{session, sweep};

/// How often the PKI directory is checked for a new CRL or new users.
const PKI_POLL: Duration = Duration::from_millis(500);
/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Where the relay finds its PKI, keeps its data, and listens.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub pki_dir: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub limits: RelayLimits,
}

impl RelayConfig {
    /// A configuration with the default limits.
    pub fn new(pki_dir: PathBuf, data_dir: PathBuf, listen: SocketAddr) -> Self {
        RelayConfig { pki_dir, data_dir, listen, limits: RelayLimits::default() }
    }
}

/// How much the relay takes and how long it keeps files.
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// The largest file accepted.
    pub max_file_size: u64,
    /// What one user's files on the relay may add up to.
    pub quota: u64,
    /// How long a fetched file is kept.
    pub retention: Duration,
    /// How long a file nobody fetched (or an unfinished upload) is kept.
    pub expiry: Duration,
    /// How often the sweep runs.
    pub sweep_every: Duration,
    /// File transfers served at once (more wait their turn).
    pub max_transfers: usize,
    /// File transfers one user may have served at once: their share of `max_transfers`.
    pub max_transfers_per_user: usize,
    /// A transfer that moves no bytes for this long gives its slot back (an upload keeps
    /// what arrived, for a resume).
    pub stall_timeout: Duration,
    /// Files of one sender on the relay not fetched yet (zero-byte ones count).
    pub max_waiting_files: u64,
    /// Bytes of one sender's messages waiting for someone offline.
    pub max_waiting_message_bytes: u64,
    /// How long a delivered message is kept.
    pub message_retention: Duration,
    /// How long an undelivered message is kept (its sender is told when it goes).
    pub message_expiry: Duration,
    /// Connections of one user past the handshake that have not said `Hello` yet.
    pub max_pending_per_user: usize,
    /// Connections in the handshake or before `Hello`, of everyone.
    pub max_pending: usize,
    /// Bytes the flow-control windows of all transfers together may grow to beyond each
    /// connection's base (see [`qchat_shared::window`]): what a far, fast path needs in
    /// flight, bounded.
    pub window_budget: u64,
    /// How long a device's certificate is valid (its client renews it in its last third).
    pub device_lifetime: Duration,
    /// How long an invite made by `devices link` can be used.
    pub invite_lifetime: Duration,
    /// Failed enrollments (a wrong or used invite) one address may make per minute.
    pub enroll_failures_per_minute: u32,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_file_size: 64 << 30,
            quota: 256 << 30,
            retention: 7 * DAY,
            expiry: 30 * DAY,
            sweep_every: Duration::from_secs(600),
            max_transfers: 16,
            max_transfers_per_user: 4,
            stall_timeout: Duration::from_secs(60),
            max_waiting_files: 10_000,
            max_waiting_message_bytes: 64 << 20,
            message_retention: 7 * DAY,
            message_expiry: 30 * DAY,
            max_pending_per_user: 8,
            max_pending: 256,
            window_budget: qchat_shared::window::DEFAULT_BUDGET,
            device_lifetime: 90 * DAY,
            invite_lifetime: DAY,
            enroll_failures_per_minute: 10,
        }
    }
}

impl RelayLimits {
    pub fn upload_limits(&self) -> UploadLimits {
        UploadLimits { max_file_size: self.max_file_size, quota: self.quota, max_waiting_files: self.max_waiting_files }
    }
}

/// Counters of what moved through the relay (tests read them to prove resumes send
/// nothing twice).
#[derive(Debug, Default)]
pub struct RelayStats {
    /// File bytes read from upload streams.
    pub upload_bytes: AtomicU64,
    /// File bytes written to download streams.
    pub download_bytes: AtomicU64,
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Pki(#[from] qchat_certs::CertsError),
    #[error("the PKI's certificates are unusable: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot create {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot open the operator's socket {path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
}

/// What every session shares.
pub struct RelayState {
    /// What the relay keeps (SQLite by default), behind the store's interfaces.
    pub store: Arc<dyn Backend>,
    pub router: Router,
    /// Where file bodies live (the local spool by default).
    pub spool: Arc<dyn BlobStore>,
    pub limits: RelayLimits,
    pub stats: RelayStats,
    /// What the relay counts for Prometheus.
    pub metrics: crate::metrics::Metrics,
    /// Bounds the file transfers served at once, in fair shares.
    pub transfers: TransferSlots,
    /// Connections that have not said `Hello` yet.
    pub pending: PendingConnections,
    /// Bounds the handshakes in progress together with `pending`.
    pub handshakes: Arc<Semaphore>,
    /// What the windows of every transfer together may grow to.
    pub windows: Arc<WindowBudget>,
    /// Uploads running now (and paused ones a download follows).
    pub arrivals: Arrivals,
    /// The PKI: the CA signs devices' certificates and revocations.
    pub pki_dir: PathBuf,
    /// Failed enrollments per address, to bound guessing.
    pub enroll_attempts: crate::attempts::FailedAttempts,
    /// Enrollments served at once, in all and per address.
    pub enrollments: Arc<Semaphore>,
    pub enrolling_from: crate::attempts::RunningAttempts,
    /// Held while an enrollment may add a person, from the check of the invite to the new
    /// user's admission.
    pub admitting: tokio::sync::Mutex<()>,
    users: RwLock<Users>,
    /// Serial numbers of revoked certificates, as the latest CRL says.
    revoked: RwLock<HashSet<Vec<u8>>>,
    next_id: AtomicU64,
}

impl RelayState {
    /// The relay's users, in the order the PKI issued them.
    pub fn users(&self) -> Users {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `user` is one of the relay's users.
    pub fn is_user(&self, user: &str) -> bool {
        self.users().iter().any(|u| u == user)
    }

    /// Whether `user` is one of the relay's users, reading the PKI's list again when not
    /// (someone issued a moment ago, before the watcher saw it, is not refused).
    pub async fn is_user_now(&self, user: &str) -> bool {
        if self.is_user(user) {
            return true;
        }
        let pki = qchat_certs::PkiDir::new(&self.pki_dir);
        match tokio::task::spawn_blocking(move || pki.users()).await {
            Ok(Ok(users)) if users.iter().any(|u| u == user) => {
                self.admit_user(user);
                true
            }
            _ => false,
        }
    }

    /// Makes sure the relay knows the two people of `room` if it names a direct room (one
    /// of them may have been issued a moment ago).
    pub async fn know_direct_room(&self, room: Option<&str>) {
        if let Some((a, b)) = room.and_then(qchat_shared::names::direct_pair) {
            for user in [a, b] {
                self.is_user_now(user).await;
            }
        }
    }

    /// Adds `user` to the users (a new person's first device enrolled).
    pub fn admit_user(&self, user: &str) {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        if !users.iter().any(|u| u == user) {
            Arc::make_mut(&mut users).push(user.to_string());
        }
    }

    /// Takes revoked certificates into account at once (the PKI's watcher would within a
    /// second) and closes their connections.
    pub fn revoke_now(&self, serials: &[Vec<u8>]) {
        self.revoked.write().unwrap_or_else(|p| p.into_inner()).extend(serials.iter().cloned());
        close_revoked(self);
    }

    /// Who hears of `user`: everyone who shares a room with them, and on a relay of two
    /// the other one (whose status names them as the peer) before they share one.
    pub async fn others_of(&self, user: &str) -> Vec<String> {
        let mut others = self.store.co_members(user).await.unwrap_or_else(|e| {
            warn!(error = %e, "cannot read who shares a room");
            Vec::new()
        });
        if let [a, b] = self.users().as_slice() {
            let peer = if a == user { b } else { a };
            if (a == user || b == user) && !others.contains(peer) {
                others.push(peer.clone());
            }
        }
        others
    }

    /// Tells those who hear of `user` that they came online or went offline.
    pub async fn tell_presence(&self, user: &str, online: bool) {
        for other in self.others_of(user).await {
            self.router.notify(&other, RelayControl::Presence { user: user.to_string(), online });
        }
    }

    /// Whether a connection with this certificate may still be served: its user is one of
    /// the relay's and the certificate is not revoked. Asked after a connection is registered,
    /// so that a reload of the PKI either sees the connection or is seen by this.
    pub fn still_admitted(&self, user: &str, serial: &[u8]) -> Result<(), (CloseCode, String)> {
        if self.revoked.read().unwrap_or_else(|p| p.into_inner()).contains(serial) {
            return Err((CloseCode::Revoked, revoked_reason(user)));
        }
        if !self.is_user(user) {
            return Err((CloseCode::NotAMember, "no longer one of this relay's users".into()));
        }
        Ok(())
    }

    pub fn next_connection_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The status a device sees.
    /// Reads the end-to-end keys issued with an identity from `qchat-certs user`.
    pub fn issued_keys(&self) -> crate::store::IssuedLookup {
        let pki = qchat_certs::PkiDir::new(&self.pki_dir);
        std::sync::Arc::new(move |user: &str| {
            let text = std::fs::read_to_string(pki.issued_keys(user)).ok()?;
            qchat_shared::identity::IssuedKeys::parse(&text)
        })
    }

    pub async fn status(&self, caller: &Caller) -> Result<Status, StoreError> {
        let user = caller.user.as_str();
        let users = self.users();
        let others: Vec<&String> = users.iter().filter(|u| *u != user).collect();
        let peer = match others.as_slice() {
            [only] => Some(only.to_string()),
            _ => None,
        };
        let (waiting_for_you, waiting_for_peer) = self.store.waiting(caller.key()).await?;
        let files_for_you = self.store.files_waiting(caller.key()).await?;
        let key_packages = self.store.key_packages_held(caller.key()).await?;
        Ok(Status {
            key_packages,
            files_for_you,
            user: user.to_string(),
            peer_online: peer.as_deref().is_some_and(|p| self.router.is_online(p)),
            peer,
            other_users: others.len() as u64,
            waiting_for_you,
            waiting_for_peer,
        })
    }

    /// Tells `newcomers` of a room who of its other `members` is online, and them of the
    /// newcomers who are: people who now share a room hear of each other as they would
    /// after a reconnect.
    pub fn introduce(&self, newcomers: &[String], members: &[String]) {
        let presence = |user: &String| RelayControl::Presence { user: user.clone(), online: true };
        for new in newcomers {
            for other in members.iter().filter(|m| *m != new) {
                if self.router.is_online(other) {
                    self.router.notify(new, presence(other));
                }
                if self.router.is_online(new) && !newcomers.contains(other) {
                    self.router.notify(other, presence(new));
                }
            }
        }
    }

    /// `user`'s rooms as they see them (who is online now included).
    pub async fn rooms_of(&self, user: &str) -> Result<Vec<RoomInfo>, StoreError> {
        Ok(self.store.rooms(user).await?.into_iter().map(|row| self.room_info(row)).collect())
    }

    /// A room as its members see it.
    pub fn room_info(&self, row: RoomRow) -> RoomInfo {
        let members =
            row.members.into_iter().map(|user| Member { online: self.router.is_online(&user), user }).collect();
        RoomInfo { name: row.name, direct: row.direct, creator: row.creator, members, last_seq: row.last_seq }
    }
}

/// A running relay.
pub struct Relay {
    endpoint: quinn::Endpoint,
    state: Arc<RelayState>,
    tasks: Vec<JoinHandle<()>>,
    store_thread: Option<std::thread::JoinHandle<()>>,
    /// The operator's socket, removed when the relay stops.
    socket_path: PathBuf,
}

fn quic_config(material: &RelayMaterial) -> Result<quinn::ServerConfig, RelayError> {
    let crypto = server_crypto(&ServerTls {
        cert_pem: &material.cert_pem,
        key_pem: &material.key_pem,
        ca_pem: &material.ca_pem,
        crl_pem: &material.crl_pem,
    })
    .map_err(|e| RelayError::Tls(e.to_string()))?;
    qchat_shared::transport::server_config(crypto).map_err(|e| RelayError::Tls(e.to_string()))
}

/// Binds the endpoint. Its stateless-reset key and connection-id key are derived from the
/// relay's private key, so a relay restarted after a crash recognises its old connection
/// ids and answers them with a reset their clients accept: they reconnect at once instead
/// of waiting out the idle timeout.
fn bind(
    server_config: quinn::ServerConfig,
    addr: SocketAddr,
    material: &RelayMaterial,
) -> Result<quinn::Endpoint, RelayError> {
    let secret = blake3::derive_key("qchat relay stateless reset key v1", material.key_pem.as_bytes());
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
    qchat_shared::transport::endpoint_settings(&mut endpoint_config);
    let cid_key =
        u64::from_le_bytes(blake3::derive_key("qchat relay cid key v1", &secret)[..8].try_into().expect("8 bytes"));
    endpoint_config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    let bind_error = |source| RelayError::Bind { addr, source };
    let socket = std::net::UdpSocket::bind(addr).map_err(bind_error)?;
    let runtime = quinn::default_runtime().ok_or_else(|| bind_error(std::io::Error::other("no async runtime")))?;
    quinn::Endpoint::new(endpoint_config, Some(server_config), socket, runtime).map_err(bind_error)
}

impl Relay {
    /// Opens the store, binds the endpoint and starts serving.
    pub async fn start(config: RelayConfig) -> Result<Relay, RelayError> {
        let material = RelayMaterial::load(&config.pki_dir)?;
        let server_config = quic_config(&material)?;
        make_private_dir(&config.data_dir)
            .map_err(|source| RelayError::DataDir { path: config.data_dir.clone(), source })?;
        let spool_dir = config.data_dir.join("spool");
        let spool = Spool::open(spool_dir.clone()).map_err(|source| RelayError::DataDir { path: spool_dir, source })?;
        let socket_path = crate::local::socket_path(&config.data_dir);
        let socket = match crate::local::LocalSocket::bind(socket_path.clone()) {
            Ok(socket) => Some(socket),
            Err(source) if source.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(RelayError::Socket { path: socket_path, source });
            }
            // Say, and serve: only `status` misses who is connected (a path too long for a
            // Unix socket, say).
            Err(e) => {
                warn!(path = %socket_path.display(), error = %e, "no local socket: status cannot see connections");
                None
            }
        };
        let (store, mut feed, store_thread) = store::open(&config.data_dir.join("relay.db"))?;
        let endpoint = bind(server_config, config.listen, &material)?;
        let metrics = crate::metrics::Metrics::new(store.commit_seconds());
        let state = Arc::new(RelayState {
            store: Arc::new(store),
            metrics,
            router: Router::default(),
            spool: Arc::new(spool),
            transfers: TransferSlots::new(config.limits.max_transfers, config.limits.max_transfers_per_user),
            pending: PendingConnections::new(config.limits.max_pending_per_user, config.limits.max_pending),
            handshakes: Arc::new(Semaphore::new(config.limits.max_pending)),
            windows: WindowBudget::new(config.limits.window_budget),
            arrivals: Arrivals::default(),
            pki_dir: config.pki_dir.clone(),
            enroll_attempts: crate::attempts::FailedAttempts::new(config.limits.enroll_failures_per_minute),
            enrollments: Arc::new(Semaphore::new(crate::enroll::AT_ONCE)),
            enrolling_from: Default::default(),
            admitting: tokio::sync::Mutex::new(()),
            revoked: RwLock::new(revoked_serials(&material)),
            limits: config.limits.clone(),
            stats: RelayStats::default(),
            users: RwLock::new(Arc::new(material.users.clone())),
            next_id: AtomicU64::new(1),
        });
        let listen = endpoint.local_addr().map_err(|source| RelayError::Bind { addr: config.listen, source })?;
        info!(addr = %listen, users = material.users.len(), "relay listening");
        let mut tasks = Vec::new();
        if let Some(socket) = socket {
            let served = socket.serve(state.clone(), listen, crate::store::now_ms());
            tasks.push(served.map_err(|source| RelayError::Socket { path: socket_path.clone(), source })?);
        }

        let router_state = state.clone();
        let route = tokio::spawn(async move {
            while let Some(message) = feed.recv().await {
                match &message.body {
                    Body::Created { members } => router_state.introduce(members, members),
                    Body::Added { user } => router_state.introduce(std::slice::from_ref(user), &message.audience),
                    _ => {}
                }
                router_state.metrics.messages.inc();
                router_state.router.deliver(message);
            }
        });
        sweep::remove_orphans(&state).await;
        let sweeper = tokio::spawn(sweep::run(state.clone()));
        let accept = tokio::spawn(accept_loop(endpoint.clone(), state.clone()));
        let watch = tokio::spawn(watch_pki(endpoint.clone(), state.clone(), config.pki_dir.clone(), material));
        tasks.extend([route, sweeper, accept, watch]);
        Ok(Relay { endpoint, state, tasks, store_thread: Some(store_thread), socket_path })
    }

    /// The address the relay listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("a bound endpoint has an address")
    }

    /// Uploads arriving now (and paused ones a download follows).
    pub fn arrivals(&self) -> &crate::arrivals::Arrivals {
        &self.state.arrivals
    }

    /// What moved through the relay so far.
    pub fn stats(&self) -> &RelayStats {
        &self.state.stats
    }

    /// Serves Prometheus metrics at `http://ADDR/metrics` while the relay runs; returns
    /// the bound address.
    pub async fn serve_metrics(&mut self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let (bound, task) = crate::metrics::serve(addr, self.state.clone()).await?;
        self.tasks.push(task);
        info!(%bound, "serving metrics");
        Ok(bound)
    }

    /// Sweeps expired files now; returns how many went.
    pub async fn sweep_now(&self) -> usize {
        sweep::sweep_once(&self.state).await
    }

    /// Closes every live connection of `user` (they reconnect by themselves).
    pub fn disconnect(&self, user: &str) {
        for (name, live) in self.state.router.all() {
            if name == user {
                live.connection.close(CloseCode::Normal.to_varint(), b"disconnected by the relay");
            }
        }
    }

    /// Closes every connection, waits a little for them to go, and closes the store after
    /// the last queued commit.
    pub async fn shutdown(mut self) {
        info!("relay shutting down");
        for task in &self.tasks {
            task.abort();
        }
        self.endpoint.close(CloseCode::Shutdown.to_varint(), b"the relay is shutting down");
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.endpoint.wait_idle()).await;
        self.state.store.close();
        if let Some(thread) = self.store_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let _ = std::fs::remove_file(&self.socket_path);
        info!("relay stopped");
    }
}

/// Creates `dir` (and its parents) and makes it the owner's alone: the database and
/// every file body are inside.
fn make_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Accepts connections; beyond `max_pending` handshakes at once, new ones are refused
/// (their clients retry), so a flood of handshakes cannot take the relay's memory.
async fn accept_loop(endpoint: quinn::Endpoint, state: Arc<RelayState>) {
    while let Some(incoming) = endpoint.accept().await {
        let state = state.clone();
        let remote = incoming.remote_address();
        let Ok(handshake) = state.handshakes.clone().try_acquire_owned() else {
            // Busy: a client whose address is not proven yet must prove it first (a
            // retry costs the relay no state), so spoofed packets cannot hold the slots.
            if incoming.remote_address_validated() {
                warn!(%remote, "too many handshakes at once; refusing one");
                state.metrics.refused("busy");
                incoming.refuse();
            } else {
                let _ = incoming.retry();
            }
            continue;
        };
        tokio::spawn(
            async move {
                let connected = incoming.await;
                drop(handshake);
                match connected {
                    Ok(connection) => session::run(state, connection).await,
                    Err(e) => {
                        info!(error = %e, "handshake failed");
                        state.metrics.refused("handshake");
                    }
                }
            }
            .instrument(tracing::info_span!("incoming", %remote)),
        );
    }
}

fn revoked_serials(material: &RelayMaterial) -> HashSet<Vec<u8>> {
    qchat_shared::tls::revoked_serials(&material.crl_pem).unwrap_or_default().into_iter().collect()
}

fn revoked_reason(user: &str) -> String {
    format!("the certificate of {user} has been revoked; ask the relay's owner for a new identity")
}

/// Closes live connections whose certificate is now revoked, or whose user is no longer
/// one of the relay's. Connections not registered yet check for themselves
/// ([`RelayState::still_admitted`]).
fn close_revoked(state: &RelayState) {
    for (user, live) in state.router.all() {
        if let Err((code, reason)) = state.still_admitted(&user, &live.serial) {
            info!(user = %Escaped(&user), ?code, "closing a connection that is no longer admitted");
            live.connection.close(code.to_varint(), reason.as_bytes());
        }
    }
}

/// Reloads the CRL and the list of users when they change, without a restart: new
/// handshakes use the new CRL at once.
async fn watch_pki(endpoint: quinn::Endpoint, state: Arc<RelayState>, dir: PathBuf, mut current: RelayMaterial) {
    let mut interval = tokio::time::interval(PKI_POLL);
    loop {
        interval.tick().await;
        let dir2 = dir.clone();
        let Ok(Ok(fresh)) = tokio::task::spawn_blocking(move || RelayMaterial::load(&dir2)).await else {
            continue;
        };
        if fresh.crl_pem == current.crl_pem && fresh.users == current.users {
            continue;
        }
        match quic_config(&fresh) {
            Ok(config) => {
                endpoint.set_server_config(Some(config));
                *state.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh.users.clone());
                *state.revoked.write().unwrap_or_else(|p| p.into_inner()) = revoked_serials(&fresh);
                info!(users = fresh.users.len(), "PKI reloaded (CRL and users)");
                close_revoked(&state);
                current = fresh;
            }
            Err(e) => warn!(error = %e, "new PKI files are unusable; keeping the old ones"),
        }
    }
}
