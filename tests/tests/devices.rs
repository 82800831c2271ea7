//! Devices that enroll themselves: people brought in with one-line invites, a second device
//! of one person, what each device receives, refused invites, revocation and renewal.

use std::time::Duration;

use qchat_client::{DeviceRequest, Event};
use qchat_server::RelayLimits;
use qchat_tests::{write_file, TestClient, TestRelay};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Every file below `dir`, with its bytes.
fn files_below(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn message_from(client: &mut TestClient, from: &str, text: &str) {
    let (from, text) = (from.to_string(), text.to_string());
    client
        .expect(&format!("{text:?} from {from}"), |e| match e {
            Event::Message(m) if m.from == from && m.text == text => Some(()),
            _ => None,
        })
        .await;
}

/// Connects `identity` (its file at `path`), waits for its renewal, and returns the client
/// and the identity file as it is then (its certificate new).
async fn connect_and_renew(
    relay: &TestRelay,
    identity: &qchat_shared::identity::Identity,
    path: &std::path::Path,
) -> (TestClient, qchat_shared::identity::Identity) {
    let mut options = relay.client_options(identity.clone());
    options.identity_path = Some(path.to_path_buf());
    let mut client = TestClient::start(options);
    client.connected().await;
    client
        .expect("a renewed certificate", |e| match e {
            Event::Renewed { .. } => Some(()),
            _ => None,
        })
        .await;
    let renewed = qchat_shared::identity::Identity::load(path).unwrap();
    assert_ne!(renewed.cert_pem, identity.cert_pem, "a new certificate in the identity file");
    (client, renewed)
}

async fn device_answer<T>(client: &mut TestClient, request: DeviceRequest, pick: impl FnMut(Event) -> Option<T>) -> T {
    client.client.devices(request);
    client.expect("an answer about devices", pick).await
}

#[tokio::test]
async fn two_people_come_in_with_invites_and_one_of_them_chats_from_two_devices() {
    let relay = TestRelay::start_with_people(RelayLimits::default(), &[]).await;
    let alice_laptop = relay.join(&relay.invite("alice", DAY).await, "laptop").await;
    let bob_pc = relay.join(&relay.invite("bob", DAY).await, "pc").await;
    let alice_phone = relay.join(&relay.invite("alice", DAY).await, "phone").await;
    assert_eq!((alice_laptop.user.as_str(), bob_pc.user.as_str()), ("alice", "bob"));
    assert_ne!(alice_laptop.device(), alice_phone.device(), "each device has its own id");
    assert_ne!(alice_laptop.key_pem, alice_phone.key_pem, "each device has its own key");

    let mut laptop = relay.client_for(alice_laptop.clone());
    let mut bob = relay.client_for(bob_pc);
    let status = laptop.connected().await;
    assert_eq!(status.peer.as_deref(), Some("bob"));
    bob.connected().await;
    let mut phone = relay.client_for(alice_phone.clone());
    phone.connected().await;

    laptop.client.send_and_wait("hello from my laptop").await.unwrap();
    message_from(&mut bob, "alice", "hello from my laptop").await;
    message_from(&mut phone, "alice", "hello from my laptop").await;
    bob.client.send_and_wait("hi alice").await.unwrap();
    message_from(&mut laptop, "bob", "hi alice").await;
    message_from(&mut phone, "bob", "hi alice").await;
    phone.client.send_and_wait("and from my phone").await.unwrap();
    message_from(&mut bob, "alice", "and from my phone").await;
    message_from(&mut laptop, "alice", "and from my phone").await;

    // A file is fetched per device: the phone still gets the one the laptop saved.
    let source = write_file(&relay.tmp.path().join("report.bin"), 300_000);
    let transfer = bob.client.send_file(&source);
    bob.uploaded(transfer).await;
    let (saved, failed) = laptop.receive_all().await;
    assert!(failed.is_empty() && saved.len() == 1, "{failed:?}");
    phone.client.receive_all(Some(relay.tmp.path().join("phone-downloads")));
    let on_phone = phone
        .expect("the file on the phone", |e| match e {
            Event::FileSaved { path, .. } => Some(path),
            Event::TransferFailed { reason, .. } => panic!("{reason}"),
            _ => None,
        })
        .await;
    qchat_tests::same_content(&source, &on_phone);

    // The devices of a person: both listed, the asking one marked.
    let devices = device_answer(&mut phone, DeviceRequest::List, |e| match e {
        Event::Devices(devices) => Some(devices),
        _ => None,
    })
    .await;
    let names: Vec<(&str, bool)> = devices.iter().map(|d| (d.name.as_str(), d.current)).collect();
    assert_eq!(names, [("laptop", false), ("phone", true)]);

    // No device's private key is anywhere the relay keeps things: the data directory holds
    // no private key at all, the PKI only the CA's and the relay's own.
    for (path, bytes) in files_below(&relay.data) {
        assert!(!contains(&bytes, b"PRIVATE KEY"), "{} holds a private key", path.display());
    }
    for (path, bytes) in files_below(&relay.data).into_iter().chain(files_below(&relay.pki)) {
        let own = path.ends_with("ca.key") || path.ends_with("relay.key");
        assert!(own || !contains(&bytes, b"PRIVATE KEY"), "{} holds a private key", path.display());
        for identity in [&alice_laptop, &alice_phone] {
            let body = identity.key_pem.lines().nth(1).unwrap();
            assert!(!contains(&bytes, body.as_bytes()), "{} holds a device's key", path.display());
        }
    }
}

#[tokio::test]
async fn a_new_device_gets_what_comes_after_it_joined_and_everyone_sees_it_arrive() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    alice.client.send_and_wait("before the new device").await.unwrap();
    message_from(&mut bob, "alice", "before the new device").await;

    let line = device_answer(&mut bob, DeviceRequest::Link, |e| match e {
        Event::DeviceInvite { line, .. } => Some(line),
        _ => None,
    })
    .await;
    let tablet = relay.join(&line, "tablet").await;
    assert_eq!(tablet.user, "bob");
    for client in [&mut alice, &mut bob] {
        client
            .expect("the new device's notice", |e| match e {
                Event::DeviceAdded { user, device } if user == "bob" && device.name == "tablet" => Some(()),
                _ => None,
            })
            .await;
    }
    let mut tablet = relay.client_for(tablet);
    let status = tablet.connected().await;
    assert_eq!(status.waiting_for_you, 0, "what came before it joined is not for it");
    alice.client.send_and_wait("after").await.unwrap();
    let first = tablet.messages(1).await;
    assert_eq!(first[0].text, "after");
    message_from(&mut bob, "alice", "after").await;
}

