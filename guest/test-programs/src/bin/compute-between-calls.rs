//! Hostile: computes hard, then makes a feed call that delivers nothing, forever, hoping each
//! call hands out a fresh CPU budget. Argument: `head` (default), `poll` (an empty poll at the
//! head) or `wait` (a wait that times out or is refused). Prints the rounds done so far.
use pulsewatch_guest::bindings::pulse::watch::feed;

fn main() {
    let call = std::env::args().nth(1).unwrap_or_else(|| "head".into());
    let head = feed::head().expect("head");
    let mut x = 1u64;
    for round in 1u64.. {
        // Well within one budget of the tests' (100 ms of CPU), so that only refills matter.
        for _ in 0..1_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        match call.as_str() {
            "head" => drop(feed::head()),
            "poll" => drop(feed::poll(head, 10)),
            "wait" => drop(feed::wait(head, 1)),
            other => panic!("unknown call {other}"),
        }
        println!("rounds: {round}");
    }
}
