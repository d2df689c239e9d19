//! Live across processes: a writer process and host processes on one log file, with real kills
//! (SIGKILL) of either; retention with plugins lagging; start positions. Every process here is
//! a real one: the `pulsewatch` binary, and this test binary re-run as the writer.

mod common;

use common::procs::{alive, children};
use common::{guest, pulsewatch, text, wait_until, write_manifest};
use pulsewatch::{Change, ChangeKind, Log};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Set, in a re-run of this binary, to `DB|EXTRA|PER_TXN|PAUSE_US`: the writer appends EXTRA
/// events beyond the head it finds, PER_TXN to a transaction, pausing between transactions.
const WRITER: &str = "PULSEWATCH_TEST_WRITER";

/// The event a writer gives `seq`: its payload names its seq, which `record-batches` checks.
fn event(seq: u64) -> Change {
    Change::new(ChangeKind::ALL[(seq % 4) as usize], u128::from(seq), 7)
        .at(1_700_000_000_000 + seq)
        .with_payload(format!("seq={seq}"))
}

/// The writer process (see [`WRITER`]); as an ordinary test run, it is skipped.
#[test]
#[ignore = "the writer process of the other tests, run by them"]
fn writer_process() {
    let spec = std::env::var(WRITER).expect("run by the other tests");
    let fields: Vec<&str> = spec.split('|').collect();
    let [db, extra, per_txn, pause] = fields[..] else {
        panic!("bad {WRITER}: {spec}")
    };
    let (extra, per_txn, pause): (u64, u64, u64) = (
        extra.parse().unwrap(),
        per_txn.parse().unwrap(),
        pause.parse().unwrap(),
    );
    // Opening for writing repairs a file a killed writer left.
    let log = Log::create(db).unwrap();
    let target = log.head().unwrap() + extra;
    loop {
        let head = log.head().unwrap();
        if head >= target {
            break;
        }
        let batch: Vec<Change> = (head + 1..=(head + per_txn).min(target))
            .map(event)
            .collect();
        assert_eq!(log.append_batch(&batch).unwrap(), head + batch.len() as u64);
        std::thread::sleep(Duration::from_micros(pause));
    }
}

