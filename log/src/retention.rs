//! Retention: deleting old events without a reader ever skipping one unknowingly.
//!
//! Compaction deletes whole stored batches from the front of the log, so the oldest event
//! still stored is always the first key of the batch table: that is the record of what is
//! retained, read in the same transaction as the events, and a poll from below it fails with
//! [`ReadError::Truncated`]. The last batch is never deleted: the next seq is read from it.

use crate::log::{Log, ReadError, WriteError, storage};
use crate::salvage;
use crate::schema::{BATCHES, LOST, TIMES};
use redb::ReadableTable;

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// How many events it deleted.
    pub deleted: u64,
    /// The seq of the oldest event still stored (1 when nothing was ever deleted).
    pub oldest: u64,
}

impl Log {
    /// The seq of the first batch still stored: 1 unless retention deleted events or a salvage
    /// lost the first ones (also 1 for an empty log). A poll from below it minus one fails with
    /// [`ReadError::Truncated`] (or [`ReadError::Lost`]).
    pub fn oldest(&self) -> Result<u64, ReadError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(BATCHES).map_err(storage)?;
        Ok(table
            .first()
            .map_err(storage)?
            .map_or(1, |(k, _)| k.value()))
    }

    /// The seq of the oldest event [`Log::compact_before`] would keep if called with `seq` now:
    /// compaction deletes whole batches, so it may keep events below `seq`, and never deletes
    /// the last batch. What a caller checks before compacting (which plugins would lose unread
    /// events); compacting before the answer then deletes exactly what it said.
    pub fn oldest_after_compacting(&self, seq: u64) -> Result<u64, ReadError> {
        let txn = self.begin_read()?;
        let batches = txn.open_table(BATCHES).map_err(storage)?;
        Ok(plan(&batches, seq)?.1)
    }

    /// Deletes the events with a seq below `seq`, in whole stored batches: the batch holding
    /// `seq` is kept whole, and so is the last batch, whatever `seq` is. Durable when this
    /// returns; readers in this and other processes see it on their next read. A reader whose
    /// cursor is below what is kept then gets [`ReadError::Truncated`].
    pub fn compact_before(&self, seq: u64) -> Result<Compacted, WriteError> {
        let db = self.database().ok_or(WriteError::ReadOnly)?;
        let txn = db.begin_write().map_err(storage)?;
        let compacted = {
            let mut batches = txn.open_table(BATCHES).map_err(storage)?;
            let (keys, oldest) = plan(&batches, seq)?;
            let mut deleted = keys.first().map_or(0, |&first| oldest - first);
            let from = keys.first().copied();
            for key in keys {
                batches.remove(key).map_err(storage)?;
            }
            // Index marks wholly before what is kept: a time before it answers 0, and a poll
            // from 0 fails with `Truncated`.
            let mut times = txn.open_table(TIMES).map_err(storage)?;
            let mut stale = Vec::new();
            for item in times.iter().map_err(storage)? {
                let (time, last) = item.map_err(storage)?;
                if last.value().saturating_add(1) >= oldest {
                    break;
                }
                stale.push(time.value());
            }
            for time in stale {
                times.remove(time).map_err(storage)?;
            }
            // Lost ranges among the deleted batches go with them (a poll from there is
            // `Truncated` now), and their events were not there to delete. One before the
            // oldest batch that nothing deleted stays lost.
            if let (Some(from), true) = (from, salvage::has_lost(&txn)?) {
                let mut lost = txn.open_table(LOST).map_err(storage)?;
                let mut gone = Vec::new();
                for item in lost.range(from..oldest).map_err(storage)? {
                    let (first, last) = item.map_err(storage)?;
                    let (first, last) = (first.value(), last.value());
                    deleted = deleted.saturating_sub(last.min(oldest - 1) - first + 1);
                    gone.push(first);
                }
                for first in gone {
                    lost.remove(first).map_err(storage)?;
                }
            }
            Compacted { deleted, oldest }
        };
        txn.commit().map_err(storage)?;
        self.changes.bump();
        Ok(compacted)
    }
}

/// What compacting before `seq` deletes: the keys of the batches to delete, and the seq of the
/// oldest event kept.
fn plan(
    batches: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<(Vec<u64>, u64), redb::Error> {
    let mut keys = Vec::new();
    for item in batches.range(..=seq).map_err(storage)? {
        keys.push(item.map_err(storage)?.0.value());
    }
    // The last key at or below `seq` starts the batch that holds it (or `seq` itself): every
    // batch before it ends before `seq`.
    let kept = keys.pop();
    let oldest = match (kept, batches.first().map_err(storage)?) {
        (Some(kept), _) => kept,
        (None, first) => first.map_or(1, |(k, _)| k.value()),
    };
    Ok((keys, oldest))
}
