//! Poll throughput over 1,000,000 events, in one run, each figure the median of 5 passes, all
//! through read-only handles as reader processes use them:
//!
//! - a native reader of the seed's design (PulseDB's watch poller: one postcard record of about
//!   40 bytes per event, no payload, decoded into a `Vec` per poll), the reference;
//! - pulsewatch natively, typed (`Log::poll`: owned events) and packed (`Log::poll_packed`:
//!   stored bytes into one buffer);
//! - pulsewatch through a guest component, typed (`poll`: records lowered field by field) and
//!   packed (`poll-packed` read through the SDK's `Batch` and `EventRef` views), timed inside
//!   the guest, so lifting and lowering count;
//!
//! with 64-byte payloads and with empty ones, plus a caught-up poll for each. Run with
//! `cargo bench --bench poll`.

#[path = "common/poll_guest.rs"]
mod poll_guest;

use pulsewatch::{Change, ChangeKind, Log, PollLimits, Runtime, Source};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const EVENTS: u64 = 1_000_000;
const LIMIT: u32 = 1000;
const CAUGHT_UP_POLLS: usize = 10_000;
/// Passes over the whole log; each figure is the median of the passes' figures, so that one
/// disturbed pass on a shared machine does not decide the result.
const PASSES: usize = 5;

