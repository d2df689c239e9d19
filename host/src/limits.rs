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

/// CPU time a plugin gets from each feed call that gives it events it was not given before (its
/// highest delivered seq rises): 500 ms. Everything its worker does for it counts: its own code,
/// instantiation, and the host's work inside its WASI and feed calls. A plugin that keeps
/// receiving new events runs as long as it likes; one that loops over old events or host calls
/// is stopped once this is spent. The 18 MB Python plugin starts and processes each batch of
/// 1,000 events within 50 ms.
pub const DEFAULT_CPU: Duration = Duration::from_millis(500);

/// CPU a plugin earns while it receives no new events, as a share of one core, up to its full
/// [`DEFAULT_CPU`]: 5%. A plugin that waits and does a little periodic work runs forever; one
/// that computes faster than this is stopped once its budget is spent.
pub const DEFAULT_IDLE_CPU_PERCENT: u8 = 5;

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

/// Resource limits applied to one plugin. Read from a record that lacks a field (a status file
/// an older version wrote), that limit is its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Maximum linear memory, in bytes, over all the plugin's memories; growing past it stops
    /// the plugin.
    pub memory_bytes: usize,
    /// Maximum elements in any one table; growing past it stops the plugin.
    pub table_elements: usize,
    /// Maximum handles held at once; asking for one more stops the plugin.
    pub handles: usize,
    /// CPU time granted by each feed call that delivers events new to the plugin; spending more
    /// than it has been granted stops the plugin.
    pub cpu: Duration,
    /// CPU earned while the plugin receives no new events, in percent of one core, up to
    /// [`Limits::cpu`].
    pub idle_cpu_percent: u8,
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
            cpu: DEFAULT_CPU,
            idle_cpu_percent: DEFAULT_IDLE_CPU_PERCENT,
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

/// A limit a manifest (`[plugin.limits]`) or a flag of `pulsewatch run` can set: its name, its
/// unit and its bounds are defined here once, and both are checked by [`Limit::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// [`Limits::memory_bytes`], in MiB.
    MemoryMib,
    /// [`Limits::cpu`], a duration.
    Cpu,
    /// [`Limits::idle_cpu_percent`].
    IdleCpuPercent,
    /// [`Limits::wall_clock`], a duration.
    WallClock,
    /// [`DiskQuota::bytes`], in MiB.
    DiskMib,
    /// [`DiskQuota::entries`].
    DiskEntries,
    /// [`PollLimits::max_events`].
    PollEvents,
    /// [`PollLimits::max_bytes`], in MiB.
    PollMib,
    /// [`Limits::output_bytes`], in KiB.
    OutputKib,
    /// [`Limits::handles`].
    Handles,
}

/// How a limit's value is written and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A whole number of these (`"MiB"`, `"entries"`, ...).
    Count(&'static str),
    /// A duration, written as `30s`, `10m`, `1h 30m`; held in milliseconds.
    Duration,
}

/// A limit's value outside its bounds, or not a value of its unit. The message leaves the limit
/// to be named by the caller, as a manifest key or a flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The value is outside the limit's bounds.
    #[error("{shown} is out of range: it must be from {min} to {max}", shown = .limit.show(*.value), min = .limit.show(.limit.bounds().0), max = .limit.show(.limit.bounds().1))]
    OutOfRange {
        /// The limit.
        limit: Limit,
        /// The value given, in the limit's unit (ms for a duration).
        value: u64,
    },
    /// The text is not a value of the limit's unit.
    #[error("{text:?} is not {expected}", expected = .limit.expected())]
    NotAValue {
        /// The limit.
        limit: Limit,
        /// The text given.
        text: String,
    },
}

impl Limit {
    /// Every limit, in the order the README lists them.
    pub const ALL: [Limit; 10] = [
        Limit::MemoryMib,
        Limit::Cpu,
        Limit::IdleCpuPercent,
        Limit::WallClock,
        Limit::DiskMib,
        Limit::DiskEntries,
        Limit::PollEvents,
        Limit::PollMib,
        Limit::OutputKib,
        Limit::Handles,
    ];

