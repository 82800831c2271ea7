//! The figures of one run: a table with ratios to raw QUIC, or one JSON line.

use std::time::Duration;

use serde_json::json;

use crate::wan::WanFigures;

/// MiB per second for `bytes` in `elapsed`.
pub fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

impl From<Vec<Duration>> for Latency {
    fn from(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let n = samples.len().max(1);
        let at = |q: f64| samples.get(((q * n as f64).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default();
        Latency {
            p50: ms(at(0.5)),
            p99: ms(at(0.99)),
            max: ms(samples.last().copied().unwrap_or_default()),
            samples: samples.len(),
        }
    }
}

/// Counters at one moment: CPU seconds used so far by the relay child and by this process
/// (the clients, or both ends of raw QUIC), and UDP datagrams the kernel dropped because a
/// socket's receive buffer was full.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub relay: f64,
    pub bench: f64,
    pub udp_drops: u64,
}

/// What moving the bytes cost, summed over rounds: CPU seconds of the relay and of this
/// process, and datagrams dropped, per GiB moved.
#[derive(Debug, Clone, Copy, Default)]
pub struct CostPerGib {
    relay: f64,
    bench: f64,
    udp_drops: u64,
    gib: f64,
}

impl CostPerGib {
    /// Adds one round that moved `gib` between the snapshots `before` and `after`.
    pub fn add(&mut self, before: Snapshot, after: Snapshot, gib: f64) {
        self.relay += after.relay - before.relay;
        self.bench += after.bench - before.bench;
        self.udp_drops += after.udp_drops.saturating_sub(before.udp_drops);
        self.gib += gib;
    }

    pub fn udp_drops(&self) -> f64 {
        self.udp_drops as f64 / self.gib.max(f64::MIN_POSITIVE)
    }

    pub fn relay(&self) -> f64 {
        self.relay / self.gib.max(f64::MIN_POSITIVE)
    }

