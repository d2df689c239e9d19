//! Calls `poll(since, limit)` once with its two arguments and prints what came back, then the
//! head, so that tests can check the feed contract through the component boundary.

use pulsewatch_guest::bindings::pulse::watch::feed;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric argument"))
        .collect();
    let [since, limit] = args[..] else {
        panic!("usage: poll-once SINCE LIMIT")
    };
    match feed::poll(since, u32::try_from(limit).expect("limit fits u32")) {
        Ok((events, seq)) => {
            let payload: usize = events.iter().map(|e| e.payload.len()).sum();
            let ordered = events.windows(2).all(|w| w[1].seq == w[0].seq + 1);
            println!(
                "events={} first={} last={} seq={seq} payload_bytes={payload} contiguous={ordered}",
                events.len(),
                events.first().map_or(0, |e| e.seq),
                events.last().map_or(0, |e| e.seq),
            );
        }
        Err(e) => println!("error={e}"),
    }
    println!("head={:?}", feed::head());
}
