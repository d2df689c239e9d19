//! What effects cost: a transform deriving one event per input event, end to end (poll, guest,
//! commit of outputs and cursor) in batches of 1,000; the latency of one commit of 1,000
//! derived events with the cursor; and webhook deliveries per second from one plugin to a
//! receiver on loopback, over kept-alive connections. Run with `cargo bench --bench effects`.

#[path = "../../tests/common/receiver.rs"]
mod receiver;

use pulsewatch::{
    Change, ChangeKind, Derived, Log, OutputSink, PluginSpec, RunOptions, Runtime, Stream,
};
use pulsewatch_log::{Given, OutputLog, Outputs};
use receiver::{Receiver, Reply};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TRANSFORM_EVENTS: u64 = 200_000;
const COMMITS: usize = 200;
const DELIVERIES: u64 = 20_000;

struct Quiet;

impl OutputSink for Quiet {
    fn line(&self, _: &str, _: Stream, _: &str) {}
}

fn guest(name: &str) -> std::path::PathBuf {
    Path::new(env!("PULSEWATCH_GUEST_DIR")).join(format!("{name}.wasm"))
}

/// A log of `n` events with 64-byte payloads.
fn log_of(path: &Path, n: u64) -> Arc<Log> {
    let log = Log::create(path).unwrap();
    let mut i = 0;
    while i < n {
        let batch: Vec<Change> = (i..(i + 10_000).min(n))
            .map(|i| {
                Change::new(
                    ChangeKind::ALL[(i % 4) as usize],
                    u128::from(i),
                    u128::from(i % 5),
                )
                .with_payload(vec![b'x'; 64])
            })
            .collect();
        log.append_batch(&batch).unwrap();
        i += 10_000;
    }
    Arc::new(log)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new().unwrap();
    let sink: Arc<dyn OutputSink> = Arc::new(Quiet);

    // 1. Transform throughput: fan-out in copy mode, one derived event per input event.
    let log = log_of(&dir.path().join("in.redb"), TRANSFORM_EVENTS);
    let out = dir.path().join("out.redb");
    let mut spec = PluginSpec::from_file(guest("fan-out"), &dir.path().join("state")).unwrap();
    spec.args = vec!["out".into(), "copy".into()];
    spec.env = vec![("PULSEWATCH_BATCH".into(), "1000".into())];
    spec.outputs = vec![out.clone()];
    let plugin = runtime.load(&spec).unwrap();
    let started = Instant::now();
    let outcome = runtime.run(&plugin, &log, &RunOptions::default(), &sink);
    let took = started.elapsed();
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    let written = Log::open_read_only(&out).unwrap().head().unwrap();
    assert_eq!(written, TRANSFORM_EVENTS);
    println!(
        "transform, 1 derived event per input, batches of 1000: {TRANSFORM_EVENTS} in {:.2} s = {:.0} derived events/s",
        took.as_secs_f64(),
        TRANSFORM_EVENTS as f64 / took.as_secs_f64()
    );

    // 2. Commit latency: 1,000 derived events and the cursor, in one transaction.
    let commits = Log::create(dir.path().join("commits.redb")).unwrap();
    let outputs = Outputs::new(
        "bench",
        "in.redb",
        vec![("commits".into(), Arc::new(commits) as Arc<dyn OutputLog>)],
    );
    let mut times = Vec::with_capacity(COMMITS);
    for c in 0..COMMITS as u64 {
        let events: Vec<(u32, Derived)> = (c * 1000 + 1..=(c + 1) * 1000)
            .map(|from| {
                let change = Change::new(ChangeKind::Updated, u128::from(from), 1)
                    .with_payload(vec![b'y'; 64]);
                (0, Derived { from, change })
            })
            .collect();
        let started = Instant::now();
        outputs
            .commit(
                (c + 1) * 1000,
                Given {
                    start: Some(0),
                    delivered: (c + 1) * 1000,
                },
                b"state",
                events,
            )
            .unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "commit of 1000 derived events + cursor: p50 {:.2?}, p99 {:.2?} ({COMMITS} commits)",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );

    // 3. Webhook deliveries from one plugin, over kept-alive connections.
    let receiver = Receiver::start(|_, _| Reply::ok());
    let hooks = log_of(&dir.path().join("hooks.redb"), DELIVERIES);
    let mut spec = PluginSpec::from_file(guest("webhook"), &dir.path().join("state")).unwrap();
    spec.args = vec![receiver.url("/events")];
    spec.allowed_outbound_hosts = vec![
        format!("http://127.0.0.1:{}", receiver.addr.port())
            .parse()
            .unwrap(),
    ];
    let plugin = runtime.load(&spec).unwrap();
    let started = Instant::now();
    let outcome = runtime.run(&plugin, &hooks, &RunOptions::default(), &sink);
    let took = started.elapsed();
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert_eq!(receiver.requests().len() as u64, DELIVERIES);
    println!(
        "webhook: {DELIVERIES} deliveries in {:.2} s = {:.0}/s over {} connection(s)",
        took.as_secs_f64(),
        DELIVERIES as f64 / took.as_secs_f64(),
        receiver.connections()
    );
}
