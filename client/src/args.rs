//! The command-line options both client programs take (`qchat-cli` and `qchat`).

use std::path::PathBuf;

use qchat_shared::identity::{Identity, IdentityError};

use crate::ClientOptions;

/// Who to be and where to connect.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// Your identity file (NAME.qchat), made by `qchat-certs user`.
    #[arg(long)]
    pub identity: PathBuf,
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
        let mut options = ClientOptions::new(Identity::load(&self.identity)?);
        options.server = self.server.clone();
        options.data_dir = self.data_dir.clone();
        Ok(options)
    }
}