#[tokio::test]
async fn an_invite_works_once_and_a_refused_one_says_why() {
    let limits = RelayLimits { enroll_failures_per_minute: 4, ..Default::default() };
    let relay = TestRelay::start_with_people(limits, &[]).await;
    let line = relay.invite("alice", DAY).await;
    relay.join(&line, "first").await;
    let again = qchat_client::enroll::join(&line, "second").await.unwrap_err();
    assert!(again.0.contains("already used"), "{again}");

    let expired = relay.invite("alice", Duration::ZERO).await;
    let err = qchat_client::enroll::join(&expired, "late").await.unwrap_err();
    assert!(err.0.contains("expired"), "{err}");

    // Revoking a person revokes their open invites too.
    let revoked = relay.invite("bob", DAY).await;
    let dirs = qchat_server::admin::Dirs { pki: relay.pki.clone(), data: relay.data.clone() };
    qchat_server::admin::revoke(&dirs, "bob", None).await.unwrap();
    let err = qchat_client::enroll::join(&revoked, "never").await.unwrap_err();
    assert!(err.0.contains("revoked"), "{err}");

    // A wrong secret is "invalid", however close; so is another relay's CA.
    let mut wrong = qchat_shared::invite::Invite::parse(&relay.invite("alice", DAY).await).unwrap();
    wrong.secret[0] ^= 1;
    let err = qchat_client::enroll::join(&wrong.to_string(), "guess").await.unwrap_err();
    assert!(err.0.contains("invalid"), "{err}");
    let mut other_ca = wrong.clone();
    other_ca.ca_fingerprint[0] ^= 1;
    let err = qchat_client::enroll::join(&other_ca.to_string(), "guess").await.unwrap_err();
    assert!(err.0.contains("invalid"), "{err}");
    let err = qchat_client::enroll::join("qchat-invite:nonsense", "typo").await.unwrap_err();
    assert!(err.0.contains("not a valid qchat invite"), "{err}");

    // Guessing is bounded: past the failures allowed a minute, even a good invite waits.
    for _ in 0..3 {
        qchat_client::enroll::join(&wrong.to_string(), "guess").await.unwrap_err();
    }
    let good = relay.invite("alice", DAY).await;
    let err = qchat_client::enroll::join(&good, "honest").await.unwrap_err();
    assert!(err.0.contains("too many failed attempts"), "{err}");
}

