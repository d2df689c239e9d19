//! Plugins in other languages beside Rust, in one run: the `kind-counts` example of each
//! language (counting changes by collective and kind through packed views, committing after
//! each batch of 1,000) over a log of 200,000 events, and its cached start. Python's is built
//! with componentize-py by guest/python/build.sh (skipped with a note when it is not installed).
//!
//! - **events/s**: 200,000 over (a run over the log less a run over an empty log), best of 3;
//! - **cached start**: a run over an empty log with the component compiled already (in the
//!   compile cache): load, instantiate, the language runtime's start, the first poll, the end.
//!
//! Run with `cargo bench --bench languages`.

use pulsewatch::{
    Change, ChangeKind, CompileCache, Log, OutputSink, PluginSpec, RunOptions, Runtime, Stream,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const EVENTS: u64 = 200_000;

struct Quiet;

impl OutputSink for Quiet {
    fn line(&self, _: &str, stream: Stream, line: &str) {
        if stream == Stream::Stderr {
            eprintln!("guest: {line}");
        }
    }
}

/// A log of `n` events over 5 collectives, with small JSON payloads.
fn log_of(path: &Path, n: u64) -> Arc<Log> {
    let log = Log::create(path).unwrap();
    let mut i = 0;
    while i < n {
        let batch: Vec<Change> = (i..(i + 10_000).min(n))
            .map(|i| {
                Change::new(
                    ChangeKind::ALL[(i % 4) as usize],
                    u128::from(i % 97),
                    u128::from(i % 5),
                )
                .with_payload(format!("{{\"order\":{i}}}"))
            })
            .collect();
        log.append_batch(&batch).unwrap();
        i += 10_000;
    }
    Arc::new(log)
}

/// One run of `spec` over `log`, with a fresh `/state`: how long it took.
fn timed(runtime: &Runtime, spec: &PluginSpec, log: &Arc<Log>) -> Duration {
    let _ = std::fs::remove_dir_all(&spec.state_dir);
    let started = Instant::now();
    let plugin = runtime.load(spec).unwrap();
    let sink: Arc<dyn OutputSink> = Arc::new(Quiet);
    let outcome = runtime.run(&plugin, log, &RunOptions::default(), &sink);
    assert!(outcome.result.is_ok(), "{outcome:?}");
    started.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn measure(language: &str, component: &Path, dir: &Path, full: &Arc<Log>, empty: &Arc<Log>) {
    let cache = CompileCache::open(&dir.join("cache")).unwrap();
    let runtime = Runtime::new().unwrap().with_cache(cache);
    let spec = PluginSpec::named("kind-counts", component, &dir.join("state")).unwrap();
    let compile = timed(&runtime, &spec, empty);
    let start = median((0..7).map(|_| timed(&runtime, &spec, empty)).collect());
    let run = (0..3).map(|_| timed(&runtime, &spec, full)).min().unwrap();
    let rate = EVENTS as f64 / (run.saturating_sub(start)).as_secs_f64();
    let size = std::fs::metadata(component).unwrap().len() as f64 / (1 << 20) as f64;
    println!(
        "{language:<7} {size:>6.1} MiB  first start (compiling) {:>7.0} ms  cached start {:>6.1} ms  {rate:>10.0} events/s",
        compile.as_secs_f64() * 1e3,
        start.as_secs_f64() * 1e3
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and wants no run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let full = log_of(&dir.path().join("events.redb"), EVENTS);
    let empty = log_of(&dir.path().join("empty.redb"), 0);
    println!("kind-counts over {EVENTS} events, batches of 1,000, committed after each:");
    let rust = Path::new(env!("PULSEWATCH_GUEST_DIR")).join("kind-counts.wasm");
    measure("Rust", &rust, &dir.path().join("rust"), &full, &empty);

    let python: PathBuf = dir.path().join("kind_counts.wasm");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/python/build.sh");
    match Command::new(script)
        .arg("kind_counts")
        .arg(&python)
        .output()
    {
        Ok(built) if built.status.success() => {
            measure("Python", &python, &dir.path().join("python"), &full, &empty);
        }
        Ok(built) => println!(
            "Python  skipped: the build failed: {}",
            String::from_utf8_lossy(&built.stderr)
        ),
        Err(e) => println!("Python  skipped: cannot run guest/python/build.sh: {e}"),
    }
}
