//! What is stored is what is delivered, or nothing: a damaged batch is reported as undecodable
//! at the first seq wanted from it, by the typed and the packed read, through a guest, and by
//! `pulsewatch tail`; events before it are still delivered, and appends after it fail whole.
//! A log of the previous format is refused with both versions named until it is upgraded, after
//! which it reads the same. `pulsewatch repair` checks every batch and names the damaged
//! ranges; `pulsewatch snapshot --skip-damaged` salvages every other event into a log whose
//! readers are told of the gap and whose writers never give its seqs again.

mod common;

use common::{Harness, pulsewatch, text};
use pulsewatch::redb::{self, ReadableTable};
use pulsewatch::{Change, ChangeKind, Log, PollLimits, ReadError, WriteError};
use pulsewatch_log::codec;
use pulsewatch_log::schema::{BATCHES, EVENTS_V1, FORMAT_KEY, META};
use std::path::Path;
use std::sync::Arc;

/// 300 events with 300-byte payloads: four batches (about 90 events each).
fn log_of_several_batches(path: &Path) {
    let log = Log::create(path).unwrap();
    let changes: Vec<Change> = (0..300u64)
        .map(|i| {
            Change::new(ChangeKind::ALL[(i % 4) as usize], u128::from(i), 9)
                .at(i)
                .with_payload(vec![(i % 251) as u8; 300])
        })
        .collect();
    log.append_batch(&changes).unwrap();
}

/// The keys of the stored batches.
fn batch_keys(path: &Path) -> Vec<u64> {
    let db = redb::Database::open(path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let table = txn.open_table(BATCHES).unwrap();
    table
        .iter()
        .unwrap()
        .map(|e| e.unwrap().0.value())
        .collect()
}

/// Flips one byte of the batch stored under `key`, at `at` (counted from its end if negative).
fn flip(path: &Path, key: u64, at: isize) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(BATCHES).unwrap();
        let mut bytes = table.get(key).unwrap().unwrap().value().to_vec();
        let at = if at < 0 {
            bytes.len() - at.unsigned_abs()
        } else {
            at as usize
        };
        bytes[at] ^= 0x40;
        table.insert(key, bytes.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn appends_after_a_damaged_last_batch_fail_as_a_group_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    log_of_several_batches(&path);
    let keys = batch_keys(&path);
    let last = *keys.last().unwrap();
    flip(&path, last, -1);
    let log = Log::open(&path).unwrap();
    let change = Change::new(ChangeKind::Created, 1, 2);
    // Three appends queued together fail together: the next seq is not known for sure.
    let pending: Vec<_> = (0..3).map(|_| log.submit(&change).unwrap()).collect();
    let errors: Vec<WriteError> = pending.into_iter().map(|p| p.wait().unwrap_err()).collect();
    let damaged = |e: &WriteError| matches!(e, WriteError::Damaged { first, .. } if *first == last);
    for e in &errors {
        assert!(
            matches!(e, WriteError::Group(inner) if damaged(inner)),
            "{e:?}"
        );
    }
    // A lone append gets the error itself.
    let alone = log.append(&change).unwrap_err();
    assert!(damaged(&alone), "{alone:?}");
    drop(log);
    assert_eq!(batch_keys(&path), keys);
}

fn undecodable_at(result: Result<impl std::fmt::Debug, ReadError>) -> u64 {
    match result {
        Err(ReadError::Undecodable { seq, .. }) => seq,
        other => panic!("expected undecodable, got {other:?}"),
    }
}

#[test]
fn a_damaged_batch_is_undecodable_at_the_first_seq_wanted_by_both_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    log_of_several_batches(&path);
    let keys = batch_keys(&path);
    assert!(keys.len() >= 3, "{keys:?}");
    let (damaged, next) = (keys[1], keys[2]);
    // The version byte, the checksum, the count, an entry's seq, kind and payload length, a
    // payload byte, the last byte.
    for at in [0, 1, 5, 9, 17, 58, 100, -1] {
        let copy = dir.path().join(format!("damaged-{at}.redb"));
        std::fs::copy(&path, &copy).unwrap();
        flip(&copy, damaged, at);
        let log = Log::open_read_only(&copy).unwrap();
        let limits = PollLimits::default();
        let mut bytes = Vec::new();

        // Everything before the damaged batch is delivered; the poll ends before it.
        let batch = log.poll(0, 1000).unwrap();
        assert_eq!(batch.last_seq, damaged - 1, "flip at {at}");
        let packed = log.poll_packed(0, 1000, &limits, &mut bytes).unwrap();
        assert_eq!(packed.last_seq, damaged - 1);
        assert_eq!(packed.events as u64, damaged - 1);

        // A poll wanting an event of the damaged batch fails there, naming that event.
        for since in [damaged - 1, damaged + 5] {
            assert_eq!(
                undecodable_at(log.poll(since, 10)),
                since + 1,
                "flip at {at}"
            );
            assert_eq!(
                undecodable_at(log.poll_packed(since, 10, &limits, &mut bytes)),
                since + 1
            );
        }
        // After it, the log reads on.
        assert_eq!(log.poll(next - 1, 1).unwrap().last_seq, next);
    }
}

