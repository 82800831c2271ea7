//! The real view and update, driven headless with iced_test, against a real relay on
//! 127.0.0.1 and the real client core.

use std::time::Duration;

use iced::keyboard::key::Named;
use iced::widget::Id;
use iced_test::simulator;
use qchat_client::{Client, Event};
use qchat_gui::app::{App, Message, INPUT};
use qchat_gui::join::{join_and_save, JoinMessage};
use qchat_gui::model::{Link, Stage};
use qchat_gui::shell::{Shell, ShellMessage};
use qchat_shared::identity::Identity;
use qchat_tests::{write_file, TestClient, TestRelay};
use tokio::sync::mpsc::UnboundedReceiver;

/// The window of `identity`, with its core running (as the subscription would start it).
fn window(relay: &TestRelay, identity: Identity) -> (App, UnboundedReceiver<Event>) {
    let (mut app, _focus) = App::new(relay.client_options(identity));
    let (client, events) = Client::start((*app.options).clone());
    let _ = app.update(Message::Ready(client));
    (app, events)
}

/// Feeds the window the messages a simulator gave, then runs the reads of the history they
/// asked for (the tasks `update` returns are not run here).
async fn apply(app: &mut App, messages: impl IntoIterator<Item = Message>) {
    for message in messages {
        let _ = app.update(message);
    }
    app.settle().await;
}

/// A peer without a window.
async fn peer(relay: &TestRelay, name: &str) -> TestClient {
    let mut peer = relay.client(name);
    peer.connected().await;
    peer
}

