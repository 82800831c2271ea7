//! The relay's settings: its flags and its config file (TOML, the flags' names with `_`
//! for `-`), merged with the flags winning. Unknown keys and wrong types are errors that
//! name the file and the line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qchat_shared::logging::LogFormat;
use serde::Deserialize;

use crate::{RelayConfig, RelayLimits};

/// Every setting of a running relay. `None` is "not given": the flag's default applies.
#[derive(clap::Args, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The PKI made by `qchat-certs` (default: DATA/pki, created with a demo PKI if absent).
    #[arg(long)]
    pub pki: Option<PathBuf>,
    /// Where the database and files live (default: the platform's data directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// UDP address to listen on (default: 0.0.0.0:21567).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The largest file accepted (e.g. 64G, 512M; default 64G).
    #[arg(long, value_parser = qchat_shared::units::parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub max_file_size: Option<u64>,
    /// What one user's files on the relay may add up to (default 256G).
    #[arg(long, value_parser = qchat_shared::units::parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub quota: Option<u64>,
    /// Days a fetched file is kept on the relay (default 7).
    #[arg(long)]
    pub retention_days: Option<u64>,
    /// Days a file nobody fetched is kept; its sender is told when it goes (default 30).
    #[arg(long)]
    pub expiry_days: Option<u64>,
    /// Days a delivered message is kept on the relay (default 7).
    #[arg(long)]
    pub message_retention_days: Option<u64>,
    /// Days a message nobody received is kept; its sender is told when it goes (default 30).
    #[arg(long)]
    pub message_expiry_days: Option<u64>,
    /// Files of one sender on the relay that nobody has fetched yet, empty ones counted
    /// (default 10000).
    #[arg(long)]
    pub max_waiting_files: Option<u64>,
    /// What one sender's messages waiting for someone offline may add up to (default 64M).
    #[arg(long, value_parser = qchat_shared::units::parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub max_waiting_message_bytes: Option<u64>,
    /// File transfers served at once (default 16).
    #[arg(long)]
    pub max_transfers: Option<usize>,
    /// File transfers one user may have served at once, their share (default 4).
    #[arg(long)]
    pub max_transfers_per_user: Option<usize>,
    /// Seconds a transfer may move no bytes before it gives its slot back (default 60).
    #[arg(long)]
    pub stall_timeout_secs: Option<u64>,
    /// Memory the flow-control windows of all transfers together may grow to, beyond 4 MiB
    /// per connection; a far, fast path needs twice its bandwidth-delay product per
    /// transfer (default 96M).
    #[arg(long, value_parser = qchat_shared::units::parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub window_budget: Option<u64>,
    /// Days a device's certificate is valid; its client renews it in the last third
    /// (default 90).
    #[arg(long)]
    pub device_cert_days: Option<u64>,
    /// Failed joins (wrong, used or expired invites) one address may make per minute
    /// (default 10).
    #[arg(long)]
    pub failed_joins_per_minute: Option<u32>,
    /// Log lines as text (coloured on a terminal) or as JSON objects, on stderr
    /// (default text).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Serve Prometheus metrics over HTTP at this address, e.g. 127.0.0.1:9108 (default: off).
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
}

/// A config file that cannot be used, with where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, message: String },
}

