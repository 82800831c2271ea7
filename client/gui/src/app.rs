//! The iced application: the core's events come in through a subscription (its first item
//! is the command handle), the user's actions go out through that handle. `update` never
//! touches the disk or the network; it only applies events to the [`Model`].

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use iced::futures::SinkExt;
use iced::widget::operation::AbsoluteOffset;
use iced::widget::selector::{self, Target};
use iced::widget::{operation, pane_grid, text_editor};
use iced::{event, keyboard, window, Subscription, Task};
use qchat_client::history::{History, Place};
use qchat_client::{Client, ClientOptions, ConnectionState, DeviceRequest, Event, RoomRequest, TransferId};
use qchat_shared::frame::{FileId, MessageId};

use crate::geometry::{remember_split, split_record, Split, DEFAULT_SPLIT};
use crate::model::{Answer, Devices, Model, Read, Scroll};
use crate::stamps::Stamps;

/// The chat log's widget id (to keep it scrolled to the newest line).
pub const LOG: &str = "chat-log";
/// The message input's widget id (focused at start).
pub const INPUT: &str = "chat-input";
/// The search field's widget id (focused by Ctrl+F).
pub const SEARCH: &str = "search";
/// The "new" divider's widget id (the log is scrolled to it when a room opens there).
pub const DIVIDER: &str = "new-divider";
/// The message open for selecting its text.
pub const SELECTING: &str = "selecting";

/// Everything the window can be told.
#[derive(Debug, Clone)]
pub enum Message {
    /// The core started; this is how to talk to it.
    Ready(Client),
    /// An event from the core.
    Core(Event),
    /// The message being typed changed.
    Edit(text_editor::Action),
    /// Enter in the input: send what is typed.
    Send,
    /// The file path field changed.
    PathChanged(String),
    /// "Select Files…": open the native dialog.
    SelectFile,
    /// The dialog closed: one file goes to the path field, several are sent at once.
    FilesChosen(Vec<PathBuf>),
    /// "Send File": upload the file in the path field.
    SendFile,
    /// A file was dropped onto the window.
    FileDropped(PathBuf),
    /// What a dropped path holds to send, listed off the window's thread.
    DroppedListed(Dropped),
    /// "Receive all": fetch every file offered in the shown room.
    Receive,
    /// "Receive" on one offered file.
    ReceiveFile(FileId),
    /// "Open" on a received file.
    OpenFile(PathBuf),
    /// A link in a message was clicked: it opens in the browser (web links only).
    OpenLink(String),
    /// "Show in folder" on a received file: its folder opens.
    ShowInFolder(PathBuf),
    /// A file or folder was opened, or could not be.
    Opened(Result<(), String>),
    OpenDownloads,
    /// The download folder was opened, or could not be.
    DownloadsOpened(Result<(), String>),
    Cancel(TransferId),
    DismissNotice,
    /// "Devices": open or close the devices panel (opening asks the relay for the list).
    ToggleDevices,
    /// "Link a new device": ask for an invite.
    LinkDevice,
    /// "Revoke" on one of this person's devices.
    RevokeDevice(String),
    /// "Copy" next to an invite.
    CopyInvite(String),
    /// A right click on a message: its text goes to the clipboard.
    CopyText(String),
    /// A message's text was clicked: open it for selecting (all of it, to start with).
    SelectIn(MessageId),
    /// A selection or cursor move in the message open for selecting (edits are ignored:
    /// it is read-only).
    Selecting(text_editor::Action),
    /// A room in the room list was chosen.
    SelectRoom(String),
    /// The new room's name, or its members (names separated by commas), changed.
    NewRoomName(String),
    NewRoomMembers(String),
    /// "Create": make the room.
    CreateRoom,
    /// The name to add to the shown room changed.
    AddMemberName(String),
    /// "Add": add that user to the shown room.
    AddMember,
    /// "Remove" next to a member of the shown room.
    RemoveMember(String),
    /// "Leave" the shown room.
    LeaveRoom,
    /// "Safety number" in a direct room: ask for the one with this person.
    Verify(String),
    /// The chat log was scrolled: to its end or not, this far down its content, which is
    /// this tall.
    LogScrolled {
        at_end: bool,
        offset: f32,
        content: f32,
    },
    /// A read of the history (numbered as asked) came back.
    Answered(u64, Result<Answer, String>),
    /// Where the log and the divider are laid out, to scroll as `Scroll` says.
    Measured(Scroll, Option<Target>, Option<Target>),
    /// Time to write down the places that changed while scrolling.
    KeepPlaces,
    /// These places were written down (or could not be: the log says why).
    PlacesWritten(Vec<(String, Place)>),
    /// "Show later messages": read the page after the log's last line.
    ShowLater,
    /// "N new messages ↓": go to the newest line.
    JumpToEnd,
    /// "Show earlier messages": lay out another page of the room's history.
    ShowEarlier,
    /// Ctrl+F: open the search of the shown room (or close it).
    ToggleSearch,
    SearchChanged(String),
    /// Esc: close the search.
    Escape,
    /// The status line's language switch.
    SwitchLanguage,
    /// A transfer's card was clicked.
    SelectTransfer(TransferId),
    /// The window gained or lost the focus.
    Focused(bool),
    /// The window's new size (remembered for the next start).
    Resized(iced::Size),
    /// A border between panels was dragged.
    PaneResized(pane_grid::ResizeEvent),
    /// The size was written down.
    Remembered,
    /// A desktop notification was shown (or could not be: no notification service).
    Notified(Result<(), String>),
}

