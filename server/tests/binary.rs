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

/// Runs `qchat-server ARGS`; returns success, stdout and stderr.
fn server(args: &[String]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qchat-server")).args(args).env("RUST_LOG", "info").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn the_operator_invites_lists_and_revokes_with_subcommands_that_print_only_their_result() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, data) = (tmp.path().join("pki"), tmp.path().join("data"));
    qchat_certs::init(&pki, &["chat.example.org".into()]).unwrap();
    let dirs = ["--pki", pki.to_str().unwrap(), "--data", data.to_str().unwrap()];
    let with = |head: &[&str]| -> Vec<String> { head.iter().chain(&dirs).map(|s| s.to_string()).collect() };

    // Without --server the invite names the relay certificate's first host and the default port.
    let (ok, out, _) = server(&with(&["invite", "alice", "--expires", "1h"]));
    assert!(ok, "{out}");
    let line = out.lines().last().unwrap();
    let invite = qchat_shared::invite::Invite::parse(line).unwrap();
    assert_eq!(invite.server, "chat.example.org:21567");
    assert_eq!(invite.ca_fingerprint, qchat_certs::ca_fingerprint(&pki).unwrap());
    let (ok, out, _) = server(&with(&["invite", "alice", "--server", "10.0.0.1:4000"]));
    assert!(ok);
    assert!(out.lines().last().unwrap().starts_with("qchat-invite:10.0.0.1:4000:"), "{out}");
    let (ok, _, err) = server(&with(&["invite", "Not A Name"]));
    assert!(!ok && err.contains("name"), "{err}");

    // Any number of people: a third is invited like the first two.
    qchat_certs::issue_user(&pki, "alice", "h:1").unwrap();
    qchat_certs::issue_user(&pki, "bob", "h:1").unwrap();
    let (ok, out, _) = server(&with(&["invite", "carol"]));
    assert!(ok && out.contains("carol (a new person)"), "{out}");
    let (ok, out, _) = server(&with(&["invite", "bob"]));
    assert!(ok && out.contains("another device of bob"), "{out}");

    let (ok, out, _) = server(&with(&["users"]));
    assert!(ok);
    assert_eq!(out, "alice\t0 devices\nbob\t0 devices\n", "stdout holds the result and nothing else");
    let (ok, out, _) = server(&with(&["devices"]));
    assert!(ok && out.contains("no devices yet"), "{out}");

    let (ok, out, _) = server(&with(&["revoke", "bob"]));
    assert!(ok, "{out}");
    assert!(out.contains("the qchat-certs identity") && out.contains("1 open invite"), "{out}");
    let revoked = std::fs::read_to_string(pki.join("revoked")).unwrap();
    assert!(revoked.starts_with("bob "), "one CRL with qchat-certs revoke: {revoked}");
    let (ok, _, err) = server(&with(&["revoke", "bob"]));
    assert!(!ok && err.contains("not revoked already"), "{err}");
    let (ok, _, err) = server(&with(&["revoke", "alice", "nosuchid"]));
    assert!(!ok && err.contains("no device"), "{err}");
}
