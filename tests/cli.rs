//! The `pulsewatch` binary as a user runs it: real processes, real files, exit codes.

mod common;

use common::{guest, pulsewatch, text};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn import(db: &Path, lines: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["import", "--db", db.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `pulsewatch append` of an `updated` change to E1 in C1.
fn append_updated(db: &Path) -> Output {
    pulsewatch(&[
        "append",
        "--db",
        db.to_str().unwrap(),
        "--kind",
        "updated",
        "--entity",
        E1,
        "--collective",
        C1,
    ])
}

const E1: &str = "00000000-0000-0000-0000-000000000001";
const C1: &str = "00000000-0000-0000-0000-0000000000c1";

fn line(kind: &str, payload: &str) -> String {
    format!(
        r#"{{"kind":"{kind}","entity":"{E1}","collective":"{C1}","timestamp_ms":1,"payload":{payload}}}"#
    )
}

#[test]
fn import_then_tail_round_trips_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    let input = format!(
        "{}\n\n{}\n",
        line("created", r#"{"n":1}"#),
        line("deleted", "[1, 2]")
    );
    let out = import(&db, &input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = append_updated(&db);
    assert_eq!(text(&out.stdout).trim(), "3", "append prints the new seq");

    let out = pulsewatch(&["tail", "--db", db.to_str().unwrap(), "--since", "1"]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["seq"], 2);
    assert_eq!(lines[0]["kind"], "deleted");
    assert_eq!(lines[0]["entity"], E1);
    assert_eq!(lines[0]["payload"], serde_json::json!([1, 2]));
    assert_eq!(lines[1]["seq"], 3);
    assert!(lines[1].get("payload").is_none());
}

#[test]
fn a_bad_line_names_file_and_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    let file = dir.path().join("changes.jsonl");
    std::fs::write(
        &file,
        format!("{}\n{}\n", line("created", "1"), line("teleported", "1")),
    )
    .unwrap();
    let out = pulsewatch(&[
        "import",
        "--db",
        db.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("changes.jsonl:2"), "{stderr}");
    assert!(stderr.contains("teleported"), "{stderr}");
    assert!(!db.exists(), "nothing half-written: {stderr}");
}

#[test]
fn a_streaming_import_appends_each_line_as_it_arrives_and_stops_at_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["import", "--stream", "--db", db.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let head = || {
        pulsewatch::Log::open_read_only(&db)
            .ok()
            .and_then(|log| log.head().ok())
    };
    // Each line is in the log while the input is still open.
    for n in 1..=3u64 {
        writeln!(stdin, "{}", line("created", &n.to_string())).unwrap();
        stdin.flush().unwrap();
        common::wait_until(&format!("line {n} appended"), || head() == Some(n));
    }
    writeln!(
        stdin,
        "\n{}\n{}",
        line("teleported", "4"),
        line("created", "5")
    )
    .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("<stdin>:5"),
        "the bad line is named: {stderr}"
    );
    assert!(
        stderr.contains("imported 3 events before it; head is now 3"),
        "{stderr}"
    );
    assert_eq!(head(), Some(3), "nothing after the bad line");
}

#[test]
fn a_missing_or_corrupt_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.redb");
    for args in [
        vec!["tail", "--db", missing.to_str().unwrap()],
        vec![
            "run",
            "--db",
            missing.to_str().unwrap(),
            guest("kind-counts").to_str().unwrap(),
        ],
    ] {
        let out = pulsewatch(&args);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            text(&out.stderr).contains("nope.redb: no such database file"),
            "{}",
            text(&out.stderr)
        );
    }
    assert!(!missing.exists());

    let corrupt = dir.path().join("corrupt.redb");
    std::fs::write(&corrupt, vec![0xa5; 8192]).unwrap();
    let out = pulsewatch(&["tail", "--db", corrupt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("corrupt.redb: not a database"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_exits_0_when_every_plugin_ends_cleanly_and_1_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    let input: String = (0..40)
        .map(|i| line(["created", "updated"][i % 2], "{}") + "\n")
        .collect();
    assert!(import(&db, &input).status.success());

    let out = pulsewatch(&[
        "run",
        "--db",
        db.to_str().unwrap(),
        guest("kind-counts").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("[kind-counts] totals: created=20 updated=20 archived=0 deleted=0"),
        "{stdout}"
    );
    assert!(
        dir.path()
            .join("events.redb.state/kind-counts/checkpoint")
            .exists()
    );

    let out = pulsewatch(&[
        "run",
        "--db",
        db.to_str().unwrap(),
        "--cpu",
        "100ms",
        guest("spin-forever").to_str().unwrap(),
        guest("seq-check").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("plugin spin-forever stopped: used its CPU budget"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wasm backtrace"),
        "short without --verbose: {stderr}"
    );
    assert!(text(&out.stdout).contains("[seq-check] received: 40 first: 1 last: 40"));
}

/// A writer process appends while `run --follow` reads in another; Ctrl-C (SIGINT) stops the
/// reader after its plugin commits.
#[test]
fn follow_sees_another_process_appends_and_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    assert!(import(&db, &(line("created", "1") + "\n")).status.success());
    let reader = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args([
            "run",
            "--follow",
            "--db",
            db.to_str().unwrap(),
            guest("seq-check").to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..5 {
        let out = append_updated(&db);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let checkpoint = dir.path().join("events.redb.state/seq-check/checkpoint");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&checkpoint).is_ok_and(|c| c.lines().nth(1) == Some("6")) {
        assert!(
            Instant::now() < deadline,
            "the follower never committed seq 6"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    interrupt(&reader);
    let out = reader.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("[seq-check] received: 6 first: 1 last: 6 cursor: 6"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_demo_runs_start_to_finish_in_a_directory_of_ones_choice() {
    let dir = tempfile::tempdir().unwrap();
    let out = pulsewatch(&[
        "demo",
        "--dir",
        dir.path().to_str().unwrap(),
        "--events",
        "3000",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("[kind-counts] cursor: 3000"), "{stdout}");
    assert!(
        stdout.contains("[kind-counts] cursor: 5000"),
        "phase 3 resumes and follows: {stdout}"
    );
    assert!(stdout.contains("[filter-jsonl] cursor: 5000"), "{stdout}");
    let matches =
        std::fs::read_to_string(dir.path().join("state/filter-jsonl/matches.jsonl")).unwrap();
    assert!(matches.lines().count() > 0);
    assert!(matches.lines().all(|l| l.contains(r#""kind":"deleted""#)));
}

#[test]
fn help_is_there_for_every_command() {
    for command in ["demo", "run", "append", "import", "tail"] {
        let out = pulsewatch(&[command, "--help"]);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("Usage: pulsewatch"), "{command}");
    }
}

/// `pulsewatch run` with a plugin blocked in a sleep and one that finishes, started with `args`;
/// returns the child once both have shown they are where the test wants them.
fn run_with_a_blocked_plugin(dir: &Path, args: &[&str]) -> std::process::Child {
    let db = dir.join("events.redb");
    let input: String = (0..40).map(|_| line("created", "{}") + "\n").collect();
    assert!(import(&db, &input).status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["run", "--db", db.to_str().unwrap()])
        .args(args)
        .args([
            guest("sleep-forever").to_str().unwrap(),
            guest("kind-counts").to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (seen, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = seen.send(line);
        }
    });
    let (mut sleeping, mut done) = (false, false);
    while !(sleeping && done) {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("both plugins get going");
        sleeping |= line == "[sleep-forever] sleeping";
        done |= line == "[kind-counts] cursor: 40";
    }
    child
}

fn interrupt(child: &std::process::Child) {
    common::procs::signal(child.id(), nix::sys::signal::Signal::SIGINT);
}

#[test]
fn sigint_cancels_a_blocked_plugin_after_the_grace_period_and_reports_every_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let child = run_with_a_blocked_plugin(dir.path(), &["--grace", "1s"]);
    let stopped = Instant::now();
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let after = stopped.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        after <= Duration::from_secs(2),
        "exited {after:?} after SIGINT, grace 1 s: {stderr}"
    );
    assert!(
        stderr.contains(
            "pulsewatch: plugin sleep-forever stopped: still running 1s after the stop signal"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("pulsewatch: plugin kind-counts ended cleanly at seq 40"),
        "{stderr}"
    );
}

#[test]
fn a_second_sigint_stops_everything_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let child = run_with_a_blocked_plugin(dir.path(), &["--grace", "1h"]);
    interrupt(&child);
    std::thread::sleep(Duration::from_millis(200));
    let stopped = Instant::now();
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stopped.elapsed() < Duration::from_secs(30), "{stderr}");
    assert!(
        stderr.contains(
            "pulsewatch: plugin sleep-forever stopped: cancelled at once by an immediate stop"
        ),
        "{stderr}"
    );
}
