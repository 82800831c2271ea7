//! Turns QUIC and TLS failures into sentences a person can act on, and decides whether
//! trying again could help.

use qchat_shared::codes::CloseCode;
use quinn::ConnectionError;

/// Why a connection ended, as the user should hear it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub reason: String,
    /// Trying again cannot help (a refused certificate, an eviction, a version mismatch).
    pub fatal: bool,
}

impl Ending {
    fn fatal(reason: String) -> Self {
        Ending { reason, fatal: true }
    }
    fn transient(reason: String) -> Self {
        Ending { reason, fatal: false }
    }
}

/// TLS alerts (RFC 8446) that QUIC carries as transport error 0x100 + alert.
fn tls_alert(code: u64) -> Option<u8> {
    (0x100..0x200).contains(&code).then(|| (code - 0x100) as u8)
}

fn alert_reason(alert: u8, user: &str) -> String {
    match alert {
        44 => format!("the relay refused the certificate of {user}: it has been revoked; ask the relay's owner for a new identity"),
        45 => format!("the relay refused the certificate of {user}: it has expired; ask the relay's owner for a new identity"),
        // 51 (decrypt_error): a CA of the same name whose signature does not verify.
        48 | 51 => format!("the relay refused the certificate: {user}'s identity was issued by another CA than the relay's; ask for a new identity"),
        116 => "the relay asked for a certificate and none was sent; use a .qchat identity file".into(),
        120 => "the relay speaks another version of qchat (no common protocol); update the client or the relay".into(),
        42 | 43 | 46 | 49 => format!("the relay refused the certificate of {user} (TLS alert {alert}); ask for a new identity"),
        _ => format!("the secure handshake with the relay failed (TLS alert {alert})"),
    }
}

/// Explains how a connection to `server` ended for `user`.
pub fn explain(error: &ConnectionError, user: &str, server: &str) -> Ending {
    match error {
        ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            match CloseCode::from_varint(close.error_code) {
                CloseCode::NotAMember => Ending::fatal(format!("the relay refused {user}: {reason}")),
                CloseCode::Evicted => Ending::fatal(format!("disconnected: {reason}")),
                CloseCode::Revoked => Ending::fatal(format!("the relay refused {user}: {reason}")),
                CloseCode::Protocol => Ending::fatal(format!("the relay closed the connection: {reason}")),
                CloseCode::Shutdown => Ending::transient(format!("the relay at {server} is shutting down")),
                CloseCode::Reconnect => Ending::transient(format!("the relay asked for a new connection: {reason}")),
                CloseCode::Normal | CloseCode::Unknown(_) => {
                    Ending::transient(format!("the relay closed the connection: {reason}"))
                }
            }
        }
        ConnectionError::ConnectionClosed(close) => match tls_alert(close.error_code.into()) {
            Some(alert) => Ending::fatal(alert_reason(alert, user)),
            None => Ending::transient(format!("the relay at {server} closed the connection: {close}")),
        },
        ConnectionError::TransportError(e) => {
            let text = e.to_string();
            if tls_alert(e.code.into()).is_some() {
                // Our own check of the relay's certificate failed.
                Ending::fatal(format!(
                    "the relay at {server} is not the one in your identity file: its certificate \
                     does not chain to your CA or does not name this host ({text})"
                ))
            } else {
                Ending::transient(format!("connection to {server} failed: {text}"))
            }
        }
        ConnectionError::VersionMismatch => Ending::fatal(format!("the relay at {server} speaks another QUIC version")),
        ConnectionError::TimedOut => Ending::transient(format!("no answer from the relay at {server}")),
        ConnectionError::Reset => {
            Ending::transient(format!("the relay at {server} reset the connection (it may have restarted)"))
        }
        ConnectionError::LocallyClosed => Ending::fatal("closed".into()),
        ConnectionError::CidsExhausted => Ending::transient("out of connection ids".into()),
    }
}
