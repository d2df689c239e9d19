//! Supervision: each plugin of a run in a worker process of its own (the same binary,
//! re-executed), under OS limits its plugin cannot get around (see `os`), so that a worker that
//! blows up dies alone and is reported with the reason. The supervisor holds no plugin state:
//! it starts the workers, waits until every plugin is admitted, relays output and progress,
//! passes the stop signal on, and reports how each plugin ended.
//!
//! With a home ([`Home`], the state root's `.pulsewatch/`), it also keeps compiled components
//! in a compile cache (identical components are compiled once), restarts a following plugin
//! that fails (from its committed cursor, after a pause that doubles from 100 ms to 30 s),
//! quarantines one that keeps failing at the same place, and writes the run's status every
//! second for `pulsewatch status`.

mod os;
mod process;
mod protocol;
mod status;
mod worker;

pub use status::{
    HOME_DIR, Home, PluginState, PluginStatus, Quarantine, RunStatus, Slots, Usage as PluginUsage,
};
pub use worker::serve;

use crate::runtime::{
    CompileCache, Console, Failure, Outcome, OutputSink, RunOptions, StopSignal, Tracker,
};
use crate::spec::{PluginSpec, RestartPolicy, sha256_hex};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use process::{Admission, Watch, Worker};
use protocol::Report;
use status::fingerprint;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// The pause before the first restart of a failed plugin; it doubles with each failure in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A run this long counts as healthy: the next failure starts the pauses over.
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Failures in a row without the cursor moving after which a plugin is quarantined.
pub const QUARANTINE_AFTER: u32 = 5;

/// How often the run's status is written.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The program a worker process runs: a binary whose `args` lead to [`serve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

impl WorkerCommand {
    /// This executable, with `args`.
    pub fn current_exe(
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> std::io::Result<Self> {
        Ok(WorkerCommand {
            program: std::env::current_exe()?,
            args: args.into_iter().map(Into::into).collect(),
        })
    }
}

/// Why a supervised run could not take place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuperviseError {
    /// A component cannot be run as a plugin; no plugin was started.
    #[error("{reason}")]
    Refused {
        /// The plugin.
        plugin: String,
        /// Why, naming it.
        reason: String,
    },
    /// A worker process could not be started; no plugin was started.
    #[error("cannot start a worker process ({}): {source}", program.display())]
    Spawn {
        /// The worker program.
        program: PathBuf,
        /// What the OS reported.
        source: std::io::Error,
    },
    /// The supervisor's own executor could not start.
    #[error("cannot start the async executor: {0}")]
    Executor(std::io::Error),
}

/// Runs plugins in worker processes.
#[derive(Debug, Clone)]
pub struct Supervisor {
    worker: WorkerCommand,
    home: Option<Home>,
}

/// Reads the plugins of a run again (a manifest, when the run is told to reload).
pub type Reload<'a> = &'a (dyn Fn() -> Result<Vec<PluginSpec>, String> + Sync);

/// A plugin of the run: its spec, its status, and a stop signal of its own (a child of the run's,
/// also given on its removal from the manifest).
struct Entry {
    spec: PluginSpec,
    status: Mutex<PluginStatus>,
    stop: StopSignal,
    tracker: Arc<Tracker>,
    /// The spec to start once this one has stopped (it changed in the manifest).
    replacement: Mutex<Option<PluginSpec>>,
    /// How it ended; `None` while it runs, or if it never started.
    outcome: Mutex<Option<Outcome>>,
}

impl Entry {
    fn new(spec: PluginSpec, options: &RunOptions) -> Arc<Entry> {
        Arc::new(Entry {
            status: Mutex::new(PluginStatus {
                name: spec.name.clone(),
                state: PluginState::Starting,
                cursor: None,
                restarts: 0,
                last_error: None,
                usage: PluginUsage::default(),
                limits: spec.limits,
                quarantine: None,
            }),
            tracker: options.progress.track(&spec.name),
            spec,
            stop: options.stop.child(),
            replacement: Mutex::new(None),
            outcome: Mutex::new(None),
        })
    }

