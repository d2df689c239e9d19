//! Group commit: single appends made at the same time by threads of one process share one
//! durable transaction. The first thread to find no commit under way becomes the leader: it
//! takes every change queued so far, commits them together, and publishes the outcome; the
//! others (followers) wait for it, and each returns only once its change is durable. While a
//! leader commits, the next group queues up behind it, so the group grows with the load and a
//! lone appender pays no more than its own transaction.
//!
//! This is the shape of a database WAL's group commit (PostgreSQL's, InnoDB's): the fsync is
//! the cost, and one fsync makes a whole group durable.
//!
//! A thread that blocks on each append puts at most one change in a group, so a group is never
//! larger than the number of appending threads, and the rate never more than that many changes
//! per commit. [`Log::submit`] lifts the cap the way a Kafka producer or a JetStream
//! `publish_async` does: it queues a change and returns at once, and the seq comes from
//! [`PendingAppend::wait`], once durable. Leadership is taken when waiting, so no background
//! thread is needed: whoever waits first for a queued change commits everything queued.

use crate::event::Change;
use crate::log::{Log, WriteError};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
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
    /// How many changes the group had.
    members: usize,
    /// Members that have yet to collect it.
    uncollected: usize,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `change` for the next group and says where it stands in it.
    fn submit(&self, change: &Change) -> Ticket {
        let mut state = self.lock();
        let ticket = Ticket {
            group: state.next,
            index: state.pending.len() as u64,
        };
        state.pending.push(change.clone());
        self.queued.notify_one();
        ticket
    }

    /// Returns the seq of the change behind `ticket` once its group is durable, committing the
    /// group first if no one else is. `commit` appends a group in one transaction and returns
    /// the seq of its last change; one leader at a time calls it.
    fn wait(
        &self,
        ticket: Ticket,
        commit: impl Fn(&[Change]) -> Result<u64, WriteError>,
    ) -> Result<u64, WriteError> {
        let Ticket { group, index } = ticket;
        let mut state = self.lock();
        loop {
            if let Some(outcome) = state.outcomes.get_mut(&group) {
                outcome.uncollected -= 1;
                let alone = outcome.members == 1;
                let result = match &outcome.first {
                    Ok(first) => Ok(first + index),
                    Err(e) => Err(Arc::clone(e)),
                };
                if outcome.uncollected == 0 {
                    state.outcomes.remove(&group);
                }
                // A lone append gets the error itself, as an ungrouped one would (its outcome
                // was just removed, so it holds the only reference); a group's members share it.
                return result.map_err(|e| {
                    if alone {
                        Arc::try_unwrap(e).unwrap_or_else(WriteError::Group)
                    } else {
                        WriteError::Group(e)
                    }
                });
            }
            if state.committing {
                state = self
                    .committed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Lead: commit everything queued, this ticket's change included (its group is not
            // committed, nor being committed, so it is the one queued now), as one group,
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
            // A panic in the commit must not leave the group's other members (and this
            // thread's own pending appends, dropped as it unwinds) waiting for ever.
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| commit(&changes)));
            state = self.lock();
            state.committing = false;
            let members = changes.len();
            state.last_group = members;
            let (first, panic) = match result {
                Ok(result) => (result.map(|last| last - (members as u64 - 1)), None),
                Err(panic) => (Err(WriteError::CommitPanicked), Some(panic)),
            };
            // The panicking leader never collects its own share.
            let uncollected = members - usize::from(panic.is_some());
            if uncollected > 0 {
                let first = first.map_err(Arc::new);
                let outcome = Outcome {
                    first,
                    members,
                    uncollected,
                };
                state.outcomes.insert(number, outcome);
            }
            self.committed.notify_all();
            if let Some(panic) = panic {
                drop(state);
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// Where a queued change stands: its group's number and its place in the group.
#[derive(Clone, Copy)]
struct Ticket {
    group: u64,
    index: u64,
}

/// A change queued by [`Log::submit`], not yet known to be durable.
///
/// [`PendingAppend::wait`] returns its seq once it is durable. Dropping it without waiting
/// still waits for the commit (and discards its outcome, a failure included), so that a
/// queued change is never left behind with no one to commit it. As with [`Log::append`], the
/// thread that waits or drops it must not hold a write transaction of the same file: the
/// commit would wait for that transaction.
#[must_use = "a queued change is durable only once `wait` returns its seq"]
pub struct PendingAppend<'a> {
    log: &'a Log,
    ticket: Ticket,
    /// Whether `wait` ran, so that `drop` knows whether the outcome is still due.
    waited: bool,
}

impl<'a> PendingAppend<'a> {
    pub(crate) fn new(log: &'a Log, change: &Change) -> Self {
        let ticket = log.group.submit(change);
        PendingAppend {
            log,
            ticket,
            waited: false,
        }
    }

    /// Blocks until the change is durable and returns its seq, committing its group (and
    /// everything queued with it) if no other thread is. A failure fails the whole group.
    pub fn wait(mut self) -> Result<u64, WriteError> {
        self.waited = true;
        self.outcome()
    }

    fn outcome(&self) -> Result<u64, WriteError> {
        self.log
            .group
            .wait(self.ticket, |changes| self.log.append_batch(changes))
    }
}

impl Drop for PendingAppend<'_> {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.outcome();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ChangeKind;

    #[test]
    fn a_commit_that_panics_fails_the_group_instead_of_hanging_it() {
        let group = Group::default();
        let change = Change::new(ChangeKind::Created, 1, 2);
        let (leader, follower) = (group.submit(&change), group.submit(&change));
        let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            group.wait(leader, |_| panic!("the storage engine broke"))
        }));
        assert!(panicked.is_err(), "the leader's panic goes on");
        let error = group.wait(follower, |_| unreachable!("already committed"));
        assert!(
            matches!(&error, Err(WriteError::Group(e)) if matches!(**e, WriteError::CommitPanicked)),
            "{error:?}"
        );
        // The queue still works, and nothing is left in it.
        let next = group.submit(&change);
        let seq = group.wait(next, |changes| Ok(changes.len() as u64));
        assert!(matches!(seq, Ok(1)), "{seq:?}");
        assert!(group.lock().outcomes.is_empty());
    }
}
