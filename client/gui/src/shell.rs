//! The window's two screens: joining (no identity yet) and the chat ([`App`]). Joining, or
//! opening a saved identity, switches to the chat.

use std::path::{Path, PathBuf};

use iced::{Element, Subscription, Task};
use qchat_client::ClientOptions;

use crate::app::{App, Message};
use crate::join::{JoinMessage, JoinScreen};

/// How the chat is started once there is an identity (the command line's settings).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub server: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub download_dir: Option<PathBuf>,
    /// Where the identity opened is remembered for the next start (none: not remembered).
    pub remember_in: Option<PathBuf>,
    /// The window's language.
    pub lang: crate::text::Lang,
    /// Where the window's size is remembered (none: it is not).
    pub size_record: Option<PathBuf>,
}

impl Settings {
    /// Client options for the identity file at `path`.
    pub fn options(&self, path: &Path) -> Result<ClientOptions, String> {
        let identity = qchat_shared::identity::Identity::load(path).map_err(|e| e.to_string())?;
        let mut options = ClientOptions::new(identity);
        options.server = self.server.clone();
        options.data_dir = self.data_dir.clone();
        options.download_dir = self.download_dir.clone();
        options.identity_path = Some(path.to_path_buf());
        Ok(options)
    }
}

/// The screen showing.
pub enum Shell {
    Join(Box<JoinScreen>, Settings),
    Chat(Box<App>),
}

/// A message for either screen.
#[derive(Debug, Clone)]
pub enum ShellMessage {
    Join(JoinMessage),
    Chat(Message),
}

impl Shell {
    /// The chat of `options`' identity.
    pub fn chat(options: ClientOptions, settings: &Settings) -> (Shell, Task<ShellMessage>) {
        let (mut app, task) = App::new(options);
        app.model.lang = settings.lang;
        app.size_record = settings.size_record.clone();
        let split = settings
            .size_record
            .as_deref()
            .and_then(|r| crate::geometry::recall_split(&crate::geometry::split_record(r)));
        app.panes = crate::app::panes(split.unwrap_or(crate::geometry::DEFAULT_SPLIT));
        (Shell::Chat(Box::new(app)), task.map(ShellMessage::Chat))
    }

    /// The join screen, with the identities already in `dir`.
    pub fn join(dir: PathBuf, settings: Settings) -> (Shell, Task<ShellMessage>) {
        let mut screen = JoinScreen::new(dir);
        screen.lang = settings.lang;
        (Shell::Join(Box::new(screen), settings), Task::none())
    }

    pub fn title(&self) -> String {
        match self {
            Shell::Join(screen, _) => screen.lang.strings().join_title.into(),
            Shell::Chat(app) => app.title(),
        }
    }

    pub fn update(&mut self, message: ShellMessage) -> Task<ShellMessage> {
        match (self, message) {
            (Shell::Chat(app), ShellMessage::Chat(message)) => app.update(message).map(ShellMessage::Chat),
            (shell @ Shell::Join(..), ShellMessage::Join(message)) => {
                let Shell::Join(screen, settings) = shell else { unreachable!() };
                let path = match (&message, screen.typed_path()) {
                    (JoinMessage::Joined(Ok(path)) | JoinMessage::Open(path), _) => path.clone(),
                    (JoinMessage::OpenTyped, Some(path)) => path,
                    _ => return screen.update(message).map(ShellMessage::Join),
                };
                match settings.options(&path) {
                    Ok(options) => {
                        if let Some(record) = &settings.remember_in {
                            crate::last::remember(record, &path);
                        }
                        let (next, task) = Shell::chat(options, settings);
                        *shell = next;
                        task
                    }
                    Err(reason) => {
                        screen.busy = false;
                        screen.error = Some(reason);
                        Task::none()
                    }
                }
            }
            _ => Task::none(),
        }
    }

    pub fn view(&self) -> Element<'_, ShellMessage> {
        match self {
            Shell::Join(screen, _) => screen.view().map(ShellMessage::Join),
            Shell::Chat(app) => app.view().map(ShellMessage::Chat),
        }
    }

    pub fn subscription(&self) -> Subscription<ShellMessage> {
        match self {
            Shell::Join(..) => Subscription::none(),
            Shell::Chat(app) => app.subscription().map(ShellMessage::Chat),
        }
    }
}
