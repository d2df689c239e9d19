//! The event log over a redb file.
//!
//! One process writes ([`Log::create`] / [`Log::open`]); any number of processes read
//! ([`Log::open_read_only`]) at the same time. Both use redb's `SingleWriter` concurrency mode,
//! in which a reader sees each new commit on its next read transaction without reopening.

use crate::codec::{self, DecodeError};
use crate::event::{Change, Event};
use crate::poll::{Batch, BatchBuilder, PollLimits};
use crate::schema::{EVENTS, FORMAT_KEY, FORMAT_VERSION, META};
use redb::{
    Builder, Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, TableError, WriteTransaction,
};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often a waiter looks at the file for commits made by another process. Commits made
/// through this `Log` wake waiters at once.
pub const CROSS_PROCESS_RECHECK: Duration = Duration::from_millis(20);

/// Why a log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// There is no file at the path.
    #[error("{}: no such database file", path.display())]
    NotFound {
        /// The path asked for.
        path: PathBuf,
    },
    /// Another process holds the file in a way that excludes this open.
    #[error("{}: database is open in another process (one writer at a time; readers must use read-only mode)", path.display())]
    Locked {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file was left unclean by a writer that crashed; a read-only open cannot repair it.
    #[error("{}: database was not closed cleanly (its writer stopped abruptly) and needs a repair: run `pulsewatch repair --db {}` or open it for writing once", path.display(), path.display())]
    NeedsRepair {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file is a redb database but holds no pulsewatch event log.
    #[error("{}: a redb database, but not a pulsewatch event log", path.display())]
    NotALog {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file's layout is one this build does not know.
    #[error("{}: event-log format {found}, this build reads format {FORMAT_VERSION}", path.display())]
    UnsupportedFormat {
        /// The path asked for.
        path: PathBuf,
        /// The format version stored in the file.
        found: u64,
    },
    /// redb refused the file: not a redb database, damaged, or unreadable.
    #[error("{}: cannot open database: {source}", path.display())]
    Database {
        /// The path asked for.
        path: PathBuf,
        /// What redb reported.
        source: redb::Error,
    },
}

/// Why a read of the log failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The storage engine failed; nothing was consumed.
    #[error("cannot read the event log: {0}")]
    Storage(#[from] redb::Error),
    /// A stored event could not be decoded.
    #[error("event {seq} cannot be decoded: {source}")]
    Undecodable {
        /// The event's seq.
        seq: u64,
        /// Why decoding failed.
        source: DecodeError,
    },
}

/// Why an append failed. Nothing of a failed append is stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The log was opened read-only.
    #[error("the event log is open read-only")]
    ReadOnly,
    /// The storage engine failed.
    #[error("cannot write the event log: {0}")]
    Storage(#[from] redb::Error),
    /// All `u64` sequence numbers are used.
    #[error("the event log has used every sequence number")]
    SeqExhausted,
}

enum Db {
    Writer(Database),
    Reader(ReadOnlyDatabase),
}

/// Wakes in-process waiters when this process appends: threads blocked in [`Log::wait`] and
/// tasks awaiting [`Log::appended`]. A generation count, not a flag, so that a waiter that checks
/// the log and then sleeps cannot miss an append made in between.
#[derive(Default)]
struct Appended {
    state: Mutex<Generation>,
    cond: Condvar,
}

#[derive(Default)]
struct Generation {
    count: u64,
    /// Tasks to wake on the next append. No async runtime is assumed: any executor's wakers work.
    wakers: Vec<Waker>,
}

impl Appended {
    fn lock(&self) -> MutexGuard<'_, Generation> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A future that completes with the new generation once this process appends to the log after
/// the generation it was created with; see [`Log::appended`].
#[must_use = "futures do nothing unless awaited"]
pub struct AppendedSince<'a> {
    appended: &'a Appended,
    seen: u64,
}

impl Future for AppendedSince<'_> {
    type Output = u64;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let mut state = self.appended.lock();
        if state.count != self.seen {
            return Poll::Ready(state.count);
        }
        // One entry per waiting task: a task polled again replaces its own waker.
        match state.wakers.iter_mut().find(|w| w.will_wake(cx.waker())) {
            Some(waker) => waker.clone_from(cx.waker()),
            None => state.wakers.push(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// A change-event log stored in a redb file.
pub struct Log {
    db: Db,
    appended: Appended,
}

/// The builder every open of a log uses. Natively, `SingleWriter`: one writer process and any
/// number of reader processes on one file, with byte-range locks. WASI has no file locks, and
/// redb refuses that mode there; a reader under WASI (a provider component) opens in the
/// default mode, and so can only read a file no writer has open: a snapshot.
fn builder() -> Builder {
    #[cfg_attr(target_os = "wasi", allow(unused_mut))]
    let mut builder = Builder::new();
    #[cfg(not(target_os = "wasi"))]
    builder.set_concurrency_mode(redb::ConcurrencyMode::SingleWriter);
    builder
}

fn open_error(path: &Path, err: DatabaseError) -> OpenError {
    let path = path.to_path_buf();
    match err {
        DatabaseError::DatabaseAlreadyOpen => OpenError::Locked { path },
        DatabaseError::RepairAborted => OpenError::NeedsRepair { path },
        DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::NotFound =>
        {
            OpenError::NotFound { path }
        }
        other => db_error(&path, other),
    }
}

pub(crate) fn db_error(path: &Path, source: impl Into<redb::Error>) -> OpenError {
    OpenError::Database {
        path: path.to_path_buf(),
        source: source.into(),
    }
}

fn storage<E: Into<redb::Error>>(err: E) -> redb::Error {
    err.into()
}

/// The seq of the newest event in `table`, 0 if it is empty.
fn last_seq(table: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64, redb::Error> {
    Ok(table.last()?.map_or(0, |(seq, _)| seq.value()))
}

impl Log {
    /// Opens the log at `path` for writing, creating the file if it does not exist.
    pub fn create(path: impl AsRef<Path>) -> Result<Log, OpenError> {
        let path = path.as_ref();
        // Not found while creating means a missing directory: redb's message says so, while
        // NotFound ("no such database file") would not.
        let db = builder().create(path).map_err(|e| match e {
            DatabaseError::Storage(storage) => db_error(path, storage),
            other => open_error(path, other),
        })?;
        Self::init(path, &db)?;
        Ok(Self::with_db(Db::Writer(db)))
    }

    /// Opens an existing log for writing.
    pub fn open(path: impl AsRef<Path>) -> Result<Log, OpenError> {
        let path = path.as_ref();
        let db = builder().open(path).map_err(|e| open_error(path, e))?;
        Self::check_format(path, &db)?;
        Ok(Self::with_db(Db::Writer(db)))
    }

    /// Opens an existing log for reading only. Any number of readers may share the file with one
    /// writer in another process.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Log, OpenError> {
        let path = path.as_ref();
        let db = builder()
            .open_read_only(path)
            .map_err(|e| open_error(path, e))?;
        Self::check_format(path, &db)?;
        Ok(Self::with_db(Db::Reader(db)))
    }

    fn with_db(db: Db) -> Log {
        Log {
            db,
            appended: Appended::default(),
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
            txn.open_table(EVENTS).map_err(|e| db_error(path, e))?;
            txn.commit().map_err(|e| db_error(path, e))?;
        } else {
            // Nothing to write: spare the commit's two fsyncs.
            txn.abort().map_err(|e| db_error(path, e))?;
        }
        Self::check_format(path, db)
    }

    fn check_format(path: &Path, db: &impl ReadableDatabase) -> Result<(), OpenError> {
        let txn = db.begin_read().map_err(|e| db_error(path, e))?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(TableError::TableDoesNotExist(_)) => {
                return Err(OpenError::NotALog {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(db_error(path, e)),
        };
        match meta.get(FORMAT_KEY).map_err(|e| db_error(path, e))? {
            Some(v) if v.value() == FORMAT_VERSION => Ok(()),
            Some(v) => Err(OpenError::UnsupportedFormat {
                path: path.to_path_buf(),
                found: v.value(),
            }),
            None => Err(OpenError::NotALog {
                path: path.to_path_buf(),
            }),
        }
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

    /// Appends one change and returns its seq. Durable when this returns.
    pub fn append(&self, change: &Change) -> Result<u64, WriteError> {
        self.append_batch(std::slice::from_ref(change))
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
        self.notify_appended();
        Ok(head)
    }

    /// Appends changes inside a write transaction the caller owns, so that the application's own
    /// tables and the events commit or abort together (a transactional outbox). Seqs are given
    /// from the head as this transaction sees it, so they stay gap-free whichever transaction
    /// commits. Returns the seq of the last change appended, or the head if there were none.
    ///
    /// Waiters in this process notice the commit within about 20 ms; they are not woken at once
    /// as they are by [`Log::append_batch`].
    pub fn append_in<'a>(
        txn: &WriteTransaction,
        changes: impl IntoIterator<Item = &'a Change>,
    ) -> Result<u64, WriteError> {
        let mut table = txn.open_table(EVENTS).map_err(storage)?;
        let mut head = last_seq(&table)?;
        let mut record = Vec::new();
        for change in changes {
            head = head.checked_add(1).ok_or(WriteError::SeqExhausted)?;
            record.clear();
            codec::encode_into(change, &mut record);
            table.insert(head, record.as_slice()).map_err(storage)?;
        }
        Ok(head)
    }

    fn notify_appended(&self) {
        let mut state = self.appended.lock();
        state.count = state.count.wrapping_add(1);
        let wakers = std::mem::take(&mut state.wakers);
        drop(state);
        self.appended.cond.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// How many appends this `Log` has made; pass it to [`Log::appended`].
    pub fn generation(&self) -> u64 {
        self.appended.lock().count
    }

    /// Completes once this `Log` appends after `generation` (read it before checking the head,
    /// so that an append in between is not missed). For async waiters: commits made by another
    /// process do not complete it; recheck the head every [`CROSS_PROCESS_RECHECK`] for those.
    pub fn appended(&self, generation: u64) -> AppendedSince<'_> {
        AppendedSince {
            appended: &self.appended,
            seen: generation,
        }
    }

    /// The seq of the newest event, 0 when the log is empty.
    pub fn head(&self) -> Result<u64, ReadError> {
        let txn = self.begin_read()?;
        Ok(last_seq(&txn.open_table(EVENTS).map_err(storage)?)?)
    }

    /// The number of events stored.
    pub fn len(&self) -> Result<u64, ReadError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(EVENTS).map_err(storage)?;
        Ok(table.len().map_err(storage)?)
    }

    /// Whether the log holds no event.
    pub fn is_empty(&self) -> Result<bool, ReadError> {
        Ok(self.len()? == 0)
    }

    /// The events after `since`, at most `limit` of them and within the default [`PollLimits`],
    /// by an O(k) range scan. See [`Batch`] for the returned cursor.
    pub fn poll(&self, since: u64, limit: u32) -> Result<Batch, ReadError> {
        self.poll_within(since, limit, &PollLimits::default())
    }

    /// The events after `since`, at most `limit` of them and within `limits`.
    ///
    /// An event that cannot be decoded ends the batch before it; if it is the first event asked
    /// for, the poll fails with [`ReadError::Undecodable`].
    pub fn poll_within(
        &self,
        since: u64,
        limit: u32,
        limits: &PollLimits,
    ) -> Result<Batch, ReadError> {
        let mut batch = BatchBuilder::new(since, limit, limits);
        let Some(first) = batch.first_wanted() else {
            return Ok(batch.finish());
        };
        let txn = self.begin_read()?;
        let table = txn.open_table(EVENTS).map_err(storage)?;
        for entry in table.range(first..).map_err(storage)? {
            let (seq, record) = entry.map_err(storage)?;
            let seq = seq.value();
            let change = match codec::decode(record.value()) {
                Ok(change) => change,
                Err(source) if batch.is_empty() => {
                    return Err(ReadError::Undecodable { seq, source });
                }
                Err(_) => break,
            };
            if !batch.push(Event { seq, change }) {
                break;
            }
        }
        Ok(batch.finish())
    }

    /// Blocks until the head passes `since` or `timeout` has passed; returns the head.
    ///
    /// Appends through this `Log` wake the waiter at once; commits by another process are seen
    /// within about 20 ms.
    pub fn wait(&self, since: u64, timeout: Duration) -> Result<u64, ReadError> {
        // A timeout too large to represent is as good as forever.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let generation = self.generation();
            let head = self.head()?;
            let now = Instant::now();
            if head > since || deadline.is_some_and(|d| now >= d) {
                return Ok(head);
            }
            let guard = self.appended.lock();
            if guard.count != generation {
                continue;
            }
            let slice = deadline.map_or(CROSS_PROCESS_RECHECK, |d| {
                (d - now).min(CROSS_PROCESS_RECHECK)
            });
            drop(
                self.appended
                    .cond
                    .wait_timeout(guard, slice)
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("read_only", &self.database().is_none())
            .finish_non_exhaustive()
    }
}
