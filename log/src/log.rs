//! The event log over a redb file.
//!
//! Writers ([`Log::create`] / [`Log::open`]) and any number of readers
//! ([`Log::open_read_only`]) share the file across processes, in redb's `MultiWriter`
//! concurrency mode: a reader sees each new commit on its next read transaction without
//! reopening, and write transactions take turns, so that an application's writer, a
//! `pulsewatch append` and a `pulsewatch compact` can all write while the others run. Seqs stay
//! gap-free whoever writes: each transaction gives them from the head it sees. Events are
//! stored in checksummed batches ([`crate::codec`]).
//!
//! `impl Log` is spread by concern, one file each:
//!
//! | file | methods |
//! |---|---|
//! | `log.rs` | opening ([`Log::create`], [`Log::open`], [`Log::open_read_only`], [`Log::upgrade`]), appends ([`Log::append`], [`Log::submit`], [`Log::append_batch`], [`Log::append_in`]), change notification ([`Log::generation`], [`Log::appended`]) |
//! | `read.rs` | [`Log::head`], [`Log::len`], [`Log::poll`], [`Log::poll_within`], [`Log::poll_packed`], [`Log::wait`] |
//! | `times.rs` | [`Log::seq_at`] and the timestamp index |
//! | `retention.rs` | [`Log::oldest`], [`Log::compact_before`], [`Log::oldest_after_compacting`] |
//! | `snapshot.rs` | [`Log::snapshot`], [`Log::snapshot_skipping_damaged`] |
//! | `salvage.rs` | [`Log::verify`] and the record of lost ranges |
//!
//! Their errors are in `error.rs`: [`OpenError`], [`ReadError`], [`WriteError`].

use crate::changes::{self, AppendedSince, Changes};
use crate::codec::{self, BatchWriter, CheckedBatch};
pub(crate) use crate::error::{OpenError, ReadError, WriteError};
use crate::event::Change;
use crate::group::{Group, PendingAppend};
use crate::salvage;
use crate::schema::{BATCHES, EVENTS_V1, FORMAT_KEY, FORMAT_VERSION, META, TIMES};
use crate::times::{self, TimeMarks};
use redb::{
    Builder, Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, TableError, WriteTransaction,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

enum Db {
    Writer(Database),
    Reader(ReadOnlyDatabase),
}

/// The head a reader last read, and the change count it read it at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KnownHead {
    /// The head, or a bound it was at most.
    pub(crate) head: u64,
    pub(crate) at: u64,
    /// Whether `head` is the head itself, not a bound.
    pub(crate) exact: bool,
}

/// A change-event log stored in a redb file.
///
/// Dropping a writer's `Log` closes the file cleanly: the next process opens it as it is. A
/// process that ends without dropping it (killed, or exiting from a signal's default action)
/// leaves a file that readers refuse until a writer opens it again, which repairs it without
/// losing a committed event. A writer that should stop cleanly on Ctrl-C or SIGTERM handles
/// them and drops its `Log` (as `pulsewatch import --stream` does); only SIGKILL and power loss
/// then need the repair.
pub struct Log {
    db: Db,
    path: PathBuf,
    pub(crate) changes: Arc<Changes>,
    pub(crate) known: Mutex<Option<KnownHead>>,
    /// The last small packed poll, for the next reader of this handle asking the same.
    pub(crate) last_poll: Mutex<Option<crate::read::LastPoll>>,
    pub(crate) group: Group,
}

/// The builder every open of a log uses. Natively, `MultiWriter`: writer and reader processes
/// on one file, with byte-range locks. Not `SingleWriter`, whose one writer holds the write lock
/// for the life of its handle, so that nothing could compact the log while the application
/// writes. `MultiWriter` commits also save the allocator state: measured side by side, durable
/// appends run at 55-65% of `SingleWriter`'s rate (`cargo bench --bench append`); reads cost
/// the same. WASI has no file locks, and redb refuses both modes there; a reader under WASI (a
/// provider component) opens in the default mode, and so can only read a file no writer has
/// open: a snapshot.
fn builder() -> Builder {
    #[cfg_attr(target_os = "wasi", allow(unused_mut))]
    let mut builder = Builder::new();
    #[cfg(not(target_os = "wasi"))]
    builder.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
    builder
}

