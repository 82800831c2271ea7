//! The relay's durable store: SQLite (WAL) on a thread of its own.
//!
//! Jobs from async code queue up; the thread takes every job waiting, runs them in one
//! transaction (each in a savepoint, so one failing job undoes only itself), commits once
//! (one fsync for many messages) and only then answers each job. Committed messages are
//! published on the commit feed in sequence order, for live delivery.
//!
//! [`interfaces`] is what the relay asks of a store; [`messages`], [`rooms`], [`files`] and
//! [`devices`] implement it for SQLite, each for one kind of record; [`schema`] holds the
//! migrations that bring an older database up to date.

mod devices;
mod files;
pub mod interfaces;
mod keys;
mod messages;
mod rooms;
pub mod schema;

pub use devices::{DeviceRow, InviteCheck, NewDevice, Revoked};
pub use files::{Listing, SweptFile, UploadLimits, UploadSlot, EVERY_DEVICE_FETCHED};
pub use interfaces::{Backend, DeviceStore, FileStore, KeyStore, MessageStore, Queued, RoomStore};
pub use keys::{GroupPlan, IssuedLookup};
pub use messages::{ExpiredMessage, MessageSweep, Receipt, Stored, StoredMessage};
pub use rooms::{RoomChange, RoomRow, Users};

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use rusqlite::{Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

/// Jobs run in one transaction at most.
const MAX_BATCH: usize = 512;

/// Why the store could not do something.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("the relay's disk is full; ask its owner to free space")]
    DiskFull,
    #[error("the relay's database failed: {0}")]
    Db(Arc<str>),
    #[error("the relay is shutting down")]
    Closed,
    #[error("{0}")]
    Refused(Arc<str>),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::DiskFull,
            _ => StoreError::Db(e.to_string().into()),
        }
    }
}

type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&Transaction<'_>) -> (bool, Finish) + Send>;

/// A handle to the store thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Jobs for the store thread. Every job is awaited by the request that queued it, and
    /// requests are bounded (streams per connection, connections per user, the control
    /// stream's reply queue), so this queue is too, without a number of its own.
    jobs: std_mpsc::Sender<Job>,
    /// Committed messages for the router, which only moves them into bounded per-connection
    /// queues (never waiting), so it keeps up with the commits that fill this.
    feed: mpsc::UnboundedSender<StoredMessage>,
    closing: Arc<AtomicBool>,
    /// How long each group commit takes, begin to durable (seconds), for the metrics.
    commit_seconds: Histogram,
}

impl Store {
    /// The store's commit times (a handle: it fills as the store commits).
    pub fn commit_seconds(&self) -> Histogram {
        self.commit_seconds.clone()
    }
}

/// Opens (or creates) the database and starts its thread. Committed messages appear on
/// the returned receiver in sequence order.
pub fn open(
    path: &Path,
) -> Result<(Store, mpsc::UnboundedReceiver<StoredMessage>, std::thread::JoinHandle<()>), StoreError> {
    create_private(path)?;
    let mut conn = Connection::open(path)?;
    conn.execute_batch(PRAGMAS)?;
    schema::migrate(&mut conn)
        .map_err(|e| StoreError::Db(format!("cannot bring the database up to date: {e}").into()))?;
    let (jobs, rx) = std_mpsc::channel::<Job>();
    let (feed, feed_rx) = mpsc::unbounded_channel();
    let closing = Arc::new(AtomicBool::new(false));
    let flag = closing.clone();
    // From half a millisecond to four seconds.
    let commit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
    let times = commit_seconds.clone();
    let thread = std::thread::Builder::new()
        .name("qchat-store".into())
        .spawn(move || run(conn, rx, &flag, &times))
        .map_err(|e| StoreError::Db(e.to_string().into()))?;
    Ok((Store { jobs, feed, closing, commit_seconds }, feed_rx, thread))
}

/// Settings of every connection; they are not part of the schema. The busy timeout lets
/// `qchat-server invite` (and its other subcommands) write while the relay runs.
const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA foreign_keys = ON;
PRAGMA busy_timeout = 5000;
";

