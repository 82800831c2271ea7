//! The figures of one run: a table with ratios to raw QUIC, or one JSON line.

use std::time::Duration;

use serde_json::json;

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

/// CPU seconds spent per GiB moved: by the relay, and by the two clients together.
#[derive(Debug, Clone, Copy)]
pub struct CpuPerGib {
    pub relay: f64,
    pub clients: f64,
}

/// Everything one run measured.
pub struct Figures {
    pub size: u64,
    pub raw_tuned: f64,
    pub raw_default: f64,
    pub upload: f64,
    pub download: f64,
    pub upload_cpu: CpuPerGib,
    pub download_cpu: CpuPerGib,
    pub idle: Latency,
    pub during: Latency,
    pub msgs_per_s: f64,
    pub relay_peak_rss_mib: f64,
}

impl Figures {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "size_bytes": self.size,
            "raw_quic_mib_s": round(self.raw_tuned),
            "raw_quic_default_mib_s": round(self.raw_default),
            "upload_mib_s": round(self.upload),
            "download_mib_s": round(self.download),
            "chat_p50_ms_idle": round(self.idle.p50),
            "chat_p99_ms_idle": round(self.idle.p99),
            "chat_p50_ms_during_transfer": round(self.during.p50),
            "chat_p99_ms_during_transfer": round(self.during.p99),
            "chat_msgs_per_s": round(self.msgs_per_s),
            "relay_peak_rss_mib": round(self.relay_peak_rss_mib),
            "relay_cpu_s_per_gib_upload": round(self.upload_cpu.relay),
            "relay_cpu_s_per_gib_download": round(self.download_cpu.relay),
            "clients_cpu_s_per_gib_upload": round(self.upload_cpu.clients),
            "clients_cpu_s_per_gib_download": round(self.download_cpu.clients),
        })
    }

    pub fn print_table(&self) {
        let best = self.raw_tuned.max(self.raw_default);
        println!("qchat-bench: {} through the relay on 127.0.0.1", qchat_shared::units::human_bytes(self.size));
        println!("{:<44} {:>12} {:>10}", "", "figure", "vs raw");
        println!(
            "{:<44} {:>8.1} MiB/s {:>9.2}x",
            "raw QUIC, one stream, qchat settings",
            self.raw_tuned,
            self.raw_tuned / best
        );
        println!(
            "{:<44} {:>8.1} MiB/s {:>9.2}x",
            "raw QUIC, one stream, quinn defaults",
            self.raw_default,
            self.raw_default / best
        );
        println!(
            "{:<44} {:>8.1} MiB/s {:>9.2}x",
            "upload to the relay (verified, committed)",
            self.upload,
            self.upload / best
        );
        println!(
            "{:<44} {:>8.1} MiB/s {:>9.2}x",
            "download from the relay (verified, saved)",
            self.download,
            self.download / best
        );
        for (name, l) in [("chat latency idle", self.idle), ("chat latency during transfer", self.during)] {
            println!(
                "{:<44} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} messages)",
                name, l.p50, l.p99, l.max, l.samples
            );
        }
        println!("{:<44} {:>8.0} /s", "durable chat messages", self.msgs_per_s);
        println!("{:<44} {:>8.1} MiB", "relay peak RSS", self.relay_peak_rss_mib);
        for (name, cpu) in [("upload", self.upload_cpu), ("download", self.download_cpu)] {
            println!("{:<44} relay {:.2} s, clients {:.2} s", format!("CPU per GiB, {name}"), cpu.relay, cpu.clients);
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
