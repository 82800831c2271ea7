//! The window: files on the left (light yellow), chat on the right (light blue), a
//! status line at the foot.

use iced::keyboard::key::Named;
use iced::keyboard::Key;
use iced::widget::text_editor::{Binding, KeyPress};
use iced::widget::{button, column, container, progress_bar, row, scrollable, text, text_editor, text_input, Column};
use iced::{Alignment, Element, Fill, Length};
use qchat_client::history::ChatLine;

use crate::app::{App, Message, INPUT, LOG};
use crate::format::{clock, date, duration, human_bytes, speed};
use crate::model::{Devices, Direction, Link, Stage, Transfer};
use crate::style;
use qchat_shared::frame::DeviceInfo;

/// The whole window.
pub fn window(app: &App) -> Element<'_, Message> {
    let left = match &app.model.devices {
        Some(panel) => devices(app, panel),
        None => files(app),
    };
    let panels = row![
        container(left).width(Length::FillPortion(2)).height(Fill).padding(10).style(style::panel(style::FILES_BG)),
        container(chat(app)).width(Length::FillPortion(3)).height(Fill).padding(10).style(style::panel(style::CHAT_BG)),
    ];
    column![panels, status(app)].into()
}

fn chat(app: &App) -> Element<'_, Message> {
    let log = Column::with_children(app.model.lines.iter().map(chat_line)).spacing(6).padding(4);
    let input = text_editor(&app.input)
        .id(INPUT)
        .placeholder("Write a message; Enter sends, Shift+Enter starts a new line")
        .on_action(Message::Edit)
        .key_binding(enter_sends)
        .height(Length::Fixed(70.0));
    let file_row = row![
        text_input("Path of a file to send (or drop it on the window)", &app.path)
            .on_input(Message::PathChanged)
            .on_submit(Message::SendFile),
        button("Select File…").on_press(Message::SelectFile),
        button("Send File").on_press_maybe((!app.path.trim().is_empty()).then_some(Message::SendFile)),
    ]
    .spacing(6)
    .align_y(Alignment::Center);
    column![text("Chat").size(18), scrollable(log).id(LOG).anchor_bottom().height(Fill).width(Fill), input, file_row,]
        .spacing(8)
        .into()
}

/// Enter sends; Shift+Enter (and everything else) does what an editor does.
fn enter_sends(press: KeyPress) -> Option<Binding<Message>> {
    if press.key == Key::Named(Named::Enter) && !press.modifiers.shift() {
        return matches!(press.status, text_editor::Status::Focused { .. }).then_some(Binding::Custom(Message::Send));
    }
    Binding::from_key_press(press)
}

fn chat_line(line: &ChatLine) -> Element<'_, Message> {
    let color = if line.mine { style::MINE } else { style::THEIRS };
    // A receipt may overtake the relay's `Stored` (they travel on different streams):
    // delivered implies stored.
    let ticks = match (line.mine, line.seq.is_some(), line.delivered) {
        (false, _, _) => "",
        (true, _, true) => "✓✓",
        (true, true, false) => "✓",
        (true, false, false) => "…",
    };
    row![
        text(clock(line.time_ms)).size(12).color(style::MUTED),
        text(format!("{}:", line.from)).color(color),
        text(&line.text).width(Fill),
        text(ticks).size(12).color(style::OK),
    ]
    .spacing(8)
    .into()
}

fn files(app: &App) -> Element<'_, Message> {
    let list = Column::with_children(app.model.transfers.iter().rev().map(transfer)).spacing(8);
    let offers = app.model.offers();
    let receive = button(text(format!("Receive ({offers})"))).on_press_maybe((offers > 0).then_some(Message::Receive));
    column![
        text("Files").size(18),
        scrollable(list).height(Fill).width(Fill),
        row![receive, button("Open downloads").on_press(Message::OpenDownloads)].spacing(8),
    ]
    .spacing(8)
    .into()
}

/// The devices panel, in the files panel's place: this person's devices (each but this
/// one can be revoked), and an invite for another.
fn devices<'a>(app: &'a App, panel: &'a Devices) -> Element<'a, Message> {
    let list: Element<'a, Message> = match &panel.list {
        None => text("asking the relay…").color(style::MUTED).into(),
        Some(list) => Column::with_children(list.iter().map(device)).spacing(8).into(),
    };
    let mut body = column![
        row![
            text(format!("Devices of {}", app.model.me)).size(18).width(Fill),
            button("Close").on_press(Message::ToggleDevices)
        ]
        .align_y(Alignment::Center),
        scrollable(list).height(Fill).width(Fill),
        button("Link a new device").on_press(Message::LinkDevice),
    ]
    .spacing(8);
    if let Some(line) = &panel.invite {
        body = body.push(text("A one-time invite for your other device (valid for a day). Paste it into qchat there, or run `qchat-cli join INVITE --out FILE`:").size(12));
        let shown = text(line).size(13).wrapping(iced::widget::text::Wrapping::Glyph).width(Fill);
        body = body.push(row![shown, button("Copy").on_press(Message::CopyInvite(line.clone()))].spacing(6));
    }
    body.into()
}