    /// Its key in a manifest's `[plugin.limits]`; its flag, where `run` has one, is the same
    /// with dashes (`memory_mib`, `--memory-mib`).
    pub fn key(self) -> &'static str {
        match self {
            Limit::MemoryMib => "memory_mib",
            Limit::Cpu => "cpu",
            Limit::IdleCpuPercent => "idle_cpu_percent",
            Limit::WallClock => "wall_clock",
            Limit::DiskMib => "disk_mib",
            Limit::DiskEntries => "disk_entries",
            Limit::PollEvents => "poll_events",
            Limit::PollMib => "poll_mib",
            Limit::OutputKib => "output_kib",
            Limit::Handles => "handles",
        }
    }

    /// The limit whose manifest key is `key`.
    pub fn from_key(key: &str) -> Option<Limit> {
        Limit::ALL.into_iter().find(|l| l.key() == key)
    }

    /// Its unit.
    pub fn unit(self) -> Unit {
        match self {
            Limit::MemoryMib | Limit::DiskMib | Limit::PollMib => Unit::Count("MiB"),
            Limit::Cpu | Limit::WallClock => Unit::Duration,
            Limit::IdleCpuPercent => Unit::Count("%"),
            Limit::DiskEntries => Unit::Count("entries"),
            Limit::PollEvents => Unit::Count("events"),
            Limit::OutputKib => Unit::Count("KiB"),
            Limit::Handles => Unit::Count("handles"),
        }
    }

    /// The least and the greatest value it may be set to, in its unit (ms for a duration).
    pub fn bounds(self) -> (u64, u64) {
        const HOUR_MS: u64 = 3_600_000;
        match self {
            // A 32-bit memory holds 4 GiB.
            Limit::MemoryMib => (1, 4096),
            // Below a millisecond the clock's granularity decides; past an hour a runaway
            // plugin is no longer stopped in any useful time.
            Limit::Cpu => (1, HOUR_MS),
            Limit::IdleCpuPercent => (0, 100),
            Limit::WallClock => (1, 365 * 24 * HOUR_MS),
            Limit::DiskMib => (1, 1 << 20),
            Limit::DiskEntries => (1, 10_000_000),
            Limit::PollEvents => (1, 100_000),
            Limit::PollMib => (1, 256),
            Limit::OutputKib => (1, 1 << 20),
            // A plugin's runtime needs a few handles (stdio, its state directory, pollables).
            Limit::Handles => (16, 4096),
        }
    }

    /// `value` (in the limit's unit) as a person writes it: `64 MiB`, `1s`, `5%`.
    pub fn show(self, value: u64) -> String {
        match self.unit() {
            Unit::Count("%") => format!("{value}%"),
            Unit::Count(unit) => format!("{value} {unit}"),
            Unit::Duration => humantime::format_duration(Duration::from_millis(value)).to_string(),
        }
    }

    fn expected(self) -> &'static str {
        match self.unit() {
            Unit::Count(_) => "a whole number",
            Unit::Duration => "a duration such as 500ms, 30s or 10m",
        }
    }

    /// Reads a value of this limit as a flag or a manifest string gives it: a whole number, or
    /// for a duration `500ms`, `30s`, `10m`. The bounds are checked by [`Limit::set`].
    pub fn parse(self, text: &str) -> Result<u64, LimitError> {
        let not_a_value = || LimitError::NotAValue {
            limit: self,
            text: text.to_owned(),
        };
        match self.unit() {
            Unit::Count(_) => text.trim().parse().map_err(|_| not_a_value()),
            Unit::Duration => humantime::parse_duration(text)
                .map_err(|_| not_a_value())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// Sets this limit of `limits` to `value`, in its unit (ms for a duration), if it is within
    /// its bounds.
    pub fn set(self, limits: &mut Limits, value: u64) -> Result<(), LimitError> {
        let (min, max) = self.bounds();
        if !(min..=max).contains(&value) {
            return Err(LimitError::OutOfRange { limit: self, value });
        }
        // Within the bounds every conversion below fits.
        let mib = |v: u64| (v << 20) as usize;
        match self {
            Limit::MemoryMib => limits.memory_bytes = mib(value),
            Limit::Cpu => limits.cpu = Duration::from_millis(value),
            Limit::IdleCpuPercent => limits.idle_cpu_percent = value as u8,
            Limit::WallClock => limits.wall_clock = Some(Duration::from_millis(value)),
            Limit::DiskMib => limits.disk.bytes = value << 20,
            Limit::DiskEntries => limits.disk.entries = value,
            Limit::PollEvents => limits.poll.max_events = value as u32,
            Limit::PollMib => limits.poll.max_bytes = mib(value),
            Limit::OutputKib => limits.output_bytes = (value << 10) as usize,
            Limit::Handles => limits.handles = value as usize,
        }
        Ok(())
    }

    /// Parses `text` and sets this limit of `limits` to it.
    pub fn set_text(self, limits: &mut Limits, text: &str) -> Result<(), LimitError> {
        self.set(limits, self.parse(text)?)
    }

    /// Its value in `limits`, in its unit, if it is set.
    pub fn get(self, limits: &Limits) -> Option<u64> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Some(match self {
            Limit::MemoryMib => limits.memory_bytes as u64 >> 20,
            Limit::Cpu => ms(limits.cpu),
            Limit::IdleCpuPercent => u64::from(limits.idle_cpu_percent),
            Limit::WallClock => ms(limits.wall_clock?),
            Limit::DiskMib => limits.disk.bytes >> 20,
            Limit::DiskEntries => limits.disk.entries,
            Limit::PollEvents => u64::from(limits.poll.max_events),
            Limit::PollMib => limits.poll.max_bytes as u64 >> 20,
            Limit::OutputKib => limits.output_bytes as u64 >> 10,
            Limit::Handles => limits.handles as u64,
        })
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_is_within_its_bounds_and_round_trips() {
        let defaults = Limits::default();
        for limit in Limit::ALL {
            let Some(value) = limit.get(&defaults) else {
                continue;
            };
            let mut limits = Limits::default();
            limit.set(&mut limits, value).unwrap();
            assert_eq!(limits, defaults, "{limit}");
        }
    }

    #[test]
    fn values_out_of_bounds_or_of_the_wrong_unit_are_refused_with_a_sentence() {
        let mut limits = Limits::default();
        let zero = Limit::MemoryMib.set(&mut limits, 0).unwrap_err();
        assert_eq!(
            zero.to_string(),
            "0 MiB is out of range: it must be from 1 MiB to 4096 MiB"
        );
        let cpu = Limit::Cpu.set_text(&mut limits, "0s").unwrap_err();
        assert_eq!(
            cpu.to_string(),
            "0s is out of range: it must be from 1ms to 1h"
        );
        let text = Limit::Cpu.set_text(&mut limits, "fast").unwrap_err();
        assert_eq!(
            text.to_string(),
            "\"fast\" is not a duration such as 500ms, 30s or 10m"
        );
        assert_eq!(limits, Limits::default(), "nothing refused was set");
        Limit::Cpu.set_text(&mut limits, "250ms").unwrap();
        assert_eq!(limits.cpu, Duration::from_millis(250));
    }
}
