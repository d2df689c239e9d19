//! Derived events: what a plugin emits into an output log, committed in the same transaction as
//! its cursor there, so that after a crash at any moment the output holds each input event's
//! derived events exactly once, in input order.
//!
//! An output log is an ordinary log with two more tables: [`SOURCES`], each emitting plugin's
//! checkpoint (the input log it reads, its cursor and its state), and [`ORIGINS`], where each
//! derived event came from. A commit appends the derived events of input seqs after the
//! plugin's stored cursor, drops those at or before it (written by an earlier commit that a
//! crashed plugin replays), and stores the new checkpoint, all in one redb transaction.

use crate::Change;
use crate::error::{ReadError, WriteError};
use crate::log::{Log, storage};
use redb::{
    Database, ReadTransaction, ReadableTable, TableDefinition, TableError, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Each emitting plugin's checkpoint in this output log, by plugin name: a bincode [`Checkpoint`].
pub const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("pulsewatch.sources");

/// Where derived events came from: for each commit that wrote events, the seq of its first
/// event to a bincode `OriginRow` (the plugin, its input log, and per input seq how many
/// events it derived, in output order).
pub const ORIGINS: TableDefinition<u64, &[u8]> = TableDefinition::new("pulsewatch.origins");

/// An event a plugin derived from the input event `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The seq of the input event it derives from.
    pub from: u64,
    /// The event to write (stamped by the committer).
    pub change: Change,
}

/// A plugin's checkpoint in an output log: what it has committed there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The input log it reads, as its host named it.
    pub input: String,
    /// The seq of the last input event whose derived events are in this log.
    pub cursor: u64,
    /// The plugin's own state as of `cursor`; `None` for its initial state (the checkpoint a
    /// first commit leaves in each output before it writes anything, so that a crash part-way
    /// through it resumes every output from the same place).
    #[serde(with = "serde_bytes")]
    pub state: Option<Vec<u8>>,
}

/// Where one derived event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The input log, as the plugin's host named it.
    pub input: String,
    /// The plugin that derived it.
    pub plugin: String,
    /// The input event's seq.
    pub seq: u64,
    /// Its place among the events derived from that input event, from 0.
    pub index: u32,
}

impl Origin {
    /// A stable identifier a downstream system can deduplicate on: `plugin:seq:index`. The same
    /// derived event has the same id whenever it is read, and exactly-once commits never write
    /// two events with one id to one log.
    pub fn id(&self) -> String {
        format!("{}:{}:{}", self.plugin, self.seq, self.index)
    }
}

/// What one commit wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// Derived events appended.
    pub written: u64,
    /// Derived events dropped: their input events' derived events were already committed.
    pub skipped: u64,
    /// The output log's head after the commit.
    pub head: u64,
}

/// Why a commit of derived events was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The derived events are not in input order, or derive from seqs the cursor does not
    /// cover.
    #[error(
        "derived event {index} derives from seq {from}, {}",
        if *from == 0 { "and seqs start at 1".to_owned() }
        else if *from > *cursor { format!("after the cursor being committed, {cursor}: commit a cursor that covers every event derived from") }
        else { format!("before the one before it, {previous}: derived events go in input order") }
    )]
    Order {
        /// Its position in the commit, from 0.
        index: usize,
        /// The seq it derives from.
        from: u64,
        /// The seq the event before it derives from (0 for the first).
        previous: u64,
        /// The cursor being committed.
        cursor: u64,
    },
    /// The output log could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl Checkpoint {
    /// A checkpoint as outputs store it (an output log's `SOURCES` table, a stream output's
    /// bucket), encoded from borrowed parts: the state is not copied.
    pub fn encode(input: &str, cursor: u64, state: Option<&[u8]>) -> Vec<u8> {
        encode(&CheckpointRef {
            input,
            cursor,
            state,
        })
    }

    /// The checkpoint stored as `bytes` by [`Checkpoint::encode`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, redb::StorageError> {
        decode(bytes, "a checkpoint")
    }
}

/// A [`Checkpoint`] to store, borrowing its state (up to 16 MiB, written to every output).
#[derive(Serialize)]
struct CheckpointRef<'a> {
    input: &'a str,
    cursor: u64,
    #[serde(with = "serde_bytes")]
    state: Option<&'a [u8]>,
}

