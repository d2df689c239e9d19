//! A snapshot: a consistent copy of a log, as of one read transaction, in a file of its own that
//! no writer holds. It is what a reader without file locks (a provider component under WASI)
//! can open, and what can be carried elsewhere to replay.

use crate::codec::BatchWriter;
use crate::derived;
use crate::log::{Log, OpenError, ReadError, db_error, storage};
use crate::salvage::{self, Damage};
use crate::schema::{BATCHES, LOST};
use crate::times;
use redb::{Builder, Database};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// Batches copied per write transaction, so that a large snapshot does not hold every dirty
/// page of the copy in memory at once.
const BATCHES_PER_TRANSACTION: usize = 256;

/// Why a snapshot could not be written. Nothing is left at the destination when it fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The destination exists and overwriting it was not asked for.
    #[error("{}: already exists", path.display())]
    Exists {
        /// The destination.
        path: PathBuf,
    },
    /// The log could not be read (or holds a damaged batch, which is not copied).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The copy could not be created or written.
    #[error(transparent)]
    Write(#[from] OpenError),
    /// The finished copy could not be moved into place.
    #[error("{}: cannot write: {source}", path.display())]
    Io {
        /// The destination.
        path: PathBuf,
        /// What the OS reported.
        source: std::io::Error,
    },
}

impl From<redb::Error> for SnapshotError {
    fn from(error: redb::Error) -> Self {
        SnapshotError::Read(ReadError::Storage(error))
    }
}

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The seq of its first event, if it holds any.
    pub first: Option<u64>,
    /// The seq of its last event, if it holds any.
    pub last: Option<u64>,
    /// How many events it holds.
    pub events: u64,
    /// The damaged ranges left out ([`Log::snapshot_skipping_damaged`]), recorded in the copy as
    /// lost; empty for a plain snapshot, which fails on damage instead.
    pub lost: Vec<Damage>,
}

impl Log {
    /// Copies the events with a seq in `seqs` to a new log file at `path`, all as of one read
    /// transaction, so that a writer may go on appending meanwhile; every batch is checked on
    /// the way. The copy is written beside `path` and renamed into place once closed cleanly:
    /// a reader never sees half a snapshot, and a failure leaves nothing behind. An existing
    /// `path` is replaced only if `overwrite`.
    pub fn snapshot(
        &self,
        path: &Path,
        seqs: RangeInclusive<u64>,
        overwrite: bool,
    ) -> Result<SnapshotInfo, SnapshotError> {
        self.write_snapshot(path, seqs, overwrite, false)
    }

    /// A [`Log::snapshot`] that salvages a damaged log: every intact batch is copied with its
    /// seqs, and each damaged range is left out and recorded in the copy as lost, so that its
    /// readers are told of the gap ([`ReadError::Lost`]) and its writers never give those seqs
    /// again. The ranges left out are in the returned [`SnapshotInfo::lost`].
    pub fn snapshot_skipping_damaged(
        &self,
        path: &Path,
        seqs: RangeInclusive<u64>,
        overwrite: bool,
    ) -> Result<SnapshotInfo, SnapshotError> {
        self.write_snapshot(path, seqs, overwrite, true)
    }