/// Feeds core events to the window until `done` holds.
async fn pump(app: &mut App, events: &mut UnboundedReceiver<Event>, what: &str, done: impl Fn(&App) -> bool) {
    let wait = async {
        app.settle().await;
        while !done(app) {
            let event = events.recv().await.expect("the core stopped");
            let _ = app.update(Message::Core(event));
            app.settle().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait).await.unwrap_or_else(|_| panic!("timed out: {what}"));
}

/// A fresh relay and alice's window on it, connected.
async fn alices_window() -> (TestRelay, App, UnboundedReceiver<Event>) {
    let setup = TestRelay::start().await;
    let (mut app, mut events) = window(&setup, setup.identity("alice"));
    pump(&mut app, &mut events, "connected", connected).await;
    (setup, app, events)
}

fn connected(app: &App) -> bool {
    app.model.link == Link::Connected
}

#[tokio::test]
async fn typing_and_enter_sends_and_the_message_gets_its_ticks() {
    let setup = TestRelay::start().await;
    let _bob = peer(&setup, "bob").await;
    let (mut app, mut events) = window(&setup, setup.identity("alice"));
    pump(&mut app, &mut events, "connected", connected).await;
    assert!(app.title().contains("alice") && app.title().contains("bob"), "{}", app.title());

    let mut ui = simulator(app.view());
    ui.click(Id::new(INPUT)).expect("the input");
    ui.typewrite("hello bob");
    ui.tap_key(Named::Enter);
    let messages: Vec<Message> = ui.into_messages().collect();
    assert!(messages.iter().any(|m| matches!(m, Message::Send)), "Enter sends: {messages:?}");
    apply(&mut app, messages).await;
    assert_eq!(app.model.shown_lines().last().map(|l| l.text.as_str()), Some("hello bob"));
    assert!(app.input.text().trim().is_empty(), "the input is cleared");

    pump(&mut app, &mut events, "delivered", |app| app.model.shown_lines().any(|l| l.delivered)).await;
    let mut ui = simulator(app.view());
    assert!(ui.find("hello bob").is_ok());
    assert!(ui.find("✓✓").is_ok(), "two ticks once bob has it");
}

#[tokio::test]
async fn shift_enter_makes_a_new_line_instead_of_sending() {
    let (_setup, mut app, _events) = alices_window().await;
    let mut ui = simulator(app.view());
    ui.click(Id::new(INPUT)).expect("the input");
    ui.typewrite("first");
    let mut shift_enter = iced_test::simulator::press_key(Named::Enter, None);
    if let iced::Event::Keyboard(iced::keyboard::Event::KeyPressed { modifiers, .. }) = &mut shift_enter {
        *modifiers = iced::keyboard::Modifiers::SHIFT;
    }
    ui.simulate([shift_enter, iced_test::simulator::release_key(Named::Enter)]);
    ui.typewrite("second");
    let messages: Vec<Message> = ui.into_messages().collect();
    assert!(!messages.iter().any(|m| matches!(m, Message::Send)), "{messages:?}");
    apply(&mut app, messages).await;
    assert_eq!(app.input.text().trim_end(), "first\nsecond");
}

#[tokio::test]
async fn a_message_from_the_peer_appears() {
    let (setup, mut app, mut events) = alices_window().await;
    let bob = peer(&setup, "bob").await;
    pump(&mut app, &mut events, "bob online", |app| app.model.peer_online).await;
    bob.client.send_and_wait("hi from bob").await.unwrap();
    pump(&mut app, &mut events, "the message", |app| app.model.shown_lines().any(|l| l.text == "hi from bob")).await;
    let mut ui = simulator(app.view());
    assert!(ui.find("hi from bob").is_ok());
    assert!(ui.find("bob:").is_ok());
    assert!(ui.find("bob is online").is_ok());
}

#[tokio::test]
async fn an_offered_file_shows_up_and_receive_fetches_it() {
    let (setup, mut app, mut events) = alices_window().await;
    let mut bob = peer(&setup, "bob").await;
    let source = write_file(&setup.tmp.path().join("photo.jpg"), 300_000);
    let transfer = bob.client.send_file(&source);
    bob.uploaded(transfer).await;

    // Offered first while arriving, then again once committed.
    let committed = |app: &App| app.model.offers() == 1 && app.model.transfers[0].arriving.is_none();
    pump(&mut app, &mut events, "the committed offer", committed).await;
    let mut ui = simulator(app.view());
    assert!(ui.find("offered to you: press Receive").is_ok());
    ui.click("Receive all (1)").expect("the Receive button with its count");
    let messages: Vec<Message> = ui.into_messages().collect();
    apply(&mut app, messages).await;
    pump(&mut app, &mut events, "saved", |app| matches!(app.model.transfers[0].stage, Stage::Saved(_))).await;

    let saved = setup.downloads("alice").join("photo.jpg");
    assert_eq!(std::fs::read(&saved).unwrap(), std::fs::read(&source).unwrap());
    let mut ui = simulator(app.view());
    assert!(ui.find(format!("saved, verified: {}", saved.display())).is_ok());
    assert!(ui.find("Receive all (0)").is_ok());
}

#[tokio::test]
async fn a_file_sent_from_the_window_shows_its_progress_and_lands_on_the_relay() {
    let (setup, mut app, mut events) = alices_window().await;
    let source = write_file(&setup.tmp.path().join("video.mp4"), 8 << 20);
    let _ = app.update(Message::PathChanged(source.display().to_string()));
    let mut ui = simulator(app.view());
    ui.click("Send File").expect("the Send File button");
    let messages: Vec<Message> = ui.into_messages().collect();
    apply(&mut app, messages).await;
    pump(&mut app, &mut events, "on the relay", |app| {
        app.model.transfers.first().is_some_and(|t| t.stage == Stage::OnRelay)
    })
    .await;
    let mut ui = simulator(app.view());
    assert!(ui.find("8.0 MiB of 8.0 MiB").is_ok());
    assert!(ui.find("on the relay, waiting to be fetched").is_ok());
}

#[tokio::test]
async fn a_refused_identity_shows_the_reason_in_the_window() {
    let setup = TestRelay::start().await;
    let other = tempfile::tempdir().unwrap();
    qchat_certs::init(other.path(), &["127.0.0.1".into()]).unwrap();
    let foreign = Identity::load(&qchat_certs::issue_user(other.path(), "alice", "127.0.0.1:1").unwrap()).unwrap();
    let identity = Identity { ca_pem: setup.identity("alice").ca_pem, ..foreign };
    let (mut app, mut events) = window(&setup, identity);
    pump(&mut app, &mut events, "refused", |app| matches!(app.model.link, Link::Refused { .. })).await;
    let Link::Refused { reason } = app.model.link.clone() else { unreachable!() };
    assert!(reason.contains("another CA"), "{reason}");
    let mut ui = simulator(app.view());
    assert!(ui.find(format!("refused: {reason}")).is_ok());
}

#[tokio::test]
async fn a_file_still_arriving_is_marked_so_with_what_the_relay_holds() {
    let (_setup, mut app, _events) = alices_window().await;
    let file_id = qchat_shared::frame::FileId([5; 16]);
    let info = qchat_shared::frame::FileInfo {
        file_id,
        room: "alice+bob".into(),
        plain_name: Some("film.mkv".into()),
        size: 4 << 30,
        from: "bob".into(),
        blake3: None,
        time_ms: 0,
    };
    let offer = qchat_client::offer::Offer::new(info, None);
    let now = std::time::Instant::now();
    app.model.apply(Event::FileOffered(offer), now);
    app.model.apply(Event::FileArriving { file_id, held: 3 << 20 }, now);
    let mut ui = simulator(app.view());
    assert!(ui.find("arriving (3.0 MiB on the relay): press Receive to get it as it comes").is_ok());
    assert!(ui.find("Receive all (1)").is_ok(), "an arriving file can be received already");
}

#[tokio::test]
async fn the_first_start_screen_joins_with_a_pasted_invite_and_opens_the_chat() {
    let setup = TestRelay::start_with_people(Default::default(), &["bob"]).await;
    let _bob = peer(&setup, "bob").await;
    let line = setup.invite("alice", Duration::from_secs(3600)).await;
    let dir = setup.tmp.path().join("identities");
    let settings = qchat_gui::shell::Settings {
        server: Some(setup.addr.to_string()),
        data_dir: Some(setup.clients_dir.clone()),
        download_dir: None,
        remember_in: Some(setup.tmp.path().join("config").join("last-identity")),
        lang: Default::default(),
        size_record: None,
    };
    let (mut shell, _) = Shell::join(dir.clone(), settings);
    assert_eq!(shell.title(), "qchat — join");

    let mut ui = simulator(shell.view());
    assert!(ui
        .find("Paste your invite: the line you got from the relay's owner, or from qchat on your other device.")
        .is_ok());
    ui.click("qchat-invite:…").expect("the invite field");
    ui.typewrite(&line);
    let typed: Vec<ShellMessage> = ui.into_messages().collect();
    for message in typed {
        let _ = shell.update(message);
    }
    let Shell::Join(screen, _) = &shell else { panic!("still joining") };
    assert_eq!(screen.invite, line);

    // What the Join button starts (iced runs it as a task): the key is made here.
    let path = join_and_save(line.clone(), "desk".into(), dir.clone()).await.unwrap();
    assert!(path.starts_with(&dir) && path.exists());
    let _ = shell.update(ShellMessage::Join(JoinMessage::Joined(Ok(path.clone()))));
    let Shell::Chat(app) = &mut shell else { panic!("the chat opens once joined") };
    assert_eq!(app.model.me, "alice");
    let record = setup.tmp.path().join("config").join("last-identity");
    assert_eq!(qchat_gui::last::recall(&record), Some(path.clone()), "the next start with no arguments opens it");
    assert_eq!(app.options.identity_path.as_deref(), Some(path.as_path()));
    let (client, mut events) = Client::start((*app.options).clone());
    let _ = app.update(Message::Ready(client));
    pump(app, &mut events, "connected", connected).await;

    // The next start without --identity offers it; a used invite says so.
    let (mut again, _) = Shell::join(dir.clone(), Default::default());
    assert!(simulator(again.view()).find("Or open an identity this PC has:").is_ok());
    let Shell::Join(screen, _) = &mut again else { unreachable!() };
    assert_eq!(screen.saved, std::slice::from_ref(&path));
    let err = join_and_save(line, "other".into(), dir).await.unwrap_err();
    assert!(err.contains("already used"), "{err}");
    let _ = screen.update(JoinMessage::Joined(Err(err.clone())));
    let mut ui = simulator(again.view());
    assert!(ui.find(err.as_str()).is_ok(), "the window says why");

    // An identity file pasted as Explorer copies a path, in quotes, opens too.
    let (mut pasted, _) = Shell::join(setup.tmp.path().join("none yet"), Default::default());
    let mut ui = simulator(pasted.view());
    ui.click("or the path of an identity file (NAME.qchat)").expect("the path field");
    ui.typewrite(&format!("\"{}\"", path.display()));
    let typed: Vec<ShellMessage> = ui.into_messages().collect();
    for message in typed {
        let _ = pasted.update(message);
    }
    let mut ui = simulator(pasted.view());
    ui.click("Open file").expect("the Open file button");
    let clicked: Vec<ShellMessage> = ui.into_messages().collect();
    for message in clicked {
        let _ = pasted.update(message);
    }
    let Shell::Chat(app) = &pasted else { panic!("the pasted path opens the chat") };
    assert_eq!(app.options.identity_path.as_deref(), Some(path.as_path()));
}

#[tokio::test]
async fn the_devices_panel_lists_links_and_revokes() {
    let (setup, mut app, mut events) = alices_window().await;
    let mut ui = simulator(app.view());
    ui.click("Devices").expect("the Devices button");
    let clicked: Vec<Message> = ui.into_messages().collect();
    apply(&mut app, clicked).await;
    pump(&mut app, &mut events, "the device list", |app| app.model.devices.as_ref().is_some_and(|d| d.list.is_some()))
        .await;
    let mut ui = simulator(app.view());
    assert!(ui.find("this device").is_ok());
    ui.click("Link a new device").expect("the link button");
    let clicked: Vec<Message> = ui.into_messages().collect();
    apply(&mut app, clicked).await;
    pump(&mut app, &mut events, "an invite", |app| app.model.devices.as_ref().is_some_and(|d| d.invite.is_some()))
        .await;
    let line = app.model.devices.as_ref().unwrap().invite.clone().unwrap();
    let phone = setup.join(&line, "phone").await;
    pump(&mut app, &mut events, "the new device's notice", |app| {
        app.model.notice.as_deref().is_some_and(|n| n.contains("you have a new device: phone"))
    })
    .await;
    let mut ui = simulator(app.view());
    ui.click("Revoke").expect("a Revoke button for the phone");
    let clicked: Vec<Message> = ui.into_messages().collect();
    assert!(clicked.iter().any(|m| matches!(m, Message::RevokeDevice(id) if Some(id.clone()) == phone.device())));
    apply(&mut app, clicked).await;
    pump(&mut app, &mut events, "revoked", |app| app.model.notice.as_deref().is_some_and(|n| n.contains("revoked")))
        .await;
    let list = app.model.devices.as_ref().and_then(|d| d.list.clone()).unwrap();
    assert!(list.iter().all(|d| d.name != "phone"), "{list:?}");
}

#[tokio::test]
async fn a_room_made_in_the_window_lists_its_members_and_counts_what_is_unread() {
    let setup = TestRelay::start_with_people(Default::default(), &["alice", "bob", "carol"]).await;
    let mut carol = peer(&setup, "carol").await;
    let bob = peer(&setup, "bob").await;
    let (mut app, mut events) = window(&setup, setup.identity("alice"));
    pump(&mut app, &mut events, "connected", connected).await;
    bob.client.send_and_wait_to(Some("alice+bob".into()), "hi alice").await.unwrap();
    pump(&mut app, &mut events, "bob's direct room", |app| app.model.rooms.len() == 1).await;
    assert_eq!(app.model.selected.as_deref(), Some("alice+bob"), "the only room is shown");

    // Make "team" with bob and carol from the form.
    let mut ui = simulator(app.view());
    ui.click("name").expect("the new room's name");
    ui.typewrite("team");
    ui.click("members: bob, carol").expect("the members field");
    ui.typewrite("bob, carol");
    let typed: Vec<Message> = ui.into_messages().collect();
    apply(&mut app, typed).await;
    let mut ui = simulator(app.view());
    ui.click("Create").expect("the Create button");
    let clicked: Vec<Message> = ui.into_messages().collect();
    apply(&mut app, clicked).await;
    pump(&mut app, &mut events, "the room", |app| app.model.selected.as_deref() == Some("team")).await;
    let everyone_online = |app: &App| {
        app.model.rooms.len() == 2 && app.model.shown_room().is_some_and(|r| r.members.iter().all(|m| m.online))
    };
    pump(&mut app, &mut events, "in the list, with who is online", everyone_online).await;
    {
        let mut ui = simulator(app.view());
        assert!(ui.find("#team").is_ok());
        assert!(ui.find("alice, bob ●, carol ●").is_ok(), "members, and who is online: {:?}", app.model.shown_room());
    }

    // A message in the room not shown counts as unread until it is chosen.
    let mut ui = simulator(app.view());
    ui.click("bob").expect("bob's direct room in the list");
    let clicked: Vec<Message> = ui.into_messages().collect();
    apply(&mut app, clicked).await;
    carol
        .expect("the room", |e| matches!(e, Event::Rooms(r) if r.iter().any(|r| r.name == "team")).then_some(()))
        .await;
    carol.client.send_and_wait_to(Some("team".into()), "hello team").await.unwrap();
    pump(&mut app, &mut events, "unread", |app| app.model.unread.get("team") == Some(&1)).await;
    assert!(app.title().contains("(1)"), "{}", app.title());
    let mut ui = simulator(app.view());
    assert!(ui.find("1").is_ok(), "the unread count");
    assert!(ui.find("hello team").is_err(), "not in the room shown");
    ui.click("#team").expect("the team room");
    let clicked: Vec<Message> = ui.into_messages().collect();
    apply(&mut app, clicked).await;
    assert!(app.model.unread.is_empty());
    let mut ui = simulator(app.view());
    assert!(ui.find("hello team").is_ok());
    assert!(ui.find("carol:").is_ok());
}

/// Alice's window and bob without one, both connected to a fresh relay.
struct AliceAndBob {
    // Kept alive for the relay's sake.
    _setup: TestRelay,
    bob: TestClient,
    app: App,
    events: UnboundedReceiver<Event>,
}

impl AliceAndBob {
    async fn start() -> Self {
        let setup = TestRelay::start().await;
        let bob = peer(&setup, "bob").await;
        let (mut app, mut events) = window(&setup, setup.identity("alice"));
        pump(&mut app, &mut events, "connected", connected).await;
        AliceAndBob { _setup: setup, bob, app, events }
    }

    /// Bob sends `said`; alice's window has it after.
    async fn bob_says(&mut self, said: &str) {
        let before = lines_from(&self.app, "bob");
        self.bob.client.send_and_wait(said).await.unwrap();
        pump(&mut self.app, &mut self.events, said, |app| lines_from(app, "bob") > before).await;
    }
}

/// How many of the shown room's messages (not notices) are from `who`.
fn lines_from(app: &App, who: &str) -> usize {
    app.model.shown_lines().filter(|l| l.from == who && !l.notice).count()
}

#[tokio::test]
async fn reading_back_is_not_disturbed_by_new_messages_and_a_button_takes_you_down() {
    let mut chat = AliceAndBob::start().await;
    chat.bob_says("one").await;
    assert!(chat.app.model.follow && chat.app.model.below == 0, "at the end, new lines keep the view there");

    // Alice scrolls up to read: what comes is counted, and the view stays.
    let _ = chat.app.update(Message::LogScrolled { at_end: false, offset: 0.0, content: 2000.0 });
    chat.bob_says("two").await;
    chat.bob_says("three").await;
    let app = &mut chat.app;
    assert_eq!((app.model.follow, app.model.below), (false, 2));
    let mut ui = simulator(app.view());
    ui.click("2 new messages ↓").expect("the button to the newest lines");
    let clicked: Vec<Message> = ui.into_messages().collect();
    assert!(clicked.iter().any(|m| matches!(m, Message::JumpToEnd)), "{clicked:?}");
    apply(app, clicked).await;
    assert_eq!((app.model.follow, app.model.below), (true, 0));
    assert!(simulator(app.view()).find("2 new messages ↓").is_err(), "gone once down");

    // Away from the window: what comes meanwhile is unread, and marked new on return.
    let _ = app.update(Message::Focused(false));
    chat.bob_says("while you were away").await;
    let app = &mut chat.app;
    assert!(app.title().starts_with("qchat (1)"), "{}", app.title());
    assert!(simulator(app.view()).find("new").is_err(), "no divider before she looks");
    let _ = app.update(Message::Focused(true));
    assert!(app.title().starts_with("qchat —"), "read once she is back: {}", app.title());
    let mut ui = simulator(app.view());
    assert!(ui.find("new").is_ok(), "the divider marks where she left off");
    assert!(ui.find("while you were away").is_ok());
    let first_new = app.model.shown_lines().find(|l| l.seq > app.model.new_after).map(|l| l.text.as_str());
    assert_eq!(first_new, Some("while you were away"), "the divider sits before what came while away");
}

#[tokio::test]
async fn a_restarted_window_opens_the_room_where_it_was_left_with_what_came_since_marked() {
    let mut chat = AliceAndBob::start().await;
    chat.app.model.select("team-to-be".into());
    chat.app.settle().await;
    let direct = qchat_shared::names::direct_room("alice", "bob");
    chat.app.model.select(direct.clone());
    for said in ["one", "two"] {
        chat.bob_says(said).await;
    }
    // Alice reads everything, then closes the window.
    let _ = chat.app.update(Message::Focused(false));
    chat.app.settle().await;
    let seen = chat.app.model.places.get(&direct).and_then(|p| p.seen_upto);
    assert_eq!(seen, chat.app.model.log.last_seq(), "what she saw is written down");
    let AliceAndBob { _setup: setup, bob, app, events } = chat;
    drop((app, events));
    bob.client.send_and_wait("while the window was closed").await.unwrap();

    let (mut app, mut events) = window(&setup, setup.identity("alice"));
    pump(&mut app, &mut events, "the message", |app| {
        app.model.shown_lines().any(|l| l.text == "while the window was closed")
    })
    .await;
    assert_eq!(app.model.selected.as_deref(), Some(direct.as_str()), "the room shown last");
    assert_eq!(app.model.new_after, seen, "the divider is where she left off");
    let mut ui = simulator(app.view());
    assert!(ui.find("new").is_ok() && ui.find("one").is_ok());
    drop(ui);
    let first_new = app.model.shown_lines().find(|l| l.seq > app.model.new_after).map(|l| l.text.as_str());
    assert_eq!(first_new, Some("while the window was closed"));

    // Scrolled up to read, closed: the next start opens at that place, not at the end.
    let _ = app.update(Message::LogScrolled { at_end: false, offset: 55.0, content: 2000.0 });
    app.settle().await;
    let first = app.model.log.first_seq().unwrap();
    drop((app, events));
    let (mut app, _events) = window(&setup, setup.identity("alice"));
    app.settle().await;
    assert_eq!(app.model.places.get(&direct).and_then(|p| p.reading), Some((first, 55.0)));
    assert!(!app.model.follow, "reading back, as she was");
    assert_eq!(app.model.log.first_seq(), Some(first), "from the same first line, so at the same place");
}

#[tokio::test]
async fn one_file_of_several_is_received_by_its_own_button_and_can_be_opened_from_its_row() {
    let (setup, mut app, mut events) = alices_window().await;
    let mut bob = peer(&setup, "bob").await;
    for (name, size) in [("a.txt", 10_000), ("b.txt", 20_000)] {
        let transfer = bob.client.send_file(write_file(&setup.tmp.path().join(name), size));
        bob.uploaded(transfer).await;
    }
    let offered = |app: &App| app.model.offers() == 2 && app.model.transfers.iter().all(|t| t.arriving.is_none());
    pump(&mut app, &mut events, "two offers", offered).await;
    let b = app.model.transfers.iter().find(|t| t.name == "b.txt").and_then(|t| t.file_id).unwrap();
    assert!(simulator(app.view()).find("Receive all (2)").is_ok());
    let _ = app.update(Message::ReceiveFile(b));
    let saved_b =
        |app: &App| app.model.transfers.iter().any(|t| t.name == "b.txt" && matches!(t.stage, Stage::Saved(_)));
    pump(&mut app, &mut events, "b saved", saved_b).await;
    assert!(setup.downloads("alice").join("b.txt").exists());
    assert!(!setup.downloads("alice").join("a.txt").exists(), "only the one asked for");
    let mut ui = simulator(app.view());
    assert!(ui.find("Receive all (1)").is_ok(), "a.txt still waits");
    ui.click("Show in folder").expect("the received row's Show in folder");
    let clicked: Vec<Message> = ui.into_messages().collect();
    let folder = setup.downloads("alice").join("b.txt");
    assert!(clicked.iter().any(|m| matches!(m, Message::ShowInFolder(p) if *p == folder)), "{clicked:?}");
    assert!(simulator(app.view()).find("Open").is_ok(), "and it can be opened");
}

#[tokio::test]
async fn several_files_and_a_folder_dropped_at_once_all_reach_the_relay_and_bob() {
    let (setup, mut app, mut events) = alices_window().await;
    let desk = setup.tmp.path().join("desk");
    for (name, size) in [("notes.txt", 1), ("photo.jpg", 300_000), ("trip/map.pdf", 0), ("trip/day 2/clip.mov", 70_000)]
    {
        std::fs::create_dir_all(desk.join(name).parent().unwrap()).unwrap();
        write_file(&desk.join(name), size);
    }
    // One drop event per item, as the window gets them.
    for item in ["notes.txt", "photo.jpg", "trip"] {
        let _ = app.update(Message::FileDropped(desk.join(item)));
    }
    pump(&mut app, &mut events, "four files on the relay", |app| {
        app.model.transfers.len() == 4 && app.model.transfers.iter().all(|t| t.stage == Stage::OnRelay)
    })
    .await;
    let mut names: Vec<&str> = app.model.transfers.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["notes.txt", "photo.jpg", "trip/day 2/clip.mov", "trip/map.pdf"]);
    let mut ui = simulator(app.view());
    assert!(ui.find("trip/day 2/clip.mov").is_ok(), "each file has its card");
    drop(ui);
    let mut bob = peer(&setup, "bob").await;
    let (saved, failed) = bob.receive_all().await;
    assert!(failed.is_empty(), "{failed:?}");
    let downloads = setup.downloads("bob");
    let mut kept: Vec<String> = saved
        .iter()
        .map(|path| {
            let name = path.strip_prefix(&downloads).expect("under bob's downloads").to_string_lossy().into_owned();
            assert_eq!(std::fs::read(path).unwrap(), std::fs::read(desk.join(&name)).unwrap(), "{name}");
            name
        })
        .collect();
    kept.sort();
    assert_eq!(kept, ["notes.txt", "photo.jpg", "trip/day 2/clip.mov", "trip/map.pdf"], "in the same folders");
}

