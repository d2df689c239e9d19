//! Plugins in other languages, built with their SDKs from guest/: the Python and JavaScript
//! examples give the Rust examples' stdout and leave the same `/state` files, byte for byte, on
//! the examples' fixture, and their transforms derive the same events and commit the same
//! state, as `pulsewatch test` checks against the Rust examples' expectations.

mod common;

use common::{pulsewatch_in, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `tool` runs with `--version`, for a test that needs it: in CI (`CI=true`) its
/// absence fails the test; elsewhere the test is skipped with a note saying how to install it.
fn installed(tool: &str, install: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found || std::env::var("CI").as_deref() != Ok("true"),
        "{tool} is required in CI: {install}"
    );
    if !found {
        eprintln!("skipped: {tool} is not installed ({install})");
    }
    found
}

/// Builds the three examples of a language with `build(module, component)` and tests each
/// against the Rust example's expectations: stdout and `/state` of `kind-counts` and
/// `filter-jsonl`; the derived events and the committed state of the transform
/// `tenant-totals`. Then the transform runs again over a log that grew: it resumes from its
/// last commit, restoring its state.
fn examples_match_rust(build: impl Fn(&str, &Path) -> Command) {
    let dir = tempfile::tempdir().unwrap();
    for (module, rust, args) in [
        ("kind_counts", "kind-counts", vec![]),
        (
            "filter_jsonl",
            "filter-jsonl",
            vec!["--arg", "kind=updated"],
        ),
        ("tenant_totals", "tenant-totals", vec!["--output", "totals"]),
    ] {
        // Named as the Rust example is: a derived event's id names the plugin.
        let wasm = dir.path().join(format!("{rust}.wasm"));
        let built = build(module, &wasm).output().unwrap();
        assert!(
            built.status.success(),
            "{}{}",
            text(&built.stdout),
            text(&built.stderr)
        );
        matches_rust(dir.path(), &wasm, rust, &args);
    }
    resumes_from_its_last_commit(dir.path(), &dir.path().join("tenant-totals.wasm"));
}

/// The examples' fixtures and expectations.
fn fixtures() -> PathBuf {
    root().join("guest/examples/fixtures")
}

/// `pulsewatch test` of `wasm` (given `args`) passes the Rust example `rust`'s expectations:
/// stdout and `/state`, or, for a transform (granted an output), its derived events and stdout.
fn matches_rust(dir: &Path, wasm: &Path, rust: &str, args: &[&str]) {
    let expected = |suffix: &str| fixtures().join(format!("{rust}.{suffix}"));
    let mut test = vec![
        "test".to_owned(),
        wasm.display().to_string(),
        "--events".to_owned(),
        fixtures().join("orders.jsonl").display().to_string(),
    ];
    let checks: &[(&str, &str, &str)] = if args.contains(&"--output") {
        &[
            ("--expect-derived", "derived", "ok: the outputs hold"),
            ("--expect-stdout", "stdout", "ok: stdout is"),
        ]
    } else {
        &[
            ("--expect-stdout", "stdout", "ok: stdout is"),
            ("--expect-state", "state", "ok: /state is"),
        ]
    };
    for (flag, suffix, _) in checks {
        test.push(flag.to_string());
        test.push(expected(suffix).display().to_string());
    }
    test.extend(args.iter().map(|a| a.to_string()));
    let test: Vec<&str> = test.iter().map(String::as_str).collect();
    let tested = pulsewatch_in(dir, &test);
    let said = text(&tested.stderr);
    assert!(tested.status.success(), "{rust}: {said}");
    for (_, _, ok) in checks {
        assert!(said.contains(ok), "{rust}: {said}");
    }
}

