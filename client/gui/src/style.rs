//! The window's colours: the original program's light-yellow files panel and light-blue
//! chat panel.

use iced::widget::container;
use iced::{Background, Border, Color, Theme};

pub const ROOMS_BG: Color = Color::from_rgb(0.95, 0.95, 0.97);
pub const FILES_BG: Color = Color::from_rgb(1.0, 0.98, 0.80);
pub const CHAT_BG: Color = Color::from_rgb(0.88, 0.94, 1.0);
pub const STATUS_BG: Color = Color::from_rgb(0.93, 0.93, 0.93);
pub const MINE: Color = Color::from_rgb(0.05, 0.30, 0.60);
pub const THEIRS: Color = Color::from_rgb(0.55, 0.20, 0.10);
pub const MUTED: Color = Color::from_rgb(0.40, 0.40, 0.40);
pub const ERROR: Color = Color::from_rgb(0.75, 0.10, 0.10);
pub const OK: Color = Color::from_rgb(0.10, 0.55, 0.20);

/// A panel filled with `color`.
pub fn panel(color: Color) -> impl Fn(&Theme) -> container::Style {
    move |_| container::Style {
        background: Some(Background::Color(color)),
        border: Border { color: Color::from_rgb(0.8, 0.8, 0.8), width: 1.0, radius: 0.0.into() },
        ..container::Style::default()
    }
}

/// A white card for one transfer.
pub fn card(_: &Theme) -> container::Style {
    container::Style {
        background: Some(Background::Color(Color::WHITE)),
        border: Border { color: Color::from_rgb(0.85, 0.83, 0.70), width: 1.0, radius: 4.0.into() },
        ..container::Style::default()
    }
}
