//! Appends `FIRST LAST` to `/state/batches` for each batch, before the batch is committed, and
//! checks each event's payload against its seq (`seq=N`, as the live tests' writer writes it).
//! A file rather than stdout: lines written before a host is killed survive it, so a test can
//! tell exactly which events were delivered twice. Arguments: the batch limit (default 1000)
//! and a pause in ms after recording each batch, before it is committed (default 0).

use pulsewatch_guest::{Batch, Error, Plugin};
use std::io::Write;

struct RecordBatches {
    file: std::fs::File,
    pause: std::time::Duration,
}

impl Plugin for RecordBatches {
    fn restore(_: Option<&[u8]>) -> Result<Self, Error> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("/state/batches")?;
        let pause = std::env::args().nth(2).map(|a| a.parse()).transpose()?;
        Ok(RecordBatches {
            file,
            pause: std::time::Duration::from_millis(pause.unwrap_or(0)),
        })
    }

    fn process(&mut self, events: &Batch) -> Result<(), Error> {
        let (mut first, mut last) = (None, 0);
        for event in events {
            let expected = format!("seq={}", event.seq());
            if event.payload() != expected.as_bytes() {
                return Err(format!(
                    "event {}: payload {:?}, expected {expected:?}",
                    event.seq(),
                    String::from_utf8_lossy(event.payload())
                )
                .into());
            }
            first.get_or_insert(event.seq());
            last = event.seq();
        }
        if let Some(first) = first {
            // One write, so one system call: `writeln!` would write the pieces one by one, and
            // a kill between them would leave a torn line for the next run to append to.
            self.file
                .write_all(format!("{first} {last}\n").as_bytes())?;
        }
        std::thread::sleep(self.pause);
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
}

fn main() -> Result<(), Error> {
    let limit = std::env::args().nth(1).map(|a| a.parse()).transpose()?;
    pulsewatch_guest::run_with::<RecordBatches>(
        &pulsewatch_guest::Checkpoint::in_state_dir(),
        limit.unwrap_or(1000),
    )
}
