//! Appending to a stream, exactly once: each event is published at the seq it encodes, with the
//! stream's last sequence expected to be the one before (so it lands there or nowhere), in
//! atomic batches whose last event carries a message id of the writer's: a retry after a lost
//! acknowledgement is refused by the stream, which holds that id at that seq, and so is
//! recognised as stored rather than stored again.

use super::{JetStreamError, REQUEST_TIMEOUT, StreamAddr, bounds, connect, open_stream, random_id};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt;
use pulsewatch_log::Change;
use pulsewatch_log::codec::encode_entry;
use std::collections::VecDeque;

/// Acknowledgements awaited at once: enough to keep a loopback server busy (see the jetstream
/// bench), few enough that a failure is met soon.
const IN_FLIGHT: usize = 256;

/// The most events in one atomic batch: the server's default limit.
pub(super) const ATOMIC_BATCH: usize = 1_000;

/// Atomic batches sent before the first of them is acknowledged.
const BATCHES_IN_FLIGHT: usize = 16;

/// A writer of one stream.
pub struct StreamWriter {
    client: async_nats::Client,
    /// Whether the stream takes atomic batches (`allow_atomic`, server 2.12 and later).
    atomic: bool,
    js: jetstream::Context,
    stream: stream::Stream,
    name: String,
    subject: String,
    /// The seq the next event gets.
    next: u64,
    /// What this writer's message ids begin with.
    id: String,
}

impl StreamWriter {
    /// Opens the stream of `addr` for appending. Message ids begin with a random id of this
    /// writer, so that another writer's event at the same seq is never taken for one of ours.
    pub async fn open(addr: &StreamAddr) -> Result<StreamWriter, JetStreamError> {
        let id = random_id();
        StreamWriter::open_as(addr, &id).await
    }

    /// Opens the stream of `addr` for appending with message ids `<id>-<seq>`: a writer that
    /// restarts under the same id and writes the same event at the same seq (a relay) is
    /// recognised as retrying.
    pub async fn open_as(addr: &StreamAddr, id: &str) -> Result<StreamWriter, JetStreamError> {
        let client = connect(addr).await?;
        let js = jetstream::new(client.clone());
        let stream = open_stream(&js, addr).await?;
        let (_, last) = bounds(&stream).await?;
        Ok(StreamWriter {
            atomic: stream.cached_info().config.allow_atomic_publish,
            client,
            js,
            stream,
            name: addr.stream.clone(),
            subject: addr.subject(),
            next: last + 1,
            id: id.to_owned(),
        })
    }

    /// The seq the next appended event gets, as this writer knows it.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The stream's first and last seq, asked of the server.
    pub async fn bounds(&self) -> Result<(u64, u64), JetStreamError> {
        bounds(&self.stream).await
    }

    /// The message id of the event of `last` this writer publishes: in an atomic batch, the
    /// batch's, which it ends.
    fn batch_id(&self, last: u64) -> String {
        format!("{}-{last}", self.id)
    }

    /// Whether the message of `seq` was published with the message id `id`.
    async fn stored_as(&self, seq: u64, id: &str) -> bool {
        self.stream.direct_get(seq).await.is_ok_and(|message| {
            message
                .headers
                .get("Nats-Msg-Id")
                .is_some_and(|stored| stored.as_str() == id)
        })
    }

    /// The body of the message of `seq`.
    pub(crate) async fn stored(&self, seq: u64) -> Result<Vec<u8>, JetStreamError> {
        let message =
            self.stream.direct_get(seq).await.map_err(|e| {
                JetStreamError::unavailable(&format!("cannot read message {seq}"), e)
            })?;
        Ok(message.payload.to_vec())
    }

    /// Appends `changes` in order; the seq of the last, or of the last stored before when
    /// `changes` is empty. On a stream that takes atomic batches (as `stream create` makes
    /// them), each run of up to 1,000 events is stored whole or not at all.
    ///
    /// If another writer appended meanwhile, fails with [`JetStreamError::Conflict`] from the
    /// first event it displaced, and stores none from there on. After another failure
    /// ([`JetStreamError::Unavailable`]: a lost connection, no acknowledgement in time) it is
    /// not known how many were stored: append the same changes again with this writer, and
    /// those already stored are recognised by their ids, not stored twice.
    pub async fn append(&mut self, changes: &[Change]) -> Result<u64, JetStreamError> {
        let start = self.next;
        let mut seq = start;
        let bodies = changes.iter().map(|change| {
            let mut body = Vec::new();
            encode_entry(seq, change, &mut body);
            seq += 1;
            Bytes::from(body)
        });
        let appended = self.publish(bodies.collect()).await;
        if let Err(JetStreamError::Unavailable(_)) = appended {
            // A retry of the same changes publishes the same ids at the same seqs.
            self.next = start;
        }
        appended
    }