impl Settings {
    /// Reads a config file; every problem in it is an error naming its line.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Settings::from_toml(path, &text)
    }

    /// Reads the text of a config file named `path`.
    pub fn from_toml(path: &Path, text: &str) -> Result<Settings, ConfigError> {
        // A file saved by Notepad starts with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let settings: Settings = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start)).unwrap_or(1);
            ConfigError::Invalid { path: path.to_path_buf(), line, message: e.message().trim().to_string() }
        })?;
        settings.check().map_err(|(key, message)| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of_key(text, key),
            message,
        })?;
        Ok(settings)
    }

    /// What no type can say: values that cannot work. Returns the key and why.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_transfers == Some(0) {
            return Err(("max_transfers", "max_transfers must be at least 1".into()));
        }
        if self.max_transfers_per_user == Some(0) {
            return Err(("max_transfers_per_user", "max_transfers_per_user must be at least 1".into()));
        }
        if self.stall_timeout_secs == Some(0) {
            return Err(("stall_timeout_secs", "stall_timeout_secs must be at least 1".into()));
        }
        if self.device_cert_days == Some(0) {
            return Err(("device_cert_days", "device_cert_days must be at least 1".into()));
        }
        if self.failed_joins_per_minute == Some(0) {
            return Err(("failed_joins_per_minute", "failed_joins_per_minute must be at least 1".into()));
        }
        Ok(())
    }

    /// These settings, with what they leave unset taken from `file`.
    pub fn over(self, file: Settings) -> Settings {
        Settings {
            pki: self.pki.or(file.pki),
            data: self.data.or(file.data),
            listen: self.listen.or(file.listen),
            max_file_size: self.max_file_size.or(file.max_file_size),
            quota: self.quota.or(file.quota),
            retention_days: self.retention_days.or(file.retention_days),
            expiry_days: self.expiry_days.or(file.expiry_days),
            message_retention_days: self.message_retention_days.or(file.message_retention_days),
            message_expiry_days: self.message_expiry_days.or(file.message_expiry_days),
            max_waiting_files: self.max_waiting_files.or(file.max_waiting_files),
            max_waiting_message_bytes: self.max_waiting_message_bytes.or(file.max_waiting_message_bytes),
            max_transfers: self.max_transfers.or(file.max_transfers),
            max_transfers_per_user: self.max_transfers_per_user.or(file.max_transfers_per_user),
            stall_timeout_secs: self.stall_timeout_secs.or(file.stall_timeout_secs),
            window_budget: self.window_budget.or(file.window_budget),
            device_cert_days: self.device_cert_days.or(file.device_cert_days),
            failed_joins_per_minute: self.failed_joins_per_minute.or(file.failed_joins_per_minute),
            log_format: self.log_format.or(file.log_format),
            metrics: self.metrics.or(file.metrics),
        }
    }

    /// The address the relay listens on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], qchat_shared::DEFAULT_PORT)))
    }

    /// The relay's limits: the defaults, with what these settings give.
    pub fn limits(&self) -> RelayLimits {
        let mut limits = RelayLimits::default();
        let days = |n: u64| Duration::from_secs(n * 24 * 3600);
        set(&mut limits.max_file_size, self.max_file_size);
        set(&mut limits.quota, self.quota);
        set(&mut limits.retention, self.retention_days.map(days));
        set(&mut limits.expiry, self.expiry_days.map(days));
        set(&mut limits.message_retention, self.message_retention_days.map(days));
        set(&mut limits.message_expiry, self.message_expiry_days.map(days));
        set(&mut limits.max_waiting_files, self.max_waiting_files);
        set(&mut limits.max_waiting_message_bytes, self.max_waiting_message_bytes);
        set(&mut limits.max_transfers, self.max_transfers.map(|n| n.max(1)));
        let per_user = self.max_transfers_per_user.unwrap_or(limits.max_transfers_per_user);
        limits.max_transfers_per_user = per_user.clamp(1, limits.max_transfers);
        set(&mut limits.stall_timeout, self.stall_timeout_secs.map(|s| Duration::from_secs(s.max(1))));
        set(&mut limits.window_budget, self.window_budget);
        set(&mut limits.device_lifetime, self.device_cert_days.map(|n| days(n.max(1))));
        set(&mut limits.enroll_failures_per_minute, self.failed_joins_per_minute.map(|n| n.max(1)));
        limits
    }

    /// The relay's configuration, with its PKI and data directories found already.
    pub fn relay_config(&self, pki_dir: PathBuf, data_dir: PathBuf) -> RelayConfig {
        RelayConfig { pki_dir, data_dir, listen: self.listen_addr(), limits: self.limits() }
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// A size in a config file: bytes as a number, or as the flags take it ("64G", "512M").
fn size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer) {
        Ok(Size::Bytes(bytes)) => Ok(Some(bytes)),
        Ok(Size::Text(text)) => qchat_shared::units::parse_size(&text).map(Some).map_err(serde::de::Error::custom),
        Err(_) => Err(serde::de::Error::custom("expected a size: a number of bytes, or a string such as \"64G\"")),
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The 1-based line where `key` is set in `text` (1 when it cannot be found).
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, String> {
        Settings::from_toml(Path::new("/etc/qchat/server.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_is_read_sizes_as_text_or_bytes() {
        let text = r#"
pki = "/var/lib/qchat/pki"
data = "/var/lib/qchat"
listen = "[::]:4433"
max_file_size = "512M"
quota = 1073741824
retention_days = 3
expiry_days = 10
message_retention_days = 2
message_expiry_days = 20
max_waiting_files = 50
max_waiting_message_bytes = "1M"
max_transfers = 8
max_transfers_per_user = 2
stall_timeout_secs = 30
window_budget = "32M"
device_cert_days = 30
failed_joins_per_minute = 5
log_format = "json"
metrics = "127.0.0.1:9108"
"#;
        let settings = parse(text).unwrap();
        assert_eq!(settings.pki.as_deref(), Some(Path::new("/var/lib/qchat/pki")));
        assert_eq!(settings.listen_addr(), "[::]:4433".parse().unwrap());
        let limits = settings.limits();
        assert_eq!(limits.max_file_size, 512 << 20);
        assert_eq!(limits.quota, 1 << 30);
        assert_eq!(limits.retention, Duration::from_secs(3 * 86400));
        assert_eq!(limits.message_expiry, Duration::from_secs(20 * 86400));
        assert_eq!(limits.max_waiting_message_bytes, 1 << 20);
        assert_eq!((limits.max_transfers, limits.max_transfers_per_user), (8, 2));
        assert_eq!(limits.window_budget, 32 << 20);
        assert_eq!(limits.enroll_failures_per_minute, 5);
        assert_eq!(settings.log_format, Some(LogFormat::Json));
        assert_eq!(settings.metrics, Some("127.0.0.1:9108".parse().unwrap()));
        // Every flag has its key: a file that sets them all leaves nothing unset.
        let unset = format!("{settings:?}").matches("None").count();
        assert_eq!(unset, 0, "{settings:?}");
    }

    #[test]
    fn an_empty_file_keeps_the_defaults() {
        let settings = parse("# nothing set\n").unwrap();
        assert_eq!(settings, Settings::default());
        let limits = settings.limits();
        let defaults = RelayLimits::default();
        assert_eq!(limits.quota, defaults.quota);
        assert_eq!(limits.max_transfers, defaults.max_transfers);
        assert_eq!(settings.listen_addr().port(), qchat_shared::DEFAULT_PORT);
    }

    #[test]
    fn a_notepad_byte_order_mark_is_skipped() {
        assert_eq!(parse("\u{feff}quota = \"1G\"\n").unwrap().quota, Some(1 << 30));
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = parse("quota = \"1G\"\nretention_days = 3\n").unwrap();
        let flags = Settings { quota: Some(5), ..Settings::default() };
        let merged = flags.over(file);
        assert_eq!(merged.quota, Some(5));
        assert_eq!(merged.retention_days, Some(3));
    }

    #[test]
    fn unknown_keys_are_errors_with_their_line() {
        let err = parse("quota = \"1G\"\n\nretention = 3\n").unwrap_err();
        assert!(err.starts_with("/etc/qchat/server.toml:3: "), "{err}");
        assert!(err.contains("retention"), "{err}");
    }

    #[test]
    fn wrong_types_are_errors_with_their_line() {
        let err = parse("retention_days = 3\nmax_transfers = \"eight\"\n").unwrap_err();
        assert!(err.starts_with("/etc/qchat/server.toml:2: "), "{err}");
        let err = parse("quota = \"lots\"\n").unwrap_err();
        assert!(err.starts_with("/etc/qchat/server.toml:1: "), "{err}");
        assert!(err.contains("lots"), "{err}");
        let err = parse("quota = true\n").unwrap_err();
        assert!(err.contains("expected a size"), "{err}");
        let err = parse("listen = \"localhost\"\n").unwrap_err();
        assert!(err.starts_with("/etc/qchat/server.toml:1: "), "{err}");
        let err = parse("log_format = \"xml\"\n").unwrap_err();
        assert!(err.contains("xml") || err.contains("text"), "{err}");
    }

    #[test]
    fn broken_toml_is_an_error_with_its_line() {
        let err = parse("quota = \"1G\"\nretention_days = \n").unwrap_err();
        assert!(err.starts_with("/etc/qchat/server.toml:2: "), "{err}");
    }

    #[test]
    fn values_that_cannot_work_are_errors_with_their_line() {
        let err = parse("quota = \"1G\"\nmax_transfers = 0\n").unwrap_err();
        assert_eq!(err, "/etc/qchat/server.toml:2: max_transfers must be at least 1");
    }
}
