//! The worker side, driven by the supervisor through its stdin and stdout (see
//! [`super::protocol`]): one plugin in a process of its own under OS limits sized for it, or, in
//! the shared worker, every plugin of the run whose isolation is shared, each a task on one
//! executor, with one engine and one read handle of each log between them.

use super::os;
use super::protocol::{Assignment, Hello, Order, Report, Tagged, ToShared, send};
use crate::jetstream::{BadAddr, JetStreamError, StreamAddr, StreamFeed};
use crate::runtime::{
    CompileCache, CpuClock, EngineOptions, Failure, OutputSink, RunOptions, Runtime, Source,
    StopSignal, Stream,
};
use pulsewatch_log::{Log, OpenError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// The most often a plugin's progress is passed on while it moves: updates within this of the
/// first are reported together. Nothing is reported while it does not move.
const PROGRESS_REPORTS: Duration = Duration::from_millis(20);

/// The same in the shared worker, whose thousand plugins would otherwise report a thousand
/// times just as one event wakes them all, taking the supervisor's CPU from delivering it (the
/// status is written once a second at most).
const SHARED_PROGRESS_REPORTS: Duration = Duration::from_millis(250);

/// The most threads the shared worker's plugins' file I/O runs on at once.
const FILE_IO_THREADS: usize = 8;

/// How much lower than the plugins' threads the file I/O threads of the shared worker run
/// (`nice`, of the calling thread only on Linux; 19 is about a seventieth of the weight).
const FILE_IO_NICENESS: i32 = 19;

/// Serves the supervisor on stdin and stdout, then exits: one assignment, or, as the shared
/// worker, any number. A binary that hands its worker subcommand ([`super::WorkerCommand`]) to
/// this function can be a supervisor's worker. Exit status 2 means the supervisor could not be
/// understood; everything about the plugins, failures included, is reported on stdout.
pub fn serve() -> ExitCode {
    let served = read_hello().and_then(|hello| match hello {
        Hello::One(assignment) => serve_one(*assignment),
        Hello::Shared => serve_shared(),
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pulsewatch worker: {error}");
            ExitCode::from(2)
        }
    }
}

fn read_hello() -> Result<Hello, String> {
    let mut first = String::new();
    match std::io::stdin().read_line(&mut first) {
        Ok(0) => Err("no assignment on stdin".into()),
        Ok(_) => serde_json::from_str(&first).map_err(|e| format!("bad assignment: {e}")),
        Err(e) => Err(format!("cannot read the assignment: {e}")),
    }
}

/// Where one plugin's reports go: the worker's stdout, tagged with the plugin's id in the
/// shared worker. A supervisor that is gone is noticed on stdin instead.
#[derive(Debug, Clone, Copy)]
struct Reporter(Option<u64>);

impl Reporter {
    fn send(self, report: &Report) {
        let mut out = std::io::stdout().lock();
        let _ = match self.0 {
            None => send(&mut out, report),
            Some(id) => send(
                &mut out,
                &Tagged {
                    id,
                    message: report,
                },
            ),
        };
    }

    fn ended(self, result: Result<(), Failure>, detail: Option<String>) {
        self.send(&Report::Ended {
            result,
            detail,
            // The shared worker's peak is every plugin's, not this one's.
            peak_rss_bytes: self.0.map_or_else(|| os::peak_rss("self"), |_| None),
        });
    }
}

/// Plugin output, passed to the supervisor line by line.
struct Relay(Reporter);

impl OutputSink for Relay {
    fn line(&self, _plugin: &str, stream: Stream, line: &str) {
        self.0.send(&Report::Line {
            stream,
            text: line.to_owned(),
        });
    }

    fn notice(&self, text: &str) {
        self.0.send(&Report::Notice(text.to_owned()));
    }
}

/// What the supervisor's orders act on, for one plugin.
#[derive(Clone, Default)]
struct Control {
    start: Arc<Notify>,
    stop: StopSignal,
    /// The log, once open: the supervisor's notices of changes go to it.
    opened: Arc<OnceLock<Arc<Log>>>,
}

impl Control {
    fn obey(&self, order: Order) {
        match order {
            Order::Start => self.start.notify_one(),
            Order::Stop => self.stop.stop(),
            Order::StopNow => self.stop.stop_now(),
            Order::Changed => {
                if let Some(log) = self.opened.get().filter(|l| l.relies_on_notices()) {
                    log.changed();
                }
            }
        }
    }
}

/// The logs a worker's plugins read. In the shared worker, one read handle of each file for
/// all of them: one watch to wake them, and the file locks of one reader, not of a thousand,
/// which the kernel would walk on each lock a reader takes.
struct Logs {
    shared: Option<Opened<PathBuf, Log>>,
    /// The streams read, one connection each for every plugin of the process.
    streams: Opened<StreamAddr, StreamFeed>,
}

/// Handles opened once in a process, by what they open, for as long as someone holds them.
struct Opened<K, V>(Mutex<HashMap<K, Weak<V>>>);

impl<K, V> Default for Opened<K, V> {
    fn default() -> Self {
        Opened(Mutex::default())
    }
}

impl<K: Eq + std::hash::Hash, V> Opened<K, V> {
    /// The handle of `key`, if one is held.
    fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.get(key).and_then(Weak::upgrade)
    }

    /// Keeps `opened` as the handle of `key`, opened without holding the lock (so that other
    /// plugins go on meanwhile), unless another was kept for it meanwhile: the one kept.
    fn keep(&self, key: K, opened: V) -> Arc<V> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = held.get(&key).and_then(Weak::upgrade) {
            return first;
        }
        let opened = Arc::new(opened);
        held.retain(|_, handle| handle.strong_count() > 0);
        held.insert(key, Arc::downgrade(&opened));
        opened
    }
}

