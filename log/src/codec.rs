//! The stored form of events, which is also their form on the wire in a packed read.
//!
//! Events are stored in batches, as Kafka stores record batches: one redb value holds the
//! entries of consecutive events, under the seq of the first, behind one checksum. A poll then
//! copies stored bytes instead of building values, and pays the storage engine's per-value cost
//! once per batch instead of once per event.
//!
//! An **entry** is one event in a fixed little-endian layout, every field at a known offset:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | seq (`u64`) |
//! | 8 | 1 | kind: 0 created, 1 updated, 2 archived, 3 deleted |
//! | 9 | 16 | entity (`u128`) |
//! | 25 | 16 | collective (`u128`) |
//! | 41 | 8 | timestamp, ms since the Unix epoch (`u64`) |
//! | 49 | 8 | payload length n (`u64`) |
//! | 57 | n | payload |
//!
//! It is bincode 2's fixed-int little-endian encoding of `(seq, kind as u8, entity, collective,
//! timestamp_ms, payload as bytes)`, which is how it is written. A packed read returns entries
//! back to back, exactly as stored (the same layout is the contract's, in `wit/feed.wit`).
//!
//! A **batch** is a header and entries whose seqs follow one another from the key it is stored
//! under:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | batch version: 2 |
//! | 1 | 4 | CRC32C (Castagnoli) of bytes 5.. (`u32`) |
//! | 5 | 4 | entry count (`u32`) |
//! | 9 | .. | entries |
//!
//! The checksum is verified, and the entries' seqs and lengths checked, before any event of a
//! batch is delivered, by either read: a damaged batch is reported as undecodable at the first
//! seq wanted from it, never delivered as data. (Version 1, the layout before, stored one
//! bincode varint record per event without a checksum; such a log is upgraded with
//! [`crate::Log::upgrade`].)

use crate::event::{Change, ChangeKind, Event};

/// The batch version this build writes and reads.
pub const BATCH_V2: u8 = 2;

/// A batch takes no more entries once it reaches this many bytes (unless it holds one entry):
/// a read that starts in the middle of a batch reads at most this much it does not return, and
/// the storage engine's cost per value is paid once per this many bytes.
pub const BATCH_TARGET_BYTES: usize = 32 << 10;

/// The most entries in one batch.
pub const BATCH_MAX_ENTRIES: u32 = 1024;

/// The previous layout's version byte: one bincode varint record per event, no checksum.
pub const RECORD_V1: u8 = 1;

/// bincode as the previous layout used it.
const V1_CONFIG: bincode::config::Configuration = bincode::config::standard();

/// bincode configured for the fixed layout: fixed-width little-endian integers.
const CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
> = bincode::config::standard().with_fixed_int_encoding();

/// Offsets of an entry.
pub mod entry {
    /// The seq.
    pub const SEQ: usize = 0;
    /// The kind byte.
    pub const KIND: usize = 8;
    /// The entity.
    pub const ENTITY: usize = 9;
    /// The collective.
    pub const COLLECTIVE: usize = 25;
    /// The timestamp.
    pub const TIMESTAMP: usize = 41;
    /// The payload length.
    pub const PAYLOAD_LEN: usize = 49;
    /// The payload; also the size of an entry with an empty payload.
    pub const PAYLOAD: usize = 57;
}

/// Offsets of a batch.
pub mod batch {
    /// The version byte.
    pub const VERSION: usize = 0;
    /// The checksum.
    pub const CRC: usize = 1;
    /// The entry count, where the checksummed bytes begin.
    pub const COUNT: usize = 5;
    /// The first entry.
    pub const ENTRIES: usize = 9;
}

/// Why stored bytes could not be read as events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The batch version is not one this build can read.
    #[error("unknown batch version {0} (this build reads version {BATCH_V2})")]
    UnknownVersion(u8),
    /// The checksum does not match the bytes: they were damaged.
    #[error("damaged batch: checksum {stored:#010x} stored, {computed:#010x} computed")]
    Checksum {
        /// The checksum stored.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// The bytes do not follow the layout.
    #[error("malformed: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(what.into())
}

