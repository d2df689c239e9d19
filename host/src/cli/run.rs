//! `pulsewatch run`: plugins over a database's change feed, each in a worker process.

use super::logging::LogFormat;
use super::signals;
use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use pulsewatch::jetstream::{StreamAddr, StreamFeed};
use pulsewatch::limits::DEFAULT_GRACE;
use pulsewatch::{
    AllowedHost, Console, Failure, Home, Isolation, Limit, Limits, Log, OpenError, Outcome,
    OutputSink, PluginSpec, RunOptions, StopSignal, Stream, Supervisor, WorkerCommand, manifest,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `pulsewatch run`.
#[derive(ClapArgs)]
pub struct Args {
    /// The database file, opened read-only (a writer may append to it meanwhile), or a
    /// JetStream stream as nats://HOST:PORT[,HOST:PORT...]/STREAM.
    #[arg(
        long,
        visible_alias = "feed",
        value_name = "DB|nats://HOST:PORT/STREAM"
    )]
    db: PathBuf,
    /// Where each plugin's /state directory lives [default: <db>.state next to the database;
    /// <STREAM>.state in the working directory for a stream].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Keep plugins waiting for new events; Ctrl-C stops them cleanly after they commit.
    #[arg(long)]
    follow: bool,
    /// Give an argument to a plugin, as PLUGIN=VALUE (repeatable, in order).
    #[arg(long = "arg", value_name = "PLUGIN=VALUE")]
    args: Vec<String>,
    /// Grant every plugin an output log to commit derived events to (repeatable; created if
    /// missing), or a stream as nats://HOST:PORT/STREAM. A plugin knows it by its file name
    /// without `.redb`, or by the stream's name.
    #[arg(
        long = "output",
        value_name = "PATH|nats://HOST:PORT/STREAM",
        conflicts_with = "manifest"
    )]
    outputs: Vec<PathBuf>,
    /// Let every plugin send HTTP requests to this destination (repeatable), as
    /// scheme://host[:port]: "https://api.example.com", "https://*.example.com",
    /// "http://127.0.0.1:8080". Private and loopback addresses only where named.
    #[arg(
        long = "allow-outbound-host",
        value_name = "URL",
        conflicts_with = "manifest"
    )]
    allowed_outbound_hosts: Vec<AllowedHost>,
    /// Which process each plugin runs in: `process`, a worker of its own (the default), or
    /// `shared`, one worker for all of them, for many plugins on one machine (see the README
    /// for what it trades).
    #[arg(long, default_value = "process", conflicts_with = "manifest")]
    isolation: Isolation,
    #[command(flatten)]
    limits: LimitArgs,
    /// After Ctrl-C, how long plugins have to commit and return before they are cancelled.
    #[arg(long, default_value_t = DEFAULT_GRACE.into(), allow_hyphen_values = true)]
    grace: humantime::Duration,
    /// Serve the run's figures as Prometheus text on http://ADDR/metrics (port 0: any free
    /// port, said on stderr).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// How the host's lines are written: `text`, or `json` (one object a line, plugin output
    /// with the plugin's name as a field).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Print the full WebAssembly backtrace of a plugin that fails, and each HTTP request a
    /// plugin makes (method, URL, status, duration).
    #[arg(long, short)]
    verbose: bool,
    /// Share the plugins with every host run with this cluster name on the same servers: each
    /// plugin runs on one host at a time, and moves, with its /state, when its host goes (a
    /// stream feed only; implies --follow and a grace period of at most 2s; SIGHUP does not
    /// read the manifest again).
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// The plugins, their grants and limits, from a manifest (see the README); SIGHUP reads it
    /// again. Instead of component files and flags.
    #[arg(long, conflicts_with_all = ["plugins", "args"])]
    manifest: Option<PathBuf>,
    /// Plugin components (.wasm).
    #[arg(required_unless_present = "manifest")]
    plugins: Vec<PathBuf>,
}

