//! The conversations as this client has seen them, kept on disk per identity, so that
//! they are still there after a restart: an append-only `history.jsonl` (0600) of
//! messages, changes of rooms' members, and receipts. Writes run on a blocking thread, never on tokio's workers; messages from the
//! peer are fsynced before the client acknowledges them to the relay.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use qchat_shared::frame::MessageId;
use serde::{Deserialize, Serialize};

use crate::state::StateDir;

/// One line of the chat log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine {
    pub id: MessageId,
    /// The relay's order; a message of ours not stored yet has none.
    pub seq: Option<u64>,
    /// The room it is in (none for a line of a client from before rooms, until
    /// [`assign_rooms`] gives it one; a message not stored yet is in the room it was sent to,
    /// or the default room).
    #[serde(default)]
    pub room: String,
    pub from: String,
    pub text: String,
    /// The relay's commit time (Unix milliseconds); for a message not stored yet, when it
    /// was written.
    pub time_ms: i64,
    /// Written by this user.
    pub mine: bool,
    /// Every member of its room received it.
    pub delivered: bool,
    /// Who received it (a message of ours).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub received_by: Vec<String>,
    /// A change of the room's members, in words, rather than a message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notice: bool,
}

impl ChatLine {
    /// A line about the room (a change of its members or of its encryption), not a message.
    pub fn notice(id: MessageId, seq: Option<u64>, room: String, from: String, text: String, time_ms: i64) -> Self {
        ChatLine {
            id,
            seq,
            room,
            from,
            text,
            time_ms,
            mine: false,
            delivered: false,
            received_by: Vec::new(),
            notice: true,
        }
    }

    /// A message of ours the relay stored.
    pub fn mine(id: MessageId, sent: &crate::client::Sent, from: String, text: String) -> Self {
        ChatLine {
            id,
            seq: Some(sent.seq),
            room: sent.room.clone(),
            from,
            text,
            time_ms: sent.time_ms,
            mine: true,
            delivered: false,
            received_by: Vec::new(),
            notice: false,
        }
    }

    /// Records that `by` received it, and whether everyone has now.
    pub fn received(&mut self, by: &str, everyone: bool) {
        if !self.received_by.iter().any(|b| b == by) {
            self.received_by.push(by.to_string());
        }
        self.delivered |= everyone;
    }

    /// Where the line goes in the log: stored lines in the relay's order, then ours not yet
    /// stored, in the order they were written.
    pub fn order(&self) -> (bool, Option<u64>, i64) {
        (self.seq.is_none(), self.seq, self.time_ms)
    }
}

/// One line of the history file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Record {
    Line(ChatLine),
    /// Every member received it (all a receipt said before rooms).
    Delivered(MessageId),
    /// `by` received it; with `everyone`, so has every member.
    Receipt {
        id: MessageId,
        by: String,
        everyone: bool,
    },
}

/// Gives the lines of a client from before rooms their room: the direct room of `me` and
/// the one other person of those days (whoever wrote the first line that is not ours).
pub fn assign_rooms(lines: &mut [ChatLine], me: &str) {
    let Some(peer) = lines.iter().find(|l| l.room.is_empty() && !l.mine).map(|l| l.from.clone()) else { return };
    let room = qchat_shared::names::direct_room(me, &peer);
    for line in lines.iter_mut().filter(|l| l.room.is_empty()) {
        line.room = room.clone();
    }
}

/// The history file of one identity.
#[derive(Debug, Clone)]
pub struct History {
    file: PathBuf,
}

impl History {
    pub fn new(state: &StateDir) -> Self {
        History { file: state.dir.join("history.jsonl") }
    }

    /// Every line so far, in the relay's order (messages not stored yet last).
    pub fn load(&self) -> Vec<ChatLine> {
        let Ok(text) = std::fs::read_to_string(&self.file) else { return Vec::new() };
        let mut lines: Vec<ChatLine> = Vec::new();
        let mut at: HashMap<MessageId, usize> = HashMap::new();
        for record in text.lines().filter_map(|l| serde_json::from_str::<Record>(l).ok()) {
            match record {
                Record::Line(line) => match at.get(&line.id) {
                    Some(&i) => {
                        let received_by = std::mem::take(&mut lines[i].received_by);
                        lines[i] = ChatLine { delivered: lines[i].delivered || line.delivered, received_by, ..line }
                    }
                    None => {
                        at.insert(line.id, lines.len());
                        lines.push(line);
                    }
                },
                Record::Delivered(id) => {
                    if let Some(&i) = at.get(&id) {
                        lines[i].delivered = true;
                    }
                }
                Record::Receipt { id, by, everyone } => {
                    if let Some(&i) = at.get(&id) {
                        lines[i].received(&by, everyone);
                    }
                }
            }
        }
        lines.sort_by_key(ChatLine::order);
        lines
    }

    /// Appends `records` on a blocking thread; with `durable`, they are on disk (fsynced)
    /// when this returns.
    pub async fn append(&self, records: Vec<Record>, durable: bool) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || append_now(&file, &records, durable))
            .await
            .map_err(std::io::Error::other)?
    }
}

fn append_now(path: &std::path::Path, records: &[Record], durable: bool) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        // A history written by an older client may still be readable by others.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    let mut bytes = Vec::new();
    for record in records {
        serde_json::to_writer(&mut bytes, record).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
    }
    file.write_all(&bytes)?;
    if durable {
        file.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, mine: bool) -> ChatLine {
        ChatLine {
            id: MessageId([seq as u8; 16]),
            seq: Some(seq),
            room: String::new(),
            from: if mine { "alice" } else { "bob" }.into(),
            text: format!("m{seq}"),
            time_ms: seq as i64,
            mine,
            delivered: false,
            received_by: Vec::new(),
            notice: false,
        }
    }

    #[test]
    fn a_history_from_before_rooms_is_the_direct_room_and_receipts_say_who() {
        // A line as a client from before rooms wrote it: no room, no receipts by name.
        let mut old = serde_json::to_value(Record::Line(line(1, true))).unwrap();
        old["Line"].as_object_mut().unwrap().remove("room");
        let Record::Line(first) = serde_json::from_value(old).unwrap() else { panic!() };
        let mut lines = vec![first, line(2, false)];
        assign_rooms(&mut lines, "alice");
        assert!(lines.iter().all(|l| l.room == "alice+bob"));
        lines[0].received("bob", false);
        lines[0].received("bob", true);
        assert_eq!((lines[0].received_by.len(), lines[0].delivered), (1, true));
    }

    #[tokio::test]
    async fn survives_a_reload_in_order_with_receipts() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::new(&StateDir { dir: dir.path().to_path_buf() });
        history.append(vec![Record::Line(line(3, false)), Record::Line(line(1, true))], true).await.unwrap();
        history.append(vec![Record::Delivered(MessageId([1; 16]))], false).await.unwrap();
        history.append(vec![Record::Line(line(2, false)), Record::Line(line(2, false))], true).await.unwrap();
        let lines = history.load();
        assert_eq!(lines.iter().map(|l| l.seq.unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(lines[0].delivered && !lines[1].delivered);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("history.jsonl")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the conversation is private");
        }
    }

    #[tokio::test]
    async fn a_write_that_fails_says_so() {
        let dir = tempfile::tempdir().unwrap();
        // The history's folder is a file: nothing can be written there.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        let history = History::new(&StateDir { dir: blocked });
        assert!(history.append(vec![Record::Line(line(1, false))], true).await.is_err());
    }
}
