//! The desktop client: an iced window over the qchat client core.
//!
//! - [`shell`]: the two screens, joining and the chat;
//! - [`join`]: the first-start screen: paste an invite, or open a saved identity;
//! - [`last`]: the identity opened last, opened again by a start with no arguments;
//! - [`geometry`]: the window's size, remembered between starts;
//! - [`app`]: the chat window: state, messages, update, subscriptions;
//! - [`model`]: what the window shows, as plain data changed only by core events and
//!   what it reads from the history;
//! - [`log`]: the shown room's lines in memory, a bounded stretch of its history;
//! - [`stamps`]: the shown lines' times and days, formatted once;
//! - [`view`]: the room list, the files and chat panels, and the status line;
//! - [`notify`]: desktop notifications while the window is not focused;
//! - [`text`]: every string the window shows, in English and Simplified Chinese;
//! - [`style`], [`format`]: colours (light and dark), and sizes, speeds and times for people;
//! - [`fonts`]: the bundled fonts for Chinese, Japanese, Korean, emoji and right-to-left text.

pub mod app;
pub mod fonts;
pub mod format;
pub mod geometry;
pub mod join;
pub mod last;
pub mod log;
pub mod model;
pub mod notify;
pub mod shell;
pub mod stamps;
pub mod style;
pub mod text;
pub mod view;
