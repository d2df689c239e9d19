//! Commits that break the output contract's rules, one after the other, each printed with the
//! host's answer; one valid commit among them. Granted one output, `out`, over a log of 10.

use pulsewatch_guest::bindings::pulse::watch::output as raw;
use pulsewatch_guest::{ChangeKind, ChangePoller, CommitError, Emitter, Error, Uuid};

fn say(case: &str, result: Result<(), CommitError>) {
    match result {
        Ok(()) => println!("{case}: committed"),
        Err(e) => println!("{case}: {e}"),
    }
}

/// A fresh emitter with one event per seq of `from`, committed at `cursor`.
fn attempt(from: &[u64], cursor: u64) -> Result<(), CommitError> {
    let mut out = Emitter::new();
    let output = out.output("out").expect("out is granted");
    for &seq in from {
        let id = Uuid { hi: 0, lo: seq };
        out.emit(output, seq, ChangeKind::Created, id, id, *b"x");
    }
    out.commit(cursor, b"")
}

fn main() -> Result<(), Error> {
    let mut poller = ChangePoller::new();
    let events = poller.poll_batch()?;
    assert_eq!(events.len(), 10);
    say("ahead", attempt(&[], 11));
    say("late", attempt(&[10], 5));
    say("disorder", attempt(&[3, 2], 5));
    let unknown = raw::Derived {
        output: 7,
        from: 1,
        kind: ChangeKind::Created,
        entity: Uuid { hi: 0, lo: 1 },
        collective: Uuid { hi: 0, lo: 1 },
        payload: Vec::new(),
    };
    say(
        "unknown output",
        raw::commit(1, b"", &[unknown]).map_err(CommitError::from),
    );
    attempt(&[4], 4)?;
    println!("ok: committed through 4");
    say("behind", attempt(&[], 3));
    say("again", attempt(&[4], 5));
    Ok(())
}
