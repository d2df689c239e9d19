//! Write pulsewatch change-feed plugins in Rust.
//!
//! A plugin is a WASI 0.2 command (an ordinary `fn main` built for `wasm32-wasip2`) that reads
//! the host's change feed through the `pulse:watch/feed` import. This crate gives it:
//!
//! - [`ChangePoller`]: holds the plugin's cursor and polls the events after it, as a packed
//!   [`Batch`] read in place through [`EventRef`] views, or as owned [`Event`]s;
//! - [`Checkpoint`]: commits the cursor, with the plugin's own state, to `/state` so that a
//!   restarted plugin resumes after the last batch it committed (at-least-once delivery);
//! - [`run`]: the whole loop (resume, poll, process, commit, wait) around a [`Plugin`];
//! - [`Emitter`] and [`run_transform`]: a [`Transform`] derives events into output logs, and the
//!   host commits them with its cursor and state in one step (exactly once);
//! - [`http`]: outbound requests to the destinations the host grants.
//!
//! ```no_run
//! use pulsewatch_guest::{Batch, Plugin};
//!
//! #[derive(Default)]
//! struct Count(u64);
//!
//! impl Plugin for Count {
//!     fn restore(state: Option<&[u8]>) -> Result<Self, pulsewatch_guest::Error> {
//!         let n = state.map(|s| String::from_utf8_lossy(s).parse()).transpose()?;
//!         Ok(Count(n.unwrap_or(0)))
//!     }
//!     fn process(&mut self, events: &Batch) -> Result<(), pulsewatch_guest::Error> {
//!         self.0 += events.len() as u64;
//!         Ok(())
//!     }
//!     fn snapshot(&self) -> Vec<u8> {
//!         self.0.to_string().into_bytes()
//!     }
//! }
//!
//! fn main() -> Result<(), pulsewatch_guest::Error> {
//!     pulsewatch_guest::run::<Count>()
//! }
//! ```

// The README's example compiles, as the crate docs' does.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod batch;
mod checkpoint;
mod emit;
mod error;
pub mod http;
mod poller;
mod runner;

/// Bindings generated from `wit/feed.wit`, the contract with the host (documented there).
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "pulse:watch/plugin",
    });
}

pub use batch::{Batch, BatchIter, EventRef};
pub use bindings::pulse::watch::feed::{ChangeKind, Event, Uuid};
pub use checkpoint::{Checkpoint, STATE_DIR, Saved};
pub use emit::{CommitError, Committed, Emitter, Output};
pub use error::{Context, Error, PollError, WaitError};
pub use poller::{ChangePoller, DEFAULT_BATCH_LIMIT};
pub use runner::{Plugin, Transform, run, run_transform, run_transform_with, run_with};

impl ChangeKind {
    /// The kind's name as in the WIT contract: `created`, `updated`, `archived` or `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Archived => "archived",
            ChangeKind::Deleted => "deleted",
        }
    }
}

impl Uuid {
    /// The identifier as a `u128`.
    pub fn as_u128(self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }
}

impl std::fmt::Display for Uuid {
    /// The canonical hyphenated form, e.g. `67e55044-10b1-426f-9247-bb680e5fe0c8`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.as_u128();
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            v >> 96,
            (v >> 80) & 0xffff,
            (v >> 64) & 0xffff,
            (v >> 48) & 0xffff,
            v & 0xffff_ffff_ffff
        )
    }
}