#[test]
fn a_dropped_folder_is_sent_as_the_files_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("holiday");
    std::fs::create_dir_all(folder.join("day 2")).unwrap();
    for name in ["b.jpg", "a.jpg", "day 2/c.jpg"] {
        std::fs::write(folder.join(name), name).unwrap();
    }
    let files = qchat_gui::app::files_in(&folder);
    assert_eq!(files, [folder.join("a.jpg"), folder.join("b.jpg"), folder.join("day 2").join("c.jpg")]);
    assert_eq!(qchat_gui::app::files_in(&folder.join("a.jpg")), [folder.join("a.jpg")], "a file is itself");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/etc/passwd", folder.join("link")).unwrap();
        assert_eq!(qchat_gui::app::files_in(&folder).len(), 3, "a link in the folder is not sent");
    }
    let names: Vec<Option<String>> = qchat_gui::app::to_send(&folder).into_iter().map(|(_, name)| name).collect();
    assert_eq!(names, [Some("holiday/a.jpg".into()), Some("holiday/b.jpg".into()), Some("holiday/day 2/c.jpg".into())]);
    assert_eq!(
        qchat_gui::app::to_send(&folder.join("a.jpg")),
        [(folder.join("a.jpg"), None)],
        "a file by its own name"
    );
}

/// A direct room of alice's with `count` messages in her history on disk, one every 40 s
/// (100,000 of them span 46 days); its identity and room.
async fn long_room(setup: &TestRelay, count: u64) -> (Identity, String) {
    use qchat_client::history::{ChatLine, History, Record};
    let identity = setup.identity("alice");
    let room = qchat_shared::names::direct_room("alice", "bob");
    let lines = (0..count).map(|i| {
        Record::Line(ChatLine {
            id: qchat_shared::frame::MessageId::random(),
            seq: Some(i + 1),
            room: room.clone(),
            from: if i % 2 == 0 { "bob".into() } else { "alice".into() },
            text: format!("message number {i}"),
            time_ms: 1_764_547_200_000 + i as i64 * 40_000,
            mine: i % 2 == 1,
            delivered: true,
            received_by: Vec::new(),
            notice: false,
            change: None,
        })
    });
    let options = setup.client_options(identity.clone());
    let state = qchat_client::state::StateDir::under(options.data_dir.as_ref().unwrap(), &identity);
    History::new(&state, "alice").append(lines.collect(), true).await.unwrap();
    (identity, room)
}

