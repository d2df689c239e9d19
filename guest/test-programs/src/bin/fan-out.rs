//! A transform for the exactly-once tests: into each output named by its first argument
//! (comma-separated) it derives, from each input event with seq s, `s % 3` events in `fan` mode (none, one or two)
//! or one in `copy` mode (its second argument). Each derived payload is `s/i/n`: the input
//! seq, the event's place among those derived from it, and how many input events the
//! transform had processed before s, which it keeps in its committed state. After any crash,
//! a correct host leaves n = s - 1 - (its start) in every derived event, and no duplicate.
//!
//! Batches are small (`PULSEWATCH_BATCH`, default 20 events) so that a run commits often.

use pulsewatch_guest::{Batch, ChangeKind, Emitter, Error, Transform, Uuid};

struct FanOut {
    processed: u64,
    copy: bool,
    outputs: String,
}

impl Transform for FanOut {
    fn restore(state: Option<&[u8]>) -> Result<Self, Error> {
        let processed = match state {
            Some(bytes) => std::str::from_utf8(bytes)?.parse()?,
            None => 0,
        };
        let args: Vec<String> = std::env::args().collect();
        Ok(FanOut {
            processed,
            outputs: args.get(1).cloned().unwrap_or_else(|| "out".into()),
            copy: args.get(2).is_some_and(|m| m == "copy"),
        })
    }

    fn process(&mut self, events: &Batch, out: &mut Emitter) -> Result<(), Error> {
        let outputs = self
            .outputs
            .split(',')
            .map(|name| out.output(name))
            .collect::<Result<Vec<_>, _>>()?;
        for event in events {
            let s = event.seq();
            let n = if self.copy { 1 } else { s % 3 };
            for &output in &outputs {
                for i in 0..n {
                    out.emit(
                        output,
                        s,
                        ChangeKind::Created,
                        Uuid { hi: 0, lo: s },
                        Uuid { hi: 0, lo: i },
                        format!("{s}/{i}/{}", self.processed),
                    );
                }
            }
            self.processed += 1;
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        self.processed.to_string().into_bytes()
    }
}

fn main() -> Result<(), Error> {
    let batch = std::env::var("PULSEWATCH_BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(20);
    pulsewatch_guest::run_transform_with::<FanOut>(batch)
}