#[test]
fn tail_and_a_guest_name_the_damaged_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    log_of_several_batches(&path);
    let damaged = batch_keys(&path)[1];
    flip(&path, damaged, 200);

    let out = pulsewatch(&[
        "tail",
        "--db",
        path.to_str().unwrap(),
        "--since",
        &(damaged - 1).to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("event {damaged} cannot be decoded")),
        "{}",
        text(&out.stderr)
    );

    let log = Arc::new(Log::open_read_only(&path).unwrap());
    let harness = Harness::new(dir.path());
    let probe = harness.load_with("poll-once", &[&(damaged - 1).to_string(), "10"]);
    let outcome = harness.run_all(&[probe], &log).remove(0);
    assert!(outcome.result.is_ok(), "{outcome:?}");
    let line = |prefix| harness.lines.value("poll-once", prefix).unwrap();
    let named = format!("Undecodable({damaged})");
    assert!(line("error=").contains(&named), "{}", line("error="));
    assert!(
        line("packed-error=").contains(&named),
        "{}",
        line("packed-error=")
    );
}

/// A plugin built with the SDK that returns its error from `main` prints a sentence, not a
/// Rust type.
#[test]
fn a_plugins_error_from_the_sdk_prints_as_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    log_of_several_batches(&path);
    let damaged = batch_keys(&path)[1];
    flip(&path, damaged, 200);
    let log = Arc::new(Log::open_read_only(&path).unwrap());
    let harness = Harness::new(dir.path());
    let outcome = harness
        .run_all(&[harness.load("kind-counts")], &log)
        .remove(0);
    assert_eq!(outcome.result, Err(pulsewatch::Failure::Exit(1)));
    let said = harness
        .lines
        .of("kind-counts", pulsewatch::Stream::Stderr)
        .join("\n");
    assert!(
        said.starts_with(&format!(
            "Error: event {damaged} cannot be decoded: its stored batch is damaged"
        )),
        "{said}"
    );
    assert!(said.contains("`pulsewatch repair`"), "{said}");
    assert!(
        !said.contains("PollError") && !said.contains("Undecodable("),
        "{said}"
    );
}

/// The events of the log at `path` from seq `from`, read one poll at a time, until the end or
/// an error.
fn read_on(log: &Log, from: u64) -> (Vec<u64>, Option<ReadError>) {
    let mut seqs = Vec::new();
    let mut since = from;
    loop {
        match log.poll(since, 1000) {
            Ok(batch) if batch.events.is_empty() => return (seqs, None),
            Ok(batch) => {
                seqs.extend(batch.events.iter().map(|e| e.seq));
                since = batch.last_seq;
            }
            Err(e) => return (seqs, Some(e)),
        }
    }
}

