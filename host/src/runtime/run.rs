//! Running: what a run of plugins is given (options), how each plugin's run ended (outcomes),
//! and the run itself, raced against the stop signal ([`super::StopSignal`]) and the plugin's
//! wall-clock limit, its CPU metered ([`super::cpu`]).

use super::classify::{Refusals, classify};
use super::cpu::CpuClock;
use super::emit;
use super::feed::{Feed, Source};
use super::outbound::{self, Outbound};
use super::output::{Capture, OutputSink, Stream};
use super::progress::Progress;
use super::signal::{ReloadSignal, StopSignal};
use super::{Failure, Plugin, cpu, grants, store};
use crate::limits::DEFAULT_GRACE;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use wasmtime::Engine;

/// How to run plugins.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Keep plugins waiting for new events until `stop` is given; otherwise a plugin's feed
    /// closes once it has caught up.
    pub follow: bool,
    /// Stops every plugin of the run.
    pub stop: StopSignal,
    /// After [`StopSignal::stop`], how long plugins have to commit and return before they are
    /// cancelled.
    pub grace: Duration,
    /// Updated with each plugin's cursor as it runs.
    pub progress: Progress,
    /// Asks a supervisor that can read its plugins again (from a manifest) to do so.
    pub reload: ReloadSignal,
    /// The CPU clock plugins are charged by: their thread's (the default), or the whole
    /// process's where a process runs one plugin.
    pub cpu_clock: CpuClock,
    /// Say each HTTP request a plugin makes (method, URL, status, duration) as a notice.
    pub log_http: bool,
    /// Run the plugins' file I/O (`/state`) on the executor's blocking pool instead of on the
    /// thread that runs the plugin: for a multi-threaded executor whose few threads serve many
    /// plugins, which one plugin's `fsync` would otherwise hold up. Under
    /// [`CpuClock::Thread`] that work is then not charged to the plugin.
    pub file_io_on_pool: bool,
}

impl Default for RunOptions {
    /// Run until caught up, with the default grace period.
    fn default() -> Self {
        RunOptions {
            follow: false,
            stop: StopSignal::new(),
            grace: DEFAULT_GRACE,
            progress: Progress::new(),
            reload: ReloadSignal::default(),
            cpu_clock: CpuClock::default(),
            log_http: false,
            file_io_on_pool: false,
        }
    }
}

/// How one plugin's run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The plugin's name.
    pub plugin: String,
    /// `Ok` if it ended cleanly.
    pub result: Result<(), Failure>,
    /// The full error, with the WebAssembly backtrace, when it did not.
    pub detail: Option<String>,
    /// The peak resident memory of its worker process, when it ran in one.
    pub peak_rss_bytes: Option<u64>,
    /// How many times a supervisor started it again after a failure.
    pub restarts: u32,
    /// Whether its component was compiled for this run (not taken from a compile cache).
    pub compiled: bool,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            plugin: String::new(),
            result: Ok(()),
            detail: None,
            peak_rss_bytes: None,
            restarts: 0,
            compiled: false,
        }
    }
}

impl Outcome {
    /// `plugin` ended with `failure`, with nothing more known of its run.
    pub fn failed(plugin: impl Into<String>, failure: Failure) -> Self {
        Outcome {
            plugin: plugin.into(),
            result: Err(failure),
            ..Outcome::default()
        }
    }
}

pub(crate) async fn execute_reported(
    engine: &Engine,
    plugin: &Plugin,
    source: &Source,
    options: &RunOptions,
    sink: &Arc<dyn OutputSink>,
) -> Outcome {
    let limits = &plugin.spec.limits;
    let name = plugin.name();
    let stdout = Capture::new(name, Stream::Stdout, limits.output_bytes, sink.clone());
    let stderr = Capture::new(name, Stream::Stderr, limits.output_bytes, sink.clone());
    let (result, refusals) = execute(engine, plugin, source, options, &stdout, &stderr, sink).await;
    stdout.finish();
    stderr.finish();
    let (result, detail) = match result {
        Ok(()) => (Ok(()), None),
        Err((failure, detail)) => {
            let refusals = Refusals {
                out_of_memory: stderr.said_out_of_memory(),
                ..refusals
            };
            (Err(refusals.blame(failure, limits)), detail)
        }
    };
    Outcome {
        plugin: name.to_owned(),
        result,
        detail,
        compiled: plugin.compiled(),
        ..Outcome::default()
    }
}