/// The stored form of one commit's origins.
#[derive(Serialize, Deserialize)]
struct OriginRow {
    input: String,
    plugin: String,
    /// (input seq, events derived from it), in output order.
    runs: Vec<(u64, u32)>,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("encoding to memory cannot fail")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, redb::StorageError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(value, _)| value)
        .map_err(|e| redb::StorageError::Corrupted(format!("{what}: {e}")))
}

/// Checks that `derived` are in input order and covered by `cursor`.
fn check_order(derived: &[Derived], cursor: u64) -> Result<(), CommitError> {
    let mut previous = 0;
    for (index, d) in derived.iter().enumerate() {
        if d.from == 0 || d.from < previous || d.from > cursor {
            return Err(CommitError::Order {
                index,
                from: d.from,
                previous,
                cursor,
            });
        }
        previous = d.from;
    }
    Ok(())
}

impl Log {
    /// The checkpoint `plugin` last committed into this log, if any.
    pub fn checkpoint(&self, plugin: &str) -> Result<Option<Checkpoint>, ReadError> {
        let txn = self.begin_read().map_err(ReadError::Storage)?;
        let table = match txn.open_table(SOURCES) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(ReadError::Storage(storage(e))),
        };
        let stored = table
            .get(plugin)
            .map_err(|e| ReadError::Storage(storage(e)))?;
        stored
            .map(|bytes| decode(bytes.value(), &format!("the checkpoint of {plugin}")))
            .transpose()
            .map_err(|e| ReadError::Storage(e.into()))
    }

    /// Commits what `plugin`, reading `input`, derived up to and including input seq `cursor`:
    /// appends `derived`, records their origins, and stores the checkpoint (`cursor`, `state`),
    /// in one transaction. Durable when this returns.
    ///
    /// Derived events from input seqs at or before the cursor already stored here are dropped:
    /// they were committed before, and the plugin is replaying after a crash. A cursor below
    /// the stored one leaves the stored checkpoint as it is.
    pub fn commit_derived(
        &self,
        plugin: &str,
        input: &str,
        cursor: u64,
        state: &[u8],
        derived: &[Derived],
    ) -> Result<Committed, CommitError> {
        check_order(derived, cursor)?;
        Ok(self.commit_checked(plugin, input, cursor, Some(state), derived)?)
    }

    /// [`Log::commit_derived`] of events whose order was checked.
    fn commit_checked(
        &self,
        plugin: &str,
        input: &str,
        cursor: u64,
        state: Option<&[u8]>,
        derived: &[Derived],
    ) -> Result<Committed, WriteError> {
        let db = self.database().ok_or(WriteError::ReadOnly)?;
        let txn = db
            .begin_write()
            .map_err(storage)
            .map_err(WriteError::Storage)?;
        // The tables close before the commit.
        let committed = {
            let write = |e: redb::TableError| WriteError::Storage(storage(e));
            let mut sources = txn.open_table(SOURCES).map_err(write)?;
            let stored = match sources
                .get(plugin)
                .map_err(|e| WriteError::Storage(storage(e)))?
            {
                Some(bytes) => Some(
                    decode::<Checkpoint>(bytes.value(), &format!("the checkpoint of {plugin}"))
                        .map_err(|e| WriteError::Storage(e.into()))?,
                ),
                None => None,
            };
            let done = stored.as_ref().map_or(0, |c| c.cursor);
            let fresh = derived.partition_point(|d| d.from <= done);
            let new = &derived[fresh..];
            let head = Log::append_in(&txn, new.iter().map(|d| &d.change))?;
            if !new.is_empty() {
                let mut runs: Vec<(u64, u32)> = Vec::new();
                for d in new {
                    match runs.last_mut() {
                        Some((from, n)) if *from == d.from => *n += 1,
                        _ => runs.push((d.from, 1)),
                    }
                }
                let row = encode(&OriginRow {
                    input: input.to_owned(),
                    plugin: plugin.to_owned(),
                    runs,
                });
                let mut origins = txn.open_table(ORIGINS).map_err(write)?;
                // Derived events get consecutive seqs, the last being the head.
                origins
                    .insert(head + 1 - new.len() as u64, row.as_slice())
                    .map_err(|e| WriteError::Storage(storage(e)))?;
            }
            // An older cursor (another output was behind) leaves the newer checkpoint.
            if cursor >= done {
                let checkpoint = Checkpoint::encode(input, cursor, state);
                sources
                    .insert(plugin, checkpoint.as_slice())
                    .map_err(|e| WriteError::Storage(storage(e)))?;
            }
            Committed {
                written: new.len() as u64,
                skipped: fresh as u64,
                head,
            }
        };
        txn.commit().map_err(storage).map_err(WriteError::Storage)?;
        self.changes.bump();
        Ok(committed)
    }

    /// The origins of the derived events with seqs `first..=last`, in seq order. Events that
    /// were not derived (appended by a writer) have none and are left out.
    pub fn origins(&self, first: u64, last: u64) -> Result<Vec<(u64, Origin)>, ReadError> {
        let txn = self.begin_read().map_err(ReadError::Storage)?;
        let table = match txn.open_table(ORIGINS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(ReadError::Storage(storage(e))),
        };
        let read = |e: redb::StorageError| ReadError::Storage(e.into());
        // The row that covers `first` starts at or before it.
        let start = table
            .range(..=first)
            .map_err(read)?
            .next_back()
            .transpose()
            .map_err(read)?
            .map_or(first, |(key, _)| key.value());
        let mut found = Vec::new();
        for row in table.range(start..=last).map_err(read)? {
            let (key, value) = row.map_err(read)?;
            let row: OriginRow = decode(value.value(), "an origins row")
                .map_err(|e| ReadError::Storage(e.into()))?;
            let mut seq = key.value();
            for (from, n) in row.runs {
                for index in 0..n {
                    if (first..=last).contains(&seq) {
                        found.push((
                            seq,
                            Origin {
                                input: row.input.clone(),
                                plugin: row.plugin.clone(),
                                seq: from,
                                index,
                            },
                        ));
                    }
                    seq += 1;
                }
            }
        }
        Ok(found)
    }
}

