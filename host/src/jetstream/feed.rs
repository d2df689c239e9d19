//! Reading a stream as a feed: `poll` as a batched direct get, the head as the stream's state,
//! and a headers-only consumer that says when the stream grows.

use super::{JetStreamError, REQUEST_TIMEOUT, StreamAddr, bounds, connect, open_stream};
use async_nats::jetstream::{self, consumer, stream};
use async_nats::{HeaderMap, StatusCode};
use futures::StreamExt;
use pulsewatch_log::codec::{Entries, EntryRef};
use pulsewatch_log::{Batch, Budget, Packed, PollLimits};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// How often a waiting reader asks the server for the head, in case the consumer that reports
/// growth missed some (a reconnect): what bounds the wake-up when it does.
const RECHECK: Duration = Duration::from_secs(2);

/// 9999-12-31T23:59:59.999Z, in milliseconds since the Unix epoch.
const LAST_RFC3339_MS: u64 = 253_402_300_799_999;

/// The status that ends a batched direct get.
const END_OF_BATCH: u16 = 204;

/// One stream read as a feed, shared by the plugins of a process that read it.
pub struct StreamFeed {
    addr: StreamAddr,
    client: async_nats::Client,
    stream: stream::Stream,
    /// `$JS.API.DIRECT.GET.<stream>`.
    direct_get: String,
    /// The highest seq known to be stored: from the stream's state, the end of a batch, and the
    /// consumer that follows new messages. It only grows.
    head: watch::Sender<u64>,
    follower: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for StreamFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamFeed")
            .field("addr", &self.addr.to_string())
            .finish_non_exhaustive()
    }
}

