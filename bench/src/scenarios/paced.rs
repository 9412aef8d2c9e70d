//! `paced`: publishes at a fixed rate (default 10,000/s) to the mock APNs;
//! what matters is latency at a load below capacity, publish → reply and
//! publish → provider request, and Nudge's CPU at that rate.

use super::{Scenario, check_all_result, measure, report, round_robin};
use crate::external::{BenchError, Harness, Options, Setup};
use crate::load::{Nodes, Plan};
use crate::report::Report;

/// Runs the scenario.
pub async fn run(opts: &Options) -> Result<Report, BenchError> {
    let rate = opts.rate.unwrap_or(10_000);
    let window = opts.window.unwrap_or(10_000);
    let devices = opts.devices.unwrap_or(10_000);
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
        targets: round_robin(n, devices),
        nodes: Nodes::Registered,
        window,
        rate: Some(rate),
        await_push: true,
        stall: super::STALL,
    };
    let result = async {
        let mut m = measure(&mut h, &plan).await?;
        check_all_result(&h, &m.outcome, n)?;
        Ok(report(
            Scenario::Paced,
            opts,
            &h,
            &plan,
            &mut m,
            devices,
            false,
        ))
    }
    .await;
    h.stop().await;
    result
}
