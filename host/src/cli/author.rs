//! `pulsewatch test`: a plugin run on a handful of events, for its author. The events come from
//! a file of JSON lines (as `import` takes them) into a log in a temporary directory; the plugin
//! runs there in the same sandbox as under `run`, until it has caught up. Its stdout goes to
//! stdout as it printed it, everything else to stderr: the files it left in `/state`, the
//! events it derived, and each expectation's verdict, with a diff when one fails.

use anyhow::Context;
use clap::Args as ClapArgs;
use pulsewatch::jsonl::{parse_line, write_checkpoint, write_derived};
use pulsewatch::{CompileCache, Log, Origin, OutputSink, PluginSpec, RunOptions, Runtime, Stream};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// Arguments of `pulsewatch test`.
#[derive(ClapArgs)]
pub struct TestArgs {
    /// The plugin: a WASI component, or a project directory made by `pulsewatch new` (built
    /// first, then tested as its pulsewatch.toml says).
    plugin: PathBuf,
    /// The events to run it on: JSON lines, as `pulsewatch import` takes them.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// An argument for the plugin (repeatable, in order).
    #[arg(long = "arg", value_name = "VALUE", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Grant the plugin an output log by this name (repeatable); its derived events are shown.
    #[arg(long = "output", value_name = "NAME")]
    outputs: Vec<String>,
    /// Fail, with a diff, unless the plugin printed exactly this file's lines.
    #[arg(long, value_name = "FILE")]
    expect_stdout: Option<PathBuf>,
    /// Fail, with a diff, unless the files the plugin left in `/state` are this directory's.
    #[arg(long, value_name = "DIR")]
    expect_state: Option<PathBuf>,
    /// Fail, with a diff, unless the outputs hold exactly this file's lines: each derived event
    /// (its output, seq, kind, ids, payload and id; not the time of its commit), then the
    /// plugin's checkpoint there (cursor and state).
    #[arg(long, value_name = "FILE")]
    expect_derived: Option<PathBuf>,
    /// Write what the plugin did as the expectations (the stdout file, the state directory, the
    /// derived events) instead of checking it: after reading the diff, to accept a change.
    #[arg(long)]
    update: bool,
}

/// The plugin's stdout lines, kept; its stderr shown as it comes.
#[derive(Default)]
struct Printed(Mutex<Vec<String>>);

impl OutputSink for Printed {
    fn line(&self, plugin: &str, stream: Stream, line: &str) {
        match stream {
            Stream::Stdout => {
                self.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line.to_owned());
            }
            Stream::Stderr => say!("[{plugin}] {line}"),
        }
    }
}

/// A project's `pulsewatch.toml`: how to build its plugin and what to check. Paths are
/// relative to the project.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Project {
    /// A shell command that builds the component.
    build: String,
    /// The component it builds.
    component: PathBuf,
    /// The events to test it on.
    events: PathBuf,
    /// What it must print, if anything.
    expect_stdout: Option<PathBuf>,
    /// What it must leave in `/state`, if anything.
    expect_state: Option<PathBuf>,
    /// What it must derive into its outputs, if anything.
    expect_derived: Option<PathBuf>,
    /// Its arguments.
    #[serde(default)]
    args: Vec<String>,
    /// The output logs it is granted.
    #[serde(default)]
    outputs: Vec<String>,
}

/// The file in a project directory that says how to build and test it.
const PROJECT_FILE: &str = "pulsewatch.toml";

pub fn test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    if !args.plugin.is_dir() {
        let events = args
            .events
            .as_ref()
            .context("--events FILE is needed: the events to run the plugin on, as JSON lines")?;
        return test_component(args, &args.plugin, events);
    }
    // A project: built, then tested as its file says, where the command line says nothing.
    let dir = &args.plugin;
    let file = dir.join(PROJECT_FILE);
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "{}: cannot read it; a directory tested is a project made by `pulsewatch new`",
            file.display()
        )
    })?;
    let project: Project = toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
    say!("building: {}", project.build);
    let built = std::process::Command::new("sh")
        .arg("-c")
        .arg(&project.build)
        .current_dir(dir)
        // Its output is not the plugin's: stdout is kept for what the plugin prints.
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("cannot run the build command {:?}", project.build))?;
    if !built.success() {
        anyhow::bail!(
            "the build command {:?} failed ({built}); its output is above",
            project.build
        );
    }
    let or_project = |given: &Option<PathBuf>, kept: Option<PathBuf>| {
        given.clone().or_else(|| kept.map(|path| dir.join(path)))
    };
    let merged = TestArgs {
        plugin: dir.join(&project.component),
        events: Some(or_project(&args.events, Some(project.events)).expect("given")),
        args: if args.args.is_empty() {
            project.args
        } else {
            args.args.clone()
        },
        outputs: if args.outputs.is_empty() {
            project.outputs
        } else {
            args.outputs.clone()
        },
        expect_stdout: or_project(&args.expect_stdout, project.expect_stdout),
        expect_state: or_project(&args.expect_state, project.expect_state),
        expect_derived: or_project(&args.expect_derived, project.expect_derived),
        update: args.update,
    };
    let events = merged.events.clone().expect("given");
    test_component(&merged, &merged.plugin, &events)
}

