//! The `nudge-test-app conformance app-server` command line: its
//! arguments and its exit status (0: no row failed, 1: a row failed, 2: a
//! usage or connection error), kept here so that `main.rs` only names the
//! subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{AppServerOptions, Dialect, Listen, run};
use crate::conformance::{Format, exit_status, print_report};

/// Arguments of `conformance app-server`.
#[derive(Debug, clap::Args)]
pub struct AppServerArgs {
    /// Where the App Server connects (its component port setting).
    #[arg(long)]
    pub listen: SocketAddr,
    /// The component domain the App Server serves.
    #[arg(long)]
    pub domain: String,
    /// The component secret (XEP-0114).
    #[arg(long)]
    pub secret: String,
    /// The domain publishes come from (the bare server domain) and clients
    /// register from.
    #[arg(long, default_value = "localhost")]
    pub user_domain: String,
    /// A registration dialect the App Server claims (repeatable):
    /// conversations:<app>, siskin:<provider>, push-appserver:<type>.
    #[arg(long = "dialect")]
    pub dialects: Vec<Dialect>,
    /// Control URL of a running `nudge-test-app serve` whose mock APNs/FCM
    /// the App Server pushes to (e.g. http://127.0.0.1:8080).
    #[arg(long)]
    pub test_app: Option<String>,
    /// How the report is printed.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Seconds to wait for the App Server to connect (and to come back).
    #[arg(long, default_value_t = 60)]
    pub wait_secs: u64,
}

/// Runs the mode and prints the report.
pub async fn main(args: AppServerArgs) -> ExitCode {
    let opts = AppServerOptions {
        listen: Listen::Addr(args.listen),
        domain: args.domain,
        secret: args.secret,
        user_domain: args.user_domain,
        dialects: args.dialects,
        test_app: args.test_app,
        wait: Duration::from_secs(args.wait_secs),
    };
    eprintln!(
        "nudge-test-app: waiting for the App Server on {} (up to {} s)",
        args.listen, args.wait_secs
    );
    let report = match run(opts).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nudge-test-app: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(status) = print_report(&report, args.format, args.json.as_deref()) {
        return status;
    }
    exit_status(&report)
}
