//! User names: what the certificates and the relay accept.

/// The longest user name.
pub const MAX_USER_NAME: usize = 32;

/// Checks that `name` is `[a-z0-9_-]{1,32}`, saying what is wrong if not.
pub fn validate_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_USER_NAME {
        return Err(format!("user name {name:?} must be 1 to {MAX_USER_NAME} characters long"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(format!("user name {name:?} may hold only a-z, 0-9, '_' and '-', not {bad:?}"));
    }
    Ok(())
}

/// Checks that `name` can name a room the relay's users create: the alphabet and length
/// of user names (a direct room's name, with its `+`, is never one).
pub fn validate_room_name(name: &str) -> Result<(), String> {
    validate_user_name(name).map_err(|e| e.replacen("user name", "room name", 1))
}

/// The name of the direct room of two users: both names, in order, joined by `+`.
pub fn direct_room(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a}+{b}")
    } else {
        format!("{b}+{a}")
    }
}

/// The two users of a direct room's name, if it is one (two valid, different names in
/// order).
pub fn direct_pair(name: &str) -> Option<(&str, &str)> {
    let (a, b) = name.split_once('+')?;
    (a < b && validate_user_name(a).is_ok() && validate_user_name(b).is_ok()).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_rooms_have_one_name_for_both_people() {
        assert_eq!(direct_room("bob", "alice"), "alice+bob");
        assert_eq!(direct_room("alice", "bob"), "alice+bob");
        assert_eq!(direct_pair("alice+bob"), Some(("alice", "bob")));
        for bad in ["bob+alice", "alice+alice", "alice", "alice+", "a+b+c", "Alice+bob"] {
            assert_eq!(direct_pair(bad), None, "{bad}");
        }
        assert!(validate_room_name("team-1").is_ok());
        let err = validate_room_name("a+b").unwrap_err();
        assert!(err.starts_with("room name"), "{err}");
    }

    #[test]
    fn accepts_the_allowed_alphabet() {
        for ok in ["alice", "b", "x_1-y", &"a".repeat(32)] {
            assert!(validate_user_name(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in ["", "Alice", "a b", "../x", "ä", &"a".repeat(33), "a/b", "a\n"] {
            assert!(validate_user_name(bad).is_err(), "{bad:?}");
        }
    }
}

/// File names longer than this (in bytes) are shortened, keeping the extension.
pub const MAX_SAVED_NAME: usize = 200;

/// Names Windows reserves for devices, with or without an extension (the superscript
/// digits ¹²³ count as digits there, and so does 0).
const WINDOWS_DEVICES: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "COM0", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7",
    "COM8", "COM9", "COM¹", "COM²", "COM³", "LPT0", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8",
    "LPT9", "LPT¹", "LPT²", "LPT³",
];

/// Makes a file name from the network safe to create inside a folder on any OS: no path
/// separators (`/`, `\`), no `..`, no control characters, NUL or bidirectional controls (which can make
/// `txt.exe` look like `exe.txt`), none of the characters
/// Windows forbids, no Windows device names, no leading or trailing dots and spaces, at
/// most [`MAX_SAVED_NAME`] bytes. Never empty.
pub fn sanitize_file_name(name: &str) -> String {
    let mut clean: String = name
        .chars()
        .map(|c| match c {
            '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c if crate::display::is_unsafe(c) => '_',
            c => c,
        })
        .collect();
    clean = clean.trim_matches(TRIMMED).to_string();
    while clean.contains("..") {
        clean = clean.replace("..", "_");
    }
    clean = shorten(&clean, MAX_SAVED_NAME);
    // After shortening, which may have cut the name down to a device name.
    let stem = clean.split('.').next().unwrap_or("").trim_end();
    if WINDOWS_DEVICES.iter().any(|d| d.to_uppercase() == stem.to_uppercase()) {
        clean = shorten(&format!("_{clean}"), MAX_SAVED_NAME);
    }
    if clean.is_empty() {
        clean = "file".into();
    }
    clean
}

/// What a saved name may not start or end with.
const TRIMMED: [char; 2] = ['.', ' '];

/// Cuts a clean `name` to at most `max` bytes on a character boundary, keeping a short
/// extension; the cut part loses trailing dots and spaces, so the result is clean too.
fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let ext = name.rfind('.').map(|i| &name[i..]).filter(|e| e.len() <= 16).unwrap_or("");
    let mut cut = max - ext.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", name[..cut].trim_end_matches(TRIMMED))
}

/// The `n`-th alternative of a name when it is taken: `name (n).ext`.
pub fn numbered(name: &str, n: u32) -> String {
    match name.rfind('.').filter(|&i| i > 0) {
        Some(i) => format!("{} ({n}){}", &name[..i], &name[i..]),
        None => format!("{name} ({n})"),
    }
}

#[cfg(test)]
mod file_name_tests {
    use super::*;

    #[test]
    fn hostile_names_become_plain_names() {
        let cases = [
            "..\\..\\x",
            "../../etc/passwd",
            "CON",
            "con.txt",
            "COM1.tar.gz",
            "a\nb",
            "nul\0byte",
            "..",
            "",
            " . ",
            "report.pdf.",
            "a:b*c?.txt",
        ];
        for hostile in cases {
            let clean = sanitize_file_name(hostile);
            assert!(!clean.contains('/') && !clean.contains('\\'), "{hostile:?} -> {clean:?}");
            assert!(!clean.contains(".."), "{hostile:?} -> {clean:?}");
            assert!(!clean.chars().any(char::is_control), "{hostile:?} -> {clean:?}");
            assert!(!clean.is_empty());
        }
        assert_eq!(sanitize_file_name("CON"), "_CON");
        // Shortening can cut a long name down to a device name: that is caught too.
        let cut_to_device = sanitize_file_name(&format!("CON{}y.txt", " ".repeat(300)));
        assert!(cut_to_device.starts_with("_CON") && cut_to_device.len() <= MAX_SAVED_NAME, "{cut_to_device:?}");
        assert_eq!(sanitize_file_name("holiday photo.jpg"), "holiday photo.jpg");
        assert_eq!(sanitize_file_name("a\nb"), "a_b");
        assert_eq!(sanitize_file_name(".."), "file");
    }

    #[test]
    fn every_windows_device_name_is_prefixed() {
        for device in ["COM0", "com¹", "COM².txt", "LPT³.log", "lpt0", "CONIN$", "conout$.txt", "Aux", "nul.tar.gz"]
        {
            let clean = sanitize_file_name(device);
            assert_eq!(clean, format!("_{device}"), "{device:?}");
        }
        assert_eq!(sanitize_file_name("COM10"), "COM10", "only the reserved digits");
    }

    #[test]
    fn bidirectional_overrides_cannot_disguise_an_extension() {
        let disguised = "invoice\u{202E}fdp.exe";
        let clean = sanitize_file_name(disguised);
        assert_eq!(clean, "invoice_fdp.exe");
        for c in ['\u{202A}', '\u{202D}', '\u{2066}', '\u{2069}', '\u{200F}'] {
            assert!(!sanitize_file_name(&format!("a{c}b")).contains(c), "{c:?}");
        }
    }

    #[test]
    fn long_names_keep_their_extension_and_char_boundaries() {
        let long = format!("{}.txt", "é".repeat(200));
        let clean = sanitize_file_name(&long);
        assert!(clean.len() <= MAX_SAVED_NAME);
        assert!(clean.ends_with(".txt"));
        assert_eq!(sanitize_file_name(&"x".repeat(250)).len(), MAX_SAVED_NAME);
    }

    #[test]
    fn numbered_names() {
        assert_eq!(numbered("a.txt", 1), "a (1).txt");
        assert_eq!(numbered("archive", 2), "archive (2)");
        assert_eq!(numbered(".hidden", 1), ".hidden (1)");
    }
}
