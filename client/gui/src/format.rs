//! Sizes, speeds, durations and clock times as a person reads them.

use std::sync::OnceLock;
use std::time::Duration;

use time::{OffsetDateTime, UtcOffset};

pub use qchat_shared::units::human_bytes;

static LOCAL_OFFSET: OnceLock<UtcOffset> = OnceLock::new();

/// Reads the local time zone's offset; call it before any thread starts.
pub fn init_local_offset() {
    let _ = LOCAL_OFFSET.set(UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC));
}

fn local(time_ms: i64) -> Option<OffsetDateTime> {
    let offset = LOCAL_OFFSET.get().copied().unwrap_or(UtcOffset::UTC);
    OffsetDateTime::from_unix_timestamp_nanos(time_ms as i128 * 1_000_000).ok().map(|t| t.to_offset(offset))
}

/// `HH:MM` in local time (UTC if the offset was never read).
pub fn clock(time_ms: i64) -> String {
    local(time_ms).map(|t| format!("{:02}:{:02}", t.hour(), t.minute())).unwrap_or_default()
}

/// `YYYY-MM-DD HH:MM` in local time.
pub fn date(time_ms: i64) -> String {
    local(time_ms)
        .map(|t| format!("{}-{:02}-{:02} {:02}:{:02}", t.year(), t.month() as u8, t.day(), t.hour(), t.minute()))
        .unwrap_or_default()
}

/// The local calendar day of a time, for the log's day separators, in the window's
/// language (`Tuesday 1 December 2026`, `2026年12月1日 星期二`).
pub fn day(time_ms: i64, s: &crate::text::Strings) -> String {
    local(time_ms).map(|t| (s.day)(t.weekday(), t.day(), t.month() as u8, t.year())).unwrap_or_default()
}

/// A message's text cut into plain parts and web links (`http://`, `https://`, up to the
/// next space or full-width punctuation, without the punctuation that ends a sentence):
/// `(part, is_link)`.
pub fn links(text: &str) -> Vec<(&str, bool)> {
    let mut parts = Vec::new();
    let mut plain_from = 0;
    while let Some((start, end)) = next_link(text, plain_from) {
        if start > plain_from {
            parts.push((&text[plain_from..start], false));
        }
        parts.push((&text[start..end], true));
        plain_from = end;
    }
    if plain_from < text.len() {
        parts.push((&text[plain_from..], false));
    }
    parts
}

/// Where the next web link at or after byte `from` of `text` starts and ends.
fn next_link(text: &str, from: usize) -> Option<(usize, usize)> {
    const STOPS: &[char] = &['，', '。', '！', '？', '；', '：', '（', '）', '【', '】', '「', '」', '、'];
    const ENDS: &[char] = &['.', ',', ';', ':', '!', '?', ')', ']', '\'', '"'];
    let mut at = from;
    loop {
        let (start, scheme) = ["https://", "http://"]
            .iter()
            .filter_map(|scheme| Some((at + text[at..].find(scheme)?, scheme.len())))
            .min()?;
        let run = &text[start..];
        // A direction control would make the link read otherwise than where it goes.
        let stop = |c: char| c.is_whitespace() || STOPS.contains(&c) || qchat_shared::display::is_unsafe(c);
        let end = start + run.find(stop).unwrap_or(run.len());
        let link = text[start..end].trim_end_matches(ENDS);
        if link.len() > scheme {
            return Some((start, start + link.len()));
        }
        at = end.max(start + scheme);
    }
}

/// `12.3 MiB/s`.
pub fn speed(bytes_per_s: f64) -> String {
    format!("{}/s", human_bytes(bytes_per_s.max(0.0) as u64))
}

/// `1:05:09`, `4:02`, `0:07`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable() {
        assert_eq!(duration(Duration::from_secs(7)), "0:07");
        assert_eq!(duration(Duration::from_secs(3909)), "1:05:09");
        assert_eq!(speed(1536.0), "1.5 KiB/s");
        assert_eq!(clock(0), "00:00");
        assert_eq!(links("no links here"), [("no links here", false)]);
        assert_eq!(
            links("see https://example.org/a?b=1. and http://x.cn）"),
            [
                ("see ", false),
                ("https://example.org/a?b=1", true),
                (". and ", false),
                ("http://x.cn", true),
                ("）", false)
            ]
        );
        assert_eq!(
            links("(https://qchat.example/docs)"),
            [("(", false), ("https://qchat.example/docs", true), (")", false)]
        );
        assert_eq!(links("https:// alone"), [("https:// alone", false)]);
        assert_eq!(
            links("https://bank.example\u{202e}gpj.exe"),
            [("https://bank.example", true), ("\u{202e}gpj.exe", false)]
        );
        assert_eq!(
            links("地图：https://map.example/路线，周五"),
            [("地图：", false), ("https://map.example/路线", true), ("，周五", false)]
        );
        let en = &crate::text::EN;
        assert_eq!(day(0, en), "Thursday 1 January 1970");
        assert_eq!(day(86_400_000 - 1, en), day(0, en), "the same day until midnight");
        assert_ne!(day(86_400_000, en), day(0, en));
        assert_eq!(day(0, &crate::text::ZH), "1970年1月1日 星期四");
    }
}
