//! The client's file transfers: what is queued or running, how many run at once, and
//! starting them again (resuming) after a reconnect.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qchat_shared::frame::FileId;
use qchat_shared::window::{ConnectionWindows, WindowBudget};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{AbortHandle, JoinSet};

use crate::event::{Event, TransferId};
use crate::offer::{FileOffer, Offer};
use crate::state::UploadBook;
use crate::{download, upload};

/// File transfers that run at once; more wait their turn.
pub const MAX_TRANSFERS: usize = 3;
/// Progress is reported at most this often per transfer.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// What a transfer does.
#[derive(Debug, Clone)]
pub enum Job {
    /// To a room by name, or to the default room, offered as `name`.
    Upload {
        path: PathBuf,
        room: Option<String>,
        name: String,
    },
    Download {
        offer: Offer,
        out_dir: PathBuf,
    },
}

/// How a transfer task ended.
#[derive(Debug)]
pub enum Outcome {
    Uploaded,
    /// Saved and verified: tell the relay it was fetched, then the user.
    Saved {
        file_id: FileId,
        path: std::path::PathBuf,
        blake3: qchat_shared::frame::Blake3,
    },
    /// Failed for good; the task already reported why.
    Failed,
    /// The connection went; run it again (resuming) after the reconnect.
    Interrupted,
}

/// An upload's offer for its room, and where to say once the relay stored it.
pub type OfferToSend = (String, FileOffer, crate::client::SendReplyTx);

/// What every transfer task needs.
#[derive(Clone)]
pub struct TransferContext {
    pub events: mpsc::UnboundedSender<Event>,
    pub permits: Arc<Semaphore>,
    pub book: Arc<UploadBook>,
    /// What the windows of this client's transfers together may grow to.
    pub windows: Arc<WindowBudget>,
    /// An upload's offer (its name and key) for the members of its room, to send sealed;
    /// the answer says once it is stored.
    pub offers: mpsc::UnboundedSender<OfferToSend>,
}

impl TransferContext {
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Runs `work` on the upload book on a blocking thread (it reads and writes a file).
    pub async fn with_book<T: Send + 'static>(
        &self,
        work: impl FnOnce(&UploadBook) -> T + Send + 'static,
    ) -> Option<T> {
        let book = self.book.clone();
        tokio::task::spawn_blocking(move || work(&book)).await.ok()
    }

    /// Forgets the unfinished upload of `path`.
    pub async fn forget_upload(&self, path: &std::path::Path) {
        let path = path.to_path_buf();
        self.with_book(move |book| book.forget(&path)).await;
    }

    /// Reports a failure for good.
    pub fn fail(&self, transfer: TransferId, file_id: Option<FileId>, reason: String) -> Outcome {
        self.emit(Event::TransferFailed { transfer, file_id, reason });
        Outcome::Failed
    }
}

/// Limits progress events to a few a second.
pub struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    pub fn new() -> Self {
        Throttle { last: None }
    }

    /// Whether to report now (always at the end).
    pub fn ready(&mut self, done: u64, total: u64) -> bool {
        let now = Instant::now();
        if done >= total || self.last.is_none_or(|last| now - last >= PROGRESS_EVERY) {
            self.last = Some(now);
            return true;
        }
        false
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

struct Entry {
    job: Job,
    running: Option<AbortHandle>,
    /// Set when the user cancels: an upload then tells the relay to drop what it holds.
    cancelled: Arc<AtomicBool>,
}

/// Every transfer not finished yet.
pub struct Transfers {
    pub context: TransferContext,
    entries: BTreeMap<TransferId, Entry>,
}

impl Transfers {
    pub fn new(context: TransferContext) -> Self {
        Transfers { context, entries: BTreeMap::new() }
    }

    /// Queues a job; it starts with the next [`Transfers::start_waiting`].
    pub fn add(&mut self, transfer: TransferId, job: Job) {
        self.entries.insert(transfer, Entry { job, running: None, cancelled: Arc::default() });
    }

    /// Whether a download of this file is queued or running.
    pub fn has_download(&self, file_id: FileId) -> bool {
        self.entries.values().any(|e| matches!(&e.job, Job::Download { offer, .. } if offer.file_id == file_id))
    }

    /// Starts every job that is not running, on the connection of `windows`.
    pub fn start_waiting(
        &mut self,
        windows: &Arc<ConnectionWindows>,
        tasks: &mut JoinSet<()>,
        outcomes: &mpsc::UnboundedSender<(TransferId, Outcome)>,
    ) {
        for (&transfer, entry) in self.entries.iter_mut().filter(|(_, e)| e.running.is_none()) {
            let (context, windows, outcomes, job) =
                (self.context.clone(), windows.clone(), outcomes.clone(), entry.job.clone());
            let cancelled = entry.cancelled.clone();
            entry.running = Some(tasks.spawn(async move {
                let outcome = match job {
                    Job::Upload { path, room, name } => {
                        upload::run(&context, &windows, transfer, (path, room, name), cancelled).await
                    }
                    Job::Download { offer, out_dir } => {
                        download::run(&context, &windows, transfer, offer, out_dir).await
                    }
                };
                let _ = outcomes.send((transfer, outcome));
            }));
        }
    }

    /// Takes a task's outcome: finished jobs go (and are returned), interrupted ones wait
    /// for the reconnect.
    pub fn finished(&mut self, transfer: TransferId, outcome: &Outcome) -> Option<Job> {
        match outcome {
            Outcome::Interrupted => {
                if let Some(entry) = self.entries.get_mut(&transfer) {
                    entry.running = None;
                }
                None
            }
            _ => self.entries.remove(&transfer).map(|entry| entry.job),
        }
    }

    /// Marks every job as not running (their connection is gone).
    pub fn connection_lost(&mut self) {
        for entry in self.entries.values_mut() {
            if let Some(task) = entry.running.take() {
                task.abort();
            }
        }
    }

    /// Cancels a transfer; returns false if there was none.
    pub fn cancel(&mut self, transfer: TransferId) -> bool {
        match self.entries.remove(&transfer) {
            Some(entry) => {
                entry.cancelled.store(true, std::sync::atomic::Ordering::Release);
                if let Some(task) = entry.running {
                    task.abort();
                }
                true
            }
            None => false,
        }
    }
}
