//! Checks delivery: every batch must start right after the cursor and be gap-free. Prints what
//! it received in this run. Argument: the batch limit (default 1000).

use pulsewatch_guest::{Batch, Error, Plugin};

#[derive(Default)]
struct SeqCheck {
    next: Option<u64>,
    first: Option<u64>,
    received: u64,
}

impl Plugin for SeqCheck {
    fn restore(state: Option<&[u8]>) -> Result<Self, Error> {
        let resumed_at: Option<u64> = match state {
            Some(s) => Some(std::str::from_utf8(s)?.parse()?),
            None => None,
        };
        println!("resumed at: {}", resumed_at.unwrap_or(0));
        Ok(SeqCheck {
            next: Some(resumed_at.unwrap_or(0) + 1),
            ..Default::default()
        })
    }

    fn process(&mut self, events: &Batch) -> Result<(), Error> {
        for event in events {
            if Some(event.seq()) != self.next {
                return Err(format!("expected seq {:?}, got {}", self.next, event.seq()).into());
            }
            self.first.get_or_insert(event.seq());
            self.next = Some(event.seq() + 1);
            self.received += 1;
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        (self.next.unwrap_or(1) - 1).to_string().into_bytes()
    }

    fn finish(&mut self, cursor: u64) -> Result<(), Error> {
        println!(
            "received: {} first: {} last: {} cursor: {cursor}",
            self.received,
            self.first.map_or("-".into(), |s| s.to_string()),
            self.next.map_or(0, |n| n - 1),
        );
        Ok(())
    }
}

fn main() -> Result<(), Error> {
    let limit = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    pulsewatch_guest::run_with::<SeqCheck>(&pulsewatch_guest::Checkpoint::in_state_dir(), limit)
}
