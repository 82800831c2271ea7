//! The fonts the window bundles for scripts a PC may have no font for (licences in
//! `assets/fonts/NOTICE`); fonts the system has are used first.

/// A bundled font and what it is there for.
#[derive(Debug, Clone, Copy)]
pub struct Fallback {
    /// The scripts it covers, as a person would name them.
    pub covers: &'static str,
    /// A line of text it must render (tested), in those scripts.
    pub sample: &'static str,
    /// The font file.
    pub bytes: &'static [u8],
}

/// Every bundled font, loaded into the window at start.
pub const FALLBACKS: [Fallback; 5] = [
    Fallback {
        covers: "Chinese and Japanese",
        sample: "501密聊 对方 發送檔案 ひらがな カタカナ 日本語",
        bytes: include_bytes!("../assets/fonts/DroidSansFallbackFull.ttf"),
    },
    Fallback {
        covers: "Korean",
        sample: "안녕하세요 파일 보내기",
        bytes: include_bytes!("../assets/fonts/NanumSquareR.ttf"),
    },
    Fallback {
        covers: "emoji", sample: "😀👍🎉❤️🔥📎", bytes: include_bytes!("../assets/fonts/NotoColorEmoji.ttf")
    },
    Fallback {
        covers: "Arabic",
        sample: "مرحبا بالعالم",
        bytes: include_bytes!("../assets/fonts/NotoSansArabic-Regular.ttf"),
    },
    Fallback {
        covers: "Hebrew",
        sample: "שלום עולם",
        bytes: include_bytes!("../assets/fonts/NotoSansHebrew-Regular.ttf"),
    },
];
