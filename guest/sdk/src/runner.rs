//! The plugin loop: resume, poll, process, commit, wait.

use crate::{Batch, ChangePoller, Checkpoint, DEFAULT_BATCH_LIMIT, Error, PollError, WaitError};
use pulsewatch_log::{START_VARIABLE, StartPosition};
use std::time::Duration;

/// How long one wait for new events lasts before the loop asks again. Short enough that a
/// host shutdown is noticed promptly, long enough to cost nothing while idle.
const WAIT: Duration = Duration::from_secs(1);

/// How often an `unavailable` feed is asked again, with doubling pauses from 100 ms (3 s in all),
/// before the plugin gives up with the error.
const RETRIES: u32 = 5;

/// A change-feed plugin driven by [`run`].
pub trait Plugin: Sized {
    /// Rebuilds the plugin from the state it last committed, or from scratch (`None`).
    fn restore(state: Option<&[u8]>) -> Result<Self, Error>;

    /// Processes one batch, in seq order: iterate it for [`crate::EventRef`] views, which
    /// borrow from the batch and allocate nothing.
    fn process(&mut self, events: &Batch) -> Result<(), Error>;

    /// The state to commit together with the cursor after each batch.
    fn snapshot(&self) -> Vec<u8>;

    /// Called when the events after the cursor were deleted by retention before the plugin read
    /// them; `oldest` is the oldest event still stored. Return `Ok(())` to go on from there
    /// (the deleted events are lost to this plugin), or an error to stop, which the default
    /// does: a plugin never skips events without saying so.
    fn truncated(&mut self, cursor: u64, oldest: u64) -> Result<(), Error> {
        Err(Error::msg(format!(
            "events {}..{} are no longer in the log (deleted by retention, or lost to damage and \
             left out by a salvage) and this plugin had not read them; to go on from seq {oldest} \
             without them, override Plugin::truncated",
            cursor + 1,
            oldest - 1
        )))
    }

    /// Called once when the host closes the feed, after the last commit, with the cursor.
    fn finish(&mut self, cursor: u64) -> Result<(), Error> {
        let _ = cursor;
        Ok(())
    }
}

/// Runs `P` over the feed with the checkpoint in `/state` and batches of
/// [`DEFAULT_BATCH_LIMIT`] events.
pub fn run<P: Plugin>() -> Result<(), Error> {
    run_with::<P>(&Checkpoint::in_state_dir(), DEFAULT_BATCH_LIMIT)
}

/// Runs `P` over the feed: resumes from `checkpoint`, then for each batch calls
/// [`Plugin::process`] and commits the new cursor with [`Plugin::snapshot`]. When caught up it
/// waits for new events, and returns after [`Plugin::finish`] once the host closes the feed.
///
/// A batch is committed only after it was processed, so after a crash the plugin sees again at
/// most the batch it was processing (at-least-once). An `unavailable` feed is retried a few
/// times with growing pauses before the error ends the plugin.
pub fn run_with<P: Plugin>(checkpoint: &Checkpoint, batch_limit: usize) -> Result<(), Error> {
    let saved = checkpoint.load()?;
    let mut plugin = P::restore(saved.as_ref().map(|s| s.state.as_slice())).map_err(|e| {
        e.context(format!(
            "cannot restore the plugin from its checkpoint in {}",
            checkpoint.dir().display()
        ))
    })?;
    let start = match &saved {
        Some(saved) => saved.seq,
        None => start_position()?,
    };
    let mut poller = ChangePoller::from_sequence(start).with_batch_limit(batch_limit);
    loop {
        let events = match poll_with_retries(&mut poller) {
            Err(PollError::Truncated(oldest)) => {
                plugin.truncated(poller.last_sequence(), oldest)?;
                poller = ChangePoller::from_sequence(oldest - 1).with_batch_limit(batch_limit);
                continue;
            }
            other => other?,
        };
        if events.is_empty() {
            match poller.wait(WAIT) {
                Ok(_) => continue,
                Err(WaitError::Closed) => break,
            }
        }
        plugin.process(&events)?;
        checkpoint.commit(poller.last_sequence(), &plugin.snapshot())?;
    }
    plugin.finish(poller.last_sequence())
}

/// Where a plugin without a checkpoint starts, as the host says in [`START_VARIABLE`]: from the
/// beginning unless told otherwise.
fn start_position() -> Result<u64, Error> {
    let start = match std::env::var(START_VARIABLE) {
        Ok(value) => value
            .parse()
            .map_err(|e| Error::msg(format!("{START_VARIABLE}={value}: {e}")))?,
        Err(_) => StartPosition::Beginning,
    };
    match start {
        StartPosition::Beginning => Ok(0),
        StartPosition::Head => Ok(ChangePoller::from_head()?.last_sequence()),
        StartPosition::After(seq) => {
            // A cursor past the head would skip the events up to it as they arrive.
            let head = ChangePoller::from_head()?.last_sequence();
            if seq > head {
                return Err(Error::msg(format!(
                    "the start position, after seq {seq}, is beyond the head, seq {head}: events \
                     {}..{seq} would never be delivered; start at most at the head",
                    head + 1
                )));
            }
            Ok(seq)
        }
        StartPosition::Time(ms) => Ok(ChangePoller::from_time(ms)?.last_sequence()),
    }
}

fn poll_with_retries(poller: &mut ChangePoller) -> Result<Batch, PollError> {
    let mut pause = Duration::from_millis(100);
    for _ in 0..RETRIES {
        match poller.poll_batch() {
            Err(PollError::Unavailable(why)) => {
                eprintln!("pulsewatch-guest: feed unavailable ({why}); retrying in {pause:?}");
                std::thread::sleep(pause);
                pause *= 2;
            }
            other => return other,
        }
    }
    poller.poll_batch()
}
