//! The conversation as this client has seen it, kept on disk per identity, so that it is
//! still there after a restart: an append-only `history.jsonl` of messages and receipts.

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

#[derive(Serialize, Deserialize)]
enum Record {
    Line(ChatLine),
    Delivered(MessageId),
}

/// The history file of one identity.
#[derive(Debug)]
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

    fn append(&self, record: &Record) {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.file)?;
            let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
            line.push(b'\n');
            file.write_all(&line)
        };
        if let Err(e) = write() {
            tracing::warn!(error = %e, file = %self.file.display(), "cannot write the chat history");
        }
    }

    /// Records a message (ours once stored, or the peer's as it arrives).
    pub fn record(&self, line: ChatLine) {
        self.append(&Record::Line(line));
    }

    /// Records that the peer received a message of ours.
    pub fn delivered(&self, id: MessageId) {
        self.append(&Record::Delivered(id));
    }
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

    #[test]
    fn survives_a_reload_in_order_with_receipts() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::new(&StateDir { dir: dir.path().to_path_buf() });
        history.record(line(3, false));
        history.record(line(1, true));
        history.delivered(MessageId([1; 16]));
        history.record(line(2, false));
        history.record(line(2, false));
        let lines = history.load();
        assert_eq!(lines.iter().map(|l| l.seq.unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(lines[0].delivered && !lines[1].delivered);
    }
}