#[tokio::test]
async fn a_room_of_100000_messages_opens_at_once_holds_a_bounded_part_and_pages_both_ways() {
    use qchat_gui::log::{MAX_LOADED, PAGE};
    let setup = TestRelay::start().await;
    let (identity, room) = long_room(&setup, 100_000).await;

    let started = std::time::Instant::now();
    let (mut app, _events) = window(&setup, identity);
    app.model.select(room);
    app.settle().await;
    let mut ui = simulator(app.view());
    let earlier = format!("Show earlier messages ({} more)", 100_000 - PAGE);
    assert!(ui.find(earlier.as_str()).is_ok());
    let first_frame = started.elapsed();
    assert!(ui.find("message number 99999").is_ok(), "the newest line is there");
    assert!(ui.find("message number 99699").is_err(), "older ones are not laid out");
    let newest_day = qchat_gui::format::day(1_764_547_200_000 + 99_999 * 40_000, &qchat_gui::text::EN);
    assert!(ui.find(newest_day.as_str()).is_ok(), "a day separator");
    eprintln!("100,000 messages: the window started, read its page and laid it out in {first_frame:?}");
    assert!(first_frame < Duration::from_secs(5), "{first_frame:?}");

    ui.click(earlier.as_str()).expect("Show earlier");
    let clicked: Vec<Message> = ui.into_messages().collect();
    apply(&mut app, clicked).await;
    let mut ui = simulator(app.view());
    assert!(ui.find("message number 99699").is_ok(), "a page more");
    assert!(ui.find(format!("Show earlier messages ({} more)", 100_000 - 2 * PAGE).as_str()).is_ok());
    drop(ui);

    // Far back, the window holds a bounded part of the room: the newest lines go.
    for _ in 0..2 * MAX_LOADED / PAGE {
        apply(&mut app, [Message::ShowEarlier]).await;
    }
    assert_eq!(app.model.log.lines.len(), MAX_LOADED);
    assert_eq!(app.model.log.earlier + MAX_LOADED + app.model.log.later, 100_000);
    let mut ui = simulator(app.view());
    assert!(ui.find("message number 99999").is_err(), "no longer held");
    let later = format!("Show later messages ({} more)", app.model.log.later);
    assert!(ui.find(later.as_str()).is_ok(), "the way back down, with how far it is");
    drop(ui);
    apply(&mut app, [Message::ShowLater]).await;
    assert_eq!(app.model.log.lines.len(), MAX_LOADED);
    // The button to the newest lines reads them again.
    apply(&mut app, [Message::JumpToEnd]).await;
    assert_eq!((app.model.log.later, app.model.log.lines.len()), (0, PAGE));
    assert!(simulator(app.view()).find("message number 99999").is_ok());
}

