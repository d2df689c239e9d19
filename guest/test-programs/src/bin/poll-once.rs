//! Calls `poll(since, limit)` and `poll-packed(since, limit)` once each with its two arguments
//! and prints what came back, then the head, so that tests can check the feed contract, in both
//! forms, through the component boundary.

use pulsewatch_guest::bindings::pulse::watch::feed;
use pulsewatch_guest::{Batch, Event};

fn describe(events: &[Event], seq: u64) -> String {
    let payload: usize = events.iter().map(|e| e.payload.len()).sum();
    let ordered = events.windows(2).all(|w| w[1].seq == w[0].seq + 1);
    format!(
        "{} first={} last={} seq={seq} payload_bytes={payload} contiguous={ordered}",
        events.len(),
        events.first().map_or(0, |e| e.seq),
        events.last().map_or(0, |e| e.seq),
    )
}

fn same(a: &Event, b: &Event) -> bool {
    let fields = |e: &Event| {
        (
            e.seq,
            e.kind.as_str(),
            e.entity.as_u128(),
            e.collective.as_u128(),
            e.timestamp_ms,
            e.payload.clone(),
        )
    };
    fields(a) == fields(b)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric argument"))
        .collect();
    let [since, limit] = args[..] else {
        panic!("usage: poll-once SINCE LIMIT")
    };
    let limit = u32::try_from(limit).expect("limit fits u32");
    let typed = feed::poll(since, limit);
    match &typed {
        Ok((events, seq)) => println!("events={}", describe(events, *seq)),
        Err(e) => println!("error={e}"),
    }
    let packed = feed::poll_packed(since, limit);
    match &packed {
        Ok((bytes, seq)) => {
            let events = Batch::from_bytes(bytes.clone())
                .expect("whole entries")
                .to_events();
            println!("packed={}", describe(&events, *seq));
            let same = typed.as_ref().is_ok_and(|(typed, typed_seq)| {
                typed.len() == events.len()
                    && typed.iter().zip(&events).all(|(a, b)| same(a, b))
                    && typed_seq == seq
            });
            println!("same={same}");
        }
        Err(e) => println!("packed-error={e}"),
    }
    println!("head={:?}", feed::head());
}
