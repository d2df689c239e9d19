//! A provider of `pulse:watch/feed` and `pulse:watch/output`: the host's feed and outputs,
//! served from inside the sandbox.
//!
//! It opens a snapshot of a log (made by `pulsewatch snapshot`) at the path `pulsewatch bundle`
//! stored in it, `/data/events.redb` by default, and answers the feed's calls with the same
//! code the host uses (`pulsewatch-log`: the codec, the clamps, the byte budget, the returned
//! cursor). WASI has no file locks, so only a file no writer has open can be read; anything
//! else is an `unavailable` error that says why.
//!
//! The outputs named in `PULSEWATCH_OUTPUTS` (comma-separated) are logs beside the snapshot,
//! `NAME.redb`, committed with the host's rules ([`pulsewatch_log::Outputs`]); each commit
//! opens and closes them, so that they are whole files whenever the plugin stops.

use pulsewatch_log::provider::{DB_PATH_SLOT, DEFAULT_DB_PATH, db_path_in, db_path_slot};
use pulsewatch_log::{Given, Log, OpenError, OutputError, OutputLog, Outputs, PollLimits};
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
use bindings::exports::pulse::watch::output as out;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The highest seq delivered to the plugin, the `since` of its first poll (`u64::MAX` before
/// it), and the cursor it resumed from or last committed: what the host's feed records.
static DELIVERED: AtomicU64 = AtomicU64::new(0);
static START: AtomicU64 = AtomicU64::new(u64::MAX);
static BASE: AtomicU64 = AtomicU64::new(0);

/// Notes a poll from `since` that delivered up to `last_seq` (nothing if they are equal).
fn polled(since: u64, last_seq: u64) {
    let _ = START.compare_exchange(u64::MAX, since, Ordering::Relaxed, Ordering::Relaxed);
    if last_seq > since {
        DELIVERED.fetch_max(last_seq, Ordering::Relaxed);
    }
}

/// The variable that names the plugin's outputs.
const OUTPUTS_VARIABLE: &str = "PULSEWATCH_OUTPUTS";

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
        polled(since, batch.last_seq);
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
        polled(since, packed.last_seq);
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

/// The output names the environment grants.
fn output_names() -> Vec<String> {
    std::env::var(OUTPUTS_VARIABLE)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The plugin's outputs, opened for one call: named as the plugin's file (argv[0]) is.
fn open_outputs() -> Result<Outputs, out::CommitError> {
    let db = db_path();
    let dir = std::path::Path::new(&db)
        .parent()
        .unwrap_or(std::path::Path::new("/"));
    let plugin = std::env::args()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "plugin".to_owned());
    let logs = output_names()
        .into_iter()
        .map(|name| {
            let path = dir.join(format!("{name}.redb"));
            Log::create(&path)
                .map(|log| (name, Arc::new(log) as Arc<dyn OutputLog>))
                .map_err(|e| out::CommitError::Unavailable(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let outputs = Outputs::new(&plugin, &db, logs);
    outputs.set_base(BASE.load(Ordering::Relaxed));
    Ok(outputs)
}

/// What the plugin was given so far, as the host's feed would say.
fn given() -> Given {
    let start = START.load(Ordering::Relaxed);
    Given {
        start: (start != u64::MAX).then_some(start),
        delivered: DELIVERED.load(Ordering::Relaxed),
    }
}

fn commit_error(error: OutputError) -> out::CommitError {
    match error {
        OutputError::Invalid(why) => out::CommitError::Invalid(why),
        OutputError::Unavailable(why) => out::CommitError::Unavailable(why),
    }
}

mod derived_conversions {
    use super::out as wit;
    pulsewatch_log::wire_conversions!();

    /// A derived event as the log takes it, with its output's index.
    pub(super) fn derived(event: wit::Derived) -> (u32, pulsewatch_log::Derived) {
        let change = pulsewatch_log::Change::new(
            from_change_kind(event.kind),
            from_uuid(event.entity),
            from_uuid(event.collective),
        )
        .with_payload(event.payload);
        (
            event.output,
            pulsewatch_log::Derived {
                from: event.from,
                change,
            },
        )
    }
}

impl out::Guest for Provider {
    fn outputs() -> Vec<String> {
        output_names()
    }

    fn committed() -> Result<Option<out::Checkpoint>, out::CommitError> {
        let outputs = open_outputs()?;
        let found = outputs.committed().map_err(commit_error)?;
        BASE.store(outputs.base(), Ordering::Relaxed);
        Ok(found.map(|c| out::Checkpoint {
            cursor: c.cursor,
            state: c.state,
        }))
    }

    fn commit(
        cursor: u64,
        state: Vec<u8>,
        events: Vec<out::Derived>,
    ) -> Result<(), out::CommitError> {
        if output_names().is_empty() {
            return Err(out::CommitError::Invalid(format!(
                "this plugin is granted no output logs: name them in {OUTPUTS_VARIABLE}, e.g. `wasmtime run --env {OUTPUTS_VARIABLE}=totals ...`"
            )));
        }
        let outputs = open_outputs()?;
        let events = events
            .into_iter()
            .map(derived_conversions::derived)
            .collect();
        outputs
            .commit(cursor, given(), &state, events)
            .map_err(commit_error)?;
        BASE.store(outputs.base(), Ordering::Relaxed);
        Ok(())
    }
}
