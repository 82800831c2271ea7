//! Who gets in: certificates from another CA, revoked users, a third person, the wrong
//! protocol version, an unreachable relay.

use qchat_shared::identity::Identity;
use qchat_tests::TestRelay;

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_with_a_reason() {
    let relay = TestRelay::start().await;
    let other = tempfile::tempdir().unwrap();
    qchat_certs::init(other.path(), &["localhost".into()]).unwrap();
    let path = qchat_certs::issue_user(other.path(), "alice", "127.0.0.1:1").unwrap();
    let foreign = Identity::load(&path).unwrap();
    // It trusts our relay (our CA), but its own certificate is from the other CA.
    let identity = Identity { ca_pem: relay.identity("alice").ca_pem, ..foreign };
    let mut client = relay.client_for(identity);
    let reason = client.refused().await;
    assert!(reason.contains("another CA"), "{reason}");
}

#[tokio::test]
async fn a_relay_from_another_ca_is_refused_by_the_client() {
    let relay = TestRelay::start().await;
    let other = tempfile::tempdir().unwrap();
    qchat_certs::init(other.path(), &["localhost".into()]).unwrap();
    let mut identity = relay.identity("alice");
    identity.ca_pem = std::fs::read_to_string(other.path().join("ca.pem")).unwrap();
    let reason = relay.client_for(identity).refused().await;
    assert!(reason.contains("not the one in your identity file"), "{reason}");
}

#[tokio::test]
async fn a_revoked_user_is_refused_without_a_relay_restart() {
    let relay = TestRelay::start().await;
    let mut live_bob = relay.client("bob");
    live_bob.connected().await;
    qchat_certs::revoke(&relay.pki, "bob").unwrap();
    // The live connection is closed, and the client does not retry.
    let reason = live_bob.refused().await;
    assert!(reason.contains("revoked"), "{reason}");
    // The relay checks the PKI directory twice a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut bob = relay.client("bob");
        let refused = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                match bob.events.recv().await {
                    Some(qchat_client::Event::Connection(qchat_client::ConnectionState::Refused { reason })) => {
                        return Some(reason)
                    }
                    Some(qchat_client::Event::Connection(qchat_client::ConnectionState::Connected(_))) | None => {
                        return None
                    }
                    _ => {}
                }
            }
        })
        .await
        .ok()
        .flatten();
        if let Some(reason) = refused {
            assert!(reason.contains("revoked"), "{reason}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "bob still gets in after revocation");
        bob.client.shutdown();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Alice is not affected.
    relay.client("alice").connected().await;
}

#[tokio::test]
async fn a_third_user_the_pki_issues_is_served_and_there_is_no_single_peer_any_more() {
    let relay = TestRelay::start().await;
    let mut carol = relay.client_for(relay.issue("carol"));
    let status = carol.connected().await;
    assert_eq!((status.other_users, status.peer), (2, None));
    let refused = carol.client.send_and_wait("to whom?").await.unwrap_err();
    assert!(refused.to_string().contains("write to a person (--to USER) or make a room"), "{refused}");
}

#[tokio::test]
async fn a_client_of_the_version_before_rooms_is_told_to_update() {
    let relay = TestRelay::start().await;
    let identity = relay.identity("alice");
    let crypto = qchat_shared::tls::client_crypto_with_alpn(&identity, b"qchat/4").unwrap();
    let config = qchat_shared::transport::client_config(crypto).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let err = endpoint.connect_with(config, relay.addr, "localhost").unwrap().await.unwrap_err();
    let ending = qchat_client::refusal::explain(&err, "alice", &relay.addr.to_string());
    assert!(ending.fatal);
    assert!(ending.reason.contains("another version"), "{}", ending.reason);
    assert!(ending.reason.contains("update the client"), "{}", ending.reason);
}

#[tokio::test]
async fn an_unreachable_relay_is_named_in_the_error() {
    let mut relay = TestRelay::start().await;
    let addr = relay.addr;
    relay.stop().await;
    let mut alice = relay.client("alice");
    let reason = alice
        .expect("a reconnect notice", |e| match e {
            qchat_client::Event::Connection(qchat_client::ConnectionState::Reconnecting { reason, .. }) => Some(reason),
            _ => None,
        })
        .await;
    assert!(reason.contains(&addr.to_string()), "{reason}");
}

#[tokio::test]
async fn an_expired_certificate_is_refused_with_a_reason() {
    let relay = TestRelay::start().await;
    let now = time::OffsetDateTime::now_utc();
    let expired = qchat_certs::UserOptions {
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
    };
    let carol = qchat_certs::issue_user_with(&relay.pki, "carol", &relay.addr.to_string(), &expired).unwrap();
    let mut carol = relay.client_for(Identity::load(&carol).unwrap());
    let reason = carol.refused().await;
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test]
async fn a_chat_connection_without_a_certificate_is_refused_with_a_reason() {
    let relay = TestRelay::start().await;
    let identity = relay.identity("alice");
    let mut roots = rustls::RootCertStore::empty();
    for cert in qchat_shared::tls::parse_certs(&identity.ca_pem, "CA").unwrap() {
        roots.add(cert).unwrap();
    }
    let mut crypto = rustls::ClientConfig::builder_with_provider(qchat_shared::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![qchat_shared::ALPN.to_vec()];
    let config = qchat_shared::transport::client_config(crypto).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connection = endpoint.connect_with(config, relay.addr, "localhost").unwrap().await;
    let error = match connection {
        Err(e) => e,
        Ok(connection) => connection.closed().await,
    };
    let ending = qchat_client::refusal::explain(&error, "alice", &relay.addr.to_string());
    assert!(ending.fatal);
    assert!(ending.reason.contains("certificate"), "{}", ending.reason);
}
