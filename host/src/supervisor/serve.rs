//! The worker side: one plugin in a process of its own, under OS limits, driven by the
//! supervisor through its stdin and stdout (see [`super::protocol`]).

use super::os;
use super::protocol::{Assignment, Order, Report, send};
use crate::runtime::{
    CompileCache, CpuClock, EngineOptions, Failure, OutputSink, RunOptions, Runtime, StopSignal,
    Stream,
};
use pulsewatch_log::{Log, OpenError};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

/// The most often the plugin's progress is passed on while it moves: updates within this of the
/// first are reported together. Nothing is reported while it does not move.
const PROGRESS_REPORTS: Duration = Duration::from_millis(20);

/// Serves one assignment from the supervisor on stdin and stdout, then exits. A binary that
/// hands its worker subcommand ([`super::WorkerCommand`]) to this function can be a supervisor's
/// worker. Exit status 2 means the supervisor could not be understood; everything about the
/// plugin, failures included, is reported on stdout.
pub fn serve() -> ExitCode {
    match serve_assignment() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pulsewatch worker: {error}");
            ExitCode::from(2)
        }
    }
}

/// Sends a report; a supervisor that is gone is noticed on stdin instead.
fn report(message: &Report) {
    let _ = send(&mut std::io::stdout().lock(), message);
}

fn ended(result: Result<(), Failure>, detail: Option<String>) {
    report(&Report::Ended {
        result,
        detail,
        peak_rss_bytes: os::peak_rss("self"),
    });
}

/// Plugin output, passed to the supervisor line by line.
struct Relay;

impl OutputSink for Relay {
    fn line(&self, _plugin: &str, stream: Stream, line: &str) {
        report(&Report::Line {
            stream,
            text: line.to_owned(),
        });
    }

    fn notice(&self, text: &str) {
        report(&Report::Notice(text.to_owned()));
    }
}

/// Opens the log read-only. Following, a file that needs repair (its writer was killed) is
/// waited for, saying so, with pauses doubling from 100 ms to 5 s, until a writer reopens it or
/// the run stops: a crashed writer is not the plugin's failure, and must not restart or
/// quarantine it.
fn open_log(plugin: &str, db: &Path, follow: bool, stop: &StopSignal) -> Result<Log, OpenError> {
    let mut pause = Duration::from_millis(100);
    loop {
        match Log::open_read_only(db) {
            Err(e @ OpenError::NeedsRepair { .. }) if follow && !stop.is_stopped() => {
                report(&Report::Notice(format!(
                    "plugin {plugin}: {e}; waiting for its writer to reopen it (again in {pause:?})"
                )));
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

fn serve_assignment() -> Result<(), String> {
    let mut first = String::new();
    match std::io::stdin().read_line(&mut first) {
        Ok(0) => return Err("no assignment on stdin".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("cannot read the assignment: {e}")),
    }
    let Assignment {
        spec,
        db,
        follow,
        grace,
        cache_dir,
        compile_only,
        log_http,
        notices,
    } = serde_json::from_str(&first).map_err(|e| format!("bad assignment: {e}"))?;

    // Before anything is compiled: Cranelift's memory counts against the limit too.
    if let Err(e) = os::restrict(&spec.limits, compile_only, !spec.outputs.is_empty()) {
        ended(
            Err(Failure::Worker(format!("cannot set its OS limits: {e}"))),
            None,
        );
        return Ok(());
    }
    // A worker that only compiles is one of few; one that runs is one of many, and loads.
    let mut runtime = Runtime::with_options(EngineOptions {
        parallel_compilation: compile_only,
    })
    .map_err(|e| e.to_string())?;
    // Without its cache the plugin is compiled, which only costs time.
    if let Some(cache) = cache_dir.and_then(|dir| CompileCache::open(&dir).ok()) {
        runtime = runtime.with_cache(cache);
    }
    let plugin = match runtime.load(&spec) {
        Ok(plugin) => plugin,
        Err(refusal) => {
            report(&Report::Refused(refusal.to_string()));
            return Ok(());
        }
    };
    report(&Report::Ready {
        compiled: plugin.compiled(),
    });
    if compile_only {
        return Ok(());
    }

    let stop = StopSignal::new();
    let (start, started) = mpsc::channel();
    let orders_stop = stop.clone();
    // The log, once open: the supervisor's notices of changes go to it.
    let opened: Arc<OnceLock<Arc<Log>>> = Arc::default();
    let noticed = opened.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            match serde_json::from_str(&line) {
                Ok(Order::Start) => drop(start.send(())),
                Ok(Order::Stop) => orders_stop.stop(),
                Ok(Order::Changed) => {
                    if let Some(log) = noticed.get() {
                        log.changed();
                    }
                }
                Ok(Order::StopNow) | Err(_) => break,
            }
        }
        // The supervisor said so, or is gone: nobody is left to wait for a graceful end.
        orders_stop.stop_now();
    });
    if started.recv().is_err() {
        return Ok(());
    }
    let log = match open_log(&spec.name, &db, follow, &stop) {
        Ok(log) => Arc::new(log),
        Err(e) => {
            ended(Err(Failure::Log(e.to_string())), None);
            return Ok(());
        }
    };
    // Past the system's limit of file watches (128 per user by default), a worker cannot watch
    // the log itself, and would look at it every 20 ms: the supervisor's watch tells it instead.
    if notices && !log.is_watched() {
        log.rely_on_notices();
    }
    let _ = opened.set(log.clone());

    let options = RunOptions {
        follow,
        stop,
        grace,
        // One plugin a worker: everything the process does is done for it.
        cpu_clock: CpuClock::Process,
        log_http,
        ..RunOptions::default()
    };
    let tracker = options.progress.track(&spec.name);
    let sink: Arc<dyn OutputSink> = Arc::new(Relay);
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async executor: {e}"))?;
    let outcome = executor.block_on(async {
        let watched = tracker.clone();
        let reporter = tokio::spawn(async move {
            let mut reported = None;
            loop {
                watched.updated().await;
                tokio::time::sleep(PROGRESS_REPORTS).await;
                let now = (watched.cursor(), watched.resources());
                if reported != Some(now) {
                    report(&Report::Progress {
                        cursor: now.0,
                        resources: now.1,
                    });
                    reported = Some(now);
                }
            }
        });
        let outcome = runtime.run_async(&plugin, &log, &options, &sink).await;
        reporter.abort();
        outcome
    });
    report(&Report::Progress {
        cursor: tracker.cursor(),
        resources: tracker.resources(),
    });
    ended(outcome.result, outcome.detail);
    Ok(())
}
