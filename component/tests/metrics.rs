//! `/metrics` scraped over HTTP while pushes flow: fake XMPP server →
//! Nudge → the real FCM backend → the test-app's mock FCM (TLS HTTP/2),
//! with faults injected at the mock. The exposition text is parsed and the
//! counts must move as the publishes and faults say: answers by condition,
//! pushes by outcome, retries, dead-token removals, the outbox during an
//! outage and after, registrations by app, cache hits and misses, and a
//! reconnect after the server drops the stream. On SQLite and PostgreSQL.
//!
//! The recorder is process-global, so this is a test binary of its own and
//! its tests take turns ([`TURN`]); each compares scrapes before and after.
//! Also: the Grafana dashboard (`deploy/grafana-dashboard.json`) queries
//! only metrics Nudge exports.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{DbKind, FakeServer, STEP, ServerConn, TestDb, answer_kind, publish_iq};
use nudge::Config;
use nudge::xmpp::stream::LinkState;
use nudge_test_app::{Fault, Provider, TestApp, TestAppConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One test at a time: the counters are the whole process's.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A parsed exposition: series (name and sorted labels) → value.
#[derive(Debug, Default)]
struct Scrape {
    series: HashMap<String, f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    /// Parses the text format (the subset the exporter writes: `# TYPE`,
    /// `# HELP`, `name{k="v",…} value`).
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                scrape.types.insert(name.into(), kind.into());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|e| panic!("{line}: {e}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("closing brace");
                    let mut labels: Vec<(String, String)> = split_labels(inner);
                    labels.sort();
                    (name, labels)
                }
                None => (series, Vec::new()),
            };
            let series_key = key(
                name,
                &labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect::<Vec<_>>(),
            );
            scrape.series.insert(series_key, value);
        }
        scrape
    }

    /// The value of a series, 0 when it is absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels = labels.to_vec();
        labels.sort();
        self.series.get(&key(name, &labels)).copied().unwrap_or(0.0)
    }

    /// Every series of `name` summed (over all its labels).
    fn sum(&self, name: &str) -> f64 {
        self.series
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(_, v)| v)
            .sum()
    }
}

/// `k="v",…` (values as the exporter writes them: no commas or quotes in
/// ours, escapes kept as they are).
fn split_labels(inner: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").expect("label");
        let end = after.find('"').expect("label value end");
        out.push((k.to_owned(), after[..end].to_owned()));
        rest = after[end + 1..].trim_start_matches(',');
    }
    out
}

