//! `outbox`: the mock APNs answers 503 to every push for the first
//! `--outage-secs` (default 3), then recovers. Publishes (default three per
//! device, 1,000 devices) go out meanwhile; Nudge must answer them (they
//! are queued in its outbox) and, once APNs is back, deliver every
//! device's last summary. Reports the queued devices, the time from the
//! end of the outage until the last device's last summary arrived, and
//! `lost`: devices whose last summary never arrived (must be 0).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nudge_test_app::{Fault, Provider};
use serde_json::Value;

use super::{Measured, Scenario, check_all_result, num, report, round_robin, sample_and_reset};
use crate::external::{BenchError, Harness, Options, Setup};
use crate::load::{Nodes, Plan, collect_arrivals, pushed_count};
use crate::report::Report;
use crate::stats::micros;

/// Runs the scenario.
pub async fn run(opts: &Options) -> Result<Report, BenchError> {
    let devices = opts.devices.unwrap_or(1_000).max(1);
    let n = opts.publishes.unwrap_or(3 * devices as usize);
    let mut h = Harness::start(
        &opts.nudge,
        &Setup {
            devices,
            max_in_flight: 10_000,
            defaults_for_coalescing: false,
            fast_retries: true,
            // Every attempt is kept: the check reads payloads back.
            max_recorded: 2_000_000,
        },
    )
    .await?;
    let plan = Plan {
        targets: round_robin(n, devices),
        nodes: Nodes::Registered,
        window: opts.window.unwrap_or(100),
        rate: opts.rate,
        await_push: false,
        stall: super::STALL,
    };
    let result = async {
        let before = sample_and_reset(&h)?;
        let begin = Instant::now();
        let outage_end = Instant::now() + opts.outage;
        h.app
            .set_provider_fault(Provider::Apns, Fault::FailUntil(outage_end));
        let mut o = crate::load::run(&mut h, &plan).await?;
        check_all_result(&h, &o, n)?;

        // Each device's last summary, and which of them already arrived.
        let mut last = vec![0u32; devices as usize];
        for (i, &dev) in plan.targets.iter().enumerate() {
            last[dev as usize] = o.counts[i];
        }
        let publishing = last.iter().filter(|&&c| c > 0).count();
        let mut arrived = BTreeSet::new();
        let mut last_arrival = None;
        let mut note = |h: &Harness, a: &nudge_test_app::Arrival| {
            if (200..300).contains(&a.status)
                && let Some(dev) = crate::seed::device_of_token(&a.token)
                && let Some(&want) = last.get(dev as usize)
                && want > 0
                && pushed_count(h, a.id) == Some(want)
                && arrived.insert(dev)
            {
                last_arrival = Some(a.at);
            }
            arrived.len() == publishing
        };
        let seen = std::mem::take(&mut o.arrivals);
        let mut all = publishing == 0;
        for a in &seen {
            all = note(&h, a);
        }
        o.arrivals = seen;
        if !all {
            let wait = opts.outage + Duration::from_secs(60);
            collect_arrivals(&mut h, &mut o, wait, &mut note).await;
        }
        let after = h.child.sample()?;
        // The run lasts until the last summary arrived: CPU and replies
        // are over all of it.
        o.elapsed = begin.elapsed();
        let lost = publishing - arrived.len();
        let queued: BTreeSet<u32> = o
            .arrivals
            .iter()
            .filter(|a| !(200..300).contains(&a.status))
            .filter_map(|a| crate::seed::device_of_token(&a.token))
            .collect();
        let drain = last_arrival.map(|t| t.saturating_duration_since(outage_end));
        let mut m = Measured {
            outcome: o,
            before,
            after,
        };
        let mut r = report(Scenario::Outbox, opts, &h, &plan, &mut m, devices, false);
        r.extra.insert(
            "outage_ms".into(),
            Value::from(opts.outage.as_millis() as u64),
        );
        r.extra
            .insert("queued_devices".into(), Value::from(queued.len()));
        r.extra.insert(
            "drain_after_outage_us".into(),
            drain.map_or(Value::Null, |d| num(micros(d))),
        );
        r.extra.insert("lost".into(), Value::from(lost));
        Ok(r)
    }
    .await;
    h.stop().await;
    result
}
