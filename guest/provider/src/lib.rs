//! A provider of `pulse:watch/feed`: the host's feed, served from inside the sandbox.
//!
//! It opens a snapshot of a log (made by `pulsewatch snapshot`) at the path `pulsewatch bundle`
//! stored in it, `/data/events.redb` by default, and answers the feed's calls with the same
//! code the host uses (`pulsewatch-log`: the codec, the clamps, the byte budget, the returned
//! cursor). WASI has no file locks, so only a file no writer has open can be read; anything
//! else is an `unavailable` error that says why.

use pulsewatch_log::provider::{DB_PATH_SLOT, DEFAULT_DB_PATH, db_path_in, db_path_slot};
use pulsewatch_log::{Log, OpenError, PollLimits};
use std::sync::OnceLock;

/// The generated bindings, and the exports' glue, which is unsafe code wit-bindgen writes.
#[allow(unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "pulse:watch/provider",
    });

    use super::Provider;
    export!(Provider with_types_in self);
}

use bindings::exports::pulse::watch::feed::{self as wit, Guest};

/// The snapshot's path; `pulsewatch bundle --db-path` rewrites these bytes in the compiled
/// component.
static DB_PATH: [u8; DB_PATH_SLOT] = match db_path_slot(DEFAULT_DB_PATH.as_bytes()) {
    Some(slot) => slot,
    None => panic!("the default path fits its slot"),
};

#[allow(unsafe_code)]
fn db_path() -> String {
    // A volatile read: the bytes may be changed after compilation, so the compiler must not
    // fold the default into the code.
    // SAFETY: DB_PATH is a valid, aligned, initialised static.
    let slot = unsafe { std::ptr::read_volatile(&DB_PATH) };
    db_path_in(&slot)
}

/// The snapshot, opened on first use; an error is kept and reported on every call.
fn log() -> Result<&'static Log, wit::PollError> {
    static LOG: OnceLock<Result<Log, String>> = OnceLock::new();
    LOG.get_or_init(|| {
        let path = db_path();
        Log::open_read_only(&path).map_err(|error| match error {
            OpenError::NotFound { .. } => format!(
                "{path}: no such file; run the plugin with the snapshot's directory preopened, e.g. `wasmtime run --dir SNAPSHOT_DIR::/data ...`"
            ),
            OpenError::NeedsRepair { .. } | OpenError::Locked { .. } => format!(
                "{path}: not a cleanly closed log (a writer has it open, or stopped abruptly); make a snapshot with `pulsewatch snapshot`"
            ),
            other => other.to_string(),
        })
    })
    .as_ref()
    .map_err(|why| wit::PollError::Unavailable(why.clone()))
}

pulsewatch_log::feed_conversions!();

struct Provider;

impl Guest for Provider {
    fn poll(since: u64, limit: u32) -> Result<(Vec<wit::Event>, u64), wit::PollError> {
        let batch = log()?
            .poll_within(since, limit, &PollLimits::default())
            .map_err(poll_error)?;
        Ok((
            batch.events.into_iter().map(to_wit).collect(),
            batch.last_seq,
        ))
    }

    fn poll_packed(since: u64, limit: u32) -> Result<(Vec<u8>, u64), wit::PollError> {
        let mut bytes = Vec::new();
        let packed = log()?
            .poll_packed(since, limit, &PollLimits::default(), &mut bytes)
            .map_err(poll_error)?;
        Ok((bytes, packed.last_seq))
    }

    fn head() -> Result<u64, wit::PollError> {
        log()?.head().map_err(poll_error)
    }

    fn seq_at(timestamp_ms: u64) -> Result<u64, wit::PollError> {
        log()?.seq_at(timestamp_ms).map_err(poll_error)
    }

    /// A snapshot never grows: new events are there at once or never.
    fn wait(since: u64, _timeout_ms: u32) -> Result<u64, wit::WaitError> {
        match log().and_then(|log| log.head().map_err(poll_error)) {
            Ok(head) if head > since => Ok(head),
            Ok(_) => Err(wit::WaitError::Closed),
            // Not "closed", which would end the plugin as if it were done: its next poll meets
            // the error.
            Err(_) => Ok(since),
        }
    }
}
