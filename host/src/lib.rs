//! pulsewatch runs untrusted WebAssembly components over a database's change feed.
//!
//! A writer appends change events to a redb file ([`Log`]); plugins, WASI 0.2 components that
//! import `pulse:watch/feed`, poll it from cursors of their own inside a wasmtime sandbox with no
//! ambient authority and bounded memory, CPU, handles, disk, output and time ([`Limits`]). Each
//! plugin is described as data ([`PluginSpec`]).
//!
//! [`Supervisor`] runs each plugin in a worker process of its own under OS limits, so that
//! nothing a plugin makes the host do can exhaust the host; this is what `pulsewatch run` does.
//! [`Runtime`] runs plugins in the calling process, for embedding; it trusts the memory
//! wasmtime-wasi allocates on a plugin's behalf to stay reasonable.
//!
//! The feed can also be a NATS JetStream stream ([`jetstream`]): the same plugins read it
//! through the same contract ([`Source`]), writers append to it exactly once, a relay publishes
//! a redb log into it, and hosts on several machines share a manifest's plugins
//! ([`jetstream::cluster`]).
//!
//! ```no_run
//! use pulsewatch::{Console, OutputSink, PluginSpec, RunOptions, Supervisor, WorkerCommand};
//! use std::path::Path;
//! use std::sync::Arc;
//!
//! // This binary runs `pulsewatch::supervisor::serve()` when started as `my-host worker`.
//! let supervisor = Supervisor::new(WorkerCommand::current_exe(["worker"])?);
//! let spec = PluginSpec::from_file("kind-counts.wasm", Path::new("state"))?;
//! let sink: Arc<dyn OutputSink> = Arc::new(Console);
//! let outcomes = supervisor.run(&[spec], Path::new("events.redb"), &RunOptions::default(), &sink)?;
//! assert!(outcomes[0].result.is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bundle;
pub mod jetstream;
pub mod jsonl;
pub mod limits;
pub mod manifest;
pub mod runtime;
mod spec;
pub mod supervisor;

pub use bundle::{BundleError, bundle};
pub use limits::{DiskQuota, Limit, LimitError, Limits};
pub use manifest::ManifestError;
pub use pulsewatch_log::redb;
pub use pulsewatch_log::{
    Batch, Change, ChangeKind, Checkpoint, CommitError, Committed, Derived, Event, Given, Log,
    OpenError, Origin, OutputError, OutputLog, Outputs, PendingAppend, PollLimits, ReadError,
    SnapshotError, SnapshotInfo, WriteError, now_ms,
};
pub use runtime::{
    AllowedHost, BadHost, BadSecret, CompileCache, Console, CpuClock, EngineOptions, Failure,
    HttpLimits, LoadError, Outcome, OutputSink, Plugin, Progress, QuotaBreach, ReloadSignal,
    Resources, RunOptions, Runtime, STATE_DIR, Secret, SetupError, Source, StopSignal, Stream,
    decode_secret, webhook_signature,
};
pub use spec::{
    BadName, Isolation, PluginSpec, RestartPolicy, START_VARIABLE, StartPosition, sha256_hex,
};
pub use supervisor::{Home, SuperviseError, Supervisor, WorkerCommand};
