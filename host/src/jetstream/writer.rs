//! Appending to a stream, exactly once: each event is published at the seq it encodes, with the
//! stream's last sequence expected to be the one before (so it lands there or nowhere) and a
//! message id (so a retry after a lost acknowledgement is recognised, not stored again).

use super::{JetStreamError, StreamAddr, bounds, connect, open_stream};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use pulsewatch_log::Change;
use pulsewatch_log::codec::encode_entry;
use std::collections::VecDeque;

/// Acknowledgements awaited at once: enough to keep a loopback server busy (see the jetstream
/// bench), few enough that a failure is met soon.
const IN_FLIGHT: usize = 256;

/// A writer of one stream.
pub struct StreamWriter {
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
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| JetStreamError::unavailable("no randomness", e))?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        StreamWriter::open_as(addr, &id).await
    }

    /// Opens the stream of `addr` for appending with message ids `<id>-<seq>`: a writer that
    /// restarts under the same id and writes the same event at the same seq (a relay) is
    /// recognised as retrying.
    pub async fn open_as(addr: &StreamAddr, id: &str) -> Result<StreamWriter, JetStreamError> {
        let client = connect(addr).await?;
        let js = jetstream::new(client);
        let stream = open_stream(&js, addr).await?;
        let (_, last) = bounds(&stream).await?;
        Ok(StreamWriter {
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

    /// The body of the message of `seq`.
    pub(crate) async fn stored(&self, seq: u64) -> Result<Vec<u8>, JetStreamError> {
        let message =
            self.stream.direct_get(seq).await.map_err(|e| {
                JetStreamError::unavailable(&format!("cannot read message {seq}"), e)
            })?;
        Ok(message.payload.to_vec())
    }

    /// Appends `changes` in order; the seq of the last, or of the last stored before when
    /// `changes` is empty.
    ///
    /// If another writer appended meanwhile, fails with [`JetStreamError::Conflict`] from the
    /// first event it displaced, and stores none from there on. After another failure
    /// ([`JetStreamError::Unavailable`]: a lost connection, no acknowledgement in time) it is
    /// not known how many were stored: append the same changes again with this writer, and
    /// those already stored are recognised by their ids, not stored twice (within the
    /// stream's two-minute duplicate window).
    pub async fn append(&mut self, changes: &[Change]) -> Result<u64, JetStreamError> {
        let start = self.next;
        let mut seq = start;
        let bodies = changes.iter().map(|change| {
            let mut body = Vec::new();
            encode_entry(seq, change, &mut body);
            seq += 1;
            Bytes::from(body)
        });
        let appended = self.publish(bodies).await;
        if let Err(JetStreamError::Unavailable(_)) = appended {
            // A retry of the same changes publishes the same ids at the same seqs.
            self.next = start;
        }
        appended
    }

    /// Publishes entries encoded at the seqs from [`StreamWriter::next_seq`] on, in order;
    /// the seq of the last.
    pub(crate) async fn publish(
        &mut self,
        bodies: impl IntoIterator<Item = Bytes>,
    ) -> Result<u64, JetStreamError> {
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
                .message_id(format!("{}-{seq}", self.id))
                .expected_last_sequence(seq - 1);
            let ack = self
                .js
                .send_publish(self.subject.clone(), publish)
                .await
                .map_err(|e| JetStreamError::unavailable("cannot publish", e))?;
            acks.push_back((seq, ack));
            self.next += 1;
        }
        for (seq, ack) in acks {
            self.acknowledged(seq, ack).await?;
        }
        Ok(self.next - 1)
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
