//! The event log's tables: the one definition every reader and writer of the file uses.

use redb::TableDefinition;

/// Events by sequence number; values are [`crate::codec`] records.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("pulsewatch.events");

/// Facts about the file itself, such as [`FORMAT_KEY`].
pub const META: TableDefinition<&str, u64> = TableDefinition::new("pulsewatch.meta");

/// The key in [`META`] under which the file's layout version is stored.
pub const FORMAT_KEY: &str = "format";

/// The layout version this build writes and reads: the tables above, keyed by seq from 1.
pub const FORMAT_VERSION: u64 = 1;
