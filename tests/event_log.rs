//! The event log over redb: appends are gap-free and atomic, the outbox commits with the
//! application's tables, readers in other handles follow the writer, bad files are refused.

use pulsewatch::redb::{self, ReadableDatabase, TableDefinition};
use pulsewatch::{Change, ChangeKind, Log, OpenError, WriteError};

const ORDERS: TableDefinition<u64, &str> = TableDefinition::new("orders");

fn change(n: u8) -> Change {
    Change::new(ChangeKind::Created, u128::from(n), 7)
        .at(1_000 + u64::from(n))
        .with_payload(vec![n])
}

#[test]
fn appends_get_gap_free_seqs_from_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("db")).unwrap();
    assert_eq!(log.head().unwrap(), 0);
    assert_eq!(log.append(&change(1)).unwrap(), 1);
    assert_eq!(
        log.append_batch(&[change(2), change(3), change(4)])
            .unwrap(),
        4
    );
    assert_eq!(
        log.append_batch(&[]).unwrap(),
        4,
        "an empty batch leaves the head"
    );
    let seqs: Vec<u64> = log
        .poll(0, 100)
        .unwrap()
        .events
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(log.poll(0, 100).unwrap().events[2].change, change(3));
    assert_eq!(log.len().unwrap(), 4);
}

#[test]
fn reopening_continues_the_sequence_and_keeps_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    Log::create(&path)
        .unwrap()
        .append_batch(&[change(1), change(2)])
        .unwrap();
    let log = Log::open(&path).unwrap();
    assert_eq!(log.append(&change(3)).unwrap(), 3);
    assert_eq!(log.poll(0, 10).unwrap().events[0].change, change(1));
}

#[test]
fn the_outbox_commits_events_with_the_applications_own_tables() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("db")).unwrap();
    let db = log.database().unwrap();

    let txn = db.begin_write().unwrap();
    txn.open_table(ORDERS).unwrap().insert(1, "paid").unwrap();
    assert_eq!(Log::append_in(&txn, &[change(1), change(2)]).unwrap(), 2);
    txn.commit().unwrap();

    // Aborted: neither the order nor the events exist afterwards, and no seq is burnt.
    let txn = db.begin_write().unwrap();
    txn.open_table(ORDERS).unwrap().insert(2, "lost").unwrap();
    Log::append_in(&txn, &[change(3)]).unwrap();
    txn.abort().unwrap();

    assert_eq!(log.head().unwrap(), 2);
    assert_eq!(
        log.append(&change(4)).unwrap(),
        3,
        "gap-free after an abort"
    );
    let read = db.begin_read().unwrap();
    let orders = read.open_table(ORDERS).unwrap();
    assert!(orders.get(1).unwrap().is_some());
    assert!(orders.get(2).unwrap().is_none());
}

#[test]
fn a_read_only_handle_follows_the_writer_without_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let writer = Log::create(&path).unwrap();
    let reader = Log::open_read_only(&path).unwrap();
    assert_eq!(reader.head().unwrap(), 0);
    writer.append_batch(&[change(1), change(2)]).unwrap();
    assert_eq!(reader.head().unwrap(), 2);
    assert_eq!(reader.poll(1, 10).unwrap().events[0].change, change(2));
    assert!(matches!(
        reader.append(&change(3)),
        Err(WriteError::ReadOnly)
    ));
}

#[test]
fn wait_returns_at_once_when_ahead_and_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(Log::create(dir.path().join("db")).unwrap());
    log.append(&change(1)).unwrap();
    assert_eq!(log.wait(0, std::time::Duration::from_secs(60)).unwrap(), 1);
    assert_eq!(
        log.wait(1, std::time::Duration::from_millis(10)).unwrap(),
        1,
        "timeout"
    );
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            log.append(&change(2)).unwrap();
        })
    };
    assert_eq!(log.wait(1, std::time::Duration::from_secs(60)).unwrap(), 2);
    writer.join().unwrap();
}

