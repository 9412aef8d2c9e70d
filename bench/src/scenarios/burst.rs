//! `burst`: publishes back to back for one device (default 20) with Nudge's
//! default coalescing window and rate limits: how many pushes reach the
//! mock, and how long until the push carrying the last publish's summary
//! arrives (the coalescing window's cost to the user).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Measured, Scenario, check_all_result, num, report, sample_and_reset};
use crate::external::{BenchError, Harness, Options, Setup};
use crate::load::{Nodes, Plan, collect_arrivals, pushed_count};
use crate::report::Report;
use crate::stats::micros;

/// Runs the scenario.
pub async fn run(opts: &Options) -> Result<Report, BenchError> {
    let n = opts.publishes.unwrap_or(20).max(1);
    let mut h = Harness::start(
        &opts.nudge,
        &Setup {
            devices: 1,
            max_in_flight: 10_000,
            defaults_for_coalescing: true,
            fast_retries: false,
            max_recorded: 10_000,
        },
    )
    .await?;
    let plan = Plan {
        targets: vec![0; n],
        nodes: Nodes::Registered,
        window: opts.window.unwrap_or(n),
        rate: opts.rate,
        await_push: false,
        stall: super::STALL,
    };
    let result = async {
        let before = sample_and_reset(&h)?;
        let begin = Instant::now();
        let mut o = crate::load::run(&mut h, &plan).await?;
        check_all_result(&h, &o, n)?;
        let last = u32::try_from(n).unwrap_or(u32::MAX);
        // The push with the last summary may already be in.
        let mut last_at = o
            .arrivals
            .iter()
            .find(|a| (200..300).contains(&a.status) && pushed_count(&h, a.id) == Some(last))
            .map(|a| a.at);
        if last_at.is_none() {
            let mut found = None;
            collect_arrivals(&mut h, &mut o, Duration::from_secs(120), |h, a| {
                if (200..300).contains(&a.status) && pushed_count(h, a.id) == Some(last) {
                    found = Some(a.at);
                }
                found.is_some()
            })
            .await;
            last_at = found;
        }
        let Some(last_at) = last_at else {
            return Err(h.fail(format!(
                "the last publish's summary (count {last}) never reached the mock"
            )));
        };
        let after = h.child.sample()?;
        // The run lasts until the last summary arrived: CPU and replies
        // are over all of it.
        o.elapsed = begin.elapsed();
        let last_sent = o.sent_at[n - 1];
        let mut m = Measured {
            outcome: o,
            before,
            after,
        };
        let mut r = report(Scenario::Burst, opts, &h, &plan, &mut m, 1, false);
        r.extra
            .insert("pushes_at_mock".into(), Value::from(m.outcome.delivered()));
        r.extra.insert(
            "last_publish_to_its_push_us".into(),
            num(micros(last_at.saturating_duration_since(last_sent))),
        );
        Ok(r)
    }
    .await;
    h.stop().await;
    result
}
