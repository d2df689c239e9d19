//! The host side of `pulse:watch/output`: a plugin's derived events, committed exactly once with
//! its cursor into the output logs its spec grants. The rules live in
//! [`pulsewatch_log::Outputs`], shared with the provider component; this is the binding.

use super::Failure;
use super::feed::Feed;
use super::store::Sandbox;
use crate::jetstream::{StreamAddr, StreamOutput};
use pulsewatch_log::{Change, Derived, Log, OpenError, OutputError, OutputLog, Outputs};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use wasmtime::component::Linker;

use super::feed::output as wit;

pulsewatch_log::wire_conversions!();

/// The interface the functions are linked under, as in wit/feed.wit.
pub(crate) const OUTPUT_INTERFACE: &str = "pulse:watch/output@0.3.0";

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

/// The name a plugin knows an output by: a log's file name without `.redb`, a stream's name.
pub(crate) fn output_name(path: &Path) -> String {
    if let Some(Ok(addr)) = StreamAddr::from_location(path) {
        return addr.stream;
    }
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// Opens the outputs at `paths` for `plugin`, which reads `input`: logs (created if needed) and
/// streams (which must exist).
pub(crate) async fn open(plugin: &str, input: &str, paths: &[PathBuf]) -> Result<Outputs, Failure> {
    let mut logs: Vec<(String, Arc<dyn OutputLog>)> = Vec::with_capacity(paths.len());
    for path in paths {
        let output: Arc<dyn OutputLog> = match StreamAddr::from_location(path) {
            Some(addr) => {
                let addr = addr.map_err(|e| Failure::Log(e.to_string()))?;
                StreamOutput::check_plugin(plugin)
                    .map_err(|e| Failure::Log(format!("cannot write to {addr}: {e}")))?;
                StreamOutput::open(&addr)
                    .await
                    .map_err(|e| Failure::Log(format!("cannot open its output {addr}: {e}")))?
            }
            None => open_shared(path)
                .map_err(|e| Failure::Log(format!("cannot open its output log: {e}")))?,
        };
        logs.push((output_name(path), output));
    }
    Ok(Outputs::new(plugin, input, logs))
}

fn to_wit(error: OutputError) -> wit::CommitError {
    match error {
        OutputError::Invalid(why) => wit::CommitError::Invalid(why),
        OutputError::Unavailable(why) => wit::CommitError::Unavailable(why),
    }
}

/// The plugin's outputs, if it is granted any.
fn outputs(feed: &Feed) -> Result<Arc<Outputs>, wit::CommitError> {
    feed.outputs.clone().ok_or_else(|| {
        wit::CommitError::Invalid("this plugin is granted no output logs".to_owned())
    })
}

fn panicked() -> wit::CommitError {
    wit::CommitError::Unavailable("the host panicked while committing".to_owned())
}

/// Adds the output functions to `linker`. Reading checkpoints and committing read and sync
/// files: they run on the blocking pool, so that the executor's other plugins and the stop
/// signal are not held up.
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
            let result = match outputs(&store.data().feed) {
                Ok(outputs) => tokio::task::spawn_blocking(move || outputs.committed())
                    .await
                    .map_or_else(|_| Err(panicked()), |r| r.map_err(to_wit)),
                Err(e) => Err(e),
            };
            let result = result.map(|found| {
                found.map(|c| wit::Checkpoint {
                    cursor: c.cursor,
                    state: c.state,
                })
            });
            Ok((result,))
        })
    })?;
    output.func_wrap_async(
        "commit",
        |store, (cursor, state, events): (u64, Vec<u8>, Vec<wit::Derived>)| {
            Box::new(async move {
                let feed = &store.data().feed;
                let given = feed.given();
                let result = match outputs(feed) {
                    Ok(outputs) => {
                        let count = events.len() as u64;
                        let events = events.into_iter().map(derived).collect();
                        let committed = tokio::task::spawn_blocking(move || {
                            outputs.commit(cursor, given, &state, events)
                        })
                        .await
                        .map_or_else(|_| Err(panicked()), |r| r.map_err(to_wit));
                        if committed.is_ok() {
                            // Published with the next feed call's progress.
                            feed.emitted.fetch_add(count, Ordering::Relaxed);
                        }
                        committed
                    }
                    Err(e) => Err(e),
                };
                Ok((result,))
            })
        },
    )?;
    Ok(())
}

/// A derived event as the log takes it, with its output's index.
fn derived(event: wit::Derived) -> (u32, Derived) {
    let change = Change::new(
        from_change_kind(event.kind),
        from_uuid(event.entity),
        from_uuid(event.collective),
    )
    .with_payload(event.payload);
    (
        event.output,
        Derived {
            from: event.from,
            change,
        },
    )
}