fn out_of_order(found: u64, due: u64) -> DecodeError {
    malformed(format!("seq {found} where {due} was due"))
}

/// An entry as bincode writes it.
#[derive(serde::Serialize)]
struct EntryFields<'a> {
    seq: u64,
    kind: u8,
    entity: u128,
    collective: u128,
    timestamp_ms: u64,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
}

/// The byte that stands for `kind` in an entry.
pub fn kind_byte(kind: ChangeKind) -> u8 {
    match kind {
        ChangeKind::Created => 0,
        ChangeKind::Updated => 1,
        ChangeKind::Archived => 2,
        ChangeKind::Deleted => 3,
    }
}

/// The kind an entry's byte stands for.
pub fn kind_of(byte: u8) -> Option<ChangeKind> {
    ChangeKind::ALL.get(usize::from(byte)).copied()
}

/// Appends the entry of the change with `seq` to `out`.
pub fn encode_entry(seq: u64, change: &Change, out: &mut Vec<u8>) {
    let fields = EntryFields {
        seq,
        kind: kind_byte(change.kind),
        entity: change.entity,
        collective: change.collective,
        timestamp_ms: change.timestamp_ms,
        payload: &change.payload,
    };
    // Writing to a Vec cannot fail and every field is encodable.
    bincode::serde::encode_into_std_write(&fields, out, CONFIG)
        .expect("encoding an entry into a Vec cannot fail");
}

/// The size of the entry of a change with a payload of `payload_len` bytes.
pub fn entry_len(payload_len: usize) -> usize {
    entry::PAYLOAD + payload_len
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn u128_at(bytes: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"))
}

/// Why `bytes` do not begin with a whole entry.
#[cold]
fn not_an_entry(bytes: &[u8]) -> DecodeError {
    let Some(header) = bytes.get(..entry::PAYLOAD) else {
        return malformed(format!(
            "{} bytes left, shorter than an entry's {}-byte header",
            bytes.len(),
            entry::PAYLOAD
        ));
    };
    if kind_of(header[entry::KIND]).is_none() {
        return malformed(format!("unknown kind {}", header[entry::KIND]));
    }
    malformed(format!(
        "payload of {} bytes with {} bytes left",
        u64_at(header, entry::PAYLOAD_LEN),
        bytes.len()
    ))
}

/// One entry, read in place: every accessor is a load from a known offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    bytes: &'a [u8],
}

impl<'a> EntryRef<'a> {
    /// The entry at the start of `bytes`, and the bytes after it.
    #[inline]
    pub fn split(bytes: &'a [u8]) -> Result<(Self, &'a [u8]), DecodeError> {
        let Some(header) = bytes.get(..entry::PAYLOAD) else {
            return Err(not_an_entry(bytes));
        };
        let payload_len = u64_at(header, entry::PAYLOAD_LEN);
        let len = usize::try_from(payload_len)
            .ok()
            .and_then(|n| n.checked_add(entry::PAYLOAD))
            .filter(|&len| len <= bytes.len());
        match len {
            Some(len) if header[entry::KIND] < 4 => {
                let (entry, rest) = bytes.split_at(len);
                Ok((EntryRef { bytes: entry }, rest))
            }
            _ => Err(not_an_entry(bytes)),
        }
    }

    #[cfg(feature = "store")]
    /// Splits off the entry at the front of `bytes`, as [`EntryRef::split`] does, and checks
    /// that it is the entry of seq `due`.
    pub(crate) fn split_due(bytes: &'a [u8], due: u64) -> Result<(Self, &'a [u8]), DecodeError> {
        let (entry, rest) = Self::split(bytes)?;
        if entry.seq() != due {
            return Err(out_of_order(entry.seq(), due));
        }
        Ok((entry, rest))
    }

    /// The entry's bytes, as stored and sent.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Its seq.
    pub fn seq(&self) -> u64 {
        u64_at(self.bytes, entry::SEQ)
    }

