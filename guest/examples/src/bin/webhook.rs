//! POSTs each matching event as JSON to a URL, and commits its cursor after each delivered
//! batch: at-least-once delivery, with the host's idempotency key (`Idempotency-Key`,
//! `webhook-id`) the same on a replay, so that the receiver can drop what it already has.
//!
//! Arguments: the URL, then optionally `kind=NAME` (repeatable: any of them; all kinds without
//! one). The host must grant the URL's host (`allowed_outbound_hosts`).
//!
//! A 2xx answer is a delivery. A 5xx answer or no answer is retried with doubling pauses from
//! 100 ms, 8 tries in all, after which the plugin fails and its host restarts it from its last
//! commit. A 4xx answer will not change on a retry: the event is reported and skipped.

use pulsewatch_guest::{Batch, Error, EventRef, Plugin, http};
use serde_json::value::RawValue;
use std::time::Duration;

const TRIES: u32 = 8;

#[derive(serde::Serialize)]
struct Body<'a> {
    seq: u64,
    kind: &'static str,
    entity: String,
    collective: String,
    timestamp_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Counts {
    delivered: u64,
    rejected: u64,
}

struct Webhook {
    url: String,
    kinds: Vec<String>,
    counts: Counts,
}

impl Webhook {
    fn matches(&self, event: &EventRef<'_>) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| k == event.kind().as_str())
    }

    /// Delivers one event: true if the receiver took it, false if it refused it for good.
    fn deliver(&self, event: &EventRef<'_>) -> Result<bool, Error> {
        let body = serde_json::to_vec(&Body {
            seq: event.seq(),
            kind: event.kind().as_str(),
            entity: event.entity().to_string(),
            collective: event.collective().to_string(),
            timestamp_ms: event.timestamp_ms(),
            payload: serde_json::from_slice(event.payload()).ok(),
        })?;
        let headers = [("content-type", "application/json")];
        let mut pause = Duration::from_millis(100);
        for attempt in 1..=TRIES {
            let failure = match http::post(&self.url, &headers, &body) {
                Ok(response) if response.status < 300 => return Ok(true),
                Ok(response) if response.status < 500 => {
                    eprintln!(
                        "webhook: event {} refused with status {}; skipped",
                        event.seq(),
                        response.status
                    );
                    return Ok(false);
                }
                Ok(response) => format!("status {}", response.status),
                Err(e) => e.to_string(),
            };
            if attempt == TRIES {
                return Err(Error::msg(format!(
                    "event {} was not delivered after {TRIES} tries: {failure}",
                    event.seq()
                )));
            }
            eprintln!(
                "webhook: event {}: {failure}; again in {pause:?}",
                event.seq()
            );
            std::thread::sleep(pause);
            pause *= 2;
        }
        unreachable!("the last try returns")
    }
}

impl Plugin for Webhook {
    fn restore(state: Option<&[u8]>) -> Result<Self, Error> {
        let mut args = std::env::args().skip(1);
        let url = args
            .next()
            .ok_or("expected the URL to POST to as the first argument")?;
        let kinds = args
            .map(|arg| match arg.split_once('=') {
                Some(("kind", kind)) => Ok(kind.to_owned()),
                _ => Err(format!("unknown argument {arg:?}: expected kind=NAME")),
            })
            .collect::<Result<_, _>>()?;
        let counts = state
            .map(serde_json::from_slice)
            .transpose()?
            .unwrap_or_default();
        Ok(Webhook { url, kinds, counts })
    }

    fn process(&mut self, events: &Batch) -> Result<(), Error> {
        for event in events {
            if !self.matches(&event) {
                continue;
            }
            if self.deliver(&event)? {
                self.counts.delivered += 1;
            } else {
                self.counts.rejected += 1;
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.counts).expect("counts serialize")
    }

    fn finish(&mut self, cursor: u64) -> Result<(), Error> {
        println!(
            "webhook: delivered {}, refused {}, through seq {cursor}",
            self.counts.delivered, self.counts.rejected
        );
        Ok(())
    }
}

fn main() -> Result<(), Error> {
    pulsewatch_guest::run::<Webhook>()
}
