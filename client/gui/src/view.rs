//! The window: the room list at the left edge, the shown room's files (light yellow) and
//! chat (light blue), side by side with borders that can be dragged, a status line at the
//! foot.

use iced::keyboard::key::Named;
use iced::keyboard::Key;
use iced::widget::text_editor::{Binding, KeyPress};
use iced::widget::{
    button, column, container, pane_grid, progress_bar, row, scrollable, text, text_editor, text_input, Column,
    PaneGrid,
};
use iced::{Alignment, Element, Fill, Length};
use qchat_client::history::ChatLine;

use crate::app::{App, Message, Panel, DIVIDER, INPUT, LOG, SEARCH, SELECTING};
use crate::format::{date, duration, human_bytes, speed};
use crate::model::{Devices, Direction, Link, Stage, Transfer};
use crate::style::{self, Surface, Tone};
use crate::text::Strings;
use qchat_client::rooms::title;
use qchat_client::TransferId;
use qchat_shared::frame::{DeviceInfo, RoomInfo};

/// The whole window.
pub fn window(app: &App) -> Element<'_, Message> {
    let panels = PaneGrid::new(&app.panes, |_, panel, _| {
        let (content, surface) = match panel {
            Panel::Rooms => (rooms(app), Surface::Rooms),
            Panel::Side => match &app.model.devices {
                Some(panel) => (devices(app, panel), Surface::Files),
                None => (files(app), Surface::Files),
            },
            Panel::Chat => (chat(app), Surface::Chat),
        };
        pane_grid::Content::new(container(content).width(Fill).height(Fill).padding(10).style(style::panel(surface)))
    })
    .on_resize(8, Message::PaneResized)
    .min_size(140);
    column![panels, status(app)].into()
}

/// The room list (each with its unread count and whether anyone else in it is online),
/// and the form for a new room.
fn rooms(app: &App) -> Element<'_, Message> {
    let model = &app.model;
    let s = model.lang.strings();
    let mut list = Column::new().spacing(4);
    let others_online = |r: &RoomInfo| r.members.iter().any(|m| m.online && m.user != model.me);
    let listed = model.rooms.iter().map(|r| (&r.name, others_online(r)));
    // The direct room shown before it exists (it does once one of the two writes).
    let direct_to_be = model.selected.as_ref().filter(|_| model.shown_room().is_none()).map(|s| (s, false));
    for (name, online) in listed.chain(direct_to_be) {
        let unread = model.unread.get(name).copied().unwrap_or(0);
        let label = row![
            text(if online { "●" } else { "○" }).size(12).style(style::tone(if online {
                Tone::Ok
            } else {
                Tone::Muted
            })),
            text(title(&model.me, name)).width(Fill),
        ]
        .push((unread > 0).then(|| text(unread.to_string()).size(12).style(style::tone(Tone::Theirs))))
        .spacing(6)
        .align_y(Alignment::Center);
        let chosen = model.selected.as_ref() == Some(name);
        let style = if chosen { button::primary } else { button::text };
        list = list.push(button(label).width(Fill).style(style).on_press(Message::SelectRoom(name.clone())));
    }
    let forms = &app.forms;
    let create = (!forms.name.trim().is_empty()).then_some(Message::CreateRoom);
    column![
        text(s.rooms).size(18),
        scrollable(list).height(Fill).width(Fill),
        text(s.new_room).size(14),
        text_input(s.room_name, &forms.name).on_input(Message::NewRoomName).on_submit(Message::CreateRoom),
        text_input(s.room_members, &forms.members).on_input(Message::NewRoomMembers).on_submit(Message::CreateRoom),
        button(s.create).on_press_maybe(create),
    ]
    .spacing(6)
    .into()
}