/// Per-plugin limits, the same for every plugin of the run. Their bounds are the manifest's
/// ([`Limit`]); with `--manifest` each plugin's limits are the manifest's, and these are refused.
#[derive(ClapArgs)]
pub struct LimitArgs {
    /// Linear memory limit per plugin, in MiB [default: 64].
    #[arg(
        long,
        value_name = "MIB",
        conflicts_with = "manifest",
        allow_hyphen_values = true
    )]
    memory_mib: Option<String>,
    /// CPU time per plugin for each batch of new events it is given, e.g. 500ms or 2s; a plugin
    /// that spends more without receiving new events is stopped [default: 500ms].
    #[arg(
        long,
        value_name = "DURATION",
        conflicts_with = "manifest",
        allow_hyphen_values = true
    )]
    cpu: Option<String>,
    /// Wall-clock time a plugin may run, e.g. 30s or 10m [default: unlimited].
    #[arg(
        long,
        value_name = "DURATION",
        conflicts_with = "manifest",
        allow_hyphen_values = true
    )]
    wall_clock: Option<String>,
    /// Disk quota per plugin in its /state, in MiB [default: 256].
    #[arg(
        long,
        value_name = "MIB",
        conflicts_with = "manifest",
        allow_hyphen_values = true
    )]
    disk_mib: Option<String>,
    /// Files, directories and links a plugin may keep in its /state [default: 10000].
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "manifest",
        allow_hyphen_values = true
    )]
    disk_entries: Option<String>,
}

impl LimitArgs {
    /// The limits the flags give, each checked against the bounds a manifest has too.
    fn limits(&self) -> anyhow::Result<Limits> {
        let mut limits = Limits::default();
        for (limit, flag) in [
            (Limit::MemoryMib, &self.memory_mib),
            (Limit::Cpu, &self.cpu),
            (Limit::WallClock, &self.wall_clock),
            (Limit::DiskMib, &self.disk_mib),
            (Limit::DiskEntries, &self.disk_entries),
        ] {
            if let Some(text) = flag {
                limit
                    .set_text(&mut limits, text)
                    .with_context(|| format!("--{} {text}", limit.key().replace('_', "-")))?;
            }
        }
        Ok(limits)
    }
}

/// `<db>.state` beside the database; `<STREAM>.state` in the working directory for a stream.
pub fn default_state_dir(db: &Path) -> PathBuf {
    if let Some(Ok(addr)) = StreamAddr::from_location(db) {
        return PathBuf::from(format!("{}.state", addr.stream));
    }
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".state");
    db.with_file_name(name)
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    super::logging::init(args.log_format);
    let state_root = args
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(&args.db));
    let specs = match &args.manifest {
        Some(path) => manifest::load(path, &state_root)?,
        None => specs_from_flags(args, &state_root)?,
    };
    let stream = StreamAddr::from_location(&args.db).transpose()?;
    let mut replicas = 1;
    match &stream {
        // A stream that is missing or cannot hold a log is this command's error, as a database
        // is below.
        Some(addr) => {
            let feed = super::jetstream::block_on(StreamFeed::open(addr))??;
            replicas = feed.replicas();
        }
        // A missing or damaged database is this command's error, before any worker starts.
        // One that needs a repair is waited for when following (each worker says so), as its
        // writer will repair it when it starts again.
        None => match Log::open_read_only(&args.db) {
            Err(OpenError::NeedsRepair { .. }) if args.follow => {}
            opened => drop(opened?),
        },
    }
    if state_root.exists() && !state_root.is_dir() {
        bail!(
            "the state directory {} is not a directory: give --state-dir a directory (made if \
             missing)",
            state_root.display()
        );
    }
    let cluster = match (&args.cluster, &stream) {
        (Some(name), Some(addr)) => Some((name, addr)),
        (Some(_), None) => bail!(
            "--cluster shares plugins through JetStream: give the feed as --feed \
             nats://HOST:PORT/STREAM"
        ),
        (None, _) => None,
    };
    let grace: std::time::Duration = args.grace.into();
    let options = RunOptions {
        follow: args.follow || cluster.is_some(),
        // A plugin whose lease was lost must be stopped before another host can take it.
        grace: match cluster {
            Some(_) => grace.min(CLUSTER_GRACE),
            None => grace,
        },
        log_http: args.verbose,
        ..RunOptions::default()
    };
    signals::stop_on_signals(&options.stop, options.grace)?;
    signals::reload_on_sighup(&options.reload)?;
    if let Some(addr) = args.metrics {
        let addr = super::metrics::serve(addr, &args.db, Home::under(&state_root))?;
        say!("pulsewatch: metrics on http://{addr}/metrics");
    }
    let reload = |path: &PathBuf| {
        let (path, root) = (path.clone(), state_root.clone());
        move || manifest::load(&path, &root).map_err(|e| e.to_string())
    };
    let reload = args.manifest.as_ref().map(reload);
    if let Some((name, addr)) = cluster {
        return run_in_cluster(args, specs, name, addr, replicas, &options, &state_root);
    }
    let progress = super::progress::show(&specs, &args.db, &options);
    let outcomes = supervise(
        &specs,
        &args.db,
        &options,
        &Home::under(&state_root),
        reload
            .as_ref()
            .map(|r| r as &(dyn Fn() -> Result<Vec<PluginSpec>, String> + Sync)),
        false,
    );
    drop(progress);
    Ok(report(&outcomes?, &options, args.verbose))
}

