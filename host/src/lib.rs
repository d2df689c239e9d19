//! pulsewatch runs untrusted WebAssembly components over a database's change feed.
//!
//! A writer appends change events to a redb file ([`Log`]); plugins, WASI 0.2 components that
//! import `pulse:watch/feed`, poll it from cursors of their own inside a wasmtime sandbox
//! ([`Runtime`]) with no ambient authority and bounded memory, CPU and output ([`Limits`]).
//!
//! ```no_run
//! use pulsewatch::{Console, Limits, Log, OutputSink, RunOptions, Runtime};
//! use std::sync::Arc;
//!
//! let log = Arc::new(Log::open_read_only("events.redb")?);
//! let runtime = Runtime::new(Limits::default())?;
//! let plugin = runtime.load_file("kind-counts.wasm".as_ref())?;
//! let sink: Arc<dyn OutputSink> = Arc::new(Console);
//! let outcome = runtime.run(&plugin, &log, &RunOptions::new("state"), &sink);
//! assert!(outcome.result.is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod limits;
pub mod runtime;

pub use limits::Limits;
pub use pulsewatch_log::redb;
pub use pulsewatch_log::{
    Batch, Change, ChangeKind, Event, Log, OpenError, PollLimits, ReadError, WriteError, now_ms,
};
pub use runtime::{
    Console, Failure, LoadError, Outcome, OutputSink, Plugin, Progress, RunOptions, Runtime,
    SetupError, StopSignal, Stream,
};
