//! Derived streams: plugins commit derived events into output logs exactly once with their
//! cursor (`pulse:watch/output`), pipelines read them, and plugins built against the 0.2.0
//! contract keep running.

mod common;

use common::procs::{alive, descendants, signal};
use common::*;
use nix::sys::signal::Signal;
use pulsewatch::{Log, Origin, Stream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Every event of the log at `path`, with its origin, in seq order.
fn derived(path: &Path) -> Vec<(u64, String, Origin)> {
    let log = Log::open_read_only(path).unwrap();
    let events = log.poll(0, u32::MAX).unwrap().events;
    let origins = match events.last() {
        Some(last) => log.origins(1, last.seq).unwrap(),
        None => Vec::new(),
    };
    assert_eq!(origins.len(), events.len(), "every event has its origin");
    events
        .into_iter()
        .zip(origins)
        .map(|(event, (seq, origin))| {
            assert_eq!(seq, event.seq);
            (
                event.seq,
                String::from_utf8(event.change.payload).unwrap(),
                origin,
            )
        })
        .collect()
}

/// Checks that `out` holds, for each input seq `1..=inputs` in order, exactly the events
/// fan-out derives from it (`fan` of them), each with the state the transform had when it
/// processed that seq, and nothing else.
fn assert_exactly_once(out: &[(u64, String, Origin)], inputs: u64, fan: impl Fn(u64) -> u64) {
    assert_exactly_once_from(out, 1, inputs, fan);
}

/// [`assert_exactly_once`] for the input seqs `first..=last`.
fn assert_exactly_once_from(
    out: &[(u64, String, Origin)],
    first: u64,
    last: u64,
    fan: impl Fn(u64) -> u64,
) {
    let mut expected = Vec::new();
    for s in first..=last {
        for i in 0..fan(s) {
            expected.push(format!("{s}/{i}/{}", s - 1));
        }
    }
    let payloads: Vec<&str> = out.iter().map(|(_, p, _)| p.as_str()).collect();
    if payloads != expected {
        let first = payloads
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(payloads.len().min(expected.len()));
        panic!(
            "{} derived events, {} expected; first difference at {first}: {:?} vs {:?}",
            payloads.len(),
            expected.len(),
            payloads.get(first),
            expected.get(first)
        );
    }
    for (_, payload, origin) in out {
        let mut parts = payload.split('/');
        let s: u64 = parts.next().unwrap().parse().unwrap();
        let i: u32 = parts.next().unwrap().parse().unwrap();
        assert_eq!((origin.seq, origin.index), (s, i), "{payload}");
    }
}

#[test]
fn derived_events_are_written_once_with_their_origins() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 300);
    let h = Harness::new(dir.path());
    let out = dir.path().join("fanned.redb");
    let mut spec = h.spec("fan-out");
    spec.args = vec!["fanned".into()];
    spec.outputs = vec![out.clone()];
    let plugin = h.runtime.load(&spec).unwrap();

    let outcome = &h.run_all(std::slice::from_ref(&plugin), &log)[0];
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    let first = derived(&out);
    assert_exactly_once(&first, 300, |s| s % 3);
    let origin = &first[0].2;
    assert_eq!(origin.plugin, "fan-out");
    assert_eq!(origin.input, log.path().display().to_string());
    assert_eq!(origin.id(), "fan-out:1:0");

    // Caught up: a second run writes nothing; new input events continue where it left off.
    h.run_all(std::slice::from_ref(&plugin), &log);
    assert_eq!(derived(&out).len(), first.len());
    fill(&log, 300, 450);
    let outcome = &h.run_all(std::slice::from_ref(&plugin), &log)[0];
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert_exactly_once(&derived(&out), 450, |s| s % 3);
    let checkpoint = Log::open_read_only(&out)
        .unwrap()
        .checkpoint("fan-out")
        .unwrap()
        .unwrap();
    assert_eq!(
        (checkpoint.cursor, checkpoint.state),
        (450, Some(b"450".to_vec()))
    );
}

#[test]
fn an_output_granted_later_takes_events_from_there_on_and_the_others_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 100);
    let h = Harness::new(dir.path());
    let (a, b) = (dir.path().join("a.redb"), dir.path().join("b.redb"));
    let mut spec = h.spec("fan-out");
    spec.args = vec!["a".into()];
    spec.outputs = vec![a.clone()];
    let plugin = h.runtime.load(&spec).unwrap();
    assert!(h.run_all(&[plugin], &log)[0].result.is_ok());
    fill(&log, 100, 150);

    // b has no commit of the plugin's: it takes what the plugin derives from its last commit
    // on, as a has.
    spec.args = vec!["a,b".into()];
    spec.outputs = vec![a.clone(), b.clone()];
    let plugin = h.runtime.load(&spec).unwrap();
    let outcome = &h.run_all(&[plugin], &log)[0];
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert_exactly_once(&derived(&a), 150, |s| s % 3);
    assert_exactly_once_from(&derived(&b), 101, 150, |s| s % 3);
}

