//! `qchat-server`: runs the relay until Ctrl-C or SIGTERM; its subcommands make invites,
//! list people and devices, and revoke them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use qchat_certs::PkiDir;
use qchat_server::bootstrap::{default_data_dir, ensure_demo_pki};
use qchat_server::{Relay, RelayConfig};

#[derive(Parser)]
#[command(name = "qchat-server", version, about = "The qchat relay", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Admin>,
    /// The PKI made by `qchat-certs` (default: DATA/pki, created with a demo PKI if absent).
    #[arg(long)]
    pki: Option<PathBuf>,
    /// Where the database and files live (default: the platform's data directory).
    #[arg(long)]
    data: Option<PathBuf>,
    /// UDP address to listen on.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], qchat_shared::DEFAULT_PORT)))]
    listen: SocketAddr,
    /// The largest file accepted (e.g. 64G, 512M).
    #[arg(long, default_value = "64G", value_parser = qchat_shared::units::parse_size)]
    max_file_size: u64,
    /// What one user's files on the relay may add up to.
    #[arg(long, default_value = "256G", value_parser = qchat_shared::units::parse_size)]
    quota: u64,
    /// Days a fetched file is kept on the relay.
    #[arg(long, default_value_t = 7)]
    retention_days: u64,
    /// Days a file nobody fetched is kept (its sender is told when it goes).
    #[arg(long, default_value_t = 30)]
    expiry_days: u64,
    /// Days a delivered message is kept on the relay.
    #[arg(long, default_value_t = 7)]
    message_retention_days: u64,
    /// Days a message nobody received is kept (its sender is told when it goes).
    #[arg(long, default_value_t = 30)]
    message_expiry_days: u64,
    /// Files of one sender on the relay that nobody has fetched yet (empty ones count).
    #[arg(long, default_value_t = 10_000)]
    max_waiting_files: u64,
    /// What one sender's messages waiting for someone offline may add up to.
    #[arg(long, default_value = "64M", value_parser = qchat_shared::units::parse_size)]
    max_waiting_message_bytes: u64,
    /// File transfers served at once.
    #[arg(long, default_value_t = 16)]
    max_transfers: usize,
    /// File transfers one user may have served at once (their share).
    #[arg(long, default_value_t = 4)]
    max_transfers_per_user: usize,
    /// Seconds a transfer may move no bytes before it gives its slot back.
    #[arg(long, default_value_t = 60)]
    stall_timeout_secs: u64,
    /// Memory the flow-control windows of all transfers together may grow to, beyond 4 MiB
    /// per connection (a far, fast path needs twice its bandwidth-delay product per transfer).
    #[arg(long, default_value = "96M", value_parser = qchat_shared::units::parse_size)]
    window_budget: u64,
    /// Days a device's certificate is valid (its client renews it in the last third).
    #[arg(long, default_value_t = 90)]
    device_cert_days: u64,
    /// Failed joins (wrong, used or expired invites) one address may make per minute.
    #[arg(long, default_value_t = 10)]
    failed_joins_per_minute: u32,
}

/// Where a subcommand finds the relay's PKI and data (the relay's own flags).
#[derive(clap::Args)]
struct DirArgs {
    /// The relay's PKI (default: DATA/pki).
    #[arg(long)]
    pki: Option<PathBuf>,
    /// The relay's data directory (default: the platform's data directory).
    #[arg(long)]
    data: Option<PathBuf>,
}

impl DirArgs {
    fn dirs(self) -> Result<qchat_server::admin::Dirs> {
        let data = self.data.unwrap_or_else(default_data_dir);
        Ok(qchat_server::admin::Dirs { pki: qchat_server::admin::pki_of(self.pki, &data)?, data })
    }
}