#[test]
fn missing_garbage_and_foreign_files_are_refused_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.redb");
    let err = Log::open_read_only(&missing).unwrap_err();
    assert!(matches!(err, OpenError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("missing.redb"));
    assert!(!missing.exists(), "a read-only open creates nothing");

    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, vec![0x5a; 10_000]).unwrap();
    for err in [
        Log::open_read_only(&garbage).unwrap_err(),
        Log::create(&garbage).unwrap_err(),
    ] {
        assert!(matches!(err, OpenError::NotADatabase { .. }), "{err}");
        assert!(
            err.to_string().contains("garbage.redb: not a database"),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        vec![0x5a; 10_000],
        "left as it was"
    );

    let err = Log::create(dir.path().join("no-such-dir/events.redb")).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot create the database: its directory does not exist"),
        "{err}"
    );
    let err = Log::open_read_only(dir.path()).unwrap_err();
    assert!(matches!(err, OpenError::IsADirectory { .. }), "{err}");

    let foreign = dir.path().join("foreign.redb");
    {
        let db = redb::Database::create(&foreign).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(ORDERS).unwrap().insert(1, "x").unwrap();
        txn.commit().unwrap();
    }
    assert!(matches!(
        Log::create(&foreign).unwrap_err(),
        OpenError::NotALog { .. }
    ));
}

#[test]
fn two_writers_take_turns_and_keep_seqs_gap_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let first = Log::create(&path).unwrap();
    let second = Log::open(&path).unwrap();
    for i in 0..10u8 {
        let writer = if i % 2 == 0 { &first } else { &second };
        assert_eq!(writer.append(&change(i)).unwrap(), u64::from(i) + 1);
    }
    let events = first.poll(0, 100).unwrap().events;
    assert!(
        events
            .iter()
            .map(|e| e.change.clone())
            .eq((0..10).map(change))
    );
}

/// A caught-up reader answers from what it knows while the log has not changed; a commit by
/// another process (here, `pulsewatch append`) is noticed, and its event delivered, with no
/// wait call in between.
#[test]
fn a_caught_up_reader_notices_another_process_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    Log::create(&path).unwrap().append(&change(1)).unwrap();
    let reader = Log::open_read_only(&path).unwrap();
    assert_eq!(reader.poll(0, 10).unwrap().last_seq, 1);
    for _ in 0..100 {
        assert!(reader.poll(1, 10).unwrap().events.is_empty());
    }
    let appended = std::process::Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args([
            "append",
            "--db",
            path.to_str().unwrap(),
            "--kind",
            "deleted",
        ])
        .args(["--entity", "00000000-0000-0000-0000-000000000002"])
        .args(["--collective", "00000000-0000-0000-0000-000000000007"])
        .output()
        .unwrap();
    assert!(appended.status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let batch = loop {
        let batch = reader.poll(1, 10).unwrap();
        if !batch.events.is_empty() || std::time::Instant::now() > deadline {
            break batch;
        }
        std::thread::yield_now();
    };
    assert_eq!(batch.last_seq, 2, "the other process's commit was noticed");
    assert_eq!(batch.events[0].change.kind, ChangeKind::Deleted);
}

