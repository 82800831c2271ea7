//! The `.qchat` identity file: one text file holding everything a client needs.
//!
//! ```text
//! server = chat.example.org:21567
//! user = alice
//!
//! -----BEGIN CERTIFICATE-----   the user's certificate (CN = user, clientAuth)
//! -----BEGIN CERTIFICATE-----   the CA the relay's certificate must chain to
//! -----BEGIN PRIVATE KEY-----   the user's PKCS#8 key
//! ```
//!
//! It is a secret, like an SSH private key: written 0600 on Unix.

use std::path::Path;

use crate::names::validate_user_name;

/// A parsed identity file.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// `HOST:PORT` of the relay.
    pub server: String,
    pub user: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub key_pem: String,
    /// End-to-end keys made with the identity (by `qchat-certs user`), which the device
    /// takes into its own store on first run: opaque here (see `qchat_e2e::Issued`),
    /// base64 in the file's `e2e = …` line.
    pub e2e: Option<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Identity").field("server", &self.server).field("user", &self.user).finish_non_exhaustive()
    }
}

/// Why an identity file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read identity file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("identity file is not valid: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> IdentityError {
    IdentityError::Invalid(msg.into())
}

impl Identity {
    /// Reads and parses an identity file.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| IdentityError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text)
    }

    /// Parses the text of an identity file (a byte-order mark first, as Notepad writes
    /// one, and Windows line ends are fine).
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let pem_start = text.find("-----BEGIN").ok_or_else(|| invalid("it holds no PEM blocks"))?;
        let (header, pem) = text.split_at(pem_start);
        let mut server = None;
        let mut user = None;
        let mut e2e = None;
        for line in header.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (key, value) =
                line.split_once('=').ok_or_else(|| invalid(format!("header line {line:?} is not `key = value`")))?;
            match key.trim() {
                "server" => server = Some(value.trim().to_string()),
                "user" => user = Some(value.trim().to_string()),
                "e2e" => e2e = Some(value.trim().to_string()),
                other => return Err(invalid(format!("unknown header {other:?}"))),
            }
        }
        let server = server.ok_or_else(|| invalid("the `server = HOST:PORT` line is missing"))?;
        let user = user.ok_or_else(|| invalid("the `user = NAME` line is missing"))?;
        validate_user_name(&user).map_err(invalid)?;
        split_host_port(&server).map_err(invalid)?;
        let blocks = pem_blocks(pem)?;
        let [(l1, cert_pem), (l2, ca_pem), (l3, key_pem)] = <[_; 3]>::try_from(blocks)
            .map_err(|b: Vec<_>| invalid(format!("expected 3 PEM blocks, found {}", b.len())))?;
        if l1 != "CERTIFICATE" || l2 != "CERTIFICATE" || l3 != "PRIVATE KEY" {
            return Err(invalid(format!(
                "expected CERTIFICATE, CERTIFICATE, PRIVATE KEY blocks, found {l1}, {l2}, {l3}"
            )));
        }
        Ok(Identity { server, user, cert_pem, ca_pem, key_pem, e2e })
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let e2e = self.e2e.as_ref().map(|keys| format!("e2e = {keys}\n")).unwrap_or_default();
        format!(
            "# qchat identity: keep it secret, like an SSH private key.\nserver = {}\nuser = {}\n{e2e}\n{}{}{}",
            self.server,
            self.user,
            with_newline(&self.cert_pem),
            with_newline(&self.ca_pem),
            with_newline(&self.key_pem)
        )
    }

    /// Writes the file, readable by its owner only (on Unix).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write_secret(path, self.to_text().as_bytes())
    }

    /// The device this identity's certificate names, or, for one from `qchat-certs user`
    /// (which names none), an id made from its serial number: every certificate is one
    /// device.
    pub fn device(&self) -> Option<String> {
        let certs = crate::tls::parse_certs(&self.cert_pem, "the user certificate").ok()?;
        let leaf = certs.first()?;
        crate::tls::device_of(leaf).or_else(|| crate::tls::serial(leaf).map(|s| legacy_device_id(&s)))
    }

    /// The host part of `server`, which the relay's certificate must name.
    pub fn server_host(&self) -> &str {
        split_host_port(&self.server).map(|(h, _)| h).unwrap_or(&self.server)
    }
}

/// The public end-to-end keys issued with an identity from `qchat-certs user`, in the
/// PKI's `issued/NAME.e2e`: the relay hands out the key package (a last-resort one) until
/// the device publishes its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedKeys {
    pub device: String,
    pub signature_key: Vec<u8>,
    pub key_package: Vec<u8>,
}

