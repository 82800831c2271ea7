//! How qchat-cli prints events: readable lines, or one JSON object per line with `--json`.
//! In readable lines, text from the network (messages, names, reasons) is shown with
//! control characters, escape sequences and bidirectional controls made visible
//! ([`Escaped`]), so a peer cannot write to the terminal.

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use qchat_client::{ConnectionState, Event, TransferId};
use qchat_shared::display::Escaped;
use qchat_shared::frame::{DeviceInfo, FileEntry, FileState, Status};
use qchat_shared::hex;
use qchat_shared::units::human_bytes;
use serde_json::{json, Value};

/// Prints events in the chosen form.
pub struct Printer {
    pub json: bool,
    /// Progress bars of running transfers (on a terminal, without `--json`).
    bars: HashMap<TransferId, ProgressBar>,
    /// A file listing's pages so far, printed as one list at its last page (readable
    /// lines only; with `--json` each page is a `files` event of its own).
    listing: (Vec<FileEntry>, Vec<FileEntry>),
    multi: MultiProgress,
}

pub use qchat_shared::units::rfc3339;

fn clock(time_ms: i64) -> String {
    let text = rfc3339(time_ms);
    text.get(11..19).map(|t| format!("{t} UTC")).unwrap_or(text)
}

fn status_json(status: &Status) -> Value {
    json!({
        "event": "status",
        "user": status.user,
        "peer": status.peer,
        "peer_online": status.peer_online,
        "waiting_for_you": status.waiting_for_you,
        "waiting_for_peer": status.waiting_for_peer,
    })
}

fn status_text(status: &Status) -> String {
    let peer = match &status.peer {
        Some(peer) => format!("{} is {}", Escaped(peer), if status.peer_online { "online" } else { "offline" }),
        None => "no peer yet (the relay's PKI has one identity)".into(),
    };
    format!(
        "connected as {}; {peer}; {} message(s) waiting for you, {} of yours waiting for the peer",
        Escaped(&status.user),
        status.waiting_for_you,
        status.waiting_for_peer
    )
}

fn entry_json(entry: &FileEntry) -> Value {
    let (state, held) = match entry.state {
        FileState::Uploading { held } => ("uploading", Some(held)),
        FileState::Offered => ("offered", None),
        FileState::Fetched => ("fetched", None),
        FileState::Expired { fetched: true } => ("expired_after_fetch", None),
        FileState::Expired { fetched: false } => ("expired_unfetched", None),
    };
    json!({
        "id": entry.info.file_id.to_string(), "name": entry.info.name, "size": entry.info.size,
        "from": entry.info.from, "state": state, "held": held,
        "blake3": entry.info.blake3.map(|h| hex::encode(&h)), "time": rfc3339(entry.info.time_ms),
    })
}

fn entry_text(entry: &FileEntry) -> String {
    let state = match entry.state {
        FileState::Uploading { held } => format!("uploading, {} on the relay", human_bytes(held)),
        FileState::Offered => "waiting to be fetched".into(),
        FileState::Fetched => "fetched".into(),
        FileState::Expired { fetched } => format!("expired{}", if fetched { " (was fetched)" } else { " unfetched" }),
    };
    let (id, size, name) = (entry.info.file_id, human_bytes(entry.info.size), Escaped(&entry.info.name));
    format!("  {id}  {size:>10}  {name}  [{state}]")
}

impl Printer {
    pub fn new(json: bool) -> Self {
        Printer { json, bars: HashMap::new(), listing: Default::default(), multi: MultiProgress::new() }
    }

