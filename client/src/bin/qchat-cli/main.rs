//! `qchat-cli`: the qchat client without a window, for scripts and terminals.

mod output;

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use qchat_client::args::ConnectArgs;
use qchat_client::rooms::Rooms;
use qchat_client::{Client, ConnectionState, Event, RoomRequest};
use qchat_shared::frame::Status;
use qchat_shared::stop::StopSignal;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc::UnboundedReceiver;

use output::Printer;

#[derive(Parser)]
#[command(name = "qchat-cli", version, about = "qchat without a window")]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    /// One JSON object per line for every event.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The room a command is about.
#[derive(clap::Args, Clone, Default)]
struct Target {
    /// A room you are in.
    #[arg(long, conflicts_with = "to")]
    room: Option<String>,
    /// The direct room with this user (made when either first writes to the other).
    #[arg(long)]
    to: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Send one message and wait until the relay has stored it. Without --room or --to it
    /// goes to your only room, or to the direct room with the relay's only other user.
    Send {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        text: Vec<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Print messages as they arrive (those that waited first) and acknowledge them: of
    /// every room of yours, or only of the one named.
    Listen {
        #[command(flatten)]
        target: Target,
        /// Exit after this many messages, once the relay confirmed their acknowledgement.
        #[arg(long)]
        count: Option<usize>,
        /// Exit non-zero if this many seconds pass first.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// An interactive chat: lines you type are sent (to the room named, or the default
    /// room); messages of every room are shown; `/status` and `/quit` work too.
    Chat {
        #[command(flatten)]
        target: Target,
    },
    /// Show the connection, who else is on the relay, and what waits.
    Status,
    /// Upload a file to the relay for a room's members; exit once the relay has it, verified.
    SendFile {
        #[command(flatten)]
        target: Target,
        path: PathBuf,
        /// Give up after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Fetch every file waiting for you (in every room, or the one named), verify each,
    /// and save it.
    Receive {
        #[command(flatten)]
        target: Target,
        /// Where to save (default: your download folder's `qchat`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Give up after this many seconds; with `--wait`, stop waiting then.
        #[arg(long)]
        timeout: Option<u64>,
        /// Stay connected and receive every file as it is offered, one still being
        /// uploaded included (it follows the upload), until Ctrl-C or SIGTERM; partial
        /// files are kept for a resume.
        #[arg(long)]
        wait: bool,
    },
    /// List the files waiting for you and the files you sent (in every room, or the one
    /// named).
    Files {
        #[command(flatten)]
        target: Target,
    },
    /// Your rooms: the list, a new one, or a change of members.
    Rooms {
        #[command(subcommand)]
        action: RoomsAction,
    },
    /// Join a relay as a new device with an invite: makes this device's key (it never
    /// leaves it) and writes its identity file. Needs no --identity.
    Join {
        /// The invite line (from `qchat-server invite` or `qchat-cli devices link`).
        invite: String,
        /// Where to write the identity file (0600); an existing file is never replaced.
        #[arg(long)]
        out: PathBuf,
        /// What to call this device (default: the computer's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Your devices: an invite for another, the list, or a revocation.
    Devices {
        #[command(subcommand)]
        action: DevicesAction,
    },
    /// Prints the devices of you and USER with their fingerprints, and as the last line the
    /// safety number of the two of you: USER sees the same digits if no one stands between
    /// you (compare them in person or on a call).
    Verify { user: String },
}

#[derive(Subcommand)]
enum DevicesAction {
    /// Prints a one-time invite for another device of yours, as the last line.
    Link,
    /// Lists your devices.
    List,
    /// Revokes one of your devices: its connections close and it cannot come back.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum RoomsAction {
    /// Lists your rooms, their members, and who is online.
    List,
    /// Makes a room (its name unique on the relay) with you and these users in it.
    Create {
        name: String,
        /// Users of the relay, separated by commas.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
    },
    /// Adds a user to a room you created.
    Add { name: String, user: String },
    /// Removes a member from a room you created.
    Remove { name: String, user: String },
    /// Leaves a room.
    Leave { name: String },
}

/// Why a command failed, already said to the user.
struct Failed;

/// The core's events, with those read ahead while waiting for something first.
struct Inbox {
    early: VecDeque<Event>,
    events: UnboundedReceiver<Event>,
}

impl Inbox {
    async fn recv(&mut self) -> Option<Event> {
        match self.early.pop_front() {
            Some(event) => Some(event),
            None => self.events.recv().await,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    qchat_shared::logging::init("warn", qchat_shared::logging::LogFormat::Text);
    qchat_shared::allocator::tune();
    let cli = Cli::parse();
    let mut printer = Printer::new(cli.json);
    if let Command::Join { invite, out, name } = &cli.command {
        return match join(&printer, &cli.connect, invite, out, name.clone()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failed) => ExitCode::FAILURE,
        };
    }
    let mut options = match cli.connect.options() {
        Ok(options) => options,
        Err(e) => {
            printer.error(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    options.receive = matches!(cli.command, Command::Listen { .. } | Command::Chat { .. });
    printer.me = options.identity.user.clone();
    let (client, events) = Client::start(options);
    let mut events = Inbox { early: VecDeque::new(), events };
    let (events, printer) = (&mut events, &mut printer);
    let result = match cli.command {
        Command::Send { target, text, timeout } => {
            send(&client, events, printer, &target, text.join(" "), timeout).await
        }
        Command::Listen { target, count, timeout } => listen(events, printer, &target, count, timeout).await,
        Command::Chat { target } => chat(&client, events, printer, &target).await,
        Command::Status => status(&client, events, printer).await,
        Command::SendFile { target, path, timeout } => {
            send_file(&client, events, printer, &target, path, timeout).await
        }
        Command::Receive { target, out, timeout, wait } => {
            receive_files(&client, events, printer, &target, out, timeout, wait).await
        }
        Command::Files { target } => files(&client, events, printer, &target).await,
        Command::Rooms { action } => rooms(&client, events, printer, action).await,
        Command::Devices { action } => devices(&client, events, printer, action).await,
        Command::Verify { user } => verify(&client, events, printer, user).await,
        Command::Join { .. } => unreachable!("joined above"),
    };
    client.shutdown();
    let closed = async {
        while let Some(event) = events.recv().await {
            if let Event::Connection(ConnectionState::Closed | ConnectionState::Refused { .. }) = event {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), closed).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed) => ExitCode::FAILURE,
    }
}

/// Waits for the first connection; a refusal or a failed first attempt ends the command.
async fn connected(events: &mut Inbox, printer: &Printer) -> Result<Status, Failed> {
    while let Some(event) = events.recv().await {
        match event {
            Event::Connection(ConnectionState::Connected(status)) => return Ok(status),
            Event::Connection(ConnectionState::Refused { reason } | ConnectionState::Reconnecting { reason, .. }) => {
                printer.error(&reason);
                return Err(Failed);
            }
            _ => {}
        }
    }
    Err(Failed)
}

/// Waits for the first connection and the list of rooms that follows it (what comes in
/// between is kept for later); returns our rooms and the room `target` names, checked
/// (none: the default, or every room).
async fn connected_to(
    events: &mut Inbox,
    printer: &Printer,
    target: &Target,
) -> Result<(Rooms, Option<String>), Failed> {
    let status = connected(events, printer).await?;
    let mut early = VecDeque::new();
    let mut rooms = Rooms::default();
    loop {
        match events.recv().await {
            Some(Event::Rooms(list)) => {
                rooms.listed(list, true);
                break;
            }
            Some(Event::Connection(
                ConnectionState::Refused { reason } | ConnectionState::Reconnecting { reason, .. },
            )) => {
                printer.error(&reason);
                return Err(Failed);
            }
            Some(event) => early.push_back(event),
            None => return Err(Failed),
        }
    }
    early.append(&mut events.early);
    events.early = early;
    let room = rooms.target(&status.user, target.room.as_deref(), target.to.as_deref());
    let room = room.map_err(|reason| printer.error(&reason)).map_err(|_| Failed)?;
    Ok((rooms, room))
}

/// Runs `work`, giving up after `secs` seconds if given.
async fn with_deadline<F: std::future::Future<Output = Result<(), Failed>>>(
    secs: Option<u64>,
    work: F,
) -> Result<Result<(), Failed>, u64> {
    match secs {
        None => Ok(work.await),
        Some(secs) => tokio::time::timeout(Duration::from_secs(secs), work).await.map_err(|_| secs),
    }
}

/// Prints events until `outcome` says the command succeeded (`Some(true)`) or failed
/// (`Some(false)`), or the relay refuses us; with `echo`, the events on the way too.
async fn until_outcome(
    events: &mut Inbox,
    printer: &mut Printer,
    outcome: impl Fn(&Event) -> Option<bool>,
    echo: bool,
) -> Result<(), Failed> {
    while let Some(event) = events.recv().await {
        if let Event::Connection(ConnectionState::Refused { reason }) = &event {
            printer.error(reason);
            return Err(Failed);
        }
        match outcome(&event) {
            Some(ok) => {
                printer.event(&event, false);
                return if ok { Ok(()) } else { Err(Failed) };
            }
            None if echo => printer.event(&event, false),
            None => {}
        }
    }
    Err(Failed)
}

/// Says so when a command ran out of time.
fn or_gave_up(printer: &Printer, what: &str, result: Result<Result<(), Failed>, u64>) -> Result<(), Failed> {
    result.unwrap_or_else(|secs| {
        printer.error(&format!("{what}: gave up after {secs} s"));
        Err(Failed)
    })
}

async fn send(
    client: &Client,
    events: &mut Inbox,
    printer: &mut Printer,
    target: &Target,
    text: String,
    secs: u64,
) -> Result<(), Failed> {
    let result = with_deadline(Some(secs), async {
        let (_, room) = connected_to(events, printer, target).await?;
        let id = client.send_to(room, text);
        let outcome = |event: &Event| match event {
            Event::Stored { id: stored, .. } if *stored == id => Some(true),
            Event::SendFailed { id: failed, .. } if *failed == id => Some(false),
            _ => None,
        };
        until_outcome(events, printer, outcome, false).await
    })
    .await;
    or_gave_up(printer, "send", result)
}

async fn listen(
    events: &mut Inbox,
    printer: &mut Printer,
    target: &Target,
    count: Option<usize>,
    secs: Option<u64>,
) -> Result<(), Failed> {
    let what = match count {
        Some(n) => format!("listen for {n} message(s)"),
        None => "listen".into(),
    };
    let result = with_deadline(secs, async {
        let (_, room) = connected_to(events, printer, target).await?;
        let in_room = |name: &str| room.as_deref().is_none_or(|r| r == name);
        let mut printed = 0usize;
        let mut unconfirmed: HashSet<u64> = HashSet::new();
        if count == Some(0) {
            return Ok(());
        }
        while let Some(event) = events.recv().await {
            match &event {
                Event::Message(m) if in_room(&m.room) && count.is_none_or(|n| printed < n) => {
                    printer.event(&event, false);
                    printed += 1;
                    unconfirmed.insert(m.seq);
                }
                Event::AckConfirmed { seqs } => {
                    for seq in seqs {
                        unconfirmed.remove(seq);
                    }
                }
                Event::Connection(ConnectionState::Refused { reason }) => {
                    printer.error(reason);
                    return Err(Failed);
                }
                Event::FileOffered(offer) if in_room(&offer.room) => printer.event(&event, false),
                Event::RoomChanged { room, .. } if in_room(room) => printer.event(&event, false),
                Event::Connection(_) => printer.event(&event, false),
                _ => {}
            }
            if count.is_some_and(|n| printed >= n) && unconfirmed.is_empty() {
                return Ok(());
            }
        }
        Err(Failed)
    })
    .await;
    or_gave_up(printer, &what, result)
}

async fn chat(client: &Client, events: &mut Inbox, printer: &mut Printer, target: &Target) -> Result<(), Failed> {
    let (_, room) = connected_to(events, printer, target).await?;
    client.request_status();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => match line.trim() {
                    "" => {}
                    "/quit" => return Ok(()),
                    "/status" => client.request_status(),
                    _ => {
                        client.send_to(room.clone(), line);
                    }
                },
                _ => return Ok(()),
            },
            event = events.recv() => match event {
                Some(Event::Connection(ConnectionState::Refused { reason })) => {
                    printer.error(&reason);
                    return Err(Failed);
                }
                Some(event) => printer.event(&event, true),
                None => return Err(Failed),
            }
        }
    }
}

async fn status(client: &Client, events: &mut Inbox, printer: &mut Printer) -> Result<(), Failed> {
    let result = with_deadline(Some(30), async {
        connected(events, printer).await?;
        client.request_status();
        until_outcome(events, printer, |e| matches!(e, Event::Status(_)).then_some(true), false).await
    })
    .await;
    or_gave_up(printer, "status", result)
}

async fn send_file(
    client: &Client,
    events: &mut Inbox,
    printer: &mut Printer,
    target: &Target,
    path: PathBuf,
    secs: Option<u64>,
) -> Result<(), Failed> {
    let what = format!("send-file {}", path.display());
    let (_, room) = connected_to(events, printer, target).await?;
    let transfer = client.send_file_to(room, path);
    let outcome = |event: &Event| match event {
        Event::Uploaded { transfer: t, .. } if *t == transfer => Some(true),
        Event::TransferFailed { transfer: t, .. } if *t == transfer => Some(false),
        _ => None,
    };
    let work = until_outcome(events, printer, outcome, true);
    let result = with_deadline(secs, work).await;
    or_gave_up(printer, &what, result)
}

/// `receive`: fetches what waits and exits; with `wait`, receives every file as it is
/// offered until a stop signal or the timeout. Fails at the end if a file failed.
async fn receive_files(
    client: &Client,
    events: &mut Inbox,
    printer: &mut Printer,
    target: &Target,
    out: Option<PathBuf>,
    secs: Option<u64>,
    wait: bool,
) -> Result<(), Failed> {
    // Listening starts before anything is printed, so a stop sent once output shows is seen.
    let mut stop = match wait.then(StopSignal::listen).transpose() {
        Ok(stop) => stop,
        Err(e) => {
            printer.error(&format!("listening for Ctrl-C and SIGTERM: {e}"));
            return Err(Failed);
        }
    };
    let connecting = connected_to(events, printer, target);
    let (_, room) = match &mut stop {
        // A stop while it connects ends it as cleanly as one later.
        Some(stop) => tokio::select! {
            connected = connecting => connected?,
            _ = stop.stopped() => return Ok(()),
        },
        None => connecting.await?,
    };
    if wait {
        client.receive_as_offered_in(room, out);
    } else {
        client.receive_all_in(room, out);
    }
    let (mut saved, mut failed) = (0usize, 0usize);
    let work = async {
        let mut expected = None;
        while let Some(event) = events.recv().await {
            match &event {
                Event::Receiving { count } => expected = Some(*count),
                Event::FileSaved { .. } => saved += 1,
                Event::TransferFailed { .. } => failed += 1,
                Event::Connection(ConnectionState::Refused { reason }) => {
                    printer.error(reason);
                    return Err(Failed);
                }
                Event::Files { .. } => continue,
                _ => {}
            }
            printer.event(&event, false);
            if !wait && expected.is_some_and(|n| saved + failed >= n) {
                return Ok(());
            }
        }
        Err(Failed)
    };
    if let Some(stop) = &mut stop {
        tokio::select! {
            ended = work => ended?,
            _ = stop.stopped() => {}
            _ = sleep_for(secs) => {}
        }
    } else {
        let result = with_deadline(secs, work).await;
        or_gave_up(printer, "receive", result)?;
    }
    if failed > 0 {
        printer.error(&format!("{failed} of {} file(s) failed (see above)", saved + failed));
        return Err(Failed);
    }
    Ok(())
}

/// Sleeps `secs` seconds, or for ever.
async fn sleep_for(secs: Option<u64>) {
    match secs {
        Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
        None => std::future::pending().await,
    }
}

async fn files(client: &Client, events: &mut Inbox, printer: &mut Printer, target: &Target) -> Result<(), Failed> {
    let result = with_deadline(Some(30), async {
        let (_, room) = connected_to(events, printer, target).await?;
        printer.only_room = room;
        client.list_files();
        // A listing comes in pages: print each, and stop after the last.
        while let Some(event) = events.recv().await {
            match &event {
                Event::Connection(ConnectionState::Refused { reason }) => {
                    printer.error(reason);
                    return Err(Failed);
                }
                Event::Files { last, .. } => {
                    printer.event(&event, false);
                    if *last {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        Err(Failed)
    })
    .await;
    or_gave_up(printer, "files", result)
}

/// `join`: enrolls this device with an invite and writes its identity file.
async fn join(
    printer: &Printer,
    connect: &ConnectArgs,
    invite: &str,
    out: &std::path::Path,
    name: Option<String>,
) -> Result<(), Failed> {
    qchat_client::args::check_new_identity_path(out).map_err(|e| printer.error(&e)).map_err(|_| Failed)?;
    let name = name.unwrap_or_else(qchat_client::args::default_device_name);
    let joined =
        qchat_client::enroll::join(invite, &name).await.map_err(|e| printer.error(&e.0)).map_err(|_| Failed)?;
    qchat_client::args::write_new_identity(out, &joined.identity).map_err(|e| printer.error(&e)).map_err(|_| Failed)?;
    // Its key packages go to the relay now, so that it can be written to before it runs.
    let options = connect.options_for(out).map_err(|e| printer.error(&e.to_string())).map_err(|_| Failed)?;
    if let Err(reason) = qchat_client::enroll::publish_keys(options).await {
        printer.error(&format!("joined, but the device's end-to-end keys were not published yet ({reason}); they are when it first connects"));
    }
    let user = &joined.identity.user;
    printer.emit(
        serde_json::json!({"event": "joined", "user": user, "device": joined.device, "path": out.display().to_string()}),
        format!(
            "joined as {} (device {}); identity written to {}\nstart chatting: qchat-cli --identity {} chat",
            qchat_shared::display::Escaped(user),
            joined.device,
            out.display(),
            out.display()
        ),
    );
    Ok(())
}

/// `rooms list|create|add|remove|leave`: the list as it came on connect, or one request and
/// its answer printed.
async fn rooms(client: &Client, events: &mut Inbox, printer: &mut Printer, action: RoomsAction) -> Result<(), Failed> {
    let (rooms, _) = connected_to(events, printer, &Target::default()).await?;
    let request = match action {
        RoomsAction::List => {
            printer.event(&Event::Rooms(rooms.list()), false);
            return Ok(());
        }
        RoomsAction::Create { name, members } => RoomRequest::Create { name, members },
        RoomsAction::Add { name, user } => RoomRequest::Add { room: name, user },
        RoomsAction::Remove { name, user } => RoomRequest::Remove { room: name, user },
        RoomsAction::Leave { name } => RoomRequest::Leave { room: name },
    };
    client.rooms(request);
    let done = |event: &Event| match event {
        Event::Room(_) => Some(Ok(())),
        Event::RoomRefused { reason } => Some(Err(reason.clone())),
        _ => None,
    };
    answer(events, printer, "an answer about rooms", done).await
}

/// `devices link|list|revoke`: one request, its answer printed.
async fn devices(
    client: &Client,
    events: &mut Inbox,
    printer: &mut Printer,
    action: DevicesAction,
) -> Result<(), Failed> {
    connected(events, printer).await?;
    client.devices(match action {
        DevicesAction::Link => qchat_client::DeviceRequest::Link,
        DevicesAction::List => qchat_client::DeviceRequest::List,
        DevicesAction::Revoke { id } => qchat_client::DeviceRequest::Revoke(id),
    });
    let done = |event: &Event| match event {
        Event::DeviceInvite { .. } | Event::Devices(_) | Event::DeviceRevoked { .. } => Some(Ok(())),
        Event::DeviceRefused { reason } => Some(Err(reason.clone())),
        _ => None,
    };
    answer(events, printer, "an answer about devices", done).await
}

async fn verify(client: &Client, events: &mut Inbox, printer: &mut Printer, user: String) -> Result<(), Failed> {
    connected(events, printer).await?;
    client.verify(&user);
    let done = |event: &Event| match event {
        Event::SafetyNumber { .. } => Some(Ok(())),
        Event::LocalError { reason } => Some(Err(reason.clone())),
        _ => None,
    };
    answer(events, printer, "the safety number", done).await
}

/// Waits (30 s at most) for the answer to a request: the event `done` accepts (`Ok`,
/// printed) or a refusal (`Err`, its reason printed).
async fn answer(
    events: &mut Inbox,
    printer: &mut Printer,
    what: &str,
    done: impl Fn(&Event) -> Option<Result<(), String>>,
) -> Result<(), Failed> {
    let answer = async {
        while let Some(event) = events.recv().await {
            match (&event, done(&event)) {
                (_, Some(Ok(()))) => {
                    printer.event(&event, false);
                    return Ok(());
                }
                (_, Some(Err(reason))) => {
                    printer.error(&reason);
                    return Err(Failed);
                }
                (
                    Event::Connection(
                        ConnectionState::Refused { reason } | ConnectionState::Reconnecting { reason, .. },
                    ),
                    None,
                ) => {
                    printer.error(reason);
                    return Err(Failed);
                }
                _ => {}
            }
        }
        Err(Failed)
    };
    let answered = tokio::time::timeout(Duration::from_secs(30), answer).await.map_err(|_| 30);
    or_gave_up(printer, what, answered)
}
