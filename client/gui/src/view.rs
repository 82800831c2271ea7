//! The window: the room list at the left edge, the shown room's files (light yellow) and
//! chat (light blue), a status line at the foot.

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
use qchat_client::rooms::title;
use qchat_shared::frame::{DeviceInfo, RoomInfo};

/// The whole window.
pub fn window(app: &App) -> Element<'_, Message> {
    let left = match &app.model.devices {
        Some(panel) => devices(app, panel),
        None => files(app),
    };
    let panels = row![
        container(rooms(app)).width(Length::Fixed(190.0)).height(Fill).padding(10).style(style::panel(style::ROOMS_BG)),
        container(left).width(Length::FillPortion(2)).height(Fill).padding(10).style(style::panel(style::FILES_BG)),
        container(chat(app)).width(Length::FillPortion(3)).height(Fill).padding(10).style(style::panel(style::CHAT_BG)),
    ];
    column![panels, status(app)].into()
}

/// The room list (each with its unread count and whether anyone else in it is online),
/// and the form for a new room.
fn rooms(app: &App) -> Element<'_, Message> {
    let model = &app.model;
    let mut list = Column::new().spacing(4);
    let others_online = |r: &RoomInfo| r.members.iter().any(|m| m.online && m.user != model.me);
    let listed = model.rooms.iter().map(|r| (&r.name, others_online(r)));
    // The direct room shown before it exists (it does once one of the two writes).
    let direct_to_be = model.selected.as_ref().filter(|_| model.shown_room().is_none()).map(|s| (s, false));
    for (name, online) in listed.chain(direct_to_be) {
        let unread = model.unread.get(name).copied().unwrap_or(0);
        let label = row![
            text(if online { "●" } else { "○" }).size(12).color(if online { style::OK } else { style::MUTED }),
            text(title(&model.me, name)).width(Fill),
        ]
        .push((unread > 0).then(|| text(unread.to_string()).size(12).color(style::THEIRS)))
        .spacing(6)
        .align_y(Alignment::Center);
        let chosen = model.selected.as_ref() == Some(name);
        let style = if chosen { button::primary } else { button::text };
        list = list.push(button(label).width(Fill).style(style).on_press(Message::SelectRoom(name.clone())));
    }
    let forms = &app.forms;
    let create = (!forms.name.trim().is_empty()).then_some(Message::CreateRoom);
    column![
        text("Rooms").size(18),
        scrollable(list).height(Fill).width(Fill),
        text("New room").size(14),
        text_input("name", &forms.name).on_input(Message::NewRoomName).on_submit(Message::CreateRoom),
        text_input("members: bob, carol", &forms.members)
            .on_input(Message::NewRoomMembers)
            .on_submit(Message::CreateRoom),
        button("Create").on_press_maybe(create),
    ]
    .spacing(6)
    .into()
}

