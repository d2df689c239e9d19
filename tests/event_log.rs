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
        assert!(matches!(err, OpenError::Database { .. }), "{err}");
        assert!(err.to_string().contains("garbage.redb"), "{err}");
    }
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        vec![0x5a; 10_000],
        "left as it was"
    );

    let err = Log::create(dir.path().join("no-such-dir/events.redb")).unwrap_err();
    assert!(
        err.to_string().contains("No such file or directory"),
        "{err}"
    );

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
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let _writer = Log::create(&path).unwrap();
    assert!(matches!(
        Log::open(&path).unwrap_err(),
        OpenError::Locked { .. }
    ));
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