/// A watched reader keeps its head and its last small packed poll while the file does not
/// change, for the readers sharing it; any commit, by any process, is seen by the next call.
#[test]
fn a_shared_readers_kept_answers_end_with_the_next_commit() {
    use pulsewatch::PollLimits;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let writer = Log::create(&path).unwrap();
    writer.append(&change(1)).unwrap();
    let reader = Log::open_read_only(&path).unwrap();
    assert!(reader.is_watched());
    let packed = |since: u64| {
        let mut out = Vec::new();
        let packed = reader
            .poll_packed(since, 10, &PollLimits::default(), &mut out)
            .unwrap();
        (packed.events, packed.last_seq, out.len())
    };
    let one = packed(0);
    assert_eq!((one.0, one.1), (1, 1));
    for _ in 0..100 {
        assert_eq!(reader.head().unwrap(), 1);
        assert_eq!(packed(0), one, "the same answer, kept or read");
    }
    for n in 2..=4 {
        let generation = reader.generation();
        writer.append(&change(n as u8)).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while reader.generation() == generation && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(reader.head().unwrap(), n, "the commit ends the kept head");
        let (events, last_seq, bytes) = packed(0);
        assert_eq!((events, last_seq), (n as usize, n), "and the kept poll");
        assert!(bytes > one.2);
    }
}

/// 8 threads append `each` single changes, each thread keeping up to `window` of them in flight
/// (1: every append blocks until durable). Every seq is given once, each holds the change that
/// was given it, and each thread's changes are stored in its own order.
fn appends_from_8_threads(window: usize, each: usize) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("events.redb")).unwrap();
    let seqs: Vec<Vec<(u64, u8)>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let log = &log;
                s.spawn(move || {
                    let mut in_flight = std::collections::VecDeque::new();
                    let mut seqs = Vec::new();
                    for _ in 0..each {
                        in_flight.push_back(log.submit(&change(t)).unwrap());
                        if in_flight.len() == window {
                            seqs.push((in_flight.pop_front().unwrap().wait().unwrap(), t));
                        }
                    }
                    seqs.extend(in_flight.into_iter().map(|p| (p.wait().unwrap(), t)));
                    seqs
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for thread in &seqs {
        assert!(
            thread.windows(2).all(|w| w[0].0 < w[1].0),
            "a thread's order"
        );
    }
    let mut all: Vec<(u64, u8)> = seqs.concat();
    all.sort_unstable();
    let total = 8 * each as u64;
    assert!(all.iter().map(|a| a.0).eq(1..=total), "every seq once");
    let stored = log.poll(0, 10_000).unwrap().events;
    assert_eq!(stored.len() as u64, total);
    for ((seq, thread), event) in all.iter().zip(&stored) {
        assert_eq!(event.seq, *seq);
        assert_eq!(event.change, change(*thread));
    }
}

#[test]
fn concurrent_single_appends_share_transactions_and_get_every_seq_once() {
    appends_from_8_threads(1, 50);
}

#[test]
fn submitted_appends_in_flight_share_transactions_and_keep_each_threads_order() {
    // Groups outgrow the 8 threads.
    appends_from_8_threads(16, 200);
}

#[test]
fn a_submitted_append_is_committed_even_if_no_one_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = Log::create(&path).unwrap();
    // Queued, not yet committed: waiting for the last commits the three together.
    let first = log.submit(&change(1)).unwrap();
    let second = log.submit(&change(2)).unwrap();
    assert_eq!(log.head().unwrap(), 0);
    assert_eq!(log.submit(&change(3)).unwrap().wait().unwrap(), 3);
    assert_eq!(log.head().unwrap(), 3);
    assert_eq!((first.wait().unwrap(), second.wait().unwrap()), (1, 2));
    // Dropped unwaited, it is committed all the same.
    drop(log.submit(&change(4)).unwrap());
    drop(log);
    let log = Log::open(&path).unwrap();
    let events = log.poll(0, 10).unwrap().events;
    let kept: Vec<(u64, Change)> = events.into_iter().map(|e| (e.seq, e.change)).collect();
    assert_eq!(
        kept,
        (1..=4)
            .map(|n| (u64::from(n), change(n)))
            .collect::<Vec<_>>()
    );
    let reader = Log::open_read_only(&path).unwrap();
    assert!(matches!(
        reader.submit(&change(5)),
        Err(WriteError::ReadOnly)
    ));
}

