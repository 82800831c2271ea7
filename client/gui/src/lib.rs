//! The desktop client: an iced window over the qchat client core.
//!
//! - [`app`]: the iced application: state, messages, update, subscriptions;
//! - [`model`]: what the window shows, as plain data changed only by core events;
//! - [`view`]: the two panels and the status line;
//! - [`style`], [`format`]: colours, and sizes, speeds and times for people.

pub mod app;
pub mod format;
pub mod model;
pub mod style;
pub mod view;
