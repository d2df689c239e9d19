//! Benchmark guest: reads the whole feed in batches and reports, with the guest's monotonic
//! clock, the median time of one `poll` call (lifting and lowering included) and events/s.
//! Arguments: batch limit (default 1000), then how many caught-up polls to time (default 10000).

use pulsewatch_guest::bindings::pulse::watch::feed;
use std::time::Instant;

fn median_ns(samples: &mut [u128]) -> u128 {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or(0)
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("numeric argument"));
    let limit = args.next().unwrap_or(1000) as u32;
    let idle_polls = args.next().unwrap_or(10_000);

    let mut since = 0;
    let mut events_total = 0u64;
    let mut checksum = 0u64;
    let mut per_call = Vec::new();
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let (events, seq) = feed::poll(since, limit).expect("poll");
        per_call.push(t.elapsed().as_nanos());
        if events.is_empty() {
            break;
        }
        // Touch every event so the work cannot be skipped.
        for e in &events {
            checksum = checksum.wrapping_add(e.seq ^ e.payload.len() as u64);
        }
        events_total += events.len() as u64;
        since = seq;
    }
    let elapsed = start.elapsed();
    per_call.pop(); // the final, empty poll
    let median = median_ns(&mut per_call);

    let mut idle: Vec<u128> = (0..idle_polls)
        .map(|_| {
            let t = Instant::now();
            let _ = feed::poll(since, limit).expect("poll");
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
