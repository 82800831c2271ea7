//! The relay killed with SIGKILL at random moments during uploads, downloads and chat,
//! and restarted on the same data: nothing acknowledged is lost or doubled, the file
//! arrives verified, the database is sound, and spool and records agree.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qchat_client::{ClientOptions, Event};
use qchat_shared::frame::MessageId;
use qchat_shared::identity::Identity;
use qchat_tests::{write_file, TestClient};
use rand::Rng;

const KILLS: usize = 20;

struct RelayProcess {
    child: Child,
}

impl RelayProcess {
    fn start(pki: &Path, data: &Path, port: u16) -> RelayProcess {
        for _ in 0..50 {
            let mut child = Command::new(env!("CARGO_BIN_EXE_relay-for-tests"))
                .arg(pki)
                .arg(data)
                .arg(format!("127.0.0.1:{port}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            if line.starts_with("listening on") {
                return RelayProcess { child };
            }
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the relay would not start again");
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn client(pki: &Path, name: &str, port: u16, dir: &Path) -> TestClient {
    let mut options = ClientOptions::new(Identity::load(&pki.join(format!("{name}.qchat"))).unwrap());
    options.server = Some(format!("127.0.0.1:{port}"));
    options.data_dir = Some(dir.join("clients"));
    options.download_dir = Some(dir.join("downloads").join(name));
    let mut client = TestClient::start(options);
    client.patience = Duration::from_secs(120);
    client
}

#[derive(Default)]
struct BobSaw {
    messages: Vec<MessageId>,
    saved: Option<PathBuf>,
    failures: Vec<String>,
    notices: Vec<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_killed_twenty_times_loses_nothing() {
    qchat_tests::init_logging();
    let tmp = tempfile::tempdir().unwrap();
    let (pki, data) = (tmp.path().join("pki"), tmp.path().join("data"));
    qchat_certs::init(&pki, &["127.0.0.1".into()]).unwrap();
    for name in ["alice", "bob"] {
        qchat_certs::issue_user(&pki, name, "127.0.0.1:1").unwrap();
    }
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut relay = RelayProcess::start(&pki, &data, port);
    let mut alice = client(&pki, "alice", port, tmp.path());
    let mut bob = client(&pki, "bob", port, tmp.path());
    alice.connected().await;
    bob.connected().await;

    // Bob takes everything that comes, and fetches every file offered.
    let saw = Arc::new(Mutex::new(BobSaw::default()));
    let bob_saw = saw.clone();
    let bob_task = tokio::spawn(async move {
        while let Some(event) = bob.events.recv().await {
            let mut saw = bob_saw.lock().unwrap();
            match event {
                Event::Message(m) => saw.messages.push(m.id),
                Event::FileOffered(_) => bob.client.receive_all(None),
                Event::FileSaved { path, .. } => saw.saved = Some(path),
                Event::TransferFailed { reason, .. } => saw.failures.push(reason),
                Event::Notice { text, .. } => saw.notices.push(text),
                _ => {}
            }
        }
    });

    // Alice chats without pause and sends a file, whatever happens to the relay.
    let path = write_file(&tmp.path().join("through-crashes.bin"), 160 << 20);
    let upload = alice.client.send_file(&path);
    let stop = Arc::new(AtomicBool::new(false));
    let (sender, stop_sender) = (alice.client.clone(), stop.clone());
    let chat = tokio::spawn(async move {
        let mut stored = Vec::new();
        while !stop_sender.load(Ordering::Relaxed) {
            let sent =
                tokio::time::timeout(Duration::from_secs(60), sender.send_and_wait(format!("m{}", stored.len())));
            stored.push(sent.await.expect("stored within a minute").expect("stored").id);
        }
        stored
    });

    for _ in 0..KILLS {
        let wait = rand::thread_rng().gen_range(200..1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        relay.kill();
        relay = RelayProcess::start(&pki, &data, port);
    }
    stop.store(true, Ordering::Relaxed);
    let stored = chat.await.unwrap();
    alice.uploaded(upload).await;

    // Everything acknowledged as stored reaches bob, exactly once; the file arrives intact.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        {
            let saw = saw.lock().unwrap();
            let got: HashSet<_> = saw.messages.iter().copied().collect();
            assert_eq!(got.len(), saw.messages.len(), "a message was shown twice");
            assert!(saw.failures.is_empty(), "{:?}", saw.failures);
            if let Some(saved) = saw.saved.as_ref().filter(|_| stored.iter().all(|id| got.contains(id))) {
                qchat_tests::same_content(saved, &path);
                break;
            }
            let missing = stored.iter().filter(|id| !got.contains(id)).count();
            assert!(
                std::time::Instant::now() < deadline,
                "not everything arrived: {missing} of {} messages missing, file saved: {}, notices: {:?}",
                stored.len(),
                saw.saved.is_some(),
                saw.notices
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored.len() > KILLS, "chat went on between the kills ({} messages)", stored.len());
    eprintln!("survived {KILLS} kills: {} messages stored and delivered once, a 160 MiB file verified", stored.len());
    bob_task.abort();
    relay.kill();

    let db = rusqlite::Connection::open(data.join("relay.db")).unwrap();
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let rows: i64 = db.query_row("SELECT COUNT(*) FROM messages WHERE kind = 0", [], |r| r.get(0)).unwrap();
    // And the file's encrypted offer, a message of its own.
    assert_eq!(rows as usize, stored.len() + 1, "each message stored once");

    // A fresh start cleans the spool (before it says it listens): every body has its
    // record and every record its body.
    let relay = RelayProcess::start(&pki, &data, port);
    let mut held: Vec<String> = db
        .prepare("SELECT lower(hex(id)) FROM files WHERE swept_ms IS NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut spooled: Vec<String> =
        std::fs::read_dir(data.join("spool")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    held.sort();
    spooled.sort();
    assert_eq!(spooled, held);
    relay.kill();
}
