//! The plugin loop: resume, poll, process, commit, wait.

use crate::{
    Batch, ChangePoller, Checkpoint, CommitError, DEFAULT_BATCH_LIMIT, Emitter, Error, PollError,
    WaitError,
};
use pulsewatch_log::{START_VARIABLE, StartPosition};
use std::time::Duration;

/// How long one wait for new events lasts before the loop asks again. The host ends a wait at
/// once when events arrive or the run stops (`closed`), so a long one costs nothing and wakes
/// nothing while idle.
const WAIT: Duration = Duration::from_secs(3600);

/// How often an `unavailable` feed or commit is tried again, with doubling pauses from 100 ms
/// (3 s in all), before the plugin gives up with the error.
const RETRIES: u32 = 5;

/// The error a plugin stops with by default when the events after its cursor are gone.
fn gone(cursor: u64, oldest: u64, trait_name: &str) -> Error {
    Error::msg(format!(
        "events {}..{} are no longer in the log (deleted by retention, or lost to damage and \
         left out by a salvage) and this plugin had not read them; to go on from seq {oldest} \
         without them, override {trait_name}::truncated",
        cursor + 1,
        oldest - 1
    ))
}

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
        Err(gone(cursor, oldest, "Plugin"))
    }

    /// Called once when the host closes the feed, after the last commit, with the cursor.
    fn finish(&mut self, cursor: u64) -> Result<(), Error> {
        let _ = cursor;
        Ok(())
    }
}

/// A plugin that derives events into output logs, driven by [`run_transform`]: its derived
/// events, cursor and state are committed together by the host after each batch, so that its
/// outputs hold each input event's derived events exactly once, however a run ends. It must
/// derive the same events from the same state and input (no clock, no randomness in what it
/// emits): after a crash it processes again the events after its last commit.
pub trait Transform: Sized {
    /// Rebuilds the transform from the state it last committed, or from scratch (`None`).
    fn restore(state: Option<&[u8]>) -> Result<Self, Error>;

    /// Processes one batch, in seq order, emitting derived events into `out`.
    fn process(&mut self, events: &Batch, out: &mut Emitter) -> Result<(), Error>;

    /// The state to commit together with the cursor and the derived events after each batch.
    fn snapshot(&self) -> Vec<u8>;

    /// As [`Plugin::truncated`].
    fn truncated(&mut self, cursor: u64, oldest: u64) -> Result<(), Error> {
        Err(gone(cursor, oldest, "Transform"))
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
    let plugin = P::restore(saved.as_ref().map(|s| s.state.as_slice())).map_err(|e| {
        e.context(format!(
            "cannot restore the plugin from its checkpoint in {}",
            checkpoint.dir().display()
        ))
    })?;
    drive(
        &mut Stateful { plugin, checkpoint },
        saved.map(|s| s.seq),
        batch_limit,
    )
}

/// Runs `T` over the feed, committing through the host: resumes from its last commit, then
/// for each batch calls [`Transform::process`] and commits the derived events, the new cursor
/// and [`Transform::snapshot`] in one step. Commits that fail as `unavailable` are retried as
/// polls are.
pub fn run_transform<T: Transform>() -> Result<(), Error> {
    run_transform_with::<T>(DEFAULT_BATCH_LIMIT)
}

/// [`run_transform`] with batches of at most `batch_limit` events.
pub fn run_transform_with<T: Transform>(batch_limit: usize) -> Result<(), Error> {
    // Its error is not a commit's: nothing was being committed.
    let saved = retrying(Emitter::committed, unavailable_output).map_err(|e| match e {
        CommitError::Invalid(why) | CommitError::Unavailable(why) => {
            Error::msg(format!("cannot read the transform's last commit: {why}"))
        }
    })?;
    let plugin = T::restore(saved.as_ref().and_then(|s| s.state.as_deref()))
        .map_err(|e| e.context("cannot restore the transform from its last commit"))?;
    drive(
        &mut Deriving {
            plugin,
            out: Emitter::new(),
        },
        saved.map(|s| s.cursor),
        batch_limit,
    )
}

/// What differs between a [`Plugin`] and a [`Transform`] in the loop.
trait Steps {
    fn process(&mut self, events: &Batch) -> Result<(), Error>;
    fn commit(&mut self, cursor: u64) -> Result<(), Error>;
    fn truncated(&mut self, cursor: u64, oldest: u64) -> Result<(), Error>;
    fn finish(&mut self, cursor: u64) -> Result<(), Error>;
}

struct Stateful<'a, P> {
    plugin: P,
    checkpoint: &'a Checkpoint,
}

