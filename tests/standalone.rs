//! A plugin where pulsewatch is not installed: a snapshot of a live log, the plugin bundled with
//! the feed provider, and the stock `wasmtime` CLI running it, with the same output and state
//! as `pulsewatch run` on the same snapshot.

mod common;

use common::{guest, pulsewatch, text};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The major version of the wasmtime crate this build embeds.
const WASMTIME_MAJOR: &str = "48";

/// The real `wasmtime` CLI of our major version, from PATH or cargo's bin directory. In CI
/// (`CI=true`) its absence fails the test; elsewhere the test is skipped with a note.
fn wasmtime_cli() -> Option<PathBuf> {
    let candidates = std::iter::once(PathBuf::from("wasmtime"))
        .chain(std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin/wasmtime")));
    for candidate in candidates {
        let Ok(out) = Command::new(&candidate).arg("--version").output() else {
            continue;
        };
        let version = text(&out.stdout);
        if version
            .split_whitespace()
            .nth(1)
            .is_some_and(|v| v.split('.').next() == Some(WASMTIME_MAJOR))
        {
            return Some(candidate);
        }
    }
    let install = format!(
        "cargo install wasmtime-cli --version {WASMTIME_MAJOR}.0.8 --locked --no-default-features --features run,cranelift,component-model,parallel-compilation"
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the wasmtime CLI {WASMTIME_MAJOR} is required in CI: {install}"
    );
    eprintln!("skipped: no wasmtime CLI {WASMTIME_MAJOR} found; install it with `{install}`");
    None
}

const E1: &str = "00000000-0000-0000-0000-000000000001";
const C1: &str = "00000000-0000-0000-0000-0000000000c1";
const C2: &str = "00000000-0000-0000-0000-0000000000c2";

/// `n` JSON lines of changes, numbered from `from`.
fn changes(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| {
            let kind = ["created", "updated", "archived", "deleted"][i * 7 % 4];
            let collective = [C1, C2][i % 2];
            format!(
                r#"{{"kind":"{kind}","entity":"{E1}","collective":"{collective}","timestamp_ms":{i},"payload":{{"i":{i}}}}}"#
            ) + "\n"
        })
        .collect()
}