    fn status(&self) -> MutexGuard<'_, PluginStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&self, state: PluginState) {
        self.status().state = state;
    }

    /// An outcome of this plugin: `failure`, before it ran.
    fn failed(&self, failure: Failure) -> Outcome {
        Outcome {
            plugin: self.spec.name.clone(),
            result: Err(failure),
            ..Outcome::default()
        }
    }

    fn set_outcome(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    }
}

impl Watch for Entry {
    fn progress(&self, report: &Report) {
        if let Report::Progress { cursor, resources } = report {
            if let Some(seq) = cursor {
                self.tracker.set_cursor(*seq);
            }
            self.tracker.set_resources(*resources);
            let mut status = self.status();
            status.cursor = *cursor;
            status.usage.memory_bytes = resources.memory_bytes;
            status.usage.disk_bytes = resources.disk_bytes;
            status.usage.disk_entries = resources.disk_entries;
        }
    }

    fn sampled(&self, cpu_ms: u64, rss_bytes: u64) {
        let mut status = self.status();
        status.usage.cpu_ms = cpu_ms;
        status.usage.rss_bytes = rss_bytes;
    }
}

/// The sha256 of a spec's component, as pinned or as read.
fn digest(spec: &PluginSpec) -> Option<String> {
    spec.sha256
        .clone()
        .or_else(|| std::fs::read(&spec.component).ok().map(|b| sha256_hex(&b)))
}

impl Supervisor {
    /// A supervisor starting workers with `worker`.
    pub fn new(worker: WorkerCommand) -> Self {
        Supervisor { worker, home: None }
    }

    /// This supervisor, keeping its compile cache, quarantine records and status in `home`.
    pub fn with_home(mut self, home: Home) -> Self {
        self.home = Some(home);
        self
    }

    /// Runs every plugin in a worker process of its own over the log at `db`, blocking the
    /// calling thread (which must not be inside an async executor), and returns how each ended,
    /// in the order given.
    ///
    /// No plugin starts until every one is admitted: a component that cannot be run as a plugin
    /// stops the run before it begins. With `options.follow`, a plugin that fails is restarted
    /// as its [`RestartPolicy`] says.
    pub fn run(
        &self,
        specs: &[PluginSpec],
        db: &Path,
        options: &RunOptions,
        sink: &Arc<dyn OutputSink>,
    ) -> Result<Vec<Outcome>, SuperviseError> {
        self.run_reloading(specs, db, options, sink, None)
    }