/// The shown room's name and members, and what its creator may change.
fn room_head<'a>(app: &'a App, room: Option<&'a RoomInfo>) -> Element<'a, Message> {
    let me = &app.model.me;
    let s = app.model.lang.strings();
    let name = app.model.selected.as_deref().map(|r| title(me, r)).unwrap_or_else(|| s.chat.into());
    let Some(room) = room else {
        let hint = if app.model.selected.is_some() { s.starts_when_written } else { "" };
        return row![text(name).size(18), text(hint).size(12).style(style::tone(Tone::Muted))].spacing(8).into();
    };
    let online = |m: &&qchat_shared::frame::Member| m.online && m.user != *me;
    let members = room.members.iter().map(|m| format!("{}{}", m.user, if online(&m) { " ●" } else { "" }));
    let peer = qchat_shared::names::direct_pair(&room.name)
        .filter(|_| room.direct)
        .map(|(a, b)| if a == me.as_str() { b } else { a }.to_string());
    let verify = peer.clone().map(|p| button(text(s.safety_number).size(12)).on_press(Message::Verify(p)));
    let mut head = column![
        row![text(name).size(18).width(Fill)]
            .push(verify)
            .push((!room.direct).then(|| button(text(s.leave).size(12)).on_press(Message::LeaveRoom)))
            .spacing(6)
            .align_y(Alignment::Center),
        text(members.collect::<Vec<_>>().join(", ")).size(12).style(style::tone(Tone::Muted)),
    ]
    .spacing(4);
    if let Some((user, number)) = app.model.safety.as_ref().filter(|(user, _)| Some(user) == peer.as_ref()) {
        head = head.push(text((s.safety_number_with)(user, number)).size(12));
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
                text_input(s.add_member, &app.forms.add).on_input(Message::AddMemberName).on_submit(Message::AddMember),
                button(text(s.add).size(12)).on_press_maybe(add),
            ]
            .spacing(6)
            .align_y(Alignment::Center),
        );
        let label = text(s.remove).size(12).style(style::tone(Tone::Muted));
        head = head.push(row![label].extend(removals).spacing(2).align_y(Alignment::Center));
    }
    head.into()
}

fn chat(app: &App) -> Element<'_, Message> {
    let room = app.model.shown_room();
    let s = app.model.lang.strings();
    let mut log = Column::new().spacing(6).padding(4);
    let (earlier, lines, later) = app.model.page();
    let matching = earlier + lines.len();
    if earlier > 0 {
        let label = (s.show_earlier)(earlier);
        log = log.push(container(button(text(label).size(12)).on_press(Message::ShowEarlier)).center_x(Fill));
    }
    let mut divided = app.model.new_after.is_none();
    let mut last_day = None;
    for line in lines {
        let day = app.stamps.day(line.time_ms, app.model.lang);
        if last_day.as_ref() != Some(&day) {
            log = log.push(container(text(day.clone()).size(12).style(style::tone(Tone::Muted))).center_x(Fill));
            last_day = Some(day);
        }
        // The first line from someone else since the room was last looked at.
        if !divided && !line.mine && line.seq > app.model.new_after {
            log = log.push(new_divider(s));
            divided = true;
        }
        let selecting = app.selecting.as_ref().filter(|(id, _)| *id == line.id).map(|(_, content)| content);
        log = log.push(chat_line(line, room, selecting, app.stamps.clock(line.time_ms), s));
    }
    if later > 0 {
        let label = (s.show_later)(later);
        log = log.push(container(button(text(label).size(12)).on_press(Message::ShowLater)).center_x(Fill));
    }
    let log = scrollable(log).id(LOG).height(Fill).width(Fill).on_scroll(|v| Message::LogScrolled {
        at_end: at_end(&v),
        offset: v.absolute_offset().y,
        content: v.content_bounds().height,
    });
    let below = app.model.below;
    let jump = (below > 0).then(|| {
        let label = (s.new_messages)(below);
        container(button(text(label).size(13)).on_press(Message::JumpToEnd)).center_x(Fill)
    });
    let input = text_editor(&app.input)
        .id(INPUT)
        .placeholder(s.write_here)
        .on_action(Message::Edit)
        .key_binding(enter_sends)
        .height(Length::Fixed(70.0));
    let file_row = row![
        text_input(s.file_path, &app.path).on_input(Message::PathChanged).on_submit(Message::SendFile),
        button(s.select_files).on_press(Message::SelectFile),
        button(s.send_file).on_press_maybe((!app.path.trim().is_empty()).then_some(Message::SendFile)),
    ]
    .spacing(6)
    .align_y(Alignment::Center);
    column![room_head(app, room)]
        .push(search(app, matching))
        .push(log)
        .push(jump)
        .push(input)
        .push(file_row)
        .spacing(8)
        .into()
}

