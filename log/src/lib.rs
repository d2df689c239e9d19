//! The pulsewatch change feed: the event model, its stored encoding, the poll contract, and an
//! event log over a [redb](https://docs.rs/redb) file.
//!
//! This crate has no WebAssembly runtime in it, so every implementation of the
//! `pulse:watch/feed` contract (the native host, a provider component, another backend) shares
//! one codec and one set of poll semantics.
//!
//! ```
//! use pulsewatch_log::{Change, ChangeKind, Log};
//! # let dir = tempfile::tempdir().unwrap();
//! let log = Log::create(dir.path().join("events.redb"))?;
//! log.append(&Change::new(ChangeKind::Created, 0x1, 0xa))?;
//! log.append(&Change::new(ChangeKind::Updated, 0x1, 0xa).with_payload(*b"{\"n\":2}"))?;
//!
//! // Each consumer holds its own cursor: the seq of the last event it processed.
//! let batch = log.poll(0, 1000)?;
//! assert_eq!(batch.events.len(), 2);
//! assert_eq!(batch.last_seq, 2);
//! assert!(log.poll(batch.last_seq, 1000)?.events.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "store")]
mod changes;
pub mod codec;
#[cfg(feature = "store")]
mod derived;
#[cfg(feature = "store")]
mod error;
mod event;
#[cfg(feature = "store")]
mod group;
#[cfg(feature = "store")]
mod log;
mod poll;
pub mod provider;
#[cfg(feature = "store")]
mod read;
#[cfg(feature = "store")]
mod retention;
#[cfg(feature = "store")]
mod salvage;
#[cfg(feature = "store")]
pub mod schema;
#[cfg(feature = "store")]
mod snapshot;
mod start;
#[cfg(feature = "store")]
mod times;
pub mod wit;

/// The storage engine, for applications that commit their own tables with events
/// ([`Log::append_in`]).
#[cfg(feature = "store")]
pub use redb;

#[cfg(feature = "store")]
pub use changes::{AppendedSince, CROSS_PROCESS_RECHECK, WATCHED_RECHECK};
pub use codec::{DecodeError, EntryRef};
#[cfg(feature = "store")]
pub use derived::{
    Checkpoint, CommitError, Committed, Derived, Given, MAX_STATE_BYTES, ORIGINS, Origin,
    OutputError, OutputLog, OutputLogError, Outputs, SOURCES,
};
#[cfg(feature = "store")]
pub use error::{OpenError, ReadError, WriteError};
pub use event::{Change, ChangeKind, Event, UnknownKind, now_ms};
#[cfg(feature = "store")]
pub use group::PendingAppend;
#[cfg(feature = "store")]
pub use log::Log;
pub use poll::{Batch, Budget, DEFAULT_MAX_BYTES, DEFAULT_MAX_EVENTS, PollLimits};
#[cfg(feature = "store")]
pub use read::Packed;
#[cfg(feature = "store")]
pub use retention::Compacted;
#[cfg(feature = "store")]
pub use salvage::{Damage, Verified};
#[cfg(feature = "store")]
pub use snapshot::{SnapshotError, SnapshotInfo};
pub use start::{START_VARIABLE, STATE_DIR, StartPosition, UnknownStart};