fn key(name: &str, sorted: &[(&str, &str)]) -> String {
    let labels: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// `GET path` over HTTP/1.1 on loopback; (status, content-type, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

struct Setup {
    app: TestApp,
    server: FakeServer,
    conn: ServerConn,
    nudge: nudge::Running,
    db: TestDb,
    http: std::net::SocketAddr,
    _files: tempfile::TempDir,
}

async fn setup(kind: DbKind) -> Setup {
    nudge::metrics::install().expect("the recorder");
    let app = nudge_test_app::start(TestAppConfig::default())
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let exported = app.export(files.path()).unwrap();
    let server = FakeServer::start().await;
    let db = TestDb::new(kind).await;
    let config = Config::from_toml(&format!(
        r#"
[component]
domain = "{domain}"
secret = "{secret}"
port = {port}
[storage]
url = "{db}"
[dispatch]
coalesce_ms = 0
push_timeout_secs = 2
[outbox]
retry_min_ms = 100
retry_max_secs = 1
[apps.conversations]
provider = "fcm"
service_account_path = "{sa}"
endpoint = "{fcm}"
ca_file = "{ca}"
"#,
        domain = common::DOMAIN,
        secret = common::SECRET,
        port = server.port,
        db = db.url(),
        ca = exported.ca_cert.display(),
        sa = exported.fcm_service_account.display(),
        fcm = app.fcm_url(),
    ))
    .unwrap();
    let backends = nudge::app::build_backends(&config).await.unwrap();
    let mut nudge = nudge::start(&config, backends).await.unwrap();
    let conn = server.accept().await;
    assert!(nudge.wait_for_state(LinkState::Connected, STEP).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(nudge::http::serve(
        listener,
        nudge::http::router(nudge.http_state(&config)),
        nudge.shutdown_handle(),
    ));
    Setup {
        app,
        server,
        conn,
        nudge,
        db,
        http,
        _files: files,
    }
}

impl Setup {
    async fn scrape(&self) -> Scrape {
        let (status, content_type, body) = http_get(self.http, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        Scrape::parse(&body)
    }

    /// Scrapes until `check` holds, for at most `limit`.
    async fn scrape_until(&self, limit: Duration, check: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + limit;
        loop {
            let scrape = self.scrape().await;
            if check(&scrape) || Instant::now() >= deadline {
                return scrape;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn register(&mut self, device: &str, token: &str) -> (String, String) {
        let a = self
            .conn
            .request(&common::register_iq(
                "alice@localhost",
                "fcm",
                device,
                token,
            ))
            .await;
        assert_eq!(answer_kind(&a).0, "result", "{a:?}");
        let (_, node, secret) = common::registration_form(&a).unwrap();
        (node, secret)
    }

    async fn publish(&mut self, id: &str, node: &str, secret: Option<&str>) -> (String, String) {
        let a = self
            .conn
            .request(&publish_iq(id, "localhost", node, secret, "hi"))
            .await;
        answer_kind(&a)
    }

    async fn finish(self) {
        self.nudge.stop().await;
        self.db.drop_db().await;
        self.app.shutdown().await;
    }
}

const APP: (&str, &str) = ("app", "conversations");
const FCM: (&str, &str) = ("provider", "fcm");

fn pushes(s: &Scrape, outcome: &str) -> f64 {
    s.get("nudge_pushes_total", &[APP, FCM, ("outcome", outcome)])
}

fn publishes(s: &Scrape, answer: &str, kind: &str) -> f64 {
    s.get(
        "nudge_publishes_total",
        &[("answer", answer), ("type", kind)],
    )
}

async fn counts_move_with_publishes_and_faults(kind: DbKind) {
    let _turn = TURN.lock().await;
    let mut s = setup(kind).await;
    let before = s.scrape().await;
    assert_eq!(
        before.get(
            "nudge_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(
        before.types.get("nudge_pushes_total").map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        before
            .types
            .get("nudge_dispatch_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    assert_eq!(before.get("nudge_component_connected", &[]), 1.0);

    // Delivered, twice: the second lookup is the cache's.
    let token = "fcm-metrics-ok-0123";
    let (node, secret) = s.register("phone", token).await;
    for id in ["p1", "p2"] {
        assert_eq!(s.publish(id, &node, Some(&secret)).await.0, "result");
        assert!(s.app.wait_for_delivered(token, STEP).await.is_some());
    }
    // Refused before dispatch: unknown node, wrong secret, malformed.
    assert_eq!(
        s.publish("u1", "no-such-node", None).await,
        ("cancel".into(), "item-not-found".into())
    );
    assert_eq!(
        s.publish("w1", &node, Some("wrong")).await,
        ("auth".into(), "forbidden".into())
    );
    let malformed = "<iq id='m1' to='push.localhost' from='localhost' type='set'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node=''/></pubsub></iq>";
    assert_eq!(
        answer_kind(&s.conn.request(malformed).await),
        ("modify".into(), "bad-request".into())
    );

    // A 5xx once: answered `result`, retried, delivered.
    s.app.set_fault(token, Fault::FailTimes(1));
    assert_eq!(s.publish("f1", &node, Some(&secret)).await.0, "result");
    assert!(s.app.wait_for_delivered(token, STEP).await.is_some());

    // A dead token (FCM 404 UNREGISTERED): removed, answered item-not-found.
    let dead = "fcm-metrics-dead-0123";
    let (dead_node, dead_secret) = s.register("tablet", dead).await;
    s.app.set_fault(dead, Fault::Dead);
    assert_eq!(
        s.publish("d1", &dead_node, Some(&dead_secret)).await,
        ("cancel".into(), "item-not-found".into())
    );

    let after = s
        .scrape_until(STEP, |m| {
            pushes(m, "delivered") - pushes(&before, "delivered") >= 3.0
                && m.get("nudge_registrations", &[APP]) == 1.0
        })
        .await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(
        delta(
            "nudge_publishes_total",
            &[("answer", "result"), ("type", "result")]
        ),
        3.0
    );
    assert_eq!(
        publishes(&after, "item-not-found", "cancel")
            - publishes(&before, "item-not-found", "cancel"),
        2.0
    );
    assert_eq!(
        publishes(&after, "forbidden", "auth") - publishes(&before, "forbidden", "auth"),
        1.0
    );
    assert_eq!(
        publishes(&after, "bad-request", "modify") - publishes(&before, "bad-request", "modify"),
        1.0
    );
    assert_eq!(
        pushes(&after, "delivered") - pushes(&before, "delivered"),
        3.0
    );
    assert_eq!(
        pushes(&after, "transient") - pushes(&before, "transient"),
        1.0
    );
    assert_eq!(
        pushes(&after, "invalid_token") - pushes(&before, "invalid_token"),
        1.0
    );
    assert_eq!(delta("nudge_retries_total", &[]), 1.0);
    assert_eq!(delta("nudge_registrations_removed_total", &[APP]), 1.0);
    assert_eq!(delta("nudge_removals_held_total", &[APP]), 0.0);
    assert_eq!(after.get("nudge_registrations", &[APP]), 1.0);
    // Every provider request and every answered publish is timed.
    assert_eq!(
        after.sum("nudge_provider_request_duration_seconds_count")
            - before.sum("nudge_provider_request_duration_seconds_count"),
        5.0
    );
    assert_eq!(
        after.sum("nudge_dispatch_duration_seconds_count")
            - before.sum("nudge_dispatch_duration_seconds_count"),
        after.sum("nudge_publishes_total") - before.sum("nudge_publishes_total")
    );
    assert!(delta("nudge_cache_misses_total", &[]) >= 1.0);
    assert!(
        delta("nudge_cache_hits_total", &[]) >= 1.0,
        "the second publish of a node hits the cache"
    );

    // An outage: the push waits in the outbox, which empties once the
    // provider is back.
    // (The token's own fault, spent, would win over the provider's.)
    s.app.clear_fault(token);
    s.app.set_provider_fault(
        Provider::Fcm,
        Fault::FailUntil(std::time::Instant::now() + Duration::from_secs(3)),
    );
    assert_eq!(s.publish("o1", &node, Some(&secret)).await.0, "result");
    let during = s
        .scrape_until(Duration::from_secs(3), |m| {
            m.get("nudge_outbox_depth", &[]) > 0.0
        })
        .await;
    assert_eq!(
        during.get("nudge_outbox_depth", &[]),
        1.0,
        "outbox depth during the outage"
    );
    assert!(during.get("nudge_outbox_oldest_age_seconds", &[]) >= 0.0);
    assert!(s.app.wait_for_delivered(token, STEP).await.is_some());
    s.app.clear_provider_fault(Provider::Fcm);
    let drained = s
        .scrape_until(STEP, |m| m.get("nudge_outbox_depth", &[]) == 0.0)
        .await;
    assert_eq!(
        drained.get("nudge_outbox_depth", &[]),
        0.0,
        "outbox depth after the outage"
    );
    assert_eq!(drained.get("nudge_outbox_oldest_age_seconds", &[]), 0.0);
    assert!(drained.get("nudge_retries_total", &[]) - after.get("nudge_retries_total", &[]) >= 1.0);

    // The server drops the stream: one reconnect, connected again.
    s.conn.hang_up().await;
    s.conn = s.server.accept().await;
    assert!(s.nudge.wait_for_state(LinkState::Connected, STEP).await);
    let relinked = s
        .scrape_until(STEP, |m| {
            m.get("nudge_component_reconnects_total", &[])
                - before.get("nudge_component_reconnects_total", &[])
                >= 1.0
                && m.get("nudge_component_connected", &[]) == 1.0
        })
        .await;
    assert_eq!(
        relinked.get("nudge_component_reconnects_total", &[])
            - before.get("nudge_component_reconnects_total", &[]),
        1.0
    );
    assert_eq!(relinked.get("nudge_component_connected", &[]), 1.0);
    assert_eq!(
        relinked.get("nudge_component_link_state", &[("state", "connected")]),
        1.0
    );
    assert_eq!(
        relinked.get("nudge_component_link_state", &[("state", "connecting")]),
        0.0
    );
    assert_eq!(
        relinked
            .types
            .get("nudge_component_disconnected_seconds_total")
            .map(String::as_str),
        Some("counter")
    );

    // No label names a node, a token or an account.
    let (_, _, text) = http_get(s.http, "/metrics").await;
    for secret_ish in [node.as_str(), token, dead, "alice"] {
        assert!(!text.contains(secret_ish), "{secret_ish} in /metrics");
    }
    s.finish().await;
}

on_both_databases!(counts_move_with_publishes_and_faults);

/// While the server stays away, the time disconnected is counted (whole
/// seconds) and the connected gauge is 0; back, it is 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_disconnected_is_counted() {
    let _turn = TURN.lock().await;
    let mut s = setup(DbKind::Sqlite).await;
    let before = s.scrape().await;
    // Away: the server hangs up and refuses the next attempts by closing
    // each connection at once, for over two seconds.
    s.conn.hang_up().await;
    let away = s
        .scrape_until(STEP, |m| m.get("nudge_component_connected", &[]) == 0.0)
        .await;
    assert_eq!(away.get("nudge_component_connected", &[]), 0.0);
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        if let Some(tcp) = s.server.try_accept_tcp(Duration::from_millis(100)).await {
            drop(tcp);
        }
    }
    let counted = s
        .scrape_until(STEP, |m| {
            m.get("nudge_component_disconnected_seconds_total", &[])
                - before.get("nudge_component_disconnected_seconds_total", &[])
                >= 2.0
        })
        .await;
    assert!(
        counted.get("nudge_component_disconnected_seconds_total", &[])
            - before.get("nudge_component_disconnected_seconds_total", &[])
            >= 2.0
    );
    s.conn = s.server.accept().await;
    assert!(s.nudge.wait_for_state(LinkState::Connected, STEP).await);
    let back = s
        .scrape_until(STEP, |m| m.get("nudge_component_connected", &[]) == 1.0)
        .await;
    assert_eq!(back.get("nudge_component_connected", &[]), 1.0);
    s.finish().await;
}

/// The dashboard is valid JSON with a Prometheus datasource variable, and
/// every metric its queries name is one Nudge exports, so that it cannot
/// rot as metrics are renamed.
#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let path = format!(
        "{}/../deploy/grafana-dashboard.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus datasource variable"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for panel in panels {
        if panel["type"] == "row" {
            continue;
        }
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()));
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for t in targets {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    let mut used = std::collections::BTreeSet::new();
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("nudge_") {
                used.insert(word.to_owned());
            }
        }
    }
    let exported = |name: &str| {
        nudge::metrics::METRICS.iter().any(|m| {
            m.name == name
                || (m.kind == nudge::metrics::MetricKind::Histogram
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name == format!("{}{suffix}", m.name)))
        })
    };
    for name in &used {
        assert!(
            exported(name),
            "the dashboard queries {name}, which Nudge does not export"
        );
    }
    // Every exported metric is on the dashboard.
    for m in nudge::metrics::METRICS {
        assert!(
            used.iter().any(|u| u.starts_with(m.name)),
            "{} is on no panel",
            m.name
        );
    }
}

/// `nudge run` (the real binary, its `[http]` on by default) serves
/// `/metrics` with the recorder installed: the build info and the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_metrics() {
    use tokio::io::AsyncBufReadExt;
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nudge"))
        .args(["--config", &common::example_config(), "run"])
        .env("NUDGE_HTTP__LISTEN", "127.0.0.1:0")
        .env("NUDGE_COMPONENT__PORT", server.port.to_string())
        .env("NUDGE_COMPONENT__SECRET", common::SECRET)
        .env("NUDGE_STORAGE__DATA_DIR", dir.path())
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = tokio::time::timeout(STEP, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, rest)) = line.split_once("HTTP listener on http://") {
                let addr = rest.split([' ', '\u{1b}']).next().unwrap_or_default();
                return addr.parse().unwrap();
            }
        }
        panic!("no HTTP listener line");
    })
    .await
    .expect("the listener line in time");
    // Keep draining the log so that the child never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let _conn = server.accept().await;
    let deadline = Instant::now() + STEP;
    let scrape = loop {
        let (status, content_type, body) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        let scrape = Scrape::parse(&body);
        if scrape.get("nudge_component_connected", &[]) == 1.0 || Instant::now() >= deadline {
            break scrape;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(scrape.get("nudge_component_connected", &[]), 1.0);
    assert_eq!(
        scrape.get(
            "nudge_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(
        scrape.get(
            "nudge_publishes_total",
            &[("answer", "result"), ("type", "result")]
        ),
        0.0
    );
    assert_eq!(
        scrape
            .types
            .get("nudge_publishes_total")
            .map(String::as_str),
        Some("counter")
    );
    child.kill().await.unwrap();
}
