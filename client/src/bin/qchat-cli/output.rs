//! How qchat-cli prints events: readable lines, or one JSON object per line with `--json`.
//! In readable lines, text from the network (messages, names, reasons) is shown with
//! control characters, escape sequences and bidirectional controls made visible
//! ([`Escaped`]), so a peer cannot write to the terminal.

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use qchat_client::offer::Listed;
use qchat_client::rooms::{describe, title};
use qchat_client::{ConnectionState, Event, TransferId};
use qchat_shared::display::Escaped;
use qchat_shared::frame::{Body, DeviceInfo, FileState, RoomInfo, Status};
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
    listing: (Vec<Listed>, Vec<Listed>),
    multi: MultiProgress,
    /// Who this is, to name direct rooms by the other person.
    pub me: String,
    /// File listings show only this room's files (all with none).
    pub only_room: Option<String>,
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
        "other_users": status.other_users,
        "waiting_for_you": status.waiting_for_you,
        "waiting_for_peer": status.waiting_for_peer,
    })
}

fn status_text(status: &Status) -> String {
    let peer = match &status.peer {
        Some(peer) => format!("{} is {}", Escaped(peer), if status.peer_online { "online" } else { "offline" }),
        None if status.other_users == 0 => "no one else on the relay yet".into(),
        None => format!("{} other users on the relay", status.other_users),
    };
    format!(
        "connected as {}; {peer}; {} message(s) waiting for you, {} of yours not yet received by everyone",
        Escaped(&status.user),
        status.waiting_for_you,
        status.waiting_for_peer
    )
}

fn entry_json(entry: &Listed) -> Value {
    let (state, held) = match entry.state {
        FileState::Uploading { held } => ("uploading", Some(held)),
        FileState::Offered => ("offered", None),
        FileState::Fetched => ("fetched", None),
        FileState::Expired { fetched: true } => ("expired_after_fetch", None),
        FileState::Expired { fetched: false } => ("expired_unfetched", None),
    };
    json!({
        "id": entry.info.file_id.to_string(), "room": entry.info.room, "name": entry.info.name, "size": entry.info.size,
        "from": entry.info.from, "state": state, "held": held,
        "blake3": entry.info.blake3.map(|h| hex::encode(&h)), "time": rfc3339(entry.info.time_ms),
    })
}

fn entry_text(entry: &Listed) -> String {
    let state = match entry.state {
        FileState::Uploading { held } => format!("uploading, {} on the relay", human_bytes(held)),
        FileState::Offered => "waiting to be fetched".into(),
        FileState::Fetched => "fetched".into(),
        FileState::Expired { fetched } => format!("expired{}", if fetched { " (was fetched)" } else { " unfetched" }),
    };
    let (id, size, name) = (entry.info.file_id, human_bytes(entry.info.size), Escaped(&entry.info.name));
    format!("  {id}  {size:>10}  {name}  [{state}]")
}

fn room_json(room: &RoomInfo) -> Value {
    let members: Vec<Value> = room.members.iter().map(|m| json!({"user": m.user, "online": m.online})).collect();
    json!({"name": room.name, "direct": room.direct, "creator": room.creator, "members": members})
}

/// A room on one line: its name (a direct room's other person), who made it, its members
/// (`*` online).
fn room_text(me: &str, room: &RoomInfo) -> String {
    let members: Vec<String> =
        room.members.iter().map(|m| format!("{}{}", Escaped(&m.user), if m.online { "*" } else { "" })).collect();
    let made = match &room.creator {
        Some(creator) => format!("made by {}", Escaped(creator)),
        None => "direct".into(),
    };
    format!("{}  ({made})  {}", Escaped(&title(me, &room.name)), members.join(", "))
}

/// What a change of members is called in JSON, and whom it names.
fn change_json(change: &Body) -> (&'static str, Value) {
    match change {
        Body::Text(_) => ("message", Value::Null),
        Body::Created { members } => ("created", json!(members)),
        Body::Added { user } => ("added", json!(user)),
        Body::Removed { user } => ("removed", json!(user)),
        Body::Left => ("left", Value::Null),
        Body::Sealed(_) => ("message", Value::Null),
        Body::Commit { .. } => ("group_changed", Value::Null),
    }
}

impl Printer {
    pub fn new(json: bool) -> Self {
        let (bars, listing, multi) = (HashMap::new(), Default::default(), MultiProgress::new());
        Printer { json, bars, listing, multi, me: String::new(), only_room: None }
    }