impl IssuedKeys {
    pub fn to_text(&self) -> String {
        format!(
            "device = {}\nsignature_key = {}\nkey_package = {}\n",
            self.device,
            crate::hex::encode(&self.signature_key),
            crate::hex::encode(&self.key_package)
        )
    }

    pub fn parse(text: &str) -> Option<IssuedKeys> {
        let mut fields = std::collections::HashMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line.split_once('=')?;
            fields.insert(key.trim(), value.trim());
        }
        Some(IssuedKeys {
            device: fields.get("device")?.to_string(),
            signature_key: crate::hex::decode(fields.get("signature_key")?)?,
            key_package: crate::hex::decode(fields.get("key_package")?)?,
        })
    }
}

/// The device id of a certificate that names no device: its serial number's first letters.
pub fn legacy_device_id(serial: &[u8]) -> String {
    let mut bytes = [0u8; crate::invite::ID_BYTES];
    for (b, s) in bytes.iter_mut().zip(serial) {
        *b = *s;
    }
    crate::invite::base32(&bytes)
}

fn with_newline(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

/// Splits `HOST:PORT` (or `[v6]:PORT`) into its parts.
pub fn split_host_port(addr: &str) -> Result<(&str, u16), String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("server {addr:?} must be HOST:PORT"))?;
    let port = port.parse::<u16>().map_err(|_| format!("server {addr:?} has no valid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("server {addr:?} has no host"));
    }
    Ok((host, port))
}

/// Splits PEM text into (label, block text) pairs.
fn pem_blocks(text: &str) -> Result<Vec<(String, String)>, IdentityError> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines().map(str::trim_end) {
        if let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
            if current.is_some() {
                return Err(invalid("a PEM block begins inside another"));
            }
            current = Some((label.to_string(), format!("{line}\n")));
        } else if let Some(label) = line.strip_prefix("-----END ").and_then(|l| l.strip_suffix("-----")) {
            let (open, mut body) = current.take().ok_or_else(|| invalid("a PEM block ends that never began"))?;
            if open != label {
                return Err(invalid(format!("PEM block {open} ends as {label}")));
            }
            body.push_str(line);
            body.push('\n');
            blocks.push((open, body));
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        } else if !line.trim().is_empty() {
            return Err(invalid("text outside the PEM blocks"));
        }
    }
    if current.is_some() {
        return Err(invalid("the last PEM block never ends"));
    }
    Ok(blocks)
}

/// Writes a file that only its owner may read (0600 on Unix), replacing any old one.
pub fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n";

    fn sample() -> Identity {
        Identity {
            server: "127.0.0.1:21567".into(),
            user: "alice".into(),
            cert_pem: CERT.into(),
            ca_pem: CERT.replace("AAAA", "CCCC"),
            key_pem: KEY.into(),
            e2e: None,
        }
    }

    #[test]
    fn round_trip() {
        assert_eq!(Identity::parse(&sample().to_text()).unwrap(), sample());
        let with_keys = Identity { e2e: Some("eyJ4IjoxfQ==".into()), ..sample() };
        assert_eq!(Identity::parse(&with_keys.to_text()).unwrap(), with_keys);
        assert_eq!(sample().server_host(), "127.0.0.1");
    }

    #[test]
    fn refuses_broken_files_with_a_reason() {
        let good = sample().to_text();
        let cases = [
            ("", "no PEM"),
            (&good.replace("user = alice\n", ""), "user"),
            (&good.replace("server = 127.0.0.1:21567", "server = nowhere"), "HOST:PORT"),
            (&good.replace("alice", "Alice"), "a-z"),
            (&good.replace("-----END PRIVATE KEY-----\n", ""), "never ends"),
            (&good.replace(KEY, ""), "3 PEM blocks"),
            (&good.replace("PRIVATE KEY", "EC KEY"), "PRIVATE KEY"),
        ];
        for (text, why) in cases {
            let err = Identity::parse(text).unwrap_err().to_string();
            assert!(err.contains(why), "{err:?} should mention {why:?}");
        }
    }

    #[test]
    fn a_file_saved_by_notepad_is_read() {
        // A byte-order mark first and CRLF line ends, as Windows editors write them.
        let text = format!("\u{feff}{}", sample().to_text().replace('\n', "\r\n"));
        let read = Identity::parse(&text).unwrap();
        assert_eq!((read.user.as_str(), read.server.as_str()), ("alice", "127.0.0.1:21567"));
        assert_eq!(read.key_pem.replace("\r\n", "\n"), KEY);
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert!(!format!("{:?}", sample()).contains("BBBB"));
    }

    #[test]
    fn ipv6_server() {
        assert_eq!(split_host_port("[::1]:5").unwrap(), ("::1", 5));
    }
}
