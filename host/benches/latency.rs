//! Commit-to-plugin latency across processes, and what an idle following host costs.
//!
//! This process is the writer: it appends one event every 5 ms to a log, each carrying in its
//! payload the wall-clock time its append began. A `pulsewatch run --follow` process runs the
//! `delivery-times` guest (in its worker process), which prints the wall-clock time each event
//! reached it. Latency is measured from the moment the writer's append returned (the commit is
//! durable) to the moment the plugin held the event; the same from the moment the append began
//! is printed too. Then, with no appends, it measures the CPU time the host (supervisor and
//! worker) uses over 10 s. Run with `cargo bench --bench latency`.

use pulsewatch::{Change, ChangeKind, Log};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EVENTS: u64 = 1_000;
const INTERVAL: Duration = Duration::from_millis(5);
const IDLE: Duration = Duration::from_secs(10);

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

#[path = "../../tests/common/deliveries.rs"]
mod deliveries;
#[path = "../../tests/common/procs.rs"]
mod procs;

/// CPU time the host process and its workers have used, in clock ticks.
fn host_ticks(pid: u32) -> u64 {
    std::iter::once(pid)
        .chain(procs::descendants(pid))
        .map(procs::cpu_ticks)
        .sum()
}

fn percentile(sorted: &[i128], p: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1e3
}

fn report(what: &str, mut latencies: Vec<i128>) {
    latencies.sort_unstable();
    println!(
        "  {what:<28} p50 {:>7.0} µs   p90 {:>7.0} µs   p99 {:>7.0} µs   max {:>7.0} µs",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and wants no run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    let log = Log::create(&db).unwrap();
    let append = |log: &Log| {
        let began = now_ns();
        let change = Change::new(ChangeKind::Updated, 1, 7).with_payload(began.to_le_bytes());
        let seq = log.append(&change).unwrap();
        (seq, began, now_ns())
    };
    // One event before the host starts, so that its arrival says the plugin is following.
    append(&log);

    let guest = Path::new(env!("PULSEWATCH_GUEST_DIR")).join("delivery-times.wasm");
    let mut host = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["run", "--follow", "--db"])
        .arg(&db)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg(&guest)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deliveries = deliveries::deliveries(host.stdout.take().unwrap());
    let first = deliveries.recv_timeout(Duration::from_secs(120));
    assert!(matches!(first, Ok((1, _))), "the plugin follows: {first:?}");

    let mut appended = HashMap::new();
    let mut next = Instant::now();
    for _ in 0..EVENTS {
        next += INTERVAL;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let (seq, began, committed) = append(&log);
        appended.insert(seq, (began, committed));
    }
    let mut from_commit = Vec::new();
    let mut from_append = Vec::new();
    while from_commit.len() < EVENTS as usize {
        let (seq, at) = deliveries
            .recv_timeout(Duration::from_secs(30))
            .expect("every event delivered");
        let (began, committed) = appended[&seq];
        from_commit.push(at - committed);
        from_append.push(at - began);
    }
    println!(
        "{EVENTS} events, one every {} ms, writer and host in separate processes:",
        INTERVAL.as_millis()
    );
    report("append returned -> plugin", from_commit);
    report("append began -> plugin", from_append);

    // Idle: following, nothing appended.
    std::thread::sleep(Duration::from_secs(1));
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let before = host_ticks(host.id());
    let started = Instant::now();
    std::thread::sleep(IDLE);
    let used = (host_ticks(host.id()) - before) as f64 / ticks_per_second;
    println!(
        "  idle host (supervisor + worker), {} s: {:.3} s CPU = {:.2}% of a core",
        IDLE.as_secs(),
        used,
        100.0 * used / started.elapsed().as_secs_f64()
    );

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    assert!(host.wait().unwrap().success());
}
