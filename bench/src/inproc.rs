//! The in-process mode of `nudge-bench` (`nudge-bench inproc`, or no
//! subcommand): measures Nudge's publish path under load with Nudge linked
//! into the harness, so that a profile shows both sides.
//!
//! It plays the user's XMPP server: accepts Nudge's component connection on
//! 127.0.0.1, registers devices through the ad-hoc commands, then pipelines
//! XEP-0357 publishes (the size and shape of Prosody's) with a bounded
//! number in flight, optionally at a fixed rate, and times each publish to
//! its answer. Nudge runs in the same process (library API) with either a
//! no-op backend (the parse → check → lookup → answer path alone) or the
//! real APNs backend against the test-app's TLS HTTP/2 mock (the whole
//! path). Every run is bounded by `--publishes`.
//!
//! Figures depend on the machine: report them with the machine named, or as
//! ratios between runs on the same machine. The external mode
//! (`crate::external`) runs `nudge` as its own process instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use nudge::dispatch::Backends;
use nudge::xmpp::dataform::DataForm;
use nudge::xmpp::reader::{StanzaReader, StreamItem};
use nudge_plugins::{BoxFuture, Device, Notification, Outcome, PushBackend};
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Which push backend the in-process Nudge uses.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Backend {
    /// Answer every push as delivered at once.
    Noop,
    /// The APNs backend against the test-app's mock APNs (TLS, HTTP/2).
    Apns,
}

/// The in-process mode's options (today's flags of `nudge-bench`).
#[derive(Args, Debug, Clone)]
pub struct InprocArgs {
    /// Publishes to send.
    #[arg(long, default_value_t = 200_000)]
    pub publishes: usize,
    /// Registered devices the publishes are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub devices: usize,
    /// Publishes in flight at most (sent but not answered).
    #[arg(long, default_value_t = 2_000)]
    pub window: usize,
    /// Publishes per second (default: as fast as answers come back).
    #[arg(long)]
    pub rate: Option<u64>,
    #[arg(long, value_enum, default_value = "noop")]
    pub backend: Backend,
    /// Leave the Prometheus recorder out (as with `[http] enabled = false`);
    /// by default it is installed, as `nudge run` does.
    #[arg(long)]
    pub no_metrics: bool,
}

const DOMAIN: &str = "push.bench";
const SECRET: &str = "bench-secret";

struct NoopBackend;

impl PushBackend for NoopBackend {
    fn provider(&self) -> &str {
        "noop"
    }
    fn send<'a>(&'a self, _: &'a Device, _: &'a Notification) -> BoxFuture<'a, Outcome> {
        Box::pin(async { Outcome::Delivered })
    }
}

