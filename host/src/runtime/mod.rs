//! The sandbox, by stage: admission (`admission`) → grants (`grants`, `quota`) → store and limits
//! (`store`, `limiter`, `cpu`, `feed`) → running and stopping (this file, `run`, `signal`,
//! `progress`, `classify`). Plugins run here in the calling process; [`crate::supervisor`] runs
//! each in a worker process of its own.
//!
//! In-process, a plugin's linear memory, tables, handles, CPU, disk and wall-clock time are
//! bounded, but the memory wasmtime-wasi allocates on the host's side on the plugin's behalf
//! (directory listings, lists of pollables) is trusted to stay reasonable: the supervisor's
//! workers bound that too, with OS limits.

mod admission;
mod cache;
mod classify;
mod cpu;
mod emit;
mod error;
mod feed;
mod grants;
mod limiter;
mod outbound;
mod output;
mod progress;
mod quota;
mod run;
mod signal;
mod store;

pub(crate) use admission::is_component;
pub use cache::CompileCache;
pub(crate) use cache::write_atomically;
pub use cpu::CpuClock;
pub(crate) use emit::output_name;
pub use error::{Failure, LoadError, QuotaBreach, SetupError};
pub(crate) use feed::FEED_INTERFACE;
pub use feed::Source;
pub use grants::STATE_DIR;
pub use outbound::{
    AllowedHost, BadHost, BadSecret, HttpLimits, Secret, decode_secret, webhook_signature,
};
pub use output::{Console, OutputSink, Stream};
pub(crate) use progress::Tracker;
pub use progress::{Progress, Resources};
pub use run::{Outcome, RunOptions};
pub use signal::{ReloadSignal, StopSignal};

use crate::spec::{PluginSpec, check_name, sha256_hex};
use run::execute_reported;
use std::sync::{Arc, OnceLock};
use store::Sandbox;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};
use wasmtime_wasi::p2::bindings::CommandPre;

/// A compiled, admitted plugin, ready to be run any number of times.
#[derive(Clone)]
pub struct Plugin {
    spec: PluginSpec,
    pre: CommandPre<Sandbox>,
    compiled: bool,
}

impl Plugin {
    /// Whether loading it compiled the component (rather than taking it from the cache).
    pub fn compiled(&self) -> bool {
        self.compiled
    }

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
    cache: Option<CompileCache>,
}

impl Runtime {
    /// A runtime with the default engine options.
    pub fn new() -> Result<Runtime, SetupError> {
        Self::with_options(EngineOptions::default())
    }

    /// A runtime whose engine compiles as `options` say.
    pub fn with_options(options: EngineOptions) -> Result<Runtime, SetupError> {
        let mut config = Config::new();
        // Fuel paces the yield points of computation (store.rs); the CPU budget is time (cpu.rs).
        config.consume_fuel(true);
        config.parallel_compilation(options.parallel_compilation);
        let engine = Engine::new(&config).map_err(|e| SetupError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        let link = |e: wasmtime::Error| SetupError::Linker(format!("{e:#}"));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link)?;
        quota::add_to_linker(&mut linker).map_err(link)?;
        feed::add_to_linker(&mut linker).map_err(link)?;
        emit::add_to_linker(&mut linker).map_err(link)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link)?;
        Ok(Runtime {
            engine,
            linker,
            executor: OnceLock::new(),
            cache: None,
        })
    }

    /// This runtime, keeping compiled components in `cache` and taking them from it.
    pub fn with_cache(mut self, cache: CompileCache) -> Self {
        self.cache = Some(cache);
        self
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
        // Hashed only when something needs it: a pinned hash, or the cache's key.
        let sha256 = (spec.sha256.is_some() || self.cache.is_some()).then(|| sha256_hex(&bytes));
        if let (Some(expected), Some(actual)) = (&spec.sha256, &sha256)
            && expected != actual
        {
            return Err(LoadError::Changed {
                name: name.to_owned(),
                expected: expected.clone(),
                actual: actual.clone(),
            });
        }
        let cache = self.cache.as_ref().zip(sha256.as_deref());
        let cached = cache.and_then(|(cache, sha256)| cache.load(&self.engine, sha256));
        let compiled = cached.is_none();
        let component = match cached {
            Some(component) => component,
            None => Component::new(&self.engine, &bytes).map_err(|e| LoadError::Invalid {
                name: name.to_owned(),
                reason: format!("{e:#}"),
            })?,
        };
        admission::admit(name, &component, &self.engine, spec)?;
        if let (true, Some((cache, sha256))) = (compiled, cache) {
            cache.store(&self.engine, sha256, &component);
        }
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
            compiled,
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

    /// Runs one plugin to its end over `source` (a log, `&Arc<Log>`, or a stream), blocking the
    /// calling thread (which must not be inside an async executor; use [`Runtime::run_async`]
    /// there).
    pub fn run(
        &self,
        plugin: &Plugin,
        source: impl Into<Source>,
        options: &RunOptions,
        sink: &Arc<dyn OutputSink>,
    ) -> Outcome {
        self.executor()
            .block_on(self.run_async(plugin, source, options, sink))
    }

    /// Runs every plugin at once over `source`, and returns how each ended, in the order given.
    /// One plugin's failure does not affect the others.
    pub fn run_all(
        &self,
        plugins: &[Plugin],
        source: impl Into<Source>,
        options: &RunOptions,
        sink: &Arc<dyn OutputSink>,
    ) -> Vec<Outcome> {
        let executor = self.executor();
        let source = source.into();
        let tasks: Vec<_> = plugins
            .iter()
            .map(|plugin| {
                let (engine, plugin) = (self.engine.clone(), plugin.clone());
                let (source, options, sink) = (source.clone(), options.clone(), sink.clone());
                executor.spawn(async move {
                    execute_reported(&engine, &plugin, &source, &options, &sink).await
                })
            })
            .collect();
        executor.block_on(async {
            let mut outcomes = Vec::with_capacity(tasks.len());
            for (task, plugin) in tasks.into_iter().zip(plugins) {
                outcomes.push(task.await.unwrap_or_else(|_| {
                    Outcome::failed(
                        plugin.name(),
                        Failure::Trap("the host panicked while running it".into()),
                    )
                }));
            }
            outcomes
        })
    }

    /// Runs one plugin to its end over `source` on the caller's tokio executor (which needs its
    /// timer). Its state directory is locked for the run: the same plugin cannot run twice at
    /// once, in this process or another.
    ///
    /// It ends when the plugin returns, fails, reaches a limit, passes its wall-clock limit, or
    /// when `options.stop` says so: a plugin is cancelled wherever it is, even blocked in a WASI
    /// call, once the grace period after the stop signal is over.
    pub async fn run_async(
        &self,
        plugin: &Plugin,
        source: impl Into<Source>,
        options: &RunOptions,
        sink: &Arc<dyn OutputSink>,
    ) -> Outcome {
        execute_reported(&self.engine, plugin, &source.into(), options, sink).await
    }
}
