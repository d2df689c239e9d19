//! Processes as Linux's `/proc` shows them, for the tests and benchmarks that watch the worker
//! processes a host starts (included by path from `host/benches/`), and signals sent to them.
#![allow(dead_code)]

/// The fields of `/proc/<pid>/stat` after the command, which is in parentheses and may hold
/// spaces: the state first, then the parent's pid, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The processes whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&child| {
            stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

/// The processes below `pid`: its children, theirs, and so on.
pub fn descendants(pid: u32) -> Vec<u32> {
    children(pid)
        .into_iter()
        .flat_map(|child| std::iter::once(child).chain(descendants(child)))
        .collect()
}

/// Whether `pid` is running (it exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z"))
}

/// CPU time (user + system) `pid` has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    // utime and stime are fields 14 and 15 of the file: the 12th and 13th after the command.
    let fields = stat_fields(pid).unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Sends `signal` to process `pid`, as `kill` does.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
    nix::sys::signal::kill(pid, signal).expect("the process can be signalled");
}

/// A `kB` field of a `/proc/<pid>/` file, in bytes (0 if the process is gone).
fn kib_field(pid: u32, file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Resident memory of `pid`: (RSS, PSS). RSS counts the pages of the executable that every
/// worker shares in full for each; PSS divides shared pages among the processes sharing them,
/// so PSS summed over processes is the memory they take together.
pub fn memory(pid: u32) -> (u64, u64) {
    (
        kib_field(pid, "status", "VmRSS:"),
        kib_field(pid, "smaps_rollup", "Pss:"),
    )
}
