//! The sandbox: one wasmtime engine, plugins compiled from components, each run in a store of
//! its own with no ambient authority.

mod admission;
mod feed;
mod limiter;
mod output;

pub use output::{Console, OutputSink, Stream};

use crate::limits::Limits;
use feed::FeedAccess;
use limiter::{LimitExceeded, Limiter};
use output::Capture;
use pulsewatch_log::Log;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Why a component cannot be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The name cannot be used: it names the plugin's state directory, so it must be one
    /// plain path component.
    #[error(
        "{name:?}: not a usable plugin name (it must be a plain file name, without / or \\, not starting with a dot)"
    )]
    BadName {
        /// The name given.
        name: String,
    },
    /// The bytes are not WebAssembly.
    #[error("{name}: not a WebAssembly component (no \\0asm header)")]
    NotWasm {
        /// The plugin.
        name: String,
    },
    /// A core module, not a component.
    #[error(
        "{name}: is a core WebAssembly module, not a component; build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule {
        /// The plugin.
        name: String,
    },
    /// The component does not validate or compile.
    #[error("{name}: invalid component: {reason}")]
    Invalid {
        /// The plugin.
        name: String,
        /// What the validator reported.
        reason: String,
    },
    /// The component imports something plugins are not granted.
    #[error(
        "{name}: imports `{import}`, which plugins are not granted (allowed: pulse:watch/*@0.1, and WASI 0.2 cli, clocks, filesystem, io, random, sockets)"
    )]
    ForbiddenImport {
        /// The plugin.
        name: String,
        /// The import's full name.
        import: String,
    },
    /// The component is not a command.
    #[error(
        "{name}: exports no `wasi:cli/run@0.2`; a plugin is a WASI command (a Rust `fn main` built for wasm32-wasip2)"
    )]
    NotACommand {
        /// The plugin.
        name: String,
    },
    /// An admitted component still failed to link (an import's signature does not match).
    #[error("{name}: cannot be linked: {reason}")]
    Link {
        /// The plugin.
        name: String,
        /// What the linker reported.
        reason: String,
    },
}

/// Why the runtime itself could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the WebAssembly runtime: {0}")]
pub struct SetupError(String);

/// Asks running plugins to finish: `poll` returns nothing more and `wait` returns `closed`, so a
/// plugin commits its cursor and returns. Cloning shares the signal.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the signal.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the signal was given.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where each plugin of a run is in the feed: the `since` of its latest `poll` or `wait`, so
/// every event up to it has been processed (and, with the guest SDK, committed). Lets a host
/// watch consumers' lag while they run. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>);

impl Progress {
    /// A record of no plugin yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cursor `plugin` last asked from, if it has called the feed in a run using this record.
    pub fn cursor(&self, plugin: &str) -> Option<u64> {
        let cursors = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cursors.get(plugin).map(|c| c.load(Ordering::Relaxed))
    }

    /// The counter `plugin`'s feed calls update; created at 0 for a plugin seen first.
    fn track(&self, plugin: &str) -> Arc<AtomicU64> {
        let mut cursors = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cursors.entry(plugin.to_owned()).or_default().clone()
    }
}

/// A compiled, admitted plugin, ready to be run any number of times.
#[derive(Clone)]
pub struct Plugin {
    name: String,
    pre: CommandPre<Sandbox>,
}

impl Plugin {
    /// The plugin's name: its file name without `.wasm`, unless given otherwise.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// How to run plugins.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Each plugin gets `<state_root>/<name>/` as its `/state`, created if missing.
    pub state_root: PathBuf,
    /// Keep plugins waiting for new events until `stop` is given; otherwise a plugin's feed
    /// closes once it has caught up.
    pub follow: bool,
    /// Stops every plugin of the run cleanly.
    pub stop: StopSignal,
    /// Arguments given to plugins by name (after argv\[0\], which is the plugin's name).
    pub args: Vec<(String, String)>,
    /// Updated with each plugin's cursor as it runs.
    pub progress: Progress,
}

impl RunOptions {
    /// Options for plugins whose state lives under `state_root`, run until caught up.
    pub fn new(state_root: impl Into<PathBuf>) -> Self {
        RunOptions {
            state_root: state_root.into(),
            follow: false,
            stop: StopSignal::new(),
            args: Vec::new(),
            progress: Progress::new(),
        }
    }
}