/// Ctrl+F's search field, with how many lines have the words (`matching`: the log
/// counted them as it filtered, once a frame).
fn search(app: &App, matching: usize) -> Option<Element<'_, Message>> {
    let words = app.model.search.as_ref()?;
    let s = app.model.lang.strings();
    let found = if words.trim().is_empty() { String::new() } else { (s.found)(matching) };
    let field = text_input(s.search_here, words).id(SEARCH).on_input(Message::SearchChanged);
    let close = button(text("×")).style(button::text).on_press(Message::ToggleSearch);
    Some(
        row![field, text(found).size(12).style(style::tone(Tone::Muted)), close]
            .spacing(8)
            .align_y(Alignment::Center)
            .into(),
    )
}

/// Whether the log shows its end (all of it fits, or it is scrolled to the bottom).
fn at_end(viewport: &scrollable::Viewport) -> bool {
    let slack = viewport.content_bounds().height - viewport.bounds().height;
    slack <= 1.0 || viewport.absolute_offset().y >= slack - 4.0
}

/// The line before what came since the room was last looked at.
fn new_divider<'a>(s: &'static Strings) -> Element<'a, Message> {
    let rule = || iced::widget::rule::horizontal(1);
    let line = row![rule(), text(s.new_divider).size(12).style(style::tone(Tone::Theirs)), rule()]
        .spacing(8)
        .align_y(Alignment::Center);
    container(line).id(DIVIDER).into()
}

/// Enter sends; Shift+Enter (and everything else) does what an editor does.
fn enter_sends(press: KeyPress) -> Option<Binding<Message>> {
    if press.key == Key::Named(Named::Enter) && !press.modifiers.shift() {
        return matches!(press.status, text_editor::Status::Focused { .. }).then_some(Binding::Custom(Message::Send));
    }
    Binding::from_key_press(press)
}

/// One line of the chat: a message (ours with its ticks: ✓ stored, ✓✓ every member has
/// it, and who has it so far in a room of more), or a change of members in grey. A message
/// clicked is open for selecting its text (`selecting`). `clock` is its time.
fn chat_line<'a>(
    line: &'a ChatLine,
    room: Option<&RoomInfo>,
    selecting: Option<&'a text_editor::Content>,
    clock: std::borrow::Cow<'a, str>,
    s: &'static Strings,
) -> Element<'a, Message> {
    if line.notice {
        let told = line.change.as_ref().map(|change| (s.change)(&line.from, change));
        let said = format!("{clock} · {}", told.as_deref().unwrap_or(&line.text));
        return text(said).size(12).style(style::tone(Tone::Muted)).into();
    }
    let color = if line.mine { Tone::Mine } else { Tone::Theirs };
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
    let ticks = text(ticks).size(12).style(style::tone(Tone::Ok));
    let ticks: Element<'a, Message> = if line.mine && !line.received_by.is_empty() {
        let who = (s.received_by)(&line.received_by.join(", "));
        iced::widget::tooltip(
            ticks,
            container(text(who).size(12)).padding(4).style(style::card),
            iced::widget::tooltip::Position::Left,
        )
        .into()
    } else {
        ticks.into()
    };
    let row = row![
        text(clock).size(12).style(style::tone(Tone::Muted)),
        text(format!("{}:", line.from)).style(style::tone(color)),
        match selecting {
            Some(content) => selectable(content),
            None => iced::widget::mouse_area(message_text(&line.text)).on_press(Message::SelectIn(line.id)).into(),
        },
        ticks,
    ]
    .spacing(8);
    // A right click copies the message's text.
    iced::widget::mouse_area(row).on_right_press(Message::CopyText(line.text.clone())).into()
}

/// A message's text open for selecting: read-only, the selection kept as it is dragged,
/// Ctrl+C copying it.
fn selectable(content: &text_editor::Content) -> Element<'_, Message> {
    text_editor(content).id(SELECTING).on_action(Message::Selecting).padding(0).style(style::selecting).into()
}