#[tokio::test]
async fn ctrl_f_searches_the_rooms_history_and_esc_closes_it() {
    use iced::keyboard::{Key, Modifiers};
    assert!(matches!(
        qchat_gui::app::shortcut(&Key::Character("f".into()), Modifiers::CTRL),
        Some(Message::ToggleSearch)
    ));
    assert!(qchat_gui::app::shortcut(&Key::Character("f".into()), Modifiers::empty()).is_none(), "f alone is typing");
    assert!(matches!(qchat_gui::app::shortcut(&Key::Named(Named::Escape), Modifiers::empty()), Some(Message::Escape)));

    let mut chat = AliceAndBob::start().await;
    for said in ["the train leaves at 7", "bring the map", "Train tickets are booked"] {
        chat.bob_says(said).await;
    }
    let mut app = chat.app;

    let _ = app.update(Message::ToggleSearch);
    let mut ui = simulator(app.view());
    ui.click("Search this room (Esc closes)").expect("the search field");
    ui.typewrite("train");
    let typed: Vec<Message> = ui.into_messages().collect();
    apply(&mut app, typed).await;
    let mut ui = simulator(app.view());
    assert!(ui.find("2 found").is_ok(), "either case");
    assert!(ui.find("the train leaves at 7").is_ok() && ui.find("Train tickets are booked").is_ok());
    assert!(ui.find("bring the map").is_err(), "only what has the words");
    drop(ui);

    let _ = app.update(Message::Escape);
    let mut ui = simulator(app.view());
    assert!(ui.find("bring the map").is_ok(), "every line again");
    assert!(ui.find("Search this room (Esc closes)").is_err());
}

