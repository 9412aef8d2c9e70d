//! `unknown`: publishes for nodes nobody registered (cycling over
//! `--devices` of them, default 10,000; the same number of registered
//! devices sits in the table). Nudge must answer every one
//! `item-not-found`; what it costs per reply is the figure.

use serde_json::Value;

use super::{Scenario, measure, report, round_robin};
use crate::external::{BenchError, Harness, Options, Setup};
use crate::load::{Nodes, Plan};
use crate::report::Report;

/// Runs the scenario.
pub async fn run(opts: &Options) -> Result<Report, BenchError> {
    let window = opts.window.unwrap_or(100);
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
        nodes: Nodes::Unknown,
        window,
        rate: opts.rate,
        await_push: false,
        stall: super::STALL,
    };
    let result = async {
        let mut m = measure(&mut h, &plan).await?;
        let not_found = m
            .outcome
            .answers
            .get("item-not-found")
            .copied()
            .unwrap_or(0);
        if not_found != n || !m.outcome.arrivals.is_empty() {
            return Err(h.fail(format!(
                "{not_found} of {n} answered item-not-found ({:?}), {} pushes sent",
                m.outcome.answers,
                m.outcome.arrivals.len()
            )));
        }
        let mut r = report(Scenario::Unknown, opts, &h, &plan, &mut m, devices, true);
        r.extra
            .insert("unknown_nodes".into(), Value::from(devices.min(n as u32)));
        Ok(r)
    }
    .await;
    h.stop().await;
    result
}
