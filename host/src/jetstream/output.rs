//! Derived events into a stream, exactly once, whichever host commits them: the output side of
//! `pulse:watch/output` on JetStream ([`StreamOutput`]), for plugins that move between hosts.
//!
//! A stream cannot commit events and a checkpoint in one step as a log's transaction does, so
//! each holds what the other cannot:
//! - **The events** a plugin derives go on a subject of its own, `<STREAM>.derived.<plugin>`, in
//!   atomic batches. Each carries where it came from (`Pulsewatch-Origin: plugin:seq:index`, the
//!   id of [`pulsewatch_log::Origin`]), so the plugin's last event in the stream, one request
//!   away, says how far its derived events go. A batch expects the subject's last seq to be the
//!   one this host last saw: a batch of another host's (the plugin moved, or a stale host woke
//!   up) in between makes it fail, and the commit reads the mark again and goes on from there.
//! - **The checkpoint** (cursor and state) goes into the key-value bucket
//!   `pulsewatch_<STREAM>_sources` after the events, with a revision check.
//!
//! So a commit cut short leaves the events ahead of the checkpoint, never behind. The plugin
//! resumes from the checkpoint and derives the same events again, and those up to the mark are
//! dropped: the redb rule ("drop what the output already has"), with the mark in place of the
//! cursor stored with the events.

use super::writer::{ATOMIC_BATCH, WRONG_LAST_SEQUENCE, batch_ack, send_batch};
use super::{JetStreamError, StreamAddr, bounds, connect, open_stream, random_id};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use pulsewatch_log::codec::encode_entry;
use pulsewatch_log::{Checkpoint, Derived, Origin, OutputLog, OutputLogError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The header that says where a derived event came from.
pub const ORIGIN_HEADER: &str = "Pulsewatch-Origin";

/// The header that names the input a derived event came from.
pub const INPUT_HEADER: &str = "Pulsewatch-Input";

/// How many times a commit reads the stream and the checkpoint again after another writer
/// moved them, before it says the output is unavailable (the plugin commits again later).
const RETRIES: usize = 50;

/// The longest a commit may take before the plugin is told the output is unavailable.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Room in a server's largest message for a checkpoint's input name and encoding.
const CHECKPOINT_OVERHEAD: usize = 4 << 10;

/// A stream that plugins commit derived events to, with a connection of its own: its
/// [`OutputLog`] calls block on the runtime that opened it, which must outlive it.
pub struct StreamOutput {
    addr: StreamAddr,
    /// The runtime that drives the connection: [`OutputLog`] calls come from blocking threads.
    runtime: tokio::runtime::Handle,
    client: async_nats::Client,
    stream: stream::Stream,
    sources: kv::Store,
    max_state: usize,
    /// Where each plugin stands here, as this process last read or wrote it.
    marks: Mutex<HashMap<String, Mark>>,
}

impl std::fmt::Debug for StreamOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOutput")
            .field("addr", &self.addr.to_string())
            .finish_non_exhaustive()
    }
}

/// Where one plugin's derived events and checkpoint stand in an output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mark {
    /// The seq of its last derived event in the stream, 0 before any.
    last: u64,
    /// That event's place: the input seq it derives from, and its index among those derived
    /// from it.
    place: (u64, u32),
    /// The revision of its checkpoint key, 0 before any.
    revision: u64,
    /// The cursor of that checkpoint.
    cursor: u64,
}

impl Mark {
    /// Whether the derived event at `place` is held already.
    fn holds(&self, (from, index): (u64, u32)) -> bool {
        from <= self.cursor || (from, index) <= self.place
    }
}

/// What a publish of derived events did.
enum Published {
    /// Nothing: there was nothing to publish.
    Nothing,
    /// Stored them, the last at seq `last`, derived at `place`.
    Through { last: u64, place: (u64, u32) },
    /// Nothing: the stream, or the plugin's subject in it, moved from where it was expected.
    Moved,
}

