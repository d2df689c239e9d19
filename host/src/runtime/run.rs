//! Running and stopping: what a run of plugins is given (options, the stop signal), what it
//! reports (progress, outcomes), and the run itself, raced against the stop signal and the
//! plugin's wall-clock limit.

use super::classify::{Refusals, classify};
use super::feed::Feed;
use super::output::{Capture, OutputSink, Stream};
use super::{Failure, Plugin, cpu, grants, store};
use crate::limits::DEFAULT_GRACE;
use pulsewatch_log::Log;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
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
        }
    }
}

/// Stop levels; 0, the default, is running.
const GRACEFUL: u8 = 1;
const NOW: u8 = 2;

#[derive(Debug, Default)]
struct StopState {
    level: AtomicU8,
    changed: Notify,
    /// Signals made by [`StopSignal::child`]: each is raised with this one.
    children: std::sync::Mutex<Vec<std::sync::Weak<StopState>>>,
}

/// Stops the plugins of a run. [`StopSignal::stop`] asks them to finish: `poll` returns
/// nothing more and `wait` returns `closed`, so a plugin commits its cursor and returns; one
/// still running when the grace period ends is cancelled wherever it is. [`StopSignal::stop_now`]
/// cancels them at once. Cloning shares the signal; any thread may give it.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<StopState>);

impl StopSignal {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks plugins to finish within the grace period.
    pub fn stop(&self) {
        self.raise(GRACEFUL);
    }

    /// Cancels plugins at once.
    pub fn stop_now(&self) {
        self.raise(NOW);
    }

    /// A signal of its own that is also given whenever this one is: one plugin can be stopped
    /// alone, and a stop of the whole run reaches it, whenever it was made.
    pub fn child(&self) -> StopSignal {
        let child = StopSignal::new();
        let mut children = self.children();
        children.retain(|c| c.strong_count() > 0);
        children.push(Arc::downgrade(&child.0));
        // Read under the lock `raise` passes a level on under: a level raised before is seen
        // here, one raised after reaches the child through the list.
        child.raise(self.0.level.load(Ordering::SeqCst));
        drop(children);
        child
    }

    fn children(&self) -> std::sync::MutexGuard<'_, Vec<std::sync::Weak<StopState>>> {
        self.0.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn raise(&self, level: u8) {
        self.0.level.fetch_max(level, Ordering::SeqCst);
        self.0.changed.notify_waiters();
        for child in self.children().iter().filter_map(std::sync::Weak::upgrade) {
            StopSignal(child).raise(level);
        }
    }

    /// Whether plugins were asked to stop (either way).
    pub fn is_stopped(&self) -> bool {
        self.0.level.load(Ordering::SeqCst) >= GRACEFUL
    }

    /// Whether plugins were asked to stop at once.
    pub fn is_stopped_now(&self) -> bool {
        self.0.level.load(Ordering::SeqCst) >= NOW
    }

    async fn reached(&self, level: u8) {
        loop {
            let changed = self.0.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before the check, so a signal given in between is not missed.
            changed.as_mut().enable();
            if self.0.level.load(Ordering::SeqCst) >= level {
                return;
            }
            changed.await;
        }
    }

    /// Completes once [`StopSignal::stop`] (or `stop_now`) is given.
    pub async fn stopped(&self) {
        self.reached(GRACEFUL).await;
    }

    /// Completes once [`StopSignal::stop_now`] is given.
    pub async fn stopped_now(&self) {
        self.reached(NOW).await;
    }

    /// Completes when plugins must be cancelled: `grace` after [`StopSignal::stop`], or at
    /// [`StopSignal::stop_now`]. Returns the grace they had.
    pub(crate) async fn cancelled(&self, grace: Duration) -> Duration {
        self.stopped().await;
        tokio::select! {
            () = tokio::time::sleep(grace) => grace,
            () = self.stopped_now() => Duration::ZERO,
        }
    }
}

/// Asks a supervisor to read its plugins again (SIGHUP, for `pulsewatch run`). Cloning shares
/// the signal; any thread may give it; requests given while one is being handled make one more.
#[derive(Debug, Clone, Default)]
pub struct ReloadSignal(Arc<ReloadState>);

#[derive(Debug, Default)]
struct ReloadState {
    pending: std::sync::atomic::AtomicBool,
    requested: Notify,
}

impl ReloadSignal {
    /// Asks for a reload.
    pub fn request(&self) {
        self.0.pending.store(true, Ordering::SeqCst);
        self.0.requested.notify_waiters();
    }

    /// Completes when a reload is asked for, and takes the request.
    pub async fn requested(&self) {
        loop {
            let requested = self.0.requested.notified();
            let mut requested = std::pin::pin!(requested);
            requested.as_mut().enable();
            if self.0.pending.swap(false, Ordering::SeqCst) {
                return;
            }
            requested.await;
        }
    }
}