/// The most bytes of state a commit may carry: it is written to every output log at each
/// commit.
pub const MAX_STATE_BYTES: usize = 16 << 20;

/// A failure of an output to read or write what a plugin committed there.
pub type OutputLogError = Box<dyn std::error::Error + Send + Sync>;

/// Where a plugin's derived events go: an output that keeps, for each plugin writing to it, its
/// checkpoint and the derived events it committed. A [`Log`] is one; the host has another over
/// a JetStream stream. [`Outputs`] holds the rules of the contract and calls these.
pub trait OutputLog: Send + Sync + std::fmt::Debug {
    /// The checkpoint `plugin` last committed here, if any.
    fn checkpoint(&self, plugin: &str) -> Result<Option<Checkpoint>, OutputLogError>;

    /// Commits what `plugin`, reading `input`, derived up to and including input seq `cursor`,
    /// with its `state` (`None`: its initial state): appends `derived` (in input order, as
    /// [`Outputs`] checks before it calls this) but those this output already holds, and stores the checkpoint unless it holds a later
    /// one. Durable when it returns; after a failure, committing the same again writes nothing
    /// twice.
    fn commit(
        &self,
        plugin: &str,
        input: &str,
        cursor: u64,
        state: Option<&[u8]>,
        derived: &[Derived],
    ) -> Result<(), OutputLogError>;

    /// The most bytes of state a commit here may carry.
    fn max_state(&self) -> usize {
        MAX_STATE_BYTES
    }

    /// The most bytes of payload one derived event here may carry (none: no bound but the
    /// log's own).
    fn max_payload(&self) -> Option<usize> {
        None
    }
}

impl OutputLog for Log {
    fn checkpoint(&self, plugin: &str) -> Result<Option<Checkpoint>, OutputLogError> {
        Ok(Log::checkpoint(self, plugin)?)
    }

    fn commit(
        &self,
        plugin: &str,
        input: &str,
        cursor: u64,
        state: Option<&[u8]>,
        derived: &[Derived],
    ) -> Result<(), OutputLogError> {
        self.commit_checked(plugin, input, cursor, state, derived)?;
        Ok(())
    }
}

/// What a plugin was given in a run, which bounds what it may commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Given {
    /// The `since` of its first poll, if it polled: where it started.
    pub start: Option<u64>,
    /// The highest seq delivered to it, 0 before any.
    pub delivered: u64,
}