/// Runs Nudge in this process and measures it; prints the figures.
pub async fn run(args: InprocArgs) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}/bench.db", dir.path().display());
    // Each device gets hundreds of publishes here, far more than a phone
    // would: without the coalescing window and the rate limits, every
    // publish takes the send path, which is what this harness measures.
    let mut toml = format!(
        "[component]\ndomain = '{DOMAIN}'\nsecret = '{SECRET}'\nport = {port}\n\
         [storage]\nurl = '{db}'\ncache_capacity = {}\n[dispatch]\nmax_in_flight = {}\n\
         coalesce_ms = 0\n[limits]\nper_registration_burst = 1000000\nper_registration_per_minute = 1000000\n\
         per_domain_burst = 1000000\nper_domain_per_second = 1000000\n",
        args.devices.max(1000),
        args.window.max(1)
    );
    let mut _test_app = None;
    let (service, backends) = match args.backend {
        Backend::Noop => {
            let mut b = Backends::new();
            b.insert("noop", Arc::new(NoopBackend) as Arc<dyn PushBackend>);
            ("noop", b)
        }
        Backend::Apns => {
            let app = nudge_test_app::start(nudge_test_app::TestAppConfig {
                max_recorded: 1000,
                ..Default::default()
            })
            .await?;
            let files = app.export(dir.path())?;
            let creds = app.apns_credentials();
            toml.push_str(&format!(
                "[apps.apns]\nprovider = 'apns'\ntopic = 'org.example.app'\nendpoint = '{}'\nca_file = '{}'\n\
                 token = {{ key_path = '{}', key_id = '{}', team_id = '{}' }}\n",
                app.apns_url(),
                files.ca_cert.display(),
                files.apns_key.display(),
                creds.key_id,
                creds.team_id
            ));
            _test_app = Some(app);
            ("apns", Backends::new())
        }
    };
    let config = nudge::Config::from_toml(&toml)?;
    let backends = match args.backend {
        Backend::Noop => backends,
        Backend::Apns => nudge::app::build_backends(&config).await?,
    };
    if !args.no_metrics {
        nudge::metrics::install()?;
    }
    let started = Instant::now();
    let nudge = nudge::start(&config, backends).await?;

    // Server side of the handshake.
    let (tcp, _) = listener.accept().await?;
    tcp.set_nodelay(true)?;
    let (r, mut w) = tcp.into_split();
    let mut reader = StanzaReader::new(r, 1 << 20);
    expect_header(&mut reader).await?;
    let id = "bench-stream";
    w.write_all(format!("<stream:stream id='{id}' from='{DOMAIN}' xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams'>").as_bytes()).await?;
    let hs = next_stanza(&mut reader).await?;
    let expected = hex::encode(Sha1::digest(format!("{id}{SECRET}").as_bytes()));
    if hs.text != expected {
        return Err("bad handshake".into());
    }
    w.write_all(b"<handshake/>").await?;
    println!("start-up to connected: {:?}", started.elapsed());

    // Registrations, pipelined.
    let t = Instant::now();
    let mut batch = String::new();
    for d in 0..args.devices {
        let token = match args.backend {
            Backend::Noop => format!("token{d}"),
            Backend::Apns => format!("{:064x}", d + 1),
        };
        batch.push_str(&format!(
            "<iq id='r{d}' type='set' from='user{d}@localhost/phone' to='{DOMAIN}'><command node='register-push-{service}' action='execute' xmlns='http://jabber.org/protocol/commands'><x xmlns='jabber:x:data' type='submit'><field var='token'><value>{token}</value></field><field var='device-id'><value>dev{d}</value></field></x></command></iq>"
        ));
        if batch.len() > 64 * 1024 {
            w.write_all(batch.as_bytes()).await?;
            batch.clear();
        }
    }
    w.write_all(batch.as_bytes()).await?;
    let mut creds = vec![(String::new(), String::new()); args.devices];
    for _ in 0..args.devices {
        let el = next_stanza(&mut reader).await?;
        let idx: usize = el
            .get_attr("id")
            .and_then(|i| i.strip_prefix('r'))
            .and_then(|i| i.parse().ok())
            .ok_or("unexpected answer")?;
        let form = el
            .children
            .first()
            .and_then(|c| c.children.iter().find_map(DataForm::from_element))
            .ok_or_else(|| format!("registration failed: {el:?}"))?;
        let value = |var: &str| form.value(var).unwrap_or_default().to_owned();
        creds[idx] = (value("node"), value("secret"));
    }
    println!("{} registrations in {:?}", args.devices, t.elapsed());

    // Publishes: a writer paced by the window (and the rate), a reader
    // timing each answer.
    let stanzas: Vec<String> = creds
        .iter()
        .map(|(node, secret)| publish_template(node, secret))
        .collect();
    let window = Arc::new(Semaphore::new(args.window));
    let sent_at: Arc<Vec<std::sync::OnceLock<Instant>>> = Arc::new(
        (0..args.publishes)
            .map(|_| std::sync::OnceLock::new())
            .collect(),
    );
    let total = args.publishes;
    let writer = {
        let window = window.clone();
        let sent_at = sent_at.clone();
        let rate = args.rate;
        tokio::spawn(async move {
            let begin = Instant::now();
            let mut buf = String::with_capacity(128 * 1024);
            for i in 0..total {
                if let Some(rate) = rate {
                    let due = begin + Duration::from_secs_f64(i as f64 / rate as f64);
                    if due > Instant::now() {
                        if !buf.is_empty() {
                            w.write_all(buf.as_bytes()).await?;
                            buf.clear();
                        }
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                let permit = match window.try_acquire() {
                    Ok(p) => p,
                    Err(_) => {
                        if !buf.is_empty() {
                            w.write_all(buf.as_bytes()).await?;
                            buf.clear();
                        }
                        window.acquire().await.map_err(std::io::Error::other)?
                    }
                };
                permit.forget();
                let _ = sent_at[i].set(Instant::now());
                buf.push_str(&stanzas[i % stanzas.len()].replace("{ID}", &i.to_string()));
                if buf.len() > 64 * 1024 || rate.is_some() {
                    w.write_all(buf.as_bytes()).await?;
                    buf.clear();
                }
            }
            w.write_all(buf.as_bytes()).await?;
            Ok::<_, std::io::Error>(w)
        })
    };
    let begin = Instant::now();
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0usize;
    for _ in 0..total {
        let el = next_stanza(&mut reader).await?;
        let i: usize = el
            .get_attr("id")
            .and_then(|i| i.parse().ok())
            .ok_or("unexpected answer")?;
        if let Some(t) = sent_at[i].get() {
            latencies.push(t.elapsed());
        }
        if el.get_attr("type") != Some("result") {
            errors += 1;
        }
        window.add_permits(1);
    }
    let elapsed = begin.elapsed();
    let _w = writer.await??;
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "backend {:?}: {total} publishes in {elapsed:?}: {:.0}/s; errors {errors}",
        args.backend,
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency publish → answer: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
    println!("process RSS (bench + Nudge): {} kB", rss_kb().unwrap_or(0));
    if let Some(metrics) = nudge::metrics::handle() {
        let text = metrics.render();
        let answered = text
            .lines()
            .find(|l| l.starts_with("nudge_publishes_total{answer=\"result\""))
            .unwrap_or("nudge_publishes_total: none");
        println!("metrics recorder on: {answered}");
    }
    nudge.stop().await;
    Ok(())
}

/// A publish as Prosody sends it (an important message), ~1 KB.
fn publish_template(node: &str, secret: &str) -> String {
    format!(
        "<iq id='{{ID}}' to='{DOMAIN}' from='localhost' type='set'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'><x type='form' xmlns='jabber:x:data'><field type='hidden' var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field type='text-single' var='message-count'><value>1</value></field><field type='text-single' var='pending-subscription-count'/><field type='jid-single' var='last-message-sender'/><field type='text-single' var='last-message-body'><value>New Message!</value></field></x></notification></item></publish><publish-options><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>{secret}</value></field></x></publish-options></pubsub></iq>"
    )
}

async fn expect_header<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut StanzaReader<R>,
) -> Result<(), Box<dyn std::error::Error>> {
    match reader.next().await? {
        StreamItem::Header(_) => Ok(()),
        other => Err(format!("expected stream header, got {other:?}").into()),
    }
}

async fn next_stanza<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut StanzaReader<R>,
) -> Result<nudge::xmpp::Element, Box<dyn std::error::Error>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), reader.next()).await?? {
            StreamItem::Stanza(el) => return Ok(el),
            StreamItem::Keepalive => continue,
            StreamItem::Header(_) => return Err("unexpected header".into()),
            StreamItem::Oversize(_) => return Err("unexpected oversize stanza".into()),
        }
    }
}

fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
