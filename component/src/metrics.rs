//! Prometheus metrics: every metric Nudge exports is named here, once, with
//! its type, labels and help text ([`METRICS`]), and recorded through the
//! handles and functions of this module, so that the dashboard
//! (`deploy/grafana-dashboard.json`) and its test can check their names
//! against one list.
//!
//! The `metrics` crate records into a process-global recorder. [`install`]
//! puts the Prometheus one in place (once per process); `nudge run` does so
//! only when the HTTP listener is enabled, and `GET /metrics`
//! (`http/metrics.rs`) renders it. Without a recorder every handle here is
//! a no-op, so the library and the CLI pay nothing.
//!
//! The publish path keeps to pre-registered handles: [`DispatchMetrics`]
//! holds one counter per app, provider and outcome, made when the
//! dispatcher is built, so that a push costs an atomic add and no label
//! allocation. Handles bind to the recorder installed when they are made:
//! install before [`crate::start`].
//!
//! Labels are low-cardinality by construction: an app name (from the
//! configuration), a provider, a closed vocabulary (outcome, answer, error
//! type, link state), never a node, a JID or a token.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use nudge_plugins::Outcome;

use crate::dispatch::Backends;
use crate::store::OutboxSummary;
use crate::xmpp::stanza::{DefinedCondition, ErrorType, StanzaError};
use crate::xmpp::stream::LinkState;

/// Publishes answered, by `answer` (`result` or the error condition) and
/// `type` (`result`, `wait`, `cancel`, `modify`, `auth`).
pub const PUBLISHES: &str = "nudge_publishes_total";
/// Publish read → answer queued for the stream.
pub const DISPATCH_DURATION: &str = "nudge_dispatch_duration_seconds";
/// Provider requests, by `app`, `provider` and `outcome`.
pub const PUSHES: &str = "nudge_pushes_total";
/// One provider request's duration, by `app` and `provider`.
pub const PROVIDER_REQUEST_DURATION: &str = "nudge_provider_request_duration_seconds";
/// Pushes waiting in the outbox.
pub const OUTBOX_DEPTH: &str = "nudge_outbox_depth";
/// Age of the oldest push in the outbox (0 when empty).
pub const OUTBOX_OLDEST_AGE: &str = "nudge_outbox_oldest_age_seconds";
/// Publishes merged into a pending push.
pub const COALESCED: &str = "nudge_coalesced_total";
/// Pushes deferred by a rate limit.
pub const RATE_LIMITED: &str = "nudge_rate_limited_total";
/// Failed provider attempts scheduled for a retry.
pub const RETRIES: &str = "nudge_retries_total";
/// Queued pushes dropped because their time to live ran out.
pub const EXPIRED: &str = "nudge_expired_total";
/// Registrations removed because the provider declared the token dead.
pub const REGISTRATIONS_REMOVED: &str = "nudge_registrations_removed_total";
/// Dead-token removals held back by the removal brake.
pub const REMOVALS_HELD: &str = "nudge_removals_held_total";
/// Registrations in the store, by `app`.
pub const REGISTRATIONS: &str = "nudge_registrations";
/// 1 while the component stream is established.
pub const COMPONENT_CONNECTED: &str = "nudge_component_connected";
/// Connections established after the first one.
pub const COMPONENT_RECONNECTS: &str = "nudge_component_reconnects_total";
/// Whole seconds spent connecting or refused (not standing by).
pub const COMPONENT_DISCONNECTED_SECONDS: &str = "nudge_component_disconnected_seconds_total";
/// 1 for the link's current `state`, 0 for the others.
pub const COMPONENT_LINK_STATE: &str = "nudge_component_link_state";
/// Registration lookups the cache answered.
pub const CACHE_HITS: &str = "nudge_cache_hits_total";
/// Registration lookups that read the database.
pub const CACHE_MISSES: &str = "nudge_cache_misses_total";
/// 1, labelled with the running `version`.
pub const BUILD_INFO: &str = "nudge_build_info";

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    /// The name in the exposition format's `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: MetricKind,
    /// Its label names.
    pub labels: &'static [&'static str],
    /// Its `# HELP` text.
    pub help: &'static str,
}

const fn def(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        kind,
        labels,
        help,
    }
}

use MetricKind::{Counter as C, Gauge as G, Histogram as H};

