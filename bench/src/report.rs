//! What an external run reports: the figures issue 19 asks for, printed as
//! lines for a person or as one JSON object (`--json`) for
//! `docs/benchmarks.md`. Scenario-specific figures go into `extra`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::stats::{Percentiles, fmt_us};

/// The machine a run was taken on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs this process may use.
    pub cores: usize,
}

impl Machine {
    /// This machine.
    pub fn here() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .and_then(|v| v.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { cpu_model, cores }
    }
}

/// The figures of one external run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    /// UTC, `YYYY-MM-DD`.
    pub date: String,
    pub machine: Machine,
    /// The binary measured.
    pub nudge: String,
    pub devices: u32,
    pub publishes: usize,
    pub window: usize,
    pub rate: Option<u64>,
    /// Writing the registrations into SQLite (with `nudge migrate`), ms.
    pub seed_ms: f64,
    /// Spawn of `nudge run` to the handshake acknowledged, ms.
    pub startup_to_handshake_ms: f64,
    /// The measured phase: first publish written to the last complete
    /// (`burst`, `outbox`: to the last summary's arrival at the mock), s.
    pub elapsed_s: f64,
    pub replies: usize,
    pub replies_per_s: f64,
    /// Replies per answer (`result`, `item-not-found`, …).
    pub answers: BTreeMap<String, usize>,
    /// Requests the mock APNs accepted in the phase.
    pub pushes_delivered: usize,
    /// Requests the mock refused (the `outbox` outage's 503s).
    pub pushes_refused: usize,
    /// Nudge's CPU time (user + system) in the phase, ms.
    pub cpu_ms: f64,
    /// Nudge's CPU in the phase over its length (100 = one core busy).
    pub cpu_percent: f64,
    /// Nudge's CPU per delivered push, µs (`None` with none delivered).
    pub cpu_us_per_push: Option<f64>,
    /// Nudge's CPU per reply, µs.
    pub cpu_us_per_reply: Option<f64>,
    /// Publish written → reply read.
    pub reply_latency: Option<Percentiles>,
    /// Publish written → its push's request arriving at the mock APNs.
    pub push_latency: Option<Percentiles>,
    /// RSS after start-up and seeding, before the phase, kB.
    pub rss_idle_kb: u64,
    /// RSS after the phase, kB.
    pub rss_after_kb: u64,
    /// Peak RSS (VmHWM) of the whole life of the child, kB.
    pub peak_rss_kb: u64,
    /// Peak RSS during the phase, kB.
    pub phase_peak_rss_kb: u64,
    /// (phase peak − idle RSS) / window, kB; `None` when the scenario does
    /// not hold a full window in flight.
    pub kb_per_push_in_flight: Option<f64>,
    /// Scenario-specific figures and checks.
    pub extra: BTreeMap<String, Value>,
}

impl Report {
    /// One JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The human-readable lines.
    pub fn human(&self) -> String {
        let mut s = format!(
            "scenario {} on {} ({} cores), {}\nnudge: {}\n",
            self.scenario, self.machine.cpu_model, self.machine.cores, self.date, self.nudge
        );
        let rate = self
            .rate
            .map_or_else(|| "unpaced".to_owned(), |r| format!("{r}/s"));
        s += &format!(
            "{} devices, {} publishes, window {}, {rate}\n",
            self.devices, self.publishes, self.window
        );
        s += &format!(
            "seeding {:.0} ms; start-up to handshake {:.1} ms\n",
            self.seed_ms, self.startup_to_handshake_ms
        );
        let answers: Vec<String> = self
            .answers
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        s += &format!(
            "{} replies in {:.3} s: {:.0}/s ({})\n",
            self.replies,
            self.elapsed_s,
            self.replies_per_s,
            answers.join(", ")
        );
        s += &format!(
            "pushes at the mock: {} delivered, {} refused\n",
            self.pushes_delivered, self.pushes_refused
        );
        let per = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} µs"));
        s += &format!(
            "nudge CPU: {:.0} ms ({:.0} %), {} per push, {} per reply\n",
            self.cpu_ms,
            self.cpu_percent,
            per(self.cpu_us_per_push),
            per(self.cpu_us_per_reply)
        );
        if let Some(p) = &self.reply_latency {
            s += &format!("publish → reply: {}\n", p.human());
        }
        if let Some(p) = &self.push_latency {
            s += &format!("publish → provider request: {}\n", p.human());
        }
        s += &format!(
            "nudge RSS: idle {} kB, after {} kB, peak {} kB (phase {} kB)",
            self.rss_idle_kb, self.rss_after_kb, self.peak_rss_kb, self.phase_peak_rss_kb
        );
        match self.kb_per_push_in_flight {
            Some(kb) => s += &format!(", {kb:.1} kB per push in flight\n"),
            None => s += "\n",
        }
        for (k, v) in &self.extra {
            let v = match v {
                Value::Number(n) if k.ends_with("_us") => {
                    n.as_f64().map_or_else(|| n.to_string(), fmt_us)
                }
                other => other.to_string(),
            };
            s += &format!("{k}: {v}\n");
        }
        s
    }
}

/// Today (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_790), (2026, 12, 3));
    }
}
