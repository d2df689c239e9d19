//! End to end: real guest components consume a real redb log through the WIT feed.

mod common;

use common::{Harness, change, fill, log_with, wait_until};
use pulsewatch::{ChangeKind, Log};
use std::sync::Arc;
use std::time::Duration;

/// The summary line seq-check printed last as `plugin`.
fn received(harness: &Harness, plugin: &str) -> String {
    harness.lines.value(plugin, "received: ").unwrap()
}

fn expected_counts(n: u64) -> String {
    let mut counts = [0u64; 4];
    for i in 0..n {
        counts[ChangeKind::ALL
            .iter()
            .position(|&k| k == change(i).kind)
            .unwrap()] += 1;
    }
    format!(
        "created={} updated={} archived={} deleted={}",
        counts[0], counts[1], counts[2], counts[3]
    )
}

#[test]
fn a_guest_counts_ten_thousand_events_exactly_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 10_000);
    let harness = Harness::new(dir.path());
    let outcomes = harness.run_all(&[harness.load("kind-counts")], &log);
    assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
    assert_eq!(
        harness.lines.value("kind-counts", "totals: ").unwrap(),
        expected_counts(10_000)
    );
    assert_eq!(
        harness.lines.value("kind-counts", "cursor: ").unwrap(),
        "10000"
    );
}

#[test]
fn two_guests_with_different_cursors_do_not_interfere() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 2_000);
    let harness = Harness::new(dir.path());
    let (a, b) = (
        harness.load_as("seq-check", "a"),
        harness.load_as("seq-check", "b"),
    );
    assert!(
        harness.run_all(std::slice::from_ref(&a), &log)[0]
            .result
            .is_ok()
    );

    // Now `a` is at 2,000 and `b` at 0, reading in batches of 7, at the same time.
    fill(&log, 2_000, 3_000);
    let mut spec = b.spec().clone();
    spec.args = vec!["7".into()];
    let b = harness.runtime.load(&spec).unwrap();
    let outcomes = harness.run_all(&[a, b], &log);
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert_eq!(
        received(&harness, "a"),
        "1000 first: 2001 last: 3000 cursor: 3000"
    );
    assert_eq!(
        received(&harness, "b"),
        "3000 first: 1 last: 3000 cursor: 3000"
    );
}

#[test]
fn a_restarted_guest_resumes_after_its_committed_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 2_500);
    let harness = Harness::new(dir.path());
    let plugin = harness.load("seq-check");
    assert!(
        harness.run_all(std::slice::from_ref(&plugin), &log)[0]
            .result
            .is_ok()
    );
    assert_eq!(
        received(&harness, "seq-check"),
        "2500 first: 1 last: 2500 cursor: 2500"
    );

    fill(&log, 2_500, 4_000);
    assert!(
        harness.run_all(std::slice::from_ref(&plugin), &log)[0]
            .result
            .is_ok()
    );
    assert_eq!(
        harness.lines.value("seq-check", "resumed at: ").unwrap(),
        "2500"
    );
    assert_eq!(
        received(&harness, "seq-check"),
        "1500 first: 2501 last: 4000 cursor: 4000",
        "every event after the cursor, none before"
    );

    // Caught up: a third run receives nothing.
    assert!(
        harness.run_all(std::slice::from_ref(&plugin), &log)[0]
            .result
            .is_ok()
    );
    assert_eq!(
        received(&harness, "seq-check"),
        "0 first: - last: 4000 cursor: 4000"
    );
}

#[test]
fn following_guests_see_events_appended_while_they_run_and_stop_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 100);
    let mut harness = Harness::new(dir.path());
    harness.options.follow = true;
    let plugins = [harness.load("seq-check"), harness.load("kind-counts")];
    let outcomes = std::thread::scope(|scope| {
        let running = scope.spawn(|| harness.run_all(&plugins, &log));
        for round in 1..=5 {
            std::thread::sleep(Duration::from_millis(50));
            fill(&log, round * 100, (round + 1) * 100);
        }
        // Wait until both have committed the last event, then stop them.
        wait_until("the condition", || {
            let at = |name| harness.options.progress.cursor(name) == Some(600);
            at("seq-check") && at("kind-counts")
        });
        harness.options.stop.stop();
        running.join().unwrap()
    });
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert_eq!(
        received(&harness, "seq-check"),
        "600 first: 1 last: 600 cursor: 600"
    );
    assert_eq!(
        harness.lines.value("kind-counts", "totals: ").unwrap(),
        expected_counts(600)
    );
}

#[test]
fn the_same_plugin_cannot_run_twice_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 10);
    let mut harness = Harness::new(dir.path());
    harness.options.follow = true;
    let plugin = harness.load("seq-check");
    let sink = harness.sink();
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| harness.runtime.run(&plugin, &log, &harness.options, &sink));
        // Caught up and following: it holds its state directory until stopped.
        wait_until("the condition", || {
            harness.options.progress.cursor("seq-check") == Some(10)
        });
        let second = harness.runtime.run(&plugin, &log, &harness.options, &sink);
        harness.options.stop.stop();
        (first.join().unwrap(), second)
    });
    assert!(first.result.is_ok(), "{first:?}");
    assert!(
        matches!(second.result, Err(pulsewatch::Failure::InUse { .. })),
        "{second:?}"
    );
}

#[test]
fn a_guest_reads_through_a_read_only_handle_while_a_writer_holds_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let writer = log_with(dir.path(), 1_234);
    let reader = Arc::new(Log::open_read_only(dir.path().join("events.redb")).unwrap());
    let harness = Harness::new(dir.path());
    assert!(
        harness.run_all(&[harness.load("seq-check")], &reader)[0]
            .result
            .is_ok()
    );
    assert_eq!(
        received(&harness, "seq-check"),
        "1234 first: 1 last: 1234 cursor: 1234"
    );
    drop(writer);
}