/// What the room forms hold while they are typed in.
#[derive(Debug, Clone, Default)]
pub struct RoomForms {
    pub name: String,
    pub members: String,
    pub add: String,
}

/// The window's state.
pub struct App {
    pub model: Model,
    pub client: Option<Client>,
    /// Shared with the subscription's key, which iced asks for after every update.
    pub options: Arc<ClientOptions>,
    pub input: text_editor::Content,
    pub path: String,
    pub forms: RoomForms,
    /// Where the window's size is remembered (none: it is not), and its split beside it.
    pub size_record: Option<PathBuf>,
    /// The panels, side by side, with the borders between them where the user put them.
    pub panes: pane_grid::State<Panel>,
    /// The shown lines' times, formatted once.
    pub stamps: Stamps,
    /// When places were last written down.
    places_written: Instant,
    /// A write of places is under way.
    writing_places: bool,
    /// The message open for selecting its text, read-only (Ctrl+C copies the selection).
    pub selecting: Option<(MessageId, text_editor::Content)>,
    /// Dropped paths whose files are being listed, each with whether its listing started.
    dropped: Vec<(PathBuf, bool)>,
}

/// A dropped path and the files to send for it, with their names ([`to_send`]).
#[derive(Debug, Clone)]
pub struct Dropped {
    pub path: PathBuf,
    pub files: Vec<(PathBuf, Option<String>)>,
}

/// Lists what a dropped `path` holds on a blocking thread: a folder may be large, or on a
/// slow disk, and the window must not stop for it.
async fn list_dropped(path: PathBuf) -> Dropped {
    let listed = path.clone();
    let files = tokio::task::spawn_blocking(move || to_send(&listed)).await.unwrap_or_default();
    Dropped { path, files }
}

/// How often places changed by scrolling are written down.
const PLACES_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Identifies the core subscription (one per identity and relay).
struct CoreKey(Arc<ClientOptions>);

impl Hash for CoreKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.identity.user.hash(state);
        self.0.server().hash(state);
        self.0.data_dir.hash(state);
    }
}

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

impl App {
    /// A window for `options`' identity; the core starts with the subscription.
    pub fn new(options: ClientOptions) -> (App, Task<Message>) {
        let app = App {
            model: Model::new(&options.identity.user),
            client: None,
            options: Arc::new(options),
            input: text_editor::Content::new(),
            path: String::new(),
            forms: RoomForms::default(),
            size_record: None,
            panes: panes(DEFAULT_SPLIT),
            stamps: Stamps::default(),
            places_written: Instant::now(),
            writing_places: false,
            selecting: None,
            dropped: Vec::new(),
        };
        (app, operation::focus(INPUT))
    }

    pub fn title(&self) -> String {
        let unread: usize = self.model.unread.values().sum();
        let unread = if unread > 0 { format!(" ({unread})") } else { String::new() };
        match &self.model.selected {
            Some(room) => {
                format!("qchat{unread} — {} · {}", self.model.me, qchat_client::rooms::title(&self.model.me, room))
            }
            None => format!("qchat{unread} — {}", self.model.me),
        }
    }

