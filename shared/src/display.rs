//! Text from the network shown on a terminal or in a log: control characters, escape
//! sequences and bidirectional controls become visible escapes, so a peer cannot move the
//! cursor, recolour the screen or reorder what is shown.

use std::fmt;

/// Whether `c` could change how a terminal shows what follows: C0 and C1 controls (ESC
/// among them), DEL, and the bidirectional embeddings, overrides and isolates
/// (U+202A–U+202E, U+2066–U+2069) with the marks U+200E, U+200F and U+061C.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Displays a string with every [unsafe](is_unsafe) character written as `\u{…}`
/// (a newline as `\n` and a tab as `\t`, which a reader knows), and a backslash doubled,
/// so that the escapes cannot be forged.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                c if is_unsafe(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The escaped form of `text` as a new string.
pub fn escaped(text: &str) -> String {
    Escaped(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_become_visible() {
        assert_eq!(escaped("\x1b[2Jgone"), "\\u{1b}[2Jgone");
        assert_eq!(escaped("a\rb\x07\u{9b}c\x7f"), "a\\u{d}b\\u{7}\\u{9b}c\\u{7f}");
        assert_eq!(escaped("line\nnext\ttab"), "line\\nnext\\ttab");
    }

    #[test]
    fn bidirectional_controls_become_visible() {
        for c in
            ['\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}']
        {
            let shown = escaped(&format!("x{c}y"));
            assert!(!shown.contains(c), "{c:?} kept raw");
            assert_eq!(shown, format!("x\\u{{{:x}}}y", c as u32));
        }
    }

    #[test]
    fn ordinary_text_and_scripts_are_kept() {
        for text in ["hello, bob", "501密聊 对方", "こんにちは", "😀 ok", "שלום", "مرحبا"] {
            assert_eq!(escaped(text), text);
        }
    }

    #[test]
    fn an_escape_cannot_be_forged() {
        assert_eq!(escaped("\\u{1b}"), "\\\\u{1b}");
    }
}
