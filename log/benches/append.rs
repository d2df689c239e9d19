//! Durable append throughput: one event per transaction, 100 per transaction, and 8 threads
//! appending single events at once (group commit), each blocking on its append or keeping
//! several in flight with `Log::submit`. Every figure counts events that were durable
//! (fsync'd) when their append returned. Run with `cargo bench --bench append`.

use pulsewatch_log::{Change, ChangeKind, Log};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const THREADS: u64 = 8;
/// How many submitted appends each pipelining thread keeps waiting for durability.
const WINDOW: usize = 32;

fn change(i: u64) -> Change {
    Change::new(ChangeKind::ALL[(i % 4) as usize], u128::from(i), 7).with_payload(vec![b'x'; 64])
}

/// Runs `append` until `time` has passed and returns events per second.
fn rate(time: Duration, mut append: impl FnMut(u64) -> u64) -> f64 {
    let started = Instant::now();
    let mut events = 0;
    while started.elapsed() < time {
        events += append(events);
    }
    events as f64 / started.elapsed().as_secs_f64()
}

/// `THREADS` threads append single events for `time`, each with up to `window` of them in
/// flight (1: each append blocks until durable). Checks that every seq was given once and each
/// thread's in its order, and returns durable events per second.
fn grouped(log: &Log, window: usize, time: Duration) -> f64 {
    let started = Instant::now();
    let seqs: Vec<Vec<u64>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let mut seqs = Vec::new();
                    let mut in_flight = VecDeque::with_capacity(window);
                    while started.elapsed() < time {
                        in_flight.push_back(log.submit(&change(t)).unwrap());
                        if in_flight.len() == window {
                            seqs.push(in_flight.pop_front().unwrap().wait().unwrap());
                        }
                    }
                    seqs.extend(in_flight.into_iter().map(|p| p.wait().unwrap()));
                    seqs
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    assert!(seqs.iter().all(|t| t.is_sorted()), "each thread's order");
    let mut all: Vec<u64> = seqs.concat();
    all.sort_unstable();
    let total = all.len() as u64;
    assert!(all.iter().copied().eq(1..=total), "every seq once, no gap");
    assert_eq!(log.head().unwrap(), total);
    total as f64 / elapsed
}

fn report(what: &str, rate: f64) {
    println!("  {what:<44} {rate:>9.0} events/s");
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and wants no run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let time = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    println!(
        "durable appends of 64-byte-payload events, {} s each:",
        time.as_secs()
    );

    let log = Log::create(dir.path().join("single.redb")).unwrap();
    let single = rate(time, |i| {
        log.append(&change(i)).unwrap();
        1
    });
    report("1 per transaction, 1 thread", single);

    let log = Log::create(dir.path().join("batched.redb")).unwrap();
    let batched = rate(time, |i| {
        let batch: Vec<Change> = (i..i + 100).map(change).collect();
        log.append_batch(&batch).unwrap();
        100
    });
    report("100 per transaction, 1 thread", batched);

    let blocking = grouped(
        &Log::create(dir.path().join("grouped.redb")).unwrap(),
        1,
        time,
    );
    report(
        &format!("1 per append, {THREADS} threads, blocking"),
        blocking,
    );
    let pipelined = grouped(
        &Log::create(dir.path().join("pipelined.redb")).unwrap(),
        WINDOW,
        time,
    );
    report(
        &format!("1 per append, {THREADS} threads, {WINDOW} in flight each"),
        pipelined,
    );
}