/// A message's text, its web links underlined and clickable.
fn message_text(said: &str) -> Element<'_, Message> {
    let parts = crate::format::links(said);
    if parts.iter().all(|(_, link)| !link) {
        return text(said).width(Fill).into();
    }
    let spans: Vec<iced::widget::text::Span<'_, String>> = parts
        .into_iter()
        .map(|(part, link)| match link {
            true => iced::widget::span(part).link(part.to_string()).underline(true),
            false => iced::widget::span(part),
        })
        .collect();
    iced::widget::rich_text(spans).on_link_click(Message::OpenLink).width(Fill).into()
}

fn files(app: &App) -> Element<'_, Message> {
    let s = app.model.lang.strings();
    let shown: Vec<&Transfer> = app.model.shown_transfers().collect();
    let selected = app.model.selected_transfer;
    let list = Column::with_children(shown.into_iter().rev().map(|t| transfer(t, selected, s))).spacing(8);
    let offers = app.model.offers();
    let receive = button(text((s.receive_all)(offers))).on_press_maybe((offers > 0).then_some(Message::Receive));
    column![
        text(s.files).size(18),
        scrollable(list).height(Fill).width(Fill),
        row![receive, button(s.open_downloads).on_press(Message::OpenDownloads)].spacing(8),
    ]
    .spacing(8)
    .into()
}

/// The devices panel, in the files panel's place: this person's devices (each but this
/// one can be revoked), and an invite for another.
fn devices<'a>(app: &'a App, panel: &'a Devices) -> Element<'a, Message> {
    let s = app.model.lang.strings();
    let list: Element<'a, Message> = match &panel.list {
        None => text(s.asking_relay).style(style::tone(Tone::Muted)).into(),
        Some(list) => Column::with_children(list.iter().map(|d| device(d, s))).spacing(8).into(),
    };
    let mut body = column![
        row![
            text((s.devices_of)(&app.model.me)).size(18).width(Fill),
            button(s.close).on_press(Message::ToggleDevices)
        ]
        .align_y(Alignment::Center),
        scrollable(list).height(Fill).width(Fill),
        button(s.link_device).on_press(Message::LinkDevice),
    ]
    .spacing(8);
    if let Some(line) = &panel.invite {
        body = body.push(text(s.invite_for_device).size(12));
        let shown = text(line).size(13).wrapping(iced::widget::text::Wrapping::Glyph).width(Fill);
        body = body.push(row![shown, button(s.copy).on_press(Message::CopyInvite(line.clone()))].spacing(6));
    }
    body.into()
}

fn device<'a>(d: &'a DeviceInfo, s: &'static Strings) -> Element<'a, Message> {
    let enrolled = if d.enrolled_ms == 0 { s.identity_file.to_string() } else { (s.joined)(&date(d.enrolled_ms)) };
    let seen = d.last_seen_ms.map(|ms| (s.last_seen)(&date(ms))).unwrap_or_else(|| s.never_connected.into());
    let action: Element<'_, Message> = if d.current {
        text(s.this_device).size(12).style(style::tone(Tone::Ok)).into()
    } else {
        button(text(s.revoke).size(12)).on_press(Message::RevokeDevice(d.id.clone())).into()
    };
    let body = row![
        column![
            text(&d.name),
            text(format!("{} · {enrolled} · {seen}", d.id)).size(12).style(style::tone(Tone::Muted))
        ]
        .width(Fill),
        action,
    ]
    .align_y(Alignment::Center);
    container(body).padding(8).width(Fill).style(style::card).into()
}