#[tokio::test]
async fn the_window_speaks_chinese_and_switches_to_english_and_back() {
    let mut chat = AliceAndBob::start().await;
    chat.app.model.lang = qchat_gui::text::Lang::Zh;
    chat.bob_says("你好，周五见！").await;
    let mut app = chat.app;
    let mut ui = simulator(app.view());
    for label in ["聊天室", "文件", "全部接收（0）", "选择文件…", "发送文件", "已连接：alice", "设备", "你好，周五见！"]
    {
        assert!(ui.find(label).is_ok(), "{label}");
    }
    assert!(ui.find("Rooms").is_err(), "no English left on the screen");
    ui.click("English").expect("the language switch");
    let clicked: Vec<Message> = ui.into_messages().collect();
    apply(&mut app, clicked).await;
    let mut ui = simulator(app.view());
    assert!(ui.find("Rooms").is_ok() && ui.find("Receive all (0)").is_ok());
    assert!(ui.find("中文").is_ok(), "and back again");
}

#[tokio::test]
async fn a_change_of_the_room_is_told_in_the_windows_language_then_and_after_a_restart() {
    use qchat_client::RoomRequest;
    let AliceAndBob { _setup: setup, mut bob, mut app, mut events } = AliceAndBob::start().await;
    app.model.lang = qchat_gui::text::Lang::Zh;
    bob.room(RoomRequest::Create { name: "trip".into(), members: vec!["alice".into()] }).await.expect("made");
    bob.room(RoomRequest::Leave { room: "trip".into() }).await.expect("left");
    let told = |app: &App| -> Vec<String> {
        let s = app.model.lang.strings();
        let notices = app.model.shown_lines().filter(|l| l.notice);
        notices
            .map(|l| {
                format!("{} · {}", qchat_gui::format::clock(l.time_ms), (s.change)(&l.from, l.change.as_ref().unwrap()))
            })
            .collect()
    };
    pump(&mut app, &mut events, "the room", |app| app.model.rooms.iter().any(|r| r.name == "trip")).await;
    app.model.select("trip".into());
    app.settle().await;
    pump(&mut app, &mut events, "two notices", |app| app.model.shown_lines().filter(|l| l.notice).count() == 2).await;
    let lines = told(&app);
    assert!(lines[0].contains("bob 创建了聊天室，成员：") && lines[0].contains("alice"), "{lines:?}");
    assert!(lines[1].ends_with("bob 退出了聊天室"), "{lines:?}");
    let mut ui = simulator(app.view());
    for line in &lines {
        assert!(ui.find(line.as_str()).is_ok(), "{line}");
    }
    drop(ui);
    // From history.db on the next start, in English this time.
    drop((app, events));
    let (mut app, _events) = window(&setup, setup.identity("alice"));
    app.model.select("trip".into());
    app.settle().await;
    let lines = told(&app);
    assert!(lines.len() == 2 && lines[1].ends_with("bob left"), "{lines:?}");
    let mut ui = simulator(app.view());
    assert!(ui.find(lines[1].as_str()).is_ok());
}

