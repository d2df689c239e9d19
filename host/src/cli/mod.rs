//! Command-line interface. Exit status: 0 success; 1 a plugin did not end cleanly; 2 the command
//! could not do its job (bad arguments, missing or corrupt database, bad input, a component
//! refused).

mod demo;
mod jsonl;
mod operate;
mod progress;
mod retention;
mod run;
mod standalone;

use clap::{Args as ClapArgs, Parser, Subcommand};
use pulsewatch::{Log, OpenError};
use pulsewatch_log::schema::FORMAT_VERSION;
use std::path::PathBuf;
use std::process::ExitCode;

/// Run untrusted WebAssembly plugins on a redb change feed.
#[derive(Parser)]
#[command(name = "pulsewatch", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a realistic stream of changes to a demo database and run the example plugins on it.
    Demo(demo::Args),
    /// Run plugins (WASI components) over a database's change feed.
    Run(run::Args),
    /// Check a manifest without running it: exit 0 if every plugin in it can be started.
    Check(operate::CheckArgs),
    /// Show where each plugin of a run stands (during the run, from another process, or after).
    Status(operate::StatusArgs),
    /// Let a quarantined plugin start again.
    Release(operate::ReleaseArgs),
    /// Delete old events, keeping those that plugins have not read yet.
    Compact(retention::CompactArgs),
    /// Forget a plugin's recorded position, so that it holds back no compaction.
    Forget(retention::ForgetArgs),
    /// Append one change to a database, creating it if needed.
    Append(jsonl::AppendArgs),
    /// Append changes from JSON lines (a file or stdin), all or nothing.
    Import(jsonl::ImportArgs),
    /// Print events as JSON lines.
    Tail(jsonl::TailArgs),
    /// Repair a database left unclean by a writer that stopped abruptly.
    Repair(RepairArgs),
    /// Rewrite a log of an older format in this format (in place, all or nothing).
    Upgrade(RepairArgs),
    /// Copy a database, as of one moment, to a file a plugin can read under `wasmtime run`.
    Snapshot(standalone::SnapshotArgs),
    /// Compose a plugin with the feed provider into a component that runs under `wasmtime run`.
    Bundle(standalone::BundleArgs),
    /// Run one plugin for a supervisor (`pulsewatch run` starts these itself).
    #[command(hide = true)]
    Worker,
}

/// Runs the command line and maps failures to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Check(args) => operate::check(&args),
        Command::Status(args) => operate::status(&args),
        Command::Release(args) => operate::release(&args),
        Command::Compact(args) => retention::compact(&args),
        Command::Forget(args) => retention::forget(&args),
        Command::Append(args) => jsonl::append(&args),
        Command::Import(args) => jsonl::import(&args),
        Command::Tail(args) => jsonl::tail(&args),
        Command::Repair(args) => repair(&args),
        Command::Upgrade(args) => upgrade(&args),
        Command::Snapshot(args) => standalone::snapshot(&args),
        Command::Bundle(args) => standalone::bundle(&args),
        Command::Worker => return pulsewatch::supervisor::serve(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}{}", hint(&error));
            ExitCode::from(2)
        }
    }
}

/// The command that fixes what `error` reports, when there is one.
fn hint(error: &anyhow::Error) -> String {
    match error.chain().find_map(|e| e.downcast_ref::<OpenError>()) {
        Some(OpenError::NeedsRepair { path }) => {
            format!("; run `pulsewatch repair --db {}`", path.display())
        }
        Some(OpenError::UnsupportedFormat { path, found }) if *found < FORMAT_VERSION => {
            format!("; run `pulsewatch upgrade --db {}`", path.display())
        }
        _ => String::new(),
    }
}

/// Arguments of `pulsewatch repair` and `pulsewatch upgrade`.
#[derive(ClapArgs)]
pub struct RepairArgs {
    /// The database file.
    #[arg(long)]
    db: PathBuf,
}

/// Rewrites an older log in place, in one transaction.
pub fn upgrade(args: &RepairArgs) -> anyhow::Result<ExitCode> {
    let events = Log::upgrade(&args.db)?;
    eprintln!(
        "{}: {}",
        args.db.display(),
        if events == 0 {
            "already in this format".to_owned()
        } else {
            format!("rewrote {events} events in this format")
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Opening for writing repairs a file a crashed writer left; readers can open it again after.
pub fn repair(args: &RepairArgs) -> anyhow::Result<ExitCode> {
    let log = Log::open(&args.db)?;
    eprintln!(
        "{}: consistent; head is seq {}",
        args.db.display(),
        log.head()?
    );
    Ok(ExitCode::SUCCESS)
}