    /// What happened.
    pub fn kind(&self) -> ChangeKind {
        kind_of(self.bytes[entry::KIND]).expect("checked when split")
    }

    /// The entity that changed.
    pub fn entity(&self) -> u128 {
        u128_at(self.bytes, entry::ENTITY)
    }

    /// The collective it belongs to.
    pub fn collective(&self) -> u128 {
        u128_at(self.bytes, entry::COLLECTIVE)
    }

    /// When it happened, in ms since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        u64_at(self.bytes, entry::TIMESTAMP)
    }

    /// The application data.
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[entry::PAYLOAD..]
    }

    /// An owned copy.
    pub fn to_event(&self) -> Event {
        Event {
            seq: self.seq(),
            change: Change {
                kind: self.kind(),
                entity: self.entity(),
                collective: self.collective(),
                timestamp_ms: self.timestamp_ms(),
                payload: self.payload().to_vec(),
            },
        }
    }
}

/// Entries back to back, as a packed read returns them. Iteration stops at the first bytes that
/// are not a whole entry, and [`Entries::error`] then says why: a reader of bytes the host
/// checked pays for no error handling per entry.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    rest: &'a [u8],
    error: Option<DecodeError>,
}

impl<'a> Entries<'a> {
    /// The entries in `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Entries {
            rest: bytes,
            error: None,
        }
    }

    /// Why iteration stopped before the end of the bytes, if it did.
    pub fn error(&self) -> Option<&DecodeError> {
        self.error.as_ref()
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = EntryRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<EntryRef<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        match EntryRef::split(self.rest) {
            Ok((entry, rest)) => {
                self.rest = rest;
                Some(entry)
            }
            Err(e) => {
                self.rest = &[];
                self.error = Some(e);
                None
            }
        }
    }
}

/// Builds one batch.
#[derive(Debug)]
pub struct BatchWriter {
    bytes: Vec<u8>,
    count: u32,
}

impl BatchWriter {
    /// An empty batch.
    pub fn new() -> Self {
        let mut bytes = Vec::with_capacity(BATCH_TARGET_BYTES);
        bytes.extend_from_slice(&[BATCH_V2, 0, 0, 0, 0, 0, 0, 0, 0]);
        BatchWriter { bytes, count: 0 }
    }

    /// A batch that goes on from a stored one, already checked (entries included).
    pub fn extending(stored: &CheckedBatch<'_>) -> Self {
        BatchWriter {
            bytes: stored.bytes.to_vec(),
            count: stored.count,
        }
    }

    /// Whether the entry of a change with a payload of `payload_len` bytes still belongs in
    /// this batch rather than a new one.
    pub fn has_room_for(&self, payload_len: usize) -> bool {
        self.count == 0
            || (self.count < BATCH_MAX_ENTRIES
                && self.bytes.len() + entry_len(payload_len) <= BATCH_TARGET_BYTES)
    }

    /// Appends the entry of the change with `seq`, which must follow the last one.
    pub fn push(&mut self, seq: u64, change: &Change) {
        encode_entry(seq, change, &mut self.bytes);
        self.count += 1;
    }

    /// Appends an entry read from another batch, as it is (its seq must follow the last one).
    pub fn push_entry(&mut self, entry: &EntryRef<'_>) {
        self.bytes.extend_from_slice(entry.as_bytes());
        self.count += 1;
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The stored form: its header filled in, checksum last.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes[batch::COUNT..batch::ENTRIES].copy_from_slice(&self.count.to_le_bytes());
        let crc = crc32c::crc32c(&self.bytes[batch::COUNT..]);
        self.bytes[batch::CRC..batch::COUNT].copy_from_slice(&crc.to_le_bytes());
        self.bytes
    }
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::new()
    }
}

/// A stored batch whose version and checksum have been checked; its entries are checked as
/// they are read (whole, with the seqs that follow from its key).
#[derive(Debug, Clone, Copy)]
pub struct CheckedBatch<'a> {
    bytes: &'a [u8],
    first: u64,
    count: u32,
}