fn stage_text(t: &Transfer, s: &'static Strings) -> (String, Tone) {
    match &t.stage {
        Stage::Queued => (s.waiting_to_start.into(), Tone::Muted),
        Stage::Uploading => (s.uploading.into(), Tone::Mine),
        Stage::OnRelay => (s.on_relay.into(), Tone::Ok),
        Stage::PeerHasIt => (s.received.into(), Tone::Ok),
        Stage::Offered => match t.arriving {
            Some(held) => ((s.arriving)(&human_bytes(held)), Tone::Theirs),
            None => (s.offered.into(), Tone::Theirs),
        },
        Stage::Downloading if t.arriving.is_some() => (s.downloading_as_it_arrives.into(), Tone::Mine),
        Stage::Downloading => (s.downloading.into(), Tone::Mine),
        Stage::Saved(path) => ((s.saved)(&path.display().to_string()), Tone::Ok),
        Stage::Failed(reason) => ((s.failed)(reason), Tone::Error),
        Stage::Expired => (s.expired.into(), Tone::Muted),
    }
}

fn transfer<'a>(t: &'a Transfer, selected: Option<TransferId>, s: &'static Strings) -> Element<'a, Message> {
    let arrow = match t.direction {
        Direction::Up => "↑",
        Direction::Down => "↓",
    };
    let (stage, color) = stage_text(t, s);
    let mut details = (s.done_of)(&human_bytes(t.done), &human_bytes(t.size));
    if t.stage.is_running() && t.speed.bytes_per_s > 0.0 {
        details.push_str(&format!(" · {}", speed(t.speed.bytes_per_s)));
        if let Some(left) = t.time_left() {
            details.push_str(&format!(" · {}", (s.left)(&duration(left))));
        }
    }
    let small = |label| button(text(label).size(12));
    let actions: Vec<Element<'_, Message>> = match (&t.stage, t.transfer, t.file_id) {
        (stage, Some(id), _) if stage.is_running() => vec![small(s.cancel).on_press(Message::Cancel(id)).into()],
        (Stage::Offered, _, Some(file_id)) => vec![small(s.receive).on_press(Message::ReceiveFile(file_id)).into()],
        (Stage::Saved(path), _, _) => vec![
            small(s.open).on_press(Message::OpenFile(path.clone())).into(),
            small(s.show_in_folder).on_press(Message::ShowInFolder(path.clone())).into(),
        ],
        _ => Vec::new(),
    };
    let head = row![text(arrow), text(&t.name).width(Fill), text(human_bytes(t.size)).size(12)].spacing(6);
    let body = column![
        head,
        progress_bar(0.0..=t.size.max(1) as f32, t.done as f32).girth(8),
        row![text(details).size(12).width(Fill)].extend(actions).spacing(4),
        text(stage).size(12).style(style::tone(color)),
    ]
    .spacing(4);
    let chosen = t.transfer.is_some() && t.transfer == selected;
    let card = container(body).padding(8).width(Fill).style(if chosen { style::chosen_card } else { style::card });
    match t.transfer {
        // A click chooses it (Esc then cancels it while it runs).
        Some(id) => iced::widget::mouse_area(card).on_press(Message::SelectTransfer(id)).into(),
        None => card.into(),
    }
}

fn status(app: &App) -> Element<'_, Message> {
    let model = &app.model;
    let s = model.lang.strings();
    let (link, color) = match &model.link {
        Link::Connecting => (s.connecting.to_string(), Tone::Muted),
        Link::Connected => ((s.connected_as)(&model.me), Tone::Ok),
        Link::Reconnecting { reason } => ((s.reconnecting)(reason), Tone::Error),
        Link::Refused { reason } => ((s.refused)(reason), Tone::Error),
        Link::Closed => (s.closed.to_string(), Tone::Muted),
    };
    let peer = match (&model.peer, model.peer_online) {
        (Some(peer), true) => (s.online)(peer),
        (Some(peer), false) => (s.offline)(peer),
        (None, _) => String::new(),
    };
    let mut line = row![
        text(link).style(style::tone(color)).width(Fill),
        text(peer),
        button(text(model.lang.other().strings().name).size(12)).on_press(Message::SwitchLanguage),
        button(text(s.devices).size(12)).on_press(Message::ToggleDevices)
    ]
    .spacing(12)
    .align_y(Alignment::Center);
    if let Some(notice) = &model.notice {
        line = line
            .push(text(notice).style(style::tone(Tone::Error)))
            .push(button(text("×")).on_press(Message::DismissNotice));
    }
    container(line).padding(6).width(Fill).style(style::panel(Surface::Status)).into()
}
