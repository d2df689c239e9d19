//! The supervisor's bookkeeping: each plugin of a run as an entry, with its spec, its status,
//! its stop signal and how it ended.

use super::protocol::Report;
use super::status::{PluginState, PluginStatus, Usage as PluginUsage};
use super::worker::Watch;
use crate::runtime::{Failure, Outcome, RunOptions, StopSignal, Tracker};
use crate::spec::PluginSpec;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A plugin of the run: its spec, its status, and a stop signal of its own (a child of the run's,
/// also given on its removal from the manifest).
pub(super) struct Entry {
    pub(super) spec: PluginSpec,
    status: Mutex<PluginStatus>,
    /// Whether `status` may have changed since the run's status was last written.
    changed: AtomicBool,
    pub(super) stop: StopSignal,
    pub(super) tracker: Arc<Tracker>,
    /// The spec to start once this one has stopped (it changed in the manifest).
    pub(super) replacement: Mutex<Option<PluginSpec>>,
    /// How it ended; `None` while it runs, or if it never started.
    outcome: Mutex<Option<Outcome>>,
}

impl Entry {
    pub(super) fn new(spec: PluginSpec, options: &RunOptions) -> Arc<Entry> {
        Arc::new(Entry {
            status: Mutex::new(PluginStatus {
                name: spec.name.clone(),
                state: PluginState::Starting,
                cursor: None,
                restarts: 0,
                last_error: None,
                usage: PluginUsage::default(),
                limits: spec.limits,
                quarantine: None,
            }),
            changed: AtomicBool::new(true),
            tracker: options.progress.track(&spec.name),
            spec,
            stop: options.stop.child(),
            replacement: Mutex::new(None),
            outcome: Mutex::new(None),
        })
    }

    /// Its status, to change.
    pub(super) fn status(&self) -> MutexGuard<'_, PluginStatus> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        // Under the lock: a writer that takes the flag now reads the status after this change.
        self.mark_changed();
        status
    }

    /// Says its status is to be written again.
    pub(super) fn mark_changed(&self) {
        self.changed.store(true, Ordering::Relaxed);
    }

    /// A copy of its status, to write.
    pub(super) fn status_now(&self) -> PluginStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether its status may have changed since this was last asked.
    pub(super) fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }

    pub(super) fn set_state(&self, state: PluginState) {
        self.status().state = state;
    }

    /// An outcome of this plugin: `failure`, before it ran.
    pub(super) fn failed(&self, failure: Failure) -> Outcome {
        Outcome::failed(&self.spec.name, failure)
    }

    pub(super) fn set_outcome(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    }
}

impl Watch for Entry {
    fn progress(&self, report: &Report) {
        if let Report::Progress { cursor, resources } = report {
            if let Some(seq) = cursor {
                self.tracker.set_cursor(*seq);
            }
            self.tracker.set_resources(*resources);
            let mut status = self.status();
            status.cursor = *cursor;
            status.usage.held = *resources;
            // The budget's count: all there is of a plugin in the shared worker, which is not
            // sampled as a process.
            status.usage.cpu_ms = status.usage.cpu_ms.max(resources.cpu_spent_ms);
        }
    }

    fn sampled(&self, cpu_ms: u64, rss_bytes: u64) {
        let mut status = self.status();
        status.usage.cpu_ms = status.usage.cpu_ms.max(cpu_ms);
        status.usage.rss_bytes = rss_bytes;
    }
}

/// Each entry's outcome; one that never got one was stopped before it started.
pub(super) fn outcomes_of(entries: &[Arc<Entry>]) -> Vec<Outcome> {
    entries
        .iter()
        .map(|entry| {
            let outcome = entry
                .outcome
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            outcome.unwrap_or_else(|| entry.failed(Failure::NotStarted))
        })
        .collect()
}