#[test]
fn seq_at_finds_where_a_time_begins_even_with_stamps_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("events.redb")).unwrap();
    assert_eq!(log.seq_at(u64::MAX).unwrap(), 0, "empty");
    // Stamps 100, 200, 150 (a clock stepped back), 300, 300, then one at a time.
    for stamp in [100, 200, 150, 300, 300] {
        log.append(&Change::new(ChangeKind::Created, 1, 2).at(stamp))
            .unwrap();
    }
    log.append_batch(&[
        Change::new(ChangeKind::Created, 1, 2).at(400),
        Change::new(ChangeKind::Created, 1, 2).at(350),
    ])
    .unwrap();
    let cases = [
        (50, 0),
        (100, 0),
        (101, 1),
        (150, 1),
        // Event 3 (stamped 150) comes after event 2 (200): it counts as after 200.
        (200, 1),
        (201, 3),
        (300, 3),
        (301, 5),
        (400, 5),
        (401, 7),
    ];
    for (time, seq) in cases {
        assert_eq!(log.seq_at(time).unwrap(), seq, "seq_at({time})");
    }
}

#[test]
fn compaction_deletes_whole_batches_and_a_poll_below_them_is_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = Log::create(&path).unwrap();
    // Ten batches of 100, each its own stored batch (filled to the byte limit).
    for batch in 0..10u64 {
        let changes: Vec<Change> = (0..100)
            .map(|i| {
                Change::new(ChangeKind::Updated, 1, 2)
                    .at(batch * 100 + i)
                    .with_payload(vec![0; 400])
            })
            .collect();
        log.append_batch(&changes).unwrap();
    }
    let reader = Log::open_read_only(&path).unwrap();
    assert_eq!(reader.oldest().unwrap(), 1);
    let compacted = log.compact_before(450).unwrap();
    assert!(
        compacted.oldest <= 450 && compacted.oldest > 1,
        "{compacted:?}"
    );
    assert_eq!(compacted.deleted, compacted.oldest - 1);
    assert_eq!(reader.oldest().unwrap(), compacted.oldest);
    let err = reader.poll(0, 10).unwrap_err();
    assert!(
        matches!(err, pulsewatch::ReadError::Truncated { oldest } if oldest == compacted.oldest),
        "{err}"
    );
    assert!(
        reader.poll(compacted.oldest - 2, 10).is_err(),
        "one below is still a gap"
    );
    let batch = reader.poll(compacted.oldest - 1, 10).unwrap();
    assert_eq!(batch.events[0].seq, compacted.oldest);
    // A time before what is kept answers a seq that polls to `Truncated`, not a skip.
    let at = reader.seq_at(10).unwrap();
    assert!(reader.poll(at, 10).is_err());
    // Compacting past the head keeps the last batch: the next seq is still known.
    log.compact_before(u64::MAX).unwrap();
    assert_eq!(log.head().unwrap(), 1000);
    assert_eq!(log.append(&change(1)).unwrap(), 1001);
    assert_eq!(reader.poll(999, 10).unwrap().events.len(), 2);
}

#[test]
fn a_snapshot_keeps_the_timestamp_index() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("events.redb")).unwrap();
    let changes: Vec<Change> = (0..3000u64)
        .map(|i| Change::new(ChangeKind::Created, 1, 2).at(10_000 + i))
        .collect();
    log.append_batch(&changes).unwrap();
    let snap = dir.path().join("snap.redb");
    log.snapshot(&snap, 1001..=u64::MAX, false).unwrap();
    let copy = Log::open_read_only(&snap).unwrap();
    for time in [10_000, 11_000, 11_500, 12_999, 13_000] {
        let live = log.seq_at(time).unwrap();
        // The copy holds events 1001 on: it answers as the live log does from there, and 0
        // (whose poll is `truncated`, never a skip) for a time before its first event.
        let expected = if live > 1000 { live } else { 0 };
        assert_eq!(copy.seq_at(time).unwrap(), expected, "seq_at({time})");
    }
}
