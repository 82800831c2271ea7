//! The `qchat-server` binary: first start makes a demo PKI and prints the client command
//! lines; SIGTERM stops it within 5 seconds.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn first_start_makes_a_demo_pki_prints_client_commands_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_udp_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_qchat-server"))
        .args(["--data", data.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("listening on");
        seen.push(line);
        if done {
            break;
        }
    }
    let text = seen.join("\n");
    for name in ["alice", "bob"] {
        let identity = data.join("pki").join(format!("{name}.qchat"));
        assert!(identity.exists(), "{name}'s identity file");
        assert!(text.contains(&format!("--identity {}", identity.display())), "{text}");
        let written = qchat_shared::identity::Identity::load(&identity).unwrap();
        assert_eq!(written.server, format!("127.0.0.1:{port}"));
    }

    let started = Instant::now();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "clean exit, got {status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still running 5 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A second start finds the PKI and keeps it.
    let before = std::fs::read(data.join("pki").join("ca.pem")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qchat-server"))
        .args(["--pki", tmp.path().join("nowhere").to_str().unwrap(), "--data", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("qchat-certs init"), "a missing --pki says how to make one");
    assert_eq!(std::fs::read(data.join("pki").join("ca.pem")).unwrap(), before);
}