    fn write_snapshot(
        &self,
        path: &Path,
        seqs: RangeInclusive<u64>,
        overwrite: bool,
        skip_damaged: bool,
    ) -> Result<SnapshotInfo, SnapshotError> {
        if !overwrite && path.exists() {
            return Err(SnapshotError::Exists {
                path: path.to_path_buf(),
            });
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(format!(".partial-{}", std::process::id()));
        let partial = PathBuf::from(partial);
        let written = self.copy_to(&partial, seqs, skip_damaged);
        let moved = written.and_then(|info| {
            std::fs::rename(&partial, path)
                .map(|()| info)
                .map_err(|source| SnapshotError::Io {
                    path: path.to_path_buf(),
                    source,
                })
        });
        if moved.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        moved
    }

    fn copy_to(
        &self,
        path: &Path,
        seqs: RangeInclusive<u64>,
        skip_damaged: bool,
    ) -> Result<SnapshotInfo, SnapshotError> {
        // The default concurrency mode: a snapshot has no writer, and a reader under WASI, which
        // has no file locks, can open nothing else.
        let copy = Builder::new().create(path).map_err(|e| db_error(path, e))?;
        Log::init(path, &copy)?;
        let source = self.begin_read()?;
        let table = source.open_table(BATCHES).map_err(storage)?;
        let (low, high) = (*seqs.start(), *seqs.end());
        let start = match table.range(..=low).map_err(storage)?.next_back() {
            Some(entry) => entry.map_err(storage)?.0.value(),
            None => low,
        };
        let mut info = SnapshotInfo {
            first: None,
            last: None,
            events: 0,
            lost: Vec::new(),
        };
        let mut finished = Vec::new();
        let mut writer = BatchWriter::new();
        let mut first_in_writer = 0;
        let mut batches = table.range(start..).map_err(storage)?.peekable();
        'batches: while let Some(item) = batches.next() {
            let (key, stored) = item.map_err(storage)?;
            let key = key.value();
            if key > high {
                break;
            }
            let batch = match salvage::check(key, stored.value()) {
                Ok(batch) => batch,
                Err(source) if !skip_damaged => {
                    return Err(ReadError::Undecodable { seq: key, source }.into());
                }
                Err(reason) => {
                    let end = match batches.peek() {
                        Some(Ok((next, _))) => next.value() - 1,
                        Some(Err(_)) | None => salvage::indexed_head(&source)?
                            .filter(|&h| h >= key)
                            .unwrap_or(key),
                    };
                    if key.max(low) <= end.min(high) {
                        info.lost.push(Damage {
                            seqs: key.max(low)..=end.min(high),
                            reason,
                        });
                    }
                    continue;
                }
            };
            for entry in batch.entries() {
                // Checked whole by `salvage::check`.
                let Ok(entry) = entry else { break };
                let seq = entry.seq();
                if seq < low {
                    continue;
                }
                if seq > high {
                    break 'batches;
                }
                // A batch holds consecutive seqs: one ends at a gap (a range left out, or one
                // the source had lost) as when it is full.
                let follows = info.last.is_none_or(|last| seq == last + 1);
                if !writer.is_empty() && (!follows || !writer.has_room_for(entry.payload().len())) {
                    finished.push((first_in_writer, std::mem::take(&mut writer).finish()));
                    if finished.len() >= BATCHES_PER_TRANSACTION {
                        write_batches(&copy, path, &mut finished, &[], false)?;
                    }
                }
                if writer.is_empty() {
                    first_in_writer = seq;
                }
                writer.push_entry(&entry);
                info.first.get_or_insert(seq);
                info.last = Some(seq);
                info.events += 1;
            }
        }
        if !writer.is_empty() {
            finished.push((first_in_writer, writer.finish()));
        }
        // What the source already recorded as lost stays lost in the copy, with what was left
        // out now.
        let lost = salvage::merged(
            salvage::lost_ranges(&source)?
                .into_iter()
                .chain(info.lost.iter().map(|d| d.seqs.clone()))
                .filter(|r| *r.end() >= low && *r.start() <= high)
                .map(|r| ((*r.start()).max(low), (*r.end()).min(high)))
                .collect(),
        );
        write_batches(&copy, path, &mut finished, &lost, true)?;
        // Derived events keep their origins, and emitting plugins their checkpoints.
        derived::copy_tables(&source, &copy).map_err(|e| db_error(path, e))?;
        Ok(info)
    }
}

/// Writes `batches` to the copy in one transaction and empties the list; with `last`, also
/// records the `lost` ranges and builds the copy's timestamp index from everything written, as
/// an upgrade does.
fn write_batches(
    copy: &Database,
    path: &Path,
    batches: &mut Vec<(u64, Vec<u8>)>,
    lost: &[(u64, u64)],
    last: bool,
) -> Result<(), OpenError> {
    let txn = copy.begin_write().map_err(|e| db_error(path, e))?;
    {
        let mut table = txn.open_table(BATCHES).map_err(|e| db_error(path, e))?;
        for (first, bytes) in batches.drain(..) {
            table
                .insert(first, bytes.as_slice())
                .map_err(|e| db_error(path, e))?;
        }
        if !lost.is_empty() {
            let mut table = txn.open_table(LOST).map_err(|e| db_error(path, e))?;
            for &(first, last) in lost {
                table.insert(first, last).map_err(|e| db_error(path, e))?;
            }
        }
    }
    if last {
        times::reindex(&txn, path)?;
    }
    txn.commit().map_err(|e| db_error(path, e))
}
