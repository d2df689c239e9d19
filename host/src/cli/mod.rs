//! Command-line interface. Exit status: 0 success; 1 a plugin did not end cleanly (or `repair`
//! found damaged events); 2 the command could not do its job (bad arguments, missing or corrupt
//! database, bad input, a component refused); 128 + N stopped by signal N (130 for SIGINT, 143
//! for SIGTERM), with everything it had committed kept and the database closed cleanly.
//!
//! Output to a closed pipe (`| head`) ends a command quietly, as a Unix tool does: [`out!`] fails
//! with the broken pipe and [`main`] exits 0. Messages go to stderr with [`say!`], which never
//! fails.

/// Writes a line to stdout, returning the `io::Result` (a closed pipe ends the command quietly).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// Writes a line to stderr (a JSON line with `--log-format json`); a closed stderr loses the
/// line, and nothing else.
macro_rules! say {
    ($($arg:tt)*) => {{
        if $crate::cli::logging::json() {
            $crate::cli::logging::message(&format!($($arg)*));
        } else {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr().lock(), $($arg)*);
        }
    }};
}

mod author;
mod cluster;
mod demo;
mod http;
mod jetstream;
mod jsonl;
pub(crate) mod logging;
mod metrics;
mod operate;
mod progress;
mod receiver;
mod retention;
mod run;
mod safety;
mod signals;
mod standalone;

use clap::{Args as ClapArgs, Parser, Subcommand};
use pulsewatch::{Log, OpenError, ReadError};
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
    Run(Box<run::Args>),
    /// Run a plugin on a few events from a file, show what it did, and check it against
    /// expectations (exit 1 with a diff when one fails).
    Test(author::TestArgs),
    /// Write a new plugin project that builds, with events to test it on and its expected
    /// output (`pulsewatch test DIR` builds and tests it).
    New(author::NewArgs),
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
    /// Make or check a NATS JetStream stream that holds a log.
    #[command(subcommand)]
    Stream(jetstream::StreamCommand),
    /// Publish a database's log into a JetStream stream as it grows, with the same seqs,
    /// exactly once across restarts.
    Relay(jetstream::RelayArgs),
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
        Command::Test(args) => author::test(&args),
        Command::New(args) => author::new(&args),
        Command::Check(args) => operate::check(&args),
        Command::Status(args) => operate::status(&args),
        Command::Release(args) => operate::release(&args),
        Command::Compact(args) => retention::compact(&args),
        Command::Forget(args) => retention::forget(&args),
        Command::Append(args) => jsonl::append(&args),
        Command::Import(args) => jsonl::import(&args),
        Command::Tail(args) => jsonl::tail(&args),
        Command::Stream(command) => jetstream::stream(&command),
        Command::Relay(args) => jetstream::relay_command(&args),
        Command::Repair(args) => repair(&args),
        Command::Upgrade(args) => upgrade(&args),
        Command::Snapshot(args) => standalone::snapshot(&args),
        Command::Bundle(args) => standalone::bundle(&args),
        Command::Worker => return pulsewatch::supervisor::serve(),
    };
    match result {
        Ok(code) => code,
        Err(error) if closed_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            say!("error: {}{}", sentence(&error), hint(&error));
            ExitCode::from(2)
        }
    }
}

/// Whether `error` is a write to a reader that went away (`| head`): the command ends quietly.
fn closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `error` and its causes as one line, each cause said once: a library error that already says
/// its cause (`cannot open database: ...`) is not followed by the same words again.
pub fn sentence(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// The command that fixes what `error` reports, when there is one.
fn hint(error: &anyhow::Error) -> String {
    let damaged = error.chain().any(|e| {
        matches!(
            e.downcast_ref::<ReadError>(),
            Some(ReadError::Undecodable { .. })
        )
    });
    if damaged {
        return "; `pulsewatch repair --db DB` names every damaged range, and `pulsewatch \
                snapshot --skip-damaged` salvages the rest (see \"Damage and salvage\" in the README)"
            .into();
    }
    match error.chain().find_map(|e| e.downcast_ref::<OpenError>()) {
        Some(OpenError::NeedsRepair { path }) => {
            format!(
                "; run `pulsewatch repair --db {}` to repair it",
                path.display()
            )
        }
        Some(OpenError::UnsupportedFormat { path, found }) if *found < FORMAT_VERSION => {
            format!(
                "; run `pulsewatch upgrade --db {}` to rewrite it in this format",
                path.display()
            )
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

/// Rewrites an older log in place, in one transaction; a stop signal waits for it.
pub fn upgrade(args: &RepairArgs) -> anyhow::Result<ExitCode> {
    let caught = signals::catch_stops(|_| {})?;
    let events = Log::upgrade(&args.db)?;
    say!(
        "{}: {}",
        args.db.display(),
        if events == 0 {
            "already in this format".to_owned()
        } else {
            format!("rewrote {events} events in this format")
        }
    );
    Ok(caught
        .signal()
        .map_or(ExitCode::SUCCESS, signals::exit_code))
}

/// Opening for writing repairs a file a crashed writer left; then every batch is checked.
/// Exit status 1 if damaged events were found, with the ranges and the way forward.
pub fn repair(args: &RepairArgs) -> anyhow::Result<ExitCode> {
    let caught = signals::catch_stops(|_| {})?;
    let log = Log::open(&args.db)?;
    let verified = log.verify()?;
    let head = log.head().ok();
    drop(log);
    let db = args.db.display();
    for range in &verified.lost {
        say!(
            "{db}: events {}..{} were lost and left out by an earlier salvage; readers are told",
            range.start(),
            range.end()
        );
    }
    let code = if verified.damaged.is_empty() {
        say!(
            "{db}: consistent: {}, every checksum verified; head is seq {}",
            counted(&verified),
            head.unwrap_or(0)
        );
        ExitCode::SUCCESS
    } else {
        for damage in &verified.damaged {
            say!("{db}: damaged: {damage}");
        }
        say!(
            "{db}: {} damaged range{} ({} intact); readers stop at the first. Salvage every \
             intact event into a new log with\n   pulsewatch snapshot --db {db} -o salvaged.redb \
             --skip-damaged\nthen stop the writers and readers and move it into place (see \
             \"Damage and salvage\" in the README)",
            verified.damaged.len(),
            if verified.damaged.len() == 1 { "" } else { "s" },
            counted(&verified),
        );
        ExitCode::FAILURE
    };
    Ok(caught.signal().map_or(code, signals::exit_code))
}

/// `n` of a thing, in English: "1 event", "3 batches".
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "1 event", "2 events".
pub fn events(n: u64) -> String {
    count(n, "event", "events")
}

/// "N events in M batches".
fn counted(verified: &pulsewatch_log::Verified) -> String {
    format!(
        "{} in {}",
        events(verified.events),
        count(verified.batches, "batch", "batches")
    )
}
