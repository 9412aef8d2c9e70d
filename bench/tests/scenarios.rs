//! Every external scenario with small counts, against the `nudge` binary
//! cargo built next to this test (`target/<profile>/nudge`; `cargo test
//! --workspace` builds it, as the component's integration tests need it).
//! These check the harness's own bookkeeping (every publish answered, the
//! counts, nothing lost through an outage), never how fast anything was.

use std::path::PathBuf;
use std::time::Duration;

use nudge_bench::external::Options;
use nudge_bench::report::Report;
use nudge_bench::scenarios::{Scenario, run};

/// `target/<profile>/nudge`: this test runs from `target/<profile>/deps/`.
/// `NUDGE_BENCH_NUDGE` overrides it.
fn nudge_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NUDGE_BENCH_NUDGE") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let nudge = profile_dir.join("nudge");
    assert!(
        nudge.is_file(),
        "{} is missing: build it first (`cargo build -p nudge`, or run `cargo test --workspace`)",
        nudge.display()
    );
    nudge
}

fn options(scenario: Scenario) -> Options {
    Options {
        nudge: nudge_binary(),
        scenario,
        publishes: Some(300),
        rate: None,
        window: Some(20),
        devices: Some(50),
        cold: false,
        outage: Duration::from_secs(1),
    }
}

async fn run_ok(opts: Options) -> Report {
    match run(&opts).await {
        Ok(r) => r,
        Err(e) => panic!("{:?} failed: {e}", opts.scenario),
    }
}

fn results(r: &Report) -> usize {
    r.answers.get("result").copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_pushes_every_publish_once() {
    let r = run_ok(options(Scenario::E2e)).await;
    assert_eq!(r.replies, 300);
    assert_eq!(results(&r), 300);
    // One publish per device out at a time and no coalescing: one push each.
    assert_eq!(r.pushes_delivered, 300);
    assert_eq!(r.push_latency.map(|p| p.count), Some(300));
    assert_eq!(r.reply_latency.map(|p| p.count), Some(300));
    assert!(r.kb_per_push_in_flight.is_some());
    assert!(r.peak_rss_kb >= r.phase_peak_rss_kb && r.phase_peak_rss_kb > 0);
    serde_json::from_str::<serde_json::Value>(&r.to_json()).expect("the JSON report parses");
    assert!(r.human().contains("publish → provider request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_reports_both_latencies() {
    let mut opts = options(Scenario::Paced);
    opts.rate = Some(2_000);
    opts.window = Some(1_000);
    let r = run_ok(opts).await;
    assert_eq!(results(&r), 300);
    assert_eq!(r.pushes_delivered, 300);
    assert_eq!(r.push_latency.map(|p| p.count), Some(300));
    assert_eq!(r.rate, Some(2_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_cold_and_warm_with_seeded_rows() {
    for cold in [true, false] {
        let mut opts = options(Scenario::Million);
        opts.devices = Some(5_000);
        opts.rate = Some(5_000);
        opts.window = Some(1_000);
        opts.cold = cold;
        let r = run_ok(opts).await;
        assert_eq!(r.devices, 5_000);
        assert_eq!(results(&r), 300, "cold {cold}");
        // Only the measured phase counts (the warm-up pass is not in it).
        assert_eq!(r.pushes_delivered, 300, "cold {cold}");
        let cache = if cold { "cold" } else { "warm" };
        assert_eq!(r.extra["cache"], cache);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_nodes_are_all_item_not_found() {
    let r = run_ok(options(Scenario::Unknown)).await;
    assert_eq!(r.replies, 300);
    assert_eq!(r.answers.get("item-not-found"), Some(&300));
    assert_eq!(r.pushes_delivered, 0);
    assert!(r.cpu_us_per_push.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_coalesces_and_delivers_the_last_summary() {
    let mut opts = options(Scenario::Burst);
    opts.publishes = Some(20);
    opts.window = None;
    let r = run_ok(opts).await;
    assert_eq!(results(&r), 20);
    let pushes = r.extra["pushes_at_mock"].as_u64().expect("a count");
    // Coalescing: at least the last summary, fewer pushes than publishes.
    assert!((1..20).contains(&pushes), "{pushes} pushes");
    assert!(r.extra["last_publish_to_its_push_us"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_loses_nothing_through_an_outage() {
    let r = run_ok(options(Scenario::Outbox)).await;
    assert_eq!(results(&r), 300);
    assert_eq!(r.extra["lost"], 0);
    assert!(r.pushes_refused > 0, "the outage refused nothing");
    assert!(r.extra["queued_devices"].as_u64().expect("a count") > 0);
    assert!(r.extra["drain_after_outage_us"].is_number());
}
