//! `e2e`: end to end to the mock APNs over TLS HTTP/2, as fast as a window
//! of W publishes (default 100) allows, each publish in flight until its
//! push reached the mock. Nudge's CPU per push, replies/s, both latencies,
//! and memory per push in flight (the window is full throughout).

use super::{Measured, Scenario, check_all_result, measure, report, round_robin};
use crate::external::{BenchError, Harness, Options, Setup};
use crate::load::{Nodes, Plan};
use crate::report::Report;

/// Runs the scenario.
pub async fn run(opts: &Options) -> Result<Report, BenchError> {
    let window = opts.window.unwrap_or(100);
    let devices = opts.devices.unwrap_or(1_000).max(window as u32);
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
        rate: opts.rate,
        await_push: true,
        stall: super::STALL,
    };
    let result = phase(&mut h, opts, &plan, devices).await;
    h.stop().await;
    result
}

async fn phase(
    h: &mut Harness,
    opts: &Options,
    plan: &Plan,
    devices: u32,
) -> Result<Report, BenchError> {
    let mut m: Measured = measure(h, plan).await?;
    check_all_result(h, &m.outcome, plan.targets.len())?;
    Ok(report(Scenario::E2e, opts, h, plan, &mut m, devices, true))
}
