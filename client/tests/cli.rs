//! `qchat-cli` against a real relay: one-shot send, listen with acknowledgement, status,
//! JSON events, and clear failures.

use std::process::Command;

use qchat_server::{Relay, RelayConfig};
use serde_json::Value;

struct Setup {
    relay: Relay,
    tmp: tempfile::TempDir,
}

async fn setup() -> Setup {
    setup_with(&["alice", "bob"]).await
}

/// A relay whose PKI issued `people`.
async fn setup_with(people: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    qchat_certs::init(&pki, &["127.0.0.1".into()]).unwrap();
    for name in people {
        qchat_certs::issue_user(&pki, name, "127.0.0.1:21567").unwrap();
    }
    let config = RelayConfig::new(pki, tmp.path().join("data"), "127.0.0.1:0".parse().unwrap());
    Setup { relay: Relay::start(config).await.unwrap(), tmp }
}

impl Setup {
    /// qchat-cli as `user` on this relay, with `--json`.
    fn command(&self, user: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_qchat-cli"));
        command
            .arg("--identity")
            .arg(self.tmp.path().join("pki").join(format!("{user}.qchat")))
            .args(["--server", &self.relay.local_addr().to_string(), "--json", "--data-dir"])
            .arg(self.tmp.path().join("clients"))
            .args(args);
        command
    }