/// Runs the transform `wasm` over the fixture's first 5 events, then again once the other 7
/// are appended: the output then holds what one run over all 12 derives (the Rust example's
/// expectation), which it can only if the second run restored the first's committed state.
fn resumes_from_its_last_commit(dir: &Path, wasm: &Path) {
    let lines: Vec<String> = std::fs::read_to_string(fixtures().join("orders.jsonl"))
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    let db = dir.join("resume.redb");
    let totals = dir.join("totals.redb");
    for part in [&lines[..5], &lines[5..]] {
        let fixture = dir.join("part.jsonl");
        std::fs::write(&fixture, part.concat()).unwrap();
        let imported = pulsewatch_in(dir, &["import", "--db", path(&db), path(&fixture)]);
        assert!(imported.status.success(), "{}", text(&imported.stderr));
        let ran = pulsewatch_in(
            dir,
            &[
                "run",
                "--db",
                path(&db),
                "--output",
                path(&totals),
                path(wasm),
            ],
        );
        assert!(ran.status.success(), "{}", text(&ran.stderr));
    }
    let tailed = pulsewatch_in(dir, &["tail", "--db", path(&totals)]);
    assert!(tailed.status.success(), "{}", text(&tailed.stderr));
    let derived: Vec<serde_json::Value> = text(&tailed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let wanted: Vec<serde_json::Value> =
        std::fs::read_to_string(fixtures().join("tenant-totals.derived"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|line: &serde_json::Value| line.get("seq").is_some())
            .collect();
    assert_eq!(derived.len(), 12, "{derived:?}");
    for (got, want) in derived.iter().zip(&wanted) {
        for field in ["seq", "kind", "entity", "collective", "payload", "id"] {
            assert_eq!(got[field], want[field], "{field} of {got}");
        }
    }
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Whether componentize-js is installed in guest/js, for a test that needs it (required in
/// CI, as [`installed`] says).
fn componentize_js() -> bool {
    let install = "npm ci in guest/js (.ci/run does)";
    let found = installed("node", install)
        && root()
            .join("guest/js/node_modules/@bytecodealliance/componentize-js")
            .exists();
    assert!(
        found || std::env::var("CI").as_deref() != Ok("true"),
        "componentize-js is required in CI: {install}"
    );
    if !found {
        eprintln!("skipped: componentize-js is not installed ({install})");
    }
    found
}

#[test]
fn the_python_examples_match_the_rust_examples() {
    if installed(
        "componentize-py",
        "pip install componentize-py==0.25.1 (.ci/run does)",
    ) {
        examples_match_rust(|module, wasm| {
            let mut command = Command::new(root().join("guest/python/build.sh"));
            command.arg(module).arg(wasm);
            command
        });
    }
}

#[test]
fn the_javascript_examples_match_the_rust_examples() {
    if componentize_js() {
        // The TypeScript declarations are valid (typescript is pinned in package.json).
        let js = root().join("guest/js");
        let checked = Command::new(js.join("node_modules/.bin/tsc"))
            .args(["--noEmit", "--strict", "pulsewatch.d.ts", "transform.d.ts"])
            .current_dir(&js)
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "{}{}",
            text(&checked.stdout),
            text(&checked.stderr)
        );
        // A transform imported only by a helper module: the build says which file should
        // import it, and leaves no component behind.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("helper.js"),
            "import { Transform } from 'pulsewatch/transform';\n\
             export class T extends Transform { process(batch, out) {} }\n",
        )
        .unwrap();
        let main = dir.path().join("main.js");
        std::fs::write(
            &main,
            "import { T } from './helper.js';\nimport { command } from 'pulsewatch';\n\
             export const run = command(T);\n",
        )
        .unwrap();
        let wasm = dir.path().join("main.wasm");
        std::fs::write(&wasm, b"an earlier build").unwrap();
        let built = Command::new("node")
            .arg(js.join("build.mjs"))
            .arg(&main)
            .arg(&wasm)
            .output()
            .unwrap();
        assert!(!built.status.success());
        assert!(
            text(&built.stderr).contains("does not import 'pulsewatch/transform' itself"),
            "{}",
            text(&built.stderr)
        );
        assert!(!wasm.exists());
        examples_match_rust(|module, wasm| {
            let mut command = Command::new("node");
            command
                .arg(root().join("guest/js/build.mjs"))
                .arg(root().join(format!("guest/js/examples/{module}.js")))
                .arg(wasm);
            command
        });
    }
}

/// A JavaScript plugin compiled ahead of time (`build.mjs --aot`, with weval) behaves as the
/// interpreted one: the Rust example's stdout and `/state` on the fixture.
#[test]
fn a_javascript_plugin_compiled_ahead_of_time_matches_the_rust_example() {
    if !componentize_js() || !installed("weval", "cargo install weval --version 0.5.0 --locked") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("kind-counts.wasm");
    let built = Command::new("node")
        .arg(root().join("guest/js/build.mjs"))
        .arg("--aot")
        .arg(root().join("guest/js/examples/kind_counts.js"))
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built.stderr));
    matches_rust(dir.path(), &wasm, "kind-counts", &[]);
}

/// `pulsewatch new --lang python|js`, then `pulsewatch test` of the directory: each project
/// builds and passes its own test, printing what the Rust project prints.
#[test]
fn new_python_and_javascript_plugins_build_and_pass_their_tests() {
    let python = installed("componentize-py", "pip install componentize-py==0.25.1");
    let js = componentize_js();
    let dir = tempfile::tempdir().unwrap();
    for (lang, wanted) in [("python", python), ("js", js)] {
        if !wanted {
            continue;
        }
        let name = format!("hello-{lang}");
        let made = pulsewatch_in(dir.path(), &["new", "--lang", lang, &name]);
        assert!(made.status.success(), "{}", text(&made.stderr));
        let tested = pulsewatch_in(dir.path(), &["test", &name]);
        let said = text(&tested.stderr);
        assert!(tested.status.success(), "{lang}: {said}");
        assert!(said.contains("ok: stdout is"), "{said}");
        assert_eq!(
            text(&tested.stdout),
            "created=3 updated=5 archived=2 deleted=2\ncursor: 12\n"
        );
    }
}