/// Tests the component at `plugin` on `events`, as `args` say.
fn test_component(args: &TestArgs, plugin: &Path, events: &Path) -> anyhow::Result<ExitCode> {
    if args.update
        && args.expect_stdout.is_none()
        && args.expect_state.is_none()
        && args.expect_derived.is_none()
    {
        anyhow::bail!(
            "--update writes the expectations: name them with --expect-stdout FILE, \
             --expect-state DIR or --expect-derived FILE"
        );
    }
    if args.expect_derived.is_some() && args.outputs.is_empty() {
        anyhow::bail!(
            "--expect-derived checks what the plugin derives into output logs: grant them with \
             --output NAME (or `outputs = [\"NAME\"]` in its pulsewatch.toml)"
        );
    }
    if let Some(bad) = args.outputs.iter().find(|name| !plain_name(name)) {
        anyhow::bail!(
            "--output {bad:?}: an output's name is letters, digits, '-' and '_', as the plugin \
             asks for it"
        );
    }
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let log = fixture_log(events, &dir.path().join("events.redb"))?;
    let mut spec = PluginSpec::from_file(plugin, &dir.path().join("state"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", plugin.display()))?;
    spec.args.clone_from(&args.args);
    spec.outputs = args
        .outputs
        .iter()
        .map(|name| dir.path().join(format!("{name}.redb")))
        .collect();
    let runtime = Runtime::new()?;
    // Compiled once for every test of the same component (a Python plugin takes seconds).
    let runtime = match cache_dir().map(|dir| CompileCache::open(&dir)) {
        Some(Ok(cache)) => runtime.with_cache(cache),
        _ => runtime,
    };
    let plugin = runtime.load(&spec)?;
    let printed = Arc::new(Printed::default());
    let sink: Arc<dyn OutputSink> = printed.clone();
    let outcome = runtime.run(&plugin, &log, &RunOptions::default(), &sink);

    let stdout = std::mem::take(&mut *printed.0.lock().unwrap_or_else(|e| e.into_inner()));
    for line in &stdout {
        out!("{line}")?;
    }
    let state = files(&spec.state_dir)?;
    say!("{}", listing(&state));
    let mut derived = Vec::new();
    for (name, path) in args.outputs.iter().zip(&spec.outputs) {
        let output =
            Log::open_read_only(path).with_context(|| format!("cannot read output {name}"))?;
        let origins: BTreeMap<u64, Origin> =
            output.origins(1, output.head()?)?.into_iter().collect();
        let mut since = 0;
        loop {
            let batch = output.poll(since, 1000)?;
            for event in &batch.events {
                write_derived(&mut derived, name, event, origins.get(&event.seq))?;
            }
            if batch.events.is_empty() {
                break;
            }
            since = batch.last_seq;
        }
        if let Some(checkpoint) = output.checkpoint(&spec.name)? {
            write_checkpoint(
                &mut derived,
                name,
                checkpoint.cursor,
                checkpoint.state.as_deref(),
            )?;
        }
    }
    let derived = String::from_utf8(derived).context("derived lines are JSON text")?;
    if !args.outputs.is_empty() {
        say!("outputs:");
        for line in derived.lines() {
            say!("  {line}");
        }
    }
    let mut passed = true;
    if let Err(failure) = &outcome.result {
        say!("FAILED: the plugin did not end cleanly: {failure}");
        passed = false;
    } else {
        say!(
            "the plugin ended cleanly, after {}",
            super::events(log.head()?)
        );
    }

    if let Some(expected) = &args.expect_stdout {
        let actual: String = stdout.iter().map(|l| format!("{l}\n")).collect();
        passed &= expect_lines(
            expected,
            &actual,
            args.update,
            ["stdout is", "stdout is not", "stdout"],
        )?;
    }
    if let Some(expected) = &args.expect_derived {
        passed &= expect_lines(
            expected,
            &derived,
            args.update,
            ["the outputs hold", "the outputs do not hold", "derived"],
        )?;
    }
    if let Some(expected) = &args.expect_state {
        if args.update {
            write_files(expected, &state)?;
            say!("wrote {}", expected.display());
        } else {
            let wanted = files(expected)?;
            let differences = compare(&wanted, &state, expected);
            if differences.is_empty() {
                say!("ok: /state is {}", expected.display());
            } else {
                say!(
                    "FAILED: /state is not {}:\n{}",
                    expected.display(),
                    differences.join("\n")
                );
                passed = false;
            }
        }
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Checks that `actual` is the lines of the file `expected` (or writes it there, to `update`),
/// saying so as `ok: <is> FILE`, or as `FAILED: <is not> FILE` with a diff against the run's
/// `label`. Whether it is.
fn expect_lines(
    expected: &Path,
    actual: &str,
    update: bool,
    [is, is_not, label]: [&str; 3],
) -> anyhow::Result<bool> {
    if update {
        std::fs::write(expected, actual)
            .with_context(|| format!("{}: cannot write", expected.display()))?;
        say!("wrote {}", expected.display());
        return Ok(true);
    }
    let wanted = std::fs::read_to_string(expected)
        .with_context(|| format!("{}: cannot read", expected.display()))?;
    let wanted: String = wanted.lines().map(|l| format!("{l}\n")).collect();
    if wanted == actual {
        say!("ok: {is} {}", expected.display());
        return Ok(true);
    }
    say!(
        "FAILED: {is_not} {}:\n{}",
        expected.display(),
        diff(&wanted, actual, &expected.display().to_string(), label)
    );
    Ok(false)
}

/// Whether `name` is letters, digits, '-' and '_', and not empty: an output's, or a new
/// plugin's.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

/// Where `test` keeps compiled components between runs: `$XDG_CACHE_HOME/pulsewatch`, or
/// `~/.cache/pulsewatch`.
fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .map(|dir| dir.join("pulsewatch"))
}

/// A log at `path` holding the events of the JSON lines in `fixture`, in one transaction.
fn fixture_log(fixture: &Path, path: &Path) -> anyhow::Result<Arc<Log>> {
    let text = std::fs::read_to_string(fixture)
        .with_context(|| format!("{}: cannot read the events", fixture.display()))?;
    let mut changes = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let change =
            parse_line(line).with_context(|| format!("{}:{}", fixture.display(), index + 1))?;
        changes.push(change);
    }
    let log = Log::create(path)?;
    if !changes.is_empty() {
        log.append_batch(&changes)?;
    }
    Ok(Arc::new(log))
}

/// The files under `dir` by their path relative to it, with their bytes; the host's own
/// records (`.pulsewatch`) left out. None when `dir` does not exist.
fn files(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut found = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        let entries = match std::fs::read_dir(&at) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && at == dir => break,
            Err(e) => return Err(e).with_context(|| format!("{}: cannot list", at.display())),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == ".pulsewatch") {
                continue;
            }
            let name = path.strip_prefix(dir).unwrap_or(&path);
            let name = name.to_string_lossy().into_owned();
            // A plugin can make links: one is shown as where it points, never followed (out of
            // the directory, or round in a loop).
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                let target = std::fs::read_link(&path)?;
                found.insert(name, format!("a link to {}", target.display()).into_bytes());
            } else if kind.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("{}: cannot read", path.display()))?;
                found.insert(name, bytes);
            }
        }
    }
    Ok(found)
}