impl StreamOutput {
    /// Connects to the stream of `addr`, checks that it holds a log, and makes the bucket of
    /// its checkpoints if it is missing. Must be called inside the tokio runtime that is to
    /// drive the connection.
    pub async fn open(addr: &StreamAddr) -> Result<Arc<StreamOutput>, JetStreamError> {
        let client = connect(addr).await?;
        let js = jetstream::new(client.clone());
        let stream = open_stream(&js, addr).await?;
        let derived = addr.derived_subject("*");
        if !stream.cached_info().config.subjects.contains(&derived) {
            return Err(JetStreamError::BadConfig {
                stream: addr.stream.clone(),
                why: format!(
                    "it does not take {derived}, the subjects plugins derive events on (streams \
                     made by `pulsewatch stream create` take it; add it to the stream's subjects \
                     with `nats stream edit`)"
                ),
            });
        }
        let bucket = format!("pulsewatch_{}_sources", addr.stream);
        let sources = match js.get_key_value(&bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    history: 1,
                    storage: stream::StorageType::File,
                    num_replicas: stream.cached_info().config.num_replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    JetStreamError::unavailable(
                        &format!("cannot make the bucket {bucket} of its checkpoints"),
                        e,
                    )
                })?,
        };
        let max_payload = client.server_info().max_payload;
        Ok(Arc::new(StreamOutput {
            addr: addr.clone(),
            runtime: tokio::runtime::Handle::current(),
            client,
            stream,
            sources,
            max_state: max_payload.saturating_sub(CHECKPOINT_OVERHEAD),
            marks: Mutex::default(),
        }))
    }

    /// Checks that `plugin` can write to a stream output: its name is a token of a subject and a
    /// key of a bucket.
    pub fn check_plugin(plugin: &str) -> Result<(), JetStreamError> {
        let valid = !plugin.is_empty()
            && plugin
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b));
        if valid {
            Ok(())
        } else {
            Err(JetStreamError::BadName(format!(
                "plugin {plugin:?}: a plugin that writes to a stream is named with letters, \
                 digits, '-', '_' and '='"
            )))
        }
    }

    /// Where `plugin` stands, as the server says now.
    async fn read_mark(&self, plugin: &str) -> Result<(Mark, Option<Checkpoint>), JetStreamError> {
        let mut mark = Mark::default();
        let checkpoint = match self.sources.entry(plugin).await {
            // A key deleted by hand holds a marker: the next write expects its revision too.
            Ok(Some(entry)) if entry.operation != kv::Operation::Put => {
                mark.revision = entry.revision;
                None
            }
            Ok(Some(entry)) => {
                let checkpoint = Checkpoint::from_bytes(&entry.value).map_err(|why| {
                    JetStreamError::Unavailable(format!(
                        "the checkpoint of {plugin} in {} cannot be read: {why}",
                        self.addr
                    ))
                })?;
                mark.revision = entry.revision;
                mark.cursor = checkpoint.cursor;
                Some(checkpoint)
            }
            Ok(None) => None,
            Err(e) => return Err(JetStreamError::unavailable("cannot read a checkpoint", e)),
        };
        // From the stream's leader: what the next batch's expectation is checked against.
        let subject = self.addr.derived_subject(plugin);
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => {
                mark.last = message.sequence;
                mark.place = origin(Some(&message.headers))
                    .map(|origin| (origin.seq, origin.index))
                    .ok_or_else(|| JetStreamError::Undecodable {
                        seq: message.sequence,
                        why: format!("it is on {subject} without a {ORIGIN_HEADER} header"),
                    })?;
            }
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(JetStreamError::unavailable("cannot read the stream", e)),
        }
        Ok((mark, checkpoint))
    }

    /// Commits `derived` and the checkpoint of `plugin`; see [`OutputLog::commit`].
    async fn commit_async(
        &self,
        plugin: &str,
        input: &str,
        cursor: u64,
        state: Option<&[u8]>,
        derived: &[Derived],
    ) -> Result<(), JetStreamError> {
        let known = self.lock().get(plugin).copied();
        let mut mark = match known {
            Some(mark) => mark,
            None => self.read_mark(plugin).await?.0,
        };
        // Each derived event's place: its index among those derived from the same input seq,
        // all of which one commit carries.
        let mut places = Vec::with_capacity(derived.len());
        for (i, d) in derived.iter().enumerate() {
            let index = match i.checked_sub(1).map(|p| (derived[p].from, places[p])) {
                Some((from, (_, index))) if from == d.from => index + 1,
                _ => 0,
            };
            places.push((d.from, index));
        }
        let mut tries = 0;
        loop {
            let fresh = places.partition_point(|&place| mark.holds(place));
            match self
                .publish(plugin, input, &mark, &derived[fresh..], &places[fresh..])
                .await?
            {
                Published::Nothing => {}
                Published::Through { last, place } => (mark.last, mark.place) = (last, place),
                Published::Moved => {
                    // By another writer of the stream, or another host of the plugin.
                    tries += 1;
                    if tries > RETRIES {
                        return Err(JetStreamError::Unavailable(format!(
                            "other writers of {} kept appending between {RETRIES} tries to \
                             commit; the plugin commits again later",
                            self.addr
                        )));
                    }
                    back_off(tries).await;
                    mark = self.read_mark(plugin).await?.0;
                    continue;
                }
            }
            if cursor < mark.cursor {
                // A later checkpoint is stored (another output was behind): it stays.
                break;
            }
            let checkpoint = Checkpoint::encode(input, cursor, state).into();
            match self.sources.update(plugin, checkpoint, mark.revision).await {
                Ok(revision) => {
                    (mark.revision, mark.cursor) = (revision, cursor);
                    break;
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tries += 1;
                    if tries > RETRIES {
                        return Err(JetStreamError::unavailable("cannot store a checkpoint", e));
                    }
                    back_off(tries).await;
                    // Written by another host of the plugin: its events are in the stream too.
                    mark = self.read_mark(plugin).await?.0;
                }
                Err(e) => return Err(JetStreamError::unavailable("cannot store a checkpoint", e)),
            }
        }
        self.lock().insert(plugin.to_owned(), mark);
        Ok(())
    }

    /// Publishes `derived` (at `places`) after `mark`, in atomic batches.
    async fn publish(
        &self,
        plugin: &str,
        input: &str,
        mark: &Mark,
        derived: &[Derived],
        places: &[(u64, u32)],
    ) -> Result<Published, JetStreamError> {
        if derived.is_empty() {
            return Ok(Published::Nothing);
        }
        let subject = self.addr.derived_subject(plugin);
        let inbox = self.client.new_inbox();
        let mut acks = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| JetStreamError::unavailable("cannot publish", e))?;
        let (_, mut last) = bounds(&self.stream).await?;
        let mut subject_last = mark.last;
        let id = random_id();
        for (batch, places) in derived
            .chunks(ATOMIC_BATCH)
            .zip(places.chunks(ATOMIC_BATCH))
        {
            let first = last + 1;
            let messages = batch.iter().zip(places).enumerate().map(|(i, (d, place))| {
                let mut headers = HeaderMap::new();
                if i == 0 {
                    headers.insert("Nats-Expected-Last-Sequence", last.to_string().as_str());
                    headers.insert(
                        "Nats-Expected-Last-Subject-Sequence",
                        subject_last.to_string().as_str(),
                    );
                }
                let origin = format!("{plugin}:{}:{}", place.0, place.1);
                headers.insert(ORIGIN_HEADER, origin.as_str());
                headers.insert(INPUT_HEADER, input);
                let mut body = Vec::new();
                encode_entry(first + i as u64, &d.change, &mut body);
                (headers, Bytes::from(body))
            });
            let batch_id = format!("{id}-{first}");
            send_batch(&self.client, &subject, &inbox, &batch_id, messages).await?;
            let end = first + batch.len() as u64 - 1;
            let ack = batch_ack(&mut acks, end).await?;
            match ack.error {
                None if ack.seq == end => {}
                None => {
                    return Err(JetStreamError::Unavailable(format!(
                        "a batch of derived events ending at seq {end} was stored ending at {}",
                        ack.seq
                    )));
                }
                Some(error) if error.err_code == WRONG_LAST_SEQUENCE => {
                    return Ok(Published::Moved);
                }
                Some(error) => {
                    return Err(JetStreamError::Unavailable(format!(
                        "cannot publish derived events: {}",
                        error.description
                    )));
                }
            }
            (last, subject_last) = (end, end);
        }
        Ok(Published::Through {
            last,
            place: *places.last().expect("derived is not empty"),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Mark>> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl OutputLog for StreamOutput {
    fn checkpoint(&self, plugin: &str) -> Result<Option<Checkpoint>, OutputLogError> {
        let (mark, checkpoint) = self.runtime.block_on(self.read_mark(plugin))?;
        self.lock().insert(plugin.to_owned(), mark);
        Ok(checkpoint)
    }

    fn commit(
        &self,
        plugin: &str,
        input: &str,
        cursor: u64,
        state: Option<&[u8]>,
        derived: &[Derived],
    ) -> Result<(), OutputLogError> {
        let committed = self.runtime.block_on(async {
            tokio::time::timeout(
                COMMIT_TIMEOUT,
                self.commit_async(plugin, input, cursor, state, derived),
            )
            .await
            .unwrap_or_else(|_| {
                Err(JetStreamError::Unavailable(format!(
                    "a commit took more than {} s",
                    COMMIT_TIMEOUT.as_secs()
                )))
            })
        });
        if committed.is_err() {
            // What this process knew may be stale now: it reads it again next time.
            self.lock().remove(plugin);
        }
        Ok(committed?)
    }

    fn max_state(&self) -> usize {
        self.max_state
    }

    fn max_payload(&self) -> Option<usize> {
        // A message holds the entry and its headers.
        Some(self.max_state)
    }
}

/// Waits before the `tries`th try of a commit that met another writer: a random time of up to
/// `tries` ms, so that plugins committing to one stream at once do not meet again and again.
async fn back_off(tries: usize) {
    let mut random = [0u8; 2];
    let _ = getrandom::fill(&mut random);
    let micros = u64::from(u16::from_le_bytes(random)) % (tries as u64 * 1000);
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

/// The plugin and place `plugin:seq:index` names.
fn place(origin: &str) -> Option<(&str, (u64, u32))> {
    let (rest, index) = origin.rsplit_once(':')?;
    let (plugin, seq) = rest.rsplit_once(':')?;
    Some((plugin, (seq.parse().ok()?, index.parse().ok()?)))
}

/// Where the derived event with `headers` came from; `None` for an event a writer appended.
pub(crate) fn origin(headers: Option<&HeaderMap>) -> Option<Origin> {
    let headers = headers?;
    let (plugin, (seq, index)) = place(headers.get(ORIGIN_HEADER)?.as_str())?;
    Some(Origin {
        input: headers
            .get(INPUT_HEADER)
            .map_or_else(String::new, |input| input.to_string()),
        plugin: plugin.to_owned(),
        seq,
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_and_what_a_mark_holds() {
        assert_eq!(place("p:12:3"), Some(("p", (12, 3))));
        assert_eq!(place("a:b:12:0"), Some(("a:b", (12, 0))));
        assert_eq!(place("p:x:1"), None);
        let mark = Mark {
            place: (12, 1),
            cursor: 10,
            ..Default::default()
        };
        assert!(mark.holds((10, 5)), "at or before the checkpoint's cursor");
        assert!(mark.holds((12, 1)));
        assert!(!mark.holds((12, 2)));
        assert!(mark.holds((11, 0)), "before the last event written");
        assert!(!mark.holds((13, 0)));
    }
}