/// The longest grace period of a host in a cluster: a plugin whose lease could not be renewed
/// is stopped within it, before another host can take it.
const CLUSTER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the plugins of `specs` this host holds in cluster `name`, as the leases come and go.
fn run_in_cluster(
    args: &Args,
    specs: Vec<PluginSpec>,
    name: &str,
    addr: &StreamAddr,
    replicas: usize,
    options: &RunOptions,
    state_root: &Path,
) -> anyhow::Result<ExitCode> {
    pulsewatch::jetstream::cluster::check_name(name)?;
    for spec in &specs {
        pulsewatch::jetstream::cluster::check_plugin(&spec.name)?;
        if !spec.outputs.is_empty() {
            pulsewatch::jetstream::StreamOutput::check_plugin(&spec.name)?;
        }
        // A log on this machine would be left behind when the plugin moves, and another host's
        // copy would start over: its outputs must be shared as its input is.
        if let Some(log) = spec
            .outputs
            .iter()
            .find(|o| StreamAddr::from_location(o).is_none())
        {
            anyhow::bail!(
                "plugin {} writes to {}, a log on this host: in a cluster a plugin moves between \
                 hosts, so its outputs must be streams (nats://HOST:PORT/STREAM, made with \
                 `pulsewatch stream create`)",
                spec.name,
                log.display()
            );
        }
    }
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let finished = Arc::new(tokio::sync::Notify::new());
    let controller = super::cluster::Controller {
        addr: addr.clone(),
        name: name.to_owned(),
        replicas,
        specs,
        held: held.clone(),
        options: options.clone(),
    };
    let executor = super::jetstream::executor()?;
    let ended = finished.clone();
    let controlling = std::thread::spawn(move || executor.block_on(controller.run(ended)));
    let reload = move || Ok(held.lock().unwrap_or_else(|e| e.into_inner()).clone());
    let outcomes = supervise(
        &[],
        &args.db,
        options,
        &Home::under(state_root),
        Some(&reload),
        true,
    );
    // However the supervisor ended, the controller ends too, after its last checkpoints.
    options.stop.stop();
    finished.notify_one();
    let _ = controlling.join();
    Ok(report(&outcomes?, options, args.verbose))
}

