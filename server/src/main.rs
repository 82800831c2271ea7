//! `qchat-server`: runs the relay until Ctrl-C or SIGTERM, with its flags or a config
//! file; its subcommands make invites, list people and devices, revoke them, show the
//! relay's status and check a config file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use qchat_certs::PkiDir;
use qchat_server::bootstrap::{default_data_dir, ensure_demo_pki};
use qchat_server::options::Settings;
use qchat_server::Relay;
use qchat_shared::stop::StopSignal;

#[derive(Parser)]
#[command(name = "qchat-server", version, about = "The qchat relay", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Admin>,
    /// Read settings from this TOML file: its keys are the flags' names with `_` for `-`
    /// (e.g. `max_file_size = "16G"`); flags given as well win.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

/// Where a subcommand finds the relay's PKI and data (the relay's own flags, or its
/// config file).
#[derive(clap::Args)]
struct DirArgs {
    /// The relay's PKI (default: DATA/pki).
    #[arg(long)]
    pki: Option<PathBuf>,
    /// The relay's data directory (default: the platform's data directory).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The relay's config file, for its `pki` and `data` (and, for `status`, its limits).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl DirArgs {
    /// The relay's settings as these flags and its config file give them.
    fn settings(&self) -> Result<Settings> {
        let flags = Settings { pki: self.pki.clone(), data: self.data.clone(), ..Settings::default() };
        Ok(match &self.config {
            Some(path) => flags.over(Settings::from_file(path)?),
            None => flags,
        })
    }

    fn dirs(&self) -> Result<qchat_server::admin::Dirs> {
        dirs_of(&self.settings()?)
    }
}

fn dirs_of(settings: &Settings) -> Result<qchat_server::admin::Dirs> {
    let data = settings.data.clone().unwrap_or_else(default_data_dir);
    Ok(qchat_server::admin::Dirs { pki: qchat_server::admin::pki_of(settings.pki.clone(), &data)?, data })
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
        /// host, and the port of the config file's `listen`, or 21567).
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
    /// Shows the relay, running or not: people and devices, who is connected from where,
    /// rooms and members, files in the spool, disk used, totals.
    Status {
        #[command(flatten)]
        dirs: DirArgs,
        /// One JSON object on one line (sizes in bytes, times RFC 3339).
        #[arg(long)]
        json: bool,
    },
    /// Checks a config file: prints `FILE:LINE: what is wrong` and exits non-zero, or
    /// says it is fine.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

async fn run_admin(command: Admin) -> Result<()> {
    match command {
        Admin::Invite { name, dirs, server, expires } => {
            // By default, the port the relay listens on (its config file's `listen`).
            let settings = dirs.settings()?;
            let dirs = dirs_of(&settings)?;
            let server = match server {
                Some(server) => server,
                None => qchat_server::admin::default_server(&dirs.pki, settings.listen_addr().port())?,
            };
            qchat_server::admin::invite(&dirs, &name, Some(server), expires).await
        }
        Admin::Users { dirs } => qchat_server::admin::users(&dirs.dirs()?).await,
        Admin::Devices { user, dirs } => qchat_server::admin::list_devices(&dirs.dirs()?, user.as_deref()).await,
        Admin::Revoke { user, device, dirs } => {
            qchat_server::admin::revoke(&dirs.dirs()?, &user, device.as_deref()).await
        }
        Admin::Status { dirs, json } => {
            let settings = dirs.settings()?;
            let status = qchat_server::status::gather(&dirs_of(&settings)?, &settings.limits())?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                print!("{}", qchat_server::status::render(&status));
            }
            Ok(())
        }
        Admin::CheckConfig { config } => {
            let settings = Settings::from_file(&config)?;
            if let Some(pki) = &settings.pki {
                if !PkiDir::new(pki).exists() {
                    println!(
                        "{}: note: no PKI in {} yet (make one with `qchat-certs init`)",
                        config.display(),
                        pki.display()
                    );
                }
            }
            println!("{}: ok", config.display());
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let settings = match &cli.config {
        Some(path) => match Settings::from_file(path) {
            Ok(file) => std::mem::take(&mut cli.settings).over(file),
            Err(e) => return fail(e.into()),
        },
        None => std::mem::take(&mut cli.settings),
    };
    // The MLS store made with a demo identity logs its migrations at info.
    qchat_shared::logging::init("info,refinery_core=warn", settings.log_format.unwrap_or_default());
    let done = match cli.command.take() {
        Some(command) => run_admin(command).await,
        None => run_relay(settings).await,
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Says why on stderr (a config file's errors as `FILE:LINE: …`), for a non-zero exit.
fn fail(error: anyhow::Error) -> ExitCode {
    eprintln!("{error:#}");
    ExitCode::FAILURE
}

async fn run_relay(settings: Settings) -> Result<()> {
    qchat_shared::allocator::tune();
    let data_dir = settings.data.clone().unwrap_or_else(default_data_dir);
    println!("qchat relay data directory: {}", data_dir.display());
    let pki_dir = match &settings.pki {
        Some(dir) => {
            if !PkiDir::new(dir).exists() {
                anyhow::bail!(
                    "no PKI in {}: create one with `qchat-certs init --dir {} --host YOUR.HOST`",
                    dir.display(),
                    dir.display()
                );
            }
            print_client_commands(dir, &data_dir);
            dir.clone()
        }
        None => {
            let dir = data_dir.join("pki");
            let made = ensure_demo_pki(&dir, settings.listen_addr().port()).context("creating the demo PKI")?;
            if !made.is_empty() {
                println!("created a demo PKI in {} (a CA, localhost/127.0.0.1, alice and bob)", dir.display());
            }
            print_client_commands(&dir, &data_dir);
            dir
        }
    };
    let config = settings.relay_config(pki_dir, data_dir);
    let mut relay = Relay::start(config).await?;
    if let Some(addr) = settings.metrics {
        match relay.serve_metrics(addr).await {
            Ok(bound) => println!("metrics on http://{bound}/metrics"),
            Err(e) => {
                relay.shutdown().await;
                return Err(anyhow::Error::from(e).context(format!("serving metrics on {addr}")));
            }
        }
    }
    let mut stop = StopSignal::listen().context("listening for Ctrl-C and SIGTERM")?;
    println!("listening on udp {}; Ctrl-C stops it", relay.local_addr());
    stop.stopped().await;
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
