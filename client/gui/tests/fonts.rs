//! The bundled fonts cover what people write: Chinese, Japanese, Korean, emoji, Arabic and
//! Hebrew, so a PC without such fonts shows the text, not empty boxes; and the window
//! renders them (an iced_test snapshot, with no system font for these scripts needed).

use iced::widget::{column, text};
use iced::{Element, Settings, Theme};
use qchat_gui::fonts::FALLBACKS;

/// The characters of `sample` that no bundled font has a glyph for.
fn missing(sample: &str) -> Vec<char> {
    let faces: Vec<ttf_parser::Face> =
        FALLBACKS.iter().map(|fallback| ttf_parser::Face::parse(fallback.bytes, 0).expect("a valid font")).collect();
    sample
        .chars()
        .filter(|c| !c.is_ascii() && !c.is_whitespace() && *c != '\u{fe0f}')
        .filter(|c| faces.iter().all(|face| face.glyph_index(*c).is_none()))
        .collect()
}

#[test]
fn every_script_people_write_has_a_bundled_glyph() {
    for fallback in FALLBACKS {
        assert!(
            missing(fallback.sample).is_empty(),
            "{}: no glyph for {:?}",
            fallback.covers,
            missing(fallback.sample)
        );
    }
    for sample in ["对方 接收", "對方 傳送檔案", "こんにちは", "한국어 채팅", "🙂🚀✅", "שָׁלוֹם", "السلام عليكم"]
    {
        assert!(missing(sample).is_empty(), "no glyph for {:?} in {sample:?}", missing(sample));
    }
    assert_eq!(missing("\u{10fffd}"), vec!['\u{10fffd}'], "the check can fail");
}

/// Renders `lines` with the bundled fonts loaded, as the window does.
fn render(lines: &[&str]) -> iced_test::simulator::Snapshot {
    let settings = Settings { fonts: FALLBACKS.iter().map(|f| f.bytes.into()).collect(), ..Settings::default() };
    let content: Element<'_, ()> = column(lines.iter().map(|line| text(*line).size(24).into())).spacing(8).into();
    let mut ui = iced_test::Simulator::with_size(settings, (480.0, 48.0 * lines.len() as f32), content);
    ui.snapshot(&Theme::Light).expect("a frame")
}

/// Where a test's snapshots go, for a person to look at.
fn snapshots() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fonts")
}

/// Whether two snapshots have the same pixels (iced_test compares with a saved image).
fn same(a: &iced_test::simulator::Snapshot, b: &iced_test::simulator::Snapshot) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a");
    a.matches_image(&path).expect("saved") && b.matches_image(&path).expect("compared")
}

#[test]
fn a_snapshot_of_each_script_shows_glyphs_not_empty_boxes() {
    // A code point no font has draws as the missing-glyph box: a line of each script must
    // look different from a line of those, and from an empty line.
    let boxes = render(&["\u{10fffd}\u{10fffd}\u{10fffd}\u{10fffd}\u{10fffd}"]);
    let blank = render(&[""]);
    assert!(!same(&boxes, &blank), "the check can fail: boxes are drawn");
    for fallback in FALLBACKS {
        let drawn = render(&[fallback.sample]);
        assert!(!same(&drawn, &blank), "{}: nothing drawn", fallback.covers);
        assert!(!same(&drawn, &boxes), "{}: drawn as missing-glyph boxes", fallback.covers);
    }
    let samples: Vec<&str> = FALLBACKS.iter().map(|fallback| fallback.sample).collect();
    render(&samples).matches_image(snapshots().join("every-script")).expect("saved");
}