impl<'a> CheckedBatch<'a> {
    /// Checks the version and checksum of the batch stored under `first`.
    pub fn new(first: u64, bytes: &'a [u8]) -> Result<Self, DecodeError> {
        match bytes.first() {
            Some(&BATCH_V2) => {}
            Some(&other) => return Err(DecodeError::UnknownVersion(other)),
            None => return Err(malformed("an empty batch")),
        }
        if bytes.len() < batch::ENTRIES {
            return Err(malformed(format!("a batch of {} bytes", bytes.len())));
        }
        let stored = u32_at(bytes, batch::CRC);
        let computed = crc32c::crc32c(&bytes[batch::COUNT..]);
        if stored != computed {
            return Err(DecodeError::Checksum { stored, computed });
        }
        let count = u32_at(bytes, batch::COUNT);
        if count == 0 || first.checked_add(u64::from(count) - 1).is_none() {
            return Err(malformed(format!("{count} entries from seq {first}")));
        }
        Ok(CheckedBatch {
            bytes,
            first,
            count,
        })
    }

    /// The seq of its first entry.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The seq of its last entry.
    pub fn last(&self) -> u64 {
        // In this order: a batch may end at seq u64::MAX (`new` checked that it fits).
        self.first + (u64::from(self.count) - 1)
    }

    /// How many entries it holds (never 0).
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether it holds no entry: never, for a checked batch.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Its bytes in full, as stored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Its entries, in seq order, each checked: whole, with the seq that follows.
    pub fn entries(&self) -> BatchEntries<'a> {
        BatchEntries {
            entries: Entries::new(&self.bytes[batch::ENTRIES..]),
            next_seq: self.first,
            left: self.count,
            ended: false,
        }
    }
}

/// The entries of a [`CheckedBatch`].
#[derive(Debug, Clone)]
pub struct BatchEntries<'a> {
    entries: Entries<'a>,
    next_seq: u64,
    left: u32,
    /// Whether the end of the bytes was checked, once the count was reached.
    ended: bool,
}

impl<'a> Iterator for BatchEntries<'a> {
    type Item = Result<EntryRef<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            // Once: past the count, the bytes must end.
            if self.ended {
                return None;
            }
            self.ended = true;
            return match self.entries.next() {
                Some(_) => Some(Err(malformed("more entries than counted"))),
                None => self
                    .entries
                    .error()
                    .map(|_| Err(malformed("bytes after the last entry"))),
            };
        }
        self.left -= 1;
        let entry = match self.entries.next() {
            Some(entry) => entry,
            None => {
                return Some(Err(self
                    .entries
                    .error()
                    .cloned()
                    .unwrap_or_else(|| malformed("fewer entries than counted"))));
            }
        };
        if entry.seq() != self.next_seq {
            return Some(Err(out_of_order(entry.seq(), self.next_seq)));
        }
        self.next_seq = self.next_seq.wrapping_add(1);
        Some(Ok(entry))
    }
}

/// Reads a record of the previous layout: its version byte, then bincode's standard (varint)
/// encoding of a [`Change`].
pub fn decode_v1(bytes: &[u8]) -> Result<Change, DecodeError> {
    match bytes.split_first() {
        Some((&RECORD_V1, body)) => {
            let (change, used) = bincode::serde::decode_from_slice::<Change, _>(body, V1_CONFIG)
                .map_err(|e| malformed(e.to_string()))?;
            if used != body.len() {
                return Err(malformed(format!("{} trailing bytes", body.len() - used)));
            }
            Ok(change)
        }
        Some((&other, _)) => Err(DecodeError::UnknownVersion(other)),
        None => Err(malformed("an empty record")),
    }
}

