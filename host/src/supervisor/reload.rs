//! Reloading: a new list of plugins (the manifest read again) applied to a running one.

use super::Supervisor;
use super::entry::Entry;
use crate::runtime::RunOptions;
use crate::spec::PluginSpec;
use std::sync::Arc;

impl Supervisor {
    /// Applies a reloaded list of plugins to the running ones; returns the entries to start.
    pub(super) fn apply(
        &self,
        entries: &[Arc<Entry>],
        specs: &[PluginSpec],
        options: &RunOptions,
    ) -> Vec<Arc<Entry>> {
        let live = |name: &str| {
            entries
                .iter()
                .rev()
                .find(|e| e.spec.name == name && !e.stop.is_stopped())
        };
        let mut started = Vec::new();
        for spec in specs {
            match live(&spec.name) {
                Some(entry) if entry.spec == *spec => {}
                Some(entry) => {
                    // Changed: stop it; its lifecycle's end starts the new spec.
                    *entry.replacement.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(spec.clone());
                    entry.stop.stop();
                }
                None => {
                    let entry = Entry::new(spec.clone(), options);
                    if let Some(home) = &self.home {
                        let _ = home.release(&spec.name);
                    }
                    started.push(entry);
                }
            }
        }
        for entry in entries {
            if !specs.iter().any(|s| s.name == entry.spec.name) && !entry.stop.is_stopped() {
                entry.stop.stop();
            }
        }
        started
    }
}
