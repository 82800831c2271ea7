//! The window's colours, light and dark: the original program's light-yellow files panel
//! and light-blue chat panel, and their dark counterparts. Which one shows follows the
//! theme (the system's, unless `--theme` says otherwise). Every text tone is readable on
//! every panel (WCAG contrast of 4.5 or more, tested).

use iced::widget::{container, text};
use iced::{Background, Border, Color, Theme};

/// What a text says by its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Mine,
    Theirs,
    Muted,
    Error,
    Ok,
}

/// The window's panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Rooms,
    Files,
    Chat,
    Status,
    /// A transfer, a device, a tooltip.
    Card,
}

/// One set of colours.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    pub rooms: Color,
    pub files: Color,
    pub chat: Color,
    pub status: Color,
    pub card: Color,
    pub border: Color,
    pub text: Color,
    pub mine: Color,
    pub theirs: Color,
    pub muted: Color,
    pub error: Color,
    pub ok: Color,
}

pub const LIGHT: Palette = Palette {
    rooms: Color::from_rgb(0.95, 0.95, 0.97),
    files: Color::from_rgb(1.0, 0.98, 0.80),
    chat: Color::from_rgb(0.88, 0.94, 1.0),
    status: Color::from_rgb(0.93, 0.93, 0.93),
    card: Color::WHITE,
    border: Color::from_rgb(0.80, 0.80, 0.78),
    text: Color::from_rgb(0.08, 0.08, 0.08),
    mine: Color::from_rgb(0.05, 0.30, 0.60),
    theirs: Color::from_rgb(0.55, 0.20, 0.10),
    muted: Color::from_rgb(0.38, 0.38, 0.38),
    error: Color::from_rgb(0.72, 0.08, 0.08),
    ok: Color::from_rgb(0.05, 0.42, 0.15),
};

pub const DARK: Palette = Palette {
    rooms: Color::from_rgb(0.11, 0.12, 0.14),
    files: Color::from_rgb(0.15, 0.14, 0.10),
    chat: Color::from_rgb(0.10, 0.13, 0.18),
    status: Color::from_rgb(0.14, 0.14, 0.14),
    card: Color::from_rgb(0.19, 0.19, 0.21),
    border: Color::from_rgb(0.30, 0.30, 0.32),
    text: Color::from_rgb(0.92, 0.92, 0.92),
    mine: Color::from_rgb(0.55, 0.75, 1.0),
    theirs: Color::from_rgb(1.0, 0.68, 0.52),
    muted: Color::from_rgb(0.68, 0.68, 0.68),
    error: Color::from_rgb(1.0, 0.50, 0.50),
    ok: Color::from_rgb(0.48, 0.86, 0.56),
};

/// Which colours the window uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ThemeChoice {
    /// The system's light or dark setting, followed as it changes.
    #[default]
    System,
    Light,
    Dark,
}

impl ThemeChoice {
    /// The theme to use; none lets iced follow the system's.
    pub fn theme(self) -> Option<Theme> {
        match self {
            ThemeChoice::System => None,
            ThemeChoice::Light => Some(Theme::Light),
            ThemeChoice::Dark => Some(Theme::Dark),
        }
    }
}

/// The colours for `theme`.
pub fn palette(theme: &Theme) -> &'static Palette {
    if theme.extended_palette().is_dark {
        &DARK
    } else {
        &LIGHT
    }
}

impl Palette {
    pub fn tone(&self, tone: Tone) -> Color {
        match tone {
            Tone::Mine => self.mine,
            Tone::Theirs => self.theirs,
            Tone::Muted => self.muted,
            Tone::Error => self.error,
            Tone::Ok => self.ok,
        }
    }

    pub fn surface(&self, surface: Surface) -> Color {
        match surface {
            Surface::Rooms => self.rooms,
            Surface::Files => self.files,
            Surface::Chat => self.chat,
            Surface::Status => self.status,
            Surface::Card => self.card,
        }
    }
}

/// Text in `tone`.
pub fn tone(tone: Tone) -> impl Fn(&Theme) -> text::Style {
    move |theme| text::Style { color: Some(palette(theme).tone(tone)) }
}

/// A panel filled with its colour.
pub fn panel(surface: Surface) -> impl Fn(&Theme) -> container::Style {
    move |theme| {
        let palette = palette(theme);
        container::Style {
            background: Some(Background::Color(palette.surface(surface))),
            text_color: Some(palette.text),
            border: Border { color: palette.border, width: 1.0, radius: 0.0.into() },
            ..container::Style::default()
        }
    }
}

/// A card: one transfer, one device, a tooltip.
pub fn card(theme: &Theme) -> container::Style {
    let palette = palette(theme);
    container::Style {
        background: Some(Background::Color(palette.card)),
        text_color: Some(palette.text),
        border: Border { color: palette.border, width: 1.0, radius: 4.0.into() },
        ..container::Style::default()
    }
}

/// A message open for selecting its text: on a card, the selection in the own lines' tone.
pub fn selecting(theme: &Theme, _status: iced::widget::text_editor::Status) -> iced::widget::text_editor::Style {
    let palette = palette(theme);
    iced::widget::text_editor::Style {
        background: Background::Color(palette.card),
        border: Border { color: palette.border, width: 1.0, radius: 4.0.into() },
        placeholder: palette.muted,
        value: palette.text,
        selection: Color { a: 0.35, ..palette.mine },
    }
}

/// The card of the transfer chosen (Esc cancels it).
pub fn chosen_card(theme: &Theme) -> container::Style {
    let palette = palette(theme);
    container::Style { border: Border { color: palette.mine, width: 2.0, radius: 4.0.into() }, ..card(theme) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WCAG 2 relative luminance.
    fn luminance(c: Color) -> f32 {
        let channel = |v: f32| if v <= 0.04045 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) };
        0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b)
    }

    fn contrast(a: Color, b: Color) -> f32 {
        let (la, lb) = (luminance(a), luminance(b));
        (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
    }

    #[test]
    fn every_tone_is_readable_on_every_panel_light_and_dark() {
        let tones = [Tone::Mine, Tone::Theirs, Tone::Muted, Tone::Error, Tone::Ok];
        let surfaces = [Surface::Rooms, Surface::Files, Surface::Chat, Surface::Status, Surface::Card];
        for (name, palette) in [("light", &LIGHT), ("dark", &DARK)] {
            for surface in surfaces {
                let bg = palette.surface(surface);
                let ratio = contrast(palette.text, bg);
                assert!(ratio >= 7.0, "{name}: text on {surface:?} has contrast {ratio:.1}");
                for tone in tones {
                    let ratio = contrast(palette.tone(tone), bg);
                    assert!(ratio >= 4.5, "{name}: {tone:?} on {surface:?} has contrast {ratio:.1}");
                }
            }
        }
    }

    #[test]
    fn the_dark_theme_gets_the_dark_colours() {
        assert_eq!(palette(&Theme::Dark).chat, DARK.chat);
        assert_eq!(palette(&Theme::Light).chat, LIGHT.chat);
        assert!(luminance(DARK.chat) < 0.05 && luminance(LIGHT.chat) > 0.8);
    }
}
