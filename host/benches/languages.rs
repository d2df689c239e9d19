//! Plugins in other languages beside Rust, in one run: the `kind-counts` example of each
//! language (counting changes by collective and kind through packed views, committing after
//! each batch of 1,000) over a log of 200,000 events, and its cached start. Python's is built
//! with componentize-py by guest/python/build.sh, JavaScript's with componentize-js by
//! guest/js/build.mjs, interpreted and compiled ahead of time with weval (`--aot`) (each
//! skipped with a note when its tools are not installed).
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

/// One run of `spec` over `log`, with a fresh `/state`: how long loading the component took,
/// and the whole.
fn timed(runtime: &Runtime, spec: &PluginSpec, log: &Arc<Log>) -> (Duration, Duration) {
    let _ = std::fs::remove_dir_all(&spec.state_dir);
    let started = Instant::now();
    let plugin = runtime.load(spec).unwrap();
    let loaded = started.elapsed();
    let sink: Arc<dyn OutputSink> = Arc::new(Quiet);
    let outcome = runtime.run(&plugin, log, &RunOptions::default(), &sink);
    assert!(outcome.result.is_ok(), "{outcome:?}");
    (loaded, started.elapsed())
}

fn median(mut times: Vec<(Duration, Duration)>) -> (Duration, Duration) {
    times.sort_by_key(|&(_, whole)| whole);
    times[times.len() / 2]
}

fn measure(language: &str, component: &Path, dir: &Path, full: &Arc<Log>, empty: &Arc<Log>) {
    let cache = CompileCache::open(&dir.join("cache")).unwrap();
    let runtime = Runtime::new().unwrap().with_cache(cache);
    let spec = PluginSpec::named("kind-counts", component, &dir.join("state")).unwrap();
    let (_, compile) = timed(&runtime, &spec, empty);
    let (load, start) = median((0..7).map(|_| timed(&runtime, &spec, empty)).collect());
    let run = (0..3)
        .map(|_| timed(&runtime, &spec, full).1)
        .min()
        .unwrap();
    let rate = EVENTS as f64 / (run.saturating_sub(start)).as_secs_f64();
    let size = std::fs::metadata(component).unwrap().len() as f64 / (1 << 20) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{language:<7} {size:>6.1} MiB  first start (compiling) {:>7.0} ms  cached start {:>6.1} ms (load {:>5.1} ms)  {rate:>10.0} events/s",
        ms(compile),
        ms(start),
        ms(load)
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

    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest");
    let mut python = Command::new(guest.join("python/build.sh"));
    python.arg("kind_counts");
    let js = |options: &[&str]| {
        let mut js = Command::new("node");
        js.arg(guest.join("js/build.mjs"))
            .args(options)
            .arg(guest.join("js/examples/kind_counts.js"));
        js
    };
    for (language, mut build) in [
        ("Python", python),
        ("JS", js(&[])),
        // Compiled ahead of time by weval (skipped, saying why, when it is not installed).
        ("JS AOT", js(&["--aot"])),
    ] {
        let component: PathBuf = dir
            .path()
            .join(format!("{language}.wasm").replace(' ', "-"));
        match build.arg(&component).output() {
            Ok(built) if built.status.success() => {
                let at = dir.path().join(language);
                measure(language, &component, &at, &full, &empty);
            }
            Ok(built) => println!(
                "{language:<7} skipped: the build failed: {}",
                String::from_utf8_lossy(&built.stderr)
            ),
            Err(e) => println!("{language:<7} skipped: cannot build it: {e}"),
        }
    }
}
