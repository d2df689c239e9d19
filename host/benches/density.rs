//! Density: N copies of `kind-counts` following one log of 1,000 events under one
//! `pulsewatch run --follow`, from a warm compile cache. For each N it measures the start (spawn
//! to every plugin at the head), the whole machine's busy CPU while the plugins are idle for
//! 10 s (`/proc/stat`), the memory of all processes (RSS, PSS), the wake-up of all N plugins by
//! one new event (when the last one has committed it), a burst of 10,000 events, and the time
//! from SIGINT to the end of the run. Run with `cargo bench --bench density`; `DENSITY_N=1,100`
//! chooses the Ns.

#[path = "../../tests/common/procs.rs"]
mod procs;

use procs::children;
use pulsewatch::{Change, ChangeKind, Log};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: u64 = 1_000;
const BURST: u64 = 10_000;
const IDLE: Duration = Duration::from_secs(10);

/// A `kB` field of a `/proc/<pid>/` file, in bytes.
fn proc_field(pid: u32, file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The machine's (busy, total) CPU ticks from `/proc/stat`.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    let total: u64 = fields.iter().take(8).sum();
    (total - idle, total)
}

/// The seq `plugin` committed, from the guest SDK's checkpoint file.
fn committed(state: &Path, plugin: &str) -> Option<u64> {
    let text = std::fs::read_to_string(state.join(plugin).join("checkpoint")).ok()?;
    text.lines().nth(1)?.parse().ok()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
    started.elapsed()
}

fn changes(from: u64, n: u64) -> Vec<Change> {
    (from..from + n)
        .map(|i| {
            Change::new(ChangeKind::ALL[(i % 4) as usize], u128::from(i), 7)
                .with_payload(vec![b'x'; 64])
        })
        .collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let counts: Vec<usize> = std::env::var("DENSITY_N")
        .unwrap_or_else(|_| "1,100,300,1000".into())
        .split(',')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let kind_counts = Path::new(env!("PULSEWATCH_GUEST_DIR")).join("kind-counts.wasm");
    println!(
        "pulsewatch run --follow, N x kind-counts, one worker process each, warm compile cache:"
    );
    println!(
        "| N | start to all at the head | idle CPU (% of a core, whole machine) | RSS sum | PSS sum | one event to all: last | burst of {BURST} to all | SIGINT to exit |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in counts {
        let db = dir.path().join(format!("events-{n}.redb"));
        let log = Log::create(&db).unwrap();
        log.append_batch(&changes(0, EVENTS)).unwrap();
        let plugins_dir = dir.path().join(format!("plugins-{n}"));
        std::fs::create_dir_all(&plugins_dir).unwrap();
        let plugins: Vec<PathBuf> = (0..n)
            .map(|i| {
                let path = plugins_dir.join(format!("kc-{i:04}.wasm"));
                std::fs::copy(&kind_counts, &path).unwrap();
                path
            })
            .collect();
        let state = dir.path().join(format!("state-{n}"));
        // Warm the compile cache: a run of one copy, which compiles the component.
        let warm = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
            .args(["run", "--db"])
            .arg(&db)
            .arg("--state-dir")
            .arg(&state)
            .arg(&plugins[0])
            .output()
            .unwrap();
        assert!(warm.status.success());
        std::fs::remove_dir_all(state.join("kc-0000")).unwrap();

        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
            .args(["run", "--follow", "--db"])
            .arg(&db)
            .arg("--state-dir")
            .arg(&state)
            .args(&plugins)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let all_at = |seq: u64| {
            let state = state.clone();
            move || (0..n).all(|i| committed(&state, &format!("kc-{i:04}")) == Some(seq))
        };
        wait_for("start", Duration::from_secs(900), all_at(EVENTS));
        let start = started.elapsed();

        // Idle: settle (as long as the start took, at least 2 s), then the machine's busy CPU
        // over IDLE.
        std::thread::sleep(start.max(Duration::from_secs(2)));
        let (busy0, total0) = cpu_ticks();
        std::thread::sleep(IDLE);
        let (busy1, total1) = cpu_ticks();
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
        let idle_cpu = (busy1 - busy0) as f64 / (total1 - total0) as f64 * cores * 100.0;
        let workers = children(child.id());
        let rss: u64 = std::iter::once(child.id())
            .chain(workers.iter().copied())
            .map(|p| proc_field(p, "status", "VmRSS:"))
            .sum();
        let pss: u64 = std::iter::once(child.id())
            .chain(workers.iter().copied())
            .map(|p| proc_field(p, "smaps_rollup", "Pss:"))
            .sum();

        // One event: until the last plugin has committed it.
        log.append_batch(&changes(EVENTS, 1)).unwrap();
        let one = wait_for("one event", Duration::from_secs(120), all_at(EVENTS + 1));
        // A burst.
        let burst_started = Instant::now();
        for chunk in 0..10 {
            log.append_batch(&changes(EVENTS + 1 + chunk * (BURST / 10), BURST / 10))
                .unwrap();
        }
        wait_for(
            "the burst",
            Duration::from_secs(600),
            all_at(EVENTS + 1 + BURST),
        );
        let burst = burst_started.elapsed();

        let stopping = Instant::now();
        let interrupted = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(interrupted.success());
        let status = child.wait().unwrap();
        let stop = stopping.elapsed();
        assert!(status.success(), "every plugin committed and returned");
        println!(
            "| {n} | {:.2} s | {idle_cpu:.1}% | {:.0} MiB | {:.0} MiB | {:.0} ms | {:.2} s | {:.0} ms |",
            start.as_secs_f64(),
            mib(rss),
            mib(pss),
            one.as_secs_f64() * 1e3,
            burst.as_secs_f64(),
            stop.as_secs_f64() * 1e3,
        );
        drop(log);
    }
}