#[derive(clap::Subcommand)]
enum Admin {
    /// Creates a one-time invite for NAME (a new person, or another device of one) and
    /// prints it as the last line.
    Invite {
        name: String,
        #[command(flatten)]
        dirs: DirArgs,
        /// HOST:PORT clients reach the relay at (default: the relay certificate's first
        /// host, port 21567).
        #[arg(long)]
        server: Option<String>,
        /// How long the invite can be used (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = qchat_shared::units::parse_duration)]
        expires: Duration,
    },
    /// Lists the relay's people and how many devices each has.
    Users {
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Lists every device (of USER), revoked ones too.
    Devices {
        user: Option<String>,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Revokes DEVICE of USER, or every device, invite and identity of USER; their
    /// connections close.
    Revoke {
        user: String,
        device: Option<String>,
        #[command(flatten)]
        dirs: DirArgs,
    },
}

async fn run_admin(command: Admin) -> Result<()> {
    match command {
        Admin::Invite { name, dirs, server, expires } => {
            qchat_server::admin::invite(&dirs.dirs()?, &name, server, expires).await
        }
        Admin::Users { dirs } => qchat_server::admin::users(&dirs.dirs()?).await,
        Admin::Devices { user, dirs } => qchat_server::admin::list_devices(&dirs.dirs()?, user.as_deref()).await,
        Admin::Revoke { user, device, dirs } => {
            qchat_server::admin::revoke(&dirs.dirs()?, &user, device.as_deref()).await
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let mut cli = Cli::parse();
    if let Some(command) = cli.command.take() {
        return run_admin(command).await;
    }
    let data_dir = cli.data.unwrap_or_else(default_data_dir);
    println!("qchat relay data directory: {}", data_dir.display());
    let pki_dir = match cli.pki {
        Some(dir) => {
            if !PkiDir::new(&dir).exists() {
                anyhow::bail!(
                    "no PKI in {}: create one with `qchat-certs init --dir {} --host YOUR.HOST`",
                    dir.display(),
                    dir.display()
                );
            }
            print_client_commands(&dir, &data_dir);
            dir
        }
        None => {
            let dir = data_dir.join("pki");
            let made = ensure_demo_pki(&dir, cli.listen.port()).context("creating the demo PKI")?;
            if !made.is_empty() {
                println!("created a demo PKI in {} (a CA, localhost/127.0.0.1, alice and bob)", dir.display());
            }
            print_client_commands(&dir, &data_dir);
            dir
        }
    };
    let mut config = RelayConfig::new(pki_dir, data_dir, cli.listen);
    config.limits.max_file_size = cli.max_file_size;
    config.limits.quota = cli.quota;
    config.limits.retention = Duration::from_secs(cli.retention_days * 24 * 3600);
    config.limits.expiry = Duration::from_secs(cli.expiry_days * 24 * 3600);
    config.limits.message_retention = Duration::from_secs(cli.message_retention_days * 24 * 3600);
    config.limits.message_expiry = Duration::from_secs(cli.message_expiry_days * 24 * 3600);
    config.limits.max_waiting_files = cli.max_waiting_files;
    config.limits.max_waiting_message_bytes = cli.max_waiting_message_bytes;
    config.limits.max_transfers = cli.max_transfers.max(1);
    config.limits.max_transfers_per_user = cli.max_transfers_per_user.clamp(1, config.limits.max_transfers);
    config.limits.stall_timeout = Duration::from_secs(cli.stall_timeout_secs.max(1));
    config.limits.window_budget = cli.window_budget;
    config.limits.device_lifetime = Duration::from_secs(cli.device_cert_days.max(1) * 24 * 3600);
    config.limits.enroll_failures_per_minute = cli.failed_joins_per_minute.max(1);
    let relay = Relay::start(config).await?;
    println!("listening on udp {}; Ctrl-C stops it", relay.local_addr());
    wait_for_stop_signal().await;
    if tokio::time::timeout(Duration::from_secs(5), relay.shutdown()).await.is_err() {
        eprintln!("shutdown took longer than 5 s; exiting anyway");
    }
    Ok(())
}

fn print_client_commands(pki: &std::path::Path, data: &std::path::Path) {
    let dir = PkiDir::new(pki);
    let identities: Vec<(String, PathBuf)> = dir
        .users()
        .unwrap_or_default()
        .into_iter()
        .map(|user| (user.clone(), dir.identity(&user)))
        .filter(|(_, path)| path.exists())
        .collect();
    if !identities.is_empty() {
        println!("start the clients, one per person (desktop window, or terminal):");
    }
    for (user, id) in &identities {
        println!("  {user}: qchat --identity {}", id.display());
        println!("  {user}: qchat-cli --identity {} chat", id.display());
    }
    println!("to bring a person (or another device) in with a one-time invite:");
    println!(
        "  qchat-server invite NAME --pki {} --data {} --server HOST:PORT   # then on their PC: qchat-cli join INVITE --out FILE",
        pki.display(),
        data.display()
    );
    println!("from a source checkout, run them as `cargo run --release -p qchat-gui --bin qchat -- ARGS`");
    println!("and `cargo run --release -p qchat-client --bin qchat-cli -- ARGS`");
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
