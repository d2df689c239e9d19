//! What one plugin may consume, with the defaults every run starts from. Each default is defined
//! here once; the README's sandbox table lists them.

use pulsewatch_log::PollLimits;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Linear memory a plugin may grow to, all its memories together: 64 MiB.
pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;

/// Elements any one table of a plugin may grow to. Rust components use a few hundred.
pub const DEFAULT_TABLE_ELEMENTS: usize = 100_000;

/// Handles (open files, streams, pollables, listings, ...) a plugin may hold at once. A Rust
/// plugin holds about ten; each file handle is also a descriptor of the host's.
pub const DEFAULT_HANDLES: usize = 256;

/// Fuel (roughly, WebAssembly instructions) a plugin gets from each call that delivers events:
/// about half a second of computation on a 2-core VM. A plugin that keeps receiving events runs
/// as long as it likes.
pub const DEFAULT_FUEL: u64 = 1_000_000_000;

/// Fuel a plugin earns per second of wall-clock time while it receives no events (`head`, an
/// empty `poll`, `wait`), up to its full [`DEFAULT_FUEL`]: about 5% of one core. A plugin that
/// computes faster than this between such calls is stopped once its budget is spent, after
/// about half a second of CPU; one that waits and does a little periodic work runs forever.
pub const DEFAULT_IDLE_FUEL_PER_SECOND: u64 = 100_000_000;

/// Bytes of stdout, and separately of stderr, shown from one plugin in one run: 1 MiB. The rest
/// is discarded (the plugin is not stopped for it).
pub const DEFAULT_OUTPUT_BYTES: usize = 1 << 20;

/// Bytes a plugin may keep in its `/state` directory: 256 MiB (the sum of file lengths).
pub const DEFAULT_DISK_BYTES: u64 = 256 << 20;

/// Files, directories and links a plugin may keep in its `/state` directory.
pub const DEFAULT_DISK_ENTRIES: u64 = 10_000;

/// How long plugins have, after the stop signal, to commit and return before they are
/// cancelled.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Host memory a worker process may use beyond its plugin's linear memory: the engine, the
/// compiled code and Cranelift compiling it, the async stack, wasmtime-wasi's buffers. A worker
/// running `kind-counts` peaks at about 40 MiB of it; a plugin that makes wasmtime-wasi allocate
/// without bound on its behalf (directory listings, say) reaches this and its worker dies alone.
pub const WORKER_HOST_BYTES: u64 = 192 << 20;

/// Host memory a worker process may use to compile a component: Cranelift's memory grows with
/// the component (an 18 MB Python component needs about 1 GiB), and the component is untrusted,
/// so this is bounded too. A supervisor compiles each component once, in a worker that only
/// compiles, into the compile cache; the workers that run plugins load it from there under
/// [`WORKER_HOST_BYTES`].
pub const WORKER_COMPILE_BYTES: u64 = 2 << 30;

/// Descriptors a worker process needs beyond its plugin's handles: stdio, the database, the
/// state directory, the async runtime.
pub const WORKER_RESERVED_FILES: u64 = 64;

/// Disk a plugin may use in its `/state` directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskQuota {
    /// The sum of the lengths of its files.
    pub bytes: u64,
    /// Its files, directories and links.
    pub entries: u64,
}

impl Default for DiskQuota {
    fn default() -> Self {
        DiskQuota {
            bytes: DEFAULT_DISK_BYTES,
            entries: DEFAULT_DISK_ENTRIES,
        }
    }
}

/// Resource limits applied to one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Maximum linear memory, in bytes, over all the plugin's memories; growing past it stops
    /// the plugin.
    pub memory_bytes: usize,
    /// Maximum elements in any one table; growing past it stops the plugin.
    pub table_elements: usize,
    /// Maximum handles held at once; asking for one more stops the plugin.
    pub handles: usize,
    /// Fuel granted by each call that delivers events; running out stops the plugin.
    pub fuel: u64,
    /// Fuel earned per second while the plugin receives no events, up to [`Limits::fuel`].
    pub idle_fuel_per_second: u64,
    /// Wall-clock time the plugin may run, if limited; past it the plugin is cancelled.
    pub wall_clock: Option<Duration>,
    /// Output kept per stream, in bytes.
    pub output_bytes: usize,
    /// Bounds on each `poll`.
    pub poll: PollLimits,
    /// Disk the plugin may use in `/state`; writes past it fail inside the plugin.
    pub disk: DiskQuota,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            table_elements: DEFAULT_TABLE_ELEMENTS,
            handles: DEFAULT_HANDLES,
            fuel: DEFAULT_FUEL,
            idle_fuel_per_second: DEFAULT_IDLE_FUEL_PER_SECOND,
            wall_clock: None,
            output_bytes: DEFAULT_OUTPUT_BYTES,
            poll: PollLimits::default(),
            disk: DiskQuota::default(),
        }
    }
}

impl Limits {
    /// The data limit (`RLIMIT_DATA`) of a worker process running a plugin with these limits:
    /// its linear memory plus [`WORKER_HOST_BYTES`].
    pub fn worker_data_bytes(&self) -> u64 {
        (self.memory_bytes as u64).saturating_add(WORKER_HOST_BYTES)
    }

    /// The data limit of a worker process that only compiles the component of a plugin with
    /// these limits.
    pub fn compile_data_bytes(&self) -> u64 {
        (self.memory_bytes as u64).saturating_add(WORKER_COMPILE_BYTES)
    }

    /// The descriptor limit (`RLIMIT_NOFILE`) of a worker process running a plugin with these
    /// limits.
    pub fn worker_open_files(&self) -> u64 {
        (self.handles as u64).saturating_add(WORKER_RESERVED_FILES)
    }
}
