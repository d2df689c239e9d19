//! Damage and salvage: every stored batch checked against its checksum and layout
//! ([`Log::verify`]), and the ranges of events lost to damage, as a salvaged copy records them
//! ([`crate::schema::LOST`]) so that its readers are told, and its writers never give those
//! seqs again.

use crate::codec::{CheckedBatch, DecodeError};
use crate::log::{Log, ReadError, storage};
use crate::schema::{BATCHES, LOST, TIMES};
use redb::{ReadTransaction, ReadableTable, TableError, TableHandle, WriteTransaction};
use std::ops::RangeInclusive;

/// A range of events that cannot be read: a damaged batch, or seqs missing between two batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The seqs it holds. For the last batch, whose header cannot be trusted, the end is the
    /// head as the timestamp index records it.
    pub seqs: RangeInclusive<u64>,
    /// What is wrong.
    pub reason: DecodeError,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "events {}..{} ({})",
            self.seqs.start(),
            self.seqs.end(),
            self.reason
        )
    }
}

/// What [`Log::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// Batches read.
    pub batches: u64,
    /// Events in intact batches.
    pub events: u64,
    /// Ranges that cannot be read, in seq order.
    pub damaged: Vec<Damage>,
    /// Ranges an earlier salvage recorded as lost (not damage: readers are told of them).
    pub lost: Vec<RangeInclusive<u64>>,
}

/// The lost ranges recorded in the file read by `txn`, in seq order.
pub(crate) fn lost_ranges(txn: &ReadTransaction) -> Result<Vec<RangeInclusive<u64>>, redb::Error> {
    let table = match txn.open_table(LOST) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(storage(e)),
    };
    let mut ranges = Vec::new();
    for item in table.iter().map_err(storage)? {
        let (first, last) = item.map_err(storage)?;
        ranges.push(first.value()..=last.value());
    }
    Ok(ranges)
}

/// Whether `ranges` (in seq order) cover every seq of `from..=to`, one range after another:
/// the one test of a recorded gap, for readers and for [`Log::verify`] alike.
pub(crate) fn covered(ranges: &[RangeInclusive<u64>], from: u64, to: u64) -> bool {
    let mut next = from;
    for range in ranges {
        if *range.start() > next {
            break;
        }
        if *range.end() >= next {
            match range.end().checked_add(1) {
                Some(after) if after <= to => next = after,
                _ => return true,
            }
        }
    }
    next > to
}

/// The last seq of the lost range that ends the log, if a salvage lost its last events: the
/// seqs a writer must never give again, and part of the head.
pub(crate) fn lost_end(txn: &ReadTransaction) -> Result<u64, redb::Error> {
    match txn.open_table(LOST) {
        Ok(table) => last_lost(&table),
        Err(TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(storage(e)),
    }
}

/// [`lost_end`] in a write transaction, which does not create the table to ask.
pub(crate) fn lost_end_in(txn: &WriteTransaction) -> Result<u64, redb::Error> {
    if !has_lost(txn)? {
        return Ok(0);
    }
    last_lost(&txn.open_table(LOST).map_err(storage)?)
}

/// The last seq of the last lost range in `table`, 0 if none.
fn last_lost(table: &impl ReadableTable<u64, u64>) -> Result<u64, redb::Error> {
    Ok(table
        .last()
        .map_err(storage)?
        .map_or(0, |(_, last)| last.value()))
}

/// Whether the log written by `txn` has a record of lost ranges: asked without opening the
/// table, which a write transaction would create in every log.
pub(crate) fn has_lost(txn: &WriteTransaction) -> Result<bool, redb::Error> {
    for table in txn.list_tables().map_err(storage)? {
        if table.name() == LOST.name() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `ranges` in seq order, with those that overlap or touch merged: how a copy records them.
pub(crate) fn merged(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match merged.last_mut() {
            Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

/// The head as the timestamp index records it: every append notes its last seq there, in the
/// same transaction as its batch, so it survives the last batch's damage.
pub(crate) fn indexed_head(txn: &ReadTransaction) -> Result<Option<u64>, redb::Error> {
    let times = txn.open_table(TIMES).map_err(storage)?;
    let last = times.last().map_err(storage)?;
    Ok(last.map(|(_, seq)| seq.value()))
}

impl Log {
    /// Reads every stored batch and checks it (version, checksum, layout, the seqs it holds
    /// following on from the batch before), all as of one read transaction. Damage is reported
    /// by seq range; nothing is changed. A batch that passes is one every read delivers as
    /// stored.
    pub fn verify(&self) -> Result<Verified, ReadError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(BATCHES).map_err(storage)?;
        let mut verified = Verified {
            lost: lost_ranges(&txn)?,
            ..Verified::default()
        };
        let keys: Vec<u64> = table
            .iter()
            .map_err(storage)?
            .map(|item| item.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()
            .map_err(storage)?;
        let mut expected: Option<u64> = None;
        for (i, &key) in keys.iter().enumerate() {
            let stored = table.get(key).map_err(storage)?.ok_or_else(|| {
                storage(redb::StorageError::Corrupted(format!(
                    "batch {key} vanished"
                )))
            })?;
            verified.batches += 1;
            if let Some(due) = expected.filter(|&due| due < key)
                && !covered(&verified.lost, due, key - 1)
            {
                verified.damaged.push(Damage {
                    seqs: due..=key - 1,
                    reason: DecodeError::Malformed(format!(
                        "no batch holds them: a batch from seq {key} where {due} was due"
                    )),
                });
            }
            match check(key, stored.value()) {
                Ok(batch) => {
                    verified.events += u64::from(batch.len());
                    expected = batch.last().checked_add(1);
                }
                Err(reason) => {
                    let end = match keys.get(i + 1) {
                        Some(&next) => next - 1,
                        None => indexed_head(&txn)?.filter(|&h| h >= key).unwrap_or(key),
                    };
                    verified.damaged.push(Damage {
                        seqs: key..=end,
                        reason,
                    });
                    expected = end.checked_add(1);
                }
            }
        }
        Ok(verified)
    }
}

/// Checks a stored batch whole: its checksum, then every entry.
pub(crate) fn check(key: u64, bytes: &[u8]) -> Result<CheckedBatch<'_>, DecodeError> {
    let batch = CheckedBatch::new(key, bytes)?;
    for entry in batch.entries() {
        entry?;
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_a_gap_one_after_another() {
        let ranges = [3..=5, 6..=9, 20..=u64::MAX];
        assert!(covered(&ranges, 3, 9));
        assert!(covered(&ranges, 4, 7));
        assert!(!covered(&ranges, 2, 9), "2 is not lost");
        assert!(!covered(&ranges, 3, 10), "10 is not lost");
        assert!(covered(&ranges, 25, u64::MAX));
        assert!(!covered(&[], 1, 1));
    }

    #[test]
    fn touching_ranges_are_merged() {
        assert_eq!(
            merged(vec![(6, 9), (3, 5), (20, 30), (25, 40), (50, 50)]),
            [(3, 9), (20, 40), (50, 50)]
        );
    }
}
