//! `pulsewatch check`, `status` and `release`: a deployment's manifest checked without running
//! it, where each plugin of a run stands, and a quarantined plugin let go.

use super::jetstream::Feed;
use super::run::default_state_dir;
use anyhow::Context;
use clap::Args as ClapArgs;
use pulsewatch::supervisor::{PluginState, PluginStatus, RunStatus, Supervisor, WorkerCommand};
use pulsewatch::{Home, Log, PluginSpec, manifest};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `pulsewatch check`.
#[derive(ClapArgs)]
pub struct CheckArgs {
    /// The manifest.
    #[arg(long)]
    manifest: PathBuf,
    /// The database the run will read: its compile cache is filled, so that the run starts
    /// without compiling [default: a cache for the check only].
    #[arg(long)]
    db: Option<PathBuf>,
    /// Where the run's plugin state will live [default: <db>.state next to the database].
    #[arg(long, requires = "db")]
    state_dir: Option<PathBuf>,
}

/// Where to find a run's plugins: its database and state root.
#[derive(ClapArgs)]
pub struct RootArgs {
    /// The database file.
    #[arg(long)]
    db: PathBuf,
    /// Where the plugins' state lives [default: <db>.state next to the database].
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

impl RootArgs {
    /// The database file.
    pub(crate) fn db(&self) -> &Path {
        &self.db
    }

    /// The state root: `--state-dir`, or `<db>.state`.
    pub(crate) fn state_root(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| default_state_dir(&self.db))
    }

    /// The home of the run's plugins. A `--state-dir` given must exist: a misspelt one would
    /// otherwise find no plugins, and let `compact` delete what they have not read.
    pub(crate) fn home(&self) -> anyhow::Result<Home> {
        if let Some(dir) = &self.state_dir
            && !dir.is_dir()
        {
            anyhow::bail!(
                "--state-dir {} is not a directory of plugin state: give the --state-dir the \
                 run used",
                dir.display()
            );
        }
        Ok(Home::under(&self.state_root()))
    }
}

/// Arguments of `pulsewatch status`.
#[derive(ClapArgs)]
pub struct StatusArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Show the hosts of this cluster and which one runs each plugin (a stream feed's
    /// `run --cluster NAME`), instead of one host's run.
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
}

/// Arguments of `pulsewatch release`.
#[derive(ClapArgs)]
pub struct ReleaseArgs {
    /// The quarantined plugin.
    name: String,
    #[command(flatten)]
    root: RootArgs,
}