fn spawn_writer(db: &Path, extra: u64, per_txn: u64, pause_us: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer_process", "--ignored", "--test-threads=1"])
        .env(
            WRITER,
            format!("{}|{extra}|{per_txn}|{pause_us}", db.display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `pulsewatch run` of `record-batches` (with `args`) over `db`, its state under `state`.
fn spawn_host(db: &Path, state: &Path, follow: bool, args: &[&str]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pulsewatch"));
    command
        .args(["run", "--db"])
        .arg(db)
        .arg("--state-dir")
        .arg(state);
    if follow {
        command.arg("--follow");
    }
    for arg in args {
        command.arg(format!("--arg=record-batches={arg}"));
    }
    command
        .arg(guest("record-batches"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The batches `record-batches` recorded under `state`, in order.
/// A whole line that is not `FIRST LAST` fails the test: it would hide a batch. A last line
/// without its newline yet is being written, and is left for next time.
fn batches(state: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(state.join("record-batches/batches")).unwrap_or_default();
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .map(|l| {
            l.split_once(' ')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .unwrap_or_else(|| panic!("a torn record line {l:?} in:\n{text}"))
        })
        .collect()
}

fn interrupt(child: &Child) {
    common::procs::signal(child.id(), nix::sys::signal::Signal::SIGINT);
}

/// Stops a following host and returns its stderr; it must end cleanly.
fn stop(host: Child) -> String {
    interrupt(&host);
    let output = host.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    stderr
}

/// Checks that `recorded` covers 1..=`head` in order, each event once, except batches
/// delivered again after a restart: a batch that repeats the one before it exactly (recorded,
/// then not committed before the process died). Returns how many such repeats there were.
fn check_coverage(recorded: &[(u64, u64)], head: u64) -> usize {
    let mut next = 1;
    let mut repeats = 0;
    let mut previous: Option<(u64, u64)> = None;
    for &(first, last) in recorded {
        if Some((first, last)) == previous {
            repeats += 1;
            continue;
        }
        assert_eq!(
            first, next,
            "a gap or a duplicate at {first}..{last} in {recorded:?}"
        );
        assert!(last >= first);
        next = last + 1;
        previous = Some((first, last));
    }
    assert_eq!(next, head + 1, "not every event was recorded");
    repeats
}

/// Every stored event, read back: exactly oldest..=head, each whole (its payload names its
/// seq). Returns the head.
fn check_log(db: &Path) -> u64 {
    let log = Log::open_read_only(db).unwrap();
    let mut since = log.oldest().unwrap() - 1;
    loop {
        let batch = log.poll(since, 10_000).unwrap();
        if batch.events.is_empty() {
            break;
        }
        for event in &batch.events {
            assert_eq!(event.seq, since + 1, "gap-free");
            assert_eq!(event.change, self::event(event.seq), "whole and unchanged");
            since = event.seq;
        }
    }
    assert_eq!(since, log.head().unwrap());
    since
}

/// A log in `dir` holding events 1..=`events`.
fn new_log(dir: &Path, events: u64) -> PathBuf {
    let db = dir.join("events.redb");
    drop(Log::create(&db).unwrap());
    append_events(&db, 1, events);
    db
}

/// Appends events `from..=to` in one transaction.
fn append_events(db: &Path, from: u64, to: u64) {
    if from > to {
        return;
    }
    let all: Vec<Change> = (from..=to).map(event).collect();
    Log::open(db).unwrap().append_batch(&all).unwrap();
}

#[test]
fn three_host_processes_follow_a_writer_process_and_see_every_event_once() {
    const EVENTS: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let db = new_log(dir.path(), 0);
    let states: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("s{i}"))).collect();
    let hosts: Vec<Child> = states
        .iter()
        .map(|s| spawn_host(&db, s, true, &[]))
        .collect();
    let mut writer = spawn_writer(&db, EVENTS, 100, 500);
    assert!(writer.wait().unwrap().success());
    for state in &states {
        wait_until("every host caught up", || {
            batches(state).last().is_some_and(|b| b.1 == EVENTS)
        });
    }
    for (host, state) in hosts.into_iter().zip(&states) {
        stop(host);
        assert_eq!(
            check_coverage(&batches(state), EVENTS),
            0,
            "no restart, no repeat"
        );
    }
    assert_eq!(check_log(&db), EVENTS);
}

#[test]
fn a_writer_killed_20_times_loses_nothing_and_following_readers_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_log(dir.path(), 0);
    let state = dir.path().join("state");
    let host = spawn_host(&db, &state, true, &[]);
    // A fixed pseudo-random sequence of kill points, from 20 to 220 ms into each writer's life.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let mut writer = spawn_writer(&db, u64::MAX / 2, 1 + seed % 20, 0);
        std::thread::sleep(Duration::from_millis(20 + (seed >> 33) % 200));
        writer.kill().unwrap();
        writer.wait().unwrap();
    }
    // A host that starts now finds the file unrepaired: it waits, saying so.
    let late_state = dir.path().join("late");
    let mut late = spawn_host(&db, &late_state, true, &[]);
    let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let late_stderr = late.stderr.take().unwrap();
    let heard = said.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(late_stderr)
            .lines()
            .map_while(Result::ok)
        {
            heard.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    wait_until("the late host waits for a repair", || {
        said.lock()
            .unwrap()
            .contains("needs a repair, which opening it for writing once does; waiting for its writer to reopen it")
    });
    // The last writer repairs the file and ends cleanly.
    assert!(spawn_writer(&db, 500, 10, 0).wait().unwrap().success());
    let head = check_log(&db);
    eprintln!("after 20 kills and a clean end: {head} events");
    assert!(head > 500, "the killed writers wrote too");
    assert!(!said.lock().unwrap().contains("quarantined"));
    for (host, state) in [(host, &state), (late, &late_state)] {
        wait_until("the host caught up", || {
            batches(state).last().is_some_and(|b| b.1 == head)
        });
        let stderr = stop(host);
        let repeats = check_coverage(&batches(state), head);
        eprintln!("the reader delivered {repeats} batches again; its stderr:\n{stderr}");
        assert!(!stderr.contains("quarantined"), "{stderr}");
    }
}

#[test]
fn a_host_killed_mid_batch_delivers_again_only_the_uncommitted_batch() {
    const EVENTS: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let db = new_log(dir.path(), EVENTS);
    let state = dir.path().join("state");
    // Batches of 100 with a 5 ms pause between recording a batch and committing it: a kill
    // most likely lands in between.
    let mut host = spawn_host(&db, &state, false, &["100", "5"]);
    wait_until("some batches", || batches(&state).len() >= 20);
    let workers = children(host.id());
    host.kill().unwrap();
    host.wait().unwrap();
    // The workers notice their supervisor is gone and stop at once.
    wait_until("the workers ended", || !workers.iter().any(|&w| alive(w)));
    let before = batches(&state).len();
    assert!(before < (EVENTS / 100) as usize, "killed before the end");
    let output = spawn_host(&db, &state, false, &["100"])
        .wait_with_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let recorded = batches(&state);
    let repeats = check_coverage(&recorded, EVENTS);
    eprintln!("{before} batches recorded before the kill; {repeats} delivered again");
    assert!(repeats <= 1, "at most the one uncommitted batch again");
    if repeats == 1 {
        assert_eq!(
            recorded[before],
            recorded[before - 1],
            "the batch after the kill"
        );
    }
}

#[test]
fn compaction_runs_while_a_writer_process_appends_and_a_host_follows() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_log(dir.path(), 0);
    let state = dir.path().join("state");
    let host = spawn_host(&db, &state, true, &[]);
    let mut writer = spawn_writer(&db, 30_000, 10, 1000);
    wait_until("the plugin read 10,000 events", || {
        batches(&state).last().is_some_and(|b| b.1 >= 10_000)
    });
    let compacted = compact(&db, &state, &["--before", "5000"]);
    assert!(compacted.status.success(), "{}", text(&compacted.stderr));
    assert!(text(&compacted.stderr).contains("deleted"));
    assert!(writer.wait().unwrap().success(), "the writer never stopped");
    let oldest = Log::open_read_only(&db).unwrap().oldest().unwrap();
    assert!(oldest > 1 && oldest <= 5000, "{oldest}");
    let head = check_log(&db);
    assert_eq!(head, 30_000);
    wait_until("the host caught up", || {
        batches(&state).last().is_some_and(|b| b.1 == head)
    });
    stop(host);
    assert_eq!(check_coverage(&batches(&state), head), 0);
}

fn compact(db: &Path, state: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["compact", "--db", db.to_str().unwrap()];
    all.extend(["--state-dir", state.to_str().unwrap()]);
    all.extend(args);
    pulsewatch(&all)
}

#[test]
fn compaction_keeps_what_a_lagging_plugin_has_not_read_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_log(dir.path(), 1000);
    let state = dir.path().join("state");
    let run = spawn_host(&db, &state, false, &[])
        .wait_with_output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    // The plugin has read to 1000; then the log grows to 10,000.
    append_events(&db, 1001, 10_000);

    let refused = compact(&db, &state, &["--keep-last", "100"]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("record-batches (at seq 1000)"), "{stderr}");
    assert_eq!(Log::open_read_only(&db).unwrap().oldest().unwrap(), 1);
    // Compacting only what it has read is allowed.
    let allowed = compact(&db, &state, &["--before", "1001"]);
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    let oldest = Log::open_read_only(&db).unwrap().oldest().unwrap();
    assert!(
        (2..=1001).contains(&oldest),
        "whole batches before 1001: {oldest}"
    );

    let forced = compact(&db, &state, &["--keep-last", "100", "--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    let oldest = Log::open_read_only(&db).unwrap().oldest().unwrap();
    assert!(oldest > 1001 && oldest <= 9901, "{oldest}");

    // The plugin is told, and fails rather than skip the deleted events.
    let run = spawn_host(&db, &state, false, &[])
        .wait_with_output()
        .unwrap();
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "events 1001..{} are no longer in the log (deleted by retention",
            oldest - 1
        )),
        "{stderr}"
    );
    assert_eq!(batches(&state).last().unwrap().1, 1000, "nothing skipped");
}

