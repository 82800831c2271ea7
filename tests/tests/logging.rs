//! At the default log level the relay and the clients never log message text or keys, and
//! the relay cannot log a file's name (it travels encrypted).

use std::io::Write;
use std::sync::{Arc, Mutex};

use qchat_tests::{write_file, TestRelay};

/// Collects everything logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_message_text_or_key_is_logged_at_the_default_level() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let relay = TestRelay::start().await;
    let mut alice = relay.client("alice");
    let mut bob = relay.client("bob");
    alice.connected().await;
    bob.connected().await;
    alice.client.send_and_wait("the secret plan is at 5pm").await.unwrap();
    bob.messages(1).await;
    let transfer = alice.client.send_file(write_file(&relay.tmp.path().join("notes\x1b[2J.txt"), 100));
    alice.uploaded(transfer).await;
    qchat_certs::revoke(&relay.pki, "bob").unwrap();
    bob.refused().await;

    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(log.contains("relay listening"), "the log was captured: {log}");
    assert!(!log.contains("secret plan"), "message text in the log");
    assert!(!log.contains("PRIVATE KEY") && !log.contains("BEGIN"), "key material in the log");
    assert!(!log.contains('\x1b'), "a raw escape sequence in the log");
    assert!(!log.contains("notes"), "the file's name travels encrypted: the relay cannot log it: {log}");
}
