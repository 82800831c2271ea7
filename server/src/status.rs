//! `qchat-server status`: the operator's view of a relay, running or not. People and their
//! devices, who is connected now and from where (asked of the running relay over its
//! local socket), rooms and their members, the files in the spool (by id, size, sender
//! and recipients: their names are encrypted), the disk used, and totals. It opens the
//! database read-only.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use qchat_certs::PkiDir;
use qchat_shared::display::Escaped;
use qchat_shared::units::{human_bytes, rfc3339};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::admin::Dirs;
use crate::local::{LiveConnectionReport, LiveReport};
use crate::RelayLimits;

/// Everything `status` shows. Times are RFC 3339 in UTC, sizes in bytes.
#[derive(Debug, Serialize)]
pub struct Status {
    pub relay: RelayInfo,
    pub users: Vec<UserStatus>,
    pub connections: Vec<ConnectionStatus>,
    pub rooms: Vec<RoomStatus>,
    pub files: Vec<FileStatus>,
    pub disk: DiskStatus,
    pub totals: Totals,
}

#[derive(Debug, Serialize)]
pub struct RelayInfo {
    pub running: bool,
    pub pid: Option<u32>,
    pub version: Option<String>,
    pub listen: Option<String>,
    pub started: Option<String>,
    /// File transfers being served now (0 when the relay is not running).
    pub transfers: usize,
    pub data: String,
    pub pki: String,
}

#[derive(Debug, Serialize)]
pub struct UserStatus {
    pub name: String,
    pub online: bool,
    pub devices: Vec<DeviceStatus>,
}

#[derive(Debug, Serialize)]
pub struct DeviceStatus {
    pub id: String,
    pub name: String,
    /// None for the identity `qchat-certs user` made.
    pub enrolled: Option<String>,
    pub last_seen: Option<String>,
    pub revoked: Option<String>,
    pub connections: usize,
}

#[derive(Debug, Serialize)]
pub struct ConnectionStatus {
    pub user: String,
    pub device: String,
    pub from: String,
    pub since: String,
}

#[derive(Debug, Serialize)]
pub struct RoomStatus {
    pub name: String,
    pub direct: bool,
    pub creator: Option<String>,
    pub members: Vec<String>,
    pub created: String,
    /// Events in the room so far (messages, changes of members, key changes).
    pub events: u64,
    /// Messages the relay still keeps for it.
    pub messages_kept: u64,
}

#[derive(Debug, Serialize)]
pub struct FileStatus {
    pub id: String,
    /// Bytes on the relay (sealed: a little more than the file).
    pub size: u64,
    pub sender: String,
    pub room: String,
    /// Who it is for: the room's members (but its sender) who were in it when it was
    /// sent and still are.
    pub recipients: Vec<String>,
    pub fetched_by: Vec<String>,
    /// `uploading`, `waiting`, `fetched` by some, `fetched by all`.
    pub state: String,
    /// Bytes the relay holds of it (less than `size` while uploading).
    pub held: u64,
    pub created: String,
    /// When the sweep removes it, as the relay's retention and expiry stand.
    pub expires: String,
}

#[derive(Debug, Serialize)]
pub struct DiskStatus {
    /// The database with its write-ahead log.
    pub database_bytes: u64,
    pub spool_bytes: u64,
    pub spool_files: u64,
}

#[derive(Debug, Serialize)]
pub struct Totals {
    pub users: usize,
    pub devices: usize,
    pub connections: usize,
    pub rooms: usize,
    pub files: usize,
    pub file_bytes: u64,
    pub messages_kept: u64,
    pub messages_undelivered: u64,
}

/// Gathers the status of the relay with `dirs`. Expiry is reckoned with the running
/// relay's retention and expiry, or with `limits` (its config) when it does not run.
pub fn gather(dirs: &Dirs, limits: &RelayLimits) -> Result<Status> {
    let db_path = dirs.data.join("relay.db");
    if !db_path.exists() {
        bail!(
            "no relay database in {}: has the relay run with --data {} yet?",
            dirs.data.display(),
            dirs.data.display()
        );
    }
    let live = crate::local::ask(&dirs.data)?;
    let db = Connection::open_with_flags(&db_path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("opening {}", db_path.display()))?;
    db.busy_timeout(Duration::from_secs(5))?;
    let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != crate::store::schema::latest_version() as i64 {
        bail!(
            "the database in {} is at schema version {version}, this qchat-server reads {}: start the relay once to bring it up to date",
            dirs.data.display(),
            crate::store::schema::latest_version()
        );
    }
    let connections: Vec<LiveConnectionReport> = live.as_ref().map(|l| l.connections.clone()).unwrap_or_default();
    let users = users(&db, dirs, &connections)?;
    let rooms = rooms(&db)?;
    let mut limits = limits.clone();
    if let Some(live) = &live {
        limits.retention = Duration::from_millis(live.retention_ms);
        limits.expiry = Duration::from_millis(live.expiry_ms);
    }
    let files = files(&db, &limits)?;
    let (spool_bytes, spool_files) = crate::spool::usage_of(&dirs.data.join("spool"));
    let database_bytes = ["relay.db", "relay.db-wal", "relay.db-shm"]
        .iter()
        .filter_map(|name| std::fs::metadata(dirs.data.join(name)).ok())
        .map(|m| m.len())
        .sum();
    let (messages_kept, messages_undelivered): (u64, u64) = db.query_row(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE delivered_ms IS NULL) FROM messages WHERE kind = 0",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let totals = Totals {
        users: users.len(),
        devices: users.iter().flat_map(|u| &u.devices).filter(|d| d.revoked.is_none()).count(),
        connections: connections.len(),
        rooms: rooms.len(),
        files: files.len(),
        file_bytes: files.iter().map(|f| f.held).sum(),
        messages_kept,
        messages_undelivered,
    };
    Ok(Status {
        relay: relay_info(live.as_ref(), dirs),
        connections: connections
            .iter()
            .map(|c| ConnectionStatus {
                user: c.user.clone(),
                device: c.device.clone(),
                from: c.from.clone(),
                since: rfc3339(c.since_ms),
            })
            .collect(),
        users,
        rooms,
        files,
        disk: DiskStatus { database_bytes, spool_bytes, spool_files },
        totals,
    })
}