#[tokio::test]
async fn dragging_a_border_between_panels_moves_it_and_the_next_window_opens_so() {
    use iced::mouse::{Button, Event as Mouse};
    use qchat_gui::geometry::{recall_split, remember_split, split_record, DEFAULT_SPLIT};
    let (setup, mut app, _events) = alices_window().await;
    assert_eq!(app.split(), DEFAULT_SPLIT);
    // The border between the room list and the files, dragged 150 pixels right.
    let border = 1024.0 * DEFAULT_SPLIT.rooms;
    let mut ui = simulator(app.view());
    ui.point_at(iced::Point::new(border, 300.0));
    ui.simulate([iced::Event::Mouse(Mouse::ButtonPressed(Button::Left))]);
    ui.point_at(iced::Point::new(border + 150.0, 300.0));
    ui.simulate([
        iced::Event::Mouse(Mouse::CursorMoved { position: iced::Point::new(border + 150.0, 300.0) }),
        iced::Event::Mouse(Mouse::ButtonReleased(Button::Left)),
    ]);
    let dragged: Vec<Message> = ui.into_messages().collect();
    assert!(dragged.iter().any(|m| matches!(m, Message::PaneResized(_))), "{dragged:?}");
    apply(&mut app, dragged).await;
    let split = app.split();
    assert!((split.rooms - (border + 150.0) / 1024.0).abs() < 0.01, "{split:?}");
    assert_eq!(split.files, DEFAULT_SPLIT.files, "the other border stays");

    // What the window writes down (iced runs the write as a task) opens the next one so.
    let record = setup.tmp.path().join("config").join("window-size");
    remember_split(&split_record(&record), split);
    assert_eq!(
        recall_split(&split_record(&record)).map(|s| (s.rooms * 1000.0).round()),
        Some((split.rooms * 1000.0).round())
    );
    let settings = qchat_gui::shell::Settings {
        server: Some(setup.addr.to_string()),
        data_dir: Some(setup.clients_dir.clone()),
        download_dir: None,
        remember_in: None,
        lang: Default::default(),
        size_record: Some(record),
    };
    let (shell, _) = Shell::chat(setup.client_options(setup.identity("alice")).clone(), &settings);
    let Shell::Chat(next) = &shell else { panic!("the chat") };
    assert!((next.split().rooms - split.rooms).abs() < 0.001, "{:?}", next.split());
}

#[tokio::test]
async fn a_web_link_in_a_message_opens_and_nothing_else_does() {
    let mut chat = AliceAndBob::start().await;
    chat.bob_says("the route: https://map.example/route?day=2. See you").await;
    let mut app = chat.app;
    // The line is laid out as rich text (iced_test cannot select its spans by text; how
    // the text is cut into links is format::links' test).
    let _ = simulator(app.view());
    let _ = app.update(Message::OpenLink("https://map.example/route?day=2".into()));
    assert_eq!(app.model.notice, None, "a web link goes to the browser");
    let _ = app.update(Message::OpenLink("file:///etc/passwd".into()));
    assert_eq!(app.model.notice.as_deref(), Some("not a web link, not opened: file:///etc/passwd"));
}

#[tokio::test]
async fn a_right_click_copies_a_message() {
    let mut chat = AliceAndBob::start().await;
    chat.bob_says("the door code is 4711").await;
    let mut app = chat.app;
    let _ = app.update(Message::CopyText("the door code is 4711".into()));
    assert_eq!(app.model.notice.as_deref(), Some("the message is copied"));
    assert!(simulator(app.view()).find("the message is copied").is_ok(), "the window says so");
}

#[tokio::test]
async fn a_clicked_message_opens_for_selecting_part_of_it_read_only() {
    use iced::widget::text_editor::{Action, Edit, Motion};
    let mut chat = AliceAndBob::start().await;
    chat.bob_says("the door code is 4711").await;
    let mut app = chat.app;
    let mut ui = simulator(app.view());
    ui.click("the door code is 4711").expect("the message's text");
    let clicked: Vec<Message> = ui.into_messages().collect();
    assert!(clicked.iter().any(|m| matches!(m, Message::SelectIn(_))), "{clicked:?}");
    apply(&mut app, clicked).await;
    let selected = |app: &App| app.selecting.as_ref().and_then(|(_, content)| content.selection());
    assert_eq!(selected(&app).as_deref(), Some("the door code is 4711"), "all of it, to start with");
    // Part of it: the cursor to the end, then four characters back with Shift.
    let _ = app.update(Message::Selecting(Action::Move(Motion::DocumentEnd)));
    for _ in 0..4 {
        let _ = app.update(Message::Selecting(Action::Select(Motion::Left)));
    }
    assert_eq!(selected(&app).as_deref(), Some("4711"));
    let _ = app.update(Message::Selecting(Action::Edit(Edit::Insert('x'))));
    let _ = app.update(Message::Selecting(Action::Edit(Edit::Backspace)));
    let text = app.selecting.as_ref().map(|(_, content)| content.text()).unwrap_or_default();
    assert_eq!(text.trim_end(), "the door code is 4711", "read-only: nothing typed changes it");
    assert!(simulator(app.view()).find("bob:").is_ok(), "the line is still there");
    let _ = app.update(Message::Escape);
    assert!(app.selecting.is_none(), "Esc closes it");
    assert!(simulator(app.view()).find("the door code is 4711").is_ok(), "shown as text again");
}