#[tokio::test]
async fn honest_joins_from_one_address_are_not_limited() {
    let relay = TestRelay::start_with_people(RelayLimits::default(), &[]).await;
    for i in 0..6 {
        let line = relay.invite("alice", DAY).await;
        relay.join(&line, &format!("device {i}")).await;
    }
}

#[tokio::test]
async fn a_revoked_device_is_cut_off_and_the_others_go_on() {
    let relay = TestRelay::start().await;
    let (mut alice, mut bob) = relay.pair().await;
    let line = device_answer(&mut alice, DeviceRequest::Link, |e| match e {
        Event::DeviceInvite { line, .. } => Some(line),
        _ => None,
    })
    .await;
    let phone = relay.join(&line, "lost phone").await;
    let phone_id = phone.device().unwrap();
    let mut lost = relay.client_for(phone.clone());
    lost.connected().await;
    // Whoever holds the lost phone makes an invite with it, to keep a way in.
    let left_behind = device_answer(&mut lost, DeviceRequest::Link, |e| match e {
        Event::DeviceInvite { line, .. } => Some(line),
        _ => None,
    })
    .await;

    let revoked = device_answer(&mut alice, DeviceRequest::Revoke(phone_id.clone()), |e| match e {
        Event::DeviceRevoked { id } => Some(id),
        Event::DeviceRefused { reason } => panic!("{reason}"),
        _ => None,
    })
    .await;
    assert_eq!(revoked, phone_id);
    let reason = lost.refused().await;
    assert!(reason.contains("revoked"), "{reason}");
    let reason = relay.client_for(phone).refused().await;
    assert!(reason.contains("revoked"), "it cannot come back: {reason}");
    let err = qchat_client::enroll::join(&left_behind, "thief").await.unwrap_err();
    assert!(err.0.contains("revoked"), "the invites it made go with it: {err}");

    let unknown = device_answer(&mut alice, DeviceRequest::Revoke("nosuchid".into()), |e| match e {
        Event::DeviceRefused { reason } => Some(reason),
        _ => None,
    })
    .await;
    assert!(unknown.contains("no device"), "{unknown}");
    alice.client.send_and_wait("still here").await.unwrap();
    message_from(&mut bob, "alice", "still here").await;
}

#[tokio::test]
async fn a_device_renews_its_certificate_before_it_ends() {
    // A certificate of a minute (issued five minutes back): in its last third at once.
    let limits = RelayLimits { device_lifetime: Duration::from_secs(60), ..Default::default() };
    let relay = TestRelay::start_with_people(limits, &[]).await;
    let identity = relay.join(&relay.invite("alice", DAY).await, "laptop").await;
    let path = relay.tmp.path().join("alice.qchat");
    identity.save(&path).unwrap();
    let (alice, renewed) = connect_and_renew(&relay, &identity, &path).await;
    assert_eq!(renewed.key_pem, identity.key_pem, "the same key: it never left the device");
    assert_eq!(renewed.device(), identity.device());
    alice.stop().await;
    relay.client_for(renewed).connected().await;
}

