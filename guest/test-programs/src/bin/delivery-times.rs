//! Prints, for each event it receives, `delivered SEQ NANOS`: the wall-clock time (ns since the
//! Unix epoch) at which the event reached the plugin, for the latency benchmark. It follows
//! through the SDK's runner, as a plugin would.

use pulsewatch_guest::{Batch, Error, Plugin};
use std::time::{SystemTime, UNIX_EPOCH};

struct DeliveryTimes;

impl Plugin for DeliveryTimes {
    fn restore(_: Option<&[u8]>) -> Result<Self, Error> {
        Ok(DeliveryTimes)
    }

    fn process(&mut self, events: &Batch) -> Result<(), Error> {
        // One clock read per batch: the events of a batch arrived together.
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        for event in events {
            println!("delivered {} {now}", event.seq());
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
}

fn main() -> Result<(), Error> {
    pulsewatch_guest::run::<DeliveryTimes>()
}
