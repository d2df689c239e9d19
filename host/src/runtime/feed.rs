//! The host side of `pulse:watch/feed`: answers a plugin's calls from the event log, and gives
//! the plugin a fresh CPU budget on each of them.

use super::{Sandbox, StopSignal};
use pulsewatch_log::{Change, ChangeKind, Event, Log, PollLimits, ReadError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::Linker;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "pulse:watch/plugin",
});

use pulse::watch::feed as wit;

/// The interface the functions are linked under, as in wit/feed.wit. Admission accepts imports
/// of its package at any version semver-compatible with this one.
pub(crate) const FEED_INTERFACE: &str = "pulse:watch/feed@0.1.0";

/// The longest a `wait` sleeps before it looks at the stop signal again.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// What one plugin's feed calls read from.
pub(crate) struct FeedAccess {
    pub(crate) log: Arc<Log>,
    pub(crate) poll_limits: PollLimits,
    pub(crate) fuel_per_call: u64,
    /// Keep waiting for new events once caught up, instead of closing the feed.
    pub(crate) follow: bool,
    pub(crate) stop: StopSignal,
    /// The `since` of the latest call, published for [`super::Progress`].
    pub(crate) cursor: Arc<AtomicU64>,
}

impl FeedAccess {
    fn poll(&self, since: u64, limit: u32) -> Result<(Vec<wit::Event>, u64), wit::PollError> {
        self.cursor.store(since, Ordering::Relaxed);
        if self.stop.is_stopped() {
            return Ok((Vec::new(), since));
        }
        let batch = self
            .log
            .poll_within(since, limit, &self.poll_limits)
            .map_err(poll_error)?;
        Ok((
            batch.events.into_iter().map(to_wit).collect(),
            batch.last_seq,
        ))
    }

    fn wait(&self, since: u64, timeout: Duration) -> Result<u64, wit::WaitError> {
        self.cursor.store(since, Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        // What to answer on a timeout: the head last read, or `since` if none could be read.
        let mut last_head = since;
        loop {
            if self.stop.is_stopped() {
                return Err(wit::WaitError::Closed);
            }
            let slice = deadline
                .saturating_duration_since(Instant::now())
                .min(STOP_CHECK);
            let head = if self.follow {
                self.log.wait(since, slice)
            } else {
                self.log.head()
            };
            match head {
                Ok(head) if head > since => return Ok(head),
                // Caught up: a run without --follow ends here.
                Ok(_) if !self.follow => return Err(wit::WaitError::Closed),
                Ok(head) => last_head = head,
                // Unreadable: not "closed", which would end the plugin as if it were done; try
                // again after the slice, and at the deadline let its next poll meet the error.
                Err(_) => std::thread::sleep(slice),
            }
            if Instant::now() >= deadline {
                return Ok(last_head);
            }
        }
    }
}

fn poll_error(err: ReadError) -> wit::PollError {
    match err {
        ReadError::Undecodable { seq, .. } => wit::PollError::Undecodable(seq),
        other => wit::PollError::Unavailable(other.to_string()),
    }
}

fn uuid(id: u128) -> wit::Uuid {
    wit::Uuid {
        hi: (id >> 64) as u64,
        lo: id as u64,
    }
}

/// Moves a log event into its WIT form; the payload is moved, not copied.
fn to_wit(event: Event) -> wit::Event {
    let Change {
        kind,
        entity,
        collective,
        timestamp_ms,
        payload,
    } = event.change;
    wit::Event {
        seq: event.seq,
        kind: match kind {
            ChangeKind::Created => wit::ChangeKind::Created,
            ChangeKind::Updated => wit::ChangeKind::Updated,
            ChangeKind::Archived => wit::ChangeKind::Archived,
            ChangeKind::Deleted => wit::ChangeKind::Deleted,
        },
        entity: uuid(entity),
        collective: uuid(collective),
        timestamp_ms,
        payload,
    }
}

/// Adds the feed functions to `linker`. Each call refills the caller's fuel: the CPU budget
/// limits computation between feed calls, not the life of the plugin.
pub(crate) fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    let mut feed = linker.instance(FEED_INTERFACE)?;
    feed.func_wrap("poll", |mut store, (since, limit): (u64, u32)| {
        let result = store.data().feed.poll(since, limit);
        let fuel = store.data().feed.fuel_per_call;
        store.set_fuel(fuel)?;
        Ok((result,))
    })?;
    feed.func_wrap("head", |mut store, (): ()| {
        let result = store.data().feed.log.head().map_err(poll_error);
        let fuel = store.data().feed.fuel_per_call;
        store.set_fuel(fuel)?;
        Ok((result,))
    })?;
    feed.func_wrap("wait", |mut store, (since, timeout_ms): (u64, u32)| {
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let result = store.data().feed.wait(since, timeout);
        let fuel = store.data().feed.fuel_per_call;
        store.set_fuel(fuel)?;
        Ok((result,))
    })?;
    Ok(())
}
