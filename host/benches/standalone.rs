//! The same plugin under the stock `wasmtime run` and under `pulsewatch run`: a 1,000,000-event
//! snapshot read by the `poll-bench` guest, bundled with the feed provider for wasmtime. Prints
//! both guests' figures, the time of `pulsewatch snapshot` and the sizes of the provider and of
//! the bundle. Needs the wasmtime CLI 48 on PATH. Run with `cargo bench --bench standalone`.

use pulsewatch::{Change, ChangeKind, Log};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const EVENTS: u64 = 1_000_000;
const LIMIT: &str = "1000";
const CAUGHT_UP_POLLS: &str = "10000";

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        command,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn field(line: &str, name: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if Command::new("wasmtime").arg("--version").output().is_err() {
        println!("skipped: no `wasmtime` on PATH (see the README's CI section to install it)");
        return;
    }
    let pulsewatch = env!("CARGO_BIN_EXE_pulsewatch");
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.redb");
    let log = Log::create(&live).unwrap();
    for start in (0..EVENTS).step_by(10_000) {
        let batch: Vec<Change> = (start..start + 10_000)
            .map(|i| {
                Change::new(ChangeKind::ALL[(i % 4) as usize], u128::from(i), 7)
                    .with_payload(vec![(i % 251) as u8; 64])
            })
            .collect();
        log.append_batch(&batch).unwrap();
    }
    drop(log);

    let snapshot_dir = dir.path().join("snap");
    let snapshot = snapshot_dir.join("events.redb");
    let started = Instant::now();
    run(Command::new(pulsewatch)
        .args(["snapshot", "--db"])
        .arg(&live)
        .arg("-o")
        .arg(&snapshot));
    let snapshot_time = started.elapsed();

    let guest = Path::new(env!("PULSEWATCH_GUEST_DIR")).join("poll-bench.wasm");
    let bundled = dir.path().join("poll-bench.standalone.wasm");
    run(Command::new(pulsewatch)
        .arg("bundle")
        .arg(&guest)
        .arg("-o")
        .arg(&bundled));
    let provider = Path::new(env!("PULSEWATCH_GUEST_DIR")).join("pulsewatch_provider.wasm");

    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let wasmtime_line = run(Command::new("wasmtime")
        .arg("run")
        .arg("--dir")
        .arg(format!("{}::/data", snapshot_dir.display()))
        .arg("--dir")
        .arg(format!("{}::/state", state.display()))
        .arg(&bundled)
        .args([LIMIT, CAUGHT_UP_POLLS]));
    let native_line = run(Command::new(pulsewatch)
        .args(["run", "--db"])
        .arg(&snapshot)
        .arg("--state-dir")
        .arg(dir.path().join("native-state"))
        .arg("--arg")
        .arg(format!("poll-bench={LIMIT}"))
        .arg("--arg")
        .arg(format!("poll-bench={CAUGHT_UP_POLLS}"))
        .arg(&guest));

    println!("poll-bench over a {EVENTS}-event snapshot, poll(since, {LIMIT}):");
    for (name, line) in [
        ("wasmtime run", &wasmtime_line),
        ("pulsewatch run", &native_line),
    ] {
        assert_eq!(field(line, "events"), EVENTS as f64, "{line}");
        println!(
            "  {name:<15} {:>8.1} µs/call  {:>5.2} M events/s  caught up {:>5.2} µs",
            field(line, "median_call_ns") / 1e3,
            field(line, "events_per_s") / 1e6,
            field(line, "caught_up_median_ns") / 1e3,
        );
    }
    let size = |path: &Path| std::fs::metadata(path).unwrap().len() as f64 / 1024.0;
    println!(
        "snapshot of {EVENTS} events: {:.2} s, {:.1} MiB",
        snapshot_time.as_secs_f64(),
        size(&snapshot) / 1024.0
    );
    println!(
        "provider {:.0} KiB, poll-bench {:.0} KiB, bundled {:.0} KiB",
        size(&provider),
        size(&guest),
        size(&bundled)
    );
}