pub fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    // The run's database, when named, is checked as the run would open it.
    if let Some(db) = &args.db {
        drop(Log::open_read_only(db)?);
    }
    let root = args
        .state_dir
        .clone()
        .or_else(|| args.db.as_deref().map(default_state_dir));
    // Without a run to check for, the plugins' state directories are only named, not made.
    let specs = manifest::load(
        &args.manifest,
        root.as_deref().unwrap_or(Path::new("state")),
    )?;
    let worker =
        WorkerCommand::current_exe(["worker"]).context("cannot find this executable's path")?;
    let mut supervisor = Supervisor::new(worker);
    if let Some(root) = &root {
        supervisor = supervisor.with_home(Home::under(root));
    }
    let compiled = supervisor.check(&specs)?;
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    out!(
        "{}: {} can start: {}",
        args.manifest.display(),
        super::count(specs.len() as u64, "plugin", "plugins"),
        names.join(", "),
    )?;
    if let Some(root) = &root {
        out!(
            "compile cache {}: {} compiled now; the run loads them from there",
            Home::under(root).cache_dir().display(),
            super::count(compiled as u64, "component", "components"),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn release(args: &ReleaseArgs) -> anyhow::Result<ExitCode> {
    let home = args.root.home()?;
    PluginSpec::named(&args.name, "", &args.root.state_root())?;
    let released = home
        .release(&args.name)
        .with_context(|| format!("cannot release {}", args.name))?;
    if !released {
        let quarantined = home.quarantined();
        anyhow::bail!(
            "{} is not quarantined under {} (quarantined there: {})",
            args.name,
            home.dir().display(),
            if quarantined.is_empty() {
                "none".to_owned()
            } else {
                quarantined.join(", ")
            }
        );
    }
    say!(
        "{}: released; it starts with the next run (or the next reload of a running one)",
        args.name
    );
    Ok(ExitCode::SUCCESS)
}

/// One plugin as `status` shows it: its run's record and its lag against the log.
#[derive(Serialize)]
pub(super) struct Row {
    #[serde(flatten)]
    pub(super) status: PluginStatus,
    pub(super) head: u64,
    pub(super) lag_events: Option<u64>,
    pub(super) lag_ms: Option<u64>,
}

/// What `status --json` prints.
#[derive(Serialize)]
struct Report {
    running: bool,
    pid: u32,
    updated_ms: u64,
    head: u64,
    plugins: Vec<Row>,
}

/// Whether process `pid` is alive.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Each plugin of `run` with its lag behind `head`, in events and in the writer's time.
pub(super) fn rows(feed: &Feed, head: u64, run: &RunStatus) -> Vec<Row> {
    let head_ms = feed.timestamp_ms(head);
    run.plugins
        .iter()
        .cloned()
        .map(|status| {
            let lag_events = status.cursor.map(|c| head.saturating_sub(c));
            let lag_ms = match (status.cursor, head_ms) {
                (Some(cursor), Some(head_ms)) if cursor < head => feed
                    .timestamp_ms(cursor + 1)
                    .map(|next| head_ms.saturating_sub(next)),
                (Some(_), _) => Some(0),
                _ => None,
            };
            Row {
                status,
                head,
                lag_events,
                lag_ms,
            }
        })
        .collect()
}

pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.cluster {
        return super::cluster::status(&args.root.db, name, args.json);
    }
    let home = args.root.home()?;
    let feed = Feed::open(&args.root.db)?;
    let head = feed.head()?;
    let Some(mut run) = home.status().with_context(|| {
        format!(
            "cannot read the status of the run under {}",
            home.dir().display()
        )
    })?
    else {
        anyhow::bail!(
            "no run has recorded its status in {} yet: `pulsewatch run --db {}` does, with the \
             same --state-dir as here",
            home.dir().display(),
            args.root.db.display(),
        );
    };
    if run.running && !alive(run.pid) {
        // The supervisor was killed: what it said last is out of date.
        run.running = false;
        for plugin in &mut run.plugins {
            if matches!(
                plugin.state,
                PluginState::Running | PluginState::Starting | PluginState::BackingOff
            ) {
                plugin.state = PluginState::Stopped;
            }
        }
    }
    let rows = rows(&feed, head, &run);
    if args.json {
        let report = Report {
            running: run.running,
            pid: run.pid,
            updated_ms: run.updated_ms,
            head,
            plugins: rows,
        };
        out!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_table(&run, &home, head, &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1 << 20))
}

fn print_table(run: &RunStatus, home: &Home, head: u64, rows: &[Row]) -> std::io::Result<()> {
    out!(
        "{} (pid {}), head {head}, as of {} ms ago, from {}",
        if run.running {
            "running"
        } else {
            "not running"
        },
        run.pid,
        pulsewatch::now_ms().saturating_sub(run.updated_ms),
        home.dir().display()
    )?;
    out!(
        "{:<20} {:<12} {:>10} {:>10} {:>10} {:>8} {:>8} {:>14} {:>22} {:>20}  last error",
        "plugin",
        "state",
        "cursor",
        "lag",
        "lag time",
        "restarts",
        "cpu",
        "memory MiB",
        "disk MiB / entries",
        "http req/failed MiB"
    )?;
    for row in rows {
        let s = &row.status;
        let limits = &s.limits;
        out!(
            "{:<20} {:<12} {:>10} {:>10} {:>10} {:>8} {:>8} {:>14} {:>22} {:>20}  {}",
            s.name,
            s.state.to_string(),
            s.cursor.map_or("-".into(), |c| c.to_string()),
            row.lag_events.map_or("-".into(), |l| l.to_string()),
            row.lag_ms.map_or("-".into(), |ms| {
                humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
            }),
            s.restarts,
            format!("{:.1}s", s.usage.cpu_ms as f64 / 1000.0),
            format!(
                "{}/{}",
                mib(s.usage.held.memory_bytes),
                mib(limits.memory_bytes as u64)
            ),
            format!(
                "{}/{}, {}/{}",
                mib(s.usage.held.disk_bytes),
                mib(limits.disk.bytes),
                s.usage.held.disk_entries,
                limits.disk.entries
            ),
            match s.usage.held.http_requests {
                0 => "-".to_owned(),
                requests => format!(
                    "{requests}/{} {}",
                    s.usage.held.http_failures,
                    mib(s.usage.held.http_bytes)
                ),
            },
            match (&s.quarantine, &s.last_error) {
                (Some(q), _) => match q.seq {
                    Some(seq) => format!("quarantined at seq {seq}: {}", q.error),
                    None => format!("quarantined before reading any event: {}", q.error),
                },
                (None, Some(e)) => e.clone(),
                (None, None) => "-".into(),
            }
        )?;
    }
    Ok(())
}