#[test]
fn an_output_is_an_ordinary_log_for_the_next_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 120);
    let h = Harness::new(dir.path());
    let out = dir.path().join("totals.redb");
    let mut spec = h.spec("tenant-totals");
    spec.outputs = vec![out.clone()];
    let plugin = h.runtime.load(&spec).unwrap();
    assert!(h.run_all(&[plugin], &log)[0].result.is_ok());

    // kind-counts reads it as it reads any log: one `updated` per input event.
    let totals = Arc::new(Log::open_read_only(&out).unwrap());
    let counts = h.load("kind-counts");
    assert!(h.run_all(&[counts], &totals)[0].result.is_ok());
    assert_eq!(
        h.lines.value("kind-counts", "totals: ").as_deref(),
        Some("created=0 updated=120 archived=0 deleted=0")
    );
    // The last derived event holds the running totals of its tenant.
    let last = totals.poll(119, 1).unwrap().events.remove(0);
    let payload: serde_json::Value = serde_json::from_slice(&last.change.payload).unwrap();
    let tenant = uuid::Uuid::from_u128(last.change.collective).to_string();
    assert_eq!(payload["tenant"], tenant.as_str());
    let kinds = ["created", "updated", "archived", "deleted"];
    let sum: u64 = kinds.iter().map(|k| payload[k].as_u64().unwrap()).sum();
    // Tenants are i % 5: 120 events, 24 each.
    assert_eq!(sum, 24);

    // `tail` shows where each came from, with its id.
    let tail = pulsewatch(&["tail", "--db", out.to_str().unwrap(), "--limit", "1"]);
    let line = text(&tail.stdout);
    assert!(
        line.contains(r#""plugin":"tenant-totals","seq":1,"index":0},"id":"tenant-totals:1:0""#),
        "{line}"
    );
}

#[test]
fn emitting_needs_a_grant_and_a_valid_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 10);
    let h = Harness::new(dir.path());
    let refused = h.runtime.load(&h.spec("fan-out")).unwrap_err().to_string();
    assert!(
        refused.contains("imports `pulse:watch/output@0.3.0`")
            && refused.contains("granted no output logs")
            && refused.contains("--output"),
        "{refused}"
    );

    // A grant of another name: the SDK names what is granted.
    let mut spec = h.spec("fan-out");
    spec.args = vec!["elsewhere".into()];
    spec.outputs = vec![dir.path().join("out.redb")];
    let plugin = h.runtime.load(&spec).unwrap();
    let outcome = &h.run_all(&[plugin], &log)[0];
    assert!(outcome.result.is_err());
    let said = h.lines.of("fan-out", Stream::Stderr).join("\n");
    assert!(
        said.contains(
            r#"no output log called "elsewhere" is granted to this plugin (granted: out)"#
        ),
        "{said}"
    );

    // Commits that break the contract's rules write nothing.
    let mut spec = h.spec("bad-commits");
    spec.outputs = vec![dir.path().join("out.redb")];
    let plugin = h.runtime.load(&spec).unwrap();
    let outcome = &h.run_all(&[plugin], &log)[0];
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    let said = h.lines.of("bad-commits", Stream::Stdout);
    let expected = [
        "ahead: the host refused the commit: the cursor 11 is after the last event the plugin was given, 10",
        "late: the host refused the commit: output out: derived event 0 derives from seq 10, after the cursor being committed, 5: commit a cursor that covers every event derived from",
        "disorder: the host refused the commit: output out: derived event 1 derives from seq 2, before the one before it, 3: derived events go in input order",
        "unknown output: the host refused the commit: derived event 0 names output 7, and one is granted: [\"out\"]",
        "ok: committed through 4",
        "behind: the host refused the commit: the cursor 3 is before the cursor already committed, 4",
        "again: the host refused the commit: derived event 0 derives from seq 4, at or before the cursor already committed, 4",
    ];
    assert_eq!(said, expected);
    let written = derived(&dir.path().join("out.redb"));
    assert_eq!(written.len(), 1, "only the valid commit wrote");
}

