//! A relay that speaks the protocol by hand, to play a broken or malicious one against the
//! real client. It holds the test PKI's relay certificate, so the client trusts it as it
//! trusts the real relay: what it checks is what the relay says, not who says it.

use std::net::SocketAddr;
use std::path::Path;

use qchat_shared::frame::{ClientControl, Deliver, Open, RelayControl, Status};
use qchat_shared::io::{read_frame, write_frame};
use qchat_shared::tls::{server_crypto, ServerTls};

/// A listening fake relay.
pub struct FakeRelay {
    pub endpoint: quinn::Endpoint,
    pub addr: SocketAddr,
}

/// One client connection to the fake relay, past `Hello` and the welcome.
pub struct FakeSession {
    pub connection: quinn::Connection,
    pub control: (quinn::SendStream, quinn::RecvStream),
}

impl FakeRelay {
    /// Listens on 127.0.0.1 with the relay certificate of the PKI in `pki`.
    pub fn start(pki: &Path) -> FakeRelay {
        let material = qchat_certs::RelayMaterial::load(pki).expect("the test PKI");
        let tls = ServerTls {
            cert_pem: &material.cert_pem,
            key_pem: &material.key_pem,
            ca_pem: &material.ca_pem,
            crl_pem: &material.crl_pem,
        };
        let crypto = server_crypto(&tls).expect("server TLS");
        let config = qchat_shared::transport::server_config(crypto).expect("server QUIC config");
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).expect("bind");
        let addr = endpoint.local_addr().unwrap();
        FakeRelay { endpoint, addr }
    }

    /// Accepts the next connection, reads its `Hello`, and welcomes it as `user` whose
    /// peer is `peer`.
    pub async fn accept(&self, user: &str, peer: &str) -> FakeSession {
        let incoming = self.endpoint.accept().await.expect("a connection");
        let connection = incoming.await.expect("handshake");
        let (mut send, mut recv) = connection.accept_bi().await.expect("control stream");
        let hello = read_frame::<Open, _>(&mut recv).await.expect("a frame");
        assert!(matches!(hello, Some(Open::Hello(_))), "{hello:?}");
        let status = Status {
            user: user.into(),
            peer: Some(peer.into()),
            peer_online: true,
            other_users: 1,
            waiting_for_you: 0,
            waiting_for_peer: 0,
            files_for_you: 0,
            key_packages: qchat_shared::limits::KEY_PACKAGES_TARGET as u64,
        };
        write_frame(&mut send, &RelayControl::Welcome(status)).await.expect("welcome");
        write_frame(&mut send, &RelayControl::Rooms { rooms: Vec::new(), last: true }).await.expect("rooms");
        FakeSession { connection, control: (send, recv) }
    }
}

impl FakeSession {
    /// Writes a frame on the control stream.
    pub async fn send(&mut self, frame: &RelayControl) {
        write_frame(&mut self.control.0, frame).await.expect("control frame");
    }

    /// The client's next request on the control stream.
    pub async fn request(&mut self) -> ClientControl {
        read_frame(&mut self.control.1).await.expect("a request").expect("the control stream is open")
    }

    /// Delivers a message on a stream of its own, as the relay does.
    pub async fn deliver(&self, deliver: &Deliver) {
        let mut stream = self.connection.open_uni().await.expect("delivery stream");
        write_frame(&mut stream, deliver).await.expect("delivery");
        stream.finish().expect("finish");
    }

    /// Accepts the next stream the client opens and reads its first frame.
    pub async fn accept_stream(&self) -> (quinn::SendStream, quinn::RecvStream, Open) {
        let (send, mut recv) = self.connection.accept_bi().await.expect("a stream");
        let open = read_frame::<Open, _>(&mut recv).await.expect("a frame").expect("not empty");
        (send, recv, open)
    }
}