/// Where each plugin of a run is in the feed and what it uses: its cursor (the `since` of its
/// latest `poll` or `wait`, so every event up to it has been processed and, with the guest SDK,
/// committed), its linear memory and its disk. Lets a host watch consumers' lag while they
/// run. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<BTreeMap<String, Arc<Tracker>>>>);

/// The live figures of one plugin.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// The cursor, plus one: 0 until the plugin calls the feed.
    cursor: AtomicU64,
    pub(crate) memory_bytes: AtomicU64,
    pub(crate) disk_bytes: AtomicU64,
    pub(crate) disk_entries: AtomicU64,
}

impl Tracker {
    pub(crate) fn set_cursor(&self, seq: u64) {
        self.cursor.store(seq.saturating_add(1), Ordering::Relaxed);
    }

    pub(crate) fn cursor(&self) -> Option<u64> {
        self.cursor.load(Ordering::Relaxed).checked_sub(1)
    }

    pub(crate) fn resources(&self) -> Resources {
        Resources {
            memory_bytes: self.memory_bytes.load(Ordering::Relaxed),
            disk_bytes: self.disk_bytes.load(Ordering::Relaxed),
            disk_entries: self.disk_entries.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_resources(&self, resources: Resources) {
        self.memory_bytes
            .store(resources.memory_bytes, Ordering::Relaxed);
        self.disk_bytes
            .store(resources.disk_bytes, Ordering::Relaxed);
        self.disk_entries
            .store(resources.disk_entries, Ordering::Relaxed);
    }
}

/// What a plugin holds of its limits, as last seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Its linear memory, all memories together.
    pub memory_bytes: u64,
    /// The bytes in its `/state` (the quota's count, which may err high between measurements).
    pub disk_bytes: u64,
    /// The entries in its `/state`, likewise.
    pub disk_entries: u64,
}

impl Progress {
    /// A record of no plugin yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cursor `plugin` last asked from, if it has called the feed in a run using this record.
    pub fn cursor(&self, plugin: &str) -> Option<u64> {
        self.get(plugin)?.cursor()
    }

    /// What `plugin` holds of its limits, if it ran with this record.
    pub fn resources(&self, plugin: &str) -> Option<Resources> {
        Some(self.get(plugin)?.resources())
    }

    fn get(&self, plugin: &str) -> Option<Arc<Tracker>> {
        let trackers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        trackers.get(plugin).cloned()
    }

    /// The figures `plugin`'s run updates; created for a plugin seen first.
    pub(crate) fn track(&self, plugin: &str) -> Arc<Tracker> {
        let mut trackers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        trackers.entry(plugin.to_owned()).or_default().clone()
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

pub(crate) async fn execute_reported(
    engine: &Engine,
    plugin: &Plugin,
    log: &Arc<Log>,
    options: &RunOptions,
    sink: &Arc<dyn OutputSink>,
) -> Outcome {
    let limits = &plugin.spec.limits;
    let name = plugin.name();
    let stdout = Capture::new(name, Stream::Stdout, limits.output_bytes, sink.clone());
    let stderr = Capture::new(name, Stream::Stderr, limits.output_bytes, sink.clone());
    let (result, refusals) = execute(engine, plugin, log, options, &stdout, &stderr).await;
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
    log: &Arc<Log>,
    options: &RunOptions,
    stdout: &Capture,
    stderr: &Capture,
) -> (Result<(), (Failure, Option<String>)>, Refusals) {
    let spec = &plugin.spec;
    let grants = match grants::grant(spec, stdout, stderr) {
        Ok(grants) => grants,
        Err(failure) => return (Err((failure, None)), Refusals::default()),
    };
    let feed = Feed {
        log: log.clone(),
        poll_limits: spec.limits.poll,
        follow: options.follow,
        stop: options.stop.clone(),
        tracker: options.progress.track(&spec.name),
    };
    let (mut store, meter) = match store::new_store(engine, &spec.limits, grants, feed) {
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

#[cfg(test)]
mod tests {
    use super::StopSignal;

    #[test]
    fn a_child_stops_with_its_parent_whenever_made_and_alone_when_told() {
        let run = StopSignal::new();
        let early = run.child();
        early.stop();
        assert!(
            early.is_stopped() && !run.is_stopped(),
            "a child stops alone"
        );

        let running = run.child();
        run.stop();
        assert!(running.is_stopped() && !running.is_stopped_now());
        let late = run.child();
        assert!(late.is_stopped() && !late.is_stopped_now());
        run.stop_now();
        assert!(running.is_stopped_now() && late.is_stopped_now() && early.is_stopped_now());
        assert!(run.child().is_stopped_now());
    }

    #[tokio::test]
    async fn a_childs_waiters_wake_when_the_parent_is_given() {
        let run = StopSignal::new();
        let child = run.child();
        let waiter = tokio::spawn(async move { child.stopped_now().await });
        tokio::task::yield_now().await;
        run.stop_now();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