impl Logs {
    /// The stream of `addr`, opened once in this process. Following, servers that cannot be
    /// reached (or a stream without a leader yet) are waited for as a log that needs repair
    /// is: not the plugin's failure.
    async fn stream(
        &self,
        plugin: &str,
        addr: Result<StreamAddr, BadAddr>,
        follow: bool,
        stop: &StopSignal,
        reporter: Reporter,
    ) -> Result<Arc<StreamFeed>, String> {
        let addr = addr.map_err(|e| e.to_string())?;
        if let Some(stream) = self.streams.get(&addr) {
            return Ok(stream);
        }
        let opened = waiting(plugin, follow, stop, reporter, || async {
            match StreamFeed::open(&addr).await {
                Err(e @ (JetStreamError::Unavailable(_) | JetStreamError::Connect { .. })) => {
                    Err((e, Some("waiting for the servers")))
                }
                other => other.map_err(|e| (e, None)),
            }
        })
        .await;
        Ok(self.streams.keep(addr, opened.map_err(|e| e.to_string())?))
    }

    async fn open(
        &self,
        plugin: &str,
        db: &Path,
        follow: bool,
        stop: &StopSignal,
        reporter: Reporter,
    ) -> Result<Arc<Log>, OpenError> {
        let Some(shared) = &self.shared else {
            return open_log(plugin, db, follow, stop, reporter)
                .await
                .map(Arc::new);
        };
        if let Some(log) = shared.get(db) {
            return Ok(log);
        }
        let log = open_log(plugin, db, follow, stop, reporter).await?;
        Ok(shared.keep(db.to_path_buf(), log))
    }

    /// The supervisor saw `db` change: wakes its waiters.
    fn changed(&self, db: &Path) {
        let log = self.shared.as_ref().and_then(|shared| shared.get(db));
        if let Some(log) = log.filter(|l| l.relies_on_notices()) {
            log.changed();
        }
    }
}

/// The engine a worker runs its plugins with, taking compiled components from `cache_dir`.
fn runtime(compile_only: bool, cache_dir: Option<&Path>) -> Result<Runtime, String> {
    // A worker that only compiles is one of few; one that runs is one of many, and loads.
    let runtime = Runtime::with_options(EngineOptions {
        parallel_compilation: compile_only,
    })
    .map_err(|e| e.to_string())?;
    // Without its cache the plugin is compiled, which only costs time.
    Ok(
        match cache_dir.and_then(|dir| CompileCache::open(dir).ok()) {
            Some(cache) => runtime.with_cache(cache),
            None => runtime,
        },
    )
}

/// A process of its own for one plugin, under OS limits sized for it.
fn serve_one(assignment: Assignment) -> Result<(), String> {
    let reporter = Reporter(None);
    // Before anything is compiled: Cranelift's memory counts against the limit too.
    let limits = &assignment.spec.limits;
    let writes_logs = !assignment.spec.outputs.is_empty();
    if let Err(e) = os::restrict(limits, assignment.compile_only, writes_logs) {
        let failure = Failure::Worker(format!("cannot set its OS limits: {e}"));
        reporter.ended(Err(failure), None);
        return Ok(());
    }
    let runtime = runtime(assignment.compile_only, assignment.cache_dir.as_deref())?;
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async executor: {e}"))?;
    let control = Control::default();
    let orders = control.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            match serde_json::from_str(&line) {
                Ok(order) => orders.obey(order),
                Err(_) => break,
            }
        }
        // The supervisor is gone: nobody is left to wait for a graceful end.
        orders.stop.stop_now();
    });
    let logs = Logs {
        shared: None,
        streams: Opened::default(),
    };
    let job = Job {
        runtime: &runtime,
        reporter,
        control: &control,
        logs: &logs,
        shared: false,
    };
    executor.block_on(job.run(assignment));
    Ok(())
}