/// Encodes a change in the previous layout, as a log of format 1 holds it: for tests of the
/// upgrade.
#[doc(hidden)]
pub fn encode_v1(change: &Change) -> Vec<u8> {
    let mut out = vec![RECORD_V1];
    bincode::serde::encode_into_std_write(change, &mut out, V1_CONFIG)
        .expect("encoding a Change into a Vec cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn change() -> impl Strategy<Value = Change> {
        (
            prop::sample::select(ChangeKind::ALL.to_vec()),
            any::<u128>(),
            any::<u128>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(kind, entity, collective, timestamp_ms, payload)| Change {
                kind,
                entity,
                collective,
                timestamp_ms,
                payload,
            })
    }

    fn batch_of(first: u64, changes: &[Change]) -> Vec<u8> {
        let mut writer = BatchWriter::new();
        for (i, change) in changes.iter().enumerate() {
            writer.push(first + i as u64, change);
        }
        writer.finish()
    }

    proptest! {
        /// The offsets above and bincode's fixed-int encoding are one layout, and entries read
        /// back what was written.
        #[test]
        fn entries_read_back_in_the_documented_layout(first in 0u64..u64::MAX / 2, changes in prop::collection::vec(change(), 1..20)) {
            let stored = batch_of(first, &changes);
            let batch = CheckedBatch::new(first, &stored).unwrap();
            prop_assert_eq!(batch.len() as usize, changes.len());
            for (i, (entry, change)) in batch.entries().zip(&changes).enumerate() {
                let entry = entry.unwrap();
                prop_assert_eq!(entry.seq(), first + i as u64);
                prop_assert_eq!(entry.as_bytes().len(), entry_len(change.payload.len()));
                prop_assert_eq!(&entry.to_event().change, change);
            }
        }

        /// Any single flipped bit, anywhere in a batch, is caught before an entry is read.
        #[test]
        fn any_flipped_bit_is_caught(changes in prop::collection::vec(change(), 1..5), at: prop::sample::Index, bit in 0u8..8) {
            let mut stored = batch_of(100, &changes);
            let at = at.index(stored.len());
            stored[at] ^= 1 << bit;
            prop_assert!(CheckedBatch::new(100, &stored).is_err());
        }

        #[test]
        fn garbage_never_panics_when_read(first: u64, bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(batch) = CheckedBatch::new(first, &bytes) {
                let _: Vec<_> = batch.entries().collect();
            }
        }

        #[test]
        fn garbage_never_panics(first: u64, bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = CheckedBatch::new(first, &bytes);
            let mut entries = Entries::new(&bytes);
            let _: Vec<_> = entries.by_ref().collect();
            let _ = entries.error();
        }
    }

    #[test]
    fn a_batch_under_another_key_is_refused_at_its_first_entry() {
        let stored = batch_of(7, &[Change::new(ChangeKind::Created, 1, 2)]);
        let read = |key| -> Result<Vec<u64>, DecodeError> {
            CheckedBatch::new(key, &stored)?
                .entries()
                .map(|e| e.map(|e| e.seq()))
                .collect()
        };
        assert_eq!(read(7), Ok(vec![7]));
        assert!(matches!(read(8), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn the_previous_layout_reads_back() {
        let change = Change::new(ChangeKind::Archived, 5, 6).with_payload(*b"{}");
        assert_eq!(decode_v1(&encode_v1(&change)), Ok(change));
        assert!(decode_v1(&[]).is_err());
        assert_eq!(decode_v1(&[9]), Err(DecodeError::UnknownVersion(9)));
    }

    #[test]
    fn a_batch_fills_to_its_target_and_a_large_entry_stands_alone() {
        let mut writer = BatchWriter::new();
        assert!(writer.has_room_for(1 << 20), "the first entry always fits");
        let mut seq = 1;
        while writer.has_room_for(100) {
            writer.push(
                seq,
                &Change::new(ChangeKind::Created, 1, 2).with_payload(vec![0; 100]),
            );
            seq += 1;
        }
        let stored = writer.finish();
        assert!(stored.len() <= BATCH_TARGET_BYTES);
        assert!(stored.len() + entry_len(100) > BATCH_TARGET_BYTES);
    }
}
