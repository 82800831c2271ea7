//! The bundled fallback font covers what the seed's users write: Simplified and
//! Traditional Chinese, and Japanese kana and kanji, so a PC without such fonts shows the
//! text, not empty boxes. (It has no Hangul: Korean needs a system font.)

#[test]
fn the_bundled_fallback_font_has_glyphs_for_chinese_and_japanese() {
    let face = ttf_parser::Face::parse(qchat_gui::style::CJK_FALLBACK, 0).expect("a valid font");
    for sample in ["501密聊 对方 发送文件 接收", "對方 傳送檔案", "ひらがな カタカナ 日本語"]
    {
        let missing: Vec<char> = sample.chars().filter(|c| !c.is_ascii() && face.glyph_index(*c).is_none()).collect();
        assert!(missing.is_empty(), "no glyph for {missing:?} in {sample:?}");
    }
}
