//! Derived events, committed exactly once with the cursor through `pulse:watch/output`.

use crate::bindings::pulse::watch::output as wit;
use crate::{ChangeKind, Uuid};
use std::fmt;

/// Where a transform resumes: what it last committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The seq of the last input event it had processed.
    pub cursor: u64,
    /// Its state as of `cursor`; `None` for its initial state.
    pub state: Option<Vec<u8>>,
}

/// An output log granted to the plugin, found by name with [`Emitter::output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output(u32);

/// Why a commit did not happen: the contract's `commit-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// The commit breaks a rule of the contract (a bug in the plugin); nothing was written.
    Invalid(String),
    /// An output log could not be written now; committing the same again later completes it
    /// without writing anything twice.
    Unavailable(String),
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommitError::Invalid(why) => write!(f, "the host refused the commit: {why}"),
            CommitError::Unavailable(why) => write!(
                f,
                "the commit did not complete: {why} (committing the same again completes it)"
            ),
        }
    }
}

impl std::error::Error for CommitError {}

impl From<wit::CommitError> for CommitError {
    fn from(error: wit::CommitError) -> Self {
        match error {
            wit::CommitError::Invalid(why) => CommitError::Invalid(why),
            wit::CommitError::Unavailable(why) => CommitError::Unavailable(why),
        }
    }
}

/// Collects the events a plugin derives, and commits them with its cursor and state in one
/// step: however the plugin's run ends, its outputs hold each input event's derived events
/// exactly once (see `pulse:watch/output` in wit/feed.wit).
#[derive(Debug)]
pub struct Emitter {
    names: Vec<String>,
    events: Vec<wit::Derived>,
}

impl Default for Emitter {
    /// [`Emitter::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl Emitter {
    /// An emitter for the output logs the host grants this plugin.
    pub fn new() -> Self {
        Emitter {
            names: wit::outputs(),
            events: Vec::new(),
        }
    }

    /// The names of the granted outputs (each log's file name without `.redb`).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The granted output called `name`; an error names the ones granted.
    pub fn output(&self, name: &str) -> Result<Output, crate::Error> {
        match self.names.iter().position(|n| n == name) {
            Some(index) => Ok(Output(index as u32)),
            None => Err(crate::Error::msg(format!(
                "no output log called {name:?} is granted to this plugin (granted: {}); grant \
                 it in the plugin's manifest entry, `outputs = [\"{name}.redb\"]`",
                if self.names.is_empty() {
                    "none".to_owned()
                } else {
                    self.names.join(", ")
                }
            ))),
        }
    }

    /// Derives an event from the input event `from` into `output`, to be written at the next
    /// commit. Emit in input order: `from` never decreases.
    pub fn emit(
        &mut self,
        output: Output,
        from: u64,
        kind: ChangeKind,
        entity: Uuid,
        collective: Uuid,
        payload: impl Into<Vec<u8>>,
    ) {
        self.events.push(wit::Derived {
            output: output.0,
            from,
            kind,
            entity,
            collective,
            payload: payload.into(),
        });
    }

    /// How many events wait for the next commit.
    pub fn pending(&self) -> usize {
        self.events.len()
    }

    /// Writes the pending events and moves the cursor to `cursor` with `state`, atomically and
    /// durably. On an error the pending events are kept, so that committing again retries.
    pub fn commit(&mut self, cursor: u64, state: &[u8]) -> Result<(), CommitError> {
        wit::commit(cursor, state, &self.events)?;
        self.events.clear();
        Ok(())
    }

    /// What the plugin last committed: its cursor and state (the lowest among its outputs);
    /// none before its first commit.
    pub fn committed() -> Result<Option<Committed>, CommitError> {
        Ok(wit::committed()?.map(|c| Committed {
            cursor: c.cursor,
            state: c.state,
        }))
    }
}
