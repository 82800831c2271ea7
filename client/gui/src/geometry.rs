//! The window's size and split, remembered between starts (`~/.config/qchat/window-size`,
//! one line `WIDTHxHEIGHT`; `window-split` beside it, one line `ROOMS FILES`: the shares of
//! the width).

use std::path::{Path, PathBuf};

use iced::Size;

/// The size the window opens at the first time.
pub const DEFAULT: Size = Size::new(1040.0, 660.0);

/// Where the size is kept.
pub fn record_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "qchat").map(|dirs| dirs.config_dir().join("window-size"))
}

/// The size remembered in `record`, if it is one a window can have.
pub fn recall(record: &Path) -> Option<Size> {
    let text = std::fs::read_to_string(record).ok()?;
    let (w, h) = text.trim().split_once('x')?;
    let (w, h): (f32, f32) = (w.parse().ok()?, h.parse().ok()?);
    ((320.0..=16384.0).contains(&w) && (240.0..=16384.0).contains(&h)).then(|| Size::new(w, h))
}

/// Remembers `size` in `record`.
pub fn remember(record: &Path, size: Size) {
    let line = format!("{}x{}\n", size.width.round(), size.height.round());
    write_line(record, &line, "the window's size");
}

/// How the window is split between its panels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Split {
    /// The room list's share of the window's width.
    pub rooms: f32,
    /// The files panel's share of the rest (the chat has what is left).
    pub files: f32,
}

/// The split the window opens with the first time.
pub const DEFAULT_SPLIT: Split = Split { rooms: 0.18, files: 0.4 };

/// Where the split is kept: beside the size's `record`.
pub fn split_record(record: &Path) -> PathBuf {
    record.with_file_name("window-split")
}

/// The split remembered in `record`, if each share leaves every panel some room.
pub fn recall_split(record: &Path) -> Option<Split> {
    let text = std::fs::read_to_string(record).ok()?;
    let (rooms, files) = text.trim().split_once(' ')?;
    let (rooms, files): (f32, f32) = (rooms.parse().ok()?, files.parse().ok()?);
    let sensible = |share: f32| (0.05..=0.95).contains(&share);
    (sensible(rooms) && sensible(files)).then_some(Split { rooms, files })
}

/// Remembers `split` in `record`.
pub fn remember_split(record: &Path, split: Split) {
    write_line(record, &format!("{:.3} {:.3}\n", split.rooms, split.files), "the window's split");
}

/// Writes `line` as `record`; writers (one per resize event) take turns.
fn write_line(record: &Path, line: &str, what: &str) {
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = WRITING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    crate::last::write_record(record, line.as_bytes(), what);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_is_remembered_and_nonsense_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("config").join("window-size");
        assert_eq!(recall(&record), None);
        remember(&record, Size::new(1280.4, 800.0));
        assert_eq!(recall(&record), Some(Size::new(1280.0, 800.0)));
        for nonsense in ["", "wide", "10x10", "1280x", "99999x800", "-5x700"] {
            std::fs::write(&record, nonsense).unwrap();
            assert_eq!(recall(&record), None, "{nonsense:?}");
        }
    }

    #[test]
    fn the_split_is_remembered_beside_the_size_and_nonsense_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let record = split_record(&dir.path().join("config").join("window-size"));
        assert_eq!(record.file_name().unwrap(), "window-split");
        assert_eq!(recall_split(&record), None);
        remember_split(&record, Split { rooms: 0.2504, files: 0.5 });
        assert_eq!(recall_split(&record), Some(Split { rooms: 0.25, files: 0.5 }));
        for nonsense in ["", "0.2", "0.2 x", "0 0.5", "0.2 1.0", "-0.1 0.5", "0.2 0.5 0.3"] {
            std::fs::write(&record, nonsense).unwrap();
            assert_eq!(recall_split(&record), None, "{nonsense:?}");
        }
    }
}
