//! The `nudge` command: run the App Server, migrate its database, check a
//! configuration, and manage registrations.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nudge::config::Config;
use nudge::store::RegistrationStore;
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
    /// Connect to the XMPP server and serve push requests until stopped (SIGINT/SIGTERM).
    Run,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration (and build the push backends) and exit.
    CheckConfig,
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
    /// List registrations (optionally of one account).
    List {
        #[arg(long)]
        owner: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Show one registration.
    Show { node: String },
    /// Remove one registration.
    Remove { node: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
    match runtime.block_on(execute(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nudge: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn execute(command: Command, config: Config) -> Result<(), BoxError> {
    match command {
        Command::Run => run(config).await,
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
        Command::Registrations { command } => {
            let store = open_store(&config).await?;
            store.migrate().await?;
            match command {
                RegistrationsCommand::List { owner, limit } => {
                    for r in store.list(owner.as_deref(), limit).await? {
                        println!(
                            "{}\t{}\t{}\t{}\t{}",
                            r.node, r.owner, r.app, r.device_id, r.muc
                        );
                    }
                }
                RegistrationsCommand::Show { node } => match store.find(&node).await? {
                    Some(r) => {
                        println!("{}", serde_json::to_string_pretty(&registration_json(&r))?)
                    }
                    None => return Err(format!("no registration with node {node}").into()),
                },
                RegistrationsCommand::Remove { node } => {
                    if !store.remove(&node).await? {
                        return Err(format!("no registration with node {node}").into());
                    }
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
            brake(&store, command).await
        }
    }
}

async fn brake(store: &RegistrationStore, command: BrakeCommand) -> Result<(), BoxError> {
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

async fn open_store(config: &Config) -> Result<RegistrationStore, BoxError> {
    Ok(RegistrationStore::open(&config.database_url(), 16).await?)
}

async fn run(config: Config) -> Result<(), BoxError> {
    let backends = nudge::app::build_backends(&config).await?;
    let running = nudge::start(&config, backends).await?;
    let stop = running.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stop requested");
        let _ = stop.send(true);
    });
    let reason = running.wait().await;
    tracing::info!(?reason, "stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
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