#[test]
fn repair_names_the_damaged_range_and_salvage_keeps_every_other_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    log_of_several_batches(&path);
    let keys = batch_keys(&path);
    let (damaged, next) = (keys[1], keys[2]);
    flip(&path, damaged, 200);
    let db = path.to_str().unwrap();

    let repair = pulsewatch(&["repair", "--db", db]);
    let said = text(&repair.stderr);
    assert_eq!(repair.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("damaged: events {damaged}..{}", next - 1)),
        "{said}"
    );
    assert!(said.contains("--skip-damaged"), "the way forward: {said}");
    assert!(!said.contains("consistent"), "{said}");

    let plain = pulsewatch(&[
        "snapshot",
        "--db",
        db,
        "-o",
        dir.path().join("plain.redb").to_str().unwrap(),
    ]);
    assert_eq!(
        plain.status.code(),
        Some(2),
        "a plain snapshot refuses damage"
    );
    let salvaged = dir.path().join("salvaged.redb");
    let salvage = pulsewatch(&[
        "snapshot",
        "--db",
        db,
        "-o",
        salvaged.to_str().unwrap(),
        "--skip-damaged",
    ]);
    let said = text(&salvage.stderr);
    assert_eq!(salvage.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!(
            "left out, damaged: events {damaged}..{}",
            next - 1
        )),
        "{said}"
    );

    // Every other event, as it was; a reader reaching the gap is told.
    let original = Log::open_read_only(&path).unwrap();
    let copy = Log::open_read_only(&salvaged).unwrap();
    let (before, stopped) = read_on(&copy, 0);
    assert_eq!(before, (1..damaged).collect::<Vec<_>>());
    assert!(
        matches!(stopped, Some(ReadError::Lost { first, last }) if first == damaged && last == next - 1),
        "{stopped:?}"
    );
    let (after, end) = read_on(&copy, next - 1);
    assert!(end.is_none(), "{end:?}");
    assert_eq!(after, (next..=300).collect::<Vec<_>>());
    for seq in before.iter().chain(&after) {
        assert_eq!(
            copy.poll(seq - 1, 1).unwrap().events,
            original.poll(seq - 1, 1).unwrap().events,
            "event {seq}"
        );
    }
    assert_eq!(copy.len().unwrap(), 300 - (next - damaged));
    drop(copy);

    // The salvaged log is consistent, says what it lost, and goes on from the head.
    let repair = pulsewatch(&["repair", "--db", salvaged.to_str().unwrap()]);
    let said = text(&repair.stderr);
    assert_eq!(repair.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!("events {damaged}..{} were lost", next - 1)),
        "{said}"
    );
    let log = Log::open(&salvaged).unwrap();
    assert_eq!(
        log.append(&Change::new(ChangeKind::Created, 1, 2)).unwrap(),
        301
    );
}

/// The last batch holds the head: when it is damaged, the head is known from the timestamp
/// index, and a salvaged copy never gives the lost seqs again.
#[test]
fn a_damaged_last_batch_is_salvaged_without_giving_its_seqs_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    log_of_several_batches(&path);
    let last = *batch_keys(&path).last().unwrap();
    flip(&path, last, -1);
    let verified = Log::open_read_only(&path).unwrap().verify().unwrap();
    assert_eq!(verified.damaged.len(), 1, "{verified:?}");
    assert_eq!(verified.damaged[0].seqs, last..=300);

    let salvaged = dir.path().join("salvaged.redb");
    let info = Log::open_read_only(&path)
        .unwrap()
        .snapshot_skipping_damaged(&salvaged, 1..=u64::MAX, false)
        .unwrap();
    assert_eq!((info.events, info.last), (last - 1, Some(last - 1)));
    let log = Log::open(&salvaged).unwrap();
    assert!(matches!(
        log.poll(last - 1, 10),
        Ok(batch) if batch.events.is_empty()
    ));
    assert_eq!(
        log.append(&Change::new(ChangeKind::Created, 1, 2)).unwrap(),
        301
    );
    assert!(
        matches!(log.poll(last - 1, 10), Err(ReadError::Lost { first, last: 300 }) if first == last),
        "a reader at the gap is told once events follow it"
    );
}

/// A log of 600 events with payloads of many sizes, so that its batches end at no round seq.
fn log_of_uneven_batches(path: &Path) -> Log {
    let log = Log::create(path).unwrap();
    let changes: Vec<Change> = (0..600u64)
        .map(|i| {
            Change::new(ChangeKind::ALL[(i % 4) as usize], u128::from(i), 9)
                .at(i)
                .with_payload(vec![(i % 251) as u8; (i * 37 % 700) as usize])
        })
        .collect();
    log.append_batch(&changes).unwrap();
    log
}

/// Two batches side by side and one further on damaged; salvaged from the start and from inside
/// a batch: the copy checks out, holds every other event as it was, records one lost range for
/// the two that touch, and its readers are told at each gap.
#[test]
fn a_salvage_keeps_every_other_event_across_touching_and_separate_damage_from_any_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    drop(log_of_uneven_batches(&path));
    let keys = batch_keys(&path);
    assert!(keys.len() >= 8, "{keys:?}");
    for &key in &[keys[2], keys[3], keys[6]] {
        flip(&path, key, -1);
    }
    let original = Log::open_read_only(&path).unwrap();
    let lost = [keys[2]..=keys[4] - 1, keys[6]..=keys[7] - 1];
    for since in [0, keys[1] + 2] {
        let copy_path = dir.path().join(format!("salvaged-{since}.redb"));
        let info = original
            .snapshot_skipping_damaged(&copy_path, since + 1..=u64::MAX, false)
            .unwrap();
        assert_eq!(info.lost.len(), 3, "{:?}", info.lost);
        let copy = Log::open_read_only(&copy_path).unwrap();
        let verified = copy.verify().unwrap();
        assert!(verified.damaged.is_empty(), "{verified:?}");
        assert_eq!(verified.lost, lost, "touching ranges recorded as one");

        let mut cursor = since;
        for range in &lost {
            let (seqs, stopped) = read_on(&copy, cursor);
            assert_eq!(seqs, (cursor + 1..*range.start()).collect::<Vec<_>>());
            assert!(
                matches!(stopped, Some(ReadError::Lost { first, last }) if first == *range.start() && last == *range.end()),
                "{stopped:?}"
            );
            cursor = *range.end();
        }
        let (seqs, end) = read_on(&copy, cursor);
        assert!(end.is_none(), "{end:?}");
        assert_eq!(seqs, (cursor + 1..=600).collect::<Vec<_>>());
        for seq in (since + 1..=600).filter(|s| !lost.iter().any(|r| r.contains(s))) {
            assert_eq!(
                copy.poll(seq - 1, 1).unwrap().events,
                original.poll(seq - 1, 1).unwrap().events,
                "event {seq}"
            );
        }
    }
}