/// The shown room's name and members, and what its creator may change.
fn room_head<'a>(app: &'a App, room: Option<&'a RoomInfo>) -> Element<'a, Message> {
    let me = &app.model.me;
    let name = app.model.selected.as_deref().map(|s| title(me, s)).unwrap_or_else(|| "Chat".into());
    let Some(room) = room else {
        let hint = if app.model.selected.is_some() { "(starts when one of you writes)" } else { "" };
        return row![text(name).size(18), text(hint).size(12).color(style::MUTED)].spacing(8).into();
    };
    let online = |m: &&qchat_shared::frame::Member| m.online && m.user != *me;
    let members = room.members.iter().map(|m| format!("{}{}", m.user, if online(&m) { " ●" } else { "" }));
    let peer = qchat_shared::names::direct_pair(&room.name)
        .filter(|_| room.direct)
        .map(|(a, b)| if a == me.as_str() { b } else { a }.to_string());
    let verify = peer.clone().map(|p| button(text("Safety number").size(12)).on_press(Message::Verify(p)));
    let mut head = column![
        row![text(name).size(18).width(Fill)]
            .push(verify)
            .push((!room.direct).then(|| button(text("Leave").size(12)).on_press(Message::LeaveRoom)))
            .spacing(6)
            .align_y(Alignment::Center),
        text(members.collect::<Vec<_>>().join(", ")).size(12).color(style::MUTED),
    ]
    .spacing(4);
    if let Some((user, number)) = app.model.safety.as_ref().filter(|(user, _)| Some(user) == peer.as_ref()) {
        head = head.push(
            text(format!(
                "Safety number with {user} (the same on their screen if no one stands between you): {number}"
            ))
            .size(12),
        );
    }
    if room.creator.as_deref() == Some(me.as_str()) && !room.direct {
        let add = (!app.forms.add.trim().is_empty()).then_some(Message::AddMember);
        let others = room.members.iter().filter(|m| &m.user != me);
        let removals = others.map(|m| {
            button(text(format!("× {}", m.user)).size(12))
                .style(button::text)
                .on_press(Message::RemoveMember(m.user.clone()))
                .into()
        });
        head = head.push(
            row![
                text_input("add a member", &app.forms.add)
                    .on_input(Message::AddMemberName)
                    .on_submit(Message::AddMember),
                button(text("Add").size(12)).on_press_maybe(add),
            ]
            .spacing(6)
            .align_y(Alignment::Center),
        );
        let label = text("remove:").size(12).color(style::MUTED);
        head = head.push(row![label].extend(removals).spacing(2).align_y(Alignment::Center));
    }
    head.into()
}

fn chat(app: &App) -> Element<'_, Message> {
    let room = app.model.shown_room();
    let log = Column::with_children(app.model.shown_lines().map(|line| chat_line(line, room))).spacing(6).padding(4);
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
    column![room_head(app, room), scrollable(log).id(LOG).anchor_bottom().height(Fill).width(Fill), input, file_row,]
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

/// One line of the chat: a message (ours with its ticks: ✓ stored, ✓✓ every member has
/// it, and who has it so far in a room of more), or a change of members in grey.
fn chat_line<'a>(line: &'a ChatLine, room: Option<&RoomInfo>) -> Element<'a, Message> {
    if line.notice {
        let said = format!("{} · {}", clock(line.time_ms), line.text);
        return text(said).size(12).color(style::MUTED).into();
    }
    let color = if line.mine { style::MINE } else { style::THEIRS };
    // A receipt may overtake the relay's `Stored` (they travel on different streams):
    // delivered implies stored.
    let ticks = match (line.mine, line.seq.is_some(), line.delivered) {
        (false, _, _) => String::new(),
        (true, _, true) => "✓✓".into(),
        (true, true, false) if room.is_some_and(|r| r.members.len() > 2) && !line.received_by.is_empty() => {
            format!("✓ {}/{}", line.received_by.len(), room.map_or(0, |r| r.members.len() - 1))
        }
        (true, true, false) => "✓".into(),
        (true, false, false) => "…".into(),
    };
    let ticks = text(ticks).size(12).color(style::OK);
    let ticks: Element<'a, Message> = if line.mine && !line.received_by.is_empty() {
        let who = format!("received by {}", line.received_by.join(", "));
        iced::widget::tooltip(
            ticks,
            container(text(who).size(12)).padding(4).style(style::card),
            iced::widget::tooltip::Position::Left,
        )
        .into()
    } else {
        ticks.into()
    };
    row![
        text(clock(line.time_ms)).size(12).color(style::MUTED),
        text(format!("{}:", line.from)).color(color),
        text(&line.text).width(Fill),
        ticks,
    ]
    .spacing(8)
    .into()
}

fn files(app: &App) -> Element<'_, Message> {
    let shown: Vec<&Transfer> = app.model.shown_transfers().collect();
    let list = Column::with_children(shown.into_iter().rev().map(transfer)).spacing(8);
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
        Stage::OnRelay => ("on the relay, waiting to be fetched".into(), style::OK),
        Stage::PeerHasIt => ("received".into(), style::OK),
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
