//! Shared by the end-to-end tests: real guests built from guest/, real redb files.
#![allow(dead_code)]

pub mod nats;
pub mod procs;
pub mod receiver;

use pulsewatch::{
    Change, ChangeKind, Limits, Log, OutputSink, Plugin, PluginSpec, RunOptions, Runtime, Stream,
    Supervisor, WorkerCommand,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// The component built from guest/ for `name` (a binary of guest/examples or guest/test-programs).
pub fn guest(name: &str) -> PathBuf {
    Path::new(env!("PULSEWATCH_GUEST_DIR")).join(format!("{name}.wasm"))
}

/// Runs the `pulsewatch` binary with `args` and waits for it.
pub fn pulsewatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs the `pulsewatch` binary with `args` in `dir`, its compile cache there too, and waits.
pub fn pulsewatch_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(args)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .output()
        .unwrap()
}

/// Process output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Collects every plugin output line.
#[derive(Default)]
pub struct Lines(Mutex<Vec<(String, Stream, String)>>);

impl OutputSink for Lines {
    fn line(&self, plugin: &str, stream: Stream, line: &str) {
        self.0
            .lock()
            .unwrap()
            .push((plugin.to_owned(), stream, line.to_owned()));
    }
}

impl Lines {
    /// Lines `plugin` printed on `stream`.
    pub fn of(&self, plugin: &str, stream: Stream) -> Vec<String> {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .filter(|(p, s, _)| p == plugin && *s == stream)
            .map(|(_, _, l)| l.clone())
            .collect()
    }

    /// The value after `prefix` on the line of `plugin`'s stdout that starts with it.
    pub fn value(&self, plugin: &str, prefix: &str) -> Option<String> {
        self.of(plugin, Stream::Stdout)
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
    }
}

/// A deterministic change: kind, entity and collective vary with `i` on different cycles.
pub fn change(i: u64) -> Change {
    let kind = ChangeKind::ALL[((i * 7 + i / 3) % 4) as usize];
    Change::new(kind, u128::from(i % 97) + 1, u128::from(i % 5) + 100)
        .at(1_700_000_000_000 + i)
        .with_payload(format!("{{\"i\":{i}}}"))
}

/// Appends changes `from..to` (by index) in batches of 1000.
pub fn fill(log: &Log, from: u64, to: u64) {
    let mut start = from;
    while start < to {
        let end = (start + 1000).min(to);
        let batch: Vec<Change> = (start..end).map(change).collect();
        log.append_batch(&batch).unwrap();
        start = end;
    }
}

/// Waits until `done` holds, looking every 10 ms; three minutes without it fail the test
/// (naming `what`) rather than hang it.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A manifest for `plugins` (name, guest program, extra TOML lines), pinned to each component's
/// sha256, written to `dir/plugins.toml`.
pub fn write_manifest(dir: &Path, plugins: &[(&str, &str, &str)]) -> PathBuf {
    let mut text = String::new();
    for (name, program, extra) in plugins {
        let component = guest(program);
        let sha = pulsewatch::sha256_hex(&std::fs::read(&component).unwrap());
        text += &format!(
            "[[plugin]]\nname = \"{name}\"\ncomponent = \"{}\"\nsha256 = \"{sha}\"\n{extra}\n\n",
            component.display()
        );
    }
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A new writable log in `dir` holding `n` events.
pub fn log_with(dir: &Path, n: u64) -> Arc<Log> {
    let log = Log::create(dir.join("events.redb")).unwrap();
    fill(&log, 0, n);
    Arc::new(log)
}

/// A supervisor whose workers are this build's `pulsewatch worker`.
pub fn supervisor() -> Supervisor {
    Supervisor::new(WorkerCommand {
        program: env!("CARGO_BIN_EXE_pulsewatch").into(),
        args: vec!["worker".into()],
    })
}

/// A test harness: one runtime, a state root in `dir`, limits for every plugin, and collected
/// output.
pub struct Harness {
    pub runtime: Runtime,
    pub options: RunOptions,
    pub lines: Arc<Lines>,
    pub state_root: PathBuf,
    pub limits: Limits,
}

impl Harness {
    pub fn new(dir: &Path) -> Self {
        Self::with_limits(dir, Limits::default())
    }

    pub fn with_limits(dir: &Path, limits: Limits) -> Self {
        Harness {
            runtime: Runtime::new().unwrap(),
            options: RunOptions::default(),
            lines: Arc::new(Lines::default()),
            state_root: dir.join("state"),
            limits,
        }
    }

    /// The guest `name` as a plugin of that name, with the harness's limits.
    pub fn spec(&self, name: &str) -> PluginSpec {
        let mut spec = PluginSpec::from_file(guest(name), &self.state_root).unwrap();
        spec.limits = self.limits;
        spec
    }

    pub fn load(&self, name: &str) -> Plugin {
        self.runtime.load(&self.spec(name)).unwrap()
    }

    /// Loads `name` with arguments.
    pub fn load_with(&self, name: &str, args: &[&str]) -> Plugin {
        let mut spec = self.spec(name);
        spec.args = args.iter().map(|a| (*a).to_owned()).collect();
        self.runtime.load(&spec).unwrap()
    }

    /// Loads `name` under another plugin name (and so another state directory).
    pub fn load_as(&self, name: &str, as_name: &str) -> Plugin {
        let mut spec = PluginSpec::named(as_name, guest(name), &self.state_root).unwrap();
        spec.limits = self.limits;
        self.runtime.load(&spec).unwrap()
    }

    pub fn sink(&self) -> Arc<dyn OutputSink> {
        self.lines.clone()
    }

    pub fn run_all(&self, plugins: &[Plugin], log: &Arc<Log>) -> Vec<pulsewatch::Outcome> {
        self.runtime
            .run_all(plugins, log, &self.options, &self.sink())
    }

    /// Runs `specs` each in a worker process over the log at `db`.
    pub fn supervise(&self, specs: &[PluginSpec], db: &Path) -> Vec<pulsewatch::Outcome> {
        supervisor()
            .run(specs, db, &self.options, &self.sink())
            .unwrap()
    }
}
