//! The sandbox, by stage: admission (`admission`) → grants (`grants`, `quota`) → store and limits
//! (`store`, `limiter`, `cpu`, `feed`) → running and stopping (this file, `run`). Plugins run
//! here in the calling process; [`crate::supervisor`] runs each in a worker process of its own.
//!
//! In-process, a plugin's linear memory, tables, handles, CPU, disk and wall-clock time are
//! bounded, but the memory wasmtime-wasi allocates on the host's side on the plugin's behalf
//! (directory listings, lists of pollables) is trusted to stay reasonable: the supervisor's
//! workers bound that too, with OS limits.

mod admission;
mod cpu;
mod error;
mod feed;
mod grants;
mod limiter;
mod output;
mod quota;
mod run;
mod store;

pub use error::{Failure, LoadError, QuotaBreach, SetupError};
pub use grants::STATE_DIR;
pub use output::{Console, OutputSink, Stream};
pub use run::{Outcome, Progress, RunOptions, StopSignal};

use crate::limits::Limits;
use crate::spec::{PluginSpec, check_name};
use feed::Feed;
use limiter::TableLimitExceeded;
use output::Capture;
use pulsewatch_log::Log;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use store::Sandbox;
use wasmtime::component::{Component, Linker, ResourceTableError};
use wasmtime::{Config, Engine, Trap, WasmBacktrace};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::CommandPre;

/// A compiled, admitted plugin, ready to be run any number of times.
#[derive(Clone)]
pub struct Plugin {
    spec: PluginSpec,
    pre: CommandPre<Sandbox>,
}

impl Plugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// What it was loaded from, and what it is given.
    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// How the engine compiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Compile a component's functions on several threads. Worth it when one process compiles
    /// a few components; a worker process, one of many on the machine, does without.
    pub parallel_compilation: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            parallel_compilation: true,
        }
    }
}

/// Compiles and runs plugins. One per process is enough: it is cheap to share.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Sandbox>,
    /// Drives the blocking API ([`Runtime::run`], [`Runtime::run_all`]); made on first use, so
    /// that a caller with an executor of its own ([`Runtime::run_async`]) starts no threads.
    executor: OnceLock<tokio::runtime::Runtime>,
}

impl Runtime {
    /// A runtime with the default engine options.
    pub fn new() -> Result<Runtime, SetupError> {
        Self::with_options(EngineOptions::default())
    }

    /// A runtime whose engine compiles as `options` say.
    pub fn with_options(options: EngineOptions) -> Result<Runtime, SetupError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.parallel_compilation(options.parallel_compilation);
        let engine = Engine::new(&config).map_err(|e| SetupError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        let link = |e: wasmtime::Error| SetupError::Linker(format!("{e:#}"));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link)?;
        quota::add_to_linker(&mut linker).map_err(link)?;
        feed::add_to_linker(&mut linker).map_err(link)?;
        Ok(Runtime {
            engine,
            linker,
            executor: OnceLock::new(),
        })
    }

    /// Loads the plugin `spec` describes: reads, checks, compiles, admits and pre-links its
    /// component.
    pub fn load(&self, spec: &PluginSpec) -> Result<Plugin, LoadError> {
        let name = spec.name.as_str();
        check_name(name)?;
        let bytes = std::fs::read(&spec.component).map_err(|source| LoadError::Read {
            path: spec.component.clone(),
            source,
        })?;
        admission::check_preamble(name, &bytes)?;
        let component = Component::new(&self.engine, &bytes).map_err(|e| LoadError::Invalid {
            name: name.to_owned(),
            reason: format!("{e:#}"),
        })?;
        admission::admit(name, &component, &self.engine)?;
        let link_error = |e: wasmtime::Error| LoadError::Link {
            name: name.to_owned(),
            reason: format!("{e:#}"),
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(link_error)?;
        let pre = CommandPre::new(pre).map_err(link_error)?;
        Ok(Plugin {
            spec: spec.clone(),
            pre,
        })
    }

    fn executor(&self) -> &tokio::runtime::Runtime {
        self.executor.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("pulsewatch-plugin")
                .build()
                .expect("the async executor starts (threads and a timer)")
        })
    }

    /// Runs one plugin to its end over `log`, blocking the calling thread (which must not be
    /// inside an async executor; use [`Runtime::run_async`] there).
    pub fn run(
        &self,
        plugin: &Plugin,
        log: &Arc<Log>,
        options: &RunOptions,
        sink: &Arc<dyn OutputSink>,
    ) -> Outcome {
        self.executor()
            .block_on(self.run_async(plugin, log, options, sink))
    }

    /// Runs every plugin at once over `log`, and returns how each ended, in the order given. One
    /// plugin's failure does not affect the others.
    pub fn run_all(
        &self,
        plugins: &[Plugin],
        log: &Arc<Log>,
        options: &RunOptions,
        sink: &Arc<dyn OutputSink>,
    ) -> Vec<Outcome> {
        let executor = self.executor();
        let tasks: Vec<_> = plugins
            .iter()
            .map(|plugin| {
                let (engine, plugin, log) = (self.engine.clone(), plugin.clone(), log.clone());
                let (options, sink) = (options.clone(), sink.clone());
                executor.spawn(async move {
                    execute_reported(&engine, &plugin, &log, &options, &sink).await
                })
            })
            .collect();
        executor.block_on(async {
            let mut outcomes = Vec::with_capacity(tasks.len());
            for (task, plugin) in tasks.into_iter().zip(plugins) {
                outcomes.push(task.await.unwrap_or_else(|_| Outcome {
                    plugin: plugin.name().to_owned(),
                    result: Err(Failure::Trap("the host panicked while running it".into())),
                    detail: None,
                    peak_rss_bytes: None,
                }));
            }
            outcomes
        })
    }

    /// Runs one plugin to its end over `log` on the caller's tokio executor (which needs its
    /// timer). Its state directory is locked for the run: the same plugin cannot run twice at
    /// once, in this process or another.
    ///
    /// It ends when the plugin returns, fails, reaches a limit, passes its wall-clock limit, or
    /// when `options.stop` says so: a plugin is cancelled wherever it is, even blocked in a WASI
    /// call, once the grace period after the stop signal is over.
    pub async fn run_async(
        &self,
        plugin: &Plugin,
        log: &Arc<Log>,
        options: &RunOptions,
        sink: &Arc<dyn OutputSink>,
    ) -> Outcome {
        execute_reported(&self.engine, plugin, log, options, sink).await
    }
}