    /// Handles `message`, then starts the reads of the history and the writes of places
    /// it calls for.
    pub fn update(&mut self, message: Message) -> Task<Message> {
        let scrolled = matches!(message, Message::LogScrolled { .. });
        let handled = self.handle(message);
        self.stamps.cover(&self.model.page().1, self.model.lang);
        let mut tasks = vec![handled];
        for (path, started) in self.dropped.iter_mut().filter(|(_, started)| !*started) {
            *started = true;
            tasks.push(Task::perform(list_dropped(path.clone()), Message::DroppedListed));
        }
        if let Some(history) = self.client.as_ref().map(|c| c.history().clone()) {
            while let Some((number, read)) = self.model.next_read() {
                tasks.push(Task::perform(read_history(history.clone(), read), move |a| Message::Answered(number, a)));
            }
            // Scrolling writes its place at most once a second ([`App::subscription`]).
            if !self.writing_places && (!scrolled || self.places_written.elapsed() >= PLACES_EVERY) {
                tasks.push(self.write_places(&history));
            }
        }
        Task::batch(tasks)
    }

    /// Writes down the places that changed (the shown room's as the one shown).
    fn write_places(&mut self, history: &History) -> Task<Message> {
        let places = self.model.places_to_write();
        if places.is_empty() {
            return Task::none();
        }
        (self.places_written, self.writing_places) = (Instant::now(), true);
        let write = keep_places(history.clone(), places, self.model.selected.clone());
        Task::perform(write, Message::PlacesWritten)
    }

    /// Lists the dropped paths and runs the reads of the history asked for, applying their
    /// answers, until none is left: for a caller that does not run the tasks
    /// [`App::update`] returns (tests).
    pub async fn settle(&mut self) {
        while let Some((path, _)) = self.dropped.first() {
            let listed = list_dropped(path.clone()).await;
            let _ = self.update(Message::DroppedListed(listed));
        }
        let Some(history) = self.client.as_ref().map(|c| c.history().clone()) else { return };
        while let Some((&number, read)) = self.model.asked.iter().next() {
            let answer = read_history(history.clone(), read.clone()).await;
            let _ = self.update(Message::Answered(number, answer));
        }
        let places = self.model.places_to_write();
        if !places.is_empty() {
            let written = keep_places(history, places, self.model.selected.clone()).await;
            let _ = self.update(Message::PlacesWritten(written));
        }
    }