/// Writes the files `left` under `dir`. Nothing is deleted: files there that the plugin did not leave
/// are named, for the author to remove (the next check fails on them).
fn write_files(dir: &Path, left: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    for name in files(dir)?.keys().filter(|name| !left.contains_key(*name)) {
        say!(
            "{} holds {name}, which the plugin did not leave: remove it if it should not be \
             expected",
            dir.display()
        );
    }
    for (name, bytes) in left {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes)
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// What `/state` holds, a line a file.
fn listing(files: &BTreeMap<String, Vec<u8>>) -> String {
    if files.is_empty() {
        return "/state: empty".to_owned();
    }
    let mut text = format!(
        "/state ({}):",
        super::count(files.len() as u64, "file", "files")
    );
    for (name, bytes) in files {
        text += &format!(
            "\n  {name} ({})",
            super::count(bytes.len() as u64, "byte", "bytes")
        );
    }
    text
}

/// How `actual` differs from `wanted` (read from `dir`), a line a file.
fn compare(
    wanted: &BTreeMap<String, Vec<u8>>,
    actual: &BTreeMap<String, Vec<u8>>,
    dir: &Path,
) -> Vec<String> {
    let mut differences = Vec::new();
    for (name, bytes) in wanted {
        match actual.get(name) {
            None => differences.push(format!("  {name}: missing: the plugin left no such file")),
            Some(found) if found == bytes => {}
            Some(found) => {
                let text = (std::str::from_utf8(bytes), std::str::from_utf8(found));
                differences.push(match text {
                    (Ok(wanted), Ok(found)) => format!(
                        "  {name} differs:\n{}",
                        diff(wanted, found, &dir.join(name).display().to_string(), name)
                    ),
                    _ => format!(
                        "  {name} differs: {} expected, {} found (not text)",
                        super::count(bytes.len() as u64, "byte", "bytes"),
                        super::count(found.len() as u64, "byte", "bytes")
                    ),
                });
            }
        }
    }
    for name in actual.keys().filter(|name| !wanted.contains_key(*name)) {
        differences.push(format!("  {name}: not expected: the plugin left it"));
    }
    differences
}

/// A unified diff from `wanted` (named `from`) to `actual` (named `to`).
fn diff(wanted: &str, actual: &str, from: &str, to: &str) -> String {
    similar::TextDiff::from_lines(wanted, actual)
        .unified_diff()
        .context_radius(3)
        .header(from, to)
        .to_string()
}

/// The languages `pulsewatch new` writes a plugin project in.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the pulsewatch-guest SDK (built with cargo for wasm32-wasip2).
    Rust,
    /// Python, with the pulsewatch package (built with componentize-py 0.25).
    Python,
    /// JavaScript, with the pulsewatch module (built with componentize-js 0.23; `npm ci` in
    /// guest/js first).
    Js,
}

