//! First start: the default data directory, and a demo PKI (a CA, a certificate for
//! localhost and 127.0.0.1, identities alice and bob) when none exists.

use std::path::{Path, PathBuf};

use qchat_certs::{CertsError, PkiDir};

/// The platform's data directory for qchat (e.g. `~/.local/share/qchat`).
pub fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "qchat")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("qchat-data"))
}

/// Creates a PKI for trying qchat on one machine, unless `pki_dir` has one. Returns the
/// identity files it wrote, or none when a PKI was already there.
pub fn ensure_demo_pki(pki_dir: &Path, port: u16) -> Result<Vec<PathBuf>, CertsError> {
    if PkiDir::new(pki_dir).exists() {
        return Ok(Vec::new());
    }
    qchat_certs::init(pki_dir, &["localhost".into(), "127.0.0.1".into(), "::1".into()])?;
    let server = format!("127.0.0.1:{port}");
    ["alice", "bob"].iter().map(|name| qchat_certs::issue_user(pki_dir, name, &server)).collect()
}
