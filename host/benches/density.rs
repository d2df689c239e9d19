//! Density: N copies of `kind-counts` following one log of 1,000 events under one
//! `pulsewatch run --follow --isolation I` (`process`: a worker each; `shared`: one worker for
//! all), from a warm compile cache. For each N it measures the start (spawn to every plugin at
//! the head), the CPU used while the plugins are idle for 10 s, the memory of all processes
//! (RSS, PSS), one new event until the last
//! plugin has committed it (its checkpoint written and synced), a burst of 10,000 events, and
//! the time from SIGINT to the end of the run. Then N copies of `delivery-times --at-end` follow
//! another log, and five single events, a second apart, measure the wake-up: from the start of
//! the writer's append to each plugin holding the event, N x 5 figures, printed by the plugins
//! at the end so that printing takes no part in them. Idle CPU is given for the
//! host's processes and for the whole machine (`/proc/stat`), whose own background is measured
//! first. Run with `cargo bench --bench density`; `DENSITY_N=1,100` chooses the Ns and
//! `DENSITY_ISOLATION=shared` the isolations.

#[path = "../../tests/common/deliveries.rs"]
mod deliveries;
#[path = "../../tests/common/procs.rs"]
mod procs;

use procs::children;
use pulsewatch::{Change, ChangeKind, Log};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EVENTS: u64 = 1_000;
const BURST: u64 = 10_000;
const IDLE: Duration = Duration::from_secs(10);
const WAKE_UPS: u64 = 5;

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
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
        std::thread::sleep(Duration::from_millis(10));
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

