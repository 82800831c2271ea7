//! The history file of clients before `history.db`: an append-only `history.jsonl` of
//! [`Record`]s, read once to be imported.

use std::collections::HashMap;
use std::path::Path;

use qchat_shared::frame::MessageId;

use super::{ChatLine, Record};

/// Every line of the file at `path` (none if there is no file), with what later records
/// said of it: a line written again replaces the first (keeping its receipts), receipts
/// and deliveries apply to the line they name. Lines that do not parse are skipped.
pub fn load(path: &Path) -> std::io::Result<Vec<ChatLine>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
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
    Ok(lines)
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