impl Drop for StreamFeed {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl StreamFeed {
    /// Connects to the stream of `addr`, checks that it holds a log, and starts following its
    /// growth. Must be called inside a tokio runtime, which then drives the connection.
    pub async fn open(addr: &StreamAddr) -> Result<StreamFeed, JetStreamError> {
        let client = connect(addr).await?;
        let js = jetstream::new(client.clone());
        let stream = open_stream(&js, addr).await?;
        let (_, last) = bounds(&stream).await?;
        let head = watch::Sender::new(last);
        // Headers only, from new messages on: one small message per event stored, with the
        // stream's seq and how many are pending after it. It delivers only what the stream
        // has stored, unlike a plain subscription to the subject, which sees publishes that
        // the stream may refuse.
        let follow = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: client.new_inbox(),
                filter_subject: addr.subject(),
                deliver_policy: consumer::DeliverPolicy::New,
                headers_only: true,
                ..Default::default()
            })
            .await
            .map_err(|e| JetStreamError::unavailable("cannot follow the stream", e))?;
        let mut messages = follow
            .messages()
            .await
            .map_err(|e| JetStreamError::unavailable("cannot follow the stream", e))?;
        let grown = head.clone();
        let follower = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                // A failed delivery (a reset after a reconnect) is retried by the ordered
                // consumer itself; the waiters' recheck covers the gap.
                let Ok(message) = message else { continue };
                if let Ok(info) = message.info() {
                    let seq = info.stream_sequence.saturating_add(info.pending);
                    grown.send_if_modified(|head| raise(head, seq));
                }
            }
        });
        Ok(StreamFeed {
            direct_get: format!("$JS.API.DIRECT.GET.{}", addr.stream),
            addr: addr.clone(),
            client,
            stream,
            head,
            follower,
        })
    }

    /// The stream's location.
    pub fn addr(&self) -> &StreamAddr {
        &self.addr
    }

    /// The highest seq known to be stored, without asking the server.
    pub fn known_head(&self) -> u64 {
        *self.head.borrow()
    }

    /// The seq of the newest event, asked of the server.
    pub async fn head(&self) -> Result<u64, JetStreamError> {
        let (_, last) = bounds(&self.stream).await?;
        self.head.send_if_modified(|head| raise(head, last));
        Ok(last)
    }

    /// Waits until the stream is known to hold more than `since`, or until `deadline`; returns
    /// the head known then. Asks the server every [`RECHECK`] meanwhile.
    pub async fn wait_past(&self, since: u64, deadline: Option<Instant>) -> u64 {
        let mut head = self.head.subscribe();
        loop {
            let known = *head.borrow_and_update();
            if known > since {
                return known;
            }
            let now = Instant::now();
            let slice = match deadline {
                Some(deadline) if now >= deadline => return known,
                Some(deadline) => (deadline - now).min(RECHECK),
                None => RECHECK,
            };
            tokio::select! {
                _ = head.changed() => {}
                () = tokio::time::sleep(slice) => {
                    // Unreachable now: the next poll meets the error.
                    let _ = self.head().await;
                }
            }
        }
    }

    /// The packed events after `since` (the layout of `poll-packed`), appended to `out`, with
    /// the poll contract's clamps and byte budget: the message bodies as stored, each checked to
    /// be the event of the seq the stream gave it.
    pub async fn poll_packed(
        &self,
        since: u64,
        limit: u32,
        limits: &PollLimits,
        out: &mut Vec<u8>,
    ) -> Result<Packed, JetStreamError> {
        let mut budget = Budget::new(since, limit, limits);
        let caught_up = since >= self.known_head();
        let first = match budget.first_wanted() {
            Some(first) if !caught_up => first,
            _ => {
                return Ok(Packed {
                    events: 0,
                    last_seq: since,
                });
            }
        };
        let wanted = limit.min(limits.max_events);
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| JetStreamError::unavailable("cannot read the stream", e))?;
        let request = format!("{{\"seq\":{first},\"batch\":{wanted}}}");
        self.client
            .publish_with_reply(self.direct_get.clone(), inbox, request.into())
            .await
            .map_err(|e| JetStreamError::unavailable("cannot read the stream", e))?;
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        let mut expected = first;
        loop {
            let message = match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    return Err(JetStreamError::Unavailable("the connection closed".into()));
                }
                Err(_) => {
                    return Err(JetStreamError::Unavailable(
                        "the server did not answer a read in time".into(),
                    ));
                }
            };
            if let Some(status) = message.status {
                if status == StatusCode::NOT_FOUND && budget.is_empty() {
                    // Nothing at or after `first`: caught up, or retention dropped all of it.
                    let (oldest, last) = bounds(&self.stream).await?;
                    self.head.send_if_modified(|head| raise(head, last));
                    if last > since {
                        return Err(JetStreamError::Truncated { oldest });
                    }
                } else if status.as_u16() != END_OF_BATCH && status != StatusCode::NOT_FOUND {
                    return Err(JetStreamError::Unavailable(format!(
                        "a read failed: {status} {}",
                        message.description.unwrap_or_default()
                    )));
                }
                break;
            }
            let headers = message.headers.as_ref();
            let seq = number(headers, "Nats-Sequence").unwrap_or(0);
            if seq != expected {
                if seq > expected && budget.is_empty() {
                    return Err(JetStreamError::Truncated { oldest: seq });
                }
                return Err(JetStreamError::Undecodable {
                    seq: expected,
                    why: format!("the stream answered with message {seq} in its place"),
                });
            }
            if let Some(pending) = number(headers, "Nats-Num-Pending") {
                let last = seq.saturating_add(pending);
                self.head.send_if_modified(|head| raise(head, last));
            }
            let payload_len = checked_entry(seq, &message.payload)?;
            if !budget.admit(seq, payload_len) {
                break;
            }
            out.extend_from_slice(&message.payload);
            expected += 1;
            if !budget.has_room() {
                break;
            }
        }
        Ok(Packed {
            events: budget.len(),
            last_seq: budget.last_seq(),
        })
    }

    /// The events after `since`, decoded: [`StreamFeed::poll_packed`] in typed form.
    pub async fn poll(
        &self,
        since: u64,
        limit: u32,
        limits: &PollLimits,
    ) -> Result<Batch, JetStreamError> {
        let mut bytes = Vec::new();
        let packed = self.poll_packed(since, limit, limits, &mut bytes).await?;
        let mut entries = Entries::new(&bytes);
        let events = entries.by_ref().map(|entry| entry.to_event()).collect();
        Ok(Batch {
            events,
            last_seq: packed.last_seq,
        })
    }

    /// The last seq stored before `timestamp_ms`, by the stream's store time: what
    /// `seq-at` answers. JetStream stamps each message when it stores it, so this is the
    /// time the event reached the stream, not the writer's stamp in the event (which may be
    /// earlier, or out of order); the stamps are in seq order, so no event is missed.
    pub async fn seq_at(&self, timestamp_ms: u64) -> Result<u64, JetStreamError> {
        // Past the year 9999 no time can be written in RFC 3339, and every event is before it.
        if timestamp_ms > LAST_RFC3339_MS {
            return self.head().await;
        }
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(timestamp_ms);
        let request = format!(
            "{{\"start_time\":\"{}\"}}",
            humantime::format_rfc3339_millis(at)
        );
        let message = self
            .client
            .request(self.direct_get.clone(), request.into())
            .await
            .map_err(|e| JetStreamError::unavailable("cannot read the stream", e))?;
        match message.status {
            None => Ok(number(message.headers.as_ref(), "Nats-Sequence")
                .unwrap_or(1)
                .saturating_sub(1)),
            Some(StatusCode::NOT_FOUND) => self.head().await,
            Some(status) => Err(JetStreamError::Unavailable(format!(
                "a read failed: {status} {}",
                message.description.unwrap_or_default()
            ))),
        }
    }
}

/// Raises `head` to `seq`; whether it moved.
fn raise(head: &mut u64, seq: u64) -> bool {
    let raised = seq > *head;
    *head = (*head).max(seq);
    raised
}

/// A number in a message's headers.
fn number(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    headers?.get(name)?.as_str().parse().ok()
}

/// Checks that `body` is exactly one event entry of `seq`; its payload length.
fn checked_entry(seq: u64, body: &[u8]) -> Result<usize, JetStreamError> {
    let undecodable = |why: String| JetStreamError::Undecodable { seq, why };
    let (entry, rest) = EntryRef::split(body).map_err(|e| undecodable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(undecodable(format!(
            "{} bytes follow the event",
            rest.len()
        )));
    }
    if entry.seq() != seq {
        return Err(undecodable(format!(
            "it holds the event of seq {}",
            entry.seq()
        )));
    }
    Ok(entry.payload().len())
}
