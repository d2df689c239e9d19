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
//!
//! One job a file: `entry` (the bookkeeping of each plugin), `launch` (compile once, then start
//! and admit workers), `worker` (one worker process as the supervisor holds it), `restart`
//! (restarts, backoff and quarantine), `reload` (a manifest read again), `status` and `home`
//! (what a run records of itself, and where), `os` (the limits a worker puts on itself),
//! `protocol` (what supervisor and worker say to each other) and `serve` (the worker's side).

mod entry;
mod home;
mod launch;
mod os;
mod protocol;
mod reload;
mod restart;
mod serve;
mod shared;
mod status;
mod worker;

pub use home::{HOME_DIR, Home, Slots};
pub use restart::{FIRST_BACKOFF, HEALTHY_RUN, MAX_BACKOFF, QUARANTINE_AFTER};
pub use serve::serve;
pub use status::{PluginState, PluginStatus, Quarantine, RunStatus, Usage as PluginUsage};

pub(crate) use launch::RunContext;

use crate::jetstream::StreamAddr;
use crate::runtime::{Console, Outcome, OutputSink, RunOptions};
use crate::spec::PluginSpec;
use entry::{Entry, outcomes_of};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
pub use os::same_file;
use pulsewatch_log::Log;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// A plugin's state directory is held by another run of it; no plugin was started.
    #[error(
        "plugin {plugin}: its state directory {} is in use by another run; stop that run, or give this one another --state-dir", path.display()
    )]
    InUse {
        /// The plugin.
        plugin: String,
        /// Its state directory.
        path: PathBuf,
    },
    /// A plugin's output log cannot be used; no plugin was started.
    #[error("plugin {plugin}: output log {}: {reason}", path.display())]
    Output {
        /// The plugin.
        plugin: String,
        /// The output log.
        path: PathBuf,
        /// Why.
        reason: String,
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
    /// Whether a run goes on with no plugin running, until stopped: a host of a cluster,
    /// whose reloads give it plugins as it takes their leases.
    idle: bool,
}

/// Reads the plugins of a run again (a manifest, when the run is told to reload).
pub type Reload<'a> = &'a (dyn Fn() -> Result<Vec<PluginSpec>, String> + Sync);

impl Supervisor {
    /// A supervisor starting workers with `worker`.
    pub fn new(worker: WorkerCommand) -> Self {
        Supervisor {
            worker,
            home: None,
            idle: false,
        }
    }

    /// This supervisor, going on while no plugin runs until the run is stopped, so that a
    /// reload can give it plugins (a host of a cluster, which starts with none).
    pub fn staying_idle(mut self) -> Self {
        self.idle = true;
        self
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
    /// as its [`crate::RestartPolicy`] says.
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
        if let Some((plugin, path)) = specs
            .iter()
            .find_map(|s| state_in_use(&s.state_dir).then(|| (s.name.clone(), s.state_dir.clone())))
        {
            return Err(SuperviseError::InUse { plugin, path });
        }
        for spec in specs {
            create_outputs(spec, db)?;
        }
        let mut entries: Vec<Arc<Entry>> = Vec::new();
        let mut admitted = Vec::new();
        // What was last written of the run's status and the plugins' slots.
        let mut recorded = status::Written::default();
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
        // One watch of each log the plugins read, for all their workers: past the system's
        // limit of file watches per user, workers could not each watch it themselves.
        let inputs: std::collections::BTreeSet<PathBuf> = specs
            .iter()
            .map(|s| s.input.clone().unwrap_or_else(|| db.to_path_buf()))
            .collect();
        let (appended, watchers): (HashMap<_, _>, Vec<_>) = inputs
            .into_iter()
            .filter_map(|path| {
                let log = pulsewatch_log::Log::open_read_only(&path).ok()?;
                log.is_watched().then_some(())?;
                let (tell, told) = tokio::sync::watch::channel(0u64);
                let watcher = tokio::spawn(async move {
                    // The count each wake-up returns, not one read after it: a change in
                    // between would go untold.
                    let mut seen = log.generation();
                    loop {
                        seen = log.appended(seen).await;
                        tell.send_modify(|n| *n = n.wrapping_add(1));
                    }
                });
                Some(((path, told), watcher))
            })
            .unzip();
        let _watchers = AbortOnDrop(watchers);
        let run = RunContext {
            db,
            options,
            sink,
            cache: cache.as_deref(),
            compiled: Mutex::default(),
            appended,
            shared: shared::SharedSlot::default(),
        };
        let workers = tokio::select! {
            workers = self.admit_all(&to_admit, &run) => workers?,
            () = options.stop.stopped() => {
                // Stopped before anything ran: nothing to wait for.
                for &index in &admitted {
                    entries[index].set_state(PluginState::Stopped);
                }
                self.write_status(&entries, false, &mut recorded);
                return Ok(outcomes_of(&entries));
            }
        };

        let mut running = FuturesUnordered::new();
        for (&index, ready) in admitted.iter().zip(workers) {
            running.push(self.lifecycle(entries[index].clone(), ready, &run));
        }
        let mut status_ticks = tokio::time::interval(STATUS_EVERY);
        while !running.is_empty() || (self.idle && !options.stop.is_stopped()) {
            tokio::select! {
                () = options.stop.stopped(), if running.is_empty() => {}
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
                    // Outputs are made (or refused) for the new list as for the first.
                    let reloaded = reload().and_then(|specs| {
                        for spec in &specs {
                            create_outputs(spec, db).map_err(|e| e.to_string())?;
                        }
                        Ok(specs)
                    });
                    match reloaded {
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
        Ok(outcomes_of(&entries))
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
            appended: HashMap::new(),
            shared: shared::SharedSlot::default(),
        };
        let specs: Vec<&PluginSpec> = specs.iter().collect();
        executor
            .block_on(self.compile_all(&specs, &run))
            .map(|compiled| compiled.len())
    }
}

/// Whether a run holds the state directory `dir` (its worker locks it for the run).
pub fn state_in_use(dir: &Path) -> bool {
    std::fs::File::open(dir)
        .is_ok_and(|dir| matches!(dir.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
}

/// Creates the output logs of `spec` that do not exist yet, before any worker starts: a plugin
/// of the same run may read one as its input. An output that is the plugin's own input is
/// refused.
fn create_outputs(spec: &PluginSpec, db: &Path) -> Result<(), SuperviseError> {
    let input = spec.input.as_deref().unwrap_or(db);
    for path in &spec.outputs {
        let refused = |reason: String| SuperviseError::Output {
            plugin: spec.name.clone(),
            path: path.clone(),
            reason,
        };
        if same_file(path, input) || path == input {
            return Err(refused(
                "it is the plugin's input too: a plugin would read what it derives, without end"
                    .into(),
            ));
        }
        // A stream is made with `pulsewatch stream create`, and checked as the plugin starts.
        if StreamAddr::from_location(path).is_none() {
            Log::create(path).map_err(|e| refused(e.to_string()))?;
        }
    }
    Ok(())
}

/// Tasks aborted when this is dropped: a run's watchers end with the run.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::JoinHandle::abort);
    }
}
