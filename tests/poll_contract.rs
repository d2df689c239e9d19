//! The poll contract of wit/feed.wit, natively and through a guest component.

mod common;

use common::{Harness, change, log_with};
use pulsewatch::{Change, ChangeKind, Limits, Log, PollLimits};

fn seqs(log: &Log, since: u64, limit: u32) -> (Vec<u64>, u64) {
    let batch = log.poll(since, limit).unwrap();
    (batch.events.iter().map(|e| e.seq).collect(), batch.last_seq)
}

#[test]
fn an_empty_log_returns_nothing_and_since() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 0);
    assert_eq!(seqs(&log, 0, 100), (vec![], 0));
    assert_eq!(seqs(&log, 42, 100), (vec![], 42));
}

#[test]
fn since_at_beyond_and_far_beyond_the_head_returns_nothing_and_since() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 10);
    assert_eq!(seqs(&log, 10, 100), (vec![], 10));
    assert_eq!(seqs(&log, 11, 100), (vec![], 11));
    assert_eq!(seqs(&log, u64::MAX - 1, 100), (vec![], u64::MAX - 1));
    assert_eq!(seqs(&log, u64::MAX, 100), (vec![], u64::MAX));
}

#[test]
fn limit_zero_returns_nothing_and_since() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 10);
    assert_eq!(seqs(&log, 3, 0), (vec![], 3));
}

#[test]
fn events_come_in_order_after_since_and_the_seq_is_the_last_returned() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 50);
    assert_eq!(seqs(&log, 0, 3), (vec![1, 2, 3], 3));
    assert_eq!(seqs(&log, 47, 10), (vec![48, 49, 50], 50));
    let batch = log.poll(9, 5).unwrap();
    for (i, event) in batch.events.iter().enumerate() {
        assert_eq!(
            event.change,
            change(9 + i as u64),
            "event {} holds what was appended",
            event.seq
        );
    }
}

#[test]
fn limit_above_the_clamp_is_lowered_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 12_000);
    let batch = log.poll(0, u32::MAX).unwrap();
    assert_eq!(
        batch.events.len(),
        PollLimits::default().max_events as usize
    );
    assert_eq!(batch.last_seq, 10_000);
    let tight = PollLimits {
        max_events: 5,
        ..PollLimits::default()
    };
    assert_eq!(log.poll_within(100, 1000, &tight).unwrap().last_seq, 105);
}

#[test]
fn the_byte_budget_ends_a_batch_but_never_starves_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("db")).unwrap();
    let big = |n: usize| Change::new(ChangeKind::Updated, 1, 1).with_payload(vec![7; n]);
    log.append_batch(&[big(300), big(300), big(300), big(5_000), big(1)])
        .unwrap();
    let budget = PollLimits {
        max_bytes: 700,
        ..PollLimits::default()
    };
    let batch = log.poll_within(0, 100, &budget).unwrap();
    assert_eq!(
        batch.last_seq, 2,
        "a third 300-byte payload would pass 700 bytes"
    );
    let batch = log.poll_within(3, 100, &budget).unwrap();
    assert_eq!(
        batch.last_seq, 4,
        "an event larger than the budget comes alone"
    );
    assert_eq!(batch.events[0].change.payload.len(), 5_000);
    let exact = PollLimits {
        max_bytes: 600,
        ..PollLimits::default()
    };
    let batch = log.poll_within(0, 100, &exact).unwrap();
    assert_eq!(
        batch.last_seq, 2,
        "a batch that reaches the budget exactly ends there"
    );
}

