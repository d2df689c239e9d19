//! A snapshot: a consistent copy of a log, as of one read transaction, in a file of its own that
//! no writer holds. It is what a reader without file locks (a provider component under WASI)
//! can open, and what can be carried elsewhere to replay.

use crate::log::{Log, OpenError, db_error};
use crate::schema::EVENTS;
use redb::Builder;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// Events copied per write transaction, so that a large snapshot does not hold every dirty page
/// of the copy in memory at once.
const EVENTS_PER_TRANSACTION: usize = 100_000;

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
    /// The log could not be read.
    #[error("cannot read the event log: {0}")]
    Read(#[from] redb::Error),
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

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The seq of its first event, if it holds any.
    pub first: Option<u64>,
    /// The seq of its last event, if it holds any.
    pub last: Option<u64>,
    /// How many events it holds.
    pub events: u64,
}

impl Log {
    /// Copies the events with a seq in `seqs` (as stored: no decoding) to a new log file at
    /// `path`, all as of one read transaction, so that a writer may go on appending meanwhile.
    /// The copy is written beside `path` and renamed into place once closed cleanly: a reader
    /// never sees half a snapshot, and a failure leaves nothing behind. An existing `path` is
    /// replaced only if `overwrite`.
    pub fn snapshot(
        &self,
        path: &Path,
        seqs: RangeInclusive<u64>,
        overwrite: bool,
    ) -> Result<SnapshotInfo, SnapshotError> {
        if !overwrite && path.exists() {
            return Err(SnapshotError::Exists {
                path: path.to_path_buf(),
            });
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(format!(".partial-{}", std::process::id()));
        let partial = PathBuf::from(partial);
        let written = self.copy_to(&partial, seqs);
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
    ) -> Result<SnapshotInfo, SnapshotError> {
        // The default concurrency mode: a snapshot has no writer, and a reader under WASI, which
        // has no file locks, can open nothing else.
        let copy = Builder::new().create(path).map_err(|e| db_error(path, e))?;
        Log::init(path, &copy)?;
        let source = self.begin_read()?;
        let events = source.open_table(EVENTS).map_err(redb::Error::from)?;
        let mut info = SnapshotInfo {
            first: None,
            last: None,
            events: 0,
        };
        let mut entries = events.range(seqs).map_err(redb::Error::from)?.peekable();
        while entries.peek().is_some() {
            let txn = copy.begin_write().map_err(|e| db_error(path, e))?;
            {
                let mut table = txn.open_table(EVENTS).map_err(|e| db_error(path, e))?;
                for entry in entries.by_ref().take(EVENTS_PER_TRANSACTION) {
                    let (seq, record) = entry.map_err(redb::Error::from)?;
                    let seq = seq.value();
                    table
                        .insert(seq, record.value())
                        .map_err(|e| db_error(path, e))?;
                    info.first.get_or_insert(seq);
                    info.last = Some(seq);
                    info.events += 1;
                }
            }
            txn.commit().map_err(|e| db_error(path, e))?;
        }
        Ok(info)
    }
}