    pub fn bench(&self) -> f64 {
        self.bench / self.gib.max(f64::MIN_POSITIVE)
    }
}

/// MiB/s of each round, and the CPU they took.
#[derive(Debug, Default)]
pub struct Throughput {
    pub raw_tuned: Vec<f64>,
    pub raw_default: Vec<f64>,
    pub raw_hashed: Vec<f64>,
    /// Raw QUIC sealed and opened as qchat does ([`crate::raw::Raw::Sealed`]).
    pub raw_sealed: Vec<f64>,
    pub upload: Vec<f64>,
    pub download: Vec<f64>,
    pub raw_cpu: CostPerGib,
    pub raw_hashed_cpu: CostPerGib,
    pub raw_sealed_cpu: CostPerGib,
    pub upload_cpu: CostPerGib,
    pub download_cpu: CostPerGib,
}

impl Throughput {
    /// The latest round's figures, in a line.
    pub fn last_round(&self) -> String {
        let last = |rounds: &[f64]| rounds.last().copied().unwrap_or_default();
        format!(
            "raw {:.0} / {:.0} MiB/s, raw hashed {:.0} MiB/s, raw sealed {:.0} MiB/s, upload {:.0} MiB/s, \
             download {:.0} MiB/s",
            last(&self.raw_tuned),
            last(&self.raw_default),
            last(&self.raw_hashed),
            last(&self.raw_sealed),
            last(&self.upload),
            last(&self.download)
        )
    }
}

/// The best of a figure's rounds.
fn best(rounds: &[f64]) -> f64 {
    rounds.iter().copied().fold(0.0, f64::max)
}

fn list(rounds: &[f64]) -> String {
    rounds.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")
}

/// Everything one run measured.
pub struct Figures {
    pub size: u64,
    pub throughput: Throughput,
    /// None when only the emulated link was measured.
    pub chat: Option<Chat>,
    pub handoff: Option<Handoff>,
    pub rooms: Option<crate::rooms::RoomsFigures>,
    pub wan: Option<WanFigures>,
    pub cipher: Option<crate::cipher::CipherFigures>,
    pub relay_peak_rss_mib: f64,
    /// `--pin`: the clients on one core, the relay on the other.
    pub pinned: bool,
}

/// A file from alice's disk to bob's, bob already waiting; and scp's time beside it.
pub struct Handoff {
    pub seconds: f64,
    pub scp_s: Option<f64>,
}

/// Chat figures.
pub struct Chat {
    pub idle: Latency,
    pub during: Latency,
    pub msgs_per_s: f64,
}

impl Figures {
    pub fn to_json(&self) -> serde_json::Value {
        let t = &self.throughput;
        let mut line = json!({
            "size_bytes": self.size,
            "rounds": t.upload.len(),
            "raw_quic_mib_s": round(best(&t.raw_tuned)),
            "raw_quic_default_mib_s": round(best(&t.raw_default)),
            "raw_quic_hashed_mib_s": round(best(&t.raw_hashed)),
            "raw_quic_sealed_mib_s": round(best(&t.raw_sealed)),
            "upload_mib_s": round(best(&t.upload)),
            "download_mib_s": round(best(&t.download)),
            "relay_peak_rss_mib": round(self.relay_peak_rss_mib),
            "pinned": self.pinned,
            "raw_quic_cpu_s_per_gib": round(t.raw_cpu.bench()),
            "raw_quic_hashed_cpu_s_per_gib": round(t.raw_hashed_cpu.bench()),
            "raw_quic_sealed_cpu_s_per_gib": round(t.raw_sealed_cpu.bench()),
            "udp_drops_per_gib": {
                "raw_quic": round(t.raw_cpu.udp_drops()), "raw_quic_hashed": round(t.raw_hashed_cpu.udp_drops()),
                "raw_quic_sealed": round(t.raw_sealed_cpu.udp_drops()),
                "upload": round(t.upload_cpu.udp_drops()), "download": round(t.download_cpu.udp_drops()),
            },
            "relay_cpu_s_per_gib_upload": round(t.upload_cpu.relay()),
            "relay_cpu_s_per_gib_download": round(t.download_cpu.relay()),
            "clients_cpu_s_per_gib_upload": round(t.upload_cpu.bench()),
            "clients_cpu_s_per_gib_download": round(t.download_cpu.bench()),
            "rounds_mib_s": {
                "raw_quic": t.raw_tuned, "raw_quic_default": t.raw_default, "raw_quic_hashed": t.raw_hashed,
                "raw_quic_sealed": t.raw_sealed,
                "upload": t.upload, "download": t.download,
            },
        });
        if let Some(chat) = &self.chat {
            line["chat_p50_ms_idle"] = json!(round(chat.idle.p50));
            line["chat_p99_ms_idle"] = json!(round(chat.idle.p99));
            line["chat_p50_ms_during_transfer"] = json!(round(chat.during.p50));
            line["chat_p99_ms_during_transfer"] = json!(round(chat.during.p99));
            line["chat_msgs_per_s"] = json!(round(chat.msgs_per_s));
        }
        if let Some(handoff) = &self.handoff {
            line["handoff_s"] = json!(round(handoff.seconds));
            if let Some(scp) = handoff.scp_s {
                line["scp_s"] = json!(round(scp));
                line["handoff_vs_scp"] = json!(round(handoff.seconds / scp));
            }
        }
        if let Some(r) = &self.rooms {
            line["rooms"] = json!({
                "users": r.plan.users, "rooms": r.plan.rooms, "members_per_room": r.plan.members_per_room,
                "messages": r.plan.messages, "msgs_per_s": round(r.msgs_per_s),
                "deliveries_per_s": round(r.deliveries_per_s),
                "to_all_p50_ms": round(r.to_all.p50), "to_all_p99_ms": round(r.to_all.p99),
            });
        }
        if let Some(c) = &self.cipher {
            line["seal_mib_s"] = json!(round(c.seal));
            line["open_mib_s"] = json!(round(c.open));
            line["blake3_mib_s"] = json!(round(c.blake3));
        }
        if let Some(w) = &self.wan {
            line["wan"] = json!({
                "rtt_ms": w.spec.rtt_ms, "rate_mbit": w.spec.rate_mbit, "loss": w.spec.loss,
                "size_bytes": w.size,
                "upload_s": round(w.upload_s), "upload_link_share": round(w.spec.share(w.size, w.upload_s)),
                "download_s": round(w.download_s), "download_link_share": round(w.spec.share(w.size, w.download_s)),
                "relay_peak_rss_mib": round(w.relay_peak_rss_mib),
            });
        }
        line
    }

    pub fn print_table(&self) {
        if !self.throughput.upload.is_empty() {
            self.print_loopback();
        }
        if let Some(w) = &self.wan {
            println!(
                "emulated link {} Mbit/s, {} ms, loss {}: {} up in {:.1} s ({:.0}% of the link), down in {:.1} s \
                 ({:.0}%), relay peak RSS {:.1} MiB",
                w.spec.rate_mbit,
                w.spec.rtt_ms,
                w.spec.loss,
                qchat_shared::units::human_bytes(w.size),
                w.upload_s,
                w.spec.share(w.size, w.upload_s) * 100.0,
                w.download_s,
                w.spec.share(w.size, w.download_s) * 100.0,
                w.relay_peak_rss_mib
            );
        }
    }

