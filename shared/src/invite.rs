//! One-line invites: what a new device needs to enroll, pasted into a chat or read out.
//!
//! ```text
//! qchat-invite:chat.example.org:21567:<CA fingerprint>:<invite id>-<secret>
//! ```
//!
//! The fingerprint (BLAKE3 of the CA certificate's DER, 128 bits) is the only trust the
//! new device starts with: it accepts a relay whose certificate chains to a CA with that
//! fingerprint, and nothing else. The id names the invite on the relay; the secret (160
//! bits) proves it, and the relay keeps only its digest. Letters are base32, read without
//! regard to case.

use std::fmt;

use data_encoding::BASE32_NOPAD;

use crate::identity::split_host_port;

/// What starts every invite line.
const PREFIX: &str = "qchat-invite:";
/// Bytes of an invite id (8 letters).
pub const ID_BYTES: usize = 5;
/// Bytes of an invite secret (32 letters).
pub const SECRET_BYTES: usize = 20;
/// Bytes of a CA fingerprint (26 letters).
pub const FINGERPRINT_BYTES: usize = 16;

/// A parsed invite.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    /// `HOST:PORT` of the relay.
    pub server: String,
    pub ca_fingerprint: [u8; FINGERPRINT_BYTES],
    /// The invite's id on the relay (8 lower-case base32 letters).
    pub id: String,
    pub secret: [u8; SECRET_BYTES],
}

impl fmt::Debug for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("Invite").field("server", &self.server).field("id", &self.id).finish_non_exhaustive()
    }
}

/// Lower-case base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    BASE32_NOPAD.encode(bytes).to_ascii_lowercase()
}

fn unbase32<const N: usize>(text: &str) -> Option<[u8; N]> {
    BASE32_NOPAD.decode(text.to_ascii_uppercase().as_bytes()).ok()?.try_into().ok()
}

/// A fresh random id for an invite or a device (8 base32 letters).
pub fn random_id() -> String {
    base32(&rand::random::<[u8; ID_BYTES]>())
}

/// The fingerprint an invite carries of a CA certificate (DER).
pub fn ca_fingerprint(ca_der: &[u8]) -> [u8; FINGERPRINT_BYTES] {
    let hash = blake3::derive_key("qchat CA fingerprint v1", ca_der);
    hash[..FINGERPRINT_BYTES].try_into().expect("16 of 32 bytes")
}

/// What the relay keeps of a secret: a digest from which it cannot be recovered.
pub fn secret_digest(secret: &[u8]) -> [u8; 32] {
    blake3::derive_key("qchat invite secret v1", secret)
}

impl Invite {
    /// A new invite for the relay at `server`, trusting the CA with `ca_fingerprint`.
    pub fn new(server: &str, ca_fingerprint: [u8; FINGERPRINT_BYTES]) -> Self {
        Invite { server: server.to_string(), ca_fingerprint, id: random_id(), secret: rand::random() }
    }

    /// Reads an invite line (spaces around it, and the case of its letters, do not matter).
    pub fn parse(line: &str) -> Result<Self, String> {
        let line = line.trim();
        let bad = |what: &str| format!("this is not a valid qchat invite ({what}); ask for the whole line again");
        let rest = line.strip_prefix(PREFIX).ok_or_else(|| bad("it must start with qchat-invite:"))?;
        let mut fields = rest.rsplitn(3, ':');
        let (Some(token), Some(fingerprint), Some(server)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("a part is missing"));
        };
        split_host_port(server).map_err(|_| bad("the relay's address is garbled"))?;
        let ca_fingerprint = unbase32(fingerprint).ok_or_else(|| bad("the CA fingerprint is garbled"))?;
        let (id, secret) = token.split_once('-').ok_or_else(|| bad("the secret is missing"))?;
        unbase32::<ID_BYTES>(id).ok_or_else(|| bad("the invite id is garbled"))?;
        let secret = unbase32(secret).ok_or_else(|| bad("the secret is garbled"))?;
        Ok(Invite { server: server.to_string(), ca_fingerprint, id: id.to_ascii_lowercase(), secret })
    }
}

impl fmt::Display for Invite {
    /// The invite line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}:{}:{}-{}", self.server, base32(&self.ca_fingerprint), self.id, base32(&self.secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invite_line_round_trips_in_any_case() {
        for server in ["chat.example.org:21567", "127.0.0.1:9", "[::1]:21567"] {
            let invite = Invite::new(server, [7; FINGERPRINT_BYTES]);
            let line = invite.to_string();
            assert!(!line.contains(' '), "{line}");
            assert_eq!(Invite::parse(&line).unwrap(), invite);
            let (head, token) = line.rsplit_once(':').unwrap();
            let shouted = format!("  {head}:{}\n", token.to_ascii_uppercase());
            assert_eq!(Invite::parse(&shouted).unwrap(), invite, "letters read without regard to case");
        }
    }

    #[test]
    fn a_mistyped_invite_says_what_is_wrong() {
        let line = Invite::new("h:1", [1; FINGERPRINT_BYTES]).to_string();
        let cut = &line[..line.len() - 3];
        assert!(Invite::parse(cut).unwrap_err().contains("secret is garbled"));
        assert!(Invite::parse("hello").unwrap_err().contains("not a valid qchat invite"));
        let no_port = line.replacen(":1:", ":", 1);
        assert!(Invite::parse(&no_port).is_err());
        let typo = line.replacen('a', "1", 1).replacen("1", "8", 1);
        let _ = Invite::parse(&typo); // garbled somewhere: an error or another invite, never a panic
        assert!(
            !format!("{:?}", Invite::parse(&line).unwrap()).contains(&base32(&Invite::parse(&line).unwrap().secret))
        );
    }
}
