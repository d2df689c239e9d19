//! Benchmark guest: reads the whole feed in batches and reports, with the guest's monotonic
//! clock, the median time of one poll (the call, lifting and lowering, and for the packed read
//! the SDK's check of the batch) and events/s, touching every event's seq and payload.
//! Arguments: batch limit (default 1000), how many caught-up polls to time (default 10000),
//! and `typed` (`poll`, owned records; the default) or `packed` (`poll-packed` through the
//! SDK's `Batch` and `EventRef` views).

use pulsewatch_guest::ChangePoller;
use pulsewatch_guest::bindings::pulse::watch::feed;
use std::time::Instant;

fn median_ns(samples: &mut [u128]) -> u128 {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or(0)
}

/// One poll from `since`: (events, cursor, checksum of what was touched).
fn poll(packed: bool, since: u64, limit: u32) -> (u64, u64, u64) {
    if packed {
        let mut poller = ChangePoller::from_sequence(since).with_batch_limit(limit as usize);
        let batch = poller.poll_batch().expect("poll-packed");
        let sum = batch.iter().fold(0u64, |s, e| {
            s.wrapping_add(e.seq() ^ e.payload().len() as u64)
        });
        (batch.len() as u64, poller.last_sequence(), sum)
    } else {
        let (events, seq) = feed::poll(since, limit).expect("poll");
        let sum = events
            .iter()
            .fold(0u64, |s, e| s.wrapping_add(e.seq ^ e.payload.len() as u64));
        (events.len() as u64, seq, sum)
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let limit: u32 = args.next().map_or(1000, |a| a.parse().expect("a limit"));
    let idle_polls: u64 = args.next().map_or(10_000, |a| a.parse().expect("a count"));
    let packed = match args.next().as_deref() {
        None | Some("typed") => false,
        Some("packed") => true,
        Some(other) => panic!("unknown mode {other}: typed or packed"),
    };

    let mut since = 0;
    let mut events_total = 0u64;
    let mut checksum = 0u64;
    let mut per_call = Vec::new();
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let (events, seq, sum) = poll(packed, since, limit);
        per_call.push(t.elapsed().as_nanos());
        if events == 0 {
            break;
        }
        checksum = checksum.wrapping_add(sum);
        events_total += events;
        since = seq;
    }
    let elapsed = start.elapsed();
    per_call.pop(); // the final, empty poll
    let median = median_ns(&mut per_call);

    let mut idle: Vec<u128> = (0..idle_polls)
        .map(|_| {
            let t = Instant::now();
            let (events, _, _) = poll(packed, since, limit);
            assert_eq!(events, 0);
            t.elapsed().as_nanos()
        })
        .collect();
    println!(
        "guest events={events_total} calls={} median_call_ns={median} events_per_s={:.0} caught_up_median_ns={} checksum={checksum}",
        per_call.len(),
        events_total as f64 / elapsed.as_secs_f64(),
        median_ns(&mut idle),
    );
}