    /// How a room is named in a line: nothing for a direct room on a line from its other
    /// person, else its title.
    fn room_tag(&self, room: &str, from: &str) -> String {
        let name = title(&self.me, room);
        if name == from {
            String::new()
        } else {
            format!("{} ", Escaped(&name))
        }
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

    /// Prints a page of a file listing (of [`Printer::only_room`], if set).
    pub fn files(&mut self, incoming: &[Listed], outgoing: &[Listed], last: bool) {
        let shown = |entries: &[Listed]| -> Vec<Listed> {
            let room = self.only_room.as_deref();
            entries.iter().filter(|e| room.is_none_or(|r| r == e.info.room)).cloned().collect()
        };
        let (incoming, outgoing) = (&shown(incoming)[..], &shown(outgoing)[..]);
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

    /// Prints our rooms: one `rooms` event, or a line each.
    pub fn rooms(&self, rooms: &[RoomInfo]) {
        if self.json {
            println!("{}", json!({"event": "rooms", "rooms": rooms.iter().map(room_json).collect::<Vec<_>>()}));
        } else if rooms.is_empty() {
            println!("no rooms yet: make one with `rooms create NAME --members a,b`, or write to someone with --to");
        } else {
            rooms.iter().for_each(|r| println!("{}", room_text(&self.me, r)));
        }
    }

    /// Prints one event from the core; `verbose` adds connection changes.
    pub fn event(&mut self, event: &Event, verbose: bool) {
        match event {
            Event::FileOffered(offer) => self.emit(
                json!({"event": "file_offered", "id": offer.file_id.to_string(), "room": offer.room,
                       "name": offer.name, "size": offer.size, "from": offer.from,
                       "arriving": offer.blake3.is_none()}),
                format!(
                    "[Newfile] {}{} offers {} ({}{}): receive it with `receive`",
                    self.room_tag(&offer.room, &offer.from),
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
            Event::Uploaded { transfer, file_id, room, name, size, blake3, .. } => {
                self.end_bar(*transfer);
                self.emit(
                    json!({"event": "uploaded", "id": file_id.to_string(), "room": room, "name": name,
                           "size": size, "blake3": hex::encode(blake3)}),
                    format!(
                        "uploaded {} ({}) to {}, verified by the relay; its members can fetch it",
                        Escaped(name),
                        human_bytes(*size),
                        Escaped(&title(&self.me, room))
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
            Event::FileFetched { file_id, by } => self.emit(
                json!({"event": "file_fetched", "id": file_id.to_string(), "by": by}),
                format!("✓✓ {} saved file {file_id}", Escaped(by)),
            ),
            Event::FileExpired { file_id, name, fetched } => self.emit(
                json!({"event": "file_expired", "id": file_id.to_string(), "name": name, "fetched": fetched}),
                format!(
                    "{} was removed from the relay{}",
                    Escaped(name),
                    if *fetched { "" } else { " before anyone fetched it" }
                ),
            ),
            Event::Files { incoming, outgoing, last } => self.files(incoming, outgoing, *last),
            Event::Notice { room, text, time_ms } => self.emit(
                json!({"event": "notice", "room": room, "text": text, "time": rfc3339(*time_ms)}),
                format!("{}· {}", self.room_tag(room, ""), Escaped(text)),
            ),
            Event::SafetyNumber { user, number, devices } => self.emit(
                json!({"event": "safety_number", "user": user, "number": number, "devices": devices}),
                format!(
                    "devices of you and {}:\n{}\ncompare this safety number with {} (in person, or on a call):\n{number}",
                    Escaped(user),
                    devices.iter().map(|d| format!("  {}", Escaped(d))).collect::<Vec<_>>().join("\n"),
                    Escaped(user)
                ),
            ),
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
                json!({"event": "message", "id": m.id.to_string(), "seq": m.seq, "room": m.room,
                       "room_seq": m.room_seq, "from": m.from, "text": m.text, "time": rfc3339(m.time_ms)}),
                format!(
                    "[{}] {}{}: {}",
                    clock(m.time_ms),
                    self.room_tag(&m.room, &m.from),
                    Escaped(&m.from),
                    Escaped(&m.text)
                ),
            ),
            Event::RoomChanged { room, by, change, time_ms, .. } => {
                let (kind, user) = change_json(change);
                self.emit(
                    json!({"event": "room_changed", "room": room, "by": by, "change": kind, "user": user,
                           "time": rfc3339(*time_ms)}),
                    format!("* {}: {}", Escaped(&title(&self.me, room)), Escaped(&describe(by, change))),
                )
            }
            Event::Rooms(rooms) => self.rooms(rooms),
            Event::Room(room) => {
                self.emit(json!({"event": "room", "room": room_json(room)}), format!("* {}", room_text(&self.me, room)))
            }
            Event::RoomRefused { reason } => self.error(reason),
            Event::Stored { id, seq, room, time_ms } => self.emit(
                json!({"event": "stored", "id": id.to_string(), "seq": seq, "room": room,
                       "time": rfc3339(*time_ms)}),
                format!("✓ stored in {} ({id})", Escaped(&title(&self.me, room))),
            ),
            Event::Delivered { id, room, by, everyone, .. } => self.emit(
                json!({"event": "delivered", "id": id.to_string(), "room": room, "by": by, "everyone": everyone}),
                if *everyone {
                    format!("✓✓ delivered to everyone in {} ({id})", Escaped(&title(&self.me, room)))
                } else {
                    format!("✓ received by {} ({id})", Escaped(by))
                },
            ),
            Event::Presence { user, online } => self.emit(
                json!({"event": "presence", "user": user, "online": online}),
                format!("* {} is {}", Escaped(user), if *online { "online" } else { "offline" }),
            ),
            Event::SendFailed { id, reason } => self.error(&format!("message {id} not sent: {reason}")),
            Event::Status(status) => self.status(status),
            Event::Connection(state) if verbose => self.connection(state),
            Event::Connection(_) | Event::AckConfirmed { .. } | Event::KeysPublished { .. } => {}
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