fn open_error(path: &Path, err: DatabaseError) -> OpenError {
    let path = path.to_path_buf();
    match err {
        DatabaseError::DatabaseAlreadyOpen => OpenError::Locked { path },
        DatabaseError::RepairAborted => OpenError::NeedsRepair { path },
        DatabaseError::Storage(redb::StorageError::Io(io)) => match io.kind() {
            std::io::ErrorKind::NotFound => OpenError::NotFound { path },
            std::io::ErrorKind::IsADirectory => OpenError::IsADirectory { path },
            // redb's own checks of the file's header.
            _ if ["Not a redb database", "Database file is empty"]
                .iter()
                .any(|said| io.to_string().contains(said)) =>
            {
                OpenError::NotADatabase { path }
            }
            _ => db_error(&path, redb::StorageError::Io(io)),
        },
        other => db_error(&path, other),
    }
}

/// Refuses what is at `path` if it is there and is not a file: a directory, a device (a database
/// "written" to `/dev/null` would be lost), a FIFO, a socket.
fn a_file_if_any(path: &Path) -> Result<(), OpenError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(OpenError::IsADirectory {
            path: path.to_path_buf(),
        }),
        Ok(meta) if !meta.is_file() => Err(OpenError::NotAFile {
            path: path.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

pub(crate) fn db_error(path: &Path, source: impl Into<redb::Error>) -> OpenError {
    OpenError::Database {
        path: path.to_path_buf(),
        source: source.into(),
    }
}

pub(crate) fn storage<E: Into<redb::Error>>(err: E) -> redb::Error {
    err.into()
}

/// The seq of the newest event in `table`, 0 if it is empty, from the last batch's header.
pub(crate) fn last_seq(table: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64, ReadError> {
    let Some((first, batch)) = table.last().map_err(storage)? else {
        return Ok(0);
    };
    let first = first.value();
    let batch = CheckedBatch::new(first, batch.value())
        .map_err(|source| ReadError::Undecodable { seq: first, source })?;
    Ok(batch.last())
}

impl Log {
    /// Opens the log at `path` for writing, creating the file if it does not exist.
    pub fn create(path: impl AsRef<Path>) -> Result<Log, OpenError> {
        let path = path.as_ref();
        a_file_if_any(path)?;
        // Not found while creating means a missing directory, not a missing file.
        let db = builder().create(path).map_err(|e| match e {
            DatabaseError::Storage(redb::StorageError::Io(io))
                if io.kind() == std::io::ErrorKind::NotFound =>
            {
                OpenError::NoDirectory {
                    path: path.to_path_buf(),
                }
            }
            other => open_error(path, other),
        })?;
        Self::init(path, &db)?;
        Ok(Self::with_db(path, Db::Writer(db)))
    }

    /// Opens an existing log for writing.
    pub fn open(path: impl AsRef<Path>) -> Result<Log, OpenError> {
        let path = path.as_ref();
        a_file_if_any(path)?;
        let db = builder().open(path).map_err(|e| open_error(path, e))?;
        Self::check_format(path, &db)?;
        Ok(Self::with_db(path, Db::Writer(db)))
    }

    /// Opens an existing log for reading only. Any number of readers may share the file with
    /// writers in other processes.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Log, OpenError> {
        let path = path.as_ref();
        a_file_if_any(path)?;
        let db = builder()
            .open_read_only(path)
            .map_err(|e| open_error(path, e))?;
        Self::check_format(path, &db)?;
        Ok(Self::with_db(path, Db::Reader(db)))
    }

    fn with_db(path: &Path, db: Db) -> Log {
        let changes = Arc::new(Changes::default());
        // Only readers watch the file: a watch would wake on each of a commit's writes, taking
        // CPU from the writer's threads (a fifth of a single append's throughput on two cores).
        // Without it, the count is incomplete for a writer's handle, which then reads the head
        // for every caught-up poll, and sees outbox commits ([`Log::append_in`]) and other
        // writers' commits within a recheck.
        if matches!(db, Db::Reader(_)) {
            changes::watch(path, &changes);
        }
        Log {
            db,
            path: path.to_path_buf(),
            changes,
            known: Mutex::new(None),
            last_poll: Mutex::new(None),
            group: Group::default(),
        }
    }

    /// Creates the tables in a file that has none. A file with tables is left to
    /// [`Log::check_format`], which tells a pulsewatch log from someone else's database.
    pub(crate) fn init(path: &Path, db: &Database) -> Result<(), OpenError> {
        let txn = db.begin_write().map_err(|e| db_error(path, e))?;
        // Multimap tables count too: any table at all means someone else's database.
        let empty = txn
            .list_tables()
            .map_err(|e| db_error(path, e))?
            .next()
            .is_none()
            && txn
                .list_multimap_tables()
                .map_err(|e| db_error(path, e))?
                .next()
                .is_none();
        if empty {
            let mut meta = txn.open_table(META).map_err(|e| db_error(path, e))?;
            meta.insert(FORMAT_KEY, FORMAT_VERSION)
                .map_err(|e| db_error(path, e))?;
            drop(meta);
            txn.open_table(BATCHES).map_err(|e| db_error(path, e))?;
            txn.open_table(TIMES).map_err(|e| db_error(path, e))?;
            txn.commit().map_err(|e| db_error(path, e))?;
        } else {
            // Nothing to write: spare the commit's two fsyncs.
            txn.abort().map_err(|e| db_error(path, e))?;
        }
        Self::check_format(path, db)
    }

    /// The format version stored in the file, or `NotALog`.
    fn format(path: &Path, db: &impl ReadableDatabase) -> Result<u64, OpenError> {
        let txn = db.begin_read().map_err(|e| db_error(path, e))?;
        let not_a_log = || OpenError::NotALog {
            path: path.to_path_buf(),
        };
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(TableError::TableDoesNotExist(_)) => return Err(not_a_log()),
            Err(e) => return Err(db_error(path, e)),
        };
        let format = meta.get(FORMAT_KEY).map_err(|e| db_error(path, e))?;
        format.map(|v| v.value()).ok_or_else(not_a_log)
    }

    fn check_format(path: &Path, db: &impl ReadableDatabase) -> Result<(), OpenError> {
        match Self::format(path, db)? {
            FORMAT_VERSION => Ok(()),
            found => Err(OpenError::UnsupportedFormat {
                path: path.to_path_buf(),
                found,
            }),
        }
    }

    /// Rewrites a log of an older format in this build's, in one transaction: format 1 (one
    /// unchecksummed record per event) is rewritten in batches, and the timestamp index (new in
    /// format 3) is built. Every event keeps its seq and content, or nothing changes. Returns
    /// the number of events rewritten or indexed, 0 for a log already in this format.
    pub fn upgrade(path: impl AsRef<Path>) -> Result<u64, OpenError> {
        let path = path.as_ref();
        a_file_if_any(path)?;
        let db = builder().open(path).map_err(|e| open_error(path, e))?;
        let found = Self::format(path, &db)?;
        match found {
            FORMAT_VERSION => return Ok(0),
            1 | 2 => {}
            found => {
                return Err(OpenError::UnsupportedFormat {
                    path: path.to_path_buf(),
                    found,
                });
            }
        }
        let fail = |e: redb::Error| db_error(path, e);
        let txn = db.begin_write().map_err(|e| fail(e.into()))?;
        let mut upgraded = 0;
        if found == 1 {
            let old = txn.open_table(EVENTS_V1).map_err(|e| fail(e.into()))?;
            let mut new = txn.open_table(BATCHES).map_err(|e| fail(e.into()))?;
            let mut batch = BatchWriter::new();
            let mut first = 0;
            for entry in old.iter().map_err(|e| fail(e.into()))? {
                let (seq, record) = entry.map_err(|e| fail(e.into()))?;
                let seq = seq.value();
                let change = codec::decode_v1(record.value()).map_err(|e| {
                    db_error(
                        path,
                        redb::StorageError::Corrupted(format!("event {seq}: {e}")),
                    )
                })?;
                if !batch.has_room_for(change.payload.len()) {
                    let full = std::mem::take(&mut batch).finish();
                    new.insert(first, full.as_slice())
                        .map_err(|e| fail(e.into()))?;
                }
                if batch.is_empty() {
                    first = seq;
                }
                batch.push(seq, &change);
                upgraded += 1;
            }
            if !batch.is_empty() {
                new.insert(first, batch.finish().as_slice())
                    .map_err(|e| fail(e.into()))?;
            }
            drop((old, new));
            txn.delete_table(EVENTS_V1).map_err(|e| fail(e.into()))?;
        }
        let indexed = times::reindex(&txn, path)?;
        let mut meta = txn.open_table(META).map_err(|e| fail(e.into()))?;
        meta.insert(FORMAT_KEY, FORMAT_VERSION)
            .map_err(|e| fail(e.into()))?;
        drop(meta);
        txn.commit().map_err(|e| fail(e.into()))?;
        Ok(upgraded.max(indexed))
    }

    /// The underlying database, for applications that commit their own tables together with
    /// events through [`Log::append_in`]. `None` for a read-only log.
    pub fn database(&self) -> Option<&Database> {
        match &self.db {
            Db::Writer(db) => Some(db),
            Db::Reader(_) => None,
        }
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, redb::Error> {
        match &self.db {
            Db::Writer(db) => db.begin_read(),
            Db::Reader(db) => db.begin_read(),
        }
        .map_err(storage)
    }

    /// The path the log was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one change and returns its seq. Durable when this returns.
    ///
    /// Threads appending at the same time share one transaction (group commit): each still
    /// returns only once its change is durable, with seqs in the order the appends arrived, and
    /// a failure fails the whole group. A lone append commits alone. A thread that needs more
    /// than one change in flight uses [`Log::submit`].
    pub fn append(&self, change: &Change) -> Result<u64, WriteError> {
        self.submit(change)?.wait()
    }

    /// Queues one change for the next group commit and returns at once; its seq comes from
    /// [`PendingAppend::wait`], once it is durable. A thread can so keep many single changes
    /// in flight, and groups grow past the number of appending threads. Seqs follow the order
    /// of submission to this `Log`.
    pub fn submit(&self, change: &Change) -> Result<PendingAppend<'_>, WriteError> {
        self.database().ok_or(WriteError::ReadOnly)?;
        Ok(PendingAppend::new(self, change))
    }

    /// Appends changes in one transaction, with consecutive seqs, and returns the seq of the
    /// last one (the head); an empty batch returns the head unchanged. All or nothing.
    pub fn append_batch<'a>(
        &self,
        changes: impl IntoIterator<Item = &'a Change>,
    ) -> Result<u64, WriteError> {
        let db = self.database().ok_or(WriteError::ReadOnly)?;
        let txn = db.begin_write().map_err(storage)?;
        let head = Self::append_in(&txn, changes)?;
        txn.commit().map_err(storage)?;
        self.changes.bump();
        Ok(head)
    }

    /// Appends changes inside a write transaction the caller owns, so that the application's own
    /// tables and the events commit or abort together (a transactional outbox). Seqs are given
    /// from the head as this transaction sees it, so they stay gap-free whichever transaction
    /// commits. Returns the seq of the last change appended, or the head if there were none.
    ///
    /// New events go into the last stored batch while it has room (rewriting it), so that a log
    /// written one event at a time is read as fast as one written in bulk. Readers in other
    /// processes notice the commit at once on Linux (inotify), within about 20 ms elsewhere;
    /// waiters on the writer's own `Log` within about 20 ms ([`Log::append_batch`] wakes them
    /// at once).
    pub fn append_in<'a>(
        txn: &WriteTransaction,
        changes: impl IntoIterator<Item = &'a Change>,
    ) -> Result<u64, WriteError> {
        let mut table = txn.open_table(BATCHES).map_err(storage)?;
        let mut changes = changes.into_iter().peekable();
        // Seqs a salvage recorded as lost after the last batch are never given again.
        let lost_after = salvage::lost_end_in(txn)?;
        if changes.peek().is_none() {
            let head = last_seq(&table).map_err(|e| match e {
                ReadError::Undecodable { seq, source } => {
                    WriteError::Damaged { first: seq, source }
                }
                ReadError::Storage(e) => WriteError::Storage(e),
                // Reading the head never meets deleted events.
                other @ (ReadError::Truncated { .. } | ReadError::Lost { .. }) => {
                    WriteError::Storage(redb::StorageError::Corrupted(other.to_string()).into())
                }
            })?;
            return Ok(head.max(lost_after));
        }
        let mut marks = TimeMarks::open(txn)?;
        // Go on from the last batch, if it has room for the first change; a full one stays as
        // it is, rather than be written again unchanged.
        let next_payload = changes.peek().map_or(0, |change| change.payload.len());
        let (mut first, mut batch, mut head) = match table.last().map_err(storage)? {
            // A new batch's first seq is set as its first change is pushed.
            None => (0, BatchWriter::new(), lost_after),
            Some((key, stored)) => {
                let key = key.value();
                let last = CheckedBatch::new(key, stored.value())
                    .map_err(|source| WriteError::Damaged { first: key, source })?;
                let extended = BatchWriter::extending(&last);
                if lost_after > last.last() {
                    (0, BatchWriter::new(), lost_after)
                } else if extended.has_room_for(next_payload) {
                    (key, extended, last.last())
                } else {
                    (0, BatchWriter::new(), last.last())
                }
            }
        };
        for change in changes {
            head = head.checked_add(1).ok_or(WriteError::SeqExhausted)?;
            if !batch.has_room_for(change.payload.len()) {
                let full = std::mem::take(&mut batch).finish();
                table.insert(first, full.as_slice()).map_err(storage)?;
            }
            if batch.is_empty() {
                first = head;
            }
            batch.push(head, change);
            marks.note(head, change.timestamp_ms)?;
        }
        table
            .insert(first, batch.finish().as_slice())
            .map_err(storage)?;
        marks.flush()?;
        Ok(head)
    }

    /// How long a waiter may sleep before it reads the head again to catch commits it was not
    /// told of: [`changes::WATCHED_RECHECK`] while a file watch reports every process's writes,
    /// [`changes::CROSS_PROCESS_RECHECK`] otherwise.
    pub fn recheck_interval(&self) -> std::time::Duration {
        self.changes.recheck()
    }

    /// Whether every change to the file, by any process, reaches this `Log`: its own file watch
    /// is in place, or [`Log::rely_on_notices`] was called.
    pub fn is_watched(&self) -> bool {
        self.changes.is_complete()
    }

    /// From now on, every change to the file is told to this `Log` through [`Log::changed`],
    /// by a process that watches it: for a reader that cannot watch the file itself (the
    /// system's limit of file watches per user, 128 by default on Linux, is reached). Waiters
    /// then recheck the file only every [`changes::WATCHED_RECHECK`].
    pub fn rely_on_notices(&self) {
        self.changes
            .told
            .store(true, std::sync::atomic::Ordering::Release);
        self.changes.set_complete(true);
    }

    /// Whether [`Log::rely_on_notices`] was called: a watch of its own needs no notices, which
    /// would only wake its waiters twice.
    pub fn relies_on_notices(&self) -> bool {
        self.changes.told.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Tells this `Log` that its file changed, waking its waiters.
    pub fn changed(&self) {
        self.changes.bump();
    }

    /// How many changes this `Log` has seen (its appends, and on Linux every write to the file by
    /// any process); pass it to [`Log::appended`].
    pub fn generation(&self) -> u64 {
        self.changes.count()
    }

    /// Completes once the log changes after `generation` (read it before checking the head, so
    /// that a change in between is not missed). Appends through this `Log` complete it at once,
    /// and so do commits by other processes where it watches the file (a read-only `Log` on
    /// Linux); recheck the head every [`Log::recheck_interval`] for the others.
    pub fn appended(&self, generation: u64) -> AppendedSince<'_> {
        self.changes.after(generation)
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("read_only", &self.database().is_none())
            .finish_non_exhaustive()
    }
}