fn median<T: PartialOrd + Copy>(mut samples: Vec<T>) -> T {
    samples.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

/// Median ns per call, events/s and median caught-up ns of one reader, over [`PASSES`] passes.
#[derive(Clone, Copy)]
struct Figures {
    per_call_ns: f64,
    events_per_s: f64,
    caught_up_ns: f64,
}

/// Times a native reader: `poll(since)` returns (events, next cursor). A first pass, not
/// counted, warms the storage engine's cache, as a reader that has been running has.
fn native(mut poll: impl FnMut(u64) -> (usize, u64)) -> Figures {
    let passes: Vec<(f64, f64)> = (0..=PASSES)
        .map(|_| {
            let mut since = 0;
            let mut per_call = Vec::with_capacity((EVENTS / u64::from(LIMIT)) as usize);
            let start = Instant::now();
            loop {
                let t = Instant::now();
                let (events, next) = poll(since);
                per_call.push(t.elapsed().as_nanos() as f64);
                if events == 0 {
                    break;
                }
                since = next;
            }
            let elapsed = start.elapsed();
            per_call.pop();
            assert_eq!(since, EVENTS);
            (median(per_call), EVENTS as f64 / elapsed.as_secs_f64())
        })
        .skip(1)
        .collect();
    let caught_up = median(
        (0..CAUGHT_UP_POLLS)
            .map(|_| {
                let t = Instant::now();
                assert_eq!(poll(EVENTS).0, 0);
                t.elapsed().as_nanos() as f64
            })
            .collect(),
    );
    Figures {
        per_call_ns: median(passes.iter().map(|p| p.0).collect()),
        events_per_s: median(passes.iter().map(|p| p.1).collect()),
        caught_up_ns: caught_up,
    }
}

fn fill(path: &Path, payload: usize) {
    let log = Log::create(path).unwrap();
    for start in (0..EVENTS).step_by(10_000) {
        let batch: Vec<Change> = (start..start + 10_000)
            .map(|i| {
                Change::new(
                    ChangeKind::ALL[(i % 4) as usize],
                    u128::from(i),
                    u128::from(i % 16),
                )
                .with_payload(vec![(i % 251) as u8; payload])
            })
            .collect();
        log.append_batch(&batch).unwrap();
    }
}

/// The seed's design, rebuilt for comparison: a redb table of one postcard record per event.
mod seed {
    use super::{EVENTS, LIMIT};
    use pulsewatch::redb::{self, ReadOnlyDatabase, ReadableDatabase, TableDefinition};
    use std::path::Path;

    const WATCH_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("watch_events");

    /// What the seed's poller returns for each event: about 40 bytes encoded.
    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct WatchEvent {
        entity: [u8; 16],
        collective: [u8; 16],
        event_type: u8,
        timestamp_ms: u64,
    }

    fn builder() -> redb::Builder {
        let mut builder = redb::Builder::new();
        builder.set_concurrency_mode(redb::ConcurrencyMode::SingleWriter);
        builder
    }

    pub fn fill(path: &Path) {
        let db = builder().create(path).unwrap();
        let mut seq = 0;
        while seq < EVENTS {
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(WATCH_EVENTS).unwrap();
                for _ in 0..10_000 {
                    seq += 1;
                    let event = WatchEvent {
                        entity: (u128::from(seq)).to_be_bytes(),
                        collective: (u128::from(seq % 16)).to_be_bytes(),
                        event_type: (seq % 4) as u8,
                        timestamp_ms: 1_700_000_000_000 + seq,
                    };
                    let record = postcard::to_allocvec(&event).unwrap();
                    table.insert(seq, record.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
    }

    pub fn open(path: &Path) -> ReadOnlyDatabase {
        builder().open_read_only(path).unwrap()
    }

    /// The seed's `poll`: the records after `since`, decoded, and the new cursor.
    pub fn poll(db: &ReadOnlyDatabase, since: u64) -> (Vec<WatchEvent>, u64) {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(WATCH_EVENTS).unwrap();
        let mut events = Vec::new();
        let mut last = since;
        for entry in table.range(since + 1..).unwrap().take(LIMIT as usize) {
            let (seq, record) = entry.unwrap();
            events.push(postcard::from_bytes(record.value()).unwrap());
            last = seq.value();
        }
        (events, last)
    }
}

/// Times the poll-bench guest in `mode` (`typed` or `packed`) over `log`.
fn guest(runtime: &Runtime, dir: &Path, log: &Arc<Log>, mode: &str) -> Figures {
    let source = Source::Log(log.clone());
    let settings = (LIMIT, CAUGHT_UP_POLLS, mode);
    let lines = poll_guest::runs(runtime, dir, &source, settings, PASSES, EVENTS);
    let figure = |name| median(lines.iter().map(|l| poll_guest::field(l, name)).collect());
    Figures {
        per_call_ns: figure("median_call_ns"),
        events_per_s: figure("events_per_s"),
        caught_up_ns: figure("caught_up_median_ns"),
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and wants no run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let seed_path = dir.path().join("seed.redb");
    seed::fill(&seed_path);
    let seed_db = seed::open(&seed_path);
    let seed = native(|since| {
        let (events, next) = seed::poll(&seed_db, since);
        (events.len(), next)
    });

    let runtime = Runtime::new().unwrap();
    let mut rows: Vec<(&str, [Figures; 2])> = Vec::new();
    let mut by_payload = Vec::new();
    let mut checksums = Vec::new();
    for payload in [64, 0] {
        let path = dir.path().join(format!("events-{payload}.redb"));
        fill(&path, payload);
        let log = Arc::new(Log::open_read_only(&path).unwrap());
        let limits = PollLimits::default();
        let typed = native(|since| {
            let batch = log.poll(since, LIMIT).unwrap();
            (batch.events.len(), batch.last_seq)
        });
        let mut buffer = Vec::new();
        let packed = native(|since| {
            buffer.clear();
            let read = log.poll_packed(since, LIMIT, &limits, &mut buffer).unwrap();
            (read.events, read.last_seq)
        });
        // The checksums' share: CRC32C over the bytes one poll of 1000 events returns (a poll
        // checks a little more: the whole of the batch it starts in).
        buffer.clear();
        log.poll_packed(0, LIMIT, &limits, &mut buffer).unwrap();
        let crc = median(
            (0..1000)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(crc32c::crc32c(std::hint::black_box(&buffer)));
                    t.elapsed().as_nanos() as f64
                })
                .collect(),
        );
        checksums.push((buffer.len(), crc));
        let guest_typed = guest(&runtime, dir.path(), &log, "typed");
        let guest_packed = guest(&runtime, dir.path(), &log, "packed");
        by_payload.push([typed, packed, guest_typed, guest_packed]);
    }
    for (i, name) in [
        "native typed",
        "native packed",
        "guest typed",
        "guest packed (views)",
    ]
    .into_iter()
    .enumerate()
    {
        rows.push((name, [by_payload[0][i], by_payload[1][i]]));
    }

    println!(
        "poll(since, {LIMIT}) over {EVENTS} events, median of {PASSES} passes, read-only handles:"
    );
    println!(
        "  {:<22} {:>28}   {:>28}",
        "", "64-byte payloads", "empty payloads"
    );
    println!(
        "  {:<22} {:>9} {:>8} {:>9}   {:>9} {:>8} {:>9}",
        "", "µs/call", "M ev/s", "caught up", "µs/call", "M ev/s", "caught up"
    );
    let cells = |f: &Figures| {
        format!(
            "{:>9.1} {:>8.2} {:>7.2}µs",
            f.per_call_ns / 1e3,
            f.events_per_s / 1e6,
            f.caught_up_ns / 1e3
        )
    };
    println!(
        "  {:<22} {:>28}   {}",
        "seed design (postcard)",
        "(no payloads)",
        cells(&seed)
    );
    for (name, [with, without]) in &rows {
        println!("  {name:<22} {}   {}", cells(with), cells(without));
    }
    let ratio = |a: &Figures, b: &Figures| a.per_call_ns / b.per_call_ns;
    let [with, without] = rows[3].1;
    println!(
        "  guest packed / seed design, per call: {:.2}x (64-byte payloads), {:.2}x (empty)",
        ratio(&with, &seed),
        ratio(&without, &seed)
    );
    println!(
        "  guest/native, per call: typed {:.2}x, packed {:.2}x (64-byte payloads)",
        ratio(&rows[2].1[0], &rows[0].1[0]),
        ratio(&rows[3].1[0], &rows[1].1[0])
    );
    for ((bytes, ns), payload) in checksums.iter().zip(["64-byte payloads", "empty payloads"]) {
        println!(
            "  checksums ({payload}): CRC32C of the {} KiB one poll returns takes {:.1} µs",
            bytes >> 10,
            ns / 1e3
        );
    }
    println!("  (whole run {:.0} s)", started.elapsed().as_secs_f64());
}
