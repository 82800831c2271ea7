//! `qchat-certs`: mint a CA, the relay's certificate, user identities, and revocations.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "qchat-certs", version, about = "Mint the certificates of a qchat relay and its users")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a CA and the relay's certificate in a new directory.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// A name or IP address clients use to reach the relay (repeat for more).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
    /// Issue an identity file DIR/NAME.qchat for one person.
    User {
        #[arg(long)]
        dir: PathBuf,
        /// The person's name: a-z, 0-9, '_' and '-', at most 32 characters.
        name: String,
        /// HOST:PORT where the relay listens, written into the identity file.
        #[arg(long)]
        server: String,
    },
    /// Revoke a person's certificate; a running relay refuses it from then on.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        name: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Init { dir, hosts } => {
            qchat_certs::init(&dir, &hosts)?;
            println!("created a CA and a relay certificate for {} in {}", hosts.join(", "), dir.display());
            println!("next: qchat-certs user --dir {} NAME --server HOST:PORT", dir.display());
        }
        Command::User { dir, name, server } => {
            let path = qchat_certs::issue_user(&dir, &name, &server)?;
            println!("wrote {} (secret: give it to {name} only)", path.display());
        }
        Command::Revoke { dir, name } => {
            qchat_certs::revoke(&dir, &name)?;
            println!("revoked {name}; a running relay refuses the certificate from now on");
        }
    }
    Ok(())
}