    fn print_loopback(&self) {
        let t = &self.throughput;
        let limit = best(&t.raw_tuned).max(best(&t.raw_default));
        println!(
            "qchat-bench: {} through the relay on 127.0.0.1, best of {} round{}{}",
            qchat_shared::units::human_bytes(self.size),
            t.upload.len(),
            if t.upload.len() == 1 { "" } else { "s" },
            if self.pinned {
                "; pinned: the clients on CPU 0, the relay (and raw QUIC's receiver) on CPU 1"
            } else {
                ""
            }
        );
        println!("{:<44} {:>12} {:>10}   each round, MiB/s", "", "best", "vs raw");
        for (name, rounds) in [
            ("raw QUIC, one stream, qchat settings", &t.raw_tuned),
            ("raw QUIC, one stream, quinn defaults", &t.raw_default),
            ("raw QUIC, qchat settings, BLAKE3 both ends", &t.raw_hashed),
            ("raw QUIC, sealed and opened as qchat does", &t.raw_sealed),
            ("upload to the relay (verified, committed)", &t.upload),
            ("download from the relay (verified, saved)", &t.download),
        ] {
            let figure = best(rounds);
            println!("{name:<44} {figure:>8.1} MiB/s {:>9.2}x   {}", figure / limit, list(rounds));
        }
        if let Some(chat) = &self.chat {
            for (name, l) in [("chat latency idle", chat.idle), ("chat latency during transfer", chat.during)] {
                println!(
                    "{:<44} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} messages)",
                    name, l.p50, l.p99, l.max, l.samples
                );
            }
            println!("{:<44} {:>8.0} /s", "durable chat messages", chat.msgs_per_s);
        }
        if let Some(handoff) = &self.handoff {
            let scp = handoff.scp_s.map_or(String::new(), |scp| {
                format!(" (scp to a loopback sshd {scp:.2} s: {:.2}x)", handoff.seconds / scp)
            });
            println!("{:<44} {:>8.2} s{scp}", "handoff, send-file to saved (cut-through)", handoff.seconds);
        }
        if let Some(r) = &self.rooms {
            let p = r.plan;
            println!(
                "{:<44} {:>8.0} /s ({:.0} deliveries/s); to every member p50 {:.2} ms, p99 {:.2} ms",
                format!("rooms: {} users, {} rooms of {}", p.users, p.rooms, p.members_per_room),
                r.msgs_per_s,
                r.deliveries_per_s,
                r.to_all.p50,
                r.to_all.p99
            );
        }
        if let Some(c) = &self.cipher {
            println!(
                "{:<44} seal {:.0} MiB/s, open and check {:.0} MiB/s (BLAKE3 alone {:.0} MiB/s)",
                "AES-256-GCM file segments, one core", c.seal, c.open, c.blake3
            );
        }
        println!("{:<44} {:>8.1} MiB", "relay peak RSS", self.relay_peak_rss_mib);
        println!("{:<44} {:.2} s (both ends)", "CPU per GiB, raw QUIC", t.raw_cpu.bench());
        println!("{:<44} {:.2} s (both ends)", "CPU per GiB, raw QUIC with BLAKE3", t.raw_hashed_cpu.bench());
        println!("{:<44} {:.2} s (both ends)", "CPU per GiB, raw QUIC sealed and opened", t.raw_sealed_cpu.bench());
        println!(
            "{:<44} raw {:.0}, raw with BLAKE3 {:.0}, raw sealed {:.0}, upload {:.0}, download {:.0}",
            "UDP datagrams dropped per GiB (buffer full)",
            t.raw_cpu.udp_drops(),
            t.raw_hashed_cpu.udp_drops(),
            t.raw_sealed_cpu.udp_drops(),
            t.upload_cpu.udp_drops(),
            t.download_cpu.udp_drops()
        );
        for (name, cpu) in [("upload", t.upload_cpu), ("download", t.download_cpu)] {
            let (relay, clients) = (cpu.relay(), cpu.bench());
            println!(
                "{:<44} {:.2} s (relay {relay:.2} s, clients {clients:.2} s)",
                format!("CPU per GiB, {name}"),
                relay + clients
            );
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