    /// [`Supervisor::run`], reading the plugins again with `reload` each time
    /// `options.reload` is requested: new plugins start, removed ones stop within their grace
    /// period, changed ones are stopped and started again; a reload that fails changes nothing
    /// and is reported.
    pub fn run_reloading(
        &self,
        specs: &[PluginSpec],
        db: &Path,
        options: &RunOptions,
        sink: &Arc<dyn OutputSink>,
        reload: Option<Reload<'_>>,
    ) -> Result<Vec<Outcome>, SuperviseError> {
        let executor = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SuperviseError::Executor)?;
        executor.block_on(self.run_async(specs, db, options, sink, reload))
    }

    /// [`Supervisor::run_reloading`] on the caller's tokio executor.
    pub async fn run_async(
        &self,
        specs: &[PluginSpec],
        db: &Path,
        options: &RunOptions,
        sink: &Arc<dyn OutputSink>,
        reload: Option<Reload<'_>>,
    ) -> Result<Vec<Outcome>, SuperviseError> {
        os::raise_open_files();
        let mut entries: Vec<Arc<Entry>> = Vec::new();
        let mut admitted = Vec::new();
        // The plugins' positions as last recorded in the home's slots.
        let mut recorded = Vec::new();
        for spec in specs {
            let entry = Entry::new(spec.clone(), options);
            match self.held_in_quarantine(&entry) {
                Some(outcome) => entry.set_outcome(outcome),
                None => admitted.push(entries.len()),
            }
            entries.push(entry);
        }
        self.write_status(&entries, true, &mut recorded);
        let (_scratch, cache) = self.cache();
        let to_admit: Vec<&PluginSpec> = admitted.iter().map(|&i| &entries[i].spec).collect();
        let run = RunContext {
            db,
            options,
            sink,
            cache: cache.as_deref(),
            compiled: Mutex::default(),
        };
        let workers = tokio::select! {
            workers = self.admit_all(&to_admit, &run) => workers?,
            () = options.stop.stopped() => {
                // Stopped before anything ran: nothing to wait for.
                for &index in &admitted {
                    entries[index].set_state(PluginState::Stopped);
                }
                self.write_status(&entries, false, &mut recorded);
                return Ok(outcomes_of(&entries, options));
            }
        };

        let mut running = FuturesUnordered::new();
        for (&index, ready) in admitted.iter().zip(workers) {
            running.push(self.lifecycle(entries[index].clone(), ready, &run));
        }
        let mut status_ticks = tokio::time::interval(STATUS_EVERY);
        while !running.is_empty() {
            tokio::select! {
                Some(ended) = running.next() => {
                    let replacement = ended
                        .replacement
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take();
                    if let Some(spec) = replacement.filter(|_| !options.stop.is_stopped()) {
                        let entry = Entry::new(spec, options);
                        entries.push(entry.clone());
                        running.push(self.lifecycle(entry, None, &run));
                    }
                }
                () = options.reload.requested(), if reload.is_some() && !options.stop.is_stopped() => {
                    let Some(reload) = reload else { continue };
                    match reload() {
                        Err(why) => sink.notice(&format!("plugins not reloaded, nothing changed: {why}")),
                        Ok(specs) => {
                            for entry in self.apply(&entries, &specs, options) {
                                entries.push(entry.clone());
                                running.push(self.lifecycle(entry, None, &run));
                            }
                        }
                    }
                }
                _ = status_ticks.tick() => self.write_status(&entries, true, &mut recorded),
            }
        }
        self.write_status(&entries, false, &mut recorded);
        Ok(outcomes_of(&entries, options))
    }

    /// Checks that every plugin of `specs` can be started, as a run would before starting any:
    /// each distinct component is compiled and admitted by a worker that only compiles, into
    /// the home's compile cache (so that the run that follows starts without compiling).
    /// Returns how many components were compiled, not found in the cache.
    pub fn check(&self, specs: &[PluginSpec]) -> Result<usize, SuperviseError> {
        let executor = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SuperviseError::Executor)?;
        let (_scratch, cache) = self.cache();
        let options = RunOptions::default();
        let sink: Arc<dyn OutputSink> = Arc::new(Console);
        let run = RunContext {
            // A worker that only compiles never opens the log.
            db: Path::new(""),
            options: &options,
            sink: &sink,
            cache: cache.as_deref(),
            compiled: Mutex::default(),
        };
        let specs: Vec<&PluginSpec> = specs.iter().collect();
        executor
            .block_on(self.compile_all(&specs, &run))
            .map(|compiled| compiled.len())
    }

    /// The compile cache: the home's, or one for this run only (removed when the returned
    /// guard drops). Without one (it cannot be made), each worker compiles its component
    /// itself, under its run limits.
    fn cache(&self) -> (Option<tempfile::TempDir>, Option<PathBuf>) {
        let scratch = self
            .home
            .is_none()
            .then(tempfile::tempdir)
            .and_then(Result::ok);
        let dir = match (&self.home, &scratch) {
            (Some(home), _) => home.cache_dir(),
            (None, Some(scratch)) => scratch.path().to_path_buf(),
            (None, None) => return (None, None),
        };
        let usable = CompileCache::open(&dir).is_ok();
        (scratch, usable.then_some(dir))
    }

    /// A plugin's quarantine, if it still holds: its record is for this very spec. A record for
    /// another spec (the manifest changed) is released.
    fn held_in_quarantine(&self, entry: &Entry) -> Option<Outcome> {
        let home = self.home.as_ref()?;
        let record = home.quarantine(&entry.spec.name)?;
        if record.fingerprint != fingerprint(&entry.spec) {
            let _ = home.release(&entry.spec.name);
            return None;
        }
        let mut status = entry.status();
        status.state = PluginState::Quarantined;
        status.last_error = Some(record.error.clone());
        status.quarantine = Some(record.clone());
        Some(Outcome {
            plugin: entry.spec.name.clone(),
            result: Err(Failure::Quarantined {
                seq: record.seq,
                failures: QUARANTINE_AFTER,
                last: record.error,
            }),
            ..Outcome::default()
        })
    }

    /// Starts and admits a worker for each spec. First each distinct component is compiled into
    /// the cache, once, by a worker that only compiles (under the compile budget); then every
    /// plugin's worker loads it from there. Returns, for each spec, its ready worker and whether
    /// its component was compiled for it (`None`: it ended before it was ready, and its
    /// lifecycle reports how from a fresh start).
    async fn admit_all(
        &self,
        specs: &[&PluginSpec],
        run: &RunContext<'_>,
    ) -> Result<Vec<Option<(Worker, bool)>>, SuperviseError> {
        let compiled_for = if run.cache.is_some() {
            self.compile_all(specs, run).await?
        } else {
            BTreeSet::new()
        };
        let launched =
            futures::future::join_all(specs.iter().map(|spec| self.launch(spec, run, false))).await;
        let mut ready = Vec::with_capacity(specs.len());
        for (i, launched) in launched.into_iter().enumerate() {
            let (worker, admission) = launched?;
            ready.push(match admission {
                Admission::Ready { compiled } => {
                    Some((worker, compiled || compiled_for.contains(&i)))
                }
                Admission::Refused(reason) => {
                    return Err(SuperviseError::Refused {
                        plugin: specs[i].name.clone(),
                        reason,
                    });
                }
                Admission::Ended(_) => None,
            });
        }
        Ok(ready)
    }

    /// Compiles each distinct component of `specs` into the run's cache, in parallel, each in
    /// a worker that only compiles (under the compile budget) and admits it as a plugin.
    /// Returns the indices of the specs whose component was compiled (not found in the cache).
    async fn compile_all(
        &self,
        specs: &[&PluginSpec],
        run: &RunContext<'_>,
    ) -> Result<BTreeSet<usize>, SuperviseError> {
        let mut seen = BTreeSet::new();
        let mut new = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let digest = digest(spec);
            if digest.as_ref().is_none_or(|d| seen.insert(d.clone())) {
                new.push((i, digest));
            }
        }
        let launched =
            futures::future::join_all(new.iter().map(|&(i, _)| self.launch(specs[i], run, true)))
                .await;
        let mut compiled_for = BTreeSet::new();
        for ((i, digest), launched) in new.into_iter().zip(launched) {
            match launched?.1 {
                Admission::Ready { compiled } => {
                    if compiled {
                        compiled_for.insert(i);
                    }
                    if let Some(digest) = digest {
                        let _ = run.compiled(&digest).set(());
                    }
                }
                Admission::Refused(reason) => {
                    return Err(SuperviseError::Refused {
                        plugin: specs[i].name.clone(),
                        reason,
                    });
                }
                Admission::Ended(outcome) => {
                    let why = match outcome.result {
                        Err(failure) => failure.to_string(),
                        Ok(()) => "its compiler ended without a word".into(),
                    };
                    return Err(SuperviseError::Refused {
                        plugin: specs[i].name.clone(),
                        reason: format!("{}: cannot be compiled: {why}", specs[i].name),
                    });
                }
            }
        }
        Ok(compiled_for)
    }

    /// Starts a worker for `spec` (one that only compiles, or one that runs) and waits until
    /// it says whether it admits the plugin.
    async fn launch(
        &self,
        spec: &PluginSpec,
        run: &RunContext<'_>,
        compile_only: bool,
    ) -> Result<(Worker, Admission), SuperviseError> {
        let mut worker = Worker::spawn(&self.worker, spec, run, compile_only).await?;
        let admission = worker.admit().await;
        Ok((worker, admission))
    }

    /// Applies a reloaded list of plugins to the running ones; returns the entries to start.
    fn apply(
        &self,
        entries: &[Arc<Entry>],
        specs: &[PluginSpec],
        options: &RunOptions,
    ) -> Vec<Arc<Entry>> {
        let live = |name: &str| {
            entries
                .iter()
                .rev()
                .find(|e| e.spec.name == name && !e.stop.is_stopped())
        };
        let mut started = Vec::new();
        for spec in specs {
            match live(&spec.name) {
                Some(entry) if entry.spec == *spec => {}
                Some(entry) => {
                    // Changed: stop it; its lifecycle's end starts the new spec.
                    *entry.replacement.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(spec.clone());
                    entry.stop.stop();
                }
                None => {
                    let entry = Entry::new(spec.clone(), options);
                    if let Some(home) = &self.home {
                        let _ = home.release(&spec.name);
                    }
                    started.push(entry);
                }
            }
        }
        for entry in entries {
            if !specs.iter().any(|s| s.name == entry.spec.name) && !entry.stop.is_stopped() {
                entry.stop.stop();
            }
        }
        started
    }

    /// Runs one plugin to its end and records how it ended on its entry.
    async fn lifecycle(
        &self,
        entry: Arc<Entry>,
        first: Option<(Worker, bool)>,
        run: &RunContext<'_>,
    ) -> Arc<Entry> {
        let outcome = self.supervised(&entry, first, run).await;
        entry.set_outcome(outcome);
        entry
    }

    /// Runs one plugin through its failures: restarts with growing pauses, and quarantine once
    /// it keeps failing where it stands.
    async fn supervised(
        &self,
        entry: &Entry,
        first: Option<(Worker, bool)>,
        run: &RunContext<'_>,
    ) -> Outcome {
        let options = run.options;
        let mut next = first;
        let mut restarts = 0;
        let mut compiled = false;
        let mut backoff = FIRST_BACKOFF;
        let mut failed_at: Option<Option<u64>> = None;
        let mut in_a_row = 0;
        loop {
            let ready = match next.take() {
                Some(ready) => Ok(ready),
                None => tokio::select! {
                    ready = self.start(entry, run, restarts == 0) => ready,
                    // Stopped while compiling or starting: its workers are killed as they drop.
                    () = entry.stop.stopped() => {
                        entry.set_state(PluginState::Stopped);
                        return entry.failed(cancelled_before_start(options));
                    }
                },
            };
            let mut outcome = match ready {
                Ok((worker, was_compiled)) => {
                    compiled |= was_compiled;
                    entry.set_state(PluginState::Running);
                    let started = Instant::now();
                    let outcome = worker
                        .run(&entry.stop, options.grace, run.sink, entry)
                        .await;
                    if started.elapsed() >= HEALTHY_RUN {
                        backoff = FIRST_BACKOFF;
                    }
                    outcome
                }
                Err(outcome) => outcome,
            };
            outcome.restarts = restarts;
            outcome.compiled = compiled;
            let Err(failure) = &outcome.result else {
                // Ended cleanly: on its own, or because it was asked to.
                entry.set_state(if entry.stop.is_stopped() {
                    PluginState::Stopped
                } else {
                    PluginState::Finished
                });
                return outcome;
            };
            entry.status().last_error = Some(failure.to_string());
            if entry.stop.is_stopped() {
                entry.set_state(PluginState::Stopped);
                return outcome;
            }
            if !options.follow || entry.spec.restart == RestartPolicy::Never {
                entry.set_state(PluginState::Failed);
                return outcome;
            }
            let at = entry.tracker.cursor();
            in_a_row = if failed_at == Some(at) {
                in_a_row + 1
            } else {
                1
            };
            failed_at = Some(at);
            if in_a_row >= QUARANTINE_AFTER {
                // The event after its cursor: the one it keeps failing on.
                let seq = at.map_or(1, |cursor| cursor.saturating_add(1));
                let record = Quarantine {
                    seq,
                    error: failure.to_string(),
                    at_ms: pulsewatch_log::now_ms(),
                    fingerprint: fingerprint(&entry.spec),
                };
                if let Some(home) = &self.home {
                    let _ = home.set_quarantine(&entry.spec.name, &record);
                }
                let mut status = entry.status();
                status.state = PluginState::Quarantined;
                status.quarantine = Some(record);
                drop(status);
                outcome.result = Err(Failure::Quarantined {
                    seq,
                    failures: in_a_row,
                    last: failure.to_string(),
                });
                return outcome;
            }
            entry.set_state(PluginState::BackingOff);
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = entry.stop.stopped() => {
                    entry.set_state(PluginState::Stopped);
                    return outcome;
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            restarts += 1;
            entry.status().restarts = restarts;
        }
    }

    /// Starts and admits a worker for a plugin that is already part of the run. The first
    /// start of a plugin that came with a reload (or a changed manifest entry) compiles its
    /// component as the run's first start did: in a worker that only compiles, under the
    /// compile budget, not the run worker's; once per component, however many plugins use it.
    async fn start(
        &self,
        entry: &Entry,
        run: &RunContext<'_>,
        first: bool,
    ) -> Result<(Worker, bool), Outcome> {
        entry.set_state(PluginState::Starting);
        let admitted = |admission| match admission {
            Admission::Ready { compiled } => Ok(compiled),
            Admission::Refused(reason) => Err(entry.failed(Failure::Worker(reason))),
            Admission::Ended(outcome) => Err(outcome),
        };
        let launch = |compile_only| async move {
            self.launch(&entry.spec, run, compile_only)
                .await
                .map_err(|e| entry.failed(Failure::Worker(e.to_string())))
        };
        let mut compiled_first = false;
        let new_to_run = first && run.cache.is_some();
        if let Some(digest) = new_to_run.then(|| digest(&entry.spec)).flatten() {
            run.compiled(&digest)
                .get_or_try_init(|| async {
                    compiled_first = admitted(launch(true).await?.1)?;
                    Ok(())
                })
                .await?;
        }
        let (worker, admission) = launch(false).await?;
        let compiled = admitted(admission)?;
        Ok((worker, compiled || compiled_first))
    }

    /// Writes the run's status, and the plugins' slots when their positions moved since
    /// `recorded` (the slots file is read and merged only then).
    fn write_status(
        &self,
        entries: &[Arc<Entry>],
        running: bool,
        recorded: &mut Vec<(String, u64)>,
    ) {
        let Some(home) = &self.home else {
            return;
        };
        // The latest entry of each name: a replaced spec's entry is history.
        let mut plugins: Vec<PluginStatus> = Vec::new();
        for entry in entries {
            let status = entry.status().clone();
            match plugins.iter_mut().find(|p| p.name == status.name) {
                Some(slot) => *slot = status,
                None => plugins.push(status),
            }
        }
        let positions: Vec<(String, u64)> = plugins
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.cursor?)))
            .collect();
        if positions != *recorded && home.record_slots(positions.clone()).is_ok() {
            *recorded = positions;
        }
        let _ = home.write_status(&RunStatus {
            pid: std::process::id(),
            running,
            updated_ms: pulsewatch_log::now_ms(),
            plugins,
        });
    }
}

