//! Hostile: reads the same events again and again, from seq 0, hoping that each delivery hands
//! out a fresh CPU budget. Prints the rounds done so far.
use pulsewatch_guest::bindings::pulse::watch::feed;

fn main() {
    for round in 1u64.. {
        let (events, _) = feed::poll_packed(0, 1000).expect("poll");
        assert!(!events.is_empty(), "the log holds events");
        println!("rounds: {round}");
    }
}
