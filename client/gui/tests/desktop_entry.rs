//! The window's menu entry and icon (`assets/`, installed by `scripts/install-desktop.sh`):
//! the entry starts `qchat` with no arguments (it opens the identity opened last) and is
//! valid where `desktop-file-validate` is installed.

use std::path::Path;

fn assets() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/assets"))
}

#[test]
fn the_menu_entry_starts_the_window_with_its_icon() {
    let entry = std::fs::read_to_string(assets().join("qchat.desktop")).unwrap();
    let keys: Vec<(&str, &str)> = entry.lines().filter_map(|line| line.split_once('=')).collect();
    let value = |key: &str| keys.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    assert_eq!(entry.lines().next(), Some("[Desktop Entry]"));
    assert_eq!(value("Type"), Some("Application"));
    assert_eq!(value("Exec"), Some("qchat"), "no arguments: the window opens the identity used last");
    assert_eq!(value("Terminal"), Some("false"));
    assert_eq!(value("Icon"), Some("qchat"));
    assert!(value("Categories").is_some_and(|c| c.contains("InstantMessaging")));
    let icon = std::fs::read_to_string(assets().join("qchat.svg")).unwrap();
    assert!(icon.starts_with("<svg") && icon.contains("viewBox"), "a scalable icon");

    match std::process::Command::new("desktop-file-validate").arg(assets().join("qchat.desktop")).output() {
        Ok(out) => assert!(out.status.success() && out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout)),
        Err(_) => eprintln!("desktop-file-validate is not installed: the entry's keys were checked only"),
    }
}
