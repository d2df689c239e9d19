//! Prints, for each event it receives, `delivered SEQ NANOS`: the wall-clock time (ns since the
//! Unix epoch) at which the event reached the plugin, for the latency benchmarks. It follows
//! through the SDK's runner, as a plugin would. With the argument `--at-end` it keeps the times
//! and prints them when its feed closes, so that nothing is printed while events arrive.

use pulsewatch_guest::{Batch, Error, Plugin};
use std::time::{SystemTime, UNIX_EPOCH};

struct DeliveryTimes {
    /// Kept for the end, when printing as they come is not wanted.
    kept: Option<Vec<(u64, u128)>>,
}

impl Plugin for DeliveryTimes {
    fn restore(_: Option<&[u8]>) -> Result<Self, Error> {
        let at_end = std::env::args().any(|a| a == "--at-end");
        Ok(DeliveryTimes {
            kept: at_end.then(Vec::new),
        })
    }

    fn process(&mut self, events: &Batch) -> Result<(), Error> {
        // One clock read per batch: the events of a batch arrived together.
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        for event in events {
            match &mut self.kept {
                Some(kept) => kept.push((event.seq(), now)),
                None => println!("delivered {} {now}", event.seq()),
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    fn finish(&mut self, _cursor: u64) -> Result<(), Error> {
        for (seq, at) in self.kept.take().unwrap_or_default() {
            println!("delivered {seq} {at}");
        }
        Ok(())
    }
}

fn main() -> Result<(), Error> {
    pulsewatch_guest::run::<DeliveryTimes>()
}
