//! The `nudge` command: run the App Server, migrate its database, check a
//! configuration, ask a running instance for its status, send a test push,
//! and manage registrations. The longer commands live in `cli/`.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use nudge::config::{Config, LogFormat};
use nudge::instance::{InstanceLock, LockError, OtherInstance};
use nudge::store::RegistrationStore;
use nudge::xmpp::stream::LinkState;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// mimalloc: the publish path allocates on the reader thread and frees on
/// worker threads, which glibc's malloc handles poorly (it was a third of
/// the CPU time in the benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "nudge",
    version,
    about = "XEP-0357 push App Server (XEP-0114 component)"
)]
struct Cli {
    /// Configuration file (TOML); every key can be overridden by NUDGE_<SECTION>__<KEY>.
    #[arg(
        short,
        long,
        env = "NUDGE_CONFIG",
        default_value = "nudge.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the XMPP server and serve push requests until stopped
    /// (SIGINT/SIGTERM). SIGHUP starts a successor that replaces this
    /// process without a gap (`run --replace`).
    Run {
        /// Replace the running instance with this PID (with SQLite, the PID
        /// can be left out: it is read from the database's lock file). This
        /// process connects first, then stops the other one, which answers
        /// what it has read and exits: no publish bounces.
        #[arg(long, value_name = "PID", num_args = 0..=1)]
        replace: Option<Option<u32>>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration (and build the push backends) and exit.
    CheckConfig,
    /// Ask the running instance (at [http] listen) for its state: link,
    /// outbox, each app's last success and error. Fails when it does not
    /// answer (and prints what the database tells).
    Status {
        /// Print the instance's `/status` JSON as it came.
        #[arg(long)]
        json: bool,
    },
    /// Send one test push to a registration through its app's configured
    /// provider and print the answer; fails unless it was delivered. A dead
    /// token is reported, not removed.
    SendTest {
        /// The registration's node, or its 8-digit hash from a log line.
        #[arg(allow_hyphen_values = true)]
        node: String,
    },
    /// Inspect or remove registrations.
    Registrations {
        #[command(subcommand)]
        command: RegistrationsCommand,
    },
    /// The outbox of accepted pushes waiting for a retry.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// The brake on mass removal of dead tokens.
    Brake {
        #[command(subcommand)]
        command: BrakeCommand,
    },
    /// Web Push's VAPID key pair (needs no configuration).
    Vapid {
        #[command(subcommand)]
        command: VapidCommand,
    },
}

#[derive(Subcommand)]
enum VapidCommand {
    /// Print a new VAPID key pair: the private key for a webpush app's
    /// `vapid_private_key`, the public key for web clients'
    /// `applicationServerKey`.
    Generate,
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// How many pushes wait, and since when.
    Status,
}

#[derive(Subcommand)]
enum BrakeCommand {
    /// Apps whose brake engaged, and the removals held back.
    Status,
    /// Resume removals for an app: with --apply the held removals are
    /// carried out (registrations whose token is unchanged), without it
    /// they are discarded (the tokens were fine, e.g. after fixing the
    /// app's endpoint).
    Release {
        app: String,
        #[arg(long)]
        apply: bool,
    },
}

#[derive(Subcommand)]
enum RegistrationsCommand {
    /// List registrations (optionally of one account): node hash (as log
    /// lines show it), node, owner, app, device, room.
    List {
        #[arg(long)]
        owner: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Show one registration.
    Show {
        /// The node, or its 8-digit hash from a log line. Nodes are random
        /// base64url and may begin with `-`.
        #[arg(allow_hyphen_values = true)]
        node: String,
    },
    /// Remove one registration.
    Remove {
        #[arg(allow_hyphen_values = true)]
        node: String,
    },
}

/// `nudge vapid generate`: a new key pair, as the config and web clients
/// take it.
fn vapid_generate() -> ExitCode {
    match nudge_plugins::webpush::generate_vapid_key() {
        Ok((private, public)) => {
            println!("# [apps.NAME] with provider = \"webpush\": keep this secret");
            println!("vapid_private_key = \"{private}\"");
            println!("# applicationServerKey for web clients' pushManager.subscribe()");
            println!("# (also in the form of register-push-NAME executed without one)");
            println!("public key: {public}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nudge: cannot generate a VAPID key pair: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status when another instance holds the SQLite database: a unit that
/// restarts on failure must not retry it (`deploy/nudge.service`).
const EXIT_REFUSED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Vapid {
        command: VapidCommand::Generate,
    } = cli.command
    {
        return vapid_generate();
    }
    let config_path = cli.config.clone();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nudge: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: in the journal or a log file the escape
    // codes would be part of every line.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nudge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command, config, config_path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nudge: {e}");
            if e.downcast_ref::<LockError>()
                .is_some_and(|e| matches!(e, LockError::Held { .. }))
            {
                ExitCode::from(EXIT_REFUSED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn execute(command: Command, config: Config, config_path: PathBuf) -> Result<(), BoxError> {
    match command {
        Command::Run { replace } => run(config, config_path, replace).await,
        Command::Migrate => {
            let store = open_store(&config).await?;
            store.migrate().await?;
            println!("migrations applied ({})", store.kind());
            Ok(())
        }
        Command::CheckConfig => {
            let backends = nudge::app::build_backends(&config).await?;
            println!(
                "configuration OK: component {} via {}:{}, database {}, apps {:?}",
                config.component.domain,
                config.component.host,
                config.component.port,
                redact(&config.database_url()),
                backends.apps()
            );
            Ok(())
        }
        Command::Status { json } => cli::status::run(&config, json).await,
        Command::SendTest { node } => cli::send_test::run(&config, &node).await,
        Command::Registrations { command } => {
            let store = open_store(&config).await?;
            store.migrate().await?;
            match command {
                RegistrationsCommand::List { owner, limit } => {
                    for r in store.list(owner.as_deref(), limit).await? {
                        println!(
                            "{}\t{}\t{}\t{}\t{}\t{}",
                            r.node_for_log(),
                            r.node,
                            r.owner,
                            r.app,
                            r.device_id,
                            r.muc
                        );
                    }
                }
                RegistrationsCommand::Show { node } => {
                    let r = cli::find_registration(&store, &node).await?;
                    println!("{}", serde_json::to_string_pretty(&registration_json(&r))?)
                }
                RegistrationsCommand::Remove { node } => {
                    if !store.remove(&node).await? {
                        return Err(format!("no registration with node {node}").into());
                    }
                    tell_running_instance(&config);
                    println!("removed {node}");
                }
            }
            Ok(())
        }
        Command::Outbox { command } => {
            let store = open_store(&config).await?;
            store.migrate().await?;
            match command {
                OutboxCommand::Status => {
                    let s = store.outbox().summary().await?;
                    match s.oldest_created_at {
                        Some(t) => println!(
                            "{} pushes queued, the oldest accepted {} s ago",
                            s.queued,
                            nudge::store::now() - t
                        ),
                        None => println!("outbox empty"),
                    }
                }
            }
            Ok(())
        }
        Command::Brake { command } => {
            let store = open_store(&config).await?;
            store.migrate().await?;
            brake(&store, command, &config).await
        }
        // Handled before the configuration is read (`main`).
        Command::Vapid {
            command: VapidCommand::Generate,
        } => {
            vapid_generate();
            Ok(())
        }
    }
}

async fn brake(
    store: &RegistrationStore,
    command: BrakeCommand,
    config: &Config,
) -> Result<(), BoxError> {
    let brakes = store.brake();
    match command {
        BrakeCommand::Status => {
            let records = brakes.records().await?;
            let held = brakes.held(None).await?;
            if records.is_empty() && held.is_empty() {
                println!("no brake has engaged");
            }
            for (app, r) in records {
                let state = if r.released_at >= r.engaged_at {
                    "released"
                } else {
                    "engaged"
                };
                let count = held.iter().filter(|h| h.app == app).count();
                println!(
                    "{app}\t{state}\tengaged_at={}\treleased_at={}\theld={count}",
                    r.engaged_at, r.released_at
                );
            }
            for h in held {
                println!("held\t{}\t{}\t{}\t{}", h.app, h.node, h.reason, h.held_at);
            }
        }
        BrakeCommand::Release { app, apply } => {
            let held = brakes.release(&app, nudge::store::now()).await?;
            let mut removed = 0;
            if apply {
                for h in &held {
                    if store.remove_dead_token(&h.node, &h.token).await? {
                        removed += 1;
                    }
                }
                if removed > 0 {
                    tell_running_instance(config);
                }
                println!(
                    "brake released for {app}; {removed} of {} held removals applied",
                    held.len()
                );
            } else {
                println!(
                    "brake released for {app}; {} held removals discarded",
                    held.len()
                );
            }
        }
    }
    Ok(())
}

/// After the command line changed registrations in a SQLite database, the
/// instance that runs on it is told to forget its cache (PostgreSQL tells
/// every instance by itself, through a trigger and `LISTEN`).
fn tell_running_instance(config: &Config) {
    let holder = InstanceLock::path_for(&config.database_url())
        .as_deref()
        .and_then(InstanceLock::holder);
    let Some(instance) = holder.map(OtherInstance::new) else {
        return;
    };
    // A lock file outlives its holder: the PID may be another program's now.
    if instance.is_running()
        && instance.is_nudge()
        && let Err(e) = instance.forget_cache()
    {
        eprintln!(
            "nudge: the running instance (PID {}) was not told of the change: {e}; it sees it within storage.cache_max_age_secs",
            instance.pid()
        );
    }
}

async fn open_store(config: &Config) -> Result<RegistrationStore, BoxError> {
    Ok(RegistrationStore::open(&config.database_url(), 16).await?)
}

async fn run(
    config: Config,
    config_path: PathBuf,
    replace: Option<Option<u32>>,
) -> Result<(), BoxError> {
    // First of all: a signal that comes while starting (SIGUSR1 from the
    // command line, SIGHUP from a reload) must not end the process.
    let mut signals = Signals::new()?;
    let lock_path = InstanceLock::path_for(&config.database_url());
    let mut predecessor = match replace {
        None => None,
        Some(Some(pid)) => Some(OtherInstance::new(pid)),
        Some(None) => match lock_path.as_deref().and_then(InstanceLock::holder) {
            Some(pid) => Some(OtherInstance::new(pid)),
            None => {
                return Err(
                    "--replace without a PID: no running instance is recorded in the \
                            SQLite lock file; give the PID to replace (nudge run --replace PID)"
                        .into(),
                );
            }
        },
    };
    if predecessor.is_some_and(|p| p.pid() == std::process::id()) {
        return Err("--replace names this very process".into());
    }
    // Held until this function returns, which ends the process.
    let mut _lock = None;
    if let Some(path) = &lock_path {
        match InstanceLock::try_acquire(path) {
            Ok(taken) => {
                _lock = Some(taken);
                // Nothing runs on this database: there is nothing to
                // replace (a PID in a stale lock file may be another
                // program's by now).
                if let Some(p) = predecessor.take() {
                    warn!(
                        pid = p.pid(),
                        "--replace: no instance runs on this SQLite database; starting without a handover"
                    );
                }
            }
            // The instance being replaced: the lock is taken once it exits.
            Err(LockError::Held {
                pid: Some(holder), ..
            }) if predecessor.is_some_and(|p| p.pid() == holder) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The HTTP listener is bound before anything connects, so that a port
    // in use fails the start with a clear message; during a handover the
    // predecessor still holds it, and it is taken once that one exits.
    let mut http_listener = None;
    if config.http.enabled && predecessor.is_none() {
        http_listener = Some(bind_http(&config, None).await?);
    }
    // Metrics are rendered by the HTTP listener alone: without it no
    // recorder is installed and every metric is a no-op. Installed before
    // the start, whose handles bind to it (`nudge::metrics`).
    if config.http.enabled {
        nudge::metrics::install()?;
    }
    let backends = nudge::app::build_backends(&config).await?;
    let mut running = nudge::start(&config, backends).await?;
    if config.http.enabled {
        let state = running.http_state(&config);
        let stop = running.shutdown_handle();
        let bound = http_listener.take();
        let config = config.clone();
        tokio::spawn(async move {
            let listener = match bound {
                Some(l) => l,
                None => match bind_http(&config, predecessor).await {
                    Ok(l) => l,
                    Err(e) => {
                        error!(error = %e, "no HTTP listener: metrics, health and the API are unavailable");
                        return;
                    }
                },
            };
            nudge::http::serve(listener, nudge::http::router(state), stop).await;
        });
    }
    match predecessor {
        Some(p) => {
            if let Err(e) = take_over(&mut running, p, &config).await {
                running.stop().await;
                return Err(e);
            }
        }
        None => nudge::instance::notify_systemd(false),
    }
    let stop = running.shutdown_handle();
    let store = running.store.clone();
    let mut stopped = tokio::spawn(running.wait());
    // Once the replaced instance has exited: take the lock it held, and
    // forget what the cache learnt while the two ran side by side.
    let need_lock = lock_path.is_some() && _lock.is_none();
    let after_handover = store.clone();
    let mut handed_over = tokio::spawn(async move {
        let Some(p) = predecessor else {
            return Ok(None);
        };
        p.exited(Duration::from_secs(30)).await;
        info!(pid = p.pid(), "handover: PID {} has exited", p.pid());
        let taken = match &lock_path {
            Some(path) if need_lock => {
                Some(InstanceLock::acquire_when_free(path, Duration::from_millis(20)).await?)
            }
            _ => None,
        };
        after_handover.clear_cache();
        Ok::<_, LockError>(taken)
    });
    let mut waiting_for_predecessor = true;
    let mut successor: Option<tokio::process::Child> = None;
    loop {
        tokio::select! {
            reason = &mut stopped => {
                tracing::info!(reason = ?reason.ok(), "stopped");
                // Replaced by the successor this process started (SIGHUP):
                // tell systemd which process the service is now, before
                // this one exits. The successor says so itself once it
                // has stopped us, but with Prosody's kick_old we may be
                // kicked, and exit, before its message reaches systemd,
                // which would then end the service (`deploy/nudge.service`).
                if let Some(pid) = successor.as_ref().and_then(|c| c.id()) {
                    nudge::instance::notify_systemd_main_pid(pid);
                }
                return Ok(());
            }
            taken = &mut handed_over, if waiting_for_predecessor => {
                waiting_for_predecessor = false;
                match taken {
                    Ok(Ok(Some(taken))) => _lock = Some(taken),
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => error!(error = %e, "handover: cannot take the instance lock"),
                    Err(e) => error!(error = %e, "handover: waiting for the predecessor failed"),
                }
            }
            signal = signals.next() => match signal {
                Signal::Stop => {
                    info!("stop requested");
                    stop.trigger();
                }
                Signal::ForgetCache => {
                    info!("forgetting the cached registrations (changed from the command line)");
                    store.clear_cache();
                }
                Signal::Replace if successor.is_some() => {
                    info!("handover: a successor is starting already");
                }
                Signal::Replace => match nudge::instance::spawn_successor(&config_path) {
                    Ok(child) => {
                        info!(successor = child.id(), "handover: starting a successor, which stops this instance once it is connected");
                        successor = Some(child);
                    }
                    Err(e) => error!(error = %e, "handover: cannot start a successor; this instance keeps running"),
                },
            },
            status = wait_child(&mut successor), if successor.is_some() => {
                successor = None;
                if !stop.is_triggered() {
                    warn!(?status, "handover: the successor exited without taking over; this instance keeps running");
                }
            }
        }
    }
}

/// Binds `[http] listen`; while `predecessor` runs, a port in use is
/// waited for (it is the predecessor's, given up when it exits).
async fn bind_http(
    config: &Config,
    predecessor: Option<OtherInstance>,
) -> Result<tokio::net::TcpListener, BoxError> {
    let addr = config.http.listen;
    nudge::http::bind(
        addr,
        || predecessor.is_some_and(|p| p.is_running()),
        Duration::from_secs(35),
    )
    .await
    .map_err(|e| {
        format!(
            "cannot listen on {addr} ([http] listen): {e}; another process has it              (a second nudge on this machine needs its own port), or set [http] enabled = false"
        )
        .into()
    })
}

/// Connects beside the instance being replaced, then stops it.
async fn take_over(
    running: &mut nudge::Running,
    predecessor: OtherInstance,
    config: &Config,
) -> Result<(), BoxError> {
    let pid = predecessor.pid();
    info!(
        pid = std::process::id(),
        predecessor = pid,
        "handover: replacing the instance with PID {pid}"
    );
    let limit = config.stream().handshake_timeout + Duration::from_secs(5);
    let state = tokio::time::timeout(
        limit,
        running.state.wait_for(|s| {
            matches!(
                s,
                LinkState::Connected | LinkState::Standby | LinkState::AuthFailed
            )
        }),
    )
    .await;
    match state.as_ref().map(|s| s.as_ref().map(|s| (**s).clone())) {
        Ok(Ok(LinkState::Connected)) => {
            info!("handover: connected beside PID {pid}; stopping it");
        }
        Ok(Ok(LinkState::Standby)) => {
            warn!(
                "handover: the server refuses a second connection for the domain; stopping PID {pid} and \
                 taking over at the next attempt (publishes in between bounce; Prosody: set \
                 component_conflict_resolve = \"kick_old\" for a handover without a gap)"
            );
        }
        _ => {
            return Err(format!(
                "handover aborted: this instance could not connect to the XMPP server within {limit:?}; \
                 PID {pid} keeps running"
            )
            .into());
        }
    }
    predecessor.stop()?;
    nudge::instance::notify_systemd(true);
    Ok(())
}

async fn wait_child(child: &mut Option<tokio::process::Child>) -> Option<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await.ok(),
        None => std::future::pending().await,
    }
}

/// The signals `nudge run` acts on.
enum Signal {
    /// SIGTERM or SIGINT: stop gracefully.
    Stop,
    /// SIGHUP: start a successor that replaces this process.
    Replace,
    /// SIGUSR1: forget the cached registrations (the command line changed
    /// the SQLite database).
    ForgetCache,
}

struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = tokio::signal::ctrl_c() => Signal::Stop,
            _ = self.hup.recv() => Signal::Replace,
            _ = self.usr1.recv() => Signal::ForgetCache,
        }
    }
}

/// Hides a password in a database URL for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn registration_json(r: &nudge::store::Registration) -> serde_json::Value {
    serde_json::json!({
        "node": r.node,
        "node_hash": r.node_for_log().to_string(),
        "owner": r.owner,
        "domain": r.domain,
        "device_id": r.device_id,
        "muc": r.muc,
        "app": r.app,
        "token": r.token,
        "has_secret": r.secret.is_some(),
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    })
}