async fn execute_reported(
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
        peak_rss_bytes: None,
    }
}

/// How a run's race ended.
enum Ended {
    Returned(wasmtime::Result<Result<(), ()>>),
    WallClock(Duration),
    Cancelled(Duration),
}

/// What the host refused a plugin during its run.
#[derive(Debug, Default, Clone, Copy)]
struct Refusals {
    /// Memory growth past this limit.
    memory: Option<usize>,
    /// Disk past its quota.
    disk: Option<QuotaBreach>,
    /// The plugin's runtime said it ran out of memory.
    out_of_memory: bool,
}

impl Refusals {
    /// A plugin that failed in its own way (a trap, an error exit) after the host refused it
    /// memory or disk failed because of that refusal, whatever its language runtime made of
    /// it; so did one whose runtime said it ran out of memory (a request larger than any
    /// 32-bit memory never reaches the host).
    fn blame(self, failure: Failure, limits: &Limits) -> Failure {
        if !matches!(failure, Failure::Trap(_) | Failure::Exit(_)) {
            return failure;
        }
        match self {
            Refusals {
                memory: Some(limit),
                ..
            } => Failure::Memory { limit },
            Refusals {
                disk: Some(breach), ..
            } => Failure::DiskQuota(breach),
            Refusals {
                out_of_memory: true,
                ..
            } => Failure::Memory {
                limit: limits.memory_bytes,
            },
            _ => failure,
        }
    }
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
        cursor: options.progress.track(&spec.name),
    };
    let mut store = match store::new_store(engine, &spec.limits, grants, feed) {
        Ok(store) => store,
        Err(e) => return (Err(classify(e, &spec.limits)), Refusals::default()),
    };
    let ended = {
        let run = async {
            let command = plugin.pre.instantiate_async(&mut store).await?;
            command.wasi_cli_run().call_run(&mut store).await
        };
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

/// The address at which a guest's stack pointer lands when the stack it keeps in linear memory
/// overflows: a Rust guest's stack grows down from 1 MiB towards 0, and one frame more wraps
/// it to just under 4 GiB, far outside any memory a plugin is allowed.
const WRAPPED_STACK_FLOOR: u64 = (1 << 32) - (64 << 20);

/// The address of an out-of-bounds access, from wasmtime's description of the fault (there is
/// none when a bulk memory operation checked its bounds itself).
fn fault_address(error: &wasmtime::Error) -> Option<u64> {
    error.chain().find_map(|cause| {
        let text = cause.to_string();
        let hex = text
            .strip_prefix("memory fault at wasm address 0x")?
            .split(' ')
            .next()?;
        u64::from_str_radix(hex, 16).ok()
    })
}

/// Functions a backtrace may cycle through and still read as one recursion.
const RECURSION_CYCLE: usize = 4;

/// Whether the trap came at the bottom of a recursion: the backtrace is as deep as wasmtime
/// records, and cycles through a few functions.
fn in_deep_recursion(error: &wasmtime::Error) -> bool {
    let Some(backtrace) = error.downcast_ref::<WasmBacktrace>() else {
        return false;
    };
    let frames = backtrace.frames();
    let functions: BTreeSet<u32> = frames.iter().map(|f| f.func_index()).collect();
    frames.len() >= MAX_BACKTRACE_FRAMES && functions.len() <= RECURSION_CYCLE
}

/// wasmtime's default depth of a recorded backtrace.
const MAX_BACKTRACE_FRAMES: usize = 20;

/// Names the reason for a failed run, with the full error for `--verbose`.
fn classify(error: wasmtime::Error, limits: &Limits) -> (Failure, Option<String>) {
    let failure = if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return (Failure::Exit(exit.0), None);
    } else if let Some(TableLimitExceeded { limit }) = error.downcast_ref() {
        Failure::Table { limit: *limit }
    } else if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        Failure::Handles {
            limit: limits.handles,
        }
    } else if let Some(trap) = error.downcast_ref::<Trap>() {
        match trap {
            Trap::OutOfFuel => Failure::CpuBudget { fuel: limits.fuel },
            Trap::StackOverflow => Failure::StackOverflow,
            // A Rust or C guest keeps its stack in linear memory; overflowing it is an access
            // below address 0, which wraps to the top of the 32-bit space.
            Trap::MemoryOutOfBounds
                if fault_address(&error).is_some_and(|a| a >= WRAPPED_STACK_FLOOR)
                    || in_deep_recursion(&error) =>
            {
                Failure::StackOverflow
            }
            other => Failure::Trap(other.to_string()),
        }
    } else {
        Failure::Trap(error.root_cause().to_string())
    };
    (failure, Some(format!("{error:?}")))
}
