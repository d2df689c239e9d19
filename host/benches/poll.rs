//! Poll throughput on a 1,000,000-event log with 64-byte payloads: natively and through a guest
//! component, plus a caught-up poll. Run with `cargo bench --bench poll`.
//!
//! The guest (guest/test-programs/src/bin/poll-bench.rs) times its own calls with the WASI
//! monotonic clock, so its figures include lifting and lowering across the component boundary.

use pulsewatch::{Change, ChangeKind, Log, OutputSink, PluginSpec, RunOptions, Runtime, Stream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const EVENTS: u64 = 1_000_000;
const PAYLOAD: usize = 64;
const LIMIT: u32 = 1000;
const CAUGHT_UP_POLLS: usize = 10_000;
/// Passes over the whole log, natively and through the guest; each figure is the median of the
/// passes' figures, so that one disturbed pass on a shared machine does not decide the result.
const PASSES: usize = 5;

fn median<T: PartialOrd + Copy>(mut samples: Vec<T>) -> T {
    samples.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

fn fill(log: &Log) {
    let mut seq = 0u64;
    while seq < EVENTS {
        let batch: Vec<Change> = (seq..seq + 10_000)
            .map(|i| {
                Change::new(
                    ChangeKind::ALL[(i % 4) as usize],
                    u128::from(i),
                    u128::from(i % 16),
                )
                .with_payload(vec![(i % 251) as u8; PAYLOAD])
            })
            .collect();
        log.append_batch(&batch).unwrap();
        seq += 10_000;
    }
}

/// One pass over the whole log: (median ns per call, events per second).
fn native_pass(log: &Log) -> (u128, f64) {
    let mut since = 0;
    let mut per_call = Vec::with_capacity((EVENTS / u64::from(LIMIT)) as usize);
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let batch = log.poll(since, LIMIT).unwrap();
        per_call.push(t.elapsed().as_nanos());
        if batch.events.is_empty() {
            break;
        }
        since = batch.last_seq;
    }
    let elapsed = start.elapsed();
    per_call.pop();
    assert_eq!(since, EVENTS);
    (median(per_call), EVENTS as f64 / elapsed.as_secs_f64())
}

#[derive(Default)]
struct Capture(Mutex<Vec<String>>);

impl OutputSink for Capture {
    fn line(&self, _: &str, stream: Stream, line: &str) {
        if stream == Stream::Stderr {
            eprintln!("guest: {line}");
        }
        self.0.lock().unwrap().push(line.to_owned());
    }
}

fn field(line: &str, name: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and wants no 1M run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::create(dir.path().join("bench.redb")).unwrap());
    let t = Instant::now();
    fill(&log);
    println!(
        "wrote {EVENTS} events with {PAYLOAD}-byte payloads in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let native: Vec<(u128, f64)> = (0..PASSES).map(|_| native_pass(&log)).collect();
    let native_median = median(native.iter().map(|p| p.0 as f64).collect());
    let native_rate = median(native.iter().map(|p| p.1).collect());
    let idle_native = median(
        (0..CAUGHT_UP_POLLS)
            .map(|_| {
                let t = Instant::now();
                assert!(log.poll(EVENTS, LIMIT).unwrap().events.is_empty());
                t.elapsed().as_nanos()
            })
            .collect(),
    );

    let runtime = Runtime::new().unwrap();
    let wasm = Path::new(env!("PULSEWATCH_GUEST_DIR")).join("poll-bench.wasm");
    let mut spec = PluginSpec::from_file(wasm, &dir.path().join("state")).unwrap();
    spec.args = vec![LIMIT.to_string(), CAUGHT_UP_POLLS.to_string()];
    let plugin = runtime.load(&spec).unwrap();
    let options = RunOptions::default();
    let capture = Arc::new(Capture::default());
    let sink: Arc<dyn OutputSink> = capture.clone();
    let guest: Vec<String> = (0..PASSES)
        .map(|_| {
            let outcome = runtime.run(&plugin, &log, &options, &sink);
            assert!(outcome.result.is_ok(), "{outcome:?}");
            let line = capture.0.lock().unwrap().last().cloned().unwrap();
            assert_eq!(field(&line, "events"), EVENTS as f64);
            line
        })
        .collect();
    let guest_field = |name| median(guest.iter().map(|l| field(l, name)).collect());
    let (guest_median, guest_rate) = (guest_field("median_call_ns"), guest_field("events_per_s"));

    println!("poll(since, {LIMIT}) over {EVENTS} events, median of {PASSES} passes:");
    for (name, per_call, rate) in [
        ("native", native_median, native_rate),
        ("guest", guest_median, guest_rate),
    ] {
        println!(
            "  {name:<12}  {:>8.1} µs/call  {:>6.2} M events/s",
            per_call / 1e3,
            rate / 1e6
        );
    }
    println!(
        "  guest/native  {:.2}x time per call, {:.2}x throughput",
        guest_median / native_median,
        native_rate / guest_rate
    );
    println!("caught-up poll (nothing new), median of {CAUGHT_UP_POLLS}:");
    println!("  native        {:>8.2} µs", idle_native as f64 / 1e3);
    println!(
        "  guest         {:>8.2} µs",
        guest_field("caught_up_median_ns") / 1e3
    );
}
