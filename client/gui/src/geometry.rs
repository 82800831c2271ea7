//! The window's size, remembered between starts (`~/.config/qchat/window-size`, one line
//! `WIDTHxHEIGHT`).

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

/// Remembers `size` in `record`. Writers (one per resize event) take turns.
pub fn remember(record: &Path, size: Size) {
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = WRITING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let line = format!("{}x{}\n", size.width.round(), size.height.round());
    crate::last::write_record(record, line.as_bytes(), "the window's size");
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
}
