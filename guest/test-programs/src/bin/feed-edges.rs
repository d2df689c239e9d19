//! Calls every feed function with the arguments at the edges of their ranges (0, 1, the head,
//! one past it, `u64::MAX`; limits 0, 1 and `u32::MAX`) and prints one line per call, so that a
//! test can hold each answer against the contract in wit/feed.wit:
//!
//! `poll SINCE LIMIT -> ok N events, seq S[, seqs FIRST..=LAST]` or `... -> err ERROR`
//!
//! The seqs are printed only when they are gap-free and end at the returned cursor; otherwise
//! the line says `seqs out of order` and the test fails on it.

use pulsewatch_guest::bindings::pulse::watch::feed;
use pulsewatch_guest::{Batch, PollError, WaitError};
use std::fmt::Debug;

/// How a batch's seqs read, for its line: the range they cover if they are contiguous and end
/// at the cursor.
fn seqs(seqs: &[u64], cursor: u64) -> String {
    let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
        return String::new();
    };
    let contiguous = seqs.windows(2).all(|w| w[0].checked_add(1) == Some(w[1]));
    if contiguous && last == cursor {
        format!(", seqs {first}..={last}")
    } else {
        ", seqs out of order".to_owned()
    }
}

fn answer<T, E: Debug>(result: Result<T, E>, ok: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(value) => format!("ok {}", ok(value)),
        Err(e) => format!("err {e:?}"),
    }
}

fn main() {
    // The SDK's errors: their `Debug` is the variant alone (`Closed`), where the bindings' spell
    // out the contract's documentation.
    let head = feed::head().map_err(PollError::from);
    println!("head -> {}", answer(head.clone(), |h| h.to_string()));
    // Without a head the edges around it cannot be placed; 0 keeps every other call meaningful.
    let head = head.unwrap_or(0);

    let sinces = [0, 1, head, head.saturating_add(1), u64::MAX];
    for since in sinces {
        for limit in [0, 1, u32::MAX] {
            let line = answer(
                feed::poll(since, limit).map_err(PollError::from),
                |(events, cursor)| {
                    let all: Vec<u64> = events.iter().map(|e| e.seq).collect();
                    format!("{} events, seq {cursor}{}", all.len(), seqs(&all, cursor))
                },
            );
            println!("poll {since} {limit} -> {line}");

            let line = match feed::poll_packed(since, limit) {
                // Bytes that are not whole entries are an error of their own.
                Ok((bytes, cursor)) => answer(Batch::from_bytes(bytes), |batch| {
                    let all: Vec<u64> = batch.iter().map(|e| e.seq()).collect();
                    format!("{} events, seq {cursor}{}", all.len(), seqs(&all, cursor))
                }),
                Err(e) => format!("err {:?}", PollError::from(e)),
            };
            println!("poll-packed {since} {limit} -> {line}");
        }
    }

    for timestamp_ms in [0, 1, u64::MAX] {
        let line = answer(feed::seq_at(timestamp_ms).map_err(PollError::from), |seq| {
            seq.to_string()
        });
        println!("seq-at {timestamp_ms} -> {line}");
    }

    for since in [u64::MAX, 0] {
        let line = answer(feed::wait(since, 0).map_err(WaitError::from), |head| {
            head.to_string()
        });
        println!("wait {since} 0 -> {line}");
    }
}