    fn handle(&mut self, message: Message) -> Task<Message> {
        match message {
            Message::Ready(client) => self.client = Some(client),
            Message::Core(event) => {
                let scroll = matches!(event, Event::Message(_));
                if let (Event::Connection(ConnectionState::Connected(_)), Some(client)) = (&event, &self.client) {
                    // Show what we sent earlier and where it is now.
                    client.list_files();
                }
                let notify = match &event {
                    Event::Message(m) if !self.model.focused && m.from != self.model.me => {
                        let room = qchat_client::rooms::title(&self.model.me, &m.room);
                        Some(crate::notify::show(format!("{} · {room}", m.from), m.text.clone()))
                    }
                    _ => None,
                };
                self.model.apply(event, Instant::now());
                let mut tasks = Vec::new();
                tasks.extend(notify.map(|shown| Task::perform(shown, Message::Notified)));
                // Reading back, the view stays where it is (the button counts what came).
                if scroll && self.model.follow {
                    tasks.push(operation::snap_to_end(LOG));
                }
                return Task::batch(tasks);
            }
            Message::Edit(action) => self.input.perform(action),
            Message::Send => return self.send(),
            Message::PathChanged(path) => self.path = path,
            Message::SelectFile => {
                let dialog = rfd::AsyncFileDialog::new().set_title("Select files to send").pick_files();
                return Task::perform(dialog, |files| {
                    Message::FilesChosen(files.unwrap_or_default().iter().map(|f| f.path().to_path_buf()).collect())
                });
            }
            Message::FilesChosen(files) => match files.as_slice() {
                [one] => self.path = one.display().to_string(),
                several => several.iter().for_each(|path| self.send_file(path.clone())),
            },
            Message::SendFile => {
                let path = self.path.trim().to_string();
                if !path.is_empty() {
                    self.send_file(PathBuf::from(path));
                    self.path.clear();
                }
            }
            Message::FileDropped(path) => self.dropped.push((path, false)),
            // A folder dropped is sent as the files in it, named by their place in it.
            Message::DroppedListed(Dropped { path, files }) => {
                if let Some(at) = self.dropped.iter().position(|(listing, _)| *listing == path) {
                    self.dropped.remove(at);
                }
                if files.len() > MAX_DROPPED {
                    let s = self.model.lang.strings();
                    self.model.notice = Some((s.too_many_files)(&path.display().to_string(), files.len(), MAX_DROPPED));
                    return Task::none();
                }
                for (file, name) in files {
                    self.send_file_named(file, name);
                }
            }
            Message::Receive => {
                if let Some(client) = &self.client {
                    client.receive_all_in(self.model.selected.clone(), None);
                }
            }
            Message::ReceiveFile(file_id) => {
                if let Some(client) = &self.client {
                    client.receive_file(file_id, None);
                }
            }
            Message::OpenFile(path) => return open_detached(path),
            Message::OpenLink(link) => {
                if link.starts_with("https://") || link.starts_with("http://") {
                    let open =
                        async move { open::that_detached(&link).map_err(|e| format!("cannot open {link}: {e}")) };
                    return Task::perform(open, Message::Opened);
                }
                self.model.notice = Some(format!("not a web link, not opened: {link}"));
            }
            Message::ShowInFolder(path) => {
                return open_detached(path.parent().map(PathBuf::from).unwrap_or(path));
            }
            Message::Opened(opened) => {
                if let Err(reason) = opened {
                    self.model.notice = Some(reason);
                }
            }
            Message::OpenDownloads => {
                let dir = self.options.download_dir();
                let open = async move {
                    tokio::fs::create_dir_all(&dir)
                        .await
                        .and_then(|()| open::that_detached(&dir))
                        .map_err(|e| format!("cannot open the download folder: {e}"))
                };
                return Task::perform(open, Message::DownloadsOpened);
            }
            Message::DownloadsOpened(opened) => {
                if let Err(reason) = opened {
                    self.model.notice = Some(reason);
                }
            }
            Message::Cancel(transfer) => {
                if let Some(client) = &self.client {
                    client.cancel(transfer);
                }
            }
            Message::DismissNotice => self.model.notice = None,
            Message::ToggleDevices => {
                if self.model.devices.take().is_none() {
                    self.model.devices = Some(Devices::default());
                    self.ask(DeviceRequest::List);
                }
            }
            Message::LinkDevice => self.ask(DeviceRequest::Link),
            Message::RevokeDevice(id) => self.ask(DeviceRequest::Revoke(id)),
            Message::CopyInvite(line) => return iced::clipboard::write(line),
            Message::CopyText(said) => {
                self.model.notice = Some(self.model.lang.strings().copied.into());
                return iced::clipboard::write(said);
            }
            Message::SelectRoom(room) => {
                self.model.selected_transfer = None;
                self.model.select(room);
                return operation::snap_to_end(LOG);
            }
            Message::NewRoomName(name) => self.forms.name = name,
            Message::NewRoomMembers(members) => self.forms.members = members,
            Message::CreateRoom => {
                let name = self.forms.name.trim().to_string();
                let members = self.forms.members.split(',').map(str::trim).filter(|m| !m.is_empty());
                let members = members.map(str::to_string).collect();
                if !name.is_empty() {
                    self.ask_rooms(RoomRequest::Create { name, members });
                    self.forms.name.clear();
                    self.forms.members.clear();
                }
            }
            Message::AddMemberName(user) => self.forms.add = user,
            Message::AddMember => {
                let user = self.forms.add.trim().to_string();
                if let (Some(room), false) = (self.model.selected.clone(), user.is_empty()) {
                    self.ask_rooms(RoomRequest::Add { room, user });
                    self.forms.add.clear();
                }
            }
            Message::RemoveMember(user) => {
                if let Some(room) = self.model.selected.clone() {
                    self.ask_rooms(RoomRequest::Remove { room, user });
                }
            }
            Message::LeaveRoom => {
                if let Some(room) = self.model.selected.clone() {
                    self.ask_rooms(RoomRequest::Leave { room });
                }
            }
            Message::Verify(user) => {
                if let Some(client) = &self.client {
                    client.verify(&user);
                }
            }
            Message::LogScrolled { at_end, offset, content } => self.model.scrolled(at_end, offset, content),
            Message::Answered(number, answer) => return scroll(self.model.answered(number, answer)),
            Message::Measured(scroll, log, divider) => return measured(scroll, log, divider),
            Message::KeepPlaces => {}
            Message::PlacesWritten(written) => {
                self.writing_places = false;
                self.model.places_written(&written);
            }
            Message::ShowEarlier => self.model.show_earlier(),
            Message::ShowLater => self.model.show_later(),
            Message::ToggleSearch => {
                self.model.found = None;
                if self.model.search.take().is_none() {
                    self.model.search = Some(String::new());
                    return operation::focus(SEARCH);
                }
                return operation::focus(INPUT);
            }
            Message::SearchChanged(words) => self.model.search = Some(words),
            Message::SwitchLanguage => self.model.lang = self.model.lang.other(),
            Message::SelectTransfer(transfer) => self.model.selected_transfer = Some(transfer),
            // Esc closes the search, or else cancels the transfer chosen while it runs.
            Message::SelectIn(id) => {
                let (_, lines, _) = self.model.page();
                if let Some(line) = lines.into_iter().find(|line| line.id == id) {
                    let mut content = text_editor::Content::with_text(&line.text);
                    content.perform(text_editor::Action::SelectAll);
                    self.selecting = Some((id, content));
                    return operation::focus(SELECTING);
                }
            }
            Message::Selecting(action) => {
                if let (Some((_, content)), false) = (&mut self.selecting, action.is_edit()) {
                    content.perform(action);
                }
            }
            Message::Escape => {
                if self.selecting.take().is_some() {
                    return Task::none();
                }
                if self.model.search.take().is_some() {
                    self.model.found = None;
                    return operation::focus(INPUT);
                }
                // Only one in view: a transfer of another room is not cancelled unseen.
                let chosen = self.model.selected_transfer.take();
                let running = self.model.shown_transfers().any(|t| t.transfer == chosen && t.stage.is_running());
                if let (Some(transfer), true, Some(client)) = (chosen, running, &self.client) {
                    client.cancel(transfer);
                }
            }
            Message::JumpToEnd => {
                self.model.follow_to_end();
                return operation::snap_to_end(LOG);
            }
            Message::Focused(focused) => {
                self.model.focused = focused;
                if focused {
                    self.model.looked_back();
                } else {
                    self.model.looked_away();
                }
            }
            Message::Resized(size) => {
                if let Some(record) = self.size_record.clone() {
                    let write = tokio::task::spawn_blocking(move || crate::geometry::remember(&record, size));
                    return Task::perform(write, |_| Message::Remembered);
                }
            }
            Message::PaneResized(pane_grid::ResizeEvent { split, ratio }) => {
                self.panes.resize(split, ratio);
                if let Some(record) = self.size_record.as_deref().map(split_record) {
                    let split = self.split();
                    let write = tokio::task::spawn_blocking(move || remember_split(&record, split));
                    return Task::perform(write, |_| Message::Remembered);
                }
            }
            Message::Remembered => {}
            Message::Notified(shown) => {
                if let Err(reason) = shown {
                    tracing::debug!(%reason, "no desktop notification");
                }
            }
        }
        Task::none()
    }