/// Every metric Nudge exports.
pub const METRICS: &[MetricDef] = &[
    def(
        PUBLISHES,
        C,
        &["answer", "type"],
        "Publishes answered, by answer (result or the stanza error condition) and error type",
    ),
    def(
        DISPATCH_DURATION,
        H,
        &[],
        "Time from reading a publish to queueing its answer for the stream",
    ),
    def(
        PUSHES,
        C,
        &["app", "provider", "outcome"],
        "Provider requests, by app, provider and outcome",
    ),
    def(
        PROVIDER_REQUEST_DURATION,
        H,
        &["app", "provider"],
        "Duration of one provider request (bounded by dispatch.push_timeout_secs)",
    ),
    def(OUTBOX_DEPTH, G, &[], "Pushes waiting in the outbox"),
    def(
        OUTBOX_OLDEST_AGE,
        G,
        &[],
        "Age of the oldest push in the outbox, 0 when it is empty",
    ),
    def(COALESCED, C, &[], "Publishes merged into a pending push"),
    def(RATE_LIMITED, C, &[], "Pushes deferred by a rate limit"),
    def(
        RETRIES,
        C,
        &[],
        "Failed provider attempts scheduled for a retry",
    ),
    def(
        EXPIRED,
        C,
        &[],
        "Queued pushes dropped because their time to live ran out",
    ),
    def(
        REGISTRATIONS_REMOVED,
        C,
        &["app"],
        "Registrations removed because the provider declared the token dead",
    ),
    def(
        REMOVALS_HELD,
        C,
        &["app"],
        "Dead-token removals held back by the removal brake",
    ),
    def(
        REGISTRATIONS,
        G,
        &["app"],
        "Registrations in the store, by app",
    ),
    def(
        COMPONENT_CONNECTED,
        G,
        &[],
        "1 while the component stream to the XMPP server is established",
    ),
    def(
        COMPONENT_RECONNECTS,
        C,
        &[],
        "Component connections established after the first one",
    ),
    def(
        COMPONENT_DISCONNECTED_SECONDS,
        C,
        &[],
        "Whole seconds the component spent connecting or refused by the server since start",
    ),
    def(
        COMPONENT_LINK_STATE,
        G,
        &["state"],
        "1 for the component link's current state, 0 for the others",
    ),
    def(
        CACHE_HITS,
        C,
        &[],
        "Registration lookups answered by the cache",
    ),
    def(
        CACHE_MISSES,
        C,
        &[],
        "Registration lookups that read the database",
    ),
    def(
        BUILD_INFO,
        G,
        &["version"],
        "1, labelled with the running version",
    ),
];

/// Histogram buckets (seconds) of the `_seconds` histograms: provider
/// requests take tens of milliseconds, a publish answered from the cache
/// well under one; the top buckets catch timeouts.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often the exporter's upkeep runs (drains histogram samples).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the recorder could not be installed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InstallError {
    /// Another recorder was installed in this process first, or the
    /// exporter refused its settings.
    #[error("could not install the Prometheus recorder: {0}")]
    Exporter(String),
}

static INSTALLED: OnceLock<Result<PrometheusHandle, InstallError>> = OnceLock::new();

/// Installs the Prometheus recorder for this process, once; a second call
/// returns the same handle. Starts a thread that runs the exporter's
/// upkeep, and sets `nudge_build_info`.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    INSTALLED.get_or_init(install_once).clone()
}

/// The installed recorder's handle, if [`install`] ran.
pub fn handle() -> Option<PrometheusHandle> {
    INSTALLED.get()?.as_ref().ok().cloned()
}

fn install_once() -> Result<PrometheusHandle, InstallError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.install_recorder())
        .map_err(|e| InstallError::Exporter(e.to_string()))?;
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        return Err(InstallError::Exporter(format!(
            "could not start the upkeep thread: {e}"
        )));
    }
    describe_all();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

fn describe_all() {
    for m in METRICS {
        let help = SharedString::const_str(m.help);
        match m.kind {
            MetricKind::Counter => metrics::describe_counter!(m.name, help),
            MetricKind::Gauge => metrics::describe_gauge!(m.name, help),
            MetricKind::Histogram => metrics::describe_histogram!(m.name, help),
        }
    }
}

/// The `answer` and `type` labels of a publish's answer.
pub fn answer_labels(answer: &Result<(), StanzaError>) -> (&'static str, &'static str) {
    match answer {
        Ok(()) => ("result", "result"),
        Err(e) => (e.condition.as_str(), e.kind.as_str()),
    }
}

