//! The `qchat-server` binary: first start makes a demo PKI and prints the client command
//! lines; SIGTERM stops it within 5 seconds.

use std::io::{BufRead, BufReader, Read};
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

/// Starts `qchat-server ARGS` and reads its stdout up to "listening on"; returns the child
/// and what it printed.
fn start_server(args: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qchat-server"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.starts_with("listening on");
        seen.push(line);
        if done {
            break;
        }
    }
    (child, seen.join("\n"))
}

#[test]
fn a_config_file_sets_every_flag_flags_win_and_its_errors_name_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (file_port, flag_port) = (free_udp_port(), free_udp_port());
    let config = tmp.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "# the relay of the test\ndata = {:?}\nlisten = \"127.0.0.1:{file_port}\"\nlog_format = \"json\"\nmax_file_size = \"1G\"\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let (ok, out, err) = server(&["check-config".into(), "--config".into(), config.to_str().unwrap().into()]);
    assert!(ok, "{err}");
    assert!(out.ends_with(": ok\n"), "{out}");

    // The file gives the data directory and the log format; the flag's address wins.
    let (mut child, printed) =
        start_server(&["--config", config.to_str().unwrap(), "--listen", &format!("127.0.0.1:{flag_port}")]);
    assert!(printed.contains(&format!("listening on udp 127.0.0.1:{flag_port}")), "{printed}");
    assert!(data.join("relay.db").exists(), "the data directory of the file");
    let config_arg = config.to_str().unwrap().to_string();
    let (ok, out, err) = server(&["status".into(), "--config".into(), config_arg.clone(), "--json".into()]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "one JSON line: {out}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["relay"]["running"], true);
    assert_eq!(status["relay"]["listen"], format!("127.0.0.1:{flag_port}"));
    assert_eq!(status["users"][0]["name"], "alice");
    let (ok, out, _) = server(&["status".into(), "--config".into(), config_arg]);
    assert!(ok && out.starts_with("relay: running"), "{out}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    let mut logs = String::new();
    child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    assert!(!logs.is_empty());
    for line in logs.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(event["level"].is_string() && event["fields"].is_object(), "{line}");
    }
    assert!(logs.contains("relay listening"), "{logs}");
    assert!(!logs.contains('\x1b'), "no colour codes into a pipe");

    // Mistakes: each named with the file and its line, and the relay does not start.
    for (text, line, says) in [
        ("data = \"/tmp\"\nmax_transfer = 3\n", 2, "unknown field `max_transfer`"),
        ("\n\nretention_days = \"a week\"\n", 3, "invalid type: string"),
        ("quota = \"a lot\"\n", 1, "not a size"),
        ("listen = [1, 2\n", 1, ""),
        ("max_transfers_per_user = 0\n", 1, "at least 1"),
    ] {
        std::fs::write(&config, text).unwrap();
        let (ok, out, err) = server(&["check-config".into(), "--config".into(), config.to_str().unwrap().into()]);
        assert!(!ok, "{text:?} accepted: {out}");
        let expected = format!("{}:{line}: ", config.display());
        assert!(err.starts_with(&expected) && err.contains(says), "{text:?}: {err}");
        let (ok, _, run_err) = server(&["--config".into(), config.to_str().unwrap().into()]);
        assert!(!ok && run_err.starts_with(&expected), "the relay refuses it too: {run_err}");
    }
    let (ok, _, err) = server(&["check-config".into(), "--config".into(), "/nowhere/server.toml".into()]);
    assert!(!ok && err.starts_with("/nowhere/server.toml: "), "{err}");
}
