//! The conversation as this client has seen it, kept on disk per identity, so that it is
//! still there after a restart: an append-only `history.jsonl` (0600) of messages and
//! receipts. Writes run on a blocking thread, never on tokio's workers; messages from the
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
    pub from: String,
    pub text: String,
    /// The relay's commit time (Unix milliseconds); for a message not stored yet, when it
    /// was written.
    pub time_ms: i64,
    /// Written by this user.
    pub mine: bool,
    /// The peer received it.
    pub delivered: bool,
}

impl ChatLine {
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
    Delivered(MessageId),
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
                    Some(&i) => lines[i] = ChatLine { delivered: lines[i].delivered || line.delivered, ..line },
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
            from: if mine { "alice" } else { "bob" }.into(),
            text: format!("m{seq}"),
            time_ms: seq as i64,
            mine,
            delivered: false,
        }
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
