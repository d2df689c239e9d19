//! Where a supervised run keeps what outlives a process, under the state root in `.pulsewatch/`
//! (no plugin can be named so, none is ever granted it): the compile cache, quarantine records,
//! the plugins' slots, and the status of the run, which `pulsewatch status` reads from another
//! process, during a run or after it.

use super::status::{Quarantine, RunStatus};
use crate::runtime::write_atomically;
use crate::spec::check_name;
use std::path::{Path, PathBuf};

/// Each plugin's recorded position (the seq it has read through), by name; see [`Home::slots`].
pub type Slots = std::collections::BTreeMap<String, u64>;

/// The directory under the state root.
pub const HOME_DIR: &str = ".pulsewatch";

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

    /// The file of `plugin`'s quarantine record; a name that is not a plain file name (one
    /// that could point anywhere else, `../x`) has none.
    fn quarantine_path(&self, plugin: &str) -> std::io::Result<PathBuf> {
        check_name(plugin).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(self.dir.join("quarantine").join(format!("{plugin}.json")))
    }

    /// The plugins quarantined under this home, by name.
    pub fn quarantined(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("quarantine")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| Some(e.file_name().to_str()?.strip_suffix(".json")?.to_owned()))
            .collect();
        names.sort();
        names
    }

    /// The status the last (or current) run wrote; `None` if no run has written one.
    pub fn status(&self) -> std::io::Result<Option<RunStatus>> {
        let path = self.status_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a run's status: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn write_status(&self, status: &RunStatus) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
        write_atomically(&self.status_path(), &bytes)
    }

    /// The quarantine record of `plugin`, if it has one.
    pub fn quarantine(&self, plugin: &str) -> Option<Quarantine> {
        let bytes = std::fs::read(self.quarantine_path(plugin).ok()?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub(crate) fn set_quarantine(&self, plugin: &str, record: &Quarantine) -> std::io::Result<()> {
        let path = self.quarantine_path(plugin)?;
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        write_atomically(&path, &bytes)
    }

    /// Lets a quarantined plugin start again. Returns whether it was quarantined.
    pub fn release(&self, plugin: &str) -> std::io::Result<bool> {
        match std::fs::remove_file(self.quarantine_path(plugin)?) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
