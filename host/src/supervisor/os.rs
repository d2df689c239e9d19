//! The OS's part of containment: the limits a worker process puts on itself before it compiles
//! anything, and what the OS can tell about a process's memory.

use crate::limits::Limits;
use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, Signal};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Limits the calling process, for good (soft and hard limit alike), to what a worker running a
/// plugin with `limits` may use:
///
/// - data (`RLIMIT_DATA`): the plugin's linear memory plus the host's share. It counts writable
///   private memory, not the address space wasmtime reserves (`RLIMIT_AS` would refuse even a
///   normal plugin), so it bounds real memory, including what wasmtime-wasi allocates on the
///   plugin's behalf. Past it an allocation fails and the worker aborts, alone.
/// - descriptors (`RLIMIT_NOFILE`): the plugin's handles plus the host's share;
/// - file size (`RLIMIT_FSIZE`): the disk quota, behind the quota's own accounting. `SIGXFSZ`
///   is blocked so that a write past it fails instead of killing the worker;
/// - core dumps (`RLIMIT_CORE`): none; a worker that dies leaves no copy of its memory.
///
/// A worker that only compiles gets the compile budget for data instead
/// ([`Limits::compile_data_bytes`]): it runs no plugin code. A worker that writes output logs
/// has no file-size limit: a log is shared and may already be larger than the plugin's quota,
/// which WASI's accounting of `/state` still enforces.
pub(crate) fn restrict(limits: &Limits, compile_only: bool, writes_logs: bool) -> nix::Result<()> {
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGXFSZ);
    blocked.thread_block()?;
    let data = if compile_only {
        limits.compile_data_bytes()
    } else {
        limits.worker_data_bytes()
    };
    for (resource, value) in [
        (Resource::RLIMIT_DATA, data),
        (Resource::RLIMIT_NOFILE, limits.worker_open_files()),
        (
            Resource::RLIMIT_FSIZE,
            if writes_logs {
                RLIM_INFINITY
            } else {
                limits.disk.bytes
            },
        ),
        (Resource::RLIMIT_CORE, 0),
    ] {
        // An unprivileged process may lower its limits but not raise them past the hard limit.
        let (_, hard) = getrlimit(resource)?;
        let value = value.min(hard);
        setrlimit(resource, value, value)?;
    }
    Ok(())
}

/// What the OS limits of the shared worker are: no core dumps, and `SIGXFSZ` blocked as in any
/// worker. Its data, descriptors and file sizes are not limited by the OS: it runs many plugins,
/// joining and leaving as they restart, and each plugin's own limits are enforced by wasmtime
/// and the host. Its descriptor limit is raised as the supervisor's is, since each plugin holds
/// a few.
pub(crate) fn restrict_shared() -> nix::Result<()> {
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGXFSZ);
    blocked.thread_block()?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    raise_open_files();
    Ok(())
}

/// Raises this process's descriptor limit to its hard limit, as far as allowed: a supervisor
/// holds three pipes for every worker, and the usual soft limit of 1,024 would otherwise cap a
/// run at about 300 plugins.
pub(crate) fn raise_open_files() {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// A `kB` field (e.g. `VmRSS:`) of the text of a `/proc/<pid>/status` file, in bytes.
fn kib_field(status: &str, field: &str) -> Option<u64> {
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

fn status(pid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// The peak resident memory of process `pid` ("self" for this one), from `/proc`.
pub(crate) fn peak_rss(pid: &str) -> Option<u64> {
    kib_field(&status(pid)?, "VmHWM:")
}

/// What a supervisor samples of a worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    /// CPU time, user and system, in ms.
    pub(crate) cpu_ms: u64,
    /// Resident memory now.
    pub(crate) rss: u64,
    /// Peak resident memory.
    pub(crate) peak_rss: u64,
}

/// The CPU time and resident memory of process `pid`, from `/proc`: one read of `stat`, one
/// of `status`.
pub(crate) fn sample(pid: &str) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which is in parentheses and may hold spaces): state is the
    // first, utime the 12th and stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)? as u64;
    let status = status(pid)?;
    Some(Sample {
        cpu_ms: ticks * 1000 / per_second,
        rss: kib_field(&status, "VmRSS:")?,
        peak_rss: kib_field(&status, "VmHWM:")?,
    })
}

/// Whether `a` and `b` name the same file: the same path, a symbolic link to it, or another
/// hard link (the same device and inode). A path that does not exist is no file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_peak_rss_and_cpu_time() {
        let Sample {
            rss,
            peak_rss: peak,
            ..
        } = sample("self").unwrap();
        assert!(rss > 1 << 20 && rss <= peak, "{rss} then a peak of {peak}");
    }
}