/// Why a plugin's commit did not happen, in the contract's terms (`commit-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    /// The commit breaks a rule of the contract; nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// An output log could not be written now; outputs this commit reached keep it.
    #[error("{0}")]
    Unavailable(String),
}

/// One plugin's output logs and where its cursor stands in them: the rules of
/// `pulse:watch/output` in one place, for every side that serves it (the host, and a provider
/// component under `wasmtime run`).
///
/// Every rule of a commit is checked before anything is written, so that an invalid commit
/// writes nothing anywhere; then each output log is committed in turn, one transaction each. A
/// failure part-way leaves some outputs a commit ahead of the others, which is what the logs'
/// per-plugin checkpoints are for: the plugin resumes from the lowest
/// ([`Outputs::committed`]), and what it derives again is dropped where it is already written.
#[derive(Debug)]
pub struct Outputs {
    plugin: String,
    /// The input log, as origins name it.
    input: String,
    logs: Vec<(String, Arc<dyn OutputLog>)>,
    /// The cursor the plugin resumed from or last committed: no commit may go below it, and no
    /// derived event may derive from it or before.
    base: AtomicU64,
    /// Whether every output has a checkpoint of the plugin's (placeholders made by the first
    /// commit of this run included).
    prepared: std::sync::atomic::AtomicBool,
}

impl Outputs {
    /// The outputs `logs` (each with the name the plugin knows it by) of `plugin`, which reads
    /// the log named `input`.
    pub fn new(plugin: &str, input: &str, logs: Vec<(String, Arc<dyn OutputLog>)>) -> Self {
        Outputs {
            plugin: plugin.to_owned(),
            input: input.to_owned(),
            logs,
            base: Default::default(),
            prepared: Default::default(),
        }
    }

    /// The names of the outputs, in order: what a derived event's output index refers to.
    pub fn names(&self) -> Vec<String> {
        self.logs.iter().map(|(name, _)| name.clone()).collect()
    }

    /// The cursor commits must not go below.
    pub fn base(&self) -> u64 {
        self.base.load(Ordering::Relaxed)
    }

    /// Sets the cursor commits must not go below (one that [`Outputs::committed`] gave).
    pub fn set_base(&self, base: u64) {
        self.base.store(base, Ordering::Relaxed);
    }

    /// Each output's checkpoint of the plugin, if it has one.
    fn checkpoints(&self) -> Result<Vec<Option<Checkpoint>>, OutputError> {
        self.logs
            .iter()
            .map(|(name, log)| {
                log.checkpoint(&self.plugin)
                    .map_err(|e| unavailable(name, &*e))
            })
            .collect()
    }

    /// The checkpoint to resume from: the lowest among the outputs that have one (its state
    /// `None` for the plugin's initial state); none before the plugin's first commit. An
    /// output granted later than the others has none, and takes the plugin's events from
    /// there on.
    pub fn committed(&self) -> Result<Option<Checkpoint>, OutputError> {
        let lowest = self
            .checkpoints()?
            .into_iter()
            .flatten()
            .min_by_key(|c| c.cursor);
        self.set_base(lowest.as_ref().map_or(0, |c| c.cursor));
        Ok(lowest)
    }

