//! Where a supervised run keeps what outlives a process, under the state root in `.pulsewatch/`
//! (no plugin can be named so, none is ever granted it): the compile cache, quarantine records,
//! and the status of the run, rewritten every second, which `pulsewatch status` reads from
//! another process, during a run or after it.

use crate::limits::Limits;
use crate::runtime::write_atomically;
use crate::spec::{PluginSpec, sha256_hex};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Each plugin's recorded position (the seq it has read through), by name; see [`Home::slots`].
pub type Slots = std::collections::BTreeMap<String, u64>;

/// The directory under the state root.
pub const HOME_DIR: &str = ".pulsewatch";

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
    /// CPU time its worker process has used, in ms.
    pub cpu_ms: u64,
    /// Its worker's resident memory.
    pub rss_bytes: u64,
    /// Its linear memory.
    pub memory_bytes: u64,
    /// Bytes in its `/state`.
    pub disk_bytes: u64,
    /// Entries in its `/state`.
    pub disk_entries: u64,
}

/// Why a plugin is quarantined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    /// The event it kept failing on: the one after its cursor.
    pub seq: u64,
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

/// The `.pulsewatch/` directory of a state root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// The home of the plugins whose state lives under `state_root`.
    pub fn under(state_root: &Path) -> Home {
        Home {
            dir: state_root.join(HOME_DIR),
        }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The compile cache.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    fn status_path(&self) -> PathBuf {
        self.dir.join("status.json")
    }

    fn slots_path(&self) -> PathBuf {
        self.dir.join("slots.json")
    }

    /// Where each plugin run under this state root last stood: the `since` of its latest feed
    /// call, recorded by the host (not read from anything the plugin wrote), kept when the
    /// plugin leaves the run, so that `pulsewatch compact` does not delete what it has yet to
    /// read. The plugin's own checkpoint stays the truth: a slot may lag it by a second.
    pub fn slots(&self) -> std::io::Result<Slots> {
        match std::fs::read(self.slots_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.slots_path().display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Slots::new()),
            Err(e) => Err(e),
        }
    }

    /// Records the positions of `plugins`, keeping every other plugin's slot.
    pub(crate) fn record_slots(
        &self,
        plugins: impl IntoIterator<Item = (String, u64)>,
    ) -> std::io::Result<()> {
        let mut slots = self.slots().unwrap_or_default();
        slots.extend(plugins);
        std::fs::create_dir_all(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(&slots).map_err(std::io::Error::other)?;
        write_atomically(&self.slots_path(), &bytes)
    }

    /// Forgets a plugin's slot, so that it holds back no compaction. Returns whether it had one.
    pub fn drop_slot(&self, plugin: &str) -> std::io::Result<bool> {
        let mut slots = self.slots()?;
        if slots.remove(plugin).is_none() {
            return Ok(false);
        }
        let bytes = serde_json::to_vec_pretty(&slots).map_err(std::io::Error::other)?;
        write_atomically(&self.slots_path(), &bytes)?;
        Ok(true)
    }

    fn quarantine_path(&self, plugin: &str) -> PathBuf {
        self.dir.join("quarantine").join(format!("{plugin}.json"))
    }

    /// The status the last (or current) run wrote.
    pub fn status(&self) -> Option<RunStatus> {
        let bytes = std::fs::read(self.status_path()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub(crate) fn write_status(&self, status: &RunStatus) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
        write_atomically(&self.status_path(), &bytes)
    }

    /// The quarantine record of `plugin`, if it has one.
    pub fn quarantine(&self, plugin: &str) -> Option<Quarantine> {
        let bytes = std::fs::read(self.quarantine_path(plugin)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub(crate) fn set_quarantine(&self, plugin: &str, record: &Quarantine) -> std::io::Result<()> {
        let path = self.quarantine_path(plugin);
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        write_atomically(&path, &bytes)
    }

    /// Lets a quarantined plugin start again. Returns whether it was quarantined.
    pub fn release(&self, plugin: &str) -> std::io::Result<bool> {
        match std::fs::remove_file(self.quarantine_path(plugin)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