    /// Runs qchat-cli as `user` with `--json` on a blocking thread; returns exit success and
    /// the JSON events.
    async fn cli(&self, user: &str, args: &[&str]) -> (bool, Vec<Value>) {
        let mut command = self.command(user, args);
        let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
        let events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect();
        (out.status.success(), events)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn send_then_listen_prints_json_and_acknowledges() {
    let setup = setup().await;
    let (ok, events) = setup.cli("alice", &["send", "hello", "bob"]).await;
    assert!(ok, "{events:?}");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "stored");
    let id = events[0]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    setup.cli("alice", &["send", "second"]).await;

    let (ok, events) = setup.cli("bob", &["status"]).await;
    assert!(ok);
    assert_eq!(events[0]["event"], "status");
    assert_eq!(events[0]["waiting_for_you"], 2, "status does not take delivery");
    assert_eq!(events[0]["peer"], "alice");

    let (ok, events) = setup.cli("bob", &["listen", "--count", "2", "--timeout", "20"]).await;
    assert!(ok, "{events:?}");
    let messages: Vec<&Value> = events.iter().filter(|e| e["event"] == "message").collect();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["id"], id.as_str());
    assert_eq!(messages[0]["from"], "alice");
    assert_eq!(messages[0]["text"], "hello bob");
    assert_eq!(messages[1]["text"], "second");
    let time = messages[0]["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.contains('T'), "RFC 3339 UTC: {time}");

    // Acknowledged: they do not come again.
    let (ok, events) = setup.cli("bob", &["listen", "--count", "1", "--timeout", "2"]).await;
    assert!(!ok, "nothing more to hear: {events:?}");
    assert_eq!(events.last().unwrap()["event"], "error");
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_are_made_named_and_checked_from_the_command_line() {
    let setup = setup_with(&["alice", "bob", "carol", "dave"]).await;
    let (ok, events) = setup.cli("alice", &["send", "hi"]).await;
    assert!(!ok, "three others and no room: one must be named");
    assert!(events[0]["message"].as_str().unwrap().contains("--to USER"), "{events:?}");

    let (ok, events) = setup.cli("alice", &["rooms", "create", "team", "--members", "bob,carol"]).await;
    assert!(ok, "{events:?}");
    assert_eq!(events[0]["event"], "room");
    assert_eq!(events[0]["room"]["name"], "team");
    assert_eq!(events[0]["room"]["creator"], "alice");
    let (ok, events) = setup.cli("alice", &["send", "--room", "team", "standup", "at", "ten"]).await;
    assert!(ok, "{events:?}");
    assert_eq!((events[0]["event"].as_str(), events[0]["room"].as_str()), (Some("stored"), Some("team")));
    let (ok, _) = setup.cli("alice", &["send", "psst"]).await;
    assert!(ok, "her only room is the default");
    let (ok, events) = setup.cli("dave", &["send", "--to", "bob", "hello bob"]).await;
    assert!(ok, "{events:?}");
    assert_eq!(events[0]["room"], "bob+dave", "the direct room, made on first use");

    let (ok, events) = setup.cli("bob", &["rooms", "list"]).await;
    assert!(ok);
    let names: Vec<&str> = events[0]["rooms"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bob+dave", "team"]);
    let (ok, events) = setup.cli("bob", &["listen", "--room", "team", "--count", "2", "--timeout", "20"]).await;
    assert!(ok, "{events:?}");
    let texts: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["event"] == "message")
        .map(|e| (e["room"].as_str().unwrap(), e["text"].as_str().unwrap()))
        .collect();
    assert_eq!(texts, [("team", "standup at ten"), ("team", "psst")]);
    assert!(events.iter().any(|e| e["event"] == "room_changed" && e["change"] == "created"), "{events:?}");

    // Naming a room one is not in fails at once, with an error event.
    for args in [&["listen", "--room", "team"][..], &["send", "--room", "team", "x"], &["files", "--room", "nope"]] {
        let (ok, events) = setup.cli("dave", args).await;
        assert!(!ok, "{args:?}");
        let last = events.last().unwrap();
        assert_eq!(last["event"], "error");
        assert!(last["message"].as_str().unwrap().contains("not in a room named"), "{events:?}");
    }
    let (ok, events) = setup.cli("bob", &["rooms", "add", "team", "dave"]).await;
    assert!(!ok);
    assert!(events[0]["message"].as_str().unwrap().contains("only alice"), "{events:?}");
    let (ok, _) = setup.cli("alice", &["rooms", "add", "team", "dave"]).await;
    assert!(ok);
    let (ok, events) = setup.cli("alice", &["rooms", "remove", "team", "carol"]).await;
    assert!(ok);
    let members: Vec<&str> =
        events[0]["room"]["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
    assert_eq!(members, ["alice", "bob", "dave"]);
    let (ok, events) = setup.cli("bob", &["rooms", "leave", "team"]).await;
    assert!(ok, "{events:?}");
    let (_, events) = setup.cli("bob", &["rooms", "list"]).await;
    assert_eq!(events[0]["rooms"].as_array().unwrap().len(), 1, "only the direct room is left");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_exit_non_zero_with_a_reason() {
    let setup = setup().await;
    let (ok, events) = setup.cli("alice", &["send", &"x".repeat(qchat_shared::limits::MAX_TEXT + 1)]).await;
    assert!(!ok);
    assert!(events[0]["message"].as_str().unwrap().contains("limit"), "{events:?}");

    let broken = setup.tmp.path().join("broken.qchat");
    std::fs::write(&broken, "server = x:1\nuser = alice\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qchat-cli"))
        .arg("--identity")
        .arg(&broken)
        .args(["send", "hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("identity file is not valid"));
}

#[tokio::test(flavor = "multi_thread")]
async fn send_file_and_receive_print_the_documented_json_events() {
    let setup = setup().await;
    let source = setup.tmp.path().join("report.pdf");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&source, &bytes).unwrap();
    let (ok, events) = setup.cli("alice", &["send-file", source.to_str().unwrap()]).await;
    assert!(ok, "{events:?}");
    let uploaded = events.iter().find(|e| e["event"] == "uploaded").expect("an uploaded event");
    assert_eq!(uploaded["name"], "report.pdf");
    assert_eq!(uploaded["size"], 3_000_000);
    let blake3 = uploaded["blake3"].as_str().unwrap().to_string();
    assert_eq!(blake3, blake3::hash(&bytes).to_hex().as_str());
    let progress = events.iter().rfind(|e| e["event"] == "progress").expect("progress events");
    assert_eq!(progress["done"], progress["total"]);

    let (ok, events) = setup.cli("bob", &["files"]).await;
    assert!(ok);
    assert_eq!(events[0]["incoming"][0]["name"], "report.pdf");
    assert_eq!(events[0]["incoming"][0]["state"], "offered");

    let out = setup.tmp.path().join("inbox");
    let (ok, events) = setup.cli("bob", &["receive", "--out", out.to_str().unwrap()]).await;
    assert!(ok, "{events:?}");
    let saved = events.iter().find(|e| e["event"] == "file_saved").expect("a file_saved event");
    assert_eq!(saved["blake3"], blake3.as_str());
    assert_eq!(std::fs::read(out.join("report.pdf")).unwrap(), bytes);

    // Nothing left to receive: success with nothing to do.
    let (ok, events) = setup.cli("bob", &["receive", "--out", out.to_str().unwrap()]).await;
    assert!(ok, "{events:?}");
    assert!(events.iter().any(|e| e["event"] == "receiving" && e["count"] == 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn receive_killed_with_sigkill_resumes_from_its_partial_file() {
    let setup = setup().await;
    let size = 96usize << 20;
    let source = setup.tmp.path().join("big.bin");
    std::fs::write(&source, (0..size).map(|i| (i % 253) as u8).collect::<Vec<_>>()).unwrap();
    let (ok, events) = setup.cli("alice", &["send-file", source.to_str().unwrap()]).await;
    assert!(ok, "{events:?}");

    let out = setup.tmp.path().join("inbox");
    let mut child = setup
        .command("bob", &["receive", "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stats = setup.relay.stats();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stats.download_bytes.load(std::sync::atomic::Ordering::Relaxed) < size as u64 / 3 {
        assert!(std::time::Instant::now() < deadline, "the download never got going");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!out.join("big.bin").exists(), "nothing under the final name yet");

    let (ok, events) = setup.cli("bob", &["receive", "--out", out.to_str().unwrap()]).await;
    assert!(ok, "{events:?}");
    let resumed = events.iter().find(|e| e["event"] == "resumed").expect("a resumed event");
    assert!(resumed["offset"].as_u64().unwrap() > 0);
    assert!(std::fs::read(out.join("big.bin")).unwrap() == std::fs::read(&source).unwrap());
}

/// How many files wait for bob in the listing test (the relay's default cap on waiting
/// files is 10,000). A listing of them all once broke the 64 KiB frame limit after 400.
const WAITING_FILES: usize = 5000;

#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_waiting_files_are_listed_in_pages_and_all_received() {
    let setup = setup().await;
    let sources = setup.tmp.path().join("many");
    std::fs::create_dir_all(&sources).unwrap();
    let identity = qchat_shared::identity::Identity::load(&setup.tmp.path().join("pki").join("alice.qchat")).unwrap();
    let mut options = qchat_client::ClientOptions::new(identity);
    options.server = Some(setup.relay.local_addr().to_string());
    options.data_dir = Some(setup.tmp.path().join("clients"));
    let (alice, mut events) = qchat_client::Client::start(options);
    // Names of about 190 characters, as in the report; sizes 0 and 1 byte.
    for i in 0..WAITING_FILES {
        let path = sources.join(format!("{i:05}-{}.txt", "n".repeat(180)));
        std::fs::write(&path, if i % 2 == 0 { &b""[..] } else { &b"x"[..] }).unwrap();
        alice.send_file(path);
    }
    let mut uploaded = 0;
    while uploaded < WAITING_FILES {
        match tokio::time::timeout(std::time::Duration::from_secs(120), events.recv()).await {
            Ok(Some(qchat_client::Event::Uploaded { .. })) => uploaded += 1,
            Ok(Some(qchat_client::Event::TransferFailed { reason, .. })) => panic!("upload failed: {reason}"),
            Ok(Some(_)) => {}
            other => panic!("uploads stopped after {uploaded}: {other:?}"),
        }
    }
    alice.shutdown();

    let (ok, events) = setup.cli("bob", &["files"]).await;
    assert!(ok, "{:?}", events.last());
    let pages: Vec<&Value> = events.iter().filter(|e| e["event"] == "files").collect();
    assert!(pages.len() > 1, "a listing this long comes in pages");
    let listed: std::collections::HashSet<&str> = pages
        .iter()
        .flat_map(|page| page["incoming"].as_array().unwrap())
        .map(|entry| entry["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), WAITING_FILES, "every waiting file, once");
    assert_eq!(pages.last().unwrap()["last"], true);

    let out = setup.tmp.path().join("inbox");
    let (ok, events) = setup.cli("bob", &["receive", "--out", out.to_str().unwrap(), "--timeout", "300"]).await;
    assert!(ok, "{:?}", events.last());
    assert_eq!(events.iter().filter(|e| e["event"] == "file_saved").count(), WAITING_FILES);
    let saved = std::fs::read_dir(&out).unwrap().filter(|e| e.as_ref().unwrap().path().is_file()).count();
    assert_eq!(saved, WAITING_FILES);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_cannot_write_to_the_terminal() {
    let setup = setup().await;
    let hostile = "\x1b[2J\x1b]0;pwned\x07 look: \u{202E}txt.exe";
    let (ok, _) = setup.cli("alice", &["send", hostile]).await;
    assert!(ok);
    let mut command = Command::new(env!("CARGO_BIN_EXE_qchat-cli"));
    command
        .arg("--identity")
        .arg(setup.tmp.path().join("pki").join("bob.qchat"))
        .args(["--server", &setup.relay.local_addr().to_string(), "--data-dir"])
        .arg(setup.tmp.path().join("clients"))
        .args(["listen", "--count", "1", "--timeout", "20"]);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(!shown.contains('\x1b') && !shown.contains('\x07') && !shown.contains('\u{202E}'), "{shown:?}");
    assert!(shown.contains("\\u{1b}[2J\\u{1b}]0;pwned\\u{7} look: \\u{202e}txt.exe"), "{shown:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn receive_wait_takes_each_file_as_it_is_offered_and_ends_cleanly_on_sigterm() {
    let setup = setup().await;
    let out = setup.tmp.path().join("inbox");
    let mut child = setup
        .command("bob", &["receive", "--wait", "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Two files sent one after the other while bob waits: each is saved without a new
    // command.
    for (name, size) in [("first.bin", 3 << 20), ("second.bin", 1)] {
        let source = setup.tmp.path().join(name);
        std::fs::write(&source, (0..size).map(|i| (i % 251) as u8).collect::<Vec<_>>()).unwrap();
        let (ok, events) = setup.cli("alice", &["send-file", source.to_str().unwrap()]).await;
        assert!(ok, "{events:?}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::read(out.join(name)).ok() != Some(std::fs::read(&source).unwrap()) {
            assert!(std::time::Instant::now() < deadline, "{name} was not received while waiting");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // SIGTERM: a clean stop, exit 0.
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stdout = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        (status, stdout)
    })
    .await
    .unwrap();
    assert!(output.0.success(), "receive --wait exits 0 on SIGTERM: {:?}", output.0);
    let events: Vec<Value> = output.1.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let saved = events.iter().filter(|e| e["event"] == "file_saved").count();
    assert_eq!(saved, 2, "{events:?}");
    assert!(events.iter().any(|e| e["event"] == "file_offered" && e["arriving"].is_boolean()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_device_joins_with_a_linked_invite_and_lists_its_devices() {
    let setup = setup().await;
    let (ok, events) = setup.cli("alice", &["devices", "link"]).await;
    assert!(ok, "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "invite");
    let line = last["invite"].as_str().unwrap().to_string();

    // Without --json too, the invite is the last line.
    let text = setup.command("alice", &["devices", "link"]);
    let args: Vec<String> =
        text.get_args().map(|a| a.to_string_lossy().into_owned()).filter(|a| a != "--json").collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qchat-cli")).args(&args).output().unwrap();
    let last_line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    assert!(qchat_shared::invite::Invite::parse(&last_line).is_ok(), "{last_line:?}");

    // `join` needs no identity: it makes one.
    let out_file = setup.tmp.path().join("alice-laptop.qchat");
    let join = std::process::Command::new(env!("CARGO_BIN_EXE_qchat-cli"))
        .args(["--json", "join", &line, "--name", "laptop", "--out"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(join.status.success(), "{}", String::from_utf8_lossy(&join.stdout));
    let joined: Value = serde_json::from_str(String::from_utf8_lossy(&join.stdout).lines().last().unwrap()).unwrap();
    assert_eq!((joined["event"].as_str(), joined["user"].as_str()), (Some("joined"), Some("alice")));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let written = std::fs::read_to_string(&out_file).unwrap();
    assert!(written.contains("PRIVATE KEY"), "the identity file holds the device's own key");
    // The same invite again: refused in those words, and the file is not touched.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_qchat-cli"))
        .args(["join", &line, "--out"])
        .arg(setup.tmp.path().join("other.qchat"))
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already used"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let over = std::process::Command::new(env!("CARGO_BIN_EXE_qchat-cli"))
        .args(["join", &line, "--out"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(!over.status.success() && String::from_utf8_lossy(&over.stderr).contains("exists already"));
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), written);

    let laptop = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_qchat-cli"));
        command.arg("--identity").arg(&out_file).arg("--data-dir").arg(setup.tmp.path().join("clients"));
        command.args(["--server", &setup.relay.local_addr().to_string(), "--json"]).args(args);
        command
    };
    let mut list = laptop(&["devices", "list"]);
    let out = tokio::task::spawn_blocking(move || list.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "devices");
    let devices = events[0]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2, "alice's identity file and the laptop: {devices:?}");
    let current: Vec<&Value> = devices.iter().filter(|d| d["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["name"], "laptop");
    for key in ["id", "name", "enrolled", "last_seen", "current"] {
        assert!(devices.iter().all(|d| d.get(key).is_some()), "{key} in {devices:?}");
    }

    // Alice revokes the laptop from her first device: it is refused from then on.
    let laptop_id = current[0]["id"].as_str().unwrap().to_string();
    let (ok, events) = setup.cli("alice", &["devices", "revoke", &laptop_id]).await;
    assert!(ok, "{events:?}");
    assert_eq!(events.last().unwrap()["event"], "device_revoked");
    let mut status = laptop(&["status"]);
    let out = tokio::task::spawn_blocking(move || status.output().unwrap()).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"), "{}", String::from_utf8_lossy(&out.stdout));
}
