//! Well-behaved: waits for events that do not come, doing a little work every 100 ms, the way a
//! plugin flushing a buffer or renewing a lease does. Argument: loop iterations per round
//! (default 200,000). Prints the rounds it did when the feed closes.
use pulsewatch_guest::bindings::pulse::watch::feed;

fn main() {
    let work: u64 = std::env::args()
        .nth(1)
        .map_or(200_000, |a| a.parse().expect("number"));
    let head = feed::head().expect("head");
    let mut rounds = 0u64;
    let mut x = 1u64;
    // Until the host closes the feed.
    while feed::wait(head, 100).is_ok() {
        for _ in 0..work {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        rounds += 1;
    }
    println!("rounds: {rounds}");
}
