//! QUIC transport settings, set on purpose rather than left at quinn's trusting defaults.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::congestion::BoundedBbrConfig;
use crate::window::{BASE_WINDOW, MAX_TRANSFER_WINDOW};

/// A connection with no packets for this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pings keep a quiet connection (and its NAT mapping) alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Streams a peer may have open towards us at once, per direction.
pub const MAX_STREAMS: u32 = 256;
/// Bytes one stream may have in flight towards us: as much as its connection may ever
/// have. The connection's window, which starts small and grows while a file moves (see
/// [`crate::window`]), is what bounds it.
pub const STREAM_WINDOW: u64 = BASE_WINDOW + MAX_TRANSFER_WINDOW;

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
        .keep_alive_interval(Some(KEEP_ALIVE));
    config
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
