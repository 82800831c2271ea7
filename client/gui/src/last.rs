//! The identity the window opened last, so that `qchat` started with no arguments (from
//! the desktop's menu) opens it again. Kept as one line in the platform's config directory.

use std::path::{Path, PathBuf};

use qchat_shared::replace::{replace_file, Readers};

/// Where the path of the last identity is kept (e.g. `~/.config/qchat/last-identity`).
pub fn record_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "qchat").map(|dirs| dirs.config_dir().join("last-identity"))
}

/// The identity file opened last, if it still exists.
pub fn recall(record: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(record).ok()?;
    let path = PathBuf::from(text.trim_end_matches(['\r', '\n']));
    path.is_file().then_some(path)
}

/// Remembers `identity` as the one to open next time (as an absolute path). A failure
/// only costs the convenience, so it is logged, not shown.
pub fn remember(record: &Path, identity: &Path) {
    let identity = std::path::absolute(identity).unwrap_or_else(|_| identity.to_path_buf());
    write_record(record, identity.to_string_lossy().as_bytes(), "the identity opened");
}

/// Writes one of the window's records (its config directory made if need be), whole and
/// readable by its owner only; a failure is logged: it only costs a convenience.
pub fn write_record(record: &Path, bytes: &[u8], what: &str) {
    let written = record
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| replace_file(record, bytes, Readers::Owner));
    if let Err(e) = written {
        tracing::warn!(error = %e, file = %record.display(), "cannot remember {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_identity_opened_is_opened_again_while_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("config").join("last-identity");
        assert_eq!(recall(&record), None, "nothing opened yet");
        let identity = dir.path().join("alice laptop.qchat");
        std::fs::write(&identity, "identity").unwrap();
        remember(&record, &identity);
        assert_eq!(recall(&record), Some(identity.clone()));
        let other = dir.path().join("bob.qchat");
        std::fs::write(&other, "identity").unwrap();
        remember(&record, &other);
        assert_eq!(recall(&record), Some(other.clone()), "the latest wins");
        std::fs::remove_file(&other).unwrap();
        assert_eq!(recall(&record), None, "a file moved away is not opened");
    }
}
