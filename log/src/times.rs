//! Time in the log: the timestamp index and where a point in time begins.
//!
//! The timestamp index maps each running maximum of the events' stamps to the last seq at
//! which the maximum had that value. Writers stamp events and clocks step back, so stamps need
//! not be in order; the running maximum is, which makes "the last seq before a time" a single
//! O(log n) lookup with one meaning: every event up to it, and none after, was stamped before.

use crate::codec::CheckedBatch;
use crate::log::{Log, OpenError, ReadError, db_error, storage};
use crate::schema::{BATCHES, TIMES};
use redb::{ReadableTable, Table, WriteTransaction};
use std::path::Path;

/// The timestamp index entries an append adds, kept while its events are given seqs.
pub(crate) struct TimeMarks<'t> {
    table: Table<'t, u64, u64>,
    max: u64,
    /// The mark not yet written: the running maximum and the last seq at it.
    mark: Option<(u64, u64)>,
}

impl<'t> TimeMarks<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, redb::Error> {
        let table = txn.open_table(TIMES).map_err(storage)?;
        let max = table.last().map_err(storage)?.map_or(0, |(k, _)| k.value());
        Ok(TimeMarks {
            table,
            max,
            mark: None,
        })
    }

    /// Records that the event `seq` is stamped `timestamp_ms`.
    pub(crate) fn note(&mut self, seq: u64, timestamp_ms: u64) -> Result<(), redb::Error> {
        if timestamp_ms > self.max {
            self.flush()?;
            self.max = timestamp_ms;
        }
        self.mark = Some((self.max, seq));
        Ok(())
    }

    /// Writes the pending mark: the last seq at the current maximum.
    pub(crate) fn flush(&mut self) -> Result<(), redb::Error> {
        if let Some((max, seq)) = self.mark.take() {
            self.table.insert(max, seq).map_err(storage)?;
        }
        Ok(())
    }
}

/// Rebuilds the timestamp index of the log at `path` from its stored events, in `txn`: for logs
/// written before the index existed, and for snapshots. Returns how many events it indexed.
pub(crate) fn reindex(txn: &WriteTransaction, path: &Path) -> Result<u64, OpenError> {
    let corrupted = |what: String| db_error(path, redb::StorageError::Corrupted(what));
    let indexed = || -> Result<u64, OpenError> {
        let failed = |e: redb::Error| corrupted(format!("cannot index the events: {e}"));
        txn.delete_table(TIMES).map_err(|e| failed(storage(e)))?;
        let mut marks = TimeMarks::open(txn).map_err(failed)?;
        let batches = txn.open_table(BATCHES).map_err(|e| failed(storage(e)))?;
        let mut indexed = 0;
        for item in batches.iter().map_err(|e| failed(storage(e)))? {
            let (key, stored) = item.map_err(|e| failed(storage(e)))?;
            let first = key.value();
            let damaged = |e| corrupted(format!("the batch from seq {first} is damaged: {e}"));
            let batch = CheckedBatch::new(first, stored.value()).map_err(damaged)?;
            for entry in batch.entries() {
                let entry = entry.map_err(damaged)?;
                marks
                    .note(entry.seq(), entry.timestamp_ms())
                    .map_err(failed)?;
                indexed += 1;
            }
        }
        marks.flush().map_err(failed)?;
        Ok(indexed)
    };
    indexed()
}

impl Log {
    /// The last seq before `timestamp_ms`: polling from it returns the first event stamped at
    /// or after that time, and everything after it (see the module documentation for stamps out
    /// of order). 0 when no event is before the time. O(log n).
    ///
    /// If retention has deleted events up to the answer, a poll from it fails with
    /// [`ReadError::Truncated`] rather than skipping them.
    pub fn seq_at(&self, timestamp_ms: u64) -> Result<u64, ReadError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(TIMES).map_err(storage)?;
        let before = table.range(..timestamp_ms).map_err(storage)?.next_back();
        Ok(match before {
            Some(entry) => entry.map_err(storage)?.1.value(),
            None => 0,
        })
    }
}
