//! Faulty, then well: counts its starts in /state and fails (after reading a batch) on its
//! first two; from its third start on it runs like `seq-check`, printing what it received.

use pulsewatch_guest::{Batch, ChangePoller, Error, Plugin};

const STARTS: &str = "/state/starts";

#[derive(Default)]
struct Counting {
    received: u64,
}

impl Plugin for Counting {
    fn restore(_: Option<&[u8]>) -> Result<Self, Error> {
        Ok(Counting::default())
    }

    fn process(&mut self, events: &Batch) -> Result<(), Error> {
        self.received += events.len() as u64;
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    fn finish(&mut self, cursor: u64) -> Result<(), Error> {
        println!("received: {} cursor: {cursor}", self.received);
        Ok(())
    }
}

fn main() -> Result<(), Error> {
    let starts: u64 = std::fs::read_to_string(STARTS)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
        + 1;
    std::fs::write(STARTS, starts.to_string())?;
    println!("start {starts}");
    if starts < 3 {
        let batch = ChangePoller::new().poll_batch()?;
        return Err(format!("failing on start {starts}, after {} events", batch.len()).into());
    }
    pulsewatch_guest::run::<Counting>()
}