/// Arguments of `pulsewatch new`.
#[derive(ClapArgs)]
pub struct NewArgs {
    /// The language of the plugin.
    #[arg(long, value_enum)]
    lang: Lang,
    /// The plugin's name, which names its directory: letters, digits, '-' and '_'.
    name: String,
}

/// The SDKs of this checkout, which a new project uses.
const SDKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest");

/// The project a new plugin starts as, file by file; `@NAME@`, `@MODULE@` (the name as a
/// Python module) and `@SDK@` are filled in. The SDK directory under guest/ comes first.
fn template(lang: Lang) -> (&'static str, Vec<(&'static str, &'static str)>) {
    let fixture = include_str!("../../../guest/examples/fixtures/orders.jsonl");
    let expected = include_str!("templates/expected.stdout");
    let (sdk, mut files) = match lang {
        Lang::Rust => (
            "sdk",
            vec![
                ("Cargo.toml", include_str!("templates/rust/Cargo.toml.tmpl")),
                ("src/main.rs", include_str!("templates/rust/main.rs.tmpl")),
                (
                    PROJECT_FILE,
                    include_str!("templates/rust/pulsewatch.toml.tmpl"),
                ),
                (".gitignore", "/target\n"),
            ],
        ),
        Lang::Python => (
            "python",
            vec![
                (
                    "@MODULE@.py",
                    include_str!("templates/python/plugin.py.tmpl"),
                ),
                (
                    PROJECT_FILE,
                    include_str!("templates/python/pulsewatch.toml.tmpl"),
                ),
                (".gitignore", "*.wasm\n__pycache__/\n"),
            ],
        ),
        Lang::Js => (
            "js",
            vec![
                ("@NAME@.js", include_str!("templates/js/plugin.js.tmpl")),
                (
                    PROJECT_FILE,
                    include_str!("templates/js/pulsewatch.toml.tmpl"),
                ),
                (".gitignore", "*.wasm\n"),
            ],
        ),
    };
    files.extend([("fixture.jsonl", fixture), ("expected.stdout", expected)]);
    (sdk, files)
}

pub fn new(args: &NewArgs) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic()) && plain_name(name);
    if !valid {
        anyhow::bail!(
            "{name:?} cannot name a plugin: a name starts with a letter, and is letters, digits, \
             '-' and '_'"
        );
    }
    let dir = Path::new(name);
    if dir.exists() {
        anyhow::bail!(
            "{} exists already: a new project is written into a new directory",
            dir.display()
        );
    }
    let (sdk, files) = template(args.lang);
    let sdk = Path::new(SDKS).join(sdk);
    let sdk = std::fs::canonicalize(&sdk).map_err(|_| {
        anyhow::anyhow!(
            "the SDK a new project uses is not at {}: `pulsewatch new` works from the checkout \
             this pulsewatch was built in",
            sdk.display()
        )
    })?;
    let fill = |text: &str| {
        text.replace("@NAME@", name)
            .replace("@MODULE@", &name.replace('-', "_"))
            .replace("@SDK@", &sdk.display().to_string())
    };
    for (path, text) in files {
        let path = dir.join(fill(path));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("{}: cannot make it", parent.display()))?;
        }
        let text = fill(text);
        std::fs::write(&path, text).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    say!(
        "made {}: a plugin that counts changes by kind, with events to test it on and what it \
         must print; test it with\n   pulsewatch test {}",
        dir.display(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