#[test]
fn max_keep_lets_compaction_pass_an_abandoned_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_log(dir.path(), 100);
    let state = dir.path().join("state");
    assert!(
        spawn_host(&db, &state, false, &[])
            .wait()
            .unwrap()
            .success()
    );
    append_events(&db, 101, 5000);
    // Before seq 150 is inside the first batch, which stays whole: nothing the plugin has not
    // read is deleted, and nothing says it is.
    let nothing = compact(&db, &state, &["--before", "150", "--max-keep", "10"]);
    let stderr = text(&nothing.stderr);
    assert!(nothing.status.success(), "{stderr}");
    assert!(!stderr.contains("more than --max-keep"), "{stderr}");
    assert!(
        stderr.contains("deleted 0 events; the oldest kept is seq 1")
            && stderr.contains("compaction deletes whole stored batches"),
        "{stderr}"
    );
    let within = compact(&db, &state, &["--keep-last", "10", "--max-keep", "10000"]);
    assert_eq!(within.status.code(), Some(2), "{}", text(&within.stderr));
    let past = compact(&db, &state, &["--keep-last", "10", "--max-keep", "1000"]);
    let stderr = text(&past.stderr);
    assert!(past.status.success(), "{stderr}");
    let oldest = Log::open_read_only(&db).unwrap().oldest().unwrap();
    assert!(
        stderr.contains(&format!(
            "more than --max-keep: events 101..{} it has not read are deleted",
            oldest - 1
        )),
        "the events really deleted: {stderr}"
    );
    // Deleting it all again would cost the plugin nothing more: nothing holds that back.
    let again = compact(&db, &state, &["--keep-last", "10"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        !text(&again.stderr).contains("has not read"),
        "{}",
        text(&again.stderr)
    );
    // New events it has not read are held back, until it is forgotten as a plugin that no
    // longer runs.
    append_events(&db, 5001, 10_000);
    let refused = compact(&db, &state, &["--keep-last", "5"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    let forget = pulsewatch(&[
        "forget",
        "record-batches",
        "--db",
        db.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(forget.status.success(), "{}", text(&forget.stderr));
    let after = compact(&db, &state, &["--keep-last", "5"]);
    assert!(after.status.success(), "{}", text(&after.stderr));
}

/// `pulsewatch run` of `manifest` over `db`, until caught up.
fn run_manifest(db: &Path, state: &Path, manifest: &Path) -> std::process::Output {
    let arg = |p: &Path| p.to_str().unwrap().to_owned();
    pulsewatch(&[
        "run",
        "--db",
        &arg(db),
        "--state-dir",
        &arg(state),
        "--manifest",
        &arg(manifest),
    ])
}

fn manifest(dir: &Path, start: &str) -> PathBuf {
    let start = format!("start = {start}");
    write_manifest(dir, &[("record-batches", "record-batches", &start)])
}

#[test]
fn a_plugin_starts_from_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    let log = Log::create(&db).unwrap();
    log.append_batch(&(1..=1000).map(event).collect::<Vec<_>>())
        .unwrap();
    // The first event stamped at or after the time is 501.
    let at = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + 501);
    assert_eq!(log.seq_at(1_700_000_000_000 + 501).unwrap(), 500);
    drop(log);
    let time = humantime::format_rfc3339_millis(at).to_string();
    let manifest = manifest(dir.path(), &format!("{{ time = \"{time}\" }}"));
    let state = dir.path().join("state");
    let run = run_manifest(&db, &state, &manifest);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(batches(&state).first().map(|b| b.0), Some(501));
    assert_eq!(batches(&state).last().map(|b| b.1), Some(1000));
}

/// A start after a seq beyond the head would skip the events up to it as they arrive: the
/// plugin refuses it, saying so, and commits nothing.
#[test]
fn a_start_beyond_the_head_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_log(dir.path(), 100);
    let manifest = manifest(dir.path(), "999999");
    let state = dir.path().join("state");
    let run = run_manifest(&db, &state, &manifest);
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "the start position, after seq 999999, is beyond the head, seq 100: events \
             101..999999 would never be delivered"
        ),
        "{stderr}"
    );
    assert!(batches(&state).is_empty(), "nothing committed");
}

#[test]
fn a_plugin_starts_from_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_log(dir.path(), 100);
    let manifest = manifest(dir.path(), "\"head\"");
    let state = dir.path().join("state");
    let host = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["run", "--follow", "--db"])
        .arg(&db)
        .arg("--state-dir")
        .arg(&state)
        .arg("--manifest")
        .arg(&manifest)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Following from the head: its slot says where it waits.
    let home = pulsewatch::Home::under(&state);
    wait_until("the plugin waits at the head", || {
        home.slots()
            .is_ok_and(|s| s.get("record-batches") == Some(&100))
    });
    assert!(spawn_writer(&db, 50, 10, 0).wait().unwrap().success());
    wait_until("the new events arrived", || {
        batches(&state).last().is_some_and(|b| b.1 == 150)
    });
    stop(host);
    assert_eq!(batches(&state).first().map(|b| b.0), Some(101));
}
