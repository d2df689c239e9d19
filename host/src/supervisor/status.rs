//! What a run says of itself: each plugin's state, position, usage and quarantine, as
//! `pulsewatch status` shows them ([`super::Home`] keeps them on disk).

use super::entry::Entry;
use crate::limits::Limits;
use crate::runtime::Resources;
use crate::spec::{PluginSpec, sha256_hex};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Where a plugin stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PluginState {
    /// Being compiled and admitted.
    Starting,
    /// Running.
    Running,
    /// Failed; waiting to be started again.
    BackingOff,
    /// Failed too often at the same place; not started again until released.
    Quarantined,
    /// Stopped before it finished (the run was stopped, or it was removed from the manifest).
    Stopped,
    /// Ended cleanly.
    Finished,
    /// Ended with a failure, not to be restarted.
    Failed,
}

impl std::fmt::Display for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginState::Starting => "starting",
            PluginState::Running => "running",
            PluginState::BackingOff => "backing off",
            PluginState::Quarantined => "quarantined",
            PluginState::Stopped => "stopped",
            PluginState::Finished => "finished",
            PluginState::Failed => "failed",
        })
    }
}

/// What a plugin uses of what it may.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time its worker process has used (sampled now and then), or its run has as its
    /// budget counts it (reported as it moves; all there is in the shared worker), whichever is
    /// more, in ms.
    pub cpu_ms: u64,
    /// Its worker's resident memory.
    pub rss_bytes: u64,
    /// Its linear memory, its `/state` and its HTTP requests, as its worker last reported.
    #[serde(flatten)]
    pub held: Resources,
}

/// Why a plugin is quarantined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    /// The event it kept failing on: the one after its position; `None` if it failed before it
    /// ever read the feed.
    pub seq: Option<u64>,
    /// Its last failure.
    pub error: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The spec it failed with: a changed spec (a manifest edit) releases it.
    pub fingerprint: String,
}

/// One plugin of a run, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStatus {
    /// Its name.
    pub name: String,
    /// Where it stands.
    pub state: PluginState,
    /// Its cursor (the `since` of its latest feed call), if it has made one.
    pub cursor: Option<u64>,
    /// How many times it was started again after failing.
    pub restarts: u32,
    /// Its latest failure.
    pub last_error: Option<String>,
    /// Its use of resources, when last measured.
    pub usage: Usage,
    /// Its limits.
    pub limits: Limits,
    /// Why it is quarantined, if it is.
    pub quarantine: Option<Quarantine>,
}

/// A run, as its supervisor last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStatus {
    /// The supervisor's process id.
    pub pid: u32,
    /// Whether the run was going on when this was written.
    pub running: bool,
    /// When this was written, in ms since the Unix epoch.
    pub updated_ms: u64,
    /// Every plugin of the run.
    pub plugins: Vec<PluginStatus>,
}

/// The identity of a spec: what, when it changes, releases a quarantine.
pub(crate) fn fingerprint(spec: &PluginSpec) -> String {
    sha256_hex(&serde_json::to_vec(spec).unwrap_or_default())
}

/// What a run last wrote to its home, so that nothing is written again while nothing moves.
#[derive(Default)]
pub(super) struct Written {
    /// The plugins' positions in the slots file.
    slots: Vec<(String, u64)>,
    /// The status, and whether the run was running.
    status: Option<(bool, Vec<PluginStatus>)>,
}

impl super::Supervisor {
    /// Writes the run's status when it changed since `written`, and the plugins' slots when
    /// their positions moved (the slots file is read and merged only then).
    pub(super) fn write_status(
        &self,
        entries: &[Arc<Entry>],
        running: bool,
        written: &mut Written,
    ) {
        let Some(home) = &self.home else {
            return;
        };
        // Not even looked at while nothing changed: a thousand idle plugins cost nothing here.
        let changed = entries
            .iter()
            .fold(false, |changed, entry| entry.take_changed() | changed);
        if !changed && written.status.as_ref().is_some_and(|(r, _)| *r == running) {
            return;
        }
        // The latest entry of each name: a replaced spec's entry is history.
        let mut plugins: Vec<PluginStatus> = Vec::with_capacity(entries.len());
        let mut places: HashMap<String, usize> = HashMap::with_capacity(entries.len());
        for entry in entries {
            let status = entry.status_now();
            match places.get(&status.name) {
                Some(&place) => plugins[place] = status,
                None => {
                    places.insert(status.name.clone(), plugins.len());
                    plugins.push(status);
                }
            }
        }
        let positions: Vec<(String, u64)> = plugins
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.cursor?)))
            .collect();
        if positions != written.slots && home.record_slots(positions.clone()).is_ok() {
            written.slots = positions;
        }
        if written
            .status
            .as_ref()
            .is_some_and(|(r, p)| *r == running && *p == plugins)
        {
            return;
        }
        let status = RunStatus {
            pid: std::process::id(),
            running,
            updated_ms: pulsewatch_log::now_ms(),
            plugins,
        };
        if home.write_status(&status).is_ok() {
            written.status = Some((running, status.plugins));
        } else {
            // Tried again at the next tick.
            entries.iter().for_each(|entry| entry.mark_changed());
        }
    }
}