    /// Sends a room request to the core (it waits for a connection if there is none).
    fn ask_rooms(&mut self, request: RoomRequest) {
        match &self.client {
            Some(client) => client.rooms(request),
            None => self.model.notice = Some(self.model.lang.strings().not_connected.into()),
        }
    }

    /// Sends a device request to the core (it waits for a connection if there is none).
    fn ask(&mut self, request: DeviceRequest) {
        match &self.client {
            Some(client) => client.devices(request),
            None => self.model.notice = Some(self.model.lang.strings().not_connected.into()),
        }
    }

    fn send(&mut self) -> Task<Message> {
        let text = self.input.text().trim_end_matches('\n').to_string();
        let Some(client) = &self.client else {
            self.model.notice = Some(self.model.lang.strings().message_kept.into());
            return Task::none();
        };
        if text.trim().is_empty() {
            return Task::none();
        }
        let id = client.send_to(self.model.selected.clone(), text.clone());
        self.model.sending(id, text, now_ms());
        self.input = text_editor::Content::new();
        // What one sends, one sees.
        self.model.follow_to_end();
        operation::snap_to_end(LOG)
    }

    fn send_file(&mut self, path: PathBuf) {
        self.send_file_named(path, None);
    }

    fn send_file_named(&mut self, path: PathBuf, name: Option<String>) {
        match &self.client {
            Some(client) => {
                client.send_file_named(self.model.selected.clone(), path, name);
            }
            None => self.model.notice = Some(self.model.lang.strings().not_connected.into()),
        }
    }