/// The plugins named on the command line, with the limits and arguments of the flags.
fn specs_from_flags(args: &Args, state_root: &Path) -> anyhow::Result<Vec<PluginSpec>> {
    let limits = args.limits.limits()?;
    let mut specs: Vec<PluginSpec> = Vec::new();
    for path in &args.plugins {
        let mut spec = PluginSpec::from_file(path, state_root).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}; its file name names the plugin, so rename the file, or name the plugin \
                 in a manifest",
                path.display()
            )
        })?;
        if specs.iter().any(|s| s.name == spec.name) {
            bail!(
                "two plugins are named {:?}: each needs its own state; rename one file",
                spec.name
            );
        }
        spec.limits = limits;
        spec.outputs.clone_from(&args.outputs);
        spec.allowed_outbound_hosts
            .clone_from(&args.allowed_outbound_hosts);
        spec.isolation = args.isolation;
        specs.push(spec);
    }
    for arg in &args.args {
        let (plugin, value) = arg
            .split_once('=')
            .with_context(|| format!("--arg {arg:?}: expected PLUGIN=VALUE"))?;
        let spec = specs
            .iter_mut()
            .find(|s| s.name == plugin)
            .with_context(|| format!("--arg {arg:?}: no plugin is named {plugin:?}"))?;
        spec.args.push(value.to_owned());
    }
    Ok(specs)
}

/// Runs `specs` in worker processes of this executable, output on the console, with the compile
/// cache, quarantine records and status in `home`; with `idle`, going on with none running
/// until stopped (a host of a cluster).
pub fn supervise(
    specs: &[PluginSpec],
    db: &Path,
    options: &RunOptions,
    home: &Home,
    reload: Option<pulsewatch::supervisor::Reload<'_>>,
    idle: bool,
) -> anyhow::Result<Vec<Outcome>> {
    let worker =
        WorkerCommand::current_exe(["worker"]).context("cannot find this executable's path")?;
    let sink: Arc<dyn OutputSink> = Arc::new(Shell {
        stop: options.stop.clone(),
    });
    let mut supervisor = Supervisor::new(worker).with_home(home.clone());
    if idle {
        supervisor = supervisor.staying_idle();
    }
    Ok(supervisor.run_reloading(specs, db, options, &sink, reload)?)
}

/// Plugin output on this process's stdout and stderr as `[plugin] line`. A closed stdout (`|
/// head`) stops the run, as it ends any Unix tool: every plugin gets its grace period to commit.
struct Shell {
    stop: StopSignal,
}

impl OutputSink for Shell {
    fn line(&self, plugin: &str, stream: Stream, line: &str) {
        if super::logging::json() {
            match stream {
                Stream::Stdout => {
                    tracing::info!(target: super::logging::PLUGIN_STDOUT, plugin, "{line}");
                }
                Stream::Stderr => tracing::info!(target: "plugin::stderr", plugin, "{line}"),
            }
            return;
        }
        let written = Console::write(plugin, stream, line);
        if written.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
            self.stop.stop();
        }
    }

    fn notice(&self, text: &str) {
        say!("pulsewatch: {text}");
    }
}

/// One line per plugin; exit status 1 if any failed, 130 if the run was stopped at once.
/// `verbose` adds each worker's peak memory and a failed plugin's WebAssembly backtrace.
pub fn report(outcomes: &[Outcome], options: &RunOptions, verbose: bool) -> ExitCode {
    let mut failed = false;
    for outcome in outcomes {
        let cursor = options
            .progress
            .cursor(&outcome.plugin)
            .map_or_else(String::new, |seq| format!(" at seq {seq}"));
        if let (true, Some(peak)) = (verbose, outcome.peak_rss_bytes) {
            say!(
                "pulsewatch: plugin {}: worker peak RSS {:.1} MiB",
                outcome.plugin,
                peak as f64 / f64::from(1 << 20)
            );
        }
        match &outcome.result {
            Ok(()) => say!(
                "pulsewatch: plugin {} ended cleanly{cursor}",
                outcome.plugin
            ),
            Err(failure) => {
                // A plugin that did not start because the run was stopped first did nothing
                // wrong.
                failed |= *failure != Failure::NotStarted;
                say!("pulsewatch: plugin {} {failure}", outcome.plugin);
                if let (true, Some(detail)) = (verbose, &outcome.detail) {
                    say!("{detail}");
                }
            }
        }
    }
    if options.stop.is_stopped_now() {
        ExitCode::from(130)
    } else if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