fn device(d: &DeviceInfo) -> Element<'_, Message> {
    let enrolled =
        if d.enrolled_ms == 0 { "identity file".to_string() } else { format!("joined {}", date(d.enrolled_ms)) };
    let seen = d.last_seen_ms.map(|ms| format!("last seen {}", date(ms))).unwrap_or_else(|| "never connected".into());
    let action: Element<'_, Message> = if d.current {
        text("this device").size(12).color(style::OK).into()
    } else {
        button(text("Revoke").size(12)).on_press(Message::RevokeDevice(d.id.clone())).into()
    };
    let body = row![
        column![text(&d.name), text(format!("{} · {enrolled} · {seen}", d.id)).size(12).color(style::MUTED)]
            .width(Fill),
        action,
    ]
    .align_y(Alignment::Center);
    container(body).padding(8).width(Fill).style(style::card).into()
}

fn stage_text(t: &Transfer) -> (String, iced::Color) {
    match &t.stage {
        Stage::Queued => ("waiting to start".into(), style::MUTED),
        Stage::Uploading => ("uploading".into(), style::MINE),
        Stage::OnRelay => ("on the relay, waiting for the peer".into(), style::OK),
        Stage::PeerHasIt => ("received by the peer".into(), style::OK),
        Stage::Offered => match t.arriving {
            Some(held) => (
                format!("arriving ({} on the relay): press Receive to get it as it comes", human_bytes(held)),
                style::THEIRS,
            ),
            None => ("offered to you: press Receive".into(), style::THEIRS),
        },
        Stage::Downloading if t.arriving.is_some() => ("downloading as it arrives".into(), style::MINE),
        Stage::Downloading => ("downloading".into(), style::MINE),
        Stage::Saved(path) => (format!("saved, verified: {}", path.display()), style::OK),
        Stage::Failed(reason) => (format!("failed: {reason}"), style::ERROR),
        Stage::Expired => ("removed from the relay (expired)".into(), style::MUTED),
    }
}

fn transfer(t: &Transfer) -> Element<'_, Message> {
    let arrow = match t.direction {
        Direction::Up => "↑",
        Direction::Down => "↓",
    };
    let (stage, color) = stage_text(t);
    let mut details = format!("{} of {}", human_bytes(t.done), human_bytes(t.size));
    if t.stage.is_running() && t.speed.bytes_per_s > 0.0 {
        details.push_str(&format!(" · {}", speed(t.speed.bytes_per_s)));
        if let Some(left) = t.time_left() {
            details.push_str(&format!(" · {} left", duration(left)));
        }
    }
    let cancel = match (t.stage.is_running(), t.transfer) {
        (true, Some(id)) => Some(button(text("Cancel").size(12)).on_press(Message::Cancel(id))),
        _ => None,
    };
    let head = row![text(arrow), text(&t.name).width(Fill), text(human_bytes(t.size)).size(12)].spacing(6);
    let body = column![
        head,
        progress_bar(0.0..=t.size.max(1) as f32, t.done as f32).girth(8),
        row![text(details).size(12).width(Fill)].push(cancel),
        text(stage).size(12).color(color),
    ]
    .spacing(4);
    container(body).padding(8).width(Fill).style(style::card).into()
}

fn status(app: &App) -> Element<'_, Message> {
    let model = &app.model;
    let (link, color) = match &model.link {
        Link::Connecting => ("connecting…".to_string(), style::MUTED),
        Link::Connected => (format!("connected as {}", model.me), style::OK),
        Link::Reconnecting { reason } => (format!("reconnecting: {reason}"), style::ERROR),
        Link::Refused { reason } => (format!("refused: {reason}"), style::ERROR),
        Link::Closed => ("closed".to_string(), style::MUTED),
    };
    let peer = match (&model.peer, model.peer_online) {
        (Some(peer), true) => format!("{peer} is online"),
        (Some(peer), false) => format!("{peer} is offline"),
        (None, _) => String::new(),
    };
    let mut line = row![
        text(link).color(color).width(Fill),
        text(peer),
        button(text("Devices").size(12)).on_press(Message::ToggleDevices)
    ]
    .spacing(12)
    .align_y(Alignment::Center);
    if let Some(notice) = &model.notice {
        line = line.push(text(notice).color(style::ERROR)).push(button(text("×")).on_press(Message::DismissNotice));
    }
    container(line).padding(6).width(Fill).style(style::panel(style::STATUS_BG)).into()
}
