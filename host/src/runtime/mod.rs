//! The sandbox: one wasmtime engine, plugins compiled from components, each run in a store of
//! its own with no ambient authority.

mod admission;
mod error;
mod feed;
mod limiter;
mod output;
mod run;

pub use error::{Failure, LoadError, SetupError};
pub use output::{Console, OutputSink, Stream};
pub use run::{Outcome, Progress, RunOptions, StopSignal};

use crate::limits::Limits;
use feed::FeedAccess;
use limiter::{LimitExceeded, Limiter};
use output::Capture;
use pulsewatch_log::Log;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

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
        let failed = |e: wasmtime::Error| SetupError(e.to_string());
        let engine = Engine::new(&config).map_err(failed)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(failed)?;
        feed::add_to_linker(&mut linker).map_err(failed)?;
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
        // The name becomes a directory under the state root: one plain component, not hidden.
        let plain = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']);
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
            Err(e) => match self.classify(e) {
                // `exit(0)` ends a plugin as cleanly as returning from `main`.
                (Failure::Exit(0), _) => Ok(()),
                failure => Err(failure),
            },
        }
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
