//! The first-start screen, shown when `qchat` starts without `--identity`: paste an
//! invite, name this device and join (the key is made here and never leaves this PC), or
//! open an identity this PC already has.

use std::path::{Path, PathBuf};

use iced::widget::{button, column, container, row, text, text_input, Column};
use iced::{Alignment, Element, Fill, Task};

use crate::style::{self, Surface, Tone};

/// What the join screen holds.
#[derive(Debug, Clone)]
pub struct JoinScreen {
    pub invite: String,
    pub name: String,
    /// A join is running.
    pub busy: bool,
    pub error: Option<String>,
    /// Where joined identities are written, and the ones found there.
    pub dir: PathBuf,
    pub saved: Vec<PathBuf>,
    /// An identity file typed or pasted (quotes and all, as Explorer copies a path).
    pub path: String,
    pub lang: crate::text::Lang,
}

/// What the join screen can be told.
#[derive(Debug, Clone)]
pub enum JoinMessage {
    InviteChanged(String),
    NameChanged(String),
    Join,
    /// The join ended: the identity file written, or why not.
    Joined(Result<PathBuf, String>),
    /// Open an identity this PC has.
    Open(PathBuf),
    PathChanged(String),
    /// Open the identity file typed in.
    OpenTyped,
}

/// Where the desktop client keeps the identities it joined with.
pub fn identities_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "qchat")
        .map(|d| d.data_dir().join("identities"))
        .unwrap_or_else(|| PathBuf::from("qchat-identities"))
}

/// The identity files in `dir`, by name.
pub fn saved_identities(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "qchat"))
        .collect();
    found.sort();
    found
}

/// Joins with `line` as `name` and writes the identity to `dir` (as `USER-DEVICE.qchat`).
pub async fn join_and_save(line: String, name: String, dir: PathBuf) -> Result<PathBuf, String> {
    let joined = qchat_client::enroll::join(&line, &name).await.map_err(|e| e.0)?;
    let path = dir.join(format!("{}-{}.qchat", joined.identity.user, joined.device));
    let (identity, target) = (joined.identity, path.clone());
    tokio::task::spawn_blocking(move || qchat_client::args::write_new_identity(&target, &identity))
        .await
        .map_err(|e| e.to_string())??;
    Ok(path)
}

impl JoinScreen {
    /// The screen, with the identities already in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        let saved = saved_identities(&dir);
        JoinScreen {
            invite: String::new(),
            name: qchat_client::args::default_device_name(),
            busy: false,
            error: None,
            dir,
            saved,
            path: String::new(),
            lang: crate::text::Lang::default(),
        }
    }

    /// The identity file typed in, if any (without the quotes a pasted path has).
    pub fn typed_path(&self) -> Option<PathBuf> {
        let path = qchat_client::args::path_from_text(&self.path);
        (!path.as_os_str().is_empty()).then_some(path)
    }

    /// Applies a message; `Joined(Ok)`, `Open` and `OpenTyped` are the shell's to act on.
    pub fn update(&mut self, message: JoinMessage) -> Task<JoinMessage> {
        match message {
            JoinMessage::PathChanged(path) => self.path = path,
            JoinMessage::InviteChanged(invite) => self.invite = invite,
            JoinMessage::NameChanged(name) => self.name = name,
            JoinMessage::Join if !self.busy => {
                if let Err(reason) = qchat_shared::invite::Invite::parse(&self.invite) {
                    self.error = Some(reason);
                    return Task::none();
                }
                self.busy = true;
                self.error = None;
                let join = join_and_save(self.invite.trim().to_string(), self.name.clone(), self.dir.clone());
                return Task::perform(join, JoinMessage::Joined);
            }
            JoinMessage::Join => {}
            JoinMessage::Joined(Err(reason)) => {
                self.busy = false;
                self.error = Some(reason);
            }
            JoinMessage::Joined(Ok(_)) | JoinMessage::Open(_) | JoinMessage::OpenTyped => {}
        }
        Task::none()
    }

    pub fn view(&self) -> Element<'_, JoinMessage> {
        let ready = !self.busy && !self.invite.trim().is_empty();
        let s = self.lang.strings();
        let mut body = column![
            text(s.welcome).size(24),
            text(s.paste_invite),
            text_input("qchat-invite:…", &self.invite)
                .on_input(JoinMessage::InviteChanged)
                .on_submit(JoinMessage::Join),
            row![
                text(s.device_called),
                text_input(s.device_name, &self.name).on_input(JoinMessage::NameChanged).width(260),
            ]
            .spacing(8)
            .align_y(Alignment::Center),
            button(if self.busy { s.joining } else { s.join }).on_press_maybe(ready.then_some(JoinMessage::Join)),
            text(s.key_stays).size(12).style(style::tone(Tone::Muted)),
        ]
        .spacing(12)
        .max_width(720);
        if let Some(error) = &self.error {
            body = body.push(text(error).style(style::tone(Tone::Error)));
        }
        if !self.saved.is_empty() {
            let opens = self.saved.iter().map(|path| {
                let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                row![text(name).width(Fill), button(s.open).on_press(JoinMessage::Open(path.clone()))]
                    .align_y(Alignment::Center)
                    .into()
            });
            body = body.push(text(s.open_saved)).push(Column::with_children(opens).spacing(6));
        }
        let typed = !self.path.trim().is_empty();
        body = body.push(
            row![
                text_input(s.identity_path, &self.path)
                    .on_input(JoinMessage::PathChanged)
                    .on_submit(JoinMessage::OpenTyped),
                button(s.open_file).on_press_maybe(typed.then_some(JoinMessage::OpenTyped)),
            ]
            .spacing(8)
            .align_y(Alignment::Center),
        );
        container(body).padding(40).center_x(Fill).height(Fill).style(style::panel(Surface::Chat)).into()
    }
}
