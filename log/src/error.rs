//! Why an operation on the log failed: opening it ([`OpenError`]), reading it ([`ReadError`]),
//! writing it ([`WriteError`]). Each variant is a situation a caller can act on; the messages
//! state facts, and the CLI adds the command that helps.

use crate::codec::DecodeError;
use crate::schema::FORMAT_VERSION;
use std::path::PathBuf;

/// Why a log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// There is no file at the path.
    #[error("{}: no such database file", path.display())]
    NotFound {
        /// The path asked for.
        path: PathBuf,
    },
    /// Another process holds the file in a way that excludes this open.
    #[error("{}: database is open in another process that excludes this one (a writer in exclusive mode, another pulsewatch version, or this log already open in this process)", path.display())]
    Locked {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file was left unclean by a writer that crashed; a read-only open cannot repair it.
    #[error("{}: database was not closed cleanly (its writer stopped abruptly) and needs a repair, which opening it for writing once does", path.display())]
    NeedsRepair {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file cannot be created: its directory does not exist.
    #[error("{}: cannot create the database: its directory does not exist", path.display())]
    NoDirectory {
        /// The path asked for.
        path: PathBuf,
    },
    /// The path is a directory, not a database file.
    #[error("{}: a directory, not a database file", path.display())]
    IsADirectory {
        /// The path asked for.
        path: PathBuf,
    },
    /// The path is a device, a FIFO or a socket, not a database file.
    #[error("{}: a device, FIFO or socket, not a database file", path.display())]
    NotAFile {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file is not a redb database at all (it may be empty).
    #[error("{}: not a database (the file is empty, or not in redb's format)", path.display())]
    NotADatabase {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file is a redb database but holds no pulsewatch event log.
    #[error("{}: a redb database, but not a pulsewatch event log", path.display())]
    NotALog {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file's layout is one this build does not read.
    #[error("{}: event-log format {found}, this build reads format {FORMAT_VERSION}{}", path.display(), if *found < FORMAT_VERSION { " (an older log: upgrade it first)" } else { "" })]
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
#[non_exhaustive]
pub enum ReadError {
    /// The storage engine failed; nothing was consumed.
    #[error("cannot read the event log: {0}")]
    Storage(#[from] redb::Error),
    /// The events asked for begin with ones retention deleted; nothing was skipped.
    #[error(
        "the events asked for were deleted by retention: the oldest stored is seq {oldest} (read from {} to go on without the others)",
        oldest - 1
    )]
    Truncated {
        /// The seq of the oldest event still stored.
        oldest: u64,
    },
    /// The events asked for begin with ones lost to a damaged batch and left out when the log
    /// was salvaged; nothing was skipped.
    #[error(
        "events {first}..{last} were lost to a damaged batch and left out when the log was salvaged (read from {last} to go on without them)"
    )]
    Lost {
        /// The first lost seq at or after the one asked for.
        first: u64,
        /// The last seq of the lost range.
        last: u64,
    },
    /// A stored event could not be read: its batch is damaged, or of a newer version.
    #[error("event {seq} cannot be decoded: {source}")]
    Undecodable {
        /// The first seq asked for that could not be read.
        seq: u64,
        /// Why.
        source: DecodeError,
    },
}

/// Why an append failed. Nothing of a failed append is stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The group commit this append joined failed; nothing of the group was stored.
    #[error("{0}")]
    Group(std::sync::Arc<WriteError>),
    /// The commit of this append's group panicked, so whether it was stored is not known: read
    /// the log to find out.
    #[error("the commit of this append's group panicked; whether it was stored is not known")]
    CommitPanicked,
    /// The last stored batch is damaged, so the next seq is not known for sure.
    #[error("cannot append: the last stored batch, from seq {first}, is damaged: {source}")]
    Damaged {
        /// The key of the damaged batch.
        first: u64,
        /// What is wrong with it.
        source: DecodeError,
    },
}