impl<P: Plugin> Steps for Stateful<'_, P> {
    fn process(&mut self, events: &Batch) -> Result<(), Error> {
        self.plugin.process(events)
    }
    fn commit(&mut self, cursor: u64) -> Result<(), Error> {
        Ok(self.checkpoint.commit(cursor, &self.plugin.snapshot())?)
    }
    fn truncated(&mut self, cursor: u64, oldest: u64) -> Result<(), Error> {
        self.plugin.truncated(cursor, oldest)
    }
    fn finish(&mut self, cursor: u64) -> Result<(), Error> {
        self.plugin.finish(cursor)
    }
}

struct Deriving<T> {
    plugin: T,
    out: Emitter,
}

impl<T: Transform> Steps for Deriving<T> {
    fn process(&mut self, events: &Batch) -> Result<(), Error> {
        self.plugin.process(events, &mut self.out)
    }
    fn commit(&mut self, cursor: u64) -> Result<(), Error> {
        let state = self.plugin.snapshot();
        Ok(retrying(
            || self.out.commit(cursor, &state),
            unavailable_output,
        )?)
    }
    fn truncated(&mut self, cursor: u64, oldest: u64) -> Result<(), Error> {
        self.plugin.truncated(cursor, oldest)
    }
    fn finish(&mut self, cursor: u64) -> Result<(), Error> {
        self.plugin.finish(cursor)
    }
}

/// The loop: resume, poll, process, commit, wait.
fn drive(steps: &mut impl Steps, saved: Option<u64>, batch_limit: usize) -> Result<(), Error> {
    let start = match saved {
        Some(seq) => seq,
        None => start_position()?,
    };
    let mut poller = ChangePoller::from_sequence(start).with_batch_limit(batch_limit);
    loop {
        let polled = retrying(
            || poller.poll_batch(),
            |e| match e {
                PollError::Unavailable(why) => Some(format!("feed unavailable ({why})")),
                _ => None,
            },
        );
        let events = match polled {
            Err(PollError::Truncated(oldest)) => {
                steps.truncated(poller.last_sequence(), oldest)?;
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
        steps.process(&events)?;
        steps.commit(poller.last_sequence())?;
    }
    steps.finish(poller.last_sequence())
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

/// Whether an output error is worth another try, and why.
fn unavailable_output(error: &CommitError) -> Option<String> {
    match error {
        CommitError::Unavailable(why) => Some(format!("output unavailable ({why})")),
        CommitError::Invalid(_) => None,
    }
}

/// `attempt`, tried again while `transient` says its error is (with why), with doubling pauses
/// from 100 ms ([`RETRIES`] times, 3 s in all), before the error is returned.
fn retrying<T, E>(
    mut attempt: impl FnMut() -> Result<T, E>,
    transient: impl Fn(&E) -> Option<String>,
) -> Result<T, E> {
    let mut pause = Duration::from_millis(100);
    for _ in 0..RETRIES {
        match attempt() {
            Err(e) => match transient(&e) {
                Some(why) => {
                    eprintln!("pulsewatch-guest: {why}; retrying in {pause:?}");
                    std::thread::sleep(pause);
                    pause *= 2;
                }
                None => return Err(e),
            },
            ok => return ok,
        }
    }
    attempt()
}