fn relay_info(live: Option<&LiveReport>, dirs: &Dirs) -> RelayInfo {
    RelayInfo {
        running: live.is_some(),
        pid: live.map(|l| l.pid),
        version: live.map(|l| l.version.clone()),
        listen: live.map(|l| l.listen.clone()),
        started: live.map(|l| rfc3339(l.started_ms)),
        transfers: live.map_or(0, |l| l.transfers),
        data: dirs.data.display().to_string(),
        pki: dirs.pki.display().to_string(),
    }
}

fn users(db: &Connection, dirs: &Dirs, live: &[LiveConnectionReport]) -> Result<Vec<UserStatus>> {
    let mut devices: BTreeMap<String, Vec<DeviceStatus>> = BTreeMap::new();
    let mut stmt = db.prepare(
        "SELECT user, id, name, enrolled_ms, last_seen_ms, revoked_ms FROM devices ORDER BY user, enrolled_ms, id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get::<_, i64>(3)?, r.get(4)?, r.get(5)?))
    })?;
    for row in rows {
        let (user, id, name, enrolled_ms, last_seen_ms, revoked_ms): (_, _, _, _, Option<i64>, Option<i64>) = row?;
        let connections = live.iter().filter(|c| c.user == user && c.device == id).count();
        devices.entry(user).or_default().push(DeviceStatus {
            id,
            name,
            enrolled: (enrolled_ms != 0).then(|| rfc3339(enrolled_ms)),
            last_seen: last_seen_ms.map(rfc3339),
            revoked: revoked_ms.map(rfc3339),
            connections,
        });
    }
    let mut people = PkiDir::new(&dirs.pki).users()?;
    for user in devices.keys() {
        if !people.contains(user) {
            people.push(user.clone());
        }
    }
    Ok(people
        .into_iter()
        .map(|name| UserStatus {
            online: live.iter().any(|c| c.user == name),
            devices: devices.remove(&name).unwrap_or_default(),
            name,
        })
        .collect())
}

fn rooms(db: &Connection) -> Result<Vec<RoomStatus>> {
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stmt =
        db.prepare("SELECT room, user FROM members WHERE until_seq IS NULL ORDER BY room, since_seq, user")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (room, user) = row?;
        members.entry(room).or_default().push(user);
    }
    let mut stmt = db.prepare(
        "SELECT name, direct, creator, created_ms, last_seq,
                (SELECT COUNT(*) FROM messages WHERE messages.room = rooms.name AND kind = 0)
         FROM rooms ORDER BY direct, name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RoomStatus {
            name: r.get(0)?,
            direct: r.get(1)?,
            creator: r.get(2)?,
            members: Vec::new(),
            created: rfc3339(r.get(3)?),
            events: r.get(4)?,
            messages_kept: r.get(5)?,
        })
    })?;
    rows.map(|row| {
        let mut room = row?;
        room.members = members.remove(&room.name).unwrap_or_default();
        Ok(room)
    })
    .collect()
}