/// Through the command line, a damaged last batch is salvaged too: the copy's head is past the
/// lost events, and a writer goes on after them.
#[test]
fn the_command_line_salvages_a_damaged_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    drop(log_of_uneven_batches(&path));
    let last = *batch_keys(&path).last().unwrap();
    flip(&path, last, -1);
    let salvaged = dir.path().join("salvaged.redb");
    let out = pulsewatch(&[
        "snapshot",
        "--db",
        path.to_str().unwrap(),
        "-o",
        salvaged.to_str().unwrap(),
        "--skip-damaged",
    ]);
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!("left out, damaged: events {last}..600")),
        "{said}"
    );
    let log = Log::open(&salvaged).unwrap();
    assert_eq!(log.head().unwrap(), 600, "the head is past the lost events");
    assert_eq!(
        log.append(&Change::new(ChangeKind::Created, 1, 2)).unwrap(),
        601
    );
}

/// Writes a log as the previous format held it: one varint record per event, format 1.
fn previous_format_log(path: &Path, changes: &[Change]) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.insert(FORMAT_KEY, 1).unwrap();
        let mut events = txn.open_table(EVENTS_V1).unwrap();
        for (i, change) in changes.iter().enumerate() {
            events
                .insert(i as u64 + 1, codec::encode_v1(change).as_slice())
                .unwrap();
        }
    }
    txn.commit().unwrap();
}

#[test]
fn a_log_of_the_previous_format_is_refused_until_upgraded_and_then_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    let changes: Vec<Change> = (0..2_500u64)
        .map(|i| {
            Change::new(ChangeKind::ALL[(i % 4) as usize], u128::from(i), 3)
                .at(1_700_000_000_000 + i)
                .with_payload(format!("{{\"i\":{i}}}"))
        })
        .collect();
    previous_format_log(&path, &changes);

    let refused = Log::open_read_only(&path).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("format 1, this build reads format 3"),
        "{refused}"
    );
    let out = pulsewatch(&["tail", "--db", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("pulsewatch upgrade --db"), "{stderr}");

    let out = pulsewatch(&["upgrade", "--db", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("rewrote 2500 events"));
    let log = Log::open(&path).unwrap();
    let read = log.poll(0, 10_000).unwrap();
    assert_eq!(read.last_seq, 2_500);
    assert!(
        read.events
            .iter()
            .zip(&changes)
            .all(|(event, change)| event.change == *change)
    );
    assert_eq!(log.append(&changes[0]).unwrap(), 2_501, "it writes on");
    drop(log);
    let again = pulsewatch(&["upgrade", "--db", path.to_str().unwrap()]);
    assert!(text(&again.stderr).contains("already in this format"));
}

#[test]
fn a_log_of_format_2_is_refused_until_upgraded_which_builds_its_timestamp_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.redb");
    let log = Log::create(&path).unwrap();
    let changes: Vec<Change> = (0..100u64)
        .map(|i| Change::new(ChangeKind::Created, 1, 2).at(5_000 + i))
        .collect();
    log.append_batch(&changes).unwrap();
    drop(log);
    // Format 2 was this layout without the timestamp index.
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.delete_table(pulsewatch_log::schema::TIMES).unwrap();
    txn.open_table(META).unwrap().insert(FORMAT_KEY, 2).unwrap();
    txn.commit().unwrap();
    drop(db);

    let refused = Log::open(&path).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("format 2, this build reads format 3"),
        "{refused}"
    );
    let out = pulsewatch(&["upgrade", "--db", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = Log::open_read_only(&path).unwrap();
    assert_eq!(log.seq_at(5_050).unwrap(), 50);
    assert_eq!(log.poll(0, 1000).unwrap().events.len(), 100);
}
