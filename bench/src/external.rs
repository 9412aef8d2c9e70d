//! The external mode's setting-up: the mock APNs (test-app, in this
//! process), a Nudge configuration in a temporary directory (SQLite, no
//! HTTP listener), the registrations seeded into the database, `nudge run`
//! as a child process, and the component handshake on 127.0.0.1:0. A
//! scenario (`src/scenarios/`) gets a [`Harness`] and drives publishes
//! through it with `crate::load`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use nudge_test_app::{Arrival, TestApp, TestAppConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::child::{ChildError, NudgeChild};
use crate::scenarios::Scenario;
use crate::seed::SeedError;
use crate::xmpp::{DOMAIN, SECRET, ServerSide, StreamError};

/// The name of the one app every device is registered with.
pub const APP: &str = "apns";

/// `nudge-bench external`'s options. Counts left out take the scenario's
/// defaults (`docs/benchmarks.md` lists them).
#[derive(Args, Debug, Clone)]
pub struct ExternalArgs {
    /// The `nudge` binary to measure (e.g. target/release/nudge).
    #[arg(long)]
    pub nudge: PathBuf,
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Publishes in the measured phase.
    #[arg(long)]
    pub publishes: Option<usize>,
    /// Publishes per second (paced); default: as fast as the window allows.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Publishes in flight at most.
    #[arg(long)]
    pub window: Option<usize>,
    /// Registered devices.
    #[arg(long)]
    pub devices: Option<u32>,
    /// `million`: publish to nodes never looked up (default: a warm-up
    /// pass over the same nodes first).
    #[arg(long)]
    pub cold: bool,
    /// `outbox`: how long the mock APNs answers 503, seconds.
    #[arg(long, default_value_t = 3)]
    pub outage_secs: u64,
    /// One JSON object instead of the human-readable lines.
    #[arg(long)]
    pub json: bool,
}

impl ExternalArgs {
    /// The options a scenario runs with.
    pub fn options(&self) -> Options {
        Options {
            nudge: self.nudge.clone(),
            scenario: self.scenario,
            publishes: self.publishes,
            rate: self.rate,
            window: self.window,
            devices: self.devices,
            cold: self.cold,
            outage: Duration::from_secs(self.outage_secs),
        }
    }
}

/// What one external run is asked for (the command line's, or a test's).
#[derive(Debug, Clone)]
pub struct Options {
    pub nudge: PathBuf,
    pub scenario: Scenario,
    pub publishes: Option<usize>,
    pub rate: Option<u64>,
    pub window: Option<usize>,
    pub devices: Option<u32>,
    pub cold: bool,
    pub outage: Duration,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("test-app: {0}")]
    TestApp(#[from] nudge_test_app::Error),
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Nudge exited, stalled, or answered what the scenario does not
    /// allow; with the end of its log.
    #[error("{what}\n--- end of nudge's log ---\n{log}")]
    Run { what: String, log: String },
}

/// How a scenario wants Nudge configured.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Registrations seeded before Nudge starts.
    pub devices: u32,
    /// `[dispatch] max_in_flight`.
    pub max_in_flight: usize,
    /// Keep Nudge's defaults for the coalescing window and the rate limits
    /// (`burst`); otherwise both are off, as in the in-process mode (every
    /// publish takes the send path).
    pub defaults_for_coalescing: bool,
    /// Outbox retries from 100 ms up to 1 s (`outbox`: the drain after an
    /// outage is then measured, not the backoff's ceiling).
    pub fast_retries: bool,
    /// Pushes the mock keeps in its record (the scenarios that read
    /// payloads back need them all).
    pub max_recorded: usize,
}

/// A running Nudge, its mock APNs and the stream to it.
#[derive(Debug)]
pub struct Harness {
    pub app: TestApp,
    pub child: NudgeChild,
    pub stream: ServerSide,
    /// Every push request the mock APNs records, as it arrives.
    pub arrivals: mpsc::UnboundedReceiver<Arrival>,
    /// Spawn of `nudge run` to the handshake acknowledged.
    pub startup: Duration,
    /// Writing the registrations (with `nudge migrate` before).
    pub seeding: Duration,
    /// Kept until the run ends: database, config, credentials, log.
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts everything for `setup`; see the module docs.
    pub async fn start(nudge: &Path, setup: &Setup) -> Result<Self, BenchError> {
        let dir = tempfile::tempdir()?;
        let app = nudge_test_app::start(TestAppConfig {
            max_recorded: setup.max_recorded.max(1),
            ..Default::default()
        })
        .await?;
        let files = app.export(dir.path())?;
        let creds = app.apns_credentials();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();

        let mut toml = format!(
            "[component]\ndomain = '{DOMAIN}'\nsecret = '{SECRET}'\nhost = '127.0.0.1'\nport = {port}\n\
             [storage]\ndata_dir = '{}'\n\
             [http]\nenabled = false\n\
             [log]\nlevel = 'error'\n\
             [dispatch]\nmax_in_flight = {}\n",
            dir.path().display(),
            setup.max_in_flight.max(1),
        );
        if !setup.defaults_for_coalescing {
            toml.push_str(
                "coalesce_ms = 0\n[limits]\nper_registration_burst = 1000000\n\
                 per_registration_per_minute = 1000000\nper_domain_burst = 1000000\n\
                 per_domain_per_second = 1000000\n",
            );
        }
        if setup.fast_retries {
            toml.push_str("[outbox]\nretry_min_ms = 100\nretry_max_secs = 1\n");
        }
        toml.push_str(&format!(
            "[apps.{APP}]\nprovider = 'apns'\ntopic = 'org.example.app'\nendpoint = '{}'\nca_file = '{}'\n\
             token = {{ key_path = '{}', key_id = '{}', team_id = '{}' }}\n",
            app.apns_url(),
            files.ca_cert.display(),
            files.apns_key.display(),
            creds.key_id,
            creds.team_id
        ));
        let config = dir.path().join("nudge.toml");
        std::fs::write(&config, toml)?;
        let log = dir.path().join("nudge.log");

        let t = Instant::now();
        crate::child::run_to_end(nudge, &config, &["migrate"], &log).await?;
        crate::seed::seed(&dir.path().join("nudge.db"), APP, setup.devices).await?;
        let seeding = t.elapsed();

        let arrivals = app.arrivals();
        let spawned = Instant::now();
        let mut child = NudgeChild::spawn(nudge, &config, &log)?;
        let stream = match crate::xmpp::accept(&listener, Duration::from_secs(60)).await {
            Ok(s) => s,
            Err(e) => {
                let what = match child.exited() {
                    Some(status) => format!("{e} (nudge exited: {status})"),
                    None => e.to_string(),
                };
                let log = child.log_tail();
                child.stop(Duration::from_secs(5)).await;
                return Err(BenchError::Run { what, log });
            }
        };
        let startup = stream.connected_at.duration_since(spawned);
        Ok(Self {
            app,
            child,
            stream,
            arrivals,
            startup,
            seeding,
            _dir: dir,
        })
    }

    /// A run error carrying the end of Nudge's log.
    pub fn fail(&self, what: impl Into<String>) -> BenchError {
        BenchError::Run {
            what: what.into(),
            log: self.child.log_tail(),
        }
    }

    /// Stops Nudge (SIGTERM, then kill) and the mock.
    pub async fn stop(self) {
        self.child.stop(Duration::from_secs(10)).await;
        self.app.shutdown().await;
    }
}
