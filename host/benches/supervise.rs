//! What supervision costs: `pulsewatch run --follow` with 1 to 200 copies of `kind-counts`, each
//! in its worker process, over a log of 1,000 events: cold (the component compiled, once, into
//! the compile cache) and cached (a second run with fresh plugin state and the same cache). For
//! each run it measures the start (spawn to every plugin having committed the whole log), the
//! memory of the supervisor and its workers while they follow, and how long the run takes to end
//! after SIGINT. Run with `cargo bench --bench supervise`.

use pulsewatch::{Change, ChangeKind, Log};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: u64 = 1_000;
const COUNTS: [usize; 5] = [1, 10, 50, 100, 200];

#[path = "../../tests/common/procs.rs"]
mod procs;
use procs::{children, memory};

/// The seq `plugin` committed, from the guest SDK's checkpoint file.
fn committed(state: &Path, plugin: &str) -> Option<u64> {
    let text = std::fs::read_to_string(state.join(plugin).join("checkpoint")).ok()?;
    text.lines().nth(1)?.parse().ok()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and wants no run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    let log = Log::create(&db).unwrap();
    let changes: Vec<Change> = (0..EVENTS)
        .map(|i| {
            Change::new(ChangeKind::ALL[(i % 4) as usize], u128::from(i), 7)
                .with_payload(vec![b'x'; 64])
        })
        .collect();
    log.append_batch(&changes).unwrap();
    drop(log);
    let kind_counts = Path::new(env!("PULSEWATCH_GUEST_DIR")).join("kind-counts.wasm");

    println!(
        "pulsewatch run --follow, N x kind-counts over {EVENTS} events, one worker process each:"
    );
    println!(
        "  {:>4} {:>6}  {:>9}  {:>16}  {:>16}  {:>13}  {:>19}  {:>9}",
        "N",
        "cache",
        "start (s)",
        "all RSS (MiB)",
        "all PSS (MiB)",
        "parent RSS",
        "worker RSS avg/max",
        "stop (ms)"
    );
    let runs = COUNTS.iter().flat_map(|&n| [(n, "cold"), (n, "cached")]);
    for (n, cache) in runs {
        let plugins_dir = dir.path().join(format!("plugins-{n}"));
        std::fs::create_dir_all(&plugins_dir).unwrap();
        let plugins: Vec<PathBuf> = (0..n)
            .map(|i| {
                let path = plugins_dir.join(format!("kc-{i:03}.wasm"));
                std::fs::copy(&kind_counts, &path).unwrap();
                path
            })
            .collect();
        let state = dir.path().join(format!("state-{n}"));
        // Cold: nothing under the state root. Cached: the compile cache of the cold run, and no
        // plugin state.
        for entry in std::fs::read_dir(&state).into_iter().flatten().flatten() {
            if entry.file_name() != pulsewatch::supervisor::HOME_DIR {
                std::fs::remove_dir_all(entry.path()).unwrap();
            }
        }
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
        let caught_up = |i: usize| committed(&state, &format!("kc-{i:03}")) == Some(EVENTS);
        while !(0..n).all(caught_up) {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "not caught up"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let start = started.elapsed();
        // Following and idle: settle, then read everyone's memory.
        std::thread::sleep(Duration::from_secs(1));
        let parent = memory(child.id());
        let workers: Vec<(u64, u64)> = children(child.id()).into_iter().map(memory).collect();
        assert_eq!(workers.len(), n, "one worker per plugin");
        let worker_rss: Vec<u64> = workers.iter().map(|m| m.0).collect();
        let all_rss = parent.0 + worker_rss.iter().sum::<u64>();
        let all_pss = parent.1 + workers.iter().map(|m| m.1).sum::<u64>();
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
            "  {n:>4} {cache:>6}  {:>9.2}  {:>16.1}  {:>16.1}  {:>13.1}  {:>9.1} / {:>7.1}  {:>9.0}",
            start.as_secs_f64(),
            mib(all_rss),
            mib(all_pss),
            mib(parent.0),
            mib(worker_rss.iter().sum::<u64>() / n as u64),
            mib(worker_rss.iter().copied().max().unwrap_or(0)),
            stop.as_secs_f64() * 1e3,
        );
    }
}
