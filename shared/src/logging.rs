//! How every qchat program logs: to stderr, in colour only on a terminal that shows it
//! (never in a file, a pipe or the journal, never with `NO_COLOR` set), or as JSON lines
//! for a log collector. `RUST_LOG` picks what is logged.

use std::io::IsTerminal;

/// The shape of log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text per event, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, spans).
    Json,
}

/// Starts logging to stderr; `default_filter` (e.g. "info") applies when `RUST_LOG` is
/// unset. Calling it twice keeps the first.
pub fn init(default_filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(stderr_shows_colour()).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

/// Whether stderr is a terminal that renders colour codes.
fn stderr_shows_colour() -> bool {
    colour_wanted(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").is_some()) && console_renders_colour()
}

/// Colour only on a terminal, and never when `NO_COLOR` is set (<https://no-color.org>).
pub fn colour_wanted(is_terminal: bool, no_color_set: bool) -> bool {
    is_terminal && !no_color_set
}

/// Windows consoles before Windows 10 print colour codes as text; newer ones render them
/// once asked to.
#[cfg(windows)]
fn console_renders_colour() -> bool {
    nu_ansi_term::enable_ansi_support().is_ok()
}

#[cfg(not(windows))]
fn console_renders_colour() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, false));
        assert!(!colour_wanted(false, false), "a file or a pipe gets no colour codes");
        assert!(!colour_wanted(true, true), "NO_COLOR turns colour off");
        assert!(!colour_wanted(false, true));
    }

    #[test]
    fn log_formats_read_from_a_config_file() {
        #[derive(serde::Deserialize)]
        struct Config {
            log_format: LogFormat,
        }
        let json: Config = serde_json::from_str(r#"{"log_format":"json"}"#).unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        assert!(serde_json::from_str::<Config>(r#"{"log_format":"xml"}"#).is_err());
    }
}