/// Why a plugin did not end cleanly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// It exited with a non-zero status (or returned an error from `main`).
    #[error("exited with status {0}")]
    Exit(i32),
    /// It computed past its fuel budget without calling the feed.
    #[error("stopped: used its CPU budget of {0} fuel without calling the feed")]
    CpuBudget(u64),
    /// It tried to grow its memory past the limit.
    #[error("stopped: tried to grow memory past its limit of {} MiB", .0 >> 20)]
    Memory(usize),
    /// It tried to grow a table past the limit.
    #[error("stopped: tried to grow a table past its limit of {0} elements")]
    Table(usize),
    /// It overflowed its call stack.
    #[error("stopped: call stack overflow (unbounded recursion?)")]
    StackOverflow,
    /// It trapped, for example on a Rust panic (`unreachable`).
    #[error("trapped: {0}")]
    Trap(String),
    /// The host could not give it what it needs (its state directory, ...).
    #[error("could not be started: {0}")]
    Setup(String),
}

/// How one plugin's run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The plugin's name.
    pub plugin: String,
    /// `Ok` if it ended cleanly.
    pub result: Result<(), Failure>,
    /// The full error, with the WebAssembly backtrace, when it did not.
    pub detail: Option<String>,
}

/// The store data of one plugin.
pub(crate) struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    feed: FeedAccess,
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Compiles and runs plugins. One per process is enough: it is cheap to share.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Sandbox>,
    limits: Limits,
}

