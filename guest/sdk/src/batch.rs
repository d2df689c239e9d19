//! A packed batch from `poll-packed`, read in place: one buffer for the whole batch, and views
//! into it that allocate nothing per event.

use crate::bindings::pulse::watch::feed as wit;
use crate::{ChangeKind, Event, PollError, Uuid};
use pulsewatch_log::EntryRef;
use pulsewatch_log::codec::Entries;

pulsewatch_log::wire_conversions!();

/// The events of a [`Batch`], in seq order.
pub type BatchIter<'a> = std::iter::Map<Entries<'a>, fn(EntryRef<'a>) -> EventRef<'a>>;

/// The events of one poll, as the host sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    bytes: Vec<u8>,
    len: usize,
}

impl Batch {
    /// The batch in `bytes` (as `poll-packed` returns them), checked to be whole entries.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, PollError> {
        let mut entries = Entries::new(&bytes);
        let len = entries.by_ref().count();
        if let Some(e) = entries.error() {
            return Err(PollError::Unavailable(format!(
                "a malformed packed batch: {e}"
            )));
        }
        Ok(Batch { bytes, len })
    }

    /// The batch the host sent for the `len` events after a cursor, trusted to be whole entries
    /// (the host checked every one against its checksum): not read twice.
    pub(crate) fn from_host(bytes: Vec<u8>, len: usize) -> Self {
        Batch { bytes, len }
    }

    /// Its events, in seq order.
    pub fn iter(&self) -> BatchIter<'_> {
        Entries::new(&self.bytes).map(EventRef as fn(_) -> _)
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none: the plugin has caught up.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Owned copies of its events.
    pub fn to_events(&self) -> Vec<Event> {
        self.iter().map(|e| e.to_event()).collect()
    }

    /// The bytes as received, in the layout of `poll-packed` (wit/feed.wit).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = EventRef<'a>;
    type IntoIter = BatchIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// One event of a [`Batch`], read in place: each accessor loads a field from a known offset,
/// and [`EventRef::payload`] borrows the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a>(EntryRef<'a>);

impl<'a> EventRef<'a> {
    /// Its position in the log.
    pub fn seq(&self) -> u64 {
        self.0.seq()
    }

    /// What happened.
    pub fn kind(&self) -> ChangeKind {
        change_kind(self.0.kind())
    }

    /// The entity that changed.
    pub fn entity(&self) -> Uuid {
        uuid(self.0.entity())
    }

    /// The collective it belongs to.
    pub fn collective(&self) -> Uuid {
        uuid(self.0.collective())
    }

    /// When the writer recorded it, in ms since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }

    /// The application data, borrowed from the batch.
    pub fn payload(&self) -> &'a [u8] {
        self.0.payload()
    }

    /// An owned copy, as `poll` returns it.
    pub fn to_event(&self) -> Event {
        Event {
            seq: self.seq(),
            kind: self.kind(),
            entity: self.entity(),
            collective: self.collective(),
            timestamp_ms: self.timestamp_ms(),
            payload: self.payload().to_vec(),
        }
    }
}
