//! Nothing a user types loses data: a command refuses to write over one of its inputs, whatever
//! `--force` says; the demo refuses a directory of someone else's files; a writer asked to stop
//! (SIGINT, SIGTERM) commits what it has and closes the database cleanly, so that the next
//! reader opens it without a repair; a closed pipe ends a command quietly.

mod common;

use common::{guest, pulsewatch, text, wait_until};
use nix::sys::signal::Signal;
use pulsewatch::Log;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn line(n: u64) -> String {
    format!(
        r#"{{"kind":"created","entity":"00000000-0000-0000-0000-000000000001","collective":"00000000-0000-0000-0000-0000000000c1","payload":{{"n":{n}}}}}"#
    )
}

/// A log at `db` with `n` events, through `pulsewatch import`.
fn imported(db: &Path, n: u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["import", "--db", db.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 1..=n {
        writeln!(stdin, "{}", line(i)).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_snapshot_onto_its_own_database_is_refused_by_any_name_and_the_database_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    imported(&db, 50);
    let before = std::fs::read(&db).unwrap();
    let symlink = dir.path().join("link.redb");
    std::os::unix::fs::symlink(&db, &symlink).unwrap();
    let hard = dir.path().join("hard.redb");
    std::fs::hard_link(&db, &hard).unwrap();
    let dotted = dir.path().join(".").join("events.redb");
    for output in [&db, &dotted, &symlink, &hard] {
        let out = pulsewatch(&[
            "snapshot",
            "--db",
            db.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--force",
            "--since",
            "40",
        ]);
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {said}", output.display());
        assert!(
            said.contains("is the database it copies") && said.contains("--force or not"),
            "{said}"
        );
        assert_eq!(std::fs::read(&db).unwrap(), before, "{}", output.display());
    }
    assert_eq!(Log::open_read_only(&db).unwrap().len().unwrap(), 50);
    assert!(symlink.is_symlink(), "the link itself is kept too");
}

#[test]
fn a_bundle_onto_its_own_plugin_or_an_import_of_its_own_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kind-counts.wasm");
    std::fs::copy(guest("kind-counts"), &plugin).unwrap();
    let before = std::fs::read(&plugin).unwrap();
    let out = pulsewatch(&[
        "bundle",
        plugin.to_str().unwrap(),
        "-o",
        plugin.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is the plugin it bundles"));
    assert_eq!(std::fs::read(&plugin).unwrap(), before);

    let db = dir.path().join("events.redb");
    imported(&db, 5);
    let out = pulsewatch(&["import", "--db", db.to_str().unwrap(), db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is the database to import into"));
    assert_eq!(Log::open_read_only(&db).unwrap().len().unwrap(), 5);
}

#[test]
fn the_demo_refuses_a_directory_of_files_it_did_not_write_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    imported(&db, 7);
    let state = dir.path().join("state/mine");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("checkpoint"), "mine").unwrap();
    let out = pulsewatch(&[
        "demo",
        "--dir",
        dir.path().to_str().unwrap(),
        "--events",
        "10",
    ]);
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("holds files a demo did not write") && said.contains("empty or new --dir"),
        "{said}"
    );
    assert_eq!(Log::open_read_only(&db).unwrap().len().unwrap(), 7);
    assert_eq!(
        std::fs::read_to_string(state.join("checkpoint")).unwrap(),
        "mine"
    );

    // In a demo's own directory, a second demo replaces only what the first wrote.
    let demo = dir.path().join("demo");
    let first = pulsewatch(&["demo", "--dir", demo.to_str().unwrap(), "--events", "10"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    std::fs::write(demo.join("notes.txt"), "mine").unwrap();
    std::fs::create_dir_all(demo.join("live/filter-jsonl")).unwrap();
    let again = pulsewatch(&["demo", "--dir", demo.to_str().unwrap(), "--events", "10"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("kept, as no demo wrote them"));
    assert_eq!(
        std::fs::read_to_string(demo.join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(demo.join("live/filter-jsonl").is_dir());
}

/// A streaming import, started through `sh` with SIGINT ignored when `ignoring_sigint` (as a
/// shell starts a background job), fed three lines, each in the log before the next is sent.
fn streaming_import(db: &Path, ignoring_sigint: bool) -> (Child, std::process::ChildStdin) {
    let trap = if ignoring_sigint { "trap '' INT; " } else { "" };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{trap}exec \"$0\" import --stream --db \"$1\"",))
        .arg(env!("CARGO_BIN_EXE_pulsewatch"))
        .arg(db)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let head = || Log::open_read_only(db).ok().and_then(|log| log.head().ok());
    for n in 1..=3 {
        writeln!(stdin, "{}", line(n)).unwrap();
        stdin.flush().unwrap();
        wait_until(&format!("line {n} appended"), || head() == Some(n));
    }
    (child, stdin)
}

/// SIGINT and SIGTERM stop a streaming import whose input is still open: it commits what it has,
/// closes the log and exits at once with 128 + the signal; a new reader then opens the file
/// without a repair and holds every line that was acknowledged. A SIGINT its shell told it to
/// ignore stops it all the same.
#[test]
fn a_streaming_import_stops_cleanly_on_sigint_and_sigterm_with_every_acknowledged_line() {
    for (signal, code, ignoring_sigint) in [
        (Signal::SIGINT, 130, false),
        (Signal::SIGTERM, 143, false),
        (Signal::SIGINT, 130, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("events.redb");
        let (child, stdin) = streaming_import(&db, ignoring_sigint);
        common::procs::signal(child.id(), signal);
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{signal}: {said}");
        assert!(
            said.contains(&format!(
                "stopped by {signal}: imported 3 events; head is now 3"
            )),
            "{said}"
        );
        let log = Log::open_read_only(&db).expect("opens with no repair");
        let batch = log.poll(0, 10).unwrap();
        assert_eq!(batch.events.len(), 3, "{signal}");
        assert_eq!(batch.events[2].change.payload, br#"{"n":3}"#);
    }
}

/// Starts `pulsewatch args` with its stdout a pipe nobody reads: closed before it writes.
fn with_stdout_closed(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

/// `run --follow | head -1`: a run whose output nobody reads any more stops its plugins, each
/// after it commits, rather than follow for ever.
#[test]
fn a_following_run_whose_stdout_is_closed_stops_its_plugins_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    imported(&db, 50);
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["run", "--follow", "--db", db.to_str().unwrap()])
        .arg(guest("seq-check"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    wait_until("the run to end", || child.try_wait().unwrap().is_some());
    let out = child.wait_with_output().unwrap();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    // Where it stopped depends on when its first line met the closed pipe: it asks for no
    // events after that.
    assert!(
        said.contains("plugin seq-check ended cleanly at seq "),
        "{said}"
    );
}

/// `status | head -1`, `tail | head -1`, `run | head -1`: a closed pipe ends the command
/// quietly, with no panic and no error, as it ends any Unix tool.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    imported(&db, 2000);
    let db = db.to_str().unwrap();
    let run = with_stdout_closed(&["run", "--db", db, guest("kind-counts").to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    for args in [
        &["status", "--db", db][..],
        &["tail", "--db", db],
        &[
            "demo",
            "--dir",
            dir.path().join("demo").to_str().unwrap(),
            "--events",
            "10",
        ],
    ] {
        let out = with_stdout_closed(args);
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {said}");
        assert!(
            !said.contains("panicked") && !said.contains("error"),
            "{args:?}: {said}"
        );
    }
    // The demo stopped at its first line, leaving a database no reader needs to repair.
    Log::open_read_only(dir.path().join("demo/events.redb")).unwrap();
}

/// A plugin name is a plain file name to `release` and `forget` too: a path there would point
/// at any file on the machine.
#[test]
fn release_and_forget_refuse_a_name_that_is_a_path_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    imported(&db, 5);
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join(".pulsewatch/quarantine")).unwrap();
    let victim = dir.path().join("victim.json");
    std::fs::write(&victim, "{}").unwrap();
    let by_path = victim.with_extension("");
    let climbing = format!("../../{}", by_path.file_name().unwrap().to_str().unwrap());
    for command in ["release", "forget"] {
        for name in [by_path.to_str().unwrap(), &climbing] {
            let out = pulsewatch(&[
                command,
                name,
                "--db",
                db.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
            ]);
            let said = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command} {name}: {said}");
            assert!(said.contains("is not a usable plugin name"), "{said}");
            assert!(victim.exists(), "{command} {name}");
        }
        // A name it does not know is an error too, naming what it knows.
        let out = pulsewatch(&[
            command,
            "nosuch",
            "--db",
            db.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("there: none"),
            "{}",
            text(&out.stderr)
        );
    }
}

/// `--force` replaces a file, never a device, a FIFO or a directory in the output's place.
#[test]
fn a_snapshot_or_bundle_onto_something_that_is_not_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    imported(&db, 5);
    let fifo = dir.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    for output in [&fifo, &sub] {
        for args in [
            vec![
                "snapshot",
                "--db",
                db.to_str().unwrap(),
                "-o",
                output.to_str().unwrap(),
                "--force",
            ],
            vec![
                "bundle",
                guest("kind-counts").to_str().unwrap(),
                "-o",
                output.to_str().unwrap(),
                "--force",
            ],
        ] {
            let out = pulsewatch(&args);
            let said = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
            assert!(
                said.contains("not a file: only a file is replaced"),
                "{said}"
            );
        }
    }
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

/// A `--state-dir` that is not there (a typo) is refused by `compact`, which would otherwise
/// find no plugin to hold anything back, and by `status`.
#[test]
fn compact_refuses_a_state_dir_that_is_not_there_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    imported(&db, 3000);
    for command in [&["compact", "--keep-last", "1"][..], &["status"]] {
        let mut args = command.to_vec();
        let missing = dir.path().join("stat");
        args.extend([
            "--db",
            db.to_str().unwrap(),
            "--state-dir",
            missing.to_str().unwrap(),
        ]);
        let out = pulsewatch(&args);
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(
            said.contains("is not a directory of plugin state"),
            "{said}"
        );
    }
    assert_eq!(Log::open_read_only(&db).unwrap().oldest().unwrap(), 1);
}

/// The demo writes only in directories of its own, and not under a run of its plugins.
#[test]
fn the_demo_refuses_a_linked_directory_and_a_state_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let first = pulsewatch(&["demo", "--dir", demo.to_str().unwrap(), "--events", "10"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));

    let held = std::fs::File::open(demo.join("state/kind-counts")).unwrap();
    held.lock().unwrap();
    let out = pulsewatch(&["demo", "--dir", demo.to_str().unwrap(), "--events", "10"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is in use by a run of the demo's plugins"));
    drop(held);

    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("kind-counts.wasm"), "mine").unwrap();
    std::fs::remove_dir_all(demo.join("plugins")).unwrap();
    std::os::unix::fs::symlink(&mine, demo.join("plugins")).unwrap();
    let out = pulsewatch(&["demo", "--dir", demo.to_str().unwrap(), "--events", "10"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is not a directory of the demo's own"));
    assert_eq!(
        std::fs::read_to_string(mine.join("kind-counts.wasm")).unwrap(),
        "mine"
    );
}
