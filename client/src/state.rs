//! What the client keeps on disk, in a directory of its own per identity (so alice and
//! bob can run under one home directory): for now the receipt cursor.

use std::path::{Path, PathBuf};

use qchat_shared::identity::Identity;
use serde::{Deserialize, Serialize};

/// The persisted client state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// Every message of ours up to this sequence number is known delivered.
    pub receipts_after: u64,
}

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

    /// The state directory of `identity` below `base`.
    pub fn under(base: &Path, identity: &Identity) -> Self {
        let server: String = identity
            .server
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
            .collect();
        StateDir { dir: base.join("clients").join(format!("{}@{server}", identity.user)) }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Reads the state; a missing or unreadable file is a fresh start.
    pub fn load(&self) -> SavedState {
        std::fs::read(self.file()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Writes the state atomically.
    pub fn save(&self, state: &SavedState) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(state).map_err(std::io::Error::other)?)?;
        std::fs::rename(tmp, self.file())
    }
}
