//! `qchat-bench`: end-to-end figures for qchat on this machine, in one run, next to raw
//! QUIC: file upload and download through a real relay (a child process with its SQLite
//! store and spool), chat latency idle and during a transfer, durable chat messages per
//! second, fan-out through rooms of many users, the relay's peak memory, and what sealing
//! files end to end costs a core.

mod cipher;
mod e2e;
mod pin;
mod raw;
mod relay_child;
mod report;
mod rooms;
mod scp;
mod wan;

use raw::Raw;
use rooms::RoomsPlan;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(name = "qchat-bench", about = "qchat end-to-end benchmark against raw QUIC")]
struct Cli {
    /// Bytes to move (e.g. 1G, 4G, 64M).
    #[arg(long, default_value = "1G", value_parser = qchat_shared::units::parse_size)]
    size: u64,
    /// A small run for CI: 64 MiB, fewer messages, one round.
    #[arg(long)]
    quick: bool,
    /// Rounds of raw QUIC, upload and download, interleaved; the best of each counts.
    /// This VM's speed drifts over tens of seconds, so one round can catch raw QUIC in a
    /// fast phase and qchat in a slow one (or the other way round).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also move a file through the relay over an emulated link of this round trip (ms),
    /// rate (Mbit/s) and random loss (a fraction): e.g. `200,400,0` or `100,400,0.005`.
    #[arg(long, value_name = "RTT_MS,RATE_MBIT,LOSS")]
    wan: Option<wan::WanSpec>,
    /// The file's size over the emulated link.
    #[arg(long, default_value = "256M", value_parser = qchat_shared::units::parse_size)]
    wan_size: u64,
    /// Measure only over the emulated link (skip the loopback rounds and chat figures).
    #[arg(long, requires = "wan")]
    only_wan: bool,
    /// Also time scp (AES-128-GCM) copying the file to a loopback sshd, beside the handoff.
    #[arg(long)]
    scp: bool,
    /// Users in the rooms case (each a client with its own connection).
    #[arg(long, default_value_t = 50)]
    room_users: usize,
    /// Rooms in the rooms case, each of `--room-members` users.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    #[arg(long, default_value_t = 10)]
    room_members: usize,
    /// One JSON line instead of a table.
    #[arg(long)]
    json: bool,
    /// Each party on a core of its own: the clients on CPU 0, the relay on CPU 1 (raw
    /// QUIC's receiver and scp's sshd too), to show what the code does when the parties
    /// do not share cores. Needs two cores.
    #[arg(long)]
    pin: bool,
    /// Where to put the test file, the relay's data and the downloads (default: a temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Internal: run as the relay child process.
    #[arg(long, hide = true)]
    relay_mode: bool,
    #[arg(long, hide = true)]
    pki: Option<PathBuf>,
    #[arg(long, hide = true)]
    data: Option<PathBuf>,
    /// Internal: the relay child's core.
    #[arg(long, hide = true)]
    cpu: Option<usize>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    // As the relay's and the clients' binaries do (this process is one or the other).
    qchat_shared::allocator::tune();
    let cli = Cli::parse();
    // Pinned before the runtime starts its threads, which inherit the core.
    if let Some(cpu) = cli.cpu {
        pin::to_cpu(cpu).with_context(|| format!("pinning the relay to CPU {cpu}"))?;
    }
    let receiver = if cli.pin {
        pin::check()?;
        pin::to_cpu(pin::CLIENTS_CPU).context("pinning the clients")?;
        Some(pin::runtime_on(pin::RELAY_CPU)?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if cli.relay_mode {
        let (pki, data) = (cli.pki.context("--pki")?, cli.data.context("--data")?);
        return runtime.block_on(relay_child::serve(pki, data));
    }
    let size = if cli.quick { 64 << 20 } else { cli.size };
    let messages = if cli.quick { 1000 } else { 5000 };
    let rounds = if cli.quick { 1 } else { cli.rounds.max(1) };
    let room_members = cli.room_members.clamp(2, cli.room_users.max(2));
    let rooms = rooms::RoomsPlan {
        users: cli.room_users.max(room_members),
        rooms: cli.rooms.max(1),
        members_per_room: room_members,
        messages: if cli.quick { 500 } else { 5000 },
    };
    let plan = Plan {
        size,
        messages,
        rooms,
        rounds: if cli.only_wan { 0 } else { rounds },
        scp: cli.scp,
        receiver: receiver.as_ref().map(|r| r.handle().clone()),
        wan: cli.wan.map(|spec| (spec, if cli.quick { cli.wan_size.min(64 << 20) } else { cli.wan_size })),
    };
    let figures = runtime.block_on(run(plan, cli.dir))?;
    if cli.json {
        println!("{}", figures.to_json());
    } else {
        figures.print_table();
    }
    Ok(())
}

/// What one run measures.
struct Plan {
    size: u64,
    messages: usize,
    rooms: rooms::RoomsPlan,
    /// Loopback rounds; 0 for none (and then no chat figures either).
    rounds: usize,
    /// The emulated link and the file's size over it.
    wan: Option<(wan::WanSpec, u64)>,
    scp: bool,
    /// With `--pin`: the runtime, on the relay's core, that raw QUIC's receiver runs on.
    receiver: Option<tokio::runtime::Handle>,
}

async fn run(plan: Plan, dir: Option<PathBuf>) -> Result<report::Figures> {
    let Plan { size, messages, rooms: rooms_plan, rounds, wan, scp, receiver } = plan;
    let pinned = receiver.is_some();
    let relay_cpu = pinned.then_some(pin::RELAY_CPU);
    let tmp = tempfile::Builder::new().prefix("qchat-bench").tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
    let pki = tmp.path().join("pki");
    qchat_certs::init(&pki, &["localhost".into(), "127.0.0.1".into()])?;
    let room_users = if rounds > 0 { rooms::user_names(rooms_plan.users) } else { Vec::new() };
    for user in ["alice".to_string(), "bob".to_string()].iter().chain(&room_users) {
        qchat_certs::issue_user(&pki, user, "127.0.0.1:21567")?;
    }
    let file = tmp.path().join("payload.bin");
    if rounds > 0 {
        eprintln!("writing a {} test file …", qchat_shared::units::human_bytes(size));
        e2e::write_payload(&file, size)?;
    }
    let relay = relay_child::RelayChild::spawn(&pki, &tmp.path().join("relay-data"), relay_cpu).await?;
    // Over the emulated link first, with the devices' state where the loopback clients keep
    // theirs (one device, one end-to-end state: a second store would be a stranger to the
    // room's group), before those connect.
    let wan = match wan {
        Some((spec, wan_size)) => {
            eprintln!(
                "{} over an emulated {} Mbit/s link, {} ms round trip, loss {} …",
                qchat_shared::units::human_bytes(wan_size),
                spec.rate_mbit,
                spec.rtt_ms,
                spec.loss
            );
            let wan_file = tmp.path().join("wan.bin");
            e2e::write_payload(&wan_file, wan_size)?;
            let figures = wan::run(&pki, &relay, tmp.path(), spec, &wan_file).await?;
            std::fs::remove_file(wan_file)?;
            // The loopback figures' peak is their own.
            relay.reset_peak_rss()?;
            Some(figures)
        }
        None => None,
    };
    let mut run = e2e::E2e::connect(&pki, relay.addr, tmp.path()).await?;

    let gib = size as f64 / (1u64 << 30) as f64;
    let cpu = || -> Result<report::Snapshot> {
        Ok(report::Snapshot {
            relay: relay.cpu_seconds()?,
            bench: relay_child::cpu_seconds("/proc/self/stat")?,
            udp_drops: relay_child::udp_receive_buffer_drops(),
        })
    };
    let mut throughput = report::Throughput::default();
    for round in 1..=rounds {
        eprintln!(
            "round {round} of {rounds}: raw QUIC, upload, download of {} …",
            qchat_shared::units::human_bytes(size)
        );
        let before = cpu()?;
        throughput.raw_tuned.push(raw::one_stream(&pki, size, Raw::QchatSettings, receiver.as_ref()).await?);
        let after_raw = cpu()?;
        throughput.raw_default.push(raw::one_stream(&pki, size, Raw::QuinnDefaults, receiver.as_ref()).await?);
        let before_hashed = cpu()?;
        throughput.raw_hashed.push(raw::one_stream(&pki, size, Raw::Hashed, receiver.as_ref()).await?);
        let before_sealed = cpu()?;
        throughput.raw_sealed.push(raw::one_stream(&pki, size, Raw::Sealed, receiver.as_ref()).await?);
        let before_upload = cpu()?;
        throughput.upload.push(run.upload(&file).await?);
        let after_upload = cpu()?;
        let (download, saved) = run.download(size).await?;
        throughput.download.push(download);
        let after_download = cpu()?;
        std::fs::remove_file(saved)?;
        eprintln!("  {}", throughput.last_round());
        throughput.raw_cpu.add(before, after_raw, gib);
        throughput.raw_hashed_cpu.add(before_hashed, before_sealed, gib);
        throughput.raw_sealed_cpu.add(before_sealed, before_upload, gib);
        throughput.upload_cpu.add(before_upload, after_upload, gib);
        throughput.download_cpu.add(after_upload, after_download, gib);
    }
    let peak_rss = relay.peak_rss_mib()?;
    let chat = if rounds > 0 {
        eprintln!("chat …");
        let idle = run.chat_latency(200).await?;
        let during = run.chat_latency_during_upload(&file, 200).await?;
        let msgs_per_s = run.messages_per_second(messages).await?;
        Some(report::Chat { idle, during, msgs_per_s })
    } else {
        None
    };
    let handoff = if rounds > 0 {
        eprintln!("handoff: alice sends, bob already waiting …");
        let scp_s = if scp { Some(scp::time_scp(&tmp.path().join("scp"), &file, relay_cpu)?) } else { None };
        Some(report::Handoff { seconds: run.handoff(&file).await?, scp_s })
    } else {
        None
    };
    // Both save their state and close before their directory goes.
    run.stop().await;
    let rooms = if rounds > 0 {
        let RoomsPlan { users, rooms, members_per_room, messages } = rooms_plan;
        eprintln!("rooms: {users} users, {rooms} rooms of {members_per_room}, {messages} messages …");
        Some(rooms::run(&pki, relay.addr, &tmp.path().join("rooms"), rooms_plan).await?)
    } else {
        None
    };
    let peak_rss = peak_rss.max(relay.peak_rss_mib()?);
    relay.stop();
    let cipher = (rounds > 0).then(|| {
        eprintln!("sealing and opening files on one core …");
        cipher::measure(size.min(1 << 30) as usize)
    });
    // A run leaves the file, the relay's spool and the downloads behind unless this works:
    // say so rather than fill the disk unseen.
    let kept = tmp.path().to_path_buf();
    if let Err(e) = tmp.close() {
        eprintln!("warning: cannot remove {}: {e}", kept.display());
    }
    Ok(report::Figures { size, throughput, chat, handoff, rooms, wan, cipher, relay_peak_rss_mib: peak_rss, pinned })
}