/// What every worker of one run shares.
pub(crate) struct RunContext<'a> {
    pub(crate) db: &'a Path,
    pub(crate) options: &'a RunOptions,
    pub(crate) sink: &'a Arc<dyn OutputSink>,
    /// The compile cache workers load from; `None` when none could be made.
    pub(crate) cache: Option<&'a Path>,
    /// For each component digest, whether this run has had it compiled into the cache (or
    /// found it there), set once by whichever start did it.
    pub(crate) compiled: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<()>>>>,
}

impl RunContext<'_> {
    fn compiled(&self, digest: &str) -> Arc<tokio::sync::OnceCell<()>> {
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(compiled.entry(digest.to_owned()).or_default())
    }
}

/// Each entry's outcome; one that never got one was stopped before it started.
fn outcomes_of(entries: &[Arc<Entry>], options: &RunOptions) -> Vec<Outcome> {
    entries
        .iter()
        .map(|entry| {
            let outcome = entry
                .outcome
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            outcome.unwrap_or_else(|| Outcome {
                plugin: entry.spec.name.clone(),
                result: Err(cancelled_before_start(options)),
                ..Outcome::default()
            })
        })
        .collect()
}

fn cancelled_before_start(options: &RunOptions) -> Failure {
    Failure::Cancelled {
        grace: if options.stop.is_stopped_now() {
            Duration::ZERO
        } else {
            options.grace
        },
    }
}
