//! qchat's end-to-end encryption on one device. Each room is an MLS group (RFC 9420, via
//! openmls) and each device a member; the relay only orders and carries what this crate
//! makes. A [`Device`] keeps its signing key, its key packages' private keys and its
//! groups in an SQLite file of its own, and turns room events into plaintext (once each,
//! however often the relay delivers them) and plaintext into ciphertext. No sockets.

mod device;
mod groups;
mod provider;
pub mod safety;

pub use device::{Device, Issued};
pub use groups::{Candidate, Commit, Incoming, Opened};

/// The ciphersuite of every group: X25519, AES-128-GCM (this CPU's AES instructions),
/// SHA-256 and Ed25519 signatures.
pub const CIPHERSUITE: openmls::prelude::Ciphersuite =
    openmls::prelude::Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Why an end-to-end operation failed.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    #[error("the device's key store: {0}")]
    Store(String),
    #[error("this device is not in the room's encryption group yet")]
    NotInGroup,
    #[error("{0}")]
    Refused(String),
    #[error("MLS: {0}")]
    Mls(String),
}

impl From<rusqlite::Error> for E2eError {
    fn from(e: rusqlite::Error) -> Self {
        E2eError::Store(e.to_string())
    }
}

/// Turns any openmls error into [`E2eError::Mls`].
fn mls<E: std::fmt::Debug>(e: E) -> E2eError {
    E2eError::Mls(format!("{e:?}"))
}

/// The user part of a device's MLS identity (`user/device`).
pub fn user_of(identity: &str) -> &str {
    identity.split_once('/').map_or(identity, |(user, _)| user)
}

/// The MLS identity of `device` of `user`.
pub fn identity(user: &str, device: &str) -> String {
    format!("{user}/{device}")
}