/// The outcomes of a provider request, in the order of their handles.
const OUTCOMES: [&str; 5] = [
    "delivered",
    "invalid_token",
    "throttled",
    "transient",
    "rejected",
];

fn outcome_index(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Delivered => 0,
        Outcome::InvalidToken { .. } => 1,
        Outcome::Throttled { .. } => 2,
        Outcome::Transient { .. } => 3,
        Outcome::Rejected { .. } => 4,
    }
}

/// One app's handles.
struct AppHandles {
    pushes: [Counter; OUTCOMES.len()],
    request_duration: Histogram,
    removed: Counter,
    held: Counter,
}

impl AppHandles {
    fn new(app: &str, provider: &str) -> Self {
        let app = SharedString::from(app.to_owned());
        let provider = SharedString::from(provider.to_owned());
        AppHandles {
            pushes: OUTCOMES.map(|outcome| {
                metrics::counter!(PUSHES, "app" => app.clone(), "provider" => provider.clone(), "outcome" => outcome)
            }),
            request_duration: metrics::histogram!(
                PROVIDER_REQUEST_DURATION,
                "app" => app.clone(),
                "provider" => provider.clone()
            ),
            removed: metrics::counter!(REGISTRATIONS_REMOVED, "app" => app.clone()),
            held: metrics::counter!(REMOVALS_HELD, "app" => app),
        }
    }
}

/// Stanza error conditions × error types, plus `result`.
const ANSWERS: usize = DefinedCondition::COUNT * 4 + 1;

/// The dispatcher's handles, made when it is built (after [`install`]).
pub struct DispatchMetrics {
    apps: HashMap<String, AppHandles>,
    /// By [`answer_index`]; registered at first use, `result` at once.
    publishes: [OnceLock<Counter>; ANSWERS],
    dispatch_duration: Histogram,
    coalesced: Counter,
    rate_limited: Counter,
    retries: Counter,
    expired: Counter,
}

fn answer_index(answer: &Result<(), StanzaError>) -> usize {
    match answer {
        Ok(()) => 0,
        Err(e) => {
            let kind = match e.kind {
                ErrorType::Auth => 0,
                ErrorType::Cancel => 1,
                ErrorType::Modify => 2,
                ErrorType::Wait => 3,
            };
            1 + e.condition.index() * 4 + kind
        }
    }
}

impl DispatchMetrics {
    /// Handles for the configured apps.
    pub fn new(backends: &Backends) -> Self {
        let apps = backends
            .apps()
            .into_iter()
            .filter_map(|app| {
                let backend = backends.get(app)?;
                Some((app.to_owned(), AppHandles::new(app, backend.provider())))
            })
            .collect();
        let this = DispatchMetrics {
            apps,
            publishes: std::array::from_fn(|_| OnceLock::new()),
            dispatch_duration: metrics::histogram!(DISPATCH_DURATION),
            coalesced: metrics::counter!(COALESCED),
            rate_limited: metrics::counter!(RATE_LIMITED),
            retries: metrics::counter!(RETRIES),
            expired: metrics::counter!(EXPIRED),
        };
        // The series most queries divide by exists from the start.
        this.publish_counter(&Ok(()));
        this
    }

    fn publish_counter(&self, answer: &Result<(), StanzaError>) -> &Counter {
        self.publishes[answer_index(answer)].get_or_init(|| {
            let (answer, kind) = answer_labels(answer);
            metrics::counter!(PUBLISHES, "answer" => answer, "type" => kind)
        })
    }

    /// A publish is being answered `answer`; [`AnsweredPublish::record`]
    /// counts it once the answer is written.
    pub fn publish_answer(&self, answer: &Result<(), StanzaError>) -> AnsweredPublish<'_> {
        AnsweredPublish {
            counter: self.publish_counter(answer),
            duration: &self.dispatch_duration,
        }
    }

    /// A publish was answered `answer`, `took` after it was read.
    pub fn publish_answered(&self, answer: &Result<(), StanzaError>, took: Duration) {
        self.publish_answer(answer).record(took);
    }

    /// A provider request of `app` ended with `outcome` after `took`.
    pub fn provider_request(&self, app: &str, outcome: &Outcome, took: Duration) {
        if let Some(handles) = self.apps.get(app) {
            handles.pushes[outcome_index(outcome)].increment(1);
            handles.request_duration.record(took.as_secs_f64());
        }
    }

    /// A registration of `app` was removed for a dead token.
    pub fn registration_removed(&self, app: &str) {
        if let Some(handles) = self.apps.get(app) {
            handles.removed.increment(1);
        }
    }

    /// The brake held back the removal of a registration of `app`.
    pub fn removal_held(&self, app: &str) {
        if let Some(handles) = self.apps.get(app) {
            handles.held.increment(1);
        }
    }

    /// A publish was merged into a pending push.
    pub fn coalesced(&self) {
        self.coalesced.increment(1);
    }

    /// A rate limit deferred a push.
    pub fn rate_limited(&self) {
        self.rate_limited.increment(1);
    }

    /// A failed attempt was scheduled for a retry.
    pub fn retried(&self) {
        self.retries.increment(1);
    }

    /// A queued push's time to live ran out.
    pub fn expired(&self) {
        self.expired.increment(1);
    }
}

