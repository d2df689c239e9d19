//! `pulsewatch run`: plugins over a database's change feed.

use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use pulsewatch::{Console, Limits, Log, Outcome, OutputSink, RunOptions, Runtime, StopSignal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `pulsewatch run`.
#[derive(ClapArgs)]
pub struct Args {
    /// The database file, opened read-only (a writer may append to it meanwhile).
    #[arg(long)]
    db: PathBuf,
    /// Where each plugin's /state directory lives [default: <db>.state next to the database].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Keep plugins waiting for new events; Ctrl-C stops them cleanly after they commit.
    #[arg(long)]
    follow: bool,
    /// Give an argument to a plugin, as PLUGIN=VALUE (repeatable, in order).
    #[arg(long = "arg", value_name = "PLUGIN=VALUE")]
    args: Vec<String>,
    /// Linear memory limit per plugin, in MiB.
    #[arg(long, default_value_t = Limits::default().memory_bytes >> 20)]
    memory_mib: usize,
    /// CPU budget per plugin between two feed calls, in fuel units (about one per instruction).
    #[arg(long, default_value_t = Limits::default().fuel_per_call)]
    fuel: u64,
    /// Print the full WebAssembly backtrace of a plugin that fails.
    #[arg(long, short)]
    verbose: bool,
    /// Plugin components (.wasm).
    #[arg(required = true)]
    plugins: Vec<PathBuf>,
}

/// `<db>.state` beside the database.
pub fn default_state_dir(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".state");
    db.with_file_name(name)
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let limits = Limits {
        memory_bytes: args
            .memory_mib
            .checked_mul(1 << 20)
            .context("--memory-mib is too large")?,
        fuel_per_call: args.fuel,
        ..Limits::default()
    };
    let runtime = Runtime::new(limits)?;
    let mut plugins = Vec::new();
    for path in &args.plugins {
        let plugin = runtime.load_file(path)?;
        if plugins
            .iter()
            .any(|p: &pulsewatch::Plugin| p.name() == plugin.name())
        {
            bail!(
                "two plugins are named {:?}: each needs its own state; rename one file",
                plugin.name()
            );
        }
        plugins.push(plugin);
    }
    let mut options = RunOptions::new(
        args.state_dir
            .clone()
            .unwrap_or_else(|| default_state_dir(&args.db)),
    );
    options.follow = args.follow;
    for arg in &args.args {
        let (plugin, value) = arg
            .split_once('=')
            .with_context(|| format!("--arg {arg:?}: expected PLUGIN=VALUE"))?;
        if !plugins.iter().any(|p| p.name() == plugin) {
            bail!("--arg {arg:?}: no plugin is named {plugin:?}");
        }
        options.args.push((plugin.to_owned(), value.to_owned()));
    }
    let log = Arc::new(Log::open_read_only(&args.db)?);
    if args.follow {
        stop_on_ctrl_c(&options.stop)?;
    }
    let sink: Arc<dyn OutputSink> = Arc::new(Console);
    let outcomes = runtime.run_all(&plugins, &log, &options, &sink);
    Ok(report(&outcomes, args.verbose))
}

/// First Ctrl-C: plugins commit and return. Second: exit at once.
pub fn stop_on_ctrl_c(stop: &StopSignal) -> anyhow::Result<()> {
    let stop = stop.clone();
    ctrlc::set_handler(move || {
        if stop.is_stopped() {
            std::process::exit(130);
        }
        eprintln!("stopping: plugins finish their batch and commit (Ctrl-C again to exit now)");
        stop.stop();
    })
    .context("cannot install the Ctrl-C handler")
}

/// One line per plugin that failed; exit status 1 if any did.
pub fn report(outcomes: &[Outcome], verbose: bool) -> ExitCode {
    let mut failed = false;
    for outcome in outcomes {
        if let Err(failure) = &outcome.result {
            failed = true;
            eprintln!("pulsewatch: plugin {} {failure}", outcome.plugin);
            if let (true, Some(detail)) = (verbose, &outcome.detail) {
                eprintln!("{detail}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