/// The shared worker's executor: a thread a core runs the plugins, and their file I/O runs on
/// at most [`FILE_IO_THREADS`] more at a lower priority. One event wakes every plugin at once,
/// and each then commits its checkpoint (a new file, synced and renamed): as equals, a pool of
/// hundreds of threads creating files would take most of the CPU from the threads that deliver
/// the event to the plugins still waiting for it. Measured with 1,000 plugins on 2 cores, p99
/// of the wake-up (`cargo bench --bench density`, before the log kept its answers for readers
/// sharing it): 320-470 ms with file I/O on the plugins' threads or on an unbounded pool at
/// their priority, 85 ms with two pool threads, 69-89 ms with this.
fn shared_executor() -> std::io::Result<tokio::runtime::Runtime> {
    const PLUGINS: &str = "pulsewatch-plugins";
    const FILE_IO: &str = "pulsewatch-file-io";
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // The executor's own threads are the first it starts, when it is built; the rest are its
    // blocking pool's.
    let started = std::sync::atomic::AtomicUsize::new(0);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .max_blocking_threads(FILE_IO_THREADS)
        .thread_name_fn(move || {
            let n = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (if n < cores { PLUGINS } else { FILE_IO }).to_owned()
        })
        .on_thread_start(|| {
            if std::thread::current().name() == Some(FILE_IO) {
                // Lowering one's own priority needs no privilege; failing to costs latency only.
                let _ = rustix::process::setpriority_process(None, FILE_IO_NICENESS);
            }
        })
        .enable_all()
        .build()
}

/// The shared worker: a task for each assignment on one executor with a thread a core, orders
/// passed to the plugin they name.
fn serve_shared() -> Result<(), String> {
    os::restrict_shared().map_err(|e| format!("cannot set its OS limits: {e}"))?;
    let executor =
        shared_executor().map_err(|e| format!("cannot start the async executor: {e}"))?;
    let mut runtime: Option<Arc<Runtime>> = None;
    let logs = Arc::new(Logs {
        shared: Some(Opened::default()),
        streams: Opened::default(),
    });
    let controls: Arc<Mutex<HashMap<u64, Control>>> = Arc::default();
    let control = |id| {
        let controls = controls.lock().unwrap_or_else(|e| e.into_inner());
        controls.get(&id).cloned()
    };
    let mut tasks = tokio::task::JoinSet::new();
    for line in std::io::stdin().lines().map_while(Result::ok) {
        let Ok(message) = serde_json::from_str::<ToShared>(&line) else {
            break;
        };
        match message {
            ToShared::Assign { id, assignment } => {
                let runtime = match &runtime {
                    Some(runtime) => Arc::clone(runtime),
                    None => Arc::clone(runtime.insert(Arc::new(self::runtime(
                        false,
                        assignment.cache_dir.as_deref(),
                    )?))),
                };
                let own = Control::default();
                controls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, own.clone());
                let (logs, controls) = (Arc::clone(&logs), Arc::clone(&controls));
                // Ended tasks are let go as new ones come: restarts do not pile up.
                while tasks.try_join_next().is_some() {}
                tasks.spawn_on(
                    async move {
                        let reporter = Reporter(Some(id));
                        let job = Job {
                            runtime: &runtime,
                            reporter,
                            control: &own,
                            logs: &logs,
                            shared: true,
                        };
                        // A panic in the host's code for one plugin ends that plugin alone, and
                        // is reported as its end, which the supervisor waits for.
                        let run = std::panic::AssertUnwindSafe(job.run(*assignment));
                        if let Err(panic) = futures::FutureExt::catch_unwind(run).await {
                            let why = panic
                                .downcast_ref::<&str>()
                                .map(|s| (*s).to_owned())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            let failure = Failure::Worker(format!("the host panicked: {why}"));
                            reporter.ended(Err(failure), None);
                        }
                        controls
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&id);
                    },
                    executor.handle(),
                );
            }
            ToShared::Order { id, order } => {
                if let Some(control) = control(id) {
                    control.obey(order);
                }
            }
            ToShared::Changed(db) => logs.changed(&db),
        }
    }
    // The supervisor is gone: nobody is left to wait for a graceful end.
    for control in controls.lock().unwrap_or_else(|e| e.into_inner()).values() {
        control.stop.stop_now();
    }
    executor.block_on(async { while tasks.join_next().await.is_some() {} });
    Ok(())
}

