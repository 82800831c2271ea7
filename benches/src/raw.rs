//! The limit: one raw quinn stream moving N bytes between two endpoints on loopback, with
//! qchat's TLS, and either qchat's transport settings or quinn's defaults; and, to show
//! what verifying costs, the same stream with each end hashing what it moves; and, to show
//! what end-to-end encryption costs, with the sender sealing as qchat does and the
//! receiver opening and hashing.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use qchat_certs::RelayMaterial;
use qchat_shared::identity::Identity;
use qchat_shared::seal::{sealed_len, FileKey, Opener, Sealer, SEALED_SEGMENT};
use qchat_shared::tls::{client_crypto, server_crypto, ServerTls};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

/// What a raw run does besides moving bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raw {
    /// quinn's default transport settings.
    QuinnDefaults,
    /// qchat's transport settings.
    QchatSettings,
    /// qchat's settings, and both ends BLAKE3 every byte in 1 MiB chunks (the receiver
    /// gathers them into a buffer first), as any verified transfer must.
    Hashed,
    /// qchat's settings, the sender sealing 1 MiB chunks as an upload does (AES-256-GCM
    /// segments, BLAKE3 of the plaintext and of the sealed bytes: `qchat_shared::seal`),
    /// the receiver opening each segment in place and hashing its plaintext, as a download
    /// does. No disk, no relay: what encryption leaves of raw QUIC.
    Sealed,
}

/// MiB/s of one stream moving `size` bytes, first byte to last byte received. The
/// receiving end runs on `receiving_runtime` (one on a core of its own) if given.
pub async fn one_stream(
    pki: &Path,
    size: u64,
    mode: Raw,
    receiving_runtime: Option<&tokio::runtime::Handle>,
) -> Result<f64> {
    let material = RelayMaterial::load(pki)?;
    let tls = ServerTls {
        cert_pem: &material.cert_pem,
        key_pem: &material.key_pem,
        ca_pem: &material.ca_pem,
        crl_pem: &material.crl_pem,
    };
    let server_tls = server_crypto(&tls)?;
    let identity = Identity::load(&pki.join("alice.qchat"))?;
    let client_tls = client_crypto(&identity)?;
    let (server_config, client_config) = if mode != Raw::QuinnDefaults {
        (qchat_shared::transport::server_config(server_tls)?, qchat_shared::transport::client_config(client_tls)?)
    } else {
        (
            quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls)?)),
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls)?)),
        )
    };
    let receiving_runtime = receiving_runtime.cloned().unwrap_or_else(tokio::runtime::Handle::current);
    // The endpoint's driver runs on the runtime it is made in.
    let server = {
        let _on = receiving_runtime.enter();
        loopback_endpoint(mode, Some(server_config))?
    };
    let addr = server.local_addr()?;
    let key = FileKey::random();
    let receiving_key = key.clone();
    let receiver = receiving_runtime.spawn(async move {
        let connection = server.accept().await.context("no connection")?.await?;
        let mut stream = connection.accept_uni().await?;
        let total = match mode {
            Raw::Hashed => receive_hashed(&mut stream).await?,
            Raw::Sealed => receive_sealed(&mut stream, &receiving_key, size).await?,
            Raw::QuinnDefaults | Raw::QchatSettings => receive(&mut stream).await?,
        };
        Ok::<_, anyhow::Error>((total, Instant::now(), connection))
    });
    let client = loopback_endpoint(mode, None)?;
    let connection = client.connect_with(client_config, addr, "localhost")?.await?;
    let block = Bytes::from(vec![0x5au8; 1 << 20]);
    let start = Instant::now();
    let mut stream = connection.open_uni().await?;
    let mut sealer = (mode == Raw::Sealed).then(|| Sealer::new(&key));
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        match sealer.as_mut() {
            Some(sealer) => stream.write_all_chunks(&mut sealer.push(&block[..n])).await?,
            None => {
                if mode == Raw::Hashed {
                    std::hint::black_box(blake3::hash(&block[..n]));
                }
                stream.write_chunk(block.slice(..n)).await?;
            }
        }
        left -= n as u64;
    }
    if let Some(sealer) = sealer {
        stream.write_all_chunks(&mut sealer.finish().0).await?;
    }
    stream.finish()?;
    let (total, end, _keep) = receiver.await??;
    anyhow::ensure!(total == size, "raw stream moved {total} of {size} bytes");
    connection.close(0u32.into(), b"done");
    Ok(crate::report::mib_per_s(size, end - start))
}

/// An endpoint on 127.0.0.1 (a server's with `server`): quinn's own, or with qchat's
/// endpoint settings.
fn loopback_endpoint(mode: Raw, server: Option<quinn::ServerConfig>) -> Result<quinn::Endpoint> {
    let bind = "127.0.0.1:0".parse()?;
    Ok(match (mode, server) {
        (Raw::QuinnDefaults, Some(server)) => quinn::Endpoint::server(server, bind)?,
        (Raw::QuinnDefaults, None) => quinn::Endpoint::client(bind)?,
        (_, server) => qchat_shared::transport::endpoint(bind, server)?,
    })
}

/// Reads the stream to its end as quinn hands it over; returns the bytes read.
async fn receive(stream: &mut quinn::RecvStream) -> Result<u64> {
    let mut total = 0u64;
    while let Some(chunk) = stream.read_chunk(usize::MAX, true).await? {
        total += chunk.bytes.len() as u64;
    }
    Ok(total)
}

/// Reads the stream to its end in 1 MiB buffers, hashing each; returns the bytes read.
async fn receive_hashed(stream: &mut quinn::RecvStream) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match stream.read(&mut buf[filled..]).await? {
                Some(n) => filled += n,
                None => break,
            }
        }
        hasher.update(&buf[..filled]);
        total += filled as u64;
        if filled < buf.len() {
            std::hint::black_box(hasher.finalize());
            return Ok(total);
        }
    }
}

/// Reads a sealed stream of a `plain`-byte file to its end, a segment at a time, opening
/// each in place and hashing its plaintext; checks the hash at the end and returns the
/// plaintext bytes.
async fn receive_sealed(stream: &mut quinn::RecvStream, key: &FileKey, plain: u64) -> Result<u64> {
    let mut opener = Opener::new(key, sealed_len(plain), 0)?;
    let mut buf = vec![0u8; SEALED_SEGMENT];
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    loop {
        let want = opener.next_len();
        if want == 0 {
            opener.verify(hasher.finalize().as_bytes())?;
            return Ok(total);
        }
        stream.read_exact(&mut buf[..want]).await?;
        let data = opener.open(&mut buf[..want])?;
        hasher.update(&buf[..data]);
        total += data as u64;
    }
}