/// A publish's answer, to count once it is written
/// ([`DispatchMetrics::publish_answer`]).
pub struct AnsweredPublish<'a> {
    counter: &'a Counter,
    duration: &'a Histogram,
}

impl AnsweredPublish<'_> {
    /// Counts the answer, written `took` after the publish was read.
    pub fn record(self, took: Duration) {
        self.counter.increment(1);
        self.duration.record(took.as_secs_f64());
    }
}

/// The registration cache's handles.
pub struct CacheMetrics {
    hits: Counter,
    misses: Counter,
}

impl CacheMetrics {
    /// Handles on the installed recorder (no-ops without one).
    pub fn new() -> Self {
        CacheMetrics {
            hits: metrics::counter!(CACHE_HITS),
            misses: metrics::counter!(CACHE_MISSES),
        }
    }

    /// A lookup the cache answered.
    pub fn hit(&self) {
        self.hits.increment(1);
    }

    /// A lookup that reads the database.
    pub fn miss(&self) {
        self.misses.increment(1);
    }
}

impl Default for CacheMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Sets the outbox gauges from a summary read at unix second `now`.
pub fn set_outbox(summary: &OutboxSummary, now: i64) {
    metrics::gauge!(OUTBOX_DEPTH).set(summary.queued as f64);
    let age = summary
        .oldest_created_at
        .map_or(0, |oldest| now.saturating_sub(oldest).max(0));
    metrics::gauge!(OUTBOX_OLDEST_AGE).set(age as f64);
}

/// Sets `nudge_registrations` for each app in `counts`.
pub fn set_registrations<'a>(counts: impl IntoIterator<Item = (&'a str, i64)>) {
    for (app, n) in counts {
        metrics::gauge!(REGISTRATIONS, "app" => app.to_owned()).set(n as f64);
    }
}

/// Every link state, for the `state` label.
const LINK_STATES: [LinkState; 5] = [
    LinkState::Connecting,
    LinkState::Connected,
    LinkState::Standby,
    LinkState::AuthFailed,
    LinkState::Stopped,
];

