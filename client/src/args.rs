//! The command-line options both client programs take (`qchat-cli` and `qchat`).

use std::path::PathBuf;

use qchat_shared::identity::{Identity, IdentityError};

use crate::ClientOptions;

/// Who to be and where to connect.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// Your identity file (NAME.qchat): written by `qchat-cli join`, or by `qchat-certs user`.
    #[arg(long, value_parser = path_arg)]
    pub identity: Option<PathBuf>,
    /// HOST:PORT of the relay, instead of the one in the identity file.
    #[arg(long)]
    pub server: Option<String>,
    /// Where the client keeps its state (default: the platform's data directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl ConnectArgs {
    /// Loads the identity and makes the client options.
    pub fn options(&self) -> Result<ClientOptions, IdentityError> {
        let Some(path) = &self.identity else {
            return Err(IdentityError::Invalid(
                "--identity FILE is needed; a new device gets one with `qchat-cli join INVITE --out FILE`".into(),
            ));
        };
        self.options_for(path)
    }

    /// The client options for the identity file at `path`.
    pub fn options_for(&self, path: &std::path::Path) -> Result<ClientOptions, IdentityError> {
        let mut options = ClientOptions::new(Identity::load(path)?);
        options.server = self.server.clone();
        options.data_dir = self.data_dir.clone();
        options.identity_path = Some(path.to_path_buf());
        Ok(options)
    }
}

/// A path as people paste it: surrounding spaces and one pair of quotes go (Windows
/// Explorer's "Copy as path" quotes every path).
pub fn path_from_text(text: &str) -> PathBuf {
    let text = text.trim();
    let unquoted =
        ['"', '\''].iter().find_map(|&q| text.strip_prefix(q).and_then(|t| t.strip_suffix(q))).unwrap_or(text);
    PathBuf::from(unquoted)
}

fn path_arg(text: &str) -> Result<PathBuf, String> {
    match path_from_text(text) {
        path if path.as_os_str().is_empty() => Err("an empty path".into()),
        path => Ok(path),
    }
}

/// What this device is called unless its person says otherwise: the computer's name.
pub fn default_device_name() -> String {
    let from_env = ["HOSTNAME", "COMPUTERNAME"].iter().find_map(|v| std::env::var(v).ok());
    let from_file = || std::fs::read_to_string("/etc/hostname").ok();
    from_env
        .or_else(from_file)
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "device".into())
}

/// Refuses a path for a new identity where a file exists (checked before an invite is
/// used, and again when writing).
pub fn check_new_identity_path(path: &std::path::Path) -> Result<(), String> {
    if path.exists() {
        return Err(format!(
            "{} exists already; choose another --out (an identity is never overwritten)",
            path.display()
        ));
    }
    Ok(())
}

/// Writes a joined device's identity file (0600), refusing to replace one that exists.
pub fn write_new_identity(path: &std::path::Path, identity: &Identity) -> Result<(), String> {
    use std::io::Write;
    check_new_identity_path(path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let cannot = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut options = std::fs::OpenOptions::new();
    // Never replaces a file, even one that appeared since the check.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => check_new_identity_path(path).unwrap_err(),
        _ => cannot(e),
    })?;
    file.write_all(identity.to_text().as_bytes()).and_then(|()| file.sync_all()).map_err(cannot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_pasted_with_quotes_is_the_path() {
        let windows = r#""C:\Users\Alice\Documents\alice laptop.qchat""#;
        assert_eq!(path_from_text(windows), PathBuf::from(r"C:\Users\Alice\Documents\alice laptop.qchat"));
        assert_eq!(path_from_text("  '/home/alice/alice.qchat'\n"), PathBuf::from("/home/alice/alice.qchat"));
        assert_eq!(path_from_text("/home/alice/it's.qchat"), PathBuf::from("/home/alice/it's.qchat"));
        assert_eq!(path_from_text(r#""half quoted.qchat"#), PathBuf::from(r#""half quoted.qchat"#));
        assert!(path_arg("  \"\" ").is_err());
    }
}
