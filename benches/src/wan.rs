//! A file through the relay over an emulated wide-area link (`--wan RTT_MS,RATE_MBIT,LOSS`):
//! alice uploads through one link, then bob downloads through another, each timed from
//! the client's start (handshake and slow start included) to the relay's commit or the
//! verified file, as a person running `qchat-cli send-file` and `receive` would see it.

use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, Result};
use qchat_shared::identity::Identity;
use qchat_tests::link::{EmulatedLink, LinkSpec};

use crate::e2e::Peer;
use crate::relay_child::RelayChild;

/// The link: round trip, rate and random loss, as `--wan` spells them.
#[derive(Debug, Clone, Copy)]
pub struct WanSpec {
    pub rtt_ms: u64,
    pub rate_mbit: u64,
    pub loss: f64,
}

impl FromStr for WanSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let [rtt, rate, loss] = parts[..] else {
            return Err(format!("{text:?}: expected RTT_MS,RATE_MBIT,LOSS (e.g. 200,400,0.005)"));
        };
        let spec = WanSpec {
            rtt_ms: rtt.parse().map_err(|e| format!("round trip {rtt:?}: {e}"))?,
            rate_mbit: rate.parse().map_err(|e| format!("rate {rate:?}: {e}"))?,
            loss: loss.parse().map_err(|e| format!("loss {loss:?}: {e}"))?,
        };
        if spec.rate_mbit == 0 || !(0.0..1.0).contains(&spec.loss) {
            return Err(format!("{text:?}: the rate must be above 0 and the loss a fraction below 1"));
        }
        Ok(spec)
    }
}

impl WanSpec {
    fn link(&self) -> LinkSpec {
        LinkSpec::new(self.rate_mbit, self.rtt_ms, self.loss)
    }

    /// The share of the link's rate that moving `bytes` in `seconds` is.
    pub fn share(&self, bytes: u64, seconds: f64) -> f64 {
        bytes as f64 * 8.0 / seconds / (self.rate_mbit as f64 * 1e6)
    }
}

/// What one WAN run measured.
#[derive(Debug, Clone, Copy)]
pub struct WanFigures {
    pub spec: WanSpec,
    pub size: u64,
    pub upload_s: f64,
    pub download_s: f64,
    /// The relay's peak memory during the WAN run alone.
    pub relay_peak_rss_mib: f64,
}

/// Uploads `file` as alice and downloads it as bob, each through a link of its own, their
/// clients keeping their state under `dir` (where the loopback clients keep theirs).
pub async fn run(pki: &Path, relay: &RelayChild, dir: &Path, spec: WanSpec, file: &Path) -> Result<WanFigures> {
    let size = std::fs::metadata(file)?.len();
    relay.reset_peak_rss()?;
    let alice = Identity::load(&pki.join("alice.qchat"))?;
    let bob = Identity::load(&pki.join("bob.qchat"))?;

    let link = EmulatedLink::start(relay.addr, spec.link())?;
    let started = Instant::now();
    let mut peer = Peer::start(alice, link.addr, dir).await.context("alice over the link")?;
    let transfer = peer.client.send_file_to(crate::e2e::direct(), file);
    peer.uploaded(transfer).await?;
    let upload_s = started.elapsed().as_secs_f64();
    peer.stop().await;
    drop(link);

    let link = EmulatedLink::start(relay.addr, spec.link())?;
    let started = Instant::now();
    let mut peer = Peer::start(bob, link.addr, dir).await.context("bob over the link")?;
    peer.client.receive_all(None);
    let saved = peer.saved().await?;
    let download_s = started.elapsed().as_secs_f64();
    peer.stop().await;
    std::fs::remove_file(saved)?;
    Ok(WanFigures { spec, size, upload_s, download_s, relay_peak_rss_mib: relay.peak_rss_mib()? })
}
