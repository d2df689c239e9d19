//! The `poll-bench` guest run through the sandbox, for the benches that time polls from inside a
//! plugin (`poll`, `jetstream`): it reads the whole feed and prints its own timings in one line
//! of `key=value` fields.

use pulsewatch::{OutputSink, PluginSpec, RunOptions, Runtime, Source, Stream};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The guest's lines, its stderr echoed.
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

/// The number `name=...` in one of the guest's lines.
pub fn field(line: &str, name: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// Runs the guest `passes` times over `source` with `limit`, `caught_up` caught-up polls and
/// `mode` (`typed` or `packed`), after a first run that warms the caches and is not counted;
/// each run must read `events`. The line of each counted run.
pub fn runs(
    runtime: &Runtime,
    dir: &Path,
    source: &Source,
    (limit, caught_up, mode): (u32, usize, &str),
    passes: usize,
    events: u64,
) -> Vec<String> {
    let wasm = Path::new(env!("PULSEWATCH_GUEST_DIR")).join("poll-bench.wasm");
    let mut spec = PluginSpec::from_file(wasm, &dir.join("state")).unwrap();
    spec.args = vec![limit.to_string(), caught_up.to_string(), mode.to_owned()];
    let plugin = runtime.load(&spec).unwrap();
    let capture = Arc::new(Capture::default());
    let sink: Arc<dyn OutputSink> = capture.clone();
    (0..=passes)
        .map(|_| {
            let outcome = runtime.run(&plugin, source.clone(), &RunOptions::default(), &sink);
            assert!(outcome.result.is_ok(), "{outcome:?}");
            let line = capture.0.lock().unwrap().last().cloned().unwrap();
            assert_eq!(field(&line, "events"), events as f64);
            line
        })
        .skip(1)
        .collect()
}