#[test]
fn a_plugin_built_against_feed_0_2_0_runs_unmodified() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 1234);
    let h = Harness::new(dir.path());
    let old = h.load("feed-0-2");
    let counts = h.load("kind-counts");
    let outcomes = h.run_all(&[old, counts], &log);
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    let totals = h.lines.value("kind-counts", "totals: ").unwrap();
    assert_eq!(
        h.lines.value("feed-0-2", "feed 0.2.0: ").unwrap(),
        format!("{totals} cursor=1234")
    );
    // And in a worker process, as `pulsewatch run` runs it.
    let run = pulsewatch(&[
        "run",
        "--db",
        dir.path().join("events.redb").to_str().unwrap(),
        "--state-dir",
        dir.path().join("cli-state").to_str().unwrap(),
        guest("feed-0-2").to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).contains(&format!("feed 0.2.0: {totals} cursor=1234")),
        "{}",
        text(&run.stdout)
    );
}

/// A host following `manifest`, its output discarded.
fn host(dir: &Path, manifest: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["run", "--follow", "--grace", "5s", "--manifest"])
        .arg(manifest)
        .arg("--db")
        .arg(dir.join("events.redb"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("host.err")).unwrap())
        .spawn()
        .unwrap()
}

/// The head of the log at `path`, 0 while it cannot be read (not yet made, or being repaired).
fn head(path: &Path) -> u64 {
    Log::open_read_only(path)
        .ok()
        .and_then(|log| log.head().ok())
        .unwrap_or(0)
}

/// 20 SIGKILLs at pseudo-random moments while a writer appends and a pipeline of two transforms
/// derives: fan-out (0, 1 or 2 events per input) into mid, and a copy of mid into last. Half
/// kill a worker, half the whole host (whose workers then stop at once). After the last restart
/// has caught up, each output holds every input's derived events exactly once, in order, each
/// derived with the state the transform had committed.
#[test]
fn exactly_once_across_sigkills_of_workers_and_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("events.redb")).unwrap();
    let (mid, last) = (dir.path().join("mid.redb"), dir.path().join("last.redb"));
    let manifest = write_manifest(
        dir.path(),
        &[
            (
                "fan-out",
                "fan-out",
                "args = [\"mid\"]\noutputs = [\"mid.redb\"]\nenv = { PULSEWATCH_BATCH = \"2\" }",
            ),
            (
                "copy",
                "fan-out",
                "args = [\"last\", \"copy\"]\ninput = \"mid.redb\"\noutputs = [\"last.redb\"]\nenv = { PULSEWATCH_BATCH = \"3\" }",
            ),
        ],
    );
    let mut appended = 0;
    let mut append = |n: u64| {
        fill(&log, appended, appended + n);
        appended += n;
    };
    append(200);
    let mut host = host(dir.path(), &manifest);
    // A fixed seed: the moments differ from kill to kill, and from run to run of the test not.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    for kill in 0..20 {
        append(40 + next(80));
        std::thread::sleep(Duration::from_millis(150 + next(350)));
        if kill % 2 == 0 {
            let workers: Vec<u32> = descendants(host.id())
                .into_iter()
                .filter(|&p| alive(p))
                .collect();
            if let Some(&worker) = workers.get(next(workers.len().max(1) as u64) as usize) {
                signal(worker, Signal::SIGKILL);
            }
        } else {
            let workers = descendants(host.id());
            host.kill().unwrap();
            host.wait().unwrap();
            // Its workers see their supervisor gone and stop at once.
            wait_until("the killed host's workers to end", || {
                workers.iter().all(|&p| !alive(p))
            });
            host = self::host(dir.path(), &manifest);
        }
    }
    let inputs = appended;
    let fanned: u64 = (1..=inputs).map(|s| s % 3).sum();
    wait_until("the pipeline to catch up", || {
        head(&mid) == fanned && head(&last) == fanned
    });
    // Past its start-up (its workers run), the host has its handlers for SIGINT.
    wait_until("the last host's workers", || {
        descendants(host.id()).len() == 2
    });
    signal(host.id(), Signal::SIGINT);
    let status = host.wait().unwrap();
    let said = std::fs::read_to_string(dir.path().join("host.err")).unwrap();
    assert!(status.success(), "{status}: {said}");

    assert_exactly_once(&derived(&mid), inputs, |s| s % 3);
    // The copy's input seqs are mid's seqs: one event each, with its own count of them.
    let copied = derived(&last);
    assert_exactly_once(&copied, fanned, |_| 1);
    assert!(copied.iter().all(|(_, _, o)| o.plugin == "copy"));
}