    /// How the window is split now.
    pub fn split(&self) -> Split {
        /// A split's ratio and what is right of it.
        fn parts(node: &pane_grid::Node) -> Option<(f32, &pane_grid::Node)> {
            match node {
                pane_grid::Node::Split { ratio, b, .. } => Some((*ratio, b)),
                pane_grid::Node::Pane(_) => None,
            }
        }
        let outer = parts(self.panes.layout());
        let inner = outer.and_then(|(_, rest)| parts(rest));
        Split {
            rooms: outer.map_or(DEFAULT_SPLIT.rooms, |(ratio, _)| ratio),
            files: inner.map_or(DEFAULT_SPLIT.files, |(ratio, _)| ratio),
        }
    }

    pub fn view(&self) -> iced::Element<'_, Message> {
        crate::view::window(self)
    }

    pub fn subscription(&self) -> Subscription<Message> {
        let core = Subscription::run_with(CoreKey(self.options.clone()), run_core);
        let drops = event::listen_with(|event, _status, _window| match event {
            iced::Event::Window(window::Event::FileDropped(path)) => Some(Message::FileDropped(path)),
            iced::Event::Keyboard(keyboard::Event::KeyPressed { key, modifiers, .. }) => shortcut(&key, modifiers),
            iced::Event::Window(window::Event::Focused) => Some(Message::Focused(true)),
            iced::Event::Window(window::Event::Unfocused) => Some(Message::Focused(false)),
            iced::Event::Window(window::Event::Resized(size)) => Some(Message::Resized(size)),
            _ => None,
        });
        // Places changed by scrolling, written down a moment after.
        let keep = (!self.model.places_changed.is_empty())
            .then(|| iced::time::every(PLACES_EVERY).map(|_| Message::KeepPlaces));
        Subscription::batch([core, drops].into_iter().chain(keep))
    }
}

/// The window's keyboard shortcuts: Ctrl+F (Cmd+F on macOS) searches, Esc closes it.
pub fn shortcut(key: &keyboard::Key, modifiers: keyboard::Modifiers) -> Option<Message> {
    match key.as_ref() {
        keyboard::Key::Character("f" | "F") if modifiers.command() => Some(Message::ToggleSearch),
        keyboard::Key::Named(keyboard::key::Named::Escape) => Some(Message::Escape),
        _ => None,
    }
}

/// Reads what `read` asks of the history (off the window's thread).
async fn read_history(history: History, read: Read) -> Result<Answer, String> {
    let answer = match read {
        Read::Places => history.places().await.map(Answer::Places),
        Read::Page { room, span, .. } => history.read(room, span).await.map(Answer::Page),
        Read::Search { room, words } => history.search(room, words, crate::model::FOUND_SHOWN).await.map(Answer::Found),
    };
    answer.map_err(|e| e.to_string())
}

/// Writes `places` down (`shown` as the room shown), and says which.
async fn keep_places(history: History, places: Vec<(String, Place)>, shown: Option<String>) -> Vec<(String, Place)> {
    for (room, place) in &places {
        let shown_ms = (Some(room) == shown.as_ref()).then(now_ms);
        if let Err(e) = history.set_place(room.clone(), *place, shown_ms).await {
            tracing::warn!(error = %e, "cannot keep the place in the chat history");
        }
    }
    places
}