#[tokio::test]
async fn the_live_connection_limit_counts_per_device() {
    let relay = TestRelay::start().await;
    let mut bob = relay.client("bob");
    bob.connected().await;
    let mut laptop = Vec::new();
    for _ in 0..qchat_shared::limits::MAX_CONNECTIONS_PER_USER {
        let mut client = relay.client("alice");
        client.connected().await;
        laptop.push(client);
    }
    let line = device_answer(&mut laptop[0], DeviceRequest::Link, |e| match e {
        Event::DeviceInvite { line, .. } => Some(line),
        _ => None,
    })
    .await;
    let mut phone = relay.client_for(relay.join(&line, "phone").await);
    phone.connected().await;
    // A fifth connection of the laptop pushes out the laptop's oldest, not the phone.
    let mut fifth = relay.client("alice");
    fifth.connected().await;
    let reason = laptop[0].refused().await;
    assert!(reason.contains("took this one's place"), "{reason}");
    phone.client.send_and_wait("the phone is still connected").await.unwrap();
    message_from(&mut bob, "alice", "the phone is still connected").await;
    message_from(&mut fifth, "alice", "the phone is still connected").await;
}

/// An enrollment connection made by hand, to misbehave.
async fn raw_enrollment(line: &str) -> (quinn::Endpoint, quinn::Connection) {
    let invite = qchat_shared::invite::Invite::parse(line).unwrap();
    let (crypto, _) = qchat_shared::tls::enroll_crypto(invite.ca_fingerprint).unwrap();
    let config = qchat_shared::transport::client_config(crypto).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = invite.server.parse().unwrap();
    let connection = endpoint.connect_with(config, addr, "127.0.0.1").unwrap().await.unwrap();
    (endpoint, connection)
}

#[tokio::test]
async fn a_hostile_enrollment_gets_nothing_and_uses_up_no_invite() {
    let relay = TestRelay::start().await;
    let (alice, mut bob) = relay.pair().await;
    let line = relay.invite("alice", DAY).await;
    let invite = qchat_shared::invite::Invite::parse(&line).unwrap();

    // Garbage instead of a request: the connection is closed, the relay goes on.
    let (_endpoint, connection) = raw_enrollment(&line).await;
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(&[0xff; 64]).await.unwrap();
    let _ = send.finish();
    let closed = tokio::time::timeout(Duration::from_secs(15), connection.closed()).await;
    assert!(closed.is_ok(), "closed");

    // A request that is not a valid PKCS#10: refused, and the invite still works.
    let (_endpoint, connection) = raw_enrollment(&line).await;
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let request = qchat_shared::frame::EnrollRequest {
        invite: invite.id.clone(),
        secret: invite.secret.to_vec(),
        device_name: "evil".into(),
        csr_der: vec![0x30, 0x03, 0x02, 0x01, 0x00],
    };
    qchat_shared::io::write_frame(&mut send, &request).await.unwrap();
    let reply: qchat_shared::frame::EnrollReply = qchat_shared::io::read_frame(&mut recv).await.unwrap().unwrap();
    let qchat_shared::frame::EnrollReply::Refused { reason } = reply else { panic!("enrolled with a bad request") };
    assert!(reason.contains("certificate request is not valid"), "{reason}");

    // The invite was not used up by the refused request; chat went on throughout.
    relay.join(&line, "honest").await;
    alice.client.send_and_wait("unharmed").await.unwrap();
    message_from(&mut bob, "alice", "unharmed").await;
}

#[tokio::test]
async fn an_identity_from_qchat_certs_renews_and_stays_the_same_device() {
    let mut relay = TestRelay::start_with_people(RelayLimits::default(), &["bob"]).await;
    let now = time::OffsetDateTime::now_utc();
    let short = qchat_certs::UserOptions {
        not_before: now - time::Duration::hours(1),
        not_after: now + time::Duration::minutes(5),
    };
    let path = qchat_certs::issue_user_with(&relay.pki, "alice", &relay.addr.to_string(), &short).unwrap();
    relay.restart().await;
    let identity = qchat_shared::identity::Identity::load(&path).unwrap();
    let first_id = identity.device().unwrap();
    let state_dir = qchat_client::state::StateDir::under(&relay.clients_dir, &identity).dir;

    let (alice, renewed) = connect_and_renew(&relay, &identity, &path).await;
    alice.stop().await;
    assert_eq!(qchat_client::state::StateDir::under(&relay.clients_dir, &renewed).dir, state_dir, "its history stays");

    let mut alice = relay.client_for(renewed);
    alice.connected().await;
    let devices = device_answer(&mut alice, DeviceRequest::List, |e| match e {
        Event::Devices(devices) => Some(devices),
        _ => None,
    })
    .await;
    let ids: Vec<(&str, bool)> = devices.iter().map(|d| (d.id.as_str(), d.current)).collect();
    assert_eq!(ids, [(first_id.as_str(), true)], "one device, the same as before its renewal");
}

