//! POSTs each matching event as JSON to a URL, and commits its cursor after each delivered
//! batch: at-least-once delivery, with the host's idempotency key (`Idempotency-Key`,
//! `webhook-id`) the same on a replay, so that the receiver can drop what it already has.
//!
//! Arguments: the URL, then optionally `kind=NAME` (repeatable: any of them; all kinds without
//! one). The host must grant the URL's host (`allowed_outbound_hosts`).
//!
//! Up to 8 requests are in flight at once, so deliveries within a batch may arrive out of order
//! (as with most webhook senders); the batch is committed once every one is through. A 2xx
//! answer is a delivery. A 5xx answer or no answer is retried with doubling pauses from 100 ms,
//! 8 tries in all, after which the plugin fails and its host restarts it from its last commit.
//! A 4xx answer will not change on a retry: the event is reported and skipped.

use pulsewatch_guest::{Batch, Error, EventRef, Plugin, http};
use serde_json::value::RawValue;
use std::time::Duration;

const TRIES: u32 = 8;

/// Requests in flight at once (the host allows 16 per plugin).
const IN_FLIGHT: usize = 8;

/// An event as the JSON body of its delivery.
fn body(event: &EventRef<'_>) -> Result<Vec<u8>, Error> {
    Ok(serde_json::to_vec(&Body {
        seq: event.seq(),
        kind: event.kind().as_str(),
        entity: event.entity().to_string(),
        collective: event.collective().to_string(),
        timestamp_ms: event.timestamp_ms(),
        payload: serde_json::from_slice(event.payload()).ok(),
    })?)
}

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

/// What became of one delivery.
enum Delivery {
    Delivered,
    /// A 4xx: the receiver will not take it.
    Refused(u16),
    /// A 5xx or no answer: worth another try.
    Failed(String),
}

fn outcome(result: Result<http::Response, http::HttpError>) -> Delivery {
    match result {
        Ok(response) if response.status < 300 => Delivery::Delivered,
        Ok(response) if response.status < 500 => Delivery::Refused(response.status),
        Ok(response) => Delivery::Failed(format!("status {}", response.status)),
        Err(e) => Delivery::Failed(e.to_string()),
    }
}

impl Webhook {
    fn matches(&self, event: &EventRef<'_>) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| k == event.kind().as_str())
    }

    fn post(&self, body: &[u8]) -> Result<http::Pending, http::HttpError> {
        http::start(
            http::Method::Post,
            &self.url,
            &[("content-type", "application/json")],
            body,
        )
    }

    /// Tries again to deliver one event whose first try failed with `failure`.
    fn retry(&self, seq: u64, body: &[u8], mut failure: String) -> Result<Delivery, Error> {
        let mut pause = Duration::from_millis(100);
        for _ in 1..TRIES {
            eprintln!("webhook: event {seq}: {failure}; again in {pause:?}");
            std::thread::sleep(pause);
            pause *= 2;
            match outcome(self.post(body).and_then(http::Pending::wait)) {
                Delivery::Failed(again) => failure = again,
                done => return Ok(done),
            }
        }
        Err(Error::msg(format!(
            "event {seq} was not delivered after {TRIES} tries: {failure}"
        )))
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
        let mut bodies = Vec::new();
        for event in events {
            if self.matches(&event) {
                bodies.push((event.seq(), body(&event)?));
            }
        }
        // A window of requests in flight at once; the batch is committed once all are through.
        for window in bodies.chunks(IN_FLIGHT) {
            let pending: Vec<_> = window.iter().map(|(_, body)| self.post(body)).collect();
            for ((seq, body), pending) in window.iter().zip(pending) {
                let delivery = match outcome(pending.and_then(http::Pending::wait)) {
                    Delivery::Failed(failure) => self.retry(*seq, body, failure)?,
                    done => done,
                };
                match delivery {
                    Delivery::Delivered => self.counts.delivered += 1,
                    Delivery::Refused(status) => {
                        eprintln!("webhook: event {seq} refused with status {status}; skipped");
                        self.counts.rejected += 1;
                    }
                    Delivery::Failed(_) => unreachable!("retry returns an error instead"),
                }
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
