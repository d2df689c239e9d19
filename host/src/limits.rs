//! What one plugin may consume, with the defaults every run starts from.

use pulsewatch_log::PollLimits;

/// Linear memory a plugin may grow to, all its memories together: 64 MiB.
pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;

/// Elements any one table of a plugin may grow to. Rust components use a few hundred.
pub const DEFAULT_TABLE_ELEMENTS: usize = 100_000;

/// Handles (open files, streams, sockets, ...) a plugin may hold at once.
pub const DEFAULT_RESOURCES: usize = 1_000;

/// Fuel (roughly, WebAssembly instructions) a plugin may burn between two calls into the feed.
/// About half a second of pure computation on a 2-core VM; a plugin that keeps calling `poll` or
/// `wait` runs as long as it likes.
pub const DEFAULT_FUEL_PER_CALL: u64 = 1_000_000_000;

/// Bytes of stdout, and separately of stderr, shown from one plugin in one run: 1 MiB. The rest
/// is discarded (the plugin is not stopped for it).
pub const DEFAULT_OUTPUT_BYTES: usize = 1 << 20;

/// Resource limits applied to each plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum linear memory, in bytes, over all the plugin's memories; growing past it stops
    /// the plugin.
    pub memory_bytes: usize,
    /// Maximum elements in any one table; growing past it stops the plugin.
    pub table_elements: usize,
    /// Maximum WASI handles held at once; opening more fails inside the plugin.
    pub resources: usize,
    /// Fuel available between two feed calls; running out stops the plugin.
    pub fuel_per_call: u64,
    /// Output kept per stream, in bytes.
    pub output_bytes: usize,
    /// Bounds on each `poll`.
    pub poll: PollLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            table_elements: DEFAULT_TABLE_ELEMENTS,
            resources: DEFAULT_RESOURCES,
            fuel_per_call: DEFAULT_FUEL_PER_CALL,
            output_bytes: DEFAULT_OUTPUT_BYTES,
            poll: PollLimits::default(),
        }
    }
}
