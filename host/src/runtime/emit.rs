//! The host side of `pulse:watch/output`: a plugin's derived events, committed exactly once with
//! its cursor into the output logs its spec grants ([`pulsewatch_log::Log::commit_derived`]).
//!
//! The host checks every rule of a commit before it writes anything, so that an invalid commit
//! writes nothing anywhere; then it commits each output log in turn, one transaction each. A
//! failure part-way leaves some outputs a commit ahead of the others, which is what the logs'
//! per-plugin checkpoints are for: the plugin resumes from the lowest, and what it derives
//! again is dropped where it is already written.

use super::Failure;
use super::feed::Feed;
use super::store::Sandbox;
use pulsewatch_log::{Change, Derived, Log, OpenError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use wasmtime::component::Linker;

use super::feed::output as wit;

pulsewatch_log::wire_conversions!();

/// The interface the functions are linked under, as in wit/feed.wit.
pub(crate) const OUTPUT_INTERFACE: &str = "pulse:watch/output@0.3.0";

/// The largest state a commit may carry: it is written to every output log at each commit.
const MAX_STATE_BYTES: usize = 16 << 20;

/// A plugin's output logs for one run, and where its cursor stands in them.
pub(crate) struct Outputs {
    plugin: String,
    /// The input log, as origins name it.
    input: String,
    logs: Vec<(String, Arc<Log>)>,
    /// The cursor the plugin resumed from or last committed: no commit may go below it, and no
    /// derived event may derive from it or before.
    base: Mutex<u64>,
}

/// The output logs open in this process, by path: redb refuses to open one file twice in a
/// process, and plugins running side by side may share an output.
fn open_shared(path: &Path) -> Result<Arc<Log>, OpenError> {
    static OPEN: Mutex<Option<HashMap<PathBuf, Weak<Log>>>> = Mutex::new(None);
    let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    let open = open.get_or_insert_with(HashMap::new);
    let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if let Some(log) = open.get(&key).and_then(Weak::upgrade) {
        return Ok(log);
    }
    let log = Arc::new(Log::create(path)?);
    open.retain(|_, log| log.strong_count() > 0);
    open.insert(key, Arc::downgrade(&log));
    Ok(log)
}

/// The name a plugin knows an output log by: its file name without `.redb`.
pub(crate) fn output_name(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

impl Outputs {
    /// Opens (creating them if needed) the output logs at `paths` for `plugin`, which reads
    /// `input`.
    pub(crate) fn open(plugin: &str, input: &Path, paths: &[PathBuf]) -> Result<Self, Failure> {
        let logs = paths
            .iter()
            .map(|path| {
                open_shared(path)
                    .map(|log| (output_name(path), log))
                    .map_err(|e| Failure::Log(format!("cannot open its output log: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Outputs {
            plugin: plugin.to_owned(),
            input: input.display().to_string(),
            logs,
            base: Mutex::new(0),
        })
    }

    fn names(&self) -> Vec<String> {
        self.logs.iter().map(|(name, _)| name.clone()).collect()
    }

    /// The lowest checkpoint among the outputs; none if any output has none (it has not seen
    /// the plugin's first commit, so everything must be derived again for it).
    fn checkpoint(&self) -> Result<Option<wit::Checkpoint>, wit::CommitError> {
        let mut lowest: Option<pulsewatch_log::Checkpoint> = None;
        for (name, log) in &self.logs {
            let found = log
                .checkpoint(&self.plugin)
                .map_err(|e| wit::CommitError::Unavailable(format!("output {name}: {e}")))?;
            match found {
                None => return Ok(None),
                Some(c) if lowest.as_ref().is_none_or(|l| c.cursor < l.cursor) => {
                    lowest = Some(c);
                }
                Some(_) => {}
            }
        }
        let lowest = lowest.map(|c| wit::Checkpoint {
            cursor: c.cursor,
            state: c.state,
        });
        *self.base.lock().unwrap_or_else(PoisonError::into_inner) =
            lowest.as_ref().map_or(0, |c| c.cursor);
        Ok(lowest)
    }

    /// Splits `events` by output after checking every rule of a commit that does not need a
    /// log; the logs check the order of each output's events.
    fn sort(
        &self,
        cursor: u64,
        delivered: u64,
        state: &[u8],
        events: Vec<wit::Derived>,
    ) -> Result<Vec<Vec<Derived>>, String> {
        let base = *self.base.lock().unwrap_or_else(PoisonError::into_inner);
        if cursor < base {
            return Err(format!(
                "the cursor {cursor} is before the cursor already committed, {base}"
            ));
        }
        if cursor > base.max(delivered) {
            return Err(format!(
                "the cursor {cursor} is after the last event the plugin was given, {}",
                base.max(delivered)
            ));
        }
        if state.len() > MAX_STATE_BYTES {
            return Err(format!(
                "the state is {} bytes, more than the {} MiB a commit may carry",
                state.len(),
                MAX_STATE_BYTES >> 20
            ));
        }
        let mut split: Vec<Vec<Derived>> = self.logs.iter().map(|_| Vec::new()).collect();
        for (index, event) in events.into_iter().enumerate() {
            let Some(output) = split.get_mut(event.output as usize) else {
                return Err(format!(
                    "derived event {index} names output {}, and {} granted: {:?}",
                    event.output,
                    match self.logs.len() {
                        1 => "one is".to_owned(),
                        n => format!("{n} are"),
                    },
                    self.names()
                ));
            };
            if event.from <= base {
                return Err(format!(
                    "derived event {index} derives from seq {}, at or before the cursor already \
                     committed, {base}",
                    event.from
                ));
            }
            let change = Change::new(
                from_change_kind(event.kind),
                from_uuid(event.entity),
                from_uuid(event.collective),
            )
            .with_payload(event.payload);
            output.push(Derived {
                from: event.from,
                change,
            });
        }
        for (events, (name, _)) in split.iter().zip(&self.logs) {
            pulsewatch_log::check_order(events, cursor)
                .map_err(|e| format!("output {name}: {e}"))?;
        }
        Ok(split)
    }

    /// Commits, output by output; on the first failure the outputs already committed keep it.
    fn commit(
        &self,
        cursor: u64,
        delivered: u64,
        state: Vec<u8>,
        events: Vec<wit::Derived>,
    ) -> Result<(), wit::CommitError> {
        let split = self
            .sort(cursor, delivered, &state, events)
            .map_err(wit::CommitError::Invalid)?;
        for ((name, log), derived) in self.logs.iter().zip(split) {
            log.commit_derived(&self.plugin, &self.input, cursor, &state, &derived)
                .map_err(|e| wit::CommitError::Unavailable(format!("output {name}: {e}")))?;
        }
        *self.base.lock().unwrap_or_else(PoisonError::into_inner) = cursor;
        Ok(())
    }
}

/// What the plugin's store holds for this interface: its outputs, if granted any.
fn outputs(feed: &Feed) -> Result<&Arc<Outputs>, wit::CommitError> {
    feed.outputs.as_ref().ok_or_else(|| {
        wit::CommitError::Invalid("this plugin is granted no output logs".to_owned())
    })
}

/// Adds the output functions to `linker`. A commit writes and syncs files: it runs on the
/// blocking pool, so that the executor's other plugins and the stop signal are not held up.
pub(crate) fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    let mut output = linker.instance(OUTPUT_INTERFACE)?;
    output.func_wrap("outputs", |store, (): ()| {
        let names = store
            .data()
            .feed
            .outputs
            .as_ref()
            .map_or_else(Vec::new, |o| o.names());
        Ok((names,))
    })?;
    output.func_wrap_async("committed", |store, (): ()| {
        Box::new(async move {
            let outputs = outputs(&store.data().feed).cloned();
            let result = match outputs {
                Ok(outputs) => tokio::task::spawn_blocking(move || outputs.checkpoint())
                    .await
                    .unwrap_or_else(|_| Err(panicked())),
                Err(e) => Err(e),
            };
            Ok((result,))
        })
    })?;
    output.func_wrap_async(
        "commit",
        |store, (cursor, state, events): (u64, Vec<u8>, Vec<wit::Derived>)| {
            Box::new(async move {
                let feed = &store.data().feed;
                let delivered = feed.delivered();
                let outputs = outputs(feed).cloned();
                let result = match outputs {
                    Ok(outputs) => tokio::task::spawn_blocking(move || {
                        outputs.commit(cursor, delivered, state, events)
                    })
                    .await
                    .unwrap_or_else(|_| Err(panicked())),
                    Err(e) => Err(e),
                };
                Ok((result,))
            })
        },
    )?;
    Ok(())
}

fn panicked() -> wit::CommitError {
    wit::CommitError::Unavailable("the host panicked while committing".to_owned())
}
