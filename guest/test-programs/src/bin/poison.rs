//! Faulty on one event: reads the feed one event at a time, committing each, and fails on the
//! event with the seq given as its argument, every time.

use pulsewatch_guest::{Batch, Checkpoint, Error, Plugin};

struct Poisoned {
    poison: u64,
}

impl Plugin for Poisoned {
    fn restore(_: Option<&[u8]>) -> Result<Self, Error> {
        let poison = std::env::args()
            .nth(1)
            .ok_or("usage: poison SEQ")?
            .parse()?;
        Ok(Poisoned { poison })
    }

    fn process(&mut self, events: &Batch) -> Result<(), Error> {
        for event in events {
            if event.seq() == self.poison {
                return Err(format!("cannot process event {}", event.seq()).into());
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
}

fn main() -> Result<(), Error> {
    pulsewatch_guest::run_with::<Poisoned>(&Checkpoint::in_state_dir(), 1)
}
