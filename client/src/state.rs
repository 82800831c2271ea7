//! What the client keeps on disk, in a directory of its own per identity (so alice and
//! bob can run under one home directory): the receipt cursor, and the unfinished uploads
//! (so that sending the same file again resumes it).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use qchat_shared::frame::FileId;
use qchat_shared::seal::FileKey;

use qchat_shared::identity::Identity;
use qchat_shared::replace::{replace_file, Readers};
use serde::{Deserialize, Serialize};

/// The persisted client state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// Every message of ours up to this sequence number is known delivered.
    pub receipts_after: u64,
    /// Files saved lately (newest last): the relay is told again after a reconnect, and an
    /// offer of one of them is not fetched twice.
    #[serde(default)]
    pub fetched: Vec<FileId>,
}

/// How many fetched file ids [`SavedState::fetched`] keeps.
pub const FETCHED_KEPT: usize = 200;

/// The state directory of one identity.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    /// The default: the platform's data directory, then `clients/USER@HOST_PORT`.
    pub fn for_identity(identity: &Identity) -> Self {
        let base = directories::ProjectDirs::from("", "", "qchat")
            .map(|d| d.data_dir().to_path_buf())
            .unwrap_or_else(|| PathBuf::from("qchat-data"));
        Self::under(&base, identity)
    }

    /// The state directory of `identity` below `base`: `USER@SERVER` for an identity from
    /// `qchat-certs user` (as before devices), `USER.DEVICE@SERVER` for a device that
    /// joined, so that two devices of one person can share a home directory.
    pub fn under(base: &Path, identity: &Identity) -> Self {
        let server: String = identity
            .server
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
            .collect();
        let device = qchat_shared::tls::parse_certs(&identity.cert_pem, "certificate")
            .ok()
            .and_then(|certs| certs.first().and_then(|c| qchat_shared::tls::device_of(c)))
            .filter(|d| d.chars().all(|c| c.is_ascii_alphanumeric()));
        let name = match device {
            Some(device) => format!("{}.{device}@{server}", identity.user),
            None => format!("{}@{server}", identity.user),
        };
        StateDir { dir: base.join("clients").join(name) }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Reads the state; a missing or unreadable file is a fresh start.
    pub fn load(&self) -> SavedState {
        std::fs::read(self.file()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Writes the state atomically, readable by this user only.
    pub fn save(&self, state: &SavedState) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        replace_file(&self.file(), &serde_json::to_vec(state).map_err(std::io::Error::other)?, Readers::Owner)
    }
}

/// An upload the relay has begun to hold: the same file (path, size, modification time)
/// sent again resumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub path: PathBuf,
    pub size: u64,
    pub modified_ms: i64,
    pub file_id: FileId,
    /// The key it is sealed under (sealing again with it gives the same bytes).
    pub key: FileKey,
}

/// The unfinished uploads of one identity, kept in `uploads.json`.
#[derive(Debug)]
pub struct UploadBook {
    file: PathBuf,
    lock: Mutex<()>,
}

impl UploadBook {
    pub fn new(state: &StateDir) -> Self {
        UploadBook { file: state.dir.join("uploads.json"), lock: Mutex::new(()) }
    }

    fn load(&self) -> Vec<UploadRecord> {
        std::fs::read(&self.file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn store(&self, records: &[UploadRecord]) -> std::io::Result<()> {
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        replace_file(&self.file, &serde_json::to_vec(records).map_err(std::io::Error::other)?, Readers::Owner)
    }

    /// The relay's id and the key of an unfinished upload of this very file, if any.
    pub fn find(&self, path: &Path, size: u64, modified_ms: i64) -> Option<(FileId, FileKey)> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.load()
            .into_iter()
            .find(|r| r.path == path && r.size == size && r.modified_ms == modified_ms)
            .map(|r| (r.file_id, r.key))
    }

    /// Remembers an upload (replacing any record of the same path).
    pub fn remember(&self, record: UploadRecord) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut records = self.load();
        records.retain(|r| r.path != record.path);
        records.push(record);
        if let Err(e) = self.store(&records) {
            tracing::warn!(error = %e, "cannot record an unfinished upload");
        }
    }

    /// Forgets the upload of `path` (finished, or refused).
    pub fn forget(&self, path: &Path) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut records = self.load();
        let before = records.len();
        records.retain(|r| r.path != path);
        if records.len() != before {
            let _ = self.store(&records);
        }
    }
}
