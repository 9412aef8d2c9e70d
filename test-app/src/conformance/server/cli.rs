//! The `nudge-test-app conformance server` command line: its arguments and
//! its exit status (0: no row failed, 1: a row failed, 2: a usage or
//! connection error; with `--expect`, 0: the run matches the expected
//! table, 3: it differs), kept here so that `main.rs` only names the
//! subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Account, ServerOptions, TlsMode, TlsOptions, run};
use crate::conformance::{Format, exit_status, print_report};

/// Arguments of `conformance server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The server's client (c2s) address, HOST:PORT.
    #[arg(long)]
    pub c2s: String,
    /// The server's component (XEP-0114) address, HOST:PORT.
    #[arg(long)]
    pub component: String,
    /// The component domain the server has configured for the kit.
    #[arg(long)]
    pub domain: String,
    /// The component secret.
    #[arg(long)]
    pub secret: String,
    /// Two accounts, user@domain: the device owner first, then the sender.
    #[arg(long = "user", required = true)]
    pub users: Vec<String>,
    /// Their passwords, in the same order.
    #[arg(long = "password", required = true)]
    pub passwords: Vec<String>,
    /// STARTTLS on the client connections.
    #[arg(long, value_enum, default_value_t = TlsMode::Auto)]
    pub tls: TlsMode,
    /// Trust this PEM CA bundle for STARTTLS instead of the system's roots.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate.
    #[arg(long)]
    pub insecure: bool,
    /// How the report is printed.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Skip the 40 s no-answer wait and probe error answers 4 times only.
    #[arg(long)]
    pub quick: bool,
    /// Compare the run with this JSON report (a committed table, e.g.
    /// docs/conformance/prosody.json): the exit status says whether every
    /// row's verdict and value are the same (0) or not (3), whatever the
    /// verdicts; the differences go to standard error.
    #[arg(long)]
    pub expect: Option<PathBuf>,
}

/// Runs the mode and prints the report.
pub async fn main(args: ServerArgs) -> ExitCode {
    let ([owner, sender], [owner_pw, sender_pw]) =
        (args.users.as_slice(), args.passwords.as_slice())
    else {
        eprintln!(
            "nudge-test-app: conformance server needs --user and --password twice each: the owner, then the sender"
        );
        return ExitCode::from(2);
    };
    let opts = ServerOptions {
        c2s: args.c2s,
        component: args.component,
        domain: args.domain,
        secret: args.secret,
        owner: Account {
            jid: owner.clone(),
            password: owner_pw.clone(),
        },
        sender: Account {
            jid: sender.clone(),
            password: sender_pw.clone(),
        },
        tls: TlsOptions {
            mode: args.tls,
            ca_file: args.ca_file,
            insecure: args.insecure,
        },
        quick: args.quick,
    };
    let expected = match &args.expect {
        None => None,
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                serde_json::from_str::<crate::conformance::Report>(&text).map_err(|e| e.to_string())
            }) {
            Ok(report) => Some(report),
            Err(e) => {
                eprintln!("nudge-test-app: --expect {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let report = match run(opts).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("nudge-test-app: conformance server: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(status) = print_report(&report, args.format, args.json.as_deref()) {
        return status;
    }
    if let Some(expected) = expected {
        let differences = report.differences(&expected);
        if differences.is_empty() {
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "nudge-test-app: the run differs from {} in {} row(s):",
            args.expect
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            differences.len()
        );
        for line in differences {
            eprintln!("  {line}");
        }
        return ExitCode::from(3);
    }
    exit_status(&report)
}