#[tokio::test]
async fn a_device_that_was_away_hears_of_the_devices_that_joined_meanwhile() {
    let relay = TestRelay::start().await;
    let (alice, mut bob) = relay.pair().await;
    alice.stop().await;
    let line = device_answer(&mut bob, DeviceRequest::Link, |e| match e {
        Event::DeviceInvite { line, .. } => Some(line),
        _ => None,
    })
    .await;
    relay.join(&line, "bob's new phone").await;
    let mut alice = relay.client("alice");
    alice.connected().await;
    alice
        .expect("the notice of bob's new phone", |e| match e {
            Event::DeviceAdded { user, device } if user == "bob" && device.name == "bob's new phone" => Some(()),
            _ => None,
        })
        .await;
}

#[tokio::test]
async fn a_certificate_is_not_renewed_before_its_last_third() {
    let relay = TestRelay::start_with_people(RelayLimits::default(), &[]).await;
    let identity = relay.join(&relay.invite("alice", DAY).await, "laptop").await;
    let mut raw = qchat_tests::raw_connect(&identity, relay.addr).await;
    let csr_der = qchat_client::enroll::renewal_request(&identity).unwrap();
    qchat_shared::io::write_frame(&mut raw.control.0, &qchat_shared::frame::ClientControl::Renew { csr_der })
        .await
        .unwrap();
    let reason = tokio::time::timeout(qchat_tests::WAIT, async {
        loop {
            match qchat_shared::io::read_frame::<qchat_shared::frame::RelayControl, _>(&mut raw.control.1).await {
                Ok(Some(qchat_shared::frame::RelayControl::DeviceRefused { reason })) => return reason,
                Ok(Some(qchat_shared::frame::RelayControl::Renewed { .. })) => panic!("renewed 90 days early"),
                Ok(Some(_)) => {}
                other => panic!("the control stream ended: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert!(reason.contains("last third"), "{reason}");
}

#[tokio::test]
async fn an_enrollment_that_never_asks_is_closed_and_counted() {
    let limits = RelayLimits { enroll_failures_per_minute: 1, ..Default::default() };
    let relay = TestRelay::start_with_people(limits, &[]).await;
    let line = relay.invite("alice", DAY).await;
    let (_endpoint, connection) = raw_enrollment(&line).await;
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(20), connection.closed()).await;
    assert!(closed.is_ok() && started.elapsed() < Duration::from_secs(15), "closed after the deadline");
    let err = qchat_client::enroll::join(&line, "next").await.unwrap_err();
    assert!(err.0.contains("too many failed attempts"), "the silent one counted: {err}");
}

#[tokio::test]
async fn one_address_cannot_hold_every_enrollment_slot() {
    let relay = TestRelay::start_with_people(RelayLimits::default(), &[]).await;
    let line = relay.invite("alice", DAY).await;
    let mut silent = Vec::new();
    for _ in 0..qchat_server::attempts::AT_ONCE_PER_ADDRESS {
        silent.push(raw_enrollment(&line).await);
    }
    let (_endpoint, one_more) = raw_enrollment(&line).await;
    let closed = tokio::time::timeout(Duration::from_secs(3), one_more.closed()).await.expect("closed at once");
    let quinn::ConnectionError::ApplicationClosed(close) = closed else { panic!("{closed:?}") };
    let reason = String::from_utf8_lossy(&close.reason).into_owned();
    assert!(reason.contains("too many enrollments from your address"), "{reason}");
    drop(silent);
}