impl Runtime {
    /// A runtime applying `limits` to every plugin.
    pub fn new(limits: Limits) -> Result<Runtime, SetupError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config).map_err(|e| SetupError(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| SetupError(e.to_string()))?;
        feed::add_to_linker(&mut linker).map_err(|e| SetupError(e.to_string()))?;
        Ok(Runtime {
            engine,
            linker,
            limits,
        })
    }

    /// The limits applied to each plugin.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Loads a plugin from a component file, named after the file.
    pub fn load_file(&self, path: &Path) -> Result<Plugin, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        self.load(&name, &bytes)
    }

    /// Loads a plugin from component bytes: checks, compiles, admits and pre-links it.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Plugin, LoadError> {
        let plain = Path::new(name).components().count() == 1
            && Path::new(name).file_name().is_some_and(|n| n == name)
            && !name.starts_with('.')
            && !name.contains(['/', '\\']);
        if !plain {
            return Err(LoadError::BadName {
                name: name.to_owned(),
            });
        }
        admission::check_preamble(name, bytes)?;
        let component = Component::new(&self.engine, bytes).map_err(|e| LoadError::Invalid {
            name: name.to_owned(),
            reason: format!("{:#}", e),
        })?;
        admission::admit(name, &component, &self.engine)?;
        let link_error = |e: wasmtime::Error| LoadError::Link {
            name: name.to_owned(),
            reason: format!("{:#}", e),
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(link_error)?;
        let pre = CommandPre::new(pre).map_err(link_error)?;
        Ok(Plugin {
            name: name.to_owned(),
            pre,
        })
    }

    /// Runs each plugin on a thread of its own over `log`, and returns how each ended, in the
    /// order given. One plugin's failure does not affect the others.
    pub fn run_all(
        &self,
        plugins: &[Plugin],
        log: &Arc<Log>,
        options: &RunOptions,
        sink: &Arc<dyn OutputSink>,
    ) -> Vec<Outcome> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = plugins
                .iter()
                .map(|plugin| scope.spawn(|| self.run(plugin, log, options, sink)))
                .collect();
            handles
                .into_iter()
                .zip(plugins)
                .map(|(handle, plugin)| {
                    handle.join().unwrap_or_else(|_| Outcome {
                        plugin: plugin.name.clone(),
                        result: Err(Failure::Setup("the host panicked while running it".into())),
                        detail: None,
                    })
                })
                .collect()
        })
    }

    /// Runs one plugin to its end over `log`. Its state directory is locked for the run: the
    /// same plugin cannot run twice at once, in this process or another.
    pub fn run(
        &self,
        plugin: &Plugin,
        log: &Arc<Log>,
        options: &RunOptions,
        sink: &Arc<dyn OutputSink>,
    ) -> Outcome {
        let stdout = Capture::new(
            &plugin.name,
            Stream::Stdout,
            self.limits.output_bytes,
            sink.clone(),
        );
        let stderr = Capture::new(
            &plugin.name,
            Stream::Stderr,
            self.limits.output_bytes,
            sink.clone(),
        );
        let result = self.run_in_sandbox(plugin, log, options, &stdout, &stderr);
        stdout.finish();
        stderr.finish();
        let (result, detail) = match result {
            Ok(()) => (Ok(()), None),
            Err((failure, detail)) => (Err(failure), detail),
        };
        Outcome {
            plugin: plugin.name.clone(),
            result,
            detail,
        }
    }

    fn run_in_sandbox(
        &self,
        plugin: &Plugin,
        log: &Arc<Log>,
        options: &RunOptions,
        stdout: &Capture,
        stderr: &Capture,
    ) -> Result<(), (Failure, Option<String>)> {
        let state_dir = options.state_root.join(&plugin.name);
        let setup = |why: String| {
            (
                Failure::Setup(format!("{}: {why}", state_dir.display())),
                None,
            )
        };
        std::fs::create_dir_all(&state_dir).map_err(|e| setup(format!("cannot create: {e}")))?;
        // Outside the directory the plugin sees, so the plugin cannot remove it, and in a
        // directory no plugin can be named after (names never start with a dot).
        let locks = options.state_root.join(".locks");
        let lock = std::fs::create_dir_all(&locks)
            .and_then(|()| std::fs::File::create(locks.join(&plugin.name)))
            .map_err(|e| setup(format!("cannot create its lock file: {e}")))?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => {
                setup("in use by another run of this plugin".into())
            }
            std::fs::TryLockError::Error(e) => setup(format!("cannot lock: {e}")),
        })?;
        let args = std::iter::once(plugin.name.as_str()).chain(
            options
                .args
                .iter()
                .filter(|(name, _)| *name == plugin.name)
                .map(|(_, arg)| arg.as_str()),
        );
        let wasi = self
            .sandbox(
                &state_dir,
                args.collect::<Vec<_>>().as_slice(),
                stdout,
                stderr,
            )
            .map_err(|e| setup(e.to_string()))?;
        let mut table = ResourceTable::new();
        table.set_max_capacity(self.limits.resources);
        let mut store = Store::new(
            &self.engine,
            Sandbox {
                wasi,
                table,
                limiter: Limiter::new(&self.limits),
                feed: FeedAccess {
                    log: log.clone(),
                    poll_limits: self.limits.poll,
                    fuel_per_call: self.limits.fuel_per_call,
                    follow: options.follow,
                    stop: options.stop.clone(),
                    cursor: options.progress.track(&plugin.name),
                },
            },
        );
        store.limiter(|sandbox| &mut sandbox.limiter);
        let classify = |e: wasmtime::Error| self.classify(e);
        store
            .set_fuel(self.limits.fuel_per_call)
            .map_err(classify)?;
        let command = plugin.pre.instantiate(&mut store).map_err(classify)?;
        match command.wasi_cli_run().call_run(&mut store) {
            Ok(Ok(())) => Ok(()),
            // `main` returned an error: Rust's runtime has printed it to stderr.
            Ok(Err(())) => Err((Failure::Exit(1), None)),
            Err(e) => Err(self.classify(e)),
        }
        .or_else(|failure| match failure {
            (Failure::Exit(0), _) => Ok(()),
            other => Err(other),
        })
    }

    /// The plugin's WASI context. Everything is denied unless granted here: no environment,
    /// stdin closed, no network, no filesystem but the plugin's own state directory.
    fn sandbox(
        &self,
        state_dir: &Path,
        args: &[&str],
        stdout: &Capture,
        stderr: &Capture,
    ) -> wasmtime::Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        builder
            .args(args)
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // The plugin's file I/O runs on its own thread instead of a thread pool.
            .allow_blocking_current_thread(true)
            .preopened_dir(state_dir, "/state", FsPerms::ReadWrite)?;
        Ok(builder.build())
    }

    fn classify(&self, error: wasmtime::Error) -> (Failure, Option<String>) {
        let detail = Some(format!("{error:?}"));
        let failure = if let Some(exit) = error.downcast_ref::<I32Exit>() {
            return (Failure::Exit(exit.0), None);
        } else if let Some(trap) = error.downcast_ref::<Trap>() {
            match trap {
                Trap::OutOfFuel => Failure::CpuBudget(self.limits.fuel_per_call),
                Trap::StackOverflow => Failure::StackOverflow,
                other => Failure::Trap(other.to_string()),
            }
        } else if let Some(exceeded) = error.downcast_ref::<LimitExceeded>() {
            match exceeded {
                LimitExceeded::Memory { limit } => Failure::Memory(*limit),
                LimitExceeded::Table { limit } => Failure::Table(*limit),
            }
        } else {
            Failure::Trap(error.root_cause().to_string())
        };
        (failure, detail)
    }
}
