//! The event log's tables: the one definition every reader and writer of the file uses.

use redb::TableDefinition;

/// Event batches by the seq of their first event; values are [`crate::codec`] batches.
pub const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("pulsewatch.batches");

/// The timestamp index: each running maximum of the events' stamps, in ms, to the last seq at
/// which the maximum had that value (see `retention.rs`).
pub const TIMES: TableDefinition<u64, u64> = TableDefinition::new("pulsewatch.times");

/// Events lost to a damaged batch and left out when the log was salvaged (`pulsewatch snapshot
/// --skip-damaged`): the first seq of each lost range to its last. Seqs stay gap-free where
/// this table says nothing: a reader that reaches a recorded range is told the events are gone
/// ([`crate::ReadError::Lost`]), and a writer never gives their seqs again. Absent in a log that
/// never lost any (older builds stop at such a gap, as at any other, rather than skip it).
pub const LOST: TableDefinition<u64, u64> = TableDefinition::new("pulsewatch.lost");

/// Format 1's table: one record per event, by seq. Read only by [`crate::Log::upgrade`].
pub const EVENTS_V1: TableDefinition<u64, &[u8]> = TableDefinition::new("pulsewatch.events");

/// Facts about the file itself, such as [`FORMAT_KEY`].
pub const META: TableDefinition<&str, u64> = TableDefinition::new("pulsewatch.meta");

/// The key in [`META`] under which the file's layout version is stored.
pub const FORMAT_KEY: &str = "format";

/// The layout version this build writes and reads: the tables above, events in checksummed
/// batches keyed by the seq of their first event, seqs from 1, and the timestamp index. (Format
/// 1 stored one record per event in [`EVENTS_V1`]; format 2 had no timestamp index.)
pub const FORMAT_VERSION: u64 = 3;
