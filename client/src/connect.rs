//! Making a connection: resolving the relay's address, the client endpoint, and the
//! handshake with a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use qchat_shared::identity::{split_host_port, Identity};
use qchat_shared::tls::client_crypto;
use qchat_shared::transport::client_config;

use crate::refusal::{explain, Ending};

/// How long a handshake may take before the relay counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the QUIC client configuration from an identity.
pub fn quic_config(identity: &Identity) -> Result<quinn::ClientConfig, Ending> {
    let crypto = client_crypto(identity)
        .map_err(|e| Ending { reason: format!("the identity file is unusable: {e}"), fatal: true })?;
    client_config(crypto).map_err(|e| Ending { reason: e.to_string(), fatal: true })
}

/// Resolves `HOST:PORT`.
pub async fn resolve(server: &str) -> Result<SocketAddr, Ending> {
    split_host_port(server).map_err(|reason| Ending { reason, fatal: true })?;
    let mut addrs = tokio::net::lookup_host(server)
        .await
        .map_err(|e| Ending { reason: format!("cannot resolve the relay's address {server}: {e}"), fatal: false })?;
    addrs.next().ok_or_else(|| Ending { reason: format!("{server} resolves to no address"), fatal: false })
}

/// A client endpoint able to reach `remote`.
pub fn endpoint_for(remote: SocketAddr) -> Result<quinn::Endpoint, Ending> {
    let bind: SocketAddr =
        if remote.is_ipv6() { "[::]:0".parse() } else { "0.0.0.0:0".parse() }.expect("a literal address");
    qchat_shared::transport::endpoint(bind, None)
        .map_err(|e| Ending { reason: format!("cannot open a UDP socket: {e}"), fatal: true })
}

/// Connects and completes the handshake, or says why not.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    remote: SocketAddr,
    identity: &Identity,
    server: &str,
) -> Result<quinn::Connection, Ending> {
    let host = split_host_port(server).map(|(h, _)| h).unwrap_or(identity.server_host());
    let connecting = endpoint
        .connect_with(config, remote, host)
        .map_err(|e| Ending { reason: format!("cannot connect to {server}: {e}"), fatal: true })?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(explain(&e, &identity.user, server)),
        Err(_) => Err(Ending {
            reason: format!(
                "no answer from the relay at {server} ({remote}) within {} s: is it running, and is its UDP port open?",
                CONNECT_TIMEOUT.as_secs()
            ),
            fatal: false,
        }),
    }
}