    /// Publishes entries encoded at the seqs from [`StreamWriter::next_seq`] on, in order, in
    /// atomic batches where the stream takes them; the seq of the last.
    pub(crate) async fn publish(&mut self, bodies: Vec<Bytes>) -> Result<u64, JetStreamError> {
        if self.atomic {
            self.publish_atomic(bodies).await
        } else {
            self.publish_each(bodies).await
        }
    }

    /// Publishes entries one message at a time, [`IN_FLIGHT`] acknowledgements awaited at once.
    async fn publish_each(&mut self, bodies: Vec<Bytes>) -> Result<u64, JetStreamError> {
        let mut acks: VecDeque<(u64, PublishAckFuture)> = VecDeque::new();
        for body in bodies {
            if acks.len() >= IN_FLIGHT
                && let Some((seq, ack)) = acks.pop_front()
            {
                self.acknowledged(seq, ack).await?;
            }
            let seq = self.next;
            let publish = jetstream::message::PublishMessage::build()
                .payload(body)
                .message_id(self.batch_id(seq))
                .expected_last_sequence(seq - 1);
            let ack = self
                .js
                .send_publish(self.subject.clone(), publish)
                .await
                .map_err(unavailable)?;
            acks.push_back((seq, ack));
            self.next += 1;
        }
        for (seq, ack) in acks {
            self.acknowledged(seq, ack).await?;
        }
        Ok(self.next - 1)
    }

    /// Publishes entries encoded at the seqs from [`StreamWriter::next_seq`] on, in atomic
    /// batches; the seq of the last.
    async fn publish_atomic(&mut self, bodies: Vec<Bytes>) -> Result<u64, JetStreamError> {
        // Commits are acknowledged on this inbox in the order they were sent, which is the
        // order the stream stores the batches in.
        let inbox = self.client.new_inbox();
        let mut acks = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(unavailable)?;
        let mut committing = VecDeque::new();
        let mut sent = self.next;
        for batch in bodies.chunks(ATOMIC_BATCH) {
            if committing.len() >= BATCHES_IN_FLIGHT
                && let Some(range) = committing.pop_front()
            {
                self.committed(range, &mut acks).await?;
            }
            let first = sent;
            let last = first + batch.len() as u64 - 1;
            let batch_id = format!("{}-{first}", self.id);
            let messages = batch.iter().enumerate().map(|(i, body)| {
                let mut headers = async_nats::HeaderMap::new();
                if i == 0 {
                    headers.insert(
                        "Nats-Expected-Last-Sequence",
                        (first - 1).to_string().as_str(),
                    );
                }
                if i + 1 == batch.len() {
                    // One id a batch, its last event's: a batch is stored whole, so a retry of
                    // one that was stored is recognised by it.
                    headers.insert("Nats-Msg-Id", self.batch_id(last).as_str());
                }
                (headers, body.clone())
            });
            send_batch(&self.client, &self.subject, &inbox, &batch_id, messages).await?;
            committing.push_back((first, last));
            sent = last + 1;
        }
        while let Some(range) = committing.pop_front() {
            self.committed(range, &mut acks).await?;
        }
        Ok(self.next - 1)
    }

    /// Waits for the acknowledgement of the commit of the batch of seqs `first..=last`.
    async fn committed(
        &mut self,
        (first, last): (u64, u64),
        acks: &mut async_nats::Subscriber,
    ) -> Result<(), JetStreamError> {
        let ack = batch_ack(acks, last).await?;
        match ack.error {
            None if ack.seq == last => {}
            None => {
                return Err(unavailable(format!(
                    "the batch ending at seq {last} was stored ending at {}",
                    ack.seq
                )));
            }
            // Ours, stored by an earlier try (its message ids are this writer's at these
            // seqs, and a batch is stored whole): the stream must end at or past it.
            Some(error) if error.err_code == DUPLICATE_IN_BATCH => {
                let (_, found) = bounds(&self.stream).await?;
                if found < last {
                    return Err(unavailable(error.description));
                }
            }
            Some(error) if error.err_code == WRONG_LAST_SEQUENCE => {
                let (_, found) = bounds(&self.stream).await?;
                // The stream moved on: by this batch, stored by an earlier try (its last
                // event holds this writer's id of it), or by another writer.
                if found < last || !self.stored_as(last, &self.batch_id(last)).await {
                    self.next = found + 1;
                    return Err(JetStreamError::Conflict {
                        stream: self.name.clone(),
                        expected: first - 1,
                        found,
                    });
                }
            }
            Some(error) => return Err(unavailable(error.description)),
        }
        self.next = last + 1;
        Ok(())
    }

