//! Plugins in other languages, built with their SDKs from guest/: the Python and JavaScript
//! examples give the Rust examples' stdout and leave the same `/state` files, byte for byte, on
//! the examples' fixture, as `pulsewatch test` checks against the Rust examples' expectations.

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

/// Builds the two examples of a language with `build(module, component)` and tests each
/// against the Rust example's expectations.
fn examples_match_rust(build: impl Fn(&str, &Path) -> Command) {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = root().join("guest/examples/fixtures");
    for (module, rust, args) in [
        ("kind_counts", "kind-counts", vec![]),
        (
            "filter_jsonl",
            "filter-jsonl",
            vec!["--arg", "kind=updated"],
        ),
    ] {
        let wasm = dir.path().join(format!("{module}.wasm"));
        let built = build(module, &wasm).output().unwrap();
        assert!(
            built.status.success(),
            "{}{}",
            text(&built.stdout),
            text(&built.stderr)
        );
        let events = fixtures.join("orders.jsonl");
        let stdout = fixtures.join(format!("{rust}.stdout"));
        let state = fixtures.join(format!("{rust}.state"));
        let mut test = vec![
            "test",
            wasm.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
            "--expect-stdout",
            stdout.to_str().unwrap(),
            "--expect-state",
            state.to_str().unwrap(),
        ];
        test.extend(args);
        let tested = pulsewatch_in(dir.path(), &test);
        let said = text(&tested.stderr);
        assert!(tested.status.success(), "{module}: {said}");
        assert!(
            said.contains("ok: stdout is") && said.contains("ok: /state is"),
            "{said}"
        );
    }
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
