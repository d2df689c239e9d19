//! `pulsewatch test`, as a plugin author runs it: the examples on their fixture pass their
//! expectations, a plugin that does otherwise fails with a diff, `--update` writes the
//! expectations, and bad input is named.

mod common;

use common::{guest, pulsewatch, text};
use std::path::{Path, PathBuf};

/// The examples' fixtures and expectations.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/examples/fixtures")
}

/// `pulsewatch test` of the guest `name` on the example fixture, with `extra` arguments.
fn test(name: &str, extra: &[&str]) -> std::process::Output {
    let plugin = guest(name);
    let events = fixtures().join("orders.jsonl");
    let mut args = vec![
        "test",
        plugin.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ];
    args.extend(extra);
    pulsewatch(&args)
}

/// Copies the files of `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn the_examples_pass_their_expectations() {
    for (name, args) in [
        ("kind-counts", vec![]),
        ("filter-jsonl", vec!["--arg", "kind=updated"]),
    ] {
        let stdout = fixtures().join(format!("{name}.stdout"));
        let state = fixtures().join(format!("{name}.state"));
        let mut extra = args.clone();
        extra.extend([
            "--expect-stdout",
            stdout.to_str().unwrap(),
            "--expect-state",
            state.to_str().unwrap(),
        ]);
        let out = test(name, &extra);
        let said = text(&out.stderr);
        assert!(out.status.success(), "{name}: {said}");
        assert!(
            said.contains("ok: stdout is") && said.contains("ok: /state is"),
            "{said}"
        );
        assert!(
            said.contains("the plugin ended cleanly, after 12 events"),
            "{said}"
        );
        // Its stdout is the plugin's, as it printed it.
        assert_eq!(
            text(&out.stdout),
            std::fs::read_to_string(&stdout).unwrap(),
            "{name}"
        );
    }
    // What filter-jsonl kept: the 5 updated events of the 12.
    let matches =
        std::fs::read_to_string(fixtures().join("filter-jsonl.state/matches.jsonl")).unwrap();
    assert_eq!(matches.lines().count(), 5);
    assert!(matches.lines().all(|l| l.contains(r#""kind":"updated""#)));
}

#[test]
fn a_transforms_derived_events_and_checkpoint_are_checked() {
    let expected = fixtures().join("tenant-totals.derived");
    let stdout = fixtures().join("tenant-totals.stdout");
    let out = test(
        "tenant-totals",
        &[
            "--output",
            "totals",
            "--expect-derived",
            expected.to_str().unwrap(),
            "--expect-stdout",
            stdout.to_str().unwrap(),
        ],
    );
    let said = text(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("ok: the outputs hold"), "{said}");
    assert!(said.contains("ok: stdout is"), "{said}");
    // Derived events are checked only where outputs are granted.
    let out = test(
        "tenant-totals",
        &["--expect-derived", expected.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("grant them with --output NAME"),
        "{}",
        text(&out.stderr)
    );
    // Shown as compared: each derived event with its output and id, then the checkpoint.
    let shown: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with(r#"  {"output":"totals""#))
        .collect();
    assert_eq!(shown.len(), 13, "{said}");
    assert!(shown[11].contains(r#""id":"tenant-totals:12:0""#), "{said}");
    assert!(
        shown[12].contains(r#""cursor":12,"state":{"tenants":"#),
        "{said}"
    );

    // One event's amount changed: the run no longer meets it, and the diff shows the line.
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("changed.derived");
    let good = std::fs::read_to_string(&expected).unwrap();
    std::fs::write(
        &changed,
        good.replacen(r#""amount_cents":731}"#, r#""amount_cents":732}"#, 1),
    )
    .unwrap();
    let out = test(
        "tenant-totals",
        &[
            "--output",
            "totals",
            "--expect-derived",
            changed.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert!(said.contains("FAILED: the outputs do not hold"), "{said}");
    assert!(said.contains(r#""amount_cents":732}"#), "{said}");
    assert!(said.contains(r#"+{"output":"totals","seq":2,"#), "{said}");
}

#[test]
fn an_unmet_expectation_fails_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = dir.path().join("expected.stdout");
    let good = std::fs::read_to_string(fixtures().join("kind-counts.stdout")).unwrap();
    let first = good.lines().next().unwrap();
    std::fs::write(&stdout, good.replacen(first, "totals: nothing at all", 1)).unwrap();
    let state = dir.path().join("expected.state");
    copy_dir(&fixtures().join("kind-counts.state"), &state);
    let kept: Vec<PathBuf> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    std::fs::write(&kept[0], b"something else\n").unwrap();
    std::fs::write(state.join("extra.txt"), b"x").unwrap();

    let out = test(
        "kind-counts",
        &[
            "--expect-stdout",
            stdout.to_str().unwrap(),
            "--expect-state",
            state.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert!(said.contains("FAILED: stdout is not"), "{said}");
    assert!(said.contains("-totals: nothing at all"), "{said}");
    assert!(said.contains(&format!("+{first}")), "{said}");
    let name = kept[0].file_name().unwrap().to_str().unwrap();
    assert!(said.contains(&format!("{name} differs")), "{said}");
    assert!(said.contains("-something else"), "{said}");
    assert!(
        said.contains("extra.txt: missing: the plugin left no such file"),
        "{said}"
    );
}

#[test]
fn update_writes_the_expectations_a_run_then_meets() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = dir.path().join("out.stdout");
    let state = dir.path().join("state");
    let paths = [
        "--expect-stdout",
        stdout.to_str().unwrap(),
        "--expect-state",
        state.to_str().unwrap(),
    ];
    let mut update = paths.to_vec();
    update.push("--update");
    let written = test("kind-counts", &update);
    assert!(written.status.success(), "{}", text(&written.stderr));
    assert_eq!(
        std::fs::read(&stdout).unwrap(),
        std::fs::read(fixtures().join("kind-counts.stdout")).unwrap()
    );
    let checked = test("kind-counts", &paths);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
}

#[test]
fn bad_input_and_a_failing_plugin_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        "{\"kind\":\"created\",\"entity\":\"67e55044-10b1-426f-9247-bb680e5fe0c8\",\"collective\":\"9b2e4d6a-0000-4000-8000-000000000001\"}\n{\"kind\":\"made\"}\n",
    )
    .unwrap();
    let plugin = guest("kind-counts");
    let out = pulsewatch(&[
        "test",
        plugin.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(said.contains("events.jsonl:2"), "{said}");

    let out = test("panic", &[]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert!(
        said.contains("FAILED: the plugin did not end cleanly"),
        "{said}"
    );
}

/// From nothing to a tested plugin in two commands: `new`, then `test` of the directory, which
/// builds it and checks it on its fixture.
#[test]
fn a_new_rust_plugin_builds_and_passes_its_test() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let made = run(&["new", "--lang", "rust", "hello"]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    assert!(text(&made.stderr).contains("pulsewatch test hello"));
    let again = run(&["new", "--lang", "rust", "hello"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("exists already"));

    let tested = run(&["test", "hello"]);
    let said = text(&tested.stderr);
    assert!(tested.status.success(), "{said}");
    assert!(said.contains("ok: stdout is"), "{said}");
    assert_eq!(
        text(&tested.stdout),
        "created=3 updated=5 archived=2 deleted=2\ncursor: 12\n"
    );
}