    /// Before the first commit of a run writes anything, gives each output that has no
    /// checkpoint of the plugin's one where the plugin stands: its last commit (with its state)
    /// if another output has one, else `start`, with its initial state. A crash part-way
    /// through a commit then resumes every output from a checkpoint of its own, never from
    /// a start position looked up again.
    fn prepare(&self, start: u64) -> Result<(), OutputError> {
        if self.prepared.load(Ordering::Relaxed) {
            return Ok(());
        }
        let checkpoints = self.checkpoints()?;
        let lowest = checkpoints.iter().flatten().min_by_key(|c| c.cursor);
        let (cursor, state) = match lowest {
            Some(c) => (c.cursor, c.state.clone()),
            None => (start, None),
        };
        for ((name, log), found) in self.logs.iter().zip(&checkpoints) {
            if found.is_none() {
                log.commit(&self.plugin, &self.input, cursor, state.as_deref(), &[])
                    .map_err(|e| unavailable(name, &*e))?;
            }
        }
        self.prepared.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Splits `events` (each with its output's index) by output, after checking every rule of
    /// a commit to `cursor` by a plugin given events up to `delivered`.
    fn split(
        &self,
        cursor: u64,
        delivered: u64,
        state: &[u8],
        events: Vec<(u32, Derived)>,
    ) -> Result<Vec<Vec<Derived>>, String> {
        let base = self.base();
        if cursor < base {
            return Err(format!(
                "the cursor {cursor} is before the cursor already committed, {base}"
            ));
        }
        if cursor > base.max(delivered) {
            return Err(format!(
                "the cursor {cursor} is after the last event the plugin was given, {}",
                base.max(delivered)
            ));
        }
        // A log on this machine takes 16 MiB; a message of a JetStream server, less.
        if let Some((name, log)) = self
            .logs
            .iter()
            .find(|(_, log)| state.len() > log.max_state())
        {
            return Err(format!(
                "the state is {} bytes, more than the {} KiB a commit to output {name} may carry",
                state.len(),
                log.max_state() >> 10
            ));
        }
        let mut split: Vec<Vec<Derived>> = self.logs.iter().map(|_| Vec::new()).collect();
        for (index, (output, derived)) in events.into_iter().enumerate() {
            let Some(to) = split.get_mut(output as usize) else {
                return Err(format!(
                    "derived event {index} names output {output}, and {} granted: {:?}",
                    match self.logs.len() {
                        1 => "one is".to_owned(),
                        n => format!("{n} are"),
                    },
                    self.names()
                ));
            };
            if derived.from <= base {
                return Err(format!(
                    "derived event {index} derives from seq {}, at or before the cursor already \
                     committed, {base}",
                    derived.from
                ));
            }
            let (name, log) = &self.logs[output as usize];
            if let Some(max) = log.max_payload()
                && derived.change.payload.len() > max
            {
                return Err(format!(
                    "derived event {index} carries {} bytes of payload, more than the {max} an \
                     event of output {name} may carry",
                    derived.change.payload.len()
                ));
            }
            to.push(derived);
        }
        for (events, (name, _)) in split.iter().zip(&self.logs) {
            check_order(events, cursor).map_err(|e| format!("output {name}: {e}"))?;
        }
        Ok(split)
    }

    /// Writes `events` (each with its output's index) and moves the cursor to `cursor` with
    /// `state`, output by output, if the commit keeps every rule of the contract. `given` is
    /// what the plugin was given in this run: the `since` of its first poll (where it started)
    /// and the highest seq delivered to it.
    pub fn commit(
        &self,
        cursor: u64,
        given: Given,
        state: &[u8],
        events: Vec<(u32, Derived)>,
    ) -> Result<(), OutputError> {
        let split = self
            .split(cursor, given.delivered, state, events)
            .map_err(OutputError::Invalid)?;
        self.prepare(given.start.unwrap_or(self.base()))?;
        for ((name, log), derived) in self.logs.iter().zip(split) {
            log.commit(&self.plugin, &self.input, cursor, Some(state), &derived)
                .map_err(|e| unavailable(name, &*e))?;
        }
        self.set_base(cursor);
        Ok(())
    }
}

/// An output that could not be read or written, as the plugin is told.
fn unavailable(name: &str, error: &(dyn std::error::Error + Send + Sync)) -> OutputError {
    OutputError::Unavailable(format!("output {name}: {error}"))
}

/// Copies the derived-event tables of `source` into `copy`, in one transaction of its own.
pub(crate) fn copy_tables(source: &ReadTransaction, copy: &Database) -> Result<(), redb::Error> {
    let txn = copy.begin_write()?;
    copy_table(source, &txn, SOURCES)?;
    copy_table(source, &txn, ORIGINS)?;
    txn.commit()?;
    Ok(())
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    source: &ReadTransaction,
    txn: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<(), redb::Error> {
    let from = match source.open_table(table) {
        Ok(from) => from,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut to = txn.open_table(table)?;
    for row in from.iter()? {
        let (key, value) = row?;
        to.insert(key.value(), value.value())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChangeKind;

    fn derived(from: u64) -> Derived {
        Derived {
            from,
            change: Change::new(ChangeKind::Updated, u128::from(from), 7),
        }
    }

    #[test]
    fn order_is_checked() {
        assert!(check_order(&[derived(1), derived(1), derived(3)], 3).is_ok());
        assert!(matches!(
            check_order(&[derived(2), derived(1)], 3),
            Err(CommitError::Order { index: 1, .. })
        ));
        assert!(matches!(
            check_order(&[derived(4)], 3),
            Err(CommitError::Order {
                index: 0,
                from: 4,
                ..
            })
        ));
        assert!(check_order(&[derived(0)], 3).is_err());
    }

    #[test]
    fn a_replayed_commit_writes_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path().join("out.redb")).unwrap();
        let first = [derived(1), derived(1), derived(2)];
        let c = log.commit_derived("t", "in", 2, b"s2", &first).unwrap();
        assert_eq!((c.written, c.skipped, c.head), (3, 0, 3));
        // Replayed from seq 1 after a crash, one input event further.
        let again = [derived(1), derived(1), derived(2), derived(3)];
        let c = log.commit_derived("t", "in", 3, b"s3", &again).unwrap();
        assert_eq!((c.written, c.skipped, c.head), (1, 3, 4));
        let checkpoint = log.checkpoint("t").unwrap().unwrap();
        assert_eq!(
            (checkpoint.cursor, checkpoint.state),
            (3, Some(b"s3".to_vec()))
        );
        // An older cursor (another output was behind) keeps the newer checkpoint.
        log.commit_derived("t", "in", 2, b"old", &[]).unwrap();
        assert_eq!(log.checkpoint("t").unwrap().unwrap().cursor, 3);
        let origins = log.origins(1, 4).unwrap();
        let ids: Vec<_> = origins.iter().map(|(seq, o)| (*seq, o.id())).collect();
        assert_eq!(
            ids,
            [
                (1, "t:1:0".to_owned()),
                (2, "t:1:1".to_owned()),
                (3, "t:2:0".to_owned()),
                (4, "t:3:0".to_owned())
            ]
        );
        assert_eq!(log.origins(3, 3).unwrap().len(), 1);
        assert!(log.checkpoint("other").unwrap().is_none());
    }

    #[test]
    fn origins_start_after_events_a_writer_appended() {
        // The first derived seq follows what the log held.
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path().join("out.redb")).unwrap();
        log.append(&Change::new(ChangeKind::Created, 1, 1)).unwrap();
        log.commit_derived("t", "in", 1, b"", &[derived(1)])
            .unwrap();
        let origins = log.origins(1, 2).unwrap();
        assert_eq!(origins.len(), 1);
        assert_eq!(origins[0].0, 2);
    }

    /// A first commit cut short after one output: the other resumes from where the plugin
    /// started (its placeholder), not from a start position looked up again, and the output
    /// that is ahead drops what it already has.
    #[test]
    fn a_first_commit_cut_short_resumes_every_output_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| Arc::new(Log::create(dir.path().join(name)).unwrap());
        let (a, b) = (open("a.redb"), open("b.redb"));
        let both = |a: &Arc<Log>, b: &Arc<Log>| -> Vec<(String, Arc<dyn OutputLog>)> {
            vec![("a".into(), a.clone()), ("b".into(), b.clone())]
        };
        let outputs = Outputs::new("t", "in", both(&a, &b));
        assert!(outputs.committed().unwrap().is_none());
        // The plugin started at 50 (a start at the head, say); its first commit placed
        // checkpoints at 50 in both outputs, then reached a only.
        let given = Given {
            start: Some(50),
            delivered: 52,
        };
        outputs.prepare(given.start.unwrap()).unwrap();
        a.commit_derived("t", "in", 52, b"s52", &[derived(51), derived(52)])
            .unwrap();
        let again = Outputs::new("t", "in", both(&a, &b));
        let resumed = again.committed().unwrap().unwrap();
        assert_eq!((resumed.cursor, resumed.state), (50, None));
        again
            .commit(
                52,
                given,
                b"s52",
                vec![
                    (0, derived(51)),
                    (1, derived(51)),
                    (0, derived(52)),
                    (1, derived(52)),
                ],
            )
            .unwrap();
        assert_eq!(a.head().unwrap(), 2, "a had them");
        assert_eq!(b.head().unwrap(), 2);
        assert_eq!(b.checkpoint("t").unwrap().unwrap().cursor, 52);
    }
}
