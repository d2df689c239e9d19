//! Reading a stream as a feed: `poll` from an ordered consumer that follows each plugin's
//! cursor, the head as the stream's state, `seq-at` as a direct get by time, and a headers-only
//! consumer that says when the stream grows.

use super::output::origin;
use super::{JetStreamError, REQUEST_TIMEOUT, StreamAddr, bounds, connect, open_stream};
use async_nats::jetstream::{self, consumer, stream};
use async_nats::{HeaderMap, StatusCode};
use futures::StreamExt;
use pulsewatch_log::codec::{Entries, EntryRef};
use pulsewatch_log::{Batch, Budget, Origin, Packed, PollLimits};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// How often a waiting reader asks the server for the head while the consumer that reports
/// growth is not known to see every message (it is starting, or failed): what bounds the
/// wake-up then.
const RECHECK: Duration = Duration::from_secs(2);

/// How often a waiting reader asks anyway, while that consumer sees every message.
const SAFETY_RECHECK: Duration = Duration::from_secs(60);

/// 9999-12-31T23:59:59.999Z, in milliseconds since the Unix epoch.
const LAST_RFC3339_MS: u64 = 253_402_300_799_999;

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
    /// Whether the follower is known to see every message stored: then a reader at the known
    /// head is caught up without asking the server.
    current: Arc<AtomicBool>,
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
        let current = Arc::new(AtomicBool::new(false));
        let follower = tokio::spawn(follow_growth(
            stream.clone(),
            client.new_inbox(),
            head.clone(),
            current.clone(),
        ));
        Ok(StreamFeed {
            direct_get: format!("$JS.API.DIRECT.GET.{}", addr.stream),
            addr: addr.clone(),
            client,
            stream,
            head,
            current,
            follower,
        })
    }

    /// A reader of the stream for one plugin.
    pub fn reader(self: &Arc<Self>) -> StreamReader {
        StreamReader {
            feed: Arc::clone(self),
            following: None,
            origins: None,
        }
    }

    /// How many servers hold a copy of the stream.
    pub fn replicas(&self) -> usize {
        self.stream.cached_info().config.num_replicas
    }

    /// The stream's location.
    pub fn addr(&self) -> &StreamAddr {
        &self.addr
    }

    /// The highest seq known to be stored, without asking the server.
    pub fn known_head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Whether a reader at `since` has read everything: from what the follower saw while it
    /// sees every message, from the server otherwise.
    async fn caught_up(&self, since: u64) -> Result<bool, JetStreamError> {
        if since < self.known_head() {
            return Ok(false);
        }
        if self.current.load(Ordering::Acquire) {
            return Ok(true);
        }
        Ok(since >= self.head().await?)
    }

    /// The seq of the newest event, asked of the server.
    pub async fn head(&self) -> Result<u64, JetStreamError> {
        let (_, last) = bounds(&self.stream).await?;
        self.head.send_if_modified(|head| raise(head, last));
        Ok(last)
    }

    /// Waits until the stream is known to hold more than `since`, or until `deadline`; returns
    /// the head known then. Asks the server every 2 s meanwhile while the consumer that follows
    /// the stream's growth may miss some, every minute otherwise.
    pub async fn wait_past(&self, since: u64, deadline: Option<Instant>) -> u64 {
        let mut head = self.head.subscribe();
        loop {
            let known = *head.borrow_and_update();
            if known > since {
                return known;
            }
            // While the follower sees every message, a recheck is only a safety net.
            let recheck = if self.current.load(Ordering::Acquire) {
                SAFETY_RECHECK
            } else {
                RECHECK
            };
            let now = Instant::now();
            let slice = match deadline {
                Some(deadline) if now >= deadline => return known,
                Some(deadline) => (deadline - now).min(recheck),
                None => recheck,
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

    /// The writer's stamp of the event of `seq`, if the stream holds it.
    pub async fn timestamp_ms(&self, seq: u64) -> Result<Option<u64>, JetStreamError> {
        let Ok(message) = self.stream.direct_get(seq).await else {
            return Ok(None);
        };
        Ok(Some(checked_entry(seq, &message.payload)?.timestamp_ms()))
    }

    /// The stream's first seq: of the oldest event it holds, the head plus one when retention
    /// dropped every event, 0 for a stream never written.
    pub async fn oldest(&self) -> Result<u64, JetStreamError> {
        Ok(bounds(&self.stream).await?.0)
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

/// A reader of a stream that holds one plugin's place in it: an ephemeral consumer of the
/// stream, from the server's point of view, positioned after the plugin's cursor. A poll is one
/// pull request for the events it wants, answered as they stream in; a poll from another place
/// (a plugin that starts over, or skips what retention dropped) makes a new consumer there.
///
/// Measured against one batched direct get a poll (`cargo bench --bench jetstream`): a
/// consumer's messages carry their seq in their reply subject, not in headers, and cost the
/// server and the client about a third as much each.
pub struct StreamReader {
    feed: Arc<StreamFeed>,
    following: Option<Following>,
    /// The origins of the derived events polled, when asked for ([`StreamReader::with_origins`]).
    origins: Option<Vec<(u64, Origin)>>,
}

/// The consumer of a reader, and where it stands.
struct Following {
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    next_subject: String,
    /// The seq of the next message it delivers.
    next: u64,
    /// Messages a pull delivered past the batch of the poll that made it: the next ones.
    held: VecDeque<async_nats::Message>,
}

/// How long a poll waits for the first event the stream holds when its consumer, on a replica
/// behind the stream's leader, has none yet.
const BEHIND: Duration = Duration::from_millis(100);

/// How long a reader's consumer is kept by the server while no poll uses it.
const IDLE_CONSUMER: Duration = Duration::from_secs(300);

impl StreamReader {
    /// This reader, keeping the origins of the derived events it polls
    /// ([`StreamReader::take_origins`]).
    pub fn with_origins(mut self) -> StreamReader {
        self.origins = Some(Vec::new());
        self
    }

    /// The origins of the derived events polled since this was last called, by seq: what
    /// `tail` prints, as it does from a log's origins table.
    pub fn take_origins(&mut self) -> Vec<(u64, Origin)> {
        self.origins
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The stream it reads.
    pub fn feed(&self) -> &Arc<StreamFeed> {
        &self.feed
    }

    /// A consumer of the stream's events from `first` on: in memory, on one server, without
    /// acknowledgements, removed by the server once idle.
    async fn follow(feed: &StreamFeed, first: u64) -> Result<Following, JetStreamError> {
        let consumer = feed
            .stream
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: first,
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: IDLE_CONSUMER,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| JetStreamError::unavailable("cannot read the stream", e))?;
        Ok(Following {
            next_subject: format!(
                "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
                feed.addr.stream,
                consumer.cached_info().name
            ),
            next: first,
            held: VecDeque::new(),
        })
    }

    /// The packed events after `since` (the layout of `poll-packed`), appended to `out`, with
    /// the poll contract's clamps and byte budget: the message bodies as stored, each checked to
    /// be the event of the seq the stream gave it. A failed poll appends nothing.
    pub async fn poll_packed(
        &mut self,
        since: u64,
        limit: u32,
        limits: &PollLimits,
        out: &mut Vec<u8>,
    ) -> Result<Packed, JetStreamError> {
        let mut budget = Budget::new(since, limit, limits);
        let first = match budget.first_wanted() {
            Some(first) if !self.feed.caught_up(since).await? => first,
            _ => {
                return Ok(Packed {
                    events: 0,
                    last_seq: since,
                });
            }
        };
        let mut following = match self.following.take() {
            Some(following) if following.next == first => following,
            _ => Self::follow(&self.feed, first).await?,
        };
        if following.held.is_empty() {
            let wanted = limit.min(limits.max_events);
            let client = &self.feed.client;
            let pulled = Self::pull(client, &following.next_subject, wanted, limits, None).await;
            following.held = match pulled {
                Ok(pulled) => pulled,
                // The server removes a consumer idle for [`IDLE_CONSUMER`], and forgets it
                // when it restarts: a new one, once.
                Err(_) => {
                    following = Self::follow(&self.feed, first).await?;
                    Self::pull(client, &following.next_subject, wanted, limits, None).await?
                }
            };
            if following.held.is_empty() {
                // Nothing came though the head is past `since`: retention dropped every event
                // after it, or the consumer is on a replica that has not applied them yet.
                let (oldest, last) = bounds(&self.feed.stream).await?;
                self.feed.head.send_if_modified(|head| raise(head, last));
                if oldest > first {
                    return Err(JetStreamError::Truncated { oldest });
                }
                // The replica: wait there for the first, rather than have the plugin poll
                // again and again meanwhile.
                let subject = &following.next_subject;
                following.held = Self::pull(client, subject, 1, limits, Some(BEHIND)).await?;
            }
        }
        let start = out.len();
        let kept = self.origins.as_ref().map_or(0, Vec::len);
        let origins = self.origins.as_mut();
        let taken = Self::take(&self.feed, &mut following, &mut budget, out, origins);
        if taken.is_err() {
            out.truncate(start);
            if let Some(origins) = &mut self.origins {
                origins.truncate(kept);
            }
        }
        // After an error the consumer's place is not known: the next poll makes a new one,
        // but for the oldest event kept, which it holds.
        if taken.is_ok() || matches!(taken, Err(JetStreamError::Truncated { .. })) {
            self.following = Some(following);
        }
        taken.map(|()| Packed {
            events: budget.len(),
            last_seq: budget.last_seq(),
        })
    }

    /// One pull of at most `wanted` messages from the consumer at `next_subject`: those it
    /// holds now, as they stream in, or with `wait`, those that come within it.
    async fn pull(
        client: &async_nats::Client,
        next_subject: &str,
        wanted: u32,
        limits: &PollLimits,
        wait: Option<Duration>,
    ) -> Result<VecDeque<async_nats::Message>, JetStreamError> {
        let mut into = VecDeque::new();
        let inbox = client.new_inbox();
        let mut replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| JetStreamError::unavailable("cannot read the stream", e))?;
        // Room for the poll's byte budget, and the subjects and framing of each message.
        let max_bytes = limits.max_bytes.max(8 << 20) + wanted as usize * 512;
        let request = match wait {
            // Held by the server until a message comes or the time is up.
            Some(wait) => format!(
                "{{\"batch\":{wanted},\"max_bytes\":{max_bytes},\"expires\":{}}}",
                wait.as_nanos()
            ),
            None => format!("{{\"batch\":{wanted},\"max_bytes\":{max_bytes},\"no_wait\":true}}"),
        };
        client
            .publish_with_reply(next_subject.to_owned(), inbox, request.into())
            .await
            .map_err(|e| JetStreamError::unavailable("cannot read the stream", e))?;
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        while into.len() < wanted as usize {
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
            match message.status {
                None => into.push_back(message),
                // The pull ended with what the stream holds now.
                Some(StatusCode::NOT_FOUND | StatusCode::TIMEOUT) => break,
                Some(status) => {
                    return Err(JetStreamError::Unavailable(format!(
                        "a read failed: {status} {}",
                        message.description.unwrap_or_default()
                    )));
                }
            }
        }
        Ok(into)
    }

    /// Takes held messages of `following` into `out` while `budget` admits them.
    fn take(
        feed: &StreamFeed,
        following: &mut Following,
        budget: &mut Budget,
        out: &mut Vec<u8>,
        mut origins: Option<&mut Vec<(u64, Origin)>>,
    ) -> Result<(), JetStreamError> {
        while budget.has_room() {
            let Some(message) = following.held.pop_front() else {
                break;
            };
            let (seq, pending) = delivery(&message)?;
            feed.head
                .send_if_modified(|head| raise(head, seq.saturating_add(pending)));
            if seq > following.next && !budget.is_empty() {
                // Retention dropped events after those taken: the batch ends before them, and
                // the next poll says so.
                following.held.push_front(message);
                break;
            }
            if seq != following.next {
                if seq > following.next {
                    // Retention dropped the events asked for; this one is the oldest kept.
                    following.next = seq;
                    following.held.push_front(message);
                    return Err(JetStreamError::Truncated { oldest: seq });
                }
                return Err(JetStreamError::Undecodable {
                    seq: following.next,
                    why: format!("the stream delivered message {seq} in its place"),
                });
            }
            let payload_len = checked_entry(seq, &message.payload)?.payload().len();
            if !budget.admit(seq, payload_len) {
                following.held.push_front(message);
                break;
            }
            out.extend_from_slice(&message.payload);
            // Headers are parsed only for a reader that keeps origins (`tail`), not on a poll.
            if let Some(origins) = &mut origins
                && let Some(origin) = origin(message.headers.as_ref())
            {
                origins.push((seq, origin));
            }
            following.next += 1;
        }
        Ok(())
    }

    /// The events after `since`, decoded: [`StreamReader::poll_packed`] in typed form.
    pub async fn poll(
        &mut self,
        since: u64,
        limit: u32,
        limits: &PollLimits,
    ) -> Result<Batch, JetStreamError> {
        let mut bytes = Vec::new();
        let packed = self.poll_packed(since, limit, limits, &mut bytes).await?;
        let events = Entries::new(&bytes).map(|entry| entry.to_event()).collect();
        Ok(Batch {
            events,
            last_seq: packed.last_seq,
        })
    }
}

/// A delivered message's stream seq and how many messages follow it, from its reply subject:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<seq>.<consumer seq>.<time>.<pending>`, or the
/// same after a domain and an account hash (ADR-15).
fn delivery(message: &async_nats::Message) -> Result<(u64, u64), JetStreamError> {
    let undecodable = || JetStreamError::Unavailable("a message without its seq".into());
    let reply = message.reply.as_deref().ok_or_else(undecodable)?;
    let tokens: Vec<&str> = reply
        .strip_prefix("$JS.ACK.")
        .ok_or_else(undecodable)?
        .split('.')
        .collect();
    let at = match tokens.len() {
        7 => 0,
        n if n >= 9 => 2,
        _ => return Err(undecodable()),
    };
    let number = |i: usize| tokens[at + i].parse::<u64>().map_err(|_| undecodable());
    Ok((number(3)?, number(6)?))
}

/// Raises `head` with every message the stream stores, through a headers-only consumer from
/// new messages on: one small message per event stored, with the stream's seq and how many are
/// pending after it. It delivers only what the stream has stored, unlike a plain subscription
/// to the subject, which sees publishes that the stream may refuse. `current` says whether it
/// is known to see everything: not before it starts, nor from a failure until the next message
/// after it; it starts again a second after it ends.
async fn follow_growth(
    stream: stream::Stream,
    inbox: String,
    head: watch::Sender<u64>,
    current: Arc<AtomicBool>,
) {
    loop {
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: inbox.clone(),
                deliver_policy: consumer::DeliverPolicy::New,
                headers_only: true,
                ..Default::default()
            })
            .await;
        if let Some(mut messages) = async { consumer.ok()?.messages().await.ok() }.await {
            // Anything stored before the consumer began is in the stream's state.
            if let Ok((_, last)) = bounds(&stream).await {
                head.send_if_modified(|head| raise(head, last));
                current.store(true, Ordering::Release);
            }
            while let Some(message) = messages.next().await {
                let Ok(message) = message else {
                    // The ordered consumer resets itself from where it was.
                    current.store(false, Ordering::Release);
                    continue;
                };
                if let Ok(info) = message.info() {
                    let seq = info.stream_sequence.saturating_add(info.pending);
                    head.send_if_modified(|head| raise(head, seq));
                    current.store(true, Ordering::Release);
                }
            }
        }
        current.store(false, Ordering::Release);
        tokio::time::sleep(Duration::from_secs(1)).await;
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

/// Checks that `body` is exactly one event entry of `seq`; the entry.
fn checked_entry(seq: u64, body: &[u8]) -> Result<EntryRef<'_>, JetStreamError> {
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
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(reply: &str) -> Result<(u64, u64), JetStreamError> {
        let message = async_nats::Message {
            subject: "_INBOX.x".into(),
            reply: Some(reply.into()),
            payload: bytes::Bytes::new(),
            headers: None,
            status: None,
            description: None,
            length: 0,
        };
        delivery(&message)
    }

    #[test]
    fn a_delivery_says_its_seq_and_what_follows_in_either_subject_form() {
        let ts = "1700000000000000000";
        assert_eq!(
            delivered(&format!("$JS.ACK.EVENTS.c1.1.4021.17.{ts}.979")).unwrap(),
            (4021, 979)
        );
        assert_eq!(
            delivered(&format!("$JS.ACK._.hash.EVENTS.c1.1.4021.17.{ts}.979")).unwrap(),
            (4021, 979)
        );
        assert_eq!(
            delivered(&format!("$JS.ACK._.hash.EVENTS.c1.1.4021.17.{ts}.979.tok")).unwrap(),
            (4021, 979)
        );
        for bad in ["$JS.ACK.EVENTS.c1.1", "_INBOX.abc", "$JS.ACK.E.c.1.x.1.1.1"] {
            assert!(delivered(bad).is_err(), "{bad}");
        }
    }
}
