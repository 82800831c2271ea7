//! How qchat-cli prints events: readable lines, or one JSON object per line with `--json`.

use qchat_client::{ConnectionState, Event};
use qchat_shared::frame::Status;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Prints events in the chosen form.
pub struct Printer {
    pub json: bool,
}

/// RFC 3339 UTC text of a Unix-milliseconds time.
pub fn rfc3339(time_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(time_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| time_ms.to_string())
}

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
        Some(peer) => format!("{peer} is {}", if status.peer_online { "online" } else { "offline" }),
        None => "no peer yet (the relay's PKI has one identity)".into(),
    };
    format!(
        "connected as {}; {peer}; {} message(s) waiting for you, {} of yours waiting for the peer",
        status.user, status.waiting_for_you, status.waiting_for_peer
    )
}

impl Printer {
    fn emit(&self, value: Value, text: String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{text}");
        }
    }

    /// Prints an error (to stdout as JSON, to stderr as text).
    pub fn error(&self, message: &str) {
        if self.json {
            println!("{}", json!({"event": "error", "message": message}));
        } else {
            eprintln!("error: {message}");
        }
    }

    pub fn status(&self, status: &Status) {
        self.emit(status_json(status), status_text(status));
    }

    /// Prints one event from the core; `verbose` adds connection changes.
    pub fn event(&self, event: &Event, verbose: bool) {
        match event {
            Event::Message(m) => self.emit(
                json!({"event": "message", "id": m.id.to_string(), "seq": m.seq, "from": m.from,
                       "text": m.text, "time": rfc3339(m.time_ms)}),
                format!("[{}] {}: {}", clock(m.time_ms), m.from, m.text),
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
                format!("* {user} is {}", if *online { "online" } else { "offline" }),
            ),
            Event::SendFailed { id, reason } => self.error(&format!("message {id} not sent: {reason}")),
            Event::Status(status) => self.status(status),
            Event::Connection(state) if verbose => self.connection(state),
            Event::Connection(_) | Event::AckConfirmed { .. } => {}
        }
    }

    fn connection(&self, state: &ConnectionState) {
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
                format!("* {reason}; trying again in {:.1} s", *retry_in_ms as f64 / 1000.0),
            ),
            ConnectionState::Refused { reason } => self.error(reason),
            ConnectionState::Closed => {}
        }
    }
}
