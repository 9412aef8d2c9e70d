//! The external mode's scenarios, one file each, dispatched here
//! ([`run`]). Each sets Nudge up through `crate::external::Harness`, runs
//! its phases with `crate::load`, checks what must hold whatever the
//! machine (every publish answered, nothing lost) and returns a
//! [`Report`]. Counts not given on the command line take the scenario's
//! defaults (listed in `docs/benchmarks.md`).

mod burst;
mod e2e;
mod million;
mod outbox;
mod paced;
mod unknown;

use std::time::Duration;

use clap::ValueEnum;
use serde_json::Value;

use crate::child::Sample;
use crate::external::{BenchError, Harness, Options};
use crate::load::{Outcome, Plan};
use crate::report::{Machine, Report};
use crate::stats::{Percentiles, micros};

/// The scenarios of issue 19.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// End to end to the mock APNs, a window of W publishes (default 100).
    E2e,
    /// Paced publishes (default 10k/s): publish → reply and → provider.
    Paced,
    /// A million registrations seeded; `--cold`: nodes never looked up.
    Million,
    /// Publishes for nodes nobody registered: all `item-not-found`.
    Unknown,
    /// Publishes back to back for one device: what coalescing makes of them.
    Burst,
    /// The provider answers 503 for `--outage-secs`, then recovers: the
    /// outbox queues, drains, loses nothing.
    Outbox,
}

impl Scenario {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::E2e => "e2e",
            Scenario::Paced => "paced",
            Scenario::Million => "million",
            Scenario::Unknown => "unknown",
            Scenario::Burst => "burst",
            Scenario::Outbox => "outbox",
        }
    }
}

/// Runs `opts.scenario`.
pub async fn run(opts: &Options) -> Result<Report, BenchError> {
    match opts.scenario {
        Scenario::E2e => e2e::run(opts).await,
        Scenario::Paced => paced::run(opts).await,
        Scenario::Million => million::run(opts).await,
        Scenario::Unknown => unknown::run(opts).await,
        Scenario::Burst => burst::run(opts).await,
        Scenario::Outbox => outbox::run(opts).await,
    }
}

/// Give up a phase when nothing happens for this long.
const STALL: Duration = Duration::from_secs(30);

/// A phase with the child's costs sampled around it.
struct Measured {
    outcome: Outcome,
    /// Before the phase (the peak reset right after).
    before: Sample,
    /// After the phase.
    after: Sample,
}

/// Runs `plan` on `h`, sampling the child before and after.
async fn measure(h: &mut Harness, plan: &Plan) -> Result<Measured, BenchError> {
    let before = sample_and_reset(h)?;
    let outcome = crate::load::run(h, plan).await?;
    let after = h.child.sample()?;
    Ok(Measured {
        outcome,
        before,
        after,
    })
}

/// The child's sample now, then its peak RSS reset to the current RSS.
fn sample_and_reset(h: &Harness) -> Result<Sample, BenchError> {
    let s = h.child.sample()?;
    h.child.reset_peak()?;
    Ok(s)
}

/// The round-robin targets `0, 1, …, devices-1, 0, …` of `n` publishes.
fn round_robin(n: usize, devices: u32) -> Vec<u32> {
    (0..n)
        .map(|i| (i % devices.max(1) as usize) as u32)
        .collect()
}

/// What every scenario reports; `window_full`: the phase held `plan.window`
/// publishes in flight, so memory per push in flight means something.
fn report(
    scenario: Scenario,
    opts: &Options,
    h: &Harness,
    plan: &Plan,
    m: &mut Measured,
    devices: u32,
    window_full: bool,
) -> Report {
    let o = &mut m.outcome;
    let cpu = m.after.cpu.saturating_sub(m.before.cpu);
    let elapsed = o.elapsed.as_secs_f64().max(1e-9);
    let replies = o.replies();
    let delivered = o.delivered();
    let per = |count: usize| (count > 0).then(|| micros(cpu) / count as f64);
    let kb_per_push = (window_full && plan.window > 0)
        .then(|| m.after.hwm_kb.saturating_sub(m.before.rss_kb) as f64 / plan.window as f64);
    Report {
        scenario: scenario.name().to_owned(),
        date: crate::report::today(),
        machine: Machine::here(),
        nudge: opts.nudge.display().to_string(),
        devices,
        publishes: plan.targets.len(),
        window: plan.window,
        rate: plan.rate,
        seed_ms: h.seeding.as_secs_f64() * 1e3,
        startup_to_handshake_ms: h.startup.as_secs_f64() * 1e3,
        elapsed_s: elapsed,
        replies,
        replies_per_s: replies as f64 / elapsed,
        answers: o.answers.clone(),
        pushes_delivered: delivered,
        pushes_refused: o.refused(),
        cpu_ms: micros(cpu) / 1e3,
        cpu_percent: cpu.as_secs_f64() / elapsed * 100.0,
        cpu_us_per_push: per(delivered),
        cpu_us_per_reply: per(replies),
        reply_latency: Percentiles::of(&mut o.reply_latency),
        push_latency: Percentiles::of(&mut o.push_latency),
        rss_idle_kb: m.before.rss_kb,
        rss_after_kb: m.after.rss_kb,
        peak_rss_kb: m.before.hwm_kb.max(m.after.hwm_kb),
        phase_peak_rss_kb: m.after.hwm_kb,
        kb_per_push_in_flight: kb_per_push,
        extra: Default::default(),
    }
}

/// Fails unless every publish of the phase was answered `result` (and, when
/// the plan waits for pushes, pushed: [`crate::load::run`] only ends then).
fn check_all_result(h: &Harness, o: &Outcome, n: usize) -> Result<(), BenchError> {
    let results = o.answers.get("result").copied().unwrap_or(0);
    if results != n {
        return Err(h.fail(format!(
            "{results} of {n} publishes answered result: {:?}",
            o.answers
        )));
    }
    Ok(())
}

/// A JSON number for `extra`.
fn num(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}