/// Appends `lines` to `db` from a `pulsewatch import` process: a writer other than the test.
fn import(db: &Path, lines: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["import", "--db", db.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Runs a bundled plugin under wasmtime with the snapshot in `snapshot_dir` and `/state` in
/// `state`; returns its stdout lines.
fn wasmtime_run(
    wasmtime: &Path,
    bundled: &Path,
    snapshot_dir: &Path,
    state: &Path,
    args: &[&str],
) -> Vec<String> {
    std::fs::create_dir_all(state).unwrap();
    let out = ok(Command::new(wasmtime)
        .arg("run")
        .arg("--dir")
        .arg(format!("{}::/data", snapshot_dir.display()))
        .arg("--dir")
        .arg(format!("{}::/state", state.display()))
        .arg(bundled)
        .args(args)
        .output()
        .unwrap());
    text(&out.stdout).lines().map(str::to_owned).collect()
}

/// The lines `plugin` printed under `pulsewatch run`, without their `[plugin] ` prefix.
fn lines_of(stdout: &str, plugin: &str) -> Vec<String> {
    let prefix = format!("[{plugin}] ");
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// `pulsewatch snapshot --db DB -o OUT` with `extra` flags.
fn snapshot(db: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "snapshot",
        "--db",
        db.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    pulsewatch(&args)
}

/// A live log `dir/live.redb` of `n` events and its snapshot `dir/snap/events.redb`: the live
/// log, the snapshot's directory and the snapshot.
fn live_and_snapshot(dir: &Path, n: usize) -> (PathBuf, PathBuf, PathBuf) {
    let db = dir.join("live.redb");
    import(&db, &changes(0, n));
    let snapshot_dir = dir.join("snap");
    std::fs::create_dir_all(&snapshot_dir).unwrap();
    let snapshot_file = snapshot_dir.join("events.redb");
    ok(snapshot(&db, &snapshot_file, &[]));
    (db, snapshot_dir, snapshot_file)
}

fn bundle(plugin: &str, dir: &Path) -> PathBuf {
    let bundled = dir.join(format!("{plugin}.standalone.wasm"));
    ok(pulsewatch(&[
        "bundle",
        guest(plugin).to_str().unwrap(),
        "-o",
        bundled.to_str().unwrap(),
    ]));
    bundled
}

#[test]
fn a_snapshot_is_consistent_while_a_writer_appends_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.redb");
    import(&db, &changes(0, 100));
    // A writer process appending batch after batch while snapshots are taken.
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            for round in 1..=20 {
                import(&db, &changes(round * 100, 100));
            }
        })
    };
    let mut heads = Vec::new();
    for i in 0..5 {
        let snap = dir.path().join(format!("snap-{i}.redb"));
        ok(snapshot(&db, &snap, &[]));
        let tail = ok(pulsewatch(&["tail", "--db", snap.to_str().unwrap()]));
        let seqs: Vec<u64> = text(&tail.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert!(!seqs.is_empty());
        assert!(
            seqs.iter().copied().eq(1..=seqs.len() as u64),
            "snapshot {i}: gap-free from 1"
        );
        assert_eq!(seqs.len() % 100, 0, "whole import transactions only");
        heads.push(seqs.len());
    }
    writer.join().unwrap();
    assert!(heads.windows(2).all(|w| w[0] <= w[1]), "{heads:?}");

    let snap = dir.path().join("snap-0.redb");
    let out = snapshot(&db, &snap, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    let out = ok(snapshot(
        &db,
        &snap,
        &["--since", "2000", "--until", "2050", "--force"],
    ));
    assert!(
        text(&out.stderr).contains("seq 2001 to 2050, 50 events"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bundling_refuses_what_is_not_a_plugin_reading_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").unwrap();
    let out = dir.path().join("out.wasm");
    for (plugin, expected) in [
        (garbage, "not a WebAssembly component"),
        (guest("read-env"), "does not import `pulse:watch/feed`"),
    ] {
        let result = pulsewatch(&[
            "bundle",
            plugin.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(result.status.code(), Some(2));
        assert!(
            text(&result.stderr).contains(expected),
            "{}",
            text(&result.stderr)
        );
        assert!(!out.exists());
    }
}

/// The real wasmtime CLI runs bundled kind-counts and filter-jsonl over a snapshot of a log
/// another process wrote: the same output and state files as `pulsewatch run` on the same
/// snapshot, and a cursor committed under one resumes under the other.
#[test]
fn bundled_plugins_under_wasmtime_match_pulsewatch_run() {
    let Some(wasmtime) = wasmtime_cli() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (db, snapshot_dir, snapshot_file) = live_and_snapshot(dir.path(), 3_000);
    let kind_counts = bundle("kind-counts", dir.path());
    let filter_jsonl = bundle("filter-jsonl", dir.path());

    let native_state = dir.path().join("native");
    let native = ok(pulsewatch(&[
        "run",
        "--db",
        snapshot_file.to_str().unwrap(),
        "--state-dir",
        native_state.to_str().unwrap(),
        "--arg",
        "filter-jsonl=kind=deleted",
        guest("kind-counts").to_str().unwrap(),
        guest("filter-jsonl").to_str().unwrap(),
    ]));
    let native_out = text(&native.stdout);

    let standalone_state = dir.path().join("standalone");
    let standalone_kc = wasmtime_run(
        &wasmtime,
        &kind_counts,
        &snapshot_dir,
        &standalone_state.join("kind-counts"),
        &[],
    );
    let standalone_fj = wasmtime_run(
        &wasmtime,
        &filter_jsonl,
        &snapshot_dir,
        &standalone_state.join("filter-jsonl"),
        &["kind=deleted"],
    );
    // The provider's two reads agree with each other, as the host's do.
    let probe = bundle("poll-once", dir.path());
    for (since, limit) in [("0", "1000"), ("2990", "100"), ("3000", "10")] {
        let said = wasmtime_run(
            &wasmtime,
            &probe,
            &snapshot_dir,
            &dir.path().join("probe-state"),
            &[since, limit],
        );
        assert!(said.contains(&"same=true".to_owned()), "{said:?}");
    }
    assert_eq!(standalone_kc, lines_of(&native_out, "kind-counts"));
    assert_eq!(standalone_fj, lines_of(&native_out, "filter-jsonl"));
    assert!(
        standalone_kc.contains(&"cursor: 3000".to_owned()),
        "{standalone_kc:?}"
    );
    for file in [
        "kind-counts/checkpoint",
        "filter-jsonl/checkpoint",
        "filter-jsonl/matches.jsonl",
    ] {
        assert_eq!(
            std::fs::read(native_state.join(file)).unwrap(),
            std::fs::read(standalone_state.join(file)).unwrap(),
            "{file}"
        );
    }

    // The log grows; a new snapshot. kind-counts resumes under wasmtime from the cursor
    // `pulsewatch run` committed, and then under `pulsewatch run` from wasmtime's.
    import(&db, &changes(3_000, 500));
    ok(snapshot(&db, &snapshot_file, &["--force"]));
    let resumed = wasmtime_run(
        &wasmtime,
        &kind_counts,
        &snapshot_dir,
        &native_state.join("kind-counts"),
        &[],
    );
    assert!(resumed.contains(&"cursor: 3500".to_owned()), "{resumed:?}");
    import(&db, &changes(3_500, 10));
    ok(snapshot(&db, &snapshot_file, &["--force"]));
    let again = ok(pulsewatch(&[
        "run",
        "--db",
        snapshot_file.to_str().unwrap(),
        "--state-dir",
        native_state.to_str().unwrap(),
        guest("kind-counts").to_str().unwrap(),
    ]));
    let again = lines_of(&text(&again.stdout), "kind-counts");
    assert!(again.contains(&"cursor: 3510".to_owned()), "{again:?}");
    let totals = |lines: &[String]| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix("totals: "))
            .map(str::to_owned)
    };
    // 3,510 events in all, counted once each across the three runs.
    let counted: u64 = totals(&again)
        .unwrap()
        .split_whitespace()
        .map(|kv| kv.split_once('=').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, 3_510);
}

/// Under wasmtime, a live file (a writer has it open) is refused with a reason, not misread.
#[test]
fn a_live_log_under_wasmtime_is_unavailable_with_a_reason() {
    let Some(wasmtime) = wasmtime_cli() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("events.redb");
    let writer = pulsewatch::Log::create(&live).unwrap();
    writer
        .append(&pulsewatch::Change::new(
            pulsewatch::ChangeKind::Created,
            1,
            2,
        ))
        .unwrap();
    let bundled = bundle("seq-check", dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let out = Command::new(&wasmtime)
        .arg("run")
        .arg("--dir")
        .arg(format!("{}::/data", dir.path().display()))
        .arg("--dir")
        .arg(format!("{}::/state", state.display()))
        .arg(&bundled)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not a cleanly closed log") && stderr.contains("pulsewatch snapshot"),
        "{stderr}"
    );
    drop(writer);
}

/// A bundled transform under the real wasmtime CLI writes its outputs beside the snapshot, as
/// `pulsewatch run` writes them: the same derived events, with their origins; a second run
/// writes nothing twice.
#[test]
fn a_bundled_transform_writes_its_outputs_under_wasmtime() {
    let Some(wasmtime) = wasmtime_cli() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, snapshot_dir, snapshot_file) = live_and_snapshot(dir.path(), 500);
    let bundled = bundle("fan-out", dir.path());

    let run = |extra_env: &[&str]| {
        let mut command = Command::new(&wasmtime);
        command
            .arg("run")
            .arg("--dir")
            .arg(format!("{}::/data", snapshot_dir.display()));
        for env in extra_env {
            command.arg("--env").arg(env);
        }
        command.arg(&bundled).arg("fanned").output().unwrap()
    };
    // Without its outputs named, the plugin is told what to do.
    let refused = run(&[]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("no output log called \"fanned\" is granted"),
        "{}",
        text(&refused.stderr)
    );
    ok(run(&["PULSEWATCH_OUTPUTS=fanned"]));
    ok(run(&["PULSEWATCH_OUTPUTS=fanned"]));

    let native = dir.path().join("native.redb");
    ok(pulsewatch(&[
        "run",
        "--db",
        snapshot_file.to_str().unwrap(),
        "--state-dir",
        dir.path().join("state").to_str().unwrap(),
        "--output",
        native.to_str().unwrap(),
        "--arg",
        "fan-out=native",
        guest("fan-out").to_str().unwrap(),
    ]));
    let tail = |path: &Path| {
        let out = ok(pulsewatch(&["tail", "--db", path.to_str().unwrap()]));
        text(&out.stdout)
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                (
                    value["payload_hex"].clone(),
                    value["origin"]["seq"].clone(),
                    value["origin"]["index"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let standalone = tail(&snapshot_dir.join("fanned.redb"));
    assert_eq!(
        standalone.len(),
        (1..=500).map(|s| s % 3).sum::<u64>() as usize
    );
    assert_eq!(standalone, tail(&native));
}