    /// Waits for the acknowledgement of the event of `seq`.
    async fn acknowledged(
        &mut self,
        seq: u64,
        ack: PublishAckFuture,
    ) -> Result<(), JetStreamError> {
        match ack.await {
            // A duplicate is ours, stored by an earlier try: its seq says where.
            Ok(ack) if ack.sequence == seq => Ok(()),
            Ok(ack) => Err(JetStreamError::Conflict {
                stream: self.name.clone(),
                expected: seq - 1,
                found: ack.sequence,
            }),
            // Stored by an earlier try of this writer's: the message there has its id.
            Err(e)
                if e.kind() == PublishErrorKind::WrongLastSequence
                    && self.stored_as(seq, &self.batch_id(seq)).await =>
            {
                Ok(())
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                let (_, found) = bounds(&self.stream).await?;
                self.next = found + 1;
                Err(JetStreamError::Conflict {
                    stream: self.name.clone(),
                    expected: seq - 1,
                    found,
                })
            }
            Err(e) => Err(JetStreamError::unavailable(
                &format!("the event of seq {seq} was not acknowledged"),
                e,
            )),
        }
    }
}

/// JetStream's error code for a batch whose message ids were seen before.
const DUPLICATE_IN_BATCH: u64 = 10201;
/// JetStream's error code for an expected last sequence, of the stream or of a subject, that
/// is not the one stored.
pub(super) const WRONG_LAST_SEQUENCE: u64 = 10071;

/// Sends `messages` (each with its own headers) on `subject` as one atomic batch `batch_id`,
/// whose commit is acknowledged on `inbox`.
pub(super) async fn send_batch(
    client: &async_nats::Client,
    subject: &str,
    inbox: &str,
    batch_id: &str,
    messages: impl ExactSizeIterator<Item = (async_nats::HeaderMap, Bytes)>,
) -> Result<(), JetStreamError> {
    let count = messages.len();
    for (i, (mut headers, body)) in messages.enumerate() {
        headers.insert("Nats-Batch-Id", batch_id);
        headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        let published = if i + 1 == count {
            headers.insert("Nats-Batch-Commit", "1");
            client
                .publish_with_reply_and_headers(subject.to_owned(), inbox.to_owned(), headers, body)
                .await
        } else {
            // Only the commit is acknowledged: the others need no reply.
            client
                .publish_with_headers(subject.to_owned(), headers, body)
                .await
        };
        published.map_err(unavailable)?;
    }
    Ok(())
}

/// The acknowledgement of the next batch committed on `acks`, the one ending at seq `last`.
pub(super) async fn batch_ack(
    acks: &mut async_nats::Subscriber,
    last: u64,
) -> Result<BatchAck, JetStreamError> {
    let reply = match tokio::time::timeout(REQUEST_TIMEOUT, acks.next()).await {
        Ok(Some(reply)) => reply,
        Ok(None) => return Err(unavailable("the connection closed")),
        Err(_) => {
            return Err(unavailable(format!(
                "the batch ending at seq {last} was not acknowledged in time"
            )));
        }
    };
    serde_json::from_slice(&reply.payload)
        .map_err(|e| unavailable(format!("an acknowledgement it cannot read: {e}")))
}

/// The acknowledgement of an atomic batch's commit.
#[derive(serde::Deserialize)]
pub(super) struct BatchAck {
    /// The seq of the batch's last message, when it was stored.
    #[serde(default)]
    pub seq: u64,
    /// Why it was not.
    pub error: Option<ApiError>,
}

/// An error in a JetStream API answer.
#[derive(serde::Deserialize)]
pub(super) struct ApiError {
    /// JetStream's code for it.
    pub err_code: u64,
    /// What it says.
    #[serde(default)]
    pub description: String,
}

/// A publish that failed for `why`.
fn unavailable(why: impl std::fmt::Display) -> JetStreamError {
    JetStreamError::unavailable("cannot publish", why)
}
