//! Writes the events that match a filter as JSON lines to `/state/matches.jsonl`.
//!
//! Arguments (granted by the host) select what matches; all given must hold:
//! `kind=NAME` (repeatable: any of them), `collective=UUID`, `entity=UUID`.
//! Without a `kind=` argument it keeps archived and deleted events.
//!
//! The committed state is the length of the output file: on restart the file is cut back to
//! it, so events processed after the last commit are not written twice.

use pulsewatch_guest::{Batch, Context, Error, EventRef, Plugin};
use serde_json::value::RawValue;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};

const OUTPUT: &str = "/state/matches.jsonl";

/// One output line; a payload that is JSON is embedded as it is, anything else as text.
#[derive(serde::Serialize)]
struct Line<'a> {
    seq: u64,
    kind: &'static str,
    entity: String,
    collective: String,
    timestamp_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Default)]
struct Filter {
    kinds: Vec<String>,
    collective: Option<String>,
    entity: Option<String>,
}

impl Filter {
    fn from_args() -> Result<Self, Error> {
        let mut filter = Filter::default();
        for arg in std::env::args().skip(1) {
            match arg.split_once('=') {
                Some(("kind", v)) => filter.kinds.push(v.to_owned()),
                Some(("collective", v)) => filter.collective = Some(v.to_owned()),
                Some(("entity", v)) => filter.entity = Some(v.to_owned()),
                _ => {
                    return Err(format!(
                        "unknown argument {arg:?}: expected kind=, collective= or entity="
                    )
                    .into());
                }
            }
        }
        if filter.kinds.is_empty() {
            filter.kinds = vec!["archived".into(), "deleted".into()];
        }
        Ok(filter)
    }

    fn matches(&self, event: &EventRef<'_>) -> bool {
        self.kinds.iter().any(|k| k == event.kind().as_str())
            && self
                .collective
                .as_ref()
                .is_none_or(|c| *c == event.collective().to_string())
            && self
                .entity
                .as_ref()
                .is_none_or(|e| *e == event.entity().to_string())
    }
}

struct FilterJsonl {
    filter: Filter,
    out: BufWriter<File>,
    written: u64,
    matched: u64,
}

impl Plugin for FilterJsonl {
    fn restore(state: Option<&[u8]>) -> Result<Self, Error> {
        let committed: u64 = match state {
            Some(bytes) => std::str::from_utf8(bytes)?
                .parse()
                .context("its state is not a byte count")?,
            None => 0,
        };
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(OUTPUT)
            .context(format!("cannot open {OUTPUT}"))?;
        let found = file
            .metadata()
            .context(format!("cannot read {OUTPUT}"))?
            .len();
        if found < committed {
            let why = format!("{OUTPUT} holds {found} bytes, {committed} were committed");
            return Err(format!("{why}: it was changed behind this plugin's back").into());
        }
        file.set_len(committed).context(format!(
            "cannot cut {OUTPUT} back to its committed {committed} bytes"
        ))?;
        let mut out = BufWriter::new(file);
        std::io::Seek::seek(&mut out, std::io::SeekFrom::Start(committed))
            .context(format!("cannot seek in {OUTPUT}"))?;
        Ok(FilterJsonl {
            filter: Filter::from_args()?,
            out,
            written: committed,
            matched: 0,
        })
    }

    fn process(&mut self, events: &Batch) -> Result<(), Error> {
        for event in events.iter().filter(|e| self.filter.matches(e)) {
            let payload = std::str::from_utf8(event.payload())
                .ok()
                .and_then(|text| serde_json::from_str::<&RawValue>(text).ok());
            let line = Line {
                seq: event.seq(),
                kind: event.kind().as_str(),
                entity: event.entity().to_string(),
                collective: event.collective().to_string(),
                timestamp_ms: event.timestamp_ms(),
                payload,
                payload_text: payload
                    .is_none()
                    .then(|| String::from_utf8_lossy(event.payload())),
            };
            let mut bytes = serde_json::to_vec(&line)?;
            bytes.push(b'\n');
            self.out
                .write_all(&bytes)
                .context(format!("cannot write {OUTPUT}"))?;
            self.written += bytes.len() as u64;
            self.matched += 1;
        }
        // The snapshot promises these bytes are on disk.
        self.out.flush().context(format!("cannot write {OUTPUT}"))?;
        self.out
            .get_ref()
            .sync_data()
            .context(format!("cannot sync {OUTPUT}"))?;
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        self.written.to_string().into_bytes()
    }

    fn finish(&mut self, cursor: u64) -> Result<(), Error> {
        println!(
            "matched {} events in this run; {OUTPUT} holds {} bytes",
            self.matched, self.written
        );
        println!("cursor: {cursor}");
        Ok(())
    }
}

fn main() -> Result<(), Error> {
    pulsewatch_guest::run::<FilterJsonl>()
}
