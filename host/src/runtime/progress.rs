//! Where each plugin of a run is and what it holds of its limits, published by its feed calls
//! and read by whoever watches the run (the supervisor's status, the live progress line).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where each plugin of a run is in the feed and what it uses: its cursor (the `since` of its
/// latest `poll` or `wait`, so every event up to it has been processed and, with the guest SDK,
/// committed), its linear memory and its disk. Lets a host watch consumers' lag while they
/// run. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<BTreeMap<String, Arc<Tracker>>>>);

/// The live figures of one plugin.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// The cursor, plus one: 0 until the plugin calls the feed.
    cursor: AtomicU64,
    resources: Mutex<Resources>,
    /// Told of every update, so that a watcher sleeps while nothing moves.
    updated: tokio::sync::Notify,
}

impl Tracker {
    pub(crate) fn set_cursor(&self, seq: u64) {
        self.cursor.store(seq.saturating_add(1), Ordering::Relaxed);
        self.updated.notify_one();
    }

    /// Completes after the next update (at once if one came since the last call).
    pub(crate) async fn updated(&self) {
        self.updated.notified().await;
    }

    pub(crate) fn cursor(&self) -> Option<u64> {
        self.cursor.load(Ordering::Relaxed).checked_sub(1)
    }

    pub(crate) fn resources(&self) -> Resources {
        *self.resources.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_resources(&self, resources: Resources) {
        *self.resources.lock().unwrap_or_else(|e| e.into_inner()) = resources;
        self.updated.notify_one();
    }
}

/// What a plugin holds of its limits, as last seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Its linear memory, all memories together.
    pub memory_bytes: u64,
    /// The bytes in its `/state` (the quota's count, which may err high between measurements).
    pub disk_bytes: u64,
    /// The entries in its `/state`, likewise.
    pub disk_entries: u64,
    /// HTTP requests it sent.
    #[serde(default)]
    pub http_requests: u64,
    /// Of those, the ones that got no response (refused, timed out, failed).
    #[serde(default)]
    pub http_failures: u64,
    /// Request and response body bytes.
    #[serde(default)]
    pub http_bytes: u64,
    /// Derived events it committed to its output logs.
    #[serde(default)]
    pub emitted_events: u64,
    /// CPU its run has taken, as its budget counts it, in ms.
    #[serde(default)]
    pub cpu_spent_ms: u64,
}

impl Progress {
    /// A record of no plugin yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cursor `plugin` last asked from, if it has called the feed in a run using this record.
    pub fn cursor(&self, plugin: &str) -> Option<u64> {
        self.get(plugin)?.cursor()
    }

    /// What `plugin` holds of its limits, if it ran with this record.
    pub fn resources(&self, plugin: &str) -> Option<Resources> {
        Some(self.get(plugin)?.resources())
    }

    fn get(&self, plugin: &str) -> Option<Arc<Tracker>> {
        let trackers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        trackers.get(plugin).cloned()
    }

    /// The figures `plugin`'s run updates; created for a plugin seen first.
    pub(crate) fn track(&self, plugin: &str) -> Arc<Tracker> {
        let mut trackers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        trackers.entry(plugin.to_owned()).or_default().clone()
    }
}