/// How a run's race ended.
enum Ended {
    Returned(wasmtime::Result<Result<(), ()>>),
    WallClock(Duration),
    Cancelled(Duration),
}

async fn execute(
    engine: &Engine,
    plugin: &Plugin,
    source: &Source,
    options: &RunOptions,
    stdout: &Capture,
    stderr: &Capture,
    sink: &Arc<dyn OutputSink>,
) -> (Result<(), (Failure, Option<String>)>, Refusals) {
    let spec = &plugin.spec;
    let grants = match grants::grant(spec, stdout, stderr, !options.file_io_on_pool) {
        Ok(grants) => grants,
        Err(failure) => return (Err((failure, None)), Refusals::default()),
    };
    let outputs = if spec.outputs.is_empty() {
        None
    } else {
        match emit::open(&spec.name, &source.name(), &spec.outputs).await {
            Ok(outputs) => Some(Arc::new(outputs)),
            Err(failure) => return (Err((failure, None)), Refusals::default()),
        }
    };
    let feed = Arc::new(Feed {
        source: source.clone(),
        reader: tokio::sync::Mutex::default(),
        poll_limits: spec.limits.poll,
        follow: options.follow,
        stop: options.stop.clone(),
        tracker: options.progress.track(&spec.name),
        outputs,
        delivered: AtomicU64::new(0),
        batch_since: AtomicU64::new(u64::MAX),
        start: AtomicU64::new(u64::MAX),
        emitted: AtomicU64::new(0),
    });
    let secret = match spec
        .webhook_secret
        .as_ref()
        .map(|s| outbound::decode_secret(&s.0))
    {
        Some(Err(e)) => {
            return (
                Err((Failure::Sandbox(e.to_string()), None)),
                Refusals::default(),
            );
        }
        Some(Ok(key)) => Some(key),
        None => None,
    };
    let outbound = Outbound::new(
        &spec.name,
        spec.allowed_outbound_hosts.clone(),
        secret,
        feed.clone(),
        options.log_http.then(|| sink.clone()),
    );
    let (mut store, meter) = match store::new_store(
        engine,
        &spec.limits,
        options.cpu_clock,
        grants,
        feed,
        outbound,
    ) {
        Ok(store) => store,
        Err(e) => return (Err(classify(e, &spec.limits)), Refusals::default()),
    };
    let ended = {
        let run = cpu::metered(&meter, async {
            let command = plugin.pre.instantiate_async(&mut store).await?;
            command.wasi_cli_run().call_run(&mut store).await
        });
        let wall_clock = async {
            match spec.limits.wall_clock {
                Some(limit) => {
                    tokio::time::sleep(limit).await;
                    limit
                }
                None => std::future::pending().await,
            }
        };
        // Dropping the losing futures cancels the plugin wherever it is: in its own code (at
        // its next yield point) or in a host call (sleep, wait, a stream).
        tokio::select! {
            result = run => Ended::Returned(result),
            limit = wall_clock => Ended::WallClock(limit),
            grace = options.stop.cancelled(options.grace) => Ended::Cancelled(grace),
        }
    };
    let refusals = Refusals {
        memory: store.data().limiter.refused(),
        disk: store.data().disk.breach(),
        out_of_memory: false,
    };
    let result = match ended {
        Ended::Returned(Ok(Ok(()))) => Ok(()),
        // `main` returned an error: Rust's runtime has printed it to stderr.
        Ended::Returned(Ok(Err(()))) => Err((Failure::Exit(1), None)),
        Ended::Returned(Err(e)) => match classify(e, &spec.limits) {
            // `exit(0)` ends a plugin as cleanly as returning from `main`.
            (Failure::Exit(0), _) => Ok(()),
            failure => Err(failure),
        },
        Ended::WallClock(limit) => Err((Failure::WallClock { limit }, None)),
        Ended::Cancelled(grace) => Err((Failure::Cancelled { grace }, None)),
    };
    (result, refusals)
}
