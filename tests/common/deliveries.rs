//! The `delivery-times` guest's lines (`delivered SEQ NANOS`, behind the host's `[plugin]`
//! prefix) read from a run's stdout, for the benchmarks that time wake-ups (included by path
//! from `host/benches/`).

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc;

/// Each delivery `stdout` reports, as (seq, wall-clock ns), on a channel fed by a thread.
pub fn deliveries(stdout: impl Read + Send + 'static) -> mpsc::Receiver<(u64, i128)> {
    let (tx, deliveries) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut words = line
                .split_whitespace()
                .skip_while(|w| *w != "delivered")
                .skip(1);
            let seq = words.next().and_then(|w| w.parse().ok());
            let at = words.next().and_then(|w| w.parse().ok());
            if let (Some(seq), Some(at)) = (seq, at)
                && tx.send((seq, at)).is_err()
            {
                break;
            }
        }
    });
    deliveries
}