/// `n` copies of `guest` under distinct names (a plugin's name is its file stem).
fn copies(dir: &Path, guest: &str, n: usize) -> Vec<PathBuf> {
    let original = Path::new(env!("PULSEWATCH_GUEST_DIR")).join(format!("{guest}.wasm"));
    let dir = dir.join(format!("{guest}-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    (0..n)
        .map(|i| {
            let path = dir.join(format!("{guest}-{i:04}.wasm"));
            std::fs::copy(&original, &path).unwrap();
            path
        })
        .collect()
}

/// Runs `plugins` once on `db` so that the compile cache holds them (copies share one entry).
fn warm(db: &Path, plugins: &[PathBuf], dir: &Path) {
    let state = tempfile::tempdir_in(dir).unwrap();
    let warm = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["run", "--db"])
        .arg(db)
        .arg("--state-dir")
        .arg(state.path())
        .arg(&plugins[0])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(warm.status.success());
}

/// `pulsewatch run --follow` of `plugins` on `db`, to be spawned.
fn follow(db: &Path, state: &Path, isolation: &str, plugins: &[PathBuf]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pulsewatch"));
    command
        .args(["run", "--follow", "--isolation", isolation, "--db"])
        .arg(db)
        .arg("--state-dir")
        .arg(state)
        .args(plugins);
    command
}

fn interrupt(child: &mut std::process::Child) -> Duration {
    let stopping = Instant::now();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "every plugin committed and returned");
    stopping.elapsed()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// N copies of `delivery-times` following a log of one event; each of `WAKE_UPS` single events
/// appended a second apart is timed from the start of its append (the writer's commit included:
/// a plugin may hold the event before the writer's call has returned) to each plugin holding
/// it. Returns the latencies in milliseconds, sorted.
fn wake_ups(dir: &Path, n: usize, isolation: &str) -> Vec<f64> {
    let db = dir.join(format!("wake-{isolation}-{n}.redb"));
    let log = Log::create(&db).unwrap();
    log.append_batch(&changes(0, 1)).unwrap();
    let plugins = copies(dir, "delivery-times", n);
    warm(&db, &plugins, dir);
    let state = dir.join(format!("wake-state-{isolation}-{n}"));
    let mut child = follow(&db, &state, isolation, &plugins)
        // The times are printed at the end: printing is no part of a wake-up.
        .args((0..n).map(|i| format!("--arg=delivery-times-{i:04}=--at-end")))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deliveries = deliveries::deliveries(child.stdout.take().unwrap());
    let all_at = |seq: u64| {
        let state = state.clone();
        move || (0..n).all(|i| committed(&state, &format!("delivery-times-{i:04}")) == Some(seq))
    };
    wait_for(
        "every plugin following",
        Duration::from_secs(300),
        all_at(1),
    );
    // Nothing else runs meanwhile: the events' arrival is looked at once they all have come.
    let mut began = Vec::new();
    for i in 0..WAKE_UPS {
        std::thread::sleep(Duration::from_secs(1));
        began.push(now_ns());
        log.append_batch(&changes(1 + i, 1)).unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    let last = 1 + WAKE_UPS;
    wait_for(
        "the events delivered",
        Duration::from_secs(60),
        all_at(last),
    );
    interrupt(&mut child);
    let mut latencies: Vec<f64> = deliveries
        .iter()
        .filter(|&(seq, _)| seq >= 2)
        .map(|(seq, at)| (at - began[(seq - 2) as usize]) as f64 / 1e6)
        .collect();
    assert_eq!(
        latencies.len(),
        n * WAKE_UPS as usize,
        "every delivery reported"
    );
    latencies.sort_by(f64::total_cmp);
    latencies
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
    let isolations: Vec<String> = std::env::var("DENSITY_ISOLATION")
        .unwrap_or_else(|_| "process,shared".into())
        .split(',')
        .map(|i| i.trim().to_owned())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let (busy0, total0) = cpu_ticks();
    std::thread::sleep(IDLE);
    let (busy1, total1) = cpu_ticks();
    println!(
        "the machine with no host running: {:.1}% of a core busy over {} s",
        (busy1 - busy0) as f64 / (total1 - total0) as f64 * cores * 100.0,
        IDLE.as_secs()
    );
    println!("pulsewatch run --follow --isolation I, N x kind-counts, warm compile cache:");
    println!(
        "| I | N | start to all at the head | idle CPU, % of a core: the host's processes / whole machine | RSS sum | PSS sum | one event to all committed | burst of {BURST} to all | SIGINT to exit | wake-up p50 / p99 / max (N x delivery-times) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (isolation, n) in isolations
        .iter()
        .flat_map(|i| counts.iter().map(move |&n| (i.as_str(), n)))
    {
        let db = dir.path().join(format!("events-{isolation}-{n}.redb"));
        let log = Log::create(&db).unwrap();
        log.append_batch(&changes(0, EVENTS)).unwrap();
        let plugins = copies(dir.path(), "kind-counts", n);
        warm(&db, &plugins, dir.path());
        let state = dir.path().join(format!("state-{isolation}-{n}"));
        let started = Instant::now();
        let mut child = follow(&db, &state, isolation, &plugins)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let all_at = |seq: u64| {
            let state = state.clone();
            move || (0..n).all(|i| committed(&state, &format!("kind-counts-{i:04}")) == Some(seq))
        };
        wait_for("start", Duration::from_secs(900), all_at(EVENTS));
        let start = started.elapsed();

        // Idle: settle (as long as the start took, at least 2 s), then the machine's busy CPU
        // over IDLE.
        std::thread::sleep(start.max(Duration::from_secs(2)));
        let workers = children(child.id());
        let host_ticks = || -> u64 {
            std::iter::once(child.id())
                .chain(workers.iter().copied())
                .map(procs::cpu_ticks)
                .sum()
        };
        let (busy0, total0) = cpu_ticks();
        let host0 = host_ticks();
        std::thread::sleep(IDLE);
        let (busy1, total1) = cpu_ticks();
        let host_cpu = (host_ticks() - host0) as f64 / (total1 - total0) as f64 * cores * 100.0;
        let idle_cpu = (busy1 - busy0) as f64 / (total1 - total0) as f64 * cores * 100.0;
        let (rss, pss) = std::iter::once(child.id())
            .chain(workers.iter().copied())
            .map(procs::memory)
            .fold((0, 0), |(rss, pss), (r, p)| (rss + r, pss + p));

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

        let stop = interrupt(&mut child);
        drop(log);
        let wake = wake_ups(dir.path(), n, isolation);
        println!(
            "| {isolation} | {n} | {:.2} s | {host_cpu:.1}% / {idle_cpu:.1}% | {:.0} MiB | {:.0} MiB | {:.0} ms | {:.2} s | {:.0} ms | {:.1} / {:.1} / {:.1} ms |",
            start.as_secs_f64(),
            mib(rss),
            mib(pss),
            one.as_secs_f64() * 1e3,
            burst.as_secs_f64(),
            stop.as_secs_f64() * 1e3,
            percentile(&wake, 0.5),
            percentile(&wake, 0.99),
            percentile(&wake, 1.0),
        );
    }
}
