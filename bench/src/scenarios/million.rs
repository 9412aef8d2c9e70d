//! `million`: a million registrations (default) seeded into SQLite before
//! Nudge starts; publishes paced (default 10,000/s) over distinct nodes
//! spread across the table. `--cold`: those nodes were never looked up
//! (every publish misses the cache); otherwise a warm-up pass over the same
//! nodes (unmeasured, unpaced) comes first. Reports start-up to handshake
//! with that many rows, RSS with them, and the latencies.

use serde_json::Value;

use super::{Scenario, check_all_result, measure, num, report};
use crate::external::{BenchError, Harness, Options, Setup};
use crate::load::{Nodes, Plan};
use crate::report::Report;

/// Runs the scenario.
pub async fn run(opts: &Options) -> Result<Report, BenchError> {
    let devices = opts.devices.unwrap_or(1_000_000).max(1);
    let rate = opts.rate.unwrap_or(10_000);
    let window = opts.window.unwrap_or(10_000);
    let n = opts.publishes.unwrap_or(50_000);
    let mut h = Harness::start(
        &opts.nudge,
        &Setup {
            devices,
            max_in_flight: window.max(10_000),
            defaults_for_coalescing: false,
            fast_retries: false,
            max_recorded: 1_000,
        },
    )
    .await?;
    let plan = Plan {
        targets: spread(n, devices),
        nodes: Nodes::Registered,
        window,
        rate: Some(rate),
        await_push: true,
        stall: super::STALL,
    };
    let result = async {
        let started = h.child.sample()?;
        if !opts.cold {
            let warm_up = Plan {
                window: 1_000,
                rate: None,
                ..plan.clone()
            };
            let o = crate::load::run(&mut h, &warm_up).await?;
            check_all_result(&h, &o, n)?;
        }
        let mut m = measure(&mut h, &plan).await?;
        check_all_result(&h, &m.outcome, n)?;
        let mut r = report(Scenario::Million, opts, &h, &plan, &mut m, devices, false);
        r.extra.insert(
            "cache".into(),
            Value::from(if opts.cold { "cold" } else { "warm" }),
        );
        r.extra
            .insert("rss_after_start_kb".into(), Value::from(started.rss_kb));
        r.extra.insert(
            "seed_rows_per_s".into(),
            num(f64::from(devices) / h.seeding.as_secs_f64().max(1e-9)),
        );
        Ok(r)
    }
    .await;
    h.stop().await;
    result
}

/// `n` distinct devices spread evenly over `0..devices` (round robin when
/// there are more publishes than devices).
fn spread(n: usize, devices: u32) -> Vec<u32> {
    let d = u64::from(devices);
    let n64 = n as u64;
    (0..n64)
        .map(|i| {
            if n64 <= d {
                (i * d / n64.max(1)) as u32
            } else {
                (i % d) as u32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn spread_is_distinct_and_in_range() {
        let s = spread(1000, 1_000_000);
        let mut sorted = s.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 1000);
        assert!(s.iter().all(|&d| d < 1_000_000));
        assert_eq!(spread(5, 2), vec![0, 1, 0, 1, 0]);
    }
}