    pub fn emit(&self, value: Value, text: String) {
        if self.json {
            println!("{value}");
        } else if self.multi.is_hidden() {
            println!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }

    fn bar(&mut self, transfer: TransferId, name: &str, total: u64) -> &ProgressBar {
        self.bars.entry(transfer).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(total));
            let style =
                ProgressStyle::with_template("{msg:20!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(Escaped(name).to_string());
            bar
        })
    }

    fn end_bar(&mut self, transfer: TransferId) {
        if let Some(bar) = self.bars.remove(&transfer) {
            bar.finish_and_clear();
        }
    }

    /// Prints a page of a file listing.
    pub fn files(&mut self, incoming: &[FileEntry], outgoing: &[FileEntry], last: bool) {
        if self.json {
            let value = json!({"event": "files", "incoming": incoming.iter().map(entry_json).collect::<Vec<_>>(),
                               "outgoing": outgoing.iter().map(entry_json).collect::<Vec<_>>(), "last": last});
            println!("{value}");
            return;
        }
        self.listing.0.extend_from_slice(incoming);
        self.listing.1.extend_from_slice(outgoing);
        if !last {
            return;
        }
        let (incoming, outgoing) = std::mem::take(&mut self.listing);
        println!("files for you ({}):", incoming.len());
        incoming.iter().for_each(|e| println!("{}", entry_text(e)));
        println!("files you sent ({}):", outgoing.len());
        outgoing.iter().for_each(|e| println!("{}", entry_text(e)));
    }

    /// Prints this person's devices: one `devices` event, or a line each.
    pub fn devices(&self, devices: &[DeviceInfo]) {
        if self.json {
            let list: Vec<Value> = devices
                .iter()
                .map(|d| {
                    // A device from `qchat-certs user` has been its person's since the start.
                    let enrolled = (d.enrolled_ms != 0).then(|| rfc3339(d.enrolled_ms));
                    json!({"id": d.id, "name": d.name, "enrolled": enrolled,
                           "last_seen": d.last_seen_ms.map(rfc3339), "current": d.current})
                })
                .collect();
            println!("{}", json!({"event": "devices", "devices": list}));
            return;
        }
        for d in devices {
            let enrolled = if d.enrolled_ms == 0 { "identity file".to_string() } else { rfc3339(d.enrolled_ms) };
            let seen = d.last_seen_ms.map(rfc3339).unwrap_or_else(|| "never".into());
            let current = if d.current { "  (this device)" } else { "" };
            println!("{}  {}  enrolled {enrolled}  last seen {seen}{current}", Escaped(&d.id), Escaped(&d.name));
        }
    }

    /// Prints an error (to stdout as JSON, to stderr as text).
    pub fn error(&self, message: &str) {
        if self.json {
            println!("{}", json!({"event": "error", "message": message}));
        } else {
            self.multi.suspend(|| eprintln!("error: {}", Escaped(message)));
        }
    }

    pub fn status(&self, status: &Status) {
        self.emit(status_json(status), status_text(status));
    }

    /// Prints one event from the core; `verbose` adds connection changes.
    pub fn event(&mut self, event: &Event, verbose: bool) {
        match event {
            Event::FileOffered(offer) => self.emit(
                json!({"event": "file_offered", "id": offer.file_id.to_string(), "name": offer.name,
                       "size": offer.size, "from": offer.from, "arriving": offer.blake3.is_none()}),
                format!(
                    "[Newfile] {} offers {} ({}{}): receive it with `receive`",
                    Escaped(&offer.from),
                    Escaped(&offer.name),
                    human_bytes(offer.size),
                    if offer.blake3.is_none() { ", arriving" } else { "" }
                ),
            ),
            Event::FileArriving { file_id, held } => {
                if self.json {
                    println!("{}", json!({"event": "file_arriving", "id": file_id.to_string(), "held": held}));
                }
            }
            Event::UploadQueued { transfer, name, size, .. } => {
                if !self.json {
                    self.bar(*transfer, name, *size);
                }
            }
            Event::DownloadQueued { transfer, name, size, .. } => {
                if !self.json {
                    self.bar(*transfer, name, *size);
                }
            }
            Event::Resumed { transfer, file_id, offset } => {
                self.emit(
                    json!({"event": "resumed", "id": file_id.to_string(), "offset": offset}),
                    format!("resuming from {} already there", human_bytes(*offset)),
                );
                if let Some(bar) = self.bars.get(transfer) {
                    bar.set_position(*offset);
                    bar.reset_eta();
                }
            }
            Event::Progress { transfer, file_id, done, total } => {
                if self.json {
                    println!(
                        "{}",
                        json!({"event": "progress", "id": file_id.to_string(), "done": done, "total": total})
                    );
                } else if let Some(bar) = self.bars.get(transfer) {
                    bar.set_position(*done);
                }
            }
            Event::Uploaded { transfer, file_id, name, size, blake3, .. } => {
                self.end_bar(*transfer);
                self.emit(
                    json!({"event": "uploaded", "id": file_id.to_string(), "name": name, "size": size,
                           "blake3": hex::encode(blake3)}),
                    format!(
                        "uploaded {} ({}), verified by the relay; the peer can fetch it",
                        Escaped(name),
                        human_bytes(*size)
                    ),
                );
            }
            Event::FileSaved { transfer, file_id, path, blake3 } => {
                self.end_bar(*transfer);
                self.emit(
                    json!({"event": "file_saved", "id": file_id.to_string(), "path": path.display().to_string(),
                           "blake3": hex::encode(blake3)}),
                    format!("saved {} (BLAKE3 verified)", Escaped(&path.display().to_string())),
                );
            }
            Event::TransferFailed { transfer, file_id, reason } => {
                self.end_bar(*transfer);
                match file_id {
                    Some(id) => self.error(&format!("file {id}: {reason}")),
                    None => self.error(reason),
                }
            }
            Event::Receiving { count } => {
                self.emit(json!({"event": "receiving", "count": count}), format!("receiving {count} file(s)"))
            }
            Event::FileFetched { file_id } => self.emit(
                json!({"event": "file_fetched", "id": file_id.to_string()}),
                format!("✓✓ the peer saved file {file_id}"),
            ),
            Event::FileExpired { file_id, name, fetched } => self.emit(
                json!({"event": "file_expired", "id": file_id.to_string(), "name": name, "fetched": fetched}),
                format!(
                    "{} was removed from the relay{}",
                    Escaped(name),
                    if *fetched { "" } else { " before the peer fetched it" }
                ),
            ),
            Event::Files { incoming, outgoing, last } => self.files(incoming, outgoing, *last),
            Event::MessageExpired { id, seq } => self.emit(
                json!({"event": "message_expired", "id": id.to_string(), "seq": seq}),
                format!("message {id} expired on the relay before anyone received it"),
            ),
            Event::LocalError { reason } => self.error(reason),
            Event::DeviceInvite { line, expires_ms } => self.emit(
                json!({"event": "invite", "invite": line, "expires": rfc3339(*expires_ms)}),
                format!(
                    "a one-time invite for another device of yours, valid until {}; on that device run \
                     `qchat-cli join INVITE --out FILE`:\n{line}",
                    rfc3339(*expires_ms)
                ),
            ),
            Event::Devices(devices) => self.devices(devices),
            Event::DeviceRevoked { id } => self.emit(
                json!({"event": "device_revoked", "id": id}),
                format!("revoked device {}: its connections are closed", Escaped(id)),
            ),
            Event::DeviceRefused { reason } => self.error(reason),
            Event::DeviceAdded { user, device } => self.emit(
                json!({"event": "device_added", "user": user, "id": device.id, "name": device.name,
                       "enrolled": rfc3339(device.enrolled_ms)}),
                format!("* {} has a new device: {} ({})", Escaped(user), Escaped(&device.name), Escaped(&device.id)),
            ),
            Event::Renewed { not_after_s } => self.emit(
                json!({"event": "renewed", "until": rfc3339(not_after_s.saturating_mul(1000))}),
                format!("* this device's certificate was renewed, until {}", rfc3339(not_after_s.saturating_mul(1000))),
            ),
            Event::Message(m) => self.emit(
                json!({"event": "message", "id": m.id.to_string(), "seq": m.seq, "from": m.from,
                       "text": m.text, "time": rfc3339(m.time_ms)}),
                format!("[{}] {}: {}", clock(m.time_ms), Escaped(&m.from), Escaped(&m.text)),
            ),
            Event::Stored { id, seq, time_ms } => self.emit(
                json!({"event": "stored", "id": id.to_string(), "seq": seq, "time": rfc3339(*time_ms)}),
                format!("✓ stored ({id})"),
            ),
            Event::Delivered { id, .. } => {
                self.emit(json!({"event": "delivered", "id": id.to_string()}), format!("✓✓ delivered ({id})"))
            }
            Event::Presence { user, online } => self.emit(
                json!({"event": "presence", "user": user, "online": online}),
                format!("* {} is {}", Escaped(user), if *online { "online" } else { "offline" }),
            ),
            Event::SendFailed { id, reason } => self.error(&format!("message {id} not sent: {reason}")),
            Event::Status(status) => self.status(status),
            Event::Connection(state) if verbose => self.connection(state),
            Event::Connection(_) | Event::AckConfirmed { .. } | Event::History(_) => {}
        }
    }

    fn connection(&mut self, state: &ConnectionState) {
        match state {
            ConnectionState::Connecting { server } => self.emit(
                json!({"event": "connection", "state": "connecting", "server": server}),
                format!("* connecting to {server}…"),
            ),
            ConnectionState::Connected(status) => {
                let mut value = status_json(status);
                value["event"] = "connection".into();
                value["state"] = "connected".into();
                self.emit(value, format!("* {}", status_text(status)));
            }
            ConnectionState::Reconnecting { reason, retry_in_ms } => self.emit(
                json!({"event": "connection", "state": "reconnecting", "reason": reason, "retry_in_ms": retry_in_ms}),
                format!("* {}; trying again in {:.1} s", Escaped(reason), *retry_in_ms as f64 / 1000.0),
            ),
            ConnectionState::Refused { reason } => self.error(reason),
            ConnectionState::Closed => {}
        }
    }
}