#[tokio::test]
async fn esc_cancels_the_transfer_clicked() {
    let (setup, mut app, mut events) = alices_window().await;
    // Large enough to be running when Esc comes.
    let source = write_file(&setup.tmp.path().join("big.iso"), 512 << 20);
    let _ = app.update(Message::FileDropped(source));
    pump(&mut app, &mut events, "the upload running", |app| {
        app.model.transfers.first().is_some_and(|t| t.stage == Stage::Uploading)
    })
    .await;
    let mut ui = simulator(app.view());
    ui.click("big.iso").expect("the transfer's card");
    let clicked: Vec<Message> = ui.into_messages().collect();
    assert!(clicked.iter().any(|m| matches!(m, Message::SelectTransfer(_))), "{clicked:?}");
    apply(&mut app, clicked).await;
    let _ = app.update(Message::Escape);
    pump(&mut app, &mut events, "cancelled", |app| {
        app.model.transfers.first().is_some_and(|t| matches!(&t.stage, Stage::Failed(reason) if reason == "cancelled"))
    })
    .await;
    assert_eq!(app.model.selected_transfer, None);
}

#[tokio::test]
async fn a_folder_of_too_many_files_is_not_sent_and_the_window_says_why() {
    let (setup, mut app, _events) = alices_window().await;
    let home = setup.tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    for i in 0..=qchat_gui::app::MAX_DROPPED {
        std::fs::write(home.join(format!("{i}.txt")), "x").unwrap();
    }
    let _ = app.update(Message::FileDropped(home.clone()));
    assert!(app.model.transfers.is_empty() && app.model.notice.is_none(), "listed off the window's thread");
    app.settle().await;
    assert!(app.model.transfers.is_empty(), "nothing queued");
    let notice = app.model.notice.clone().unwrap_or_default();
    assert!(notice.contains("more than 1000 files") && notice.contains("nothing was sent"), "{notice}");
}

/// The middle of a sorted list of durations.
fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test]
async fn scrolling_through_the_most_lines_the_window_holds_draws_frames_quickly() {
    use iced::mouse::{Event as Mouse, ScrollDelta};
    use iced_test::core::renderer::Headless;
    use iced_test::runtime::user_interface::{Cache, UserInterface};
    use qchat_gui::log::{MAX_LOADED, PAGE};
    let setup = TestRelay::start().await;
    let (identity, room) = long_room(&setup, 100_000).await;
    let (mut app, _events) = window(&setup, identity);
    app.model.select(room);
    app.settle().await;
    for _ in 0..MAX_LOADED / PAGE {
        apply(&mut app, [Message::ShowEarlier]).await;
    }
    assert_eq!(app.model.log.lines.len(), MAX_LOADED, "the most the window holds");

    // Frames as the window's runtime makes them while the log is scrolled: the wheel turn
    // given to the widgets, the view built again against the last frame's widget state
    // (text already shaped is kept), laid out, drawn and rasterized at the window's size.
    let (size, theme) = (iced::Size::new(1024.0, 768.0), iced::Theme::Light);
    let base = iced::theme::Base::base(&theme);
    let style = iced_test::core::renderer::Style { text_color: base.text_color };
    let mut renderer = iced_test::futures::futures::executor::block_on(<iced::Renderer as Headless>::new(
        iced::Font::with_name("Fira Sans"),
        iced::Pixels(16.0),
        None,
    ))
    .expect("a renderer");
    let cursor = iced::mouse::Cursor::Available(iced::Point::new(700.0, 300.0));
    let wheel = iced::Event::Mouse(Mouse::WheelScrolled { delta: ScrollDelta::Lines { x: 0.0, y: -3.0 } });
    let mut frame = |app: &mut App, cache: Cache, events: &[iced::Event]| {
        let mut messages = Vec::new();
        let mut ui = UserInterface::build(app.view(), size, cache, &mut renderer);
        let _ = ui.update(events, cursor, &mut renderer, &mut iced_test::core::clipboard::Null, &mut messages);
        ui.draw(&mut renderer, &theme, &style, cursor);
        let pixels = renderer.screenshot(iced::Size::new(1024, 768), 1.0, base.background_color);
        assert_eq!(pixels.len(), 1024 * 768 * 4);
        let cache = ui.into_cache();
        (cache, messages)
    };
    let (mut cache, mut frames, mut offsets) = (frame(&mut app, Cache::default(), &[]).0, Vec::new(), Vec::new());
    for _ in 0..40 {
        let started = std::time::Instant::now();
        let (kept, messages) = frame(&mut app, cache, std::slice::from_ref(&wheel));
        cache = kept;
        for message in messages {
            if let Message::LogScrolled { offset, .. } = message {
                offsets.push(offset);
            }
            let _ = app.update(message);
        }
        frames.push(started.elapsed());
    }
    assert!(offsets.len() == 40 && offsets.windows(2).all(|w| w[1] > w[0]), "the log scrolled: {offsets:?}");
    // The same with nothing in the window: clearing and reading back the pixels.
    let blank = median(
        (0..10)
            .map(|_| {
                let started = std::time::Instant::now();
                let nothing: iced::Element<'_, Message> = iced::widget::text("").into();
                UserInterface::build(nothing, size, Cache::default(), &mut renderer).draw(
                    &mut renderer,
                    &theme,
                    &style,
                    cursor,
                );
                let _ = renderer.screenshot(iced::Size::new(1024, 768), 1.0, base.background_color);
                started.elapsed()
            })
            .collect(),
    );
    let (median_frame, worst) = (median(frames.clone()), frames.iter().max().copied().unwrap());
    eprintln!(
        "{MAX_LOADED} lines held, scrolled 40 times in a 1024x768 window: a frame takes {median_frame:?} \
         (median), {worst:?} at worst; a blank frame {blank:?}"
    );
    // Generous: other tests share the two cores (the README has the figures of a quiet run).
    assert!(median_frame < Duration::from_millis(250), "{median_frame:?}");
}
