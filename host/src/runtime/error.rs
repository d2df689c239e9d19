//! What can go wrong: loading a component, setting up the engine, running a plugin. Each
//! situation is a variant of its own, so that a supervisor decides from the kind.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Why a component cannot be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The name cannot be used: it labels the plugin's output and names its state directory.
    #[error(transparent)]
    BadName(#[from] crate::spec::BadName),
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
    /// The component is not the one its spec pins.
    #[error("{name}: the component changed: expected sha256 {expected}, found {actual}")]
    Changed {
        /// The plugin.
        name: String,
        /// The sha256 the spec pins.
        expected: String,
        /// The file's.
        actual: String,
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
        "{name}: imports `{import}`, which plugins are not granted (allowed: pulse:watch/*@0.2, and WASI 0.2 cli, clocks, filesystem, io, random, sockets)"
    )]
    ForbiddenImport {
        /// The plugin.
        name: String,
        /// The import's full name.
        import: String,
    },
    /// The component was built against a version of the feed contract this host does not serve.
    #[error(
        "{name}: built against `{import}`, but this host serves `{serves}` (and 0.2): rebuild the plugin with the current guest SDK (or wit/)"
    )]
    FeedVersion {
        /// The plugin.
        name: String,
        /// The feed import it has.
        import: String,
        /// The feed interface this host serves.
        serves: &'static str,
    },
    /// It imports the output interface but is granted no output logs to write to.
    #[error(
        "{name}: imports `{import}` to commit derived events, but is granted no output logs; grant them with `outputs = [\"...\"]` in its manifest entry or `--output PATH` on `pulsewatch run`"
    )]
    OutputNotGranted {
        /// The plugin.
        name: String,
        /// The import.
        import: String,
    },
    /// It imports outbound HTTP but is granted no hosts to send requests to.
    #[error(
        "{name}: imports `{import}` to send HTTP requests, but is granted no outbound hosts; grant them with `allowed_outbound_hosts = [\"https://api.example.com\"]` in its manifest entry or `--allow-outbound-host URL` on `pulsewatch run`"
    )]
    HttpNotGranted {
        /// The plugin.
        name: String,
        /// The import.
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
#[non_exhaustive]
pub enum SetupError {
    /// wasmtime refused the engine configuration.
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    /// The host functions could not be linked (a bug: the WIT and the host disagree).
    #[error("cannot link the host functions: {0}")]
    Linker(String),
    /// The async executor could not be started.
    #[error("cannot start the async executor: {0}")]
    Executor(#[from] std::io::Error),
}

/// Which part of the disk quota a plugin went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaBreach {
    /// The sum of its file lengths would pass this many bytes.
    Bytes(u64),
    /// Its files, directories and links would pass this many.
    Entries(u64),
}

impl std::fmt::Display for QuotaBreach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaBreach::Bytes(limit) => write!(f, "{} MiB", limit >> 20),
            QuotaBreach::Entries(limit) => write!(f, "{limit} entries"),
        }
    }
}

/// Why a plugin did not end cleanly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Failure {
    /// It exited with a non-zero status (or returned an error from `main`).
    #[error("exited with status {0}")]
    Exit(i32),
    /// It spent more CPU than new events granted it (plus what it earned while idle), in its
    /// own code or in host calls.
    #[error(
        "stopped: used its CPU budget ({} for each batch of new events, and what it earns while none arrive)", humantime::format_duration(*.cpu)
    )]
    CpuBudget {
        /// The CPU time each batch of new events grants.
        cpu: Duration,
    },
    /// It tried to grow its memory past the limit (whatever its language runtime then did).
    #[error("stopped: tried to grow memory past its limit of {} MiB", .limit >> 20)]
    Memory {
        /// The limit, in bytes.
        limit: usize,
    },
    /// It tried to grow a table past the limit.
    #[error("stopped: tried to grow a table past its limit of {limit} elements")]
    Table {
        /// The limit, in elements.
        limit: usize,
    },
    /// It tried to hold more handles than allowed.
    #[error("stopped: tried to hold more than {limit} handles (files, streams, pollables)")]
    Handles {
        /// The limit.
        limit: usize,
    },
    /// It overflowed its call stack: the engine's, or the one it keeps in its linear memory.
    #[error("stopped: call stack overflow (unbounded recursion?)")]
    StackOverflow,
    /// Its writes to `/state` were refused for its disk quota, and it then failed.
    #[error("stopped: exceeded its disk quota of {0} in /state")]
    DiskQuota(QuotaBreach),
    /// It ran past its wall-clock limit and was cancelled.
    #[error("stopped: ran past its wall-clock limit of {}", humantime::format_duration(*.limit))]
    WallClock {
        /// The limit.
        limit: Duration,
    },
    /// It was still running when the grace period after the stop signal ended (zero for an
    /// immediate stop), and was cancelled.
    #[error("stopped: {}", if .grace.is_zero() { "cancelled at once by an immediate stop".to_owned() } else { format!("still running {} after the stop signal", humantime::format_duration(*.grace)) })]
    Cancelled {
        /// The grace period it had.
        grace: Duration,
    },
    /// The run was stopped before this plugin started (while it was compiled or admitted): it
    /// did not run, and nothing of it was lost.
    #[error("did not start: the run was stopped first")]
    NotStarted,
    /// It trapped, for example on a Rust panic (`unreachable`).
    #[error("trapped: {0}")]
    Trap(String),
    /// Its state directory could not be created or locked.
    #[error("could not be started: {}: {reason}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS reported.
        reason: String,
    },
    /// Another run of the same plugin holds its state directory.
    #[error("could not be started: its state directory {} is in use by another run of this plugin; stop that run, or give this one another --state-dir", path.display())]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// The host could not give it a sandbox (a WASI grant failed).
    #[error("could not be started: {0}")]
    Sandbox(String),
    /// Its worker process could not open the event log.
    #[error("could not be started: {0}")]
    Log(String),
    /// Its worker process reached its host memory limit: the plugin made the host allocate on
    /// its behalf without bound.
    #[error("stopped: its worker process ran out of host memory (limit {} MiB)", .limit >> 20)]
    HostMemory {
        /// The worker's data limit, in bytes.
        limit: u64,
    },
    /// It failed too often without its cursor moving, and is not started again until released.
    #[error("quarantined: failed {failures} times {} (its last failure: {last}); `pulsewatch release` lets it start again", .seq.map_or_else(|| "before reading any event".to_owned(), |seq| format!("on event {seq}")))]
    Quarantined {
        /// The event it kept failing on: the one after its position; `None` if it failed before
        /// it ever read the feed.
        seq: Option<u64>,
        /// How many times in a row.
        failures: u32,
        /// Its last failure.
        last: String,
    },
    /// Its worker process could not be started, died, or broke the protocol.
    #[error("its worker process failed: {0}")]
    Worker(String),
}
