//! What sealed messages hold, and files as this client sees them: the relay's record of a
//! file (id, room, sender, sealed size) joined with what the sender's encrypted offer said
//! (name, size, key). The relay never learns a file's name or key.

use qchat_shared::frame::{Blake3, FileEntry, FileId, FileInfo, FileState};
use qchat_shared::seal::FileKey;
use serde::{Deserialize, Serialize};

/// The plaintext of a sealed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    Text(String),
    /// A file this room's member uploads: what the relay must not see of it.
    File(FileOffer),
}

impl Content {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Content> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A file's name, size and key, as its sender's device put them in the encrypted offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffer {
    pub file_id: FileId,
    pub name: String,
    /// Bytes of the file itself.
    pub size: u64,
    pub key: FileKey,
}

/// How a file's bytes are on the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cipher {
    /// Sealed under this key.
    Sealed(FileKey),
    /// Plain: stored by a relay from before end-to-end encryption.
    Plain,
    /// Sealed, and its key has not reached this device (sent before it was in the room's
    /// group): it cannot be received here.
    Unknown,
}

/// A file as this client shows and fetches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub file_id: FileId,
    pub room: String,
    pub name: String,
    /// Bytes of the file itself (what is saved).
    pub size: u64,
    pub from: String,
    /// The relay's hash of what it holds, once the upload is committed.
    pub blake3: Option<Blake3>,
    pub time_ms: i64,
    /// Bytes on the relay (the sealed file).
    pub stored_size: u64,
    pub cipher: Cipher,
}

impl Offer {
    /// The relay's record joined with the sender's offer (if this device has it).
    pub fn new(info: FileInfo, offer: Option<&FileOffer>) -> Offer {
        let (name, size, cipher) = match (&info.plain_name, offer) {
            (Some(name), _) => (name.clone(), info.size, Cipher::Plain),
            (None, Some(offer)) => (offer.name.clone(), offer.size, Cipher::Sealed(offer.key.clone())),
            (None, None) => (
                format!("file {}", info.file_id),
                qchat_shared::seal::plain_len(info.size).unwrap_or(info.size),
                Cipher::Unknown,
            ),
        };
        Offer {
            file_id: info.file_id,
            room: info.room,
            name,
            size,
            from: info.from,
            blake3: info.blake3,
            time_ms: info.time_ms,
            stored_size: info.size,
            cipher,
        }
    }

    /// Whether this device can receive it.
    pub fn readable(&self) -> bool {
        !matches!(self.cipher, Cipher::Unknown)
    }
}

/// One line of a file listing, as this client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub info: Offer,
    pub state: FileState,
}

impl Listed {
    pub fn new(entry: FileEntry, offer: Option<&FileOffer>) -> Listed {
        Listed { info: Offer::new(entry.info, offer), state: entry.state }
    }
}
