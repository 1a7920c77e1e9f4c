//! The `eligd` binary: parse the command line, set up logging, run the subcommand, and map
//! errors to one clear line and a non-zero exit code.

use std::process::ExitCode;

use eligd::cli::{AuditCommand, Cli, Command, SnapshotCommand};
use eligd::commands;

/// glibc's allocator spends a quarter of a feed catch-up in malloc/free (buffers allocated on
/// the I/O thread, freed on the apply thread); mimalloc keeps that small. See
/// docs/decisions/0003-feed-reader.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_with_default();
    eligd::logging::init(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => run_async(commands::serve::run(*args)),
        Command::Relay(args) => run_async(commands::relay::run(args)),
        Command::DemoData(args) => commands::demo_data::run(&args),
        Command::Snapshot(SnapshotCommand::Build(args)) => {
            commands::snapshot::build(&args, &mut eligd::logging::LogLines::new())
        }
        Command::Snapshot(SnapshotCommand::Inspect(args)) => {
            commands::snapshot::inspect(&args, &mut std::io::stdout())
        }
        Command::Snapshot(SnapshotCommand::Position(args)) => {
            commands::snapshot::position(&args, &mut std::io::stdout())
        }
        Command::Keys(command) => commands::keys::run(&command, &mut std::io::stdout()),
        Command::Audit(AuditCommand::Subject(args)) => {
            commands::audit::subject(&args, &mut std::io::stdout())
        }
        Command::CheckId(args) => {
            return match commands::check_id::run(&args.national_id, &mut std::io::stdout()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => report(e.into()),
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e),
    }
}

/// Runs a long-lived command on a multi-threaded runtime.
fn run_async(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(command);
    // Do not wait for work (an index load, a reconnect) that a shutdown interrupted.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

fn report(error: anyhow::Error) -> ExitCode {
    eligd::logging::report_error(&error);
    ExitCode::from(2)
}
