//! Files still arriving: how much of each running upload is in its spool file, so that a
//! download can follow it while it is written (cut-through), and how each upload ended.
//!
//! An entry lives while its upload runs, and after it pauses (a cut connection) only while
//! a download still follows it; so there are never more entries than transfer slots.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use qchat_shared::frame::{Blake3, FileId, FileInfo};
use qchat_shared::transfer::Growing;

/// How long a download waits for a paused upload to go on before it fails.
pub const RESUME_PATIENCE: Duration = Duration::from_secs(600);
/// How often a waiting reader looks at the clock.
const WAKE_EVERY: Duration = Duration::from_secs(1);

/// Where an upload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// Bytes of the file in the spool file; `paused_since` is set while no upload runs.
    Writing { on_disk: u64, paused_since: Option<Instant> },
    /// Complete, verified and committed.
    Committed(Blake3),
    /// It will not be complete, and why.
    Withdrawn(String),
}

/// One arriving file.
#[derive(Debug)]
pub struct ArrivingFile {
    pub info: FileInfo,
    state: Mutex<Arrival>,
    changed: Condvar,
}

impl ArrivingFile {
    fn lock(&self) -> MutexGuard<'_, Arrival> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, state: Arrival) {
        *self.lock() = state;
        self.changed.notify_all();
    }

    pub fn state(&self) -> Arrival {
        self.lock().clone()
    }

    /// The upload has `on_disk` bytes in the spool file (called on the writer's thread).
    pub fn wrote(&self, on_disk: u64) {
        let mut state = self.lock();
        if let Arrival::Writing { on_disk: known, .. } = &mut *state {
            *known = on_disk;
            self.changed.notify_all();
        }
    }

    /// Bytes on disk, while writing.
    pub fn on_disk(&self) -> Option<u64> {
        match *self.lock() {
            Arrival::Writing { on_disk, .. } => Some(on_disk),
            _ => None,
        }
    }

    /// Blocks until the upload commits or is withdrawn (a pause that outlasts `patience`
    /// counts as withdrawn).
    pub fn wait_end(&self, patience: Duration) -> Result<Blake3, String> {
        let mut state = self.lock();
        loop {
            match &*state {
                Arrival::Committed(blake3) => return Ok(*blake3),
                Arrival::Withdrawn(reason) => return Err(reason.clone()),
                Arrival::Writing { paused_since: Some(since), .. } if since.elapsed() > patience => {
                    return Err(gave_up(patience))
                }
                Arrival::Writing { .. } => {}
            }
            state = self.changed.wait_timeout(state, WAKE_EVERY).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

fn gave_up(patience: Duration) -> String {
    format!(
        "the sender's upload stopped and did not go on within {} minutes; receive the file again once it is \
         offered again",
        patience.as_secs() / 60
    )
}

/// A download following an arriving file: what [`qchat_shared::transfer::send`] may read.
pub struct Following {
    pub file: Arc<ArrivingFile>,
    pub patience: Duration,
}

impl Growing for Following {
    fn wait_beyond(&self, pos: u64) -> io::Result<u64> {
        let mut state = self.file.lock();
        loop {
            match &*state {
                Arrival::Writing { on_disk, .. } if *on_disk > pos => return Ok(*on_disk),
                Arrival::Committed(_) => return Ok(self.file.info.size),
                Arrival::Withdrawn(reason) => return Err(io::Error::other(reason.clone())),
                Arrival::Writing { paused_since: Some(since), .. } if since.elapsed() > self.patience => {
                    return Err(io::Error::other(gave_up(self.patience)))
                }
                Arrival::Writing { .. } => {}
            }
            state = self.file.changed.wait_timeout(state, WAKE_EVERY).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// Every arriving file, by id.
#[derive(Debug, Clone, Default)]
pub struct Arrivals {
    files: Arc<Mutex<HashMap<FileId, Arc<ArrivingFile>>>>,
}

impl Arrivals {
    fn lock(&self) -> MutexGuard<'_, HashMap<FileId, Arc<ArrivingFile>>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, info: &FileInfo, on_disk: u64) -> (Arc<ArrivingFile>, bool) {
        let mut files = self.lock();
        if let Some(file) = files.get(&info.file_id) {
            return (file.clone(), false);
        }
        let file = Arc::new(ArrivingFile {
            info: info.clone(),
            state: Mutex::new(Arrival::Writing { on_disk, paused_since: Some(Instant::now()) }),
            changed: Condvar::new(),
        });
        files.insert(info.file_id, file.clone());
        (file, true)
    }

    /// An upload (re)starts with `on_disk` bytes held; ends (or pauses) when the returned
    /// guard says so or is dropped.
    pub fn begin(&self, info: &FileInfo, on_disk: u64) -> Upload {
        let (file, _) = self.entry(info, on_disk);
        file.set(Arrival::Writing { on_disk, paused_since: None });
        Upload { arrivals: self.clone(), file, ended: false }
    }

    /// A download follows the arriving `info`, of which the store holds `held` bytes;
    /// true if nothing was known of it in memory (its upload is not running).
    pub fn follow(&self, info: &FileInfo, held: u64) -> (Arc<ArrivingFile>, bool) {
        self.entry(info, held)
    }

    /// A download stopped following `file`: a paused entry nobody else holds goes.
    pub fn release(&self, file: Arc<ArrivingFile>) {
        let mut files = self.lock();
        let paused = matches!(file.state(), Arrival::Writing { paused_since: Some(_), .. });
        // This handle and the map's are the only ones left.
        if paused && Arc::strong_count(&file) <= 2 {
            files.remove(&file.info.file_id);
        }
    }

    /// Ends `file_id`'s arrival (committed or withdrawn), waking its followers.
    pub fn end(&self, file_id: FileId, state: Arrival) {
        if let Some(file) = self.lock().remove(&file_id) {
            file.set(state);
        }
    }

    /// The files arriving for `user`, a member of `rooms` now, whose upload runs now.
    pub fn arriving_for(&self, user: &str, rooms: &[String]) -> Vec<FileInfo> {
        let files = self.lock();
        let running = |f: &&Arc<ArrivingFile>| matches!(f.state(), Arrival::Writing { paused_since: None, .. });
        files
            .values()
            .filter(|f| f.info.from != user && rooms.contains(&f.info.room))
            .filter(running)
            .map(|f| f.info.clone())
            .collect()
    }

    /// How many entries there are (for tests: they must not pile up).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A running upload's hold on its arrival: [`Upload::end`] ends it; dropped otherwise,
/// the upload counts as paused (it may resume).
pub struct Upload {
    arrivals: Arrivals,
    pub file: Arc<ArrivingFile>,
    ended: bool,
}

impl Upload {
    pub fn end(mut self, state: Arrival) {
        self.ended = true;
        self.arrivals.end(self.file.info.file_id, state);
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut files = self.arrivals.lock();
        let on_disk = self.file.on_disk().unwrap_or(0);
        self.file.set(Arrival::Writing { on_disk, paused_since: Some(Instant::now()) });
        // Followers keep the entry (and wait for a resume); with none it goes.
        if Arc::strong_count(&self.file) <= 2 {
            files.remove(&self.file.info.file_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(size: u64) -> FileInfo {
        FileInfo {
            file_id: FileId::random(),
            room: "alice+bob".into(),
            plain_name: None,
            size,
            from: "alice".into(),
            blake3: None,
            time_ms: 0,
        }
    }

    #[test]
    fn a_follower_reads_what_is_written_and_learns_how_it_ended() {
        let arrivals = Arrivals::default();
        let info = info(10);
        let upload = arrivals.begin(&info, 0);
        let (file, fresh) = arrivals.follow(&info, 0);
        assert!(!fresh, "the running upload's entry is followed");
        let following = Following { file: file.clone(), patience: RESUME_PATIENCE };
        let writer = std::thread::spawn({
            let file = upload.file.clone();
            move || {
                std::thread::sleep(Duration::from_millis(50));
                file.wrote(4);
            }
        });
        assert_eq!(following.wait_beyond(0).unwrap(), 4, "woken by the write");
        writer.join().unwrap();
        assert_eq!(arrivals.arriving_for("bob", &["alice+bob".to_string()]), vec![info.clone()]);
        assert!(arrivals.arriving_for("bob", &[]).is_empty(), "not for someone outside its room");
        assert!(arrivals.arriving_for("alice", &["alice+bob".to_string()]).is_empty(), "nor back to its sender");
        upload.end(Arrival::Committed([7; 32]));
        assert_eq!(following.wait_beyond(4).unwrap(), 10, "committed: all of it");
        assert_eq!(file.wait_end(RESUME_PATIENCE), Ok([7; 32]));
        assert!(arrivals.is_empty());
    }

    #[test]
    fn a_paused_upload_keeps_its_entry_only_while_followed_and_a_long_pause_fails_the_follower() {
        let arrivals = Arrivals::default();
        let info = info(10);
        drop(arrivals.begin(&info, 3));
        assert!(arrivals.is_empty(), "nobody follows a paused upload: nothing is kept");
        let (file, fresh) = arrivals.follow(&info, 3);
        assert!(fresh);
        assert!(
            arrivals.arriving_for("bob", &["alice+bob".to_string()]).is_empty(),
            "a paused upload is not offered as arriving"
        );
        let impatient = Following { file: file.clone(), patience: Duration::ZERO };
        std::thread::sleep(Duration::from_millis(5));
        assert!(impatient.wait_beyond(3).unwrap_err().to_string().contains("did not go on"));
        drop(impatient);
        arrivals.release(file);
        assert!(arrivals.is_empty());
    }

    #[test]
    fn a_withdrawn_upload_fails_its_followers_with_the_reason() {
        let arrivals = Arrivals::default();
        let info = info(10);
        let upload = arrivals.begin(&info, 0);
        let (file, _) = arrivals.follow(&info, 0);
        upload.end(Arrival::Withdrawn("the sender cancelled it".into()));
        let following = Following { file: file.clone(), patience: RESUME_PATIENCE };
        assert!(following.wait_beyond(0).unwrap_err().to_string().contains("cancelled"));
        assert_eq!(file.wait_end(RESUME_PATIENCE), Err("the sender cancelled it".into()));
    }
}