/// The same contract seen by a guest: the host's clamp and seq reach it through the component
/// boundary unchanged.
#[test]
fn a_guest_sees_the_same_contract() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 12_000);
    let harness = Harness::with_limits(dir.path(), Limits::default());
    // The probe's `events=` line for poll(since, limit), and its `head=` line.
    let ask = |since: u64, limit: u64| {
        let probe = harness.load_with("poll-once", &[&since.to_string(), &limit.to_string()]);
        let outcome = harness
            .run_all(std::slice::from_ref(&probe), &log)
            .remove(0);
        assert!(outcome.result.is_ok(), "{outcome:?}");
        let line = |prefix| harness.lines.value("poll-once", prefix).unwrap();
        assert_eq!(
            line("packed="),
            line("events="),
            "the packed read says the same"
        );
        assert_eq!(line("same="), "true", "field for field");
        (line("events="), line("head="))
    };
    let (events, head) = ask(0, 3);
    assert!(events.starts_with("3 first=1 last=3 seq=3 "), "{events}");
    assert_eq!(head, "Ok(12000)");
    assert!(ask(5, 0).0.starts_with("0 first=0 last=0 seq=5 "));
    assert!(ask(12_000, 10).0.starts_with("0 first=0 last=0 seq=12000 "));
    let (events, _) = ask(u64::MAX, 10);
    assert!(events.starts_with(&format!("0 first=0 last=0 seq={} ", u64::MAX)));
    let (clamped, _) = ask(0, u64::from(u32::MAX));
    assert!(
        clamped.starts_with("10000 first=1 last=10000 seq=10000 "),
        "{clamped}"
    );
    assert!(clamped.ends_with("contiguous=true"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Any log, written in any pattern of appends, any request, any limits: the typed and the
    /// packed read return what the contract's plain reading says, and the same.
    #[test]
    fn every_poll_matches_the_contract(
        appends in proptest::collection::vec(proptest::collection::vec(0usize..2_000, 1..8), 0..20),
        since in 0u64..130,
        limit in 0u32..150,
        max_events in 1u32..120,
        max_bytes in 1usize..60_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path().join("db")).unwrap();
        let mut payload_sizes = Vec::new();
        for sizes in &appends {
            let changes: Vec<Change> = sizes
                .iter()
                .map(|&n| {
                    let i = payload_sizes.len() + sizes.len();
                    Change::new(ChangeKind::ALL[i % 4], i as u128, 2).at(i as u64).with_payload(vec![i as u8; n])
                })
                .collect();
            payload_sizes.extend_from_slice(sizes);
            log.append_batch(&changes).unwrap();
        }
        let limits = PollLimits { max_events, max_bytes };
        let batch = log.poll_within(since, limit, &limits).unwrap();

        // The model: events after `since`, in order, up to the clamped limit, ending once the
        // payload bytes reach the budget or before the event that would pass it, unless it is
        // the first.
        let mut expected = Vec::new();
        let mut bytes = 0;
        for seq in since + 1..=payload_sizes.len() as u64 {
            let size = payload_sizes[seq as usize - 1];
            if expected.len() == limit.min(max_events) as usize
                || (!expected.is_empty() && (bytes >= max_bytes || bytes + size > max_bytes))
            {
                break;
            }
            bytes += size;
            expected.push(seq);
        }
        let got: Vec<u64> = batch.events.iter().map(|e| e.seq).collect();
        proptest::prop_assert_eq!(&got, &expected);
        proptest::prop_assert_eq!(batch.last_seq, expected.last().copied().unwrap_or(since));
        let sizes: Vec<usize> = batch.events.iter().map(|e| e.change.payload.len()).collect();
        let expected_sizes: Vec<usize> = expected.iter().map(|&s| payload_sizes[s as usize - 1]).collect();
        proptest::prop_assert_eq!(sizes, expected_sizes);

        let mut packed = Vec::new();
        let read = log.poll_packed(since, limit, &limits, &mut packed).unwrap();
        proptest::prop_assert_eq!(read.last_seq, batch.last_seq);
        proptest::prop_assert_eq!(read.events, batch.events.len());
        let mut entries = pulsewatch_log::codec::Entries::new(&packed);
        let unpacked: Vec<pulsewatch::Event> = entries.by_ref().map(|e| e.to_event()).collect();
        proptest::prop_assert!(entries.error().is_none());
        proptest::prop_assert_eq!(unpacked, batch.events);
    }
}
