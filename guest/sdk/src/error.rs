//! The SDK's errors, each a sentence a plugin author can act on: the feed's (why a poll or a
//! wait returned nothing) and [`Error`], what a plugin returns, which prints as a sentence
//! even from `fn main() -> Result<(), Error>` (whose error Rust prints with `Debug`).

use crate::bindings::pulse::watch::feed as wit;
use std::fmt;

/// Why a poll returned no batch: the contract's `poll-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollError {
    /// The log could not be read now; nothing was consumed. Poll again later.
    Unavailable(String),
    /// The event with this seq is stored but cannot be decoded (damaged, or written by a newer
    /// version); nothing after it is delivered.
    Undecodable(u64),
    /// The events after the cursor are gone (deleted by retention, or lost to damage and left
    /// out by a salvage); the next event stored has this seq. Nothing was skipped.
    Truncated(u64),
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PollError::Unavailable(why) => write!(
                f,
                "the feed is unavailable: {why} (nothing was consumed; poll again later)"
            ),
            PollError::Undecodable(seq) => write!(
                f,
                "event {seq} cannot be decoded: its stored batch is damaged or was written by a \
                 newer pulsewatch, and nothing after it is delivered; `pulsewatch repair` on the \
                 log names the damaged events"
            ),
            PollError::Truncated(oldest) => write!(
                f,
                "the events after the cursor are no longer in the log (deleted by retention, or \
                 lost to damage and left out by a salvage): the next stored is seq {oldest}"
            ),
        }
    }
}

impl std::error::Error for PollError {}

impl From<wit::PollError> for PollError {
    fn from(error: wit::PollError) -> Self {
        match error {
            wit::PollError::Unavailable(why) => PollError::Unavailable(why),
            wit::PollError::Undecodable(seq) => PollError::Undecodable(seq),
            wit::PollError::Truncated(oldest) => PollError::Truncated(oldest),
        }
    }
}

/// Why a wait ended without news: the contract's `wait-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// The host will deliver no more events in this run: commit and return.
    Closed,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Closed => {
                f.write_str("the host closed the feed: no more events in this run")
            }
        }
    }
}

impl std::error::Error for WaitError {}

impl From<wit::WaitError> for WaitError {
    fn from(error: wit::WaitError) -> Self {
        match error {
            wit::WaitError::Closed => WaitError::Closed,
        }
    }
}

/// What a plugin returns when it fails: any error (`?` converts one, and a `String` or `&str`
/// with `.into()`), printed as one line with its causes, each said once. Its `Debug` is that
/// line too, so that `fn main() -> Result<(), Error>` ends with `Error: <the sentence>`.
pub struct Error(Box<dyn std::error::Error + Send + Sync>);

impl Error {
    /// An error that says `message`.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error(message.to_string().into())
    }

    /// This error, after `context` (what was being done): `context: error`.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error::msg(format!("{context}: {self}"))
    }

    /// The error inside, if it is a `T`.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for Error {
    fn from(error: E) -> Self {
        Error(error.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(next) = cause {
            let said = next.to_string();
            if !text.contains(&said) {
                text = format!("{text}: {said}");
            }
            cause = next.source();
        }
        f.write_str(&text)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What was being done, added to a failure: `file.write_all(b).context("cannot write out.jsonl")?`
/// fails with `cannot write out.jsonl: Disk quota exceeded`.
pub trait Context<T> {
    /// The error, if any, after `what` was being done.
    fn context(self, what: impl fmt::Display) -> Result<T, Error>;
}

impl<T, E> Context<T> for Result<T, E>
where
    Error: From<E>,
{
    fn context(self, what: impl fmt::Display) -> Result<T, Error> {
        self.map_err(|e| Error::from(e).context(what))
    }
}