/// Creates the database file readable by its owner only (SQLite gives the WAL and its
/// index the same mode), and takes that mode back from an older, readable file.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path).map_err(|e| StoreError::Db(format!("{}: {e}", path.display()).into()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for extra in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(extra);
            let _ = std::fs::set_permissions(side, std::fs::Permissions::from_mode(0o600));
        }
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Db(format!("{}: {e}", path.display()).into()))?;
    }
    drop(file);
    Ok(())
}

fn run(mut conn: Connection, jobs: std_mpsc::Receiver<Job>, closing: &AtomicBool, commit_seconds: &Histogram) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        run_batch(&mut conn, batch);
        commit_seconds.observe(started.elapsed().as_secs_f64());
        if closing.load(Ordering::Acquire) {
            break;
        }
    }
}

fn run_batch(conn: &mut Connection, batch: Vec<Job>) {
    // Immediate: the write lock is taken at the start, so a write of another process (an
    // operator's subcommand) makes this wait (busy timeout) rather than fail midway.
    let txn = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(txn) => txn,
        Err(e) => {
            let err = StoreError::from(e);
            // Each job must still answer: run none, tell all.
            tracing::error!(error = %err, "store: cannot begin a transaction");
            return;
        }
    };
    let mut finishes = Vec::with_capacity(batch.len());
    for job in batch {
        let savepoint_ok = txn.execute_batch("SAVEPOINT job").is_ok();
        let (ok, finish) = job(&txn);
        if savepoint_ok {
            let end = if ok { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
            if let Err(e) = txn.execute_batch(end) {
                tracing::error!(error = %e, "store: savepoint failed");
            }
        }
        finishes.push(finish);
    }
    let committed = txn.commit().map_err(StoreError::from);
    if let Err(e) = &committed {
        tracing::error!(error = %e, "store: commit failed; nothing in this batch was acknowledged");
    }
    for finish in finishes {
        finish(committed.clone());
    }
}

/// A message's bytes as a test stores them (the relay cannot tell them from ciphertext).
#[cfg(test)]
pub(crate) fn sealed(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

impl Backend for Store {
    fn close(&self) {
        Store::close(self)
    }
}

impl Store {
    /// Finishes the jobs already queued, then stops the thread; later calls get `Closed`.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        let wake: Job = Box::new(|_| (true, Box::new(|_| {})));
        let _ = self.jobs.send(wake);
    }

    /// Queues `work` for the next group transaction now, and returns its result once the
    /// transaction is durable. Jobs run in the order they were queued; `after_commit` runs
    /// on the store thread, in commit order.
    pub(super) fn submit<T, W, A>(
        &self,
        work: W,
        after_commit: A,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + use<T, W, A>
    where
        T: Send + 'static,
        W: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
        A: FnOnce(&T) + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |txn| {
            let result = work(txn);
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |committed| {
                let answer = committed.and(result);
                if let Ok(value) = &answer {
                    after_commit(value);
                }
                let _ = tx.send(answer);
            });
            (ok, finish)
        });
        let queued = self.jobs.send(job).map_err(|_| StoreError::Closed);
        async move {
            queued?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// Like [`Store::submit`], for work that appends events to rooms: they go on the commit
    /// feed (in commit order) once they are durable.
    pub(super) fn submit_publishing<T, W>(
        &self,
        work: W,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + use<T, W>
    where
        T: Send + 'static,
        W: FnOnce(&Transaction<'_>) -> Result<(T, Vec<StoredMessage>), StoreError> + Send + 'static,
    {
        let feed = self.feed.clone();
        let made = Arc::new(std::sync::Mutex::new(Vec::new()));
        let published = made.clone();
        self.submit(
            move |txn| {
                let (value, events) = work(txn)?;
                *made.lock().unwrap_or_else(|p| p.into_inner()) = events;
                Ok(value)
            },
            move |_| {
                for event in published.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                    let _ = feed.send(event);
                }
            },
        )
    }
}