fn files(db: &Connection, limits: &RelayLimits) -> Result<Vec<FileStatus>> {
    let mut fetched: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
    let mut stmt = db.prepare("SELECT DISTINCT file, user FROM fetches WHERE user IS NOT NULL ORDER BY file, user")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?)))? {
        let (file, user) = row?;
        fetched.entry(file).or_default().push(user);
    }
    let sql = format!(
        "SELECT id, size, held, sender, room, created_ms, committed_ms, fetched_ms,
                (SELECT group_concat(user, char(10)) FROM (SELECT DISTINCT user FROM members AS mb
                    WHERE mb.room = files.room AND mb.until_seq IS NULL AND mb.user != files.sender
                    AND mb.added_ms <= files.created_ms ORDER BY user)),
                {}
         FROM files WHERE swept_ms IS NULL ORDER BY created_ms",
        crate::store::EVERY_DEVICE_FETCHED
    );
    let mut stmt = db.prepare(&sql)?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, u64>(1)?,
            r.get::<_, u64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, Option<i64>>(6)?,
            r.get::<_, Option<i64>>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, bool>(9)?,
        ))
    })?;
    let retention = limits.retention.as_millis() as i64;
    let expiry = limits.expiry.as_millis() as i64;
    rows.map(|row| {
        let (id, size, held, sender, room, created_ms, committed_ms, fetched_ms, recipients, every_device) = row?;
        let recipients: Vec<String> =
            recipients.map(|r| r.split('\n').map(str::to_string).collect()).unwrap_or_default();
        let fetched_by = fetched.remove(&id).unwrap_or_default();
        // As the sweep counts: every device that is to fetch it has.
        let by_all = fetched_ms.is_some() && every_device;
        let state = match (committed_ms, fetched_by.len()) {
            (None, _) => "uploading",
            (Some(_), 0) => "waiting",
            (Some(_), _) if by_all => "fetched by all",
            (Some(_), _) => "fetched",
        };
        // As the sweep decides: fetched by everyone, after the retention; otherwise after
        // the expiry (and the retention of a fetch, if later).
        let expiry_ms = match fetched_ms {
            Some(at) if by_all => at + retention,
            Some(at) => (committed_ms.unwrap_or(created_ms) + expiry).max(at + retention),
            None => committed_ms.unwrap_or(created_ms) + expiry,
        };
        Ok(FileStatus {
            id: qchat_shared::hex::encode(&id),
            size,
            sender,
            room,
            recipients,
            fetched_by,
            state: state.to_string(),
            held: if committed_ms.is_some() { size } else { held },
            created: rfc3339(created_ms),
            expires: rfc3339(expiry_ms),
        })
    })
    .collect()
}

/// The status as text, for a person at a terminal.
pub fn render(status: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let relay = &status.relay;
    match (&relay.listen, &relay.started) {
        (Some(listen), Some(started)) => {
            let pid = relay.pid.unwrap_or_default();
            let _ = writeln!(out, "relay: running (pid {pid}) on udp {listen} since {started}");
        }
        _ => {
            let _ = writeln!(out, "relay: not running (or its local socket cannot be reached)");
        }
    }
    let _ = writeln!(out, "data: {}   pki: {}", relay.data, relay.pki);
    let t = &status.totals;
    let _ = writeln!(
        out,
        "totals: {}, {}, {} connected, {}, {} ({}), {} kept ({} undelivered), {} now",
        count(t.users, "person", "people"),
        count(t.devices, "device", "devices"),
        t.connections,
        count(t.rooms, "room", "rooms"),
        count(t.files, "file", "files"),
        human_bytes(t.file_bytes),
        count(t.messages_kept as usize, "message", "messages"),
        t.messages_undelivered,
        count(relay.transfers, "transfer", "transfers"),
    );
    let d = &status.disk;
    let _ = writeln!(
        out,
        "disk: database {}, spool {} in {}",
        human_bytes(d.database_bytes),
        human_bytes(d.spool_bytes),
        count(d.spool_files as usize, "file", "files")
    );
    let _ = writeln!(out, "\npeople and devices:");
    for user in &status.users {
        let online = if user.online { "  (online)" } else { "" };
        let _ = writeln!(out, "  {}{online}", Escaped(&user.name));
        for device in &user.devices {
            let state = match &device.revoked {
                Some(at) => format!("revoked {at}"),
                None if device.connections > 0 => format!("connected ×{}", device.connections),
                None => format!("last seen {}", device.last_seen.as_deref().unwrap_or("never")),
            };
            let _ = writeln!(out, "    {}  {}  {state}", device.id, Escaped(&device.name));
        }
    }
    if !status.connections.is_empty() {
        let _ = writeln!(out, "\nconnected now:");
        for c in &status.connections {
            let _ = writeln!(out, "  {}/{} from {} since {}", Escaped(&c.user), c.device, c.from, c.since);
        }
    }
    let _ = writeln!(out, "\nrooms:");
    if status.rooms.is_empty() {
        let _ = writeln!(out, "  none yet");
    }
    for room in &status.rooms {
        let kind = if room.direct { "direct" } else { "room" };
        let members: Vec<String> = room.members.iter().map(|m| Escaped(m).to_string()).collect();
        let _ = writeln!(
            out,
            "  {} ({kind}, {} events, {} messages kept): {}",
            Escaped(&room.name),
            room.events,
            room.messages_kept,
            members.join(", ")
        );
    }
    let _ = writeln!(out, "\nfiles in the spool:");
    if status.files.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for file in &status.files {
        let recipients: Vec<String> = file.recipients.iter().map(|m| Escaped(m).to_string()).collect();
        let _ = writeln!(
            out,
            "  {}  {}  from {} to {}  {}{}  expires {}",
            file.id,
            human_bytes(file.size),
            Escaped(&file.sender),
            if recipients.is_empty() { "nobody else".to_string() } else { recipients.join(", ") },
            file.state,
            if file.fetched_by.is_empty() { String::new() } else { format!(" ({})", file.fetched_by.join(", ")) },
            file.expires
        );
    }
    out
}

/// `n` and the word for one or for several.
fn count(n: usize, one: &str, several: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { several })
}