/// Scrolls the log as a page's arrival asks: some ways need the new layout measured first.
fn scroll(scroll: Scroll) -> Task<Message> {
    let log = || selector::find(selector::id(LOG));
    match scroll {
        Scroll::Stay => Task::none(),
        Scroll::End => operation::snap_to_end(LOG),
        Scroll::To(y) => operation::scroll_to(LOG, AbsoluteOffset { x: 0.0, y }),
        Scroll::Divider => log().then(move |log| {
            selector::find(selector::id(DIVIDER)).map(move |divider| Message::Measured(scroll, log.clone(), divider))
        }),
        Scroll::Below(..) => log().map(move |log| Message::Measured(scroll, log, None)),
    }
}

/// Scrolls the log once its layout is known: to the divider (a line of what led up to it
/// above), or down by what lines put above it added.
fn measured(scroll: Scroll, log: Option<Target>, divider: Option<Target>) -> Task<Message> {
    let Some(Target::Scrollable { content_bounds, .. }) = log else { return operation::snap_to_end(LOG) };
    let y = match (scroll, divider) {
        (Scroll::Divider, Some(divider)) => divider.bounds().y - content_bounds.y - 40.0,
        (Scroll::Below(offset, content), _) => offset + (content_bounds.height - content),
        _ => return operation::snap_to_end(LOG),
    };
    operation::scroll_to(LOG, AbsoluteOffset { x: 0.0, y: y.max(0.0) })
}

/// Opens `path` with the desktop's application for it, off the window's thread.
fn open_detached(path: PathBuf) -> Task<Message> {
    let open = async move { open::that_detached(&path).map_err(|e| format!("cannot open {}: {e}", path.display())) };
    Task::perform(open, Message::Opened)
}

/// What to send for a dropped `path`: the file itself (under its own name), or every file
/// under a folder, named by its place in it (`holiday/day 2/beach.jpg`) so that it lands
/// in the same folders.
pub fn to_send(path: &std::path::Path) -> Vec<(PathBuf, Option<String>)> {
    let root = path.parent().unwrap_or(path);
    let named = |file: PathBuf| {
        let parts = file.strip_prefix(root).ok().map(|rel| {
            rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
        });
        (file, parts)
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => files_in(path).into_iter().map(named).collect(),
        _ => vec![(path.to_path_buf(), None)],
    }
}

/// Files a dropped folder may hold for them all to be sent (more is likely a mistake,
/// such as a home folder, and the relay takes 10,000 waiting files of a sender at most).
pub const MAX_DROPPED: usize = 1000;

/// The files to send for a dropped `path`: itself, or every file under a folder (in name
/// order; links in it are not followed, nor sent). It stops counting past
/// [`MAX_DROPPED`] + 1.
pub fn files_in(path: &std::path::Path) -> Vec<PathBuf> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return vec![path.to_path_buf()] };
    if !meta.is_dir() {
        return vec![path.to_path_buf()];
    }
    let mut found = Vec::new();
    walk(path, &mut found);
    found
}

fn walk(dir: &std::path::Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<(PathBuf, std::fs::FileType)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.path(), entry.file_type().ok()?)))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, kind) in entries {
        if found.len() > MAX_DROPPED {
            return;
        }
        if kind.is_dir() {
            walk(&path, found);
        } else if kind.is_file() {
            found.push(path);
        }
    }
}

/// One of the window's panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Rooms,
    /// The files, or the devices while that panel is open.
    Side,
    Chat,
}

/// The panels side by side, split as `split` says.
pub fn panes(split: Split) -> pane_grid::State<Panel> {
    use pane_grid::{Axis, Configuration};
    let pane = |panel| Box::new(Configuration::Pane(panel));
    let rest =
        Configuration::Split { axis: Axis::Vertical, ratio: split.files, a: pane(Panel::Side), b: pane(Panel::Chat) };
    let whole =
        Configuration::Split { axis: Axis::Vertical, ratio: split.rooms, a: pane(Panel::Rooms), b: Box::new(rest) };
    pane_grid::State::with_configuration(whole)
}

/// Starts the client core and forwards its events; the first item is the command handle.
fn run_core(key: &CoreKey) -> impl iced::futures::Stream<Item = Message> + use<> {
    let options = ClientOptions::clone(&key.0);
    iced::stream::channel(256, async move |mut output| {
        let (client, mut events) = Client::start(options);
        if output.send(Message::Ready(client)).await.is_err() {
            return;
        }
        while let Some(event) = events.recv().await {
            if output.send(Message::Core(event)).await.is_err() {
                return;
            }
        }
    })
}
