//! Latency percentiles of a run (nearest rank on the sorted samples), and
//! the formatting of durations in the report.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of one latency series, in microseconds (what the report and
/// `docs/benchmarks.md` show).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples the percentiles are taken from.
    pub count: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (sorted here); `None` when empty.
    pub fn of(samples: &mut [Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |p: f64| {
            // Nearest rank: the smallest sample with at least p of the
            // samples at or below it.
            let rank = (p * samples.len() as f64).ceil() as usize;
            micros(samples[rank.clamp(1, samples.len()) - 1])
        };
        Some(Self {
            count: samples.len(),
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: micros(samples[samples.len() - 1]),
        })
    }

    /// `p50 0.41 ms, p90 …, p99 …, max …`.
    pub fn human(&self) -> String {
        format!(
            "p50 {}, p90 {}, p99 {}, max {} ({} samples)",
            fmt_us(self.p50_us),
            fmt_us(self.p90_us),
            fmt_us(self.p99_us),
            fmt_us(self.max_us),
            self.count
        )
    }
}

/// A duration in microseconds, as a float.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Microseconds under 1 ms as `µs`, above as `ms`.
pub fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut s: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let p = Percentiles::of(&mut s).expect("samples");
        assert_eq!(p.count, 100);
        assert_eq!(p.p50_us, 50.0);
        assert_eq!(p.p90_us, 90.0);
        assert_eq!(p.p99_us, 99.0);
        assert_eq!(p.max_us, 100.0);
        let mut one = vec![Duration::from_micros(7)];
        let p = Percentiles::of(&mut one).expect("one sample");
        assert_eq!((p.p50_us, p.p99_us, p.max_us), (7.0, 7.0, 7.0));
        assert!(Percentiles::of(&mut []).is_none());
    }
}
