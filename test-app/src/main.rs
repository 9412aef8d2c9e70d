//! `nudge-test-app`: runs the mock providers, the control API and the live
//! page as a process, for manual runs and for end-to-end setups that cannot
//! use the library in-process.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "nudge-test-app",
    version,
    about = "Mock APNs/FCM/Web Push providers and a live push page for testing Nudge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the mocks until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// XEP-0357 conformance kit: check a server or an App Server.
    #[command(subcommand)]
    Conformance(ConformanceCommand),
}

#[derive(Debug, Subcommand)]
enum ConformanceCommand {
    /// Play the XMPP server (XEP-0114) toward an App Server and check it.
    AppServer(nudge_test_app::conformance::app_server::cli::AppServerArgs),
    /// Play the App Server and two clients against an XMPP server.
    Server(nudge_test_app::conformance::server::cli::ServerArgs),
    /// Print a saved JSON report as a table (docs/conformance/ holds them).
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// The JSON report (`--json FILE` of either mode).
    file: PathBuf,
    /// How to print it.
    #[arg(long, value_enum, default_value_t = nudge_test_app::conformance::Format::Text)]
    format: nudge_test_app::conformance::Format,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to bind every endpoint to.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Control API and live page port (0: any free port).
    #[arg(long, default_value_t = 0)]
    control_port: u16,
    /// Mock APNs port (0: any free port).
    #[arg(long, default_value_t = 0)]
    apns_port: u16,
    /// Mock FCM port (0: any free port).
    #[arg(long, default_value_t = 0)]
    fcm_port: u16,
    /// Web Push endpoint port (0: any free port).
    #[arg(long, default_value_t = 0)]
    webpush_port: u16,
    /// Write the CA, APNs key, client identity, service account JSON and a
    /// Nudge config snippet into this directory.
    #[arg(long)]
    export_dir: Option<PathBuf>,
    /// An APNs topic the key may push to (repeatable; default
    /// org.example.app).
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// Accept any APNs topic.
    #[arg(long, conflicts_with = "topics")]
    any_topic: bool,
    /// FCM project id.
    #[arg(long, default_value = "nudge-test")]
    project: String,
    /// Lifetime of issued OAuth access tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    oauth_token_lifetime: u64,
    /// Write the HTTPS token endpoint into the service account's token_uri.
    #[arg(long)]
    oauth_https: bool,
    /// Reject APNs requests Apple accepts but that are almost surely bugs.
    #[arg(long)]
    strict: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match Cli::parse().command {
        Command::Serve(args) => args,
        Command::Conformance(ConformanceCommand::AppServer(args)) => {
            return nudge_test_app::conformance::app_server::cli::main(args).await;
        }
        Command::Conformance(ConformanceCommand::Server(args)) => {
            return nudge_test_app::conformance::server::cli::main(args).await;
        }
        Command::Conformance(ConformanceCommand::Show(args)) => return show(&args),
    };
    match serve(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nudge-test-app: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn show(args: &ShowArgs) -> std::process::ExitCode {
    let report = std::fs::read_to_string(&args.file)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            serde_json::from_str::<nudge_test_app::conformance::Report>(&text)
                .map_err(|e| e.to_string())
        });
    match report {
        Ok(report) => {
            print!("{}", args.format.render(&report));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nudge-test-app: {}: {e}", args.file.display());
            std::process::ExitCode::from(2)
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), nudge_test_app::Error> {
    let defaults = nudge_test_app::TestAppConfig::default();
    let config = nudge_test_app::TestAppConfig {
        bind: args.bind,
        apns_port: args.apns_port,
        fcm_port: args.fcm_port,
        webpush_port: args.webpush_port,
        control_port: args.control_port,
        apns_topics: if args.any_topic {
            Vec::new()
        } else if args.topics.is_empty() {
            defaults.apns_topics.clone()
        } else {
            args.topics
        },
        apns_strict: args.strict,
        fcm_project_id: args.project,
        oauth_token_lifetime: Duration::from_secs(args.oauth_token_lifetime),
        oauth_token_uri_https: args.oauth_https,
        ..defaults
    };
    let app = nudge_test_app::start(config).await?;
    println!("control + live page: {}/", app.control_url());
    println!("mock APNs:           {}", app.apns_url());
    println!("mock FCM:            {}", app.fcm_url());
    println!("Web Push endpoint:   {}/webpush/", app.webpush_url());
    println!("OAuth token_uri:     {}", app.oauth_token_url());
    if let Some(dir) = &args.export_dir {
        let files = app.export(dir)?;
        println!("credentials written: {}", dir.display());
        println!("  {}", files.summary.display());
        println!("  {}", files.nudge_apps_toml.display());
    } else {
        println!("credentials:         {}/api/credentials", app.control_url());
    }
    wait_for_signal().await;
    println!("shutting down");
    app.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
