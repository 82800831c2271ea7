//! The operator's view of a real relay with people, a room and files: `status` (text and
//! JSON) while it runs and after it stopped, and its Prometheus metrics.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use qchat_client::RoomRequest;
use qchat_server::status::{gather, render, Status};
use qchat_server::RelayLimits;
use qchat_tests::{write_file, TestRelay};

const FILE_SIZE: u64 = 300_000;

fn limits() -> RelayLimits {
    RelayLimits { max_file_size: 1 << 20, ..RelayLimits::default() }
}

/// Fetches `path` from the metrics address: the status line and the body.
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// Unix milliseconds of an RFC 3339 time.
fn time_of(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The value of the sample named exactly `sample` (with its labels) in `text`.
fn sample(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until the status says what `done` wants (a fetch is recorded just after the file is saved).
async fn status_when(relay: &TestRelay, what: &str, done: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = status_of(relay).await;
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "status never showed {what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `qchat-server status`, off the runtime's threads as the command runs in its own process.
async fn status_of(relay: &TestRelay) -> Status {
    let dirs = relay.dirs();
    tokio::task::spawn_blocking(move || gather(&dirs, &limits())).await.unwrap().expect("status")
}

#[tokio::test]
async fn status_shows_people_connections_rooms_and_files_and_metrics_count_what_happened() {
    let mut relay = TestRelay::start_with_people(limits(), &["alice", "bob", "carol"]).await;
    let metrics = relay.serve_metrics().await;
    let mut alice = relay.client("alice");
    let mut bob = relay.client("bob");
    alice.connected().await;
    bob.connected().await;
    // Carol's device has been here once (so the file waits for it too), and is away now.
    let mut carol = relay.client("carol");
    carol.connected().await;
    carol.stop().await;
    let members = vec!["bob".to_string(), "carol".to_string()];
    alice.room(RoomRequest::Create { name: "team".into(), members }).await.expect("the room is made");
    alice.client.send_and_wait_to(Some("team".into()), "the plan is attached").await.unwrap();
    let source = write_file(&relay.tmp.path().join("plan.pdf"), FILE_SIZE);
    let transfer = alice.client.send_file_to(Some("team".into()), &source);
    let file_id = alice.uploaded(transfer).await;
    let too_big = write_file(&relay.tmp.path().join("video.mkv"), 2 << 20);
    let refused = alice.client.send_file_to(Some("team".into()), &too_big);
    assert!(alice.refused_transfer(refused).await.contains("at most 1.0 MiB"), "over the size limit");
    let (saved, failed) = bob.receive_all().await;
    assert_eq!((saved.len(), failed.len()), (1, 0), "{failed:?}");

    let status = status_when(&relay, "bob's fetch", |s| s.files.iter().any(|f| !f.fetched_by.is_empty())).await;
    assert!(status.relay.running);
    assert_eq!(status.relay.listen.as_deref(), Some(relay.addr.to_string().as_str()));
    // People and devices: alice and bob are online, from loopback; carol is not.
    let names: Vec<(&str, bool)> = status.users.iter().map(|u| (u.name.as_str(), u.online)).collect();
    assert_eq!(names, [("alice", true), ("bob", true), ("carol", false)]);
    assert_eq!(status.connections.len(), 2, "{:?}", status.connections);
    for connection in &status.connections {
        assert!(connection.from.starts_with("127.0.0.1:"), "{connection:?}");
        assert!(!connection.device.is_empty());
    }
    let alice_devices = &status.users[0].devices;
    assert_eq!(alice_devices.len(), 1);
    assert_eq!(alice_devices[0].connections, 1);
    // The room and its members.
    let team = status.rooms.iter().find(|r| r.name == "team").expect("the room is listed");
    assert_eq!(team.members, ["alice", "bob", "carol"]);
    assert_eq!(team.creator.as_deref(), Some("alice"));
    assert!(!team.direct);
    assert!(team.messages_kept >= 2, "the message and the file's sealed offer: {team:?}");
    // The file, by id, size, sender and recipients (its name is sealed).
    assert_eq!(status.files.len(), 1, "the refused upload left nothing: {:?}", status.files);
    let file = &status.files[0];
    assert_eq!(file.id, file_id.to_string());
    assert!(file.size > FILE_SIZE && file.size < FILE_SIZE + 4096, "sealed size {}", file.size);
    assert_eq!((file.sender.as_str(), file.room.as_str()), ("alice", "team"));
    assert_eq!(file.recipients, ["bob", "carol"]);
    assert_eq!(file.fetched_by, ["bob"]);
    assert_eq!(file.state, "fetched", "carol's device has not fetched it yet");
    let (created, expires) = (time_of(&file.created), time_of(&file.expires));
    let kept = expires - created - limits().expiry.as_millis() as i64;
    assert!((0..60_000).contains(&kept), "kept its expiry from the upload for carol, as the sweep does: {kept} ms off");
    assert_eq!(file.held, file.size);
    assert!(file.expires > file.created);
    assert_eq!(status.totals.files, 1);
    assert_eq!(status.totals.file_bytes, file.size);
    assert_eq!((status.totals.users, status.totals.connections, status.totals.devices), (3, 2, 3));
    assert_eq!((status.disk.spool_files, status.disk.spool_bytes), (1, file.size));
    assert!(status.disk.database_bytes > 0);

    // One JSON object on one line, sizes in bytes.
    let json = serde_json::to_string(&status).unwrap();
    assert!(!json.contains('\n'));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["files"][0]["size"].as_u64(), Some(file.size));
    assert_eq!(value["files"][0]["recipients"][1], "carol");
    assert_eq!(value["connections"][0]["from"].as_str().map(|f| f.starts_with("127.0.0.1:")), Some(true));
    assert_eq!(value["totals"]["rooms"].as_u64(), Some(status.rooms.len() as u64));
    let text = render(&status);
    assert!(text.contains("relay: running"), "{text}");
    assert!(text.contains(&file.id) && text.contains("from alice to bob, carol"), "{text}");
    assert!(!text.contains("plan.pdf"), "the relay cannot know file names");

    // Metrics: what happened, counted.
    let (head, body) = tokio::task::spawn_blocking(move || http_get(metrics, "/metrics")).await.unwrap();
    assert!(head.contains("200"), "{head}");
    assert_eq!(sample(&body, "qchat_connected"), Some(2.0), "{body}");
    assert_eq!(sample(&body, "qchat_connections_total"), Some(3.0), "alice, bob and carol once: {body}");
    assert_eq!(sample(&body, r#"qchat_transfers_total{kind="upload"}"#), Some(1.0), "{body}");
    assert_eq!(sample(&body, r#"qchat_transfers_total{kind="download"}"#), Some(1.0), "{body}");
    assert_eq!(sample(&body, r#"qchat_refusals_total{reason="upload"}"#), Some(1.0), "{body}");
    assert_eq!(sample(&body, "qchat_file_bytes_in_total"), Some(file.size as f64), "{body}");
    assert_eq!(sample(&body, "qchat_file_bytes_out_total"), Some(file.size as f64), "{body}");
    assert!(sample(&body, "qchat_messages_total").unwrap_or_default() >= 3.0, "{body}");
    assert_eq!(sample(&body, "qchat_spool_bytes"), Some(file.size as f64), "{body}");
    assert!(sample(&body, "qchat_store_commit_seconds_count").unwrap_or_default() > 0.0, "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "OpenMetrics text: {body}");
    let (head, _) = tokio::task::spawn_blocking(move || http_get(metrics, "/")).await.unwrap();
    assert!(head.contains("404"), "{head}");

    // Stopped, the relay still shows what it holds; nobody is connected.
    alice.stop().await;
    bob.stop().await;
    relay.stop().await;
    let status = status_of(&relay).await;
    assert!(!status.relay.running);
    assert!(status.connections.is_empty());
    assert!(status.users.iter().all(|u| !u.online));
    assert_eq!(status.files.len(), 1);
    assert!(!relay.data.join("relay.sock").exists(), "the socket goes with the relay");
}

#[tokio::test]
async fn status_of_a_data_directory_without_a_relay_database_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = qchat_server::admin::Dirs { pki: tmp.path().join("pki"), data: tmp.path().join("data") };
    let err = gather(&dirs, &RelayLimits::default()).unwrap_err().to_string();
    assert!(err.contains("no relay database"), "{err}");
}

#[tokio::test]
async fn a_second_relay_on_the_same_data_directory_is_refused_and_the_first_serves_on() {
    let relay = TestRelay::start().await;
    let config = qchat_server::RelayConfig::new(relay.pki.clone(), relay.data.clone(), "127.0.0.1:0".parse().unwrap());
    let Err(err) = qchat_server::Relay::start(config).await else { panic!("two relays on one database") };
    assert!(err.to_string().contains("another relay runs on this data directory"), "{err}");
    let mut alice = relay.client("alice");
    alice.connected().await;
    assert!(status_of(&relay).await.relay.running, "the first one still answers status");
}
