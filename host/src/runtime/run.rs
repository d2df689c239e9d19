//! What a run of plugins is given and what it reports: options, the stop signal, progress and
//! outcomes.

use super::Failure;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How to run plugins.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Each plugin gets `<state_root>/<name>/` as its `/state`, created if missing.
    pub state_root: PathBuf,
    /// Keep plugins waiting for new events until `stop` is given; otherwise a plugin's feed
    /// closes once it has caught up.
    pub follow: bool,
    /// Stops every plugin of the run cleanly.
    pub stop: StopSignal,
    /// Arguments given to plugins by name (after argv\[0\], which is the plugin's name).
    pub args: Vec<(String, String)>,
    /// Updated with each plugin's cursor as it runs.
    pub progress: Progress,
}

impl RunOptions {
    /// Options for plugins whose state lives under `state_root`, run until caught up.
    pub fn new(state_root: impl Into<PathBuf>) -> Self {
        RunOptions {
            state_root: state_root.into(),
            follow: false,
            stop: StopSignal::new(),
            args: Vec::new(),
            progress: Progress::new(),
        }
    }
}

/// Asks running plugins to finish: `poll` returns nothing more and `wait` returns `closed`, so a
/// plugin commits its cursor and returns. Cloning shares the signal.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the signal.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the signal was given.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where each plugin of a run is in the feed: the `since` of its latest `poll` or `wait`, so
/// every event up to it has been processed (and, with the guest SDK, committed). Lets a host
/// watch consumers' lag while they run. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>);

impl Progress {
    /// A record of no plugin yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cursor `plugin` last asked from, if it has called the feed in a run using this record.
    pub fn cursor(&self, plugin: &str) -> Option<u64> {
        let cursors = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cursors.get(plugin).map(|c| c.load(Ordering::Relaxed))
    }

    /// The counter `plugin`'s feed calls update; created at 0 for a plugin seen first.
    pub(crate) fn track(&self, plugin: &str) -> Arc<AtomicU64> {
        let mut cursors = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cursors.entry(plugin.to_owned()).or_default().clone()
    }
}

/// How one plugin's run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The plugin's name.
    pub plugin: String,
    /// `Ok` if it ended cleanly.
    pub result: Result<(), Failure>,
    /// The full error, with the WebAssembly backtrace, when it did not.
    pub detail: Option<String>,
}
