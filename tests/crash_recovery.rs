//! A writer killed with SIGKILL leaves the file unclean: readers get a clear error instead of a
//! crash, the next writer repairs it, and every committed event is still there. A writer that
//! takes SIGTERM and drops its `Log` leaves it clean: readers open it as it is.

mod common;

use common::{pulsewatch, text};
use pulsewatch::{Change, ChangeKind, Log, OpenError};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const HOLD_DB: &str = "PULSEWATCH_TEST_HOLD_WRITER";

/// Set (to anything) for a held writer that drops its `Log` and returns on SIGTERM.
const DROP_ON_SIGTERM: &str = "PULSEWATCH_TEST_DROP_ON_SIGTERM";

/// Run by the tests below in a child process (ignored otherwise): commits 100 events, says so,
/// and keeps the writer open until it is killed, or, with [`DROP_ON_SIGTERM`], until SIGTERM
/// asks it to drop its `Log`.
#[test]
#[ignore = "helper: runs in a child process of killed_writer_leaves_a_file_readers_refuse_until_repaired"]
fn hold_writer_open() {
    let Some(path) = std::env::var_os(HOLD_DB) else {
        return;
    };
    let log = Log::create(path).unwrap();
    let changes: Vec<Change> = (0..100u8)
        .map(|i| Change::new(ChangeKind::Created, u128::from(i), 1).at(u64::from(i)))
        .collect();
    log.append_batch(&changes).unwrap();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if std::env::var_os(DROP_ON_SIGTERM).is_some() {
        signal_hook::flag::register(signal_hook::consts::SIGTERM, asked.clone()).unwrap();
    }
    println!("writer-ready");
    for _ in 0..60_000 {
        if asked.load(std::sync::atomic::Ordering::SeqCst) {
            drop(log);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Kills the child with SIGKILL when dropped, also when an assertion fails first.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pulsewatch_tail(db: &Path) -> std::process::Output {
    pulsewatch(&["tail", "--db", db.to_str().unwrap()])
}

/// A writer child holding `db` open with 100 events committed; with `drop_on_sigterm`, it drops
/// its `Log` on SIGTERM.
fn held_writer(db: &Path, drop_on_sigterm: bool) -> KillOnDrop {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "hold_writer_open",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLD_DB, db)
        .stdout(Stdio::piped());
    if drop_on_sigterm {
        command.env(DROP_ON_SIGTERM, "1");
    }
    let mut child = KillOnDrop(command.spawn().unwrap());
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    // libtest may print the test name on the same line first.
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.ends_with("writer-ready"));
    assert!(ready, "the writer child never committed");
    // The rest is read too, so that the child's last words find a reader.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

#[test]
fn a_writer_that_drops_its_log_on_sigterm_leaves_a_file_readers_open_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    let mut child = held_writer(&db, true);
    common::procs::signal(child.0.id(), nix::sys::signal::Signal::SIGTERM);
    assert!(child.0.wait().unwrap().success());
    let log = Log::open_read_only(&db).expect("no repair needed");
    assert_eq!(log.head().unwrap(), 100);
}

#[test]
fn killed_writer_leaves_a_file_readers_refuse_until_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    let child = held_writer(&db, false);
    drop(child); // SIGKILL: no destructor, no clean close

    let err = Log::open_read_only(&db).unwrap_err();
    assert!(matches!(err, OpenError::NeedsRepair { .. }), "{err}");
    let out = pulsewatch_tail(&db);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("needs a repair"), "{stderr}");

    // `pulsewatch repair` (a writer's open) repairs the file; nothing committed is lost.
    let out = pulsewatch(&["repair", "--db", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("head is seq 100"));
    let log = Log::open_read_only(&db).unwrap();
    let batch = log.poll(0, 1000).unwrap();
    assert_eq!(batch.events.len(), 100);
    assert_eq!(batch.last_seq, 100);
    assert_eq!(batch.events[99].change.entity, 99);
    assert!(pulsewatch_tail(&db).status.success());
}
