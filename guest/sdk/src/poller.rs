//! The plugin's cursor over the feed.

use crate::bindings::pulse::watch::feed;
use crate::{Batch, Event, PollError, WaitError};
use std::time::Duration;

/// Maximum number of events [`ChangePoller::poll`] asks for unless told otherwise.
pub const DEFAULT_BATCH_LIMIT: usize = 1000;

/// Polls the feed from a cursor of its own: the seq of the last event it has returned.
///
/// Each plugin holds its own poller, so plugins read at their own pace without affecting each
/// other. Save [`ChangePoller::last_sequence`] (see [`crate::Checkpoint`]) to resume after a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangePoller {
    last_seq: u64,
    batch_limit: u32,
}

impl ChangePoller {
    /// A poller at the start of the feed: the first poll returns events from seq 1.
    pub fn new() -> Self {
        Self::from_sequence(0)
    }

    /// A poller that resumes after `seq`: events with a seq at or below it are not returned.
    pub fn from_sequence(seq: u64) -> Self {
        ChangePoller {
            last_seq: seq,
            batch_limit: DEFAULT_BATCH_LIMIT as u32,
        }
    }

    /// A poller at the head: it returns only events appended from now on.
    pub fn from_head() -> Result<Self, PollError> {
        Ok(Self::from_sequence(feed::head().map_err(PollError::from)?))
    }

    /// A poller at a point in time (ms since the Unix epoch): it returns the first event
    /// stamped at or after it, and everything after that.
    pub fn from_time(timestamp_ms: u64) -> Result<Self, PollError> {
        Ok(Self::from_sequence(
            feed::seq_at(timestamp_ms).map_err(PollError::from)?,
        ))
    }

    /// Sets the most events one poll asks for. The host may return fewer: it clamps the limit
    /// to its own maximum and to a byte budget. 0 is raised to 1: a poller that asks for nothing
    /// could never catch up.
    pub fn with_batch_limit(mut self, limit: usize) -> Self {
        self.batch_limit = u32::try_from(limit).unwrap_or(u32::MAX).max(1);
        self
    }

    /// The seq of the last event returned (0 if none yet): what to save to resume later.
    pub fn last_sequence(&self) -> u64 {
        self.last_seq
    }

    /// The events after the cursor, in seq order, as owned values, and advances the cursor
    /// past them. An empty batch means the plugin has caught up with the head.
    pub fn poll(&mut self) -> Result<Vec<Event>, PollError> {
        Ok(self.poll_batch()?.to_events())
    }

    /// The events after the cursor as one packed [`Batch`], read in place without an
    /// allocation per event, and advances the cursor past them. An empty batch means the
    /// plugin has caught up with the head.
    pub fn poll_batch(&mut self) -> Result<Batch, PollError> {
        let (bytes, seq) =
            feed::poll_packed(self.last_seq, self.batch_limit).map_err(PollError::from)?;
        // Events are gap-free: the cursor's move is the count.
        let len = usize::try_from(seq.saturating_sub(self.last_seq)).unwrap_or(usize::MAX);
        self.last_seq = seq;
        Ok(Batch::from_host(bytes, len))
    }

    /// Blocks until events after the cursor exist or `timeout` passes; returns whether there
    /// are new events. [`WaitError::Closed`] means the host will deliver no more in this run.
    pub fn wait(&self, timeout: Duration) -> Result<bool, WaitError> {
        let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        Ok(feed::wait(self.last_seq, millis).map_err(WaitError::from)? > self.last_seq)
    }
}

impl Default for ChangePoller {
    fn default() -> Self {
        Self::new()
    }
}