/// Keeps the component link's metrics: connected, link state, reconnects
/// and time disconnected. Runs until the link's sender is gone; wakes once
/// a second while disconnected to count the time.
pub async fn watch_link(mut state: tokio::sync::watch::Receiver<LinkState>) {
    let connected = metrics::gauge!(COMPONENT_CONNECTED);
    let reconnects = metrics::counter!(COMPONENT_RECONNECTS);
    let disconnected_total = metrics::counter!(COMPONENT_DISCONNECTED_SECONDS);
    let by_state = LINK_STATES.map(|s| {
        (
            s.clone(),
            metrics::gauge!(COMPONENT_LINK_STATE, "state" => s.as_str()),
        )
    });
    let mut ever_connected = false;
    let mut disconnected = Duration::ZERO;
    let mut last = tokio::time::Instant::now();
    loop {
        let current = state.borrow_and_update().clone();
        for (s, gauge) in &by_state {
            gauge.set(if *s == current { 1.0 } else { 0.0 });
        }
        let counts_as_down = matches!(current, LinkState::Connecting | LinkState::AuthFailed);
        if current == LinkState::Connected {
            connected.set(1.0);
            if ever_connected {
                reconnects.increment(1);
            }
            ever_connected = true;
        } else {
            connected.set(0.0);
        }
        if current == LinkState::Stopped {
            return;
        }
        // Until the state changes: count the time while down.
        loop {
            let tick = tokio::time::sleep(Duration::from_secs(1));
            let changed = tokio::select! {
                r = state.changed() => Some(r.is_ok()),
                () = tick, if counts_as_down => None,
            };
            let now = tokio::time::Instant::now();
            if counts_as_down {
                disconnected += now - last;
                disconnected_total.absolute(disconnected.as_secs());
            }
            last = now;
            match changed {
                Some(true) => break,
                Some(false) => return,
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names follow Prometheus conventions, labels never identify a user.
    #[test]
    fn names_and_labels_follow_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("nudge_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            match m.kind {
                MetricKind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                MetricKind::Histogram => assert!(m.name.ends_with("_seconds"), "{}", m.name),
                MetricKind::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
            for label in m.labels {
                assert!(
                    ![
                        "node", "jid", "token", "owner", "account", "device", "secret"
                    ]
                    .contains(label),
                    "{}: label {label} would be one series per user",
                    m.name
                );
            }
            assert!(!m.help.is_empty());
        }
    }

    #[test]
    fn every_answer_has_its_own_counter_slot() {
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(answer_index(&Ok(()))));
        for condition in DefinedCondition::ALL {
            for kind in [
                ErrorType::Auth,
                ErrorType::Cancel,
                ErrorType::Modify,
                ErrorType::Wait,
            ] {
                let i = answer_index(&Err(StanzaError::new(kind, condition)));
                assert!(i < ANSWERS);
                assert!(seen.insert(i), "{condition} {kind:?}");
            }
        }
    }

    /// What the handles record renders under the declared names, types
    /// and labels (a recorder local to this thread, not the global one).
    #[test]
    fn recorded_metrics_render_as_declared() {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let mut backends = Backends::new();
            backends.insert("ios", std::sync::Arc::new(NamedBackend("apns")));
            let m = DispatchMetrics::new(&backends);
            m.publish_answered(&Ok(()), Duration::from_millis(3));
            m.publish_answered(
                &Err(StanzaError::item_not_found()),
                Duration::from_millis(1),
            );
            m.provider_request("ios", &Outcome::Delivered, Duration::from_millis(20));
            m.provider_request("unknown-app", &Outcome::Delivered, Duration::ZERO);
            m.registration_removed("ios");
            m.removal_held("ios");
            m.coalesced();
            m.rate_limited();
            m.retried();
            m.expired();
            let cache = CacheMetrics::new();
            cache.hit();
            cache.miss();
            set_outbox(
                &OutboxSummary {
                    queued: 2,
                    oldest_created_at: Some(90),
                },
                100,
            );
            set_registrations([("ios", 3)]);
            describe_all();
        });
        let text = handle.render();
        let types: HashMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        for m in METRICS {
            // The link and build-info ones are set by tasks of their own.
            if [
                BUILD_INFO,
                COMPONENT_CONNECTED,
                COMPONENT_RECONNECTS,
                COMPONENT_DISCONNECTED_SECONDS,
                COMPONENT_LINK_STATE,
            ]
            .contains(&m.name)
            {
                continue;
            }
            assert_eq!(types.get(m.name), Some(&m.kind.as_str()), "{}", m.name);
        }
        assert!(
            text.contains(
                "nudge_pushes_total{app=\"ios\",provider=\"apns\",outcome=\"delivered\"} 1"
            )
        );
        assert!(
            text.contains(
                "nudge_pushes_total{app=\"ios\",provider=\"apns\",outcome=\"transient\"} 0"
            )
        );
        assert!(text.contains("nudge_publishes_total{answer=\"result\",type=\"result\"} 1"));
        assert!(
            text.contains("nudge_publishes_total{answer=\"item-not-found\",type=\"cancel\"} 1")
        );
        assert!(text.contains("nudge_outbox_oldest_age_seconds 10"));
        assert!(text.contains("nudge_registrations{app=\"ios\"} 3"));
        assert!(!text.contains("unknown-app"));
        for name in types.keys() {
            assert!(
                METRICS.iter().any(|m| m.name == *name),
                "{name} is not declared"
            );
        }
    }

    struct NamedBackend(&'static str);

    impl nudge_plugins::PushBackend for NamedBackend {
        fn provider(&self) -> &str {
            self.0
        }

        fn send<'a>(
            &'a self,
            _device: &'a nudge_plugins::Device,
            _notification: &'a nudge_plugins::Notification,
        ) -> nudge_plugins::BoxFuture<'a, Outcome> {
            Box::pin(async { Outcome::Delivered })
        }
    }
}
