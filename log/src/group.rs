//! Group commit: single appends made at the same time by threads of one process share one
//! durable transaction. The first thread to find no commit under way becomes the leader: it
//! takes every change queued so far, commits them together, and publishes the outcome; the
//! others (followers) wait for it, and each returns only once its change is durable. While a
//! leader commits, the next group queues up behind it, so the group grows with the load and a
//! lone appender pays no more than its own transaction.
//!
//! This is the shape of a database WAL's group commit (PostgreSQL's, InnoDB's): the fsync is
//! the cost, and one fsync makes a whole group durable.

use crate::event::Change;
use crate::log::WriteError;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest a leader waits for the appenders of its last group to queue again. Threads that
/// append in a loop come back microseconds after their group commits; without the wait, the
/// first one back commits alone and the groups alternate between one and the rest.
const GATHER: Duration = Duration::from_micros(100);

/// The queue of one writer `Log`'s single appends (within its process).
#[derive(Default)]
pub(crate) struct Group {
    state: Mutex<State>,
    committed: Condvar,
    /// Signalled when a change is queued, for a leader gathering its group.
    queued: Condvar,
}

#[derive(Default)]
struct State {
    /// Changes waiting for the next commit, in arrival order: their seqs follow that order.
    pending: Vec<Change>,
    /// The number the group now in `pending` will be committed as.
    next: u64,
    /// Whether a leader is committing a group now.
    committing: bool,
    /// The size of the last group committed: how many appenders a leader waits for.
    last_group: usize,
    /// Committed groups whose members have not all collected their outcome yet, by number.
    outcomes: HashMap<u64, Outcome>,
}

struct Outcome {
    /// The seq of the group's first change, or why the group failed (nothing of it stored).
    first: Result<u64, Arc<WriteError>>,
    /// Members that have yet to collect it.
    uncollected: usize,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `change` in a group with whatever other threads are appending, and returns its
    /// seq once the group's transaction is durable. `commit` appends a group in one transaction
    /// and returns the seq of its last change; one leader at a time calls it.
    pub(crate) fn append(
        &self,
        change: &Change,
        commit: impl Fn(&[Change]) -> Result<u64, WriteError>,
    ) -> Result<u64, WriteError> {
        let mut state = self.lock();
        let group = state.next;
        let index = state.pending.len() as u64;
        state.pending.push(change.clone());
        self.queued.notify_one();
        loop {
            if let Some(outcome) = state.outcomes.get_mut(&group) {
                outcome.uncollected -= 1;
                let result = match &outcome.first {
                    Ok(first) => Ok(first + index),
                    Err(e) => Err(Arc::clone(e)),
                };
                if outcome.uncollected == 0 {
                    state.outcomes.remove(&group);
                }
                // The last holder of a failure gets the error itself, not a shared one: a lone
                // append fails exactly as an ungrouped one would.
                return result.map_err(|e| Arc::try_unwrap(e).unwrap_or_else(WriteError::Group));
            }
            if state.committing {
                state = self
                    .committed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Lead: commit everything queued, this thread's change included, as one group,
            // after waiting briefly for as many appenders as last time.
            state.committing = true;
            let deadline = Instant::now() + GATHER;
            while state.pending.len() < state.last_group {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                state = self
                    .queued
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            let changes = std::mem::take(&mut state.pending);
            let number = state.next;
            state.next += 1;
            drop(state);
            let result = commit(&changes);
            state = self.lock();
            state.committing = false;
            let members = changes.len();
            state.last_group = members;
            state.outcomes.insert(
                number,
                Outcome {
                    first: result
                        .map(|last| last - (members as u64 - 1))
                        .map_err(Arc::new),
                    uncollected: members,
                },
            );
            self.committed.notify_all();
        }
    }
}