/// Opens the log read-only. Following, a file that needs repair (its writer was killed) is
/// waited for: a crashed writer is not the plugin's failure, and must not restart or
/// quarantine it.
async fn open_log(
    plugin: &str,
    db: &Path,
    follow: bool,
    stop: &StopSignal,
    reporter: Reporter,
) -> Result<Log, OpenError> {
    waiting(plugin, follow, stop, reporter, || async {
        match Log::open_read_only(db) {
            Err(e @ OpenError::NeedsRepair { .. }) => {
                Err((e, Some("waiting for its writer to reopen it")))
            }
            other => other.map_err(|e| (e, None)),
        }
    })
    .await
}

/// What `open` opens. Following, an error it gives with a reason to wait is waited for,
/// saying so, with pauses doubling from 100 ms to 5 s, until the run stops.
async fn waiting<T, E: std::fmt::Display, F>(
    plugin: &str,
    follow: bool,
    stop: &StopSignal,
    reporter: Reporter,
    mut open: impl FnMut() -> F,
) -> Result<T, E>
where
    F: Future<Output = Result<T, (E, Option<&'static str>)>>,
{
    let mut pause = Duration::from_millis(100);
    loop {
        match open().await {
            Ok(opened) => return Ok(opened),
            Err((e, Some(why))) if follow && !stop.is_stopped() => {
                reporter.send(&Report::Notice(format!(
                    "plugin {plugin}: {e}; {why} (again in {pause:?})"
                )));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// One plugin's run in a worker, from its load to its end.
struct Job<'a> {
    runtime: &'a Runtime,
    reporter: Reporter,
    control: &'a Control,
    logs: &'a Logs,
    /// In the shared worker, with other plugins.
    shared: bool,
}

impl Job<'_> {
    async fn run(&self, assignment: Assignment) {
        let Assignment {
            spec,
            db,
            follow,
            grace,
            compile_only,
            log_http,
            notices,
            ..
        } = assignment;
        let reporter = self.reporter;
        let plugin = match self.runtime.load(&spec) {
            Ok(plugin) => plugin,
            Err(refusal) => return reporter.send(&Report::Refused(refusal.to_string())),
        };
        reporter.send(&Report::Ready {
            compiled: plugin.compiled(),
        });
        if compile_only {
            return;
        }
        let stop = &self.control.stop;
        tokio::select! {
            () = self.control.start.notified() => {}
            // The supervisor is gone before the run began: nothing to report to.
            () = stop.stopped_now() => return,
        }
        let source = match StreamAddr::from_location(&db) {
            Some(addr) => match self
                .logs
                .stream(&spec.name, addr, follow, stop, reporter)
                .await
            {
                Ok(stream) => Source::Stream(stream),
                Err(why) => return reporter.ended(Err(Failure::Log(why)), None),
            },
            None => {
                let log = match self
                    .logs
                    .open(&spec.name, &db, follow, stop, reporter)
                    .await
                {
                    Ok(log) => log,
                    Err(e) => return reporter.ended(Err(Failure::Log(e.to_string())), None),
                };
                // Past the system's limit of file watches (128 per user by default), a worker
                // cannot watch the log itself, and would look at it every 20 ms: the
                // supervisor's watch tells it instead.
                if notices && !log.is_watched() {
                    log.rely_on_notices();
                }
                let _ = self.control.opened.set(log.clone());
                Source::Log(log)
            }
        };

        let options = RunOptions {
            follow,
            stop: stop.clone(),
            grace,
            // In the shared worker, the process is not the plugin's, and its few threads serve
            // all the plugins.
            cpu_clock: if self.shared {
                CpuClock::Thread
            } else {
                CpuClock::Process
            },
            file_io_on_pool: self.shared,
            log_http,
            ..RunOptions::default()
        };
        let tracker = options.progress.track(&spec.name);
        let sink: Arc<dyn OutputSink> = Arc::new(Relay(reporter));
        let watched = tracker.clone();
        let every = if self.shared {
            SHARED_PROGRESS_REPORTS
        } else {
            PROGRESS_REPORTS
        };
        let progress = tokio::spawn(async move {
            let mut reported = None;
            loop {
                watched.updated().await;
                tokio::time::sleep(every).await;
                let now = (watched.cursor(), watched.resources());
                if reported != Some(now) {
                    reporter.send(&Report::Progress {
                        cursor: now.0,
                        resources: now.1,
                    });
                    reported = Some(now);
                }
            }
        });
        let outcome = self
            .runtime
            .run_async(&plugin, source, &options, &sink)
            .await;
        progress.abort();
        reporter.send(&Report::Progress {
            cursor: tracker.cursor(),
            resources: tracker.resources(),
        });
        reporter.ended(outcome.result, outcome.detail);
    }
}
