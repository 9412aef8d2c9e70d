//! The `nudge-bench` command: parses the command line and runs one mode of
//! the harness (`src/lib.rs` says what each does).
//!
//! With no subcommand it is the in-process mode with today's flags
//! (`nudge-bench --publishes 200000`), as before the external mode existed.

use clap::{Parser, Subcommand};
use nudge_bench::external::ExternalArgs;
use nudge_bench::inproc::InprocArgs;

/// mimalloc: the publish path allocates on the reader thread and frees on
/// worker threads, which glibc's malloc handles poorly (it was a third of
/// the CPU time in the benchmark). Nudge's own binary uses it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    about = "Load harness for Nudge's publish path",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The in-process mode's flags, when no subcommand is given.
    #[command(flatten)]
    inproc: InprocArgs,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Nudge in this process (library API): no-op backend or mock APNs.
    Inproc(InprocArgs),
    /// The `nudge` binary as a child process, one scenario.
    External(ExternalArgs),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.mode {
        None => runtime.block_on(nudge_bench::inproc::run(cli.inproc)),
        Some(Mode::Inproc(args)) => runtime.block_on(nudge_bench::inproc::run(args)),
        Some(Mode::External(args)) => {
            let json = args.json;
            let report = runtime.block_on(nudge_bench::scenarios::run(&args.options()))?;
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.human());
            }
            Ok(())
        }
    }
}
