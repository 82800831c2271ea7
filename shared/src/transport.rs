//! QUIC transport settings, set on purpose rather than left at quinn's trusting defaults.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};

use crate::congestion::BoundedBbrConfig;
use crate::window::BASE_WINDOW;

/// A connection with no packets for this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pings keep a quiet connection (and its NAT mapping) alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Streams a peer may have open towards us at once, per direction.
pub const MAX_STREAMS: u32 = 256;
/// Bytes one stream may have in flight towards us (or unread): what a file needs on a
/// long path (400 Mbit/s over 200 ms is a 10 MB bandwidth-delay product). It stays below
/// the connection's window ([`crate::window::BASE_WINDOW`]) by a margin, so that a file
/// whose receiver's disk lags can never take the credit chat needs: with the stream
/// window as large as the connection's, chat's p99 during a transfer went from 7 to 22 ms.
/// quinn 0.11 sets stream windows only per connection, at its start, so this one is fixed.
pub const STREAM_WINDOW: u64 = 16 << 20;

/// The transport settings both ends use. Congestion control is BBR with a bounded window
/// ([`crate::congestion`]): on a 400 Mbit/s link with 100 ms and 0.5% random loss, CUBIC
/// (quinn's default), taking every loss for congestion, moved 256 MiB in 268 s; BBR in
/// 9–10 s.
pub fn transport_config() -> TransportConfig {
    let mut config = TransportConfig::default();
    config.congestion_controller_factory(Arc::new(BoundedBbrConfig::default()));
    config
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_STREAMS))
        .stream_receive_window(VarInt::from_u64(STREAM_WINDOW).unwrap_or(VarInt::MAX))
        .receive_window(VarInt::from_u64(BASE_WINDOW).unwrap_or(VarInt::MAX))
        .send_window(BASE_WINDOW)
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(IDLE_TIMEOUT.as_millis() as u32))))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .mtu_discovery_config(Some(mtu_discovery()));
    config
}

/// The largest UDP payload qchat sends or takes. Linux sends at most 65,507 bytes of UDP
/// payload in one segmentation-offload call, and quinn puts up to 10 packets in one; with
/// larger packets every batched send fails with EMSGSIZE (tried: a transfer on loopback
/// stalled at once).
pub const MAX_DATAGRAM: u16 = 6_500;

/// Path MTU discovery probes up to [`MAX_DATAGRAM`]: on loopback and jumbo-frame networks
/// packets grow past Ethernet's size, each carrying over four times the data for the same
/// per-packet work. On an Ethernet path the larger probes are lost and packets settle near
/// 1,470 bytes, after about a dozen lost probes (a round trip each) at 1,200.
fn mtu_discovery() -> MtuDiscoveryConfig {
    let mut config = MtuDiscoveryConfig::default();
    config.upper_bound(MAX_DATAGRAM);
    config
}

/// Endpoint settings both ends use: datagrams up to [`MAX_DATAGRAM`] are accepted (the
/// peer's path MTU discovery may grow its packets that far). quinn's receive buffer grows
/// with it in address space, but only the datagrams actually read touch memory.
pub fn endpoint_settings(config: &mut quinn::EndpointConfig) -> &mut quinn::EndpointConfig {
    config.max_udp_payload_size(MAX_DATAGRAM).expect("within QUIC's datagram limits")
}

/// An endpoint bound to `bind` with [`endpoint_settings`]: a client's, or with `server`
/// a server's. An IPv6 socket takes IPv4 too, as quinn's own `Endpoint::client` makes it.
pub fn endpoint(bind: std::net::SocketAddr, server: Option<quinn::ServerConfig>) -> std::io::Result<quinn::Endpoint> {
    let mut config = quinn::EndpointConfig::default();
    endpoint_settings(&mut config);
    let socket = socket2::Socket::new(socket2::Domain::for_address(bind), socket2::Type::DGRAM, None)?;
    if bind.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&bind.into())?;
    let socket: std::net::UdpSocket = socket.into();
    let runtime = quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime"))?;
    quinn::Endpoint::new(config, server, socket, runtime)
}

/// Why a QUIC configuration could not be made from a TLS one.
#[derive(Debug, thiserror::Error)]
#[error("TLS configuration unusable for QUIC: {0}")]
pub struct QuicConfigError(String);

/// The relay's QUIC configuration.
pub fn server_config(crypto: rustls::ServerConfig) -> Result<quinn::ServerConfig, QuicConfigError> {
    let quic = QuicServerConfig::try_from(crypto).map_err(|e| QuicConfigError(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// A client's QUIC configuration.
pub fn client_config(crypto: rustls::ClientConfig) -> Result<quinn::ClientConfig, QuicConfigError> {
    let quic = QuicClientConfig::try_from(crypto).map_err(|e| QuicConfigError(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// Send priority of chat and control streams: above anything bulk.
pub const CHAT_PRIORITY: i32 = 100;
/// Send priority of file streams.
pub const FILE_PRIORITY: i32 = 0;
