//! A plugin described as data: what to run, what it is given, what it may consume. Built from
//! command-line flags today; a manifest entry becomes one too.

use crate::limits::Limits;
use crate::runtime::{AllowedHost, Secret};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use pulsewatch_log::{START_VARIABLE, StartPosition};

/// What a supervisor does when a plugin that follows the feed fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Start it again from its committed cursor, after a growing pause; quarantine it if it keeps
    /// failing at the same place.
    #[default]
    OnFailure,
    /// Leave it stopped.
    Never,
}

/// Which process a supervisor runs a plugin in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A worker process of its own, under OS limits sized for it: a fault in the host code
    /// serving it, or memory the host allocates for it, harms no other plugin.
    #[default]
    Process,
    /// One worker process with the run's other `shared` plugins, each a task on one executor
    /// with a thread a core, sharing one engine and one read handle of each log: a thousand
    /// plugins take a tenth of the memory of a thousand processes, and one event reaches them
    /// all within tens of milliseconds on two cores. What it trades: the
    /// OS limits (data, descriptors, file size) bound the process, not the plugin; a fault
    /// in the host's code ends every plugin of the process (the supervisor restarts them each
    /// by its policy); host work on the blocking pool is not charged to the plugin's CPU. Its
    /// linear memory, CPU budget, wall clock, disk quota and grants hold as before: wasmtime
    /// and the host enforce them, not the OS.
    Shared,
}

impl std::str::FromStr for Isolation {
    type Err = String;

    /// `process` or `shared`, as a manifest and `run --isolation` spell it.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "process" => Ok(Isolation::Process),
            "shared" => Ok(Isolation::Shared),
            _ => Err("expected \"process\" or \"shared\"".into()),
        }
    }
}

/// One plugin to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSpec {
    /// Its name: how its output and failures are labelled. One plain file name.
    pub name: String,
    /// The component file.
    pub component: PathBuf,
    /// The component's sha256 (lower-case hex), when known: what a compile cache is keyed by,
    /// and what a manifest pins.
    pub sha256: Option<String>,
    /// Arguments after `argv[0]`, which is the plugin's name.
    pub args: Vec<String>,
    /// Environment variables, with explicit values: nothing is inherited.
    pub env: Vec<(String, String)>,
    /// Where it starts without a committed cursor.
    pub start: StartPosition,
    /// What happens when it fails while following.
    pub restart: RestartPolicy,
    /// What it may consume.
    pub limits: Limits,
    /// The host directory it sees as `/state`, created if missing.
    pub state_dir: PathBuf,
    /// The log it reads, when not the run's: another plugin's output, say. A supervisor opens
    /// it for the plugin; [`crate::Runtime::run`] reads the log it is given.
    #[serde(default)]
    pub input: Option<PathBuf>,
    /// The output logs it may commit derived events to (`pulse:watch/output`), created if
    /// missing; the plugin knows each by its file name without `.redb`.
    #[serde(default)]
    pub outputs: Vec<PathBuf>,
    /// The destinations it may send HTTP requests to (`wasi:http/outgoing-handler`).
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<AllowedHost>,
    /// The Standard Webhooks secret (`whsec_...`) its requests are signed with; never shown
    /// to the plugin.
    #[serde(default)]
    pub webhook_secret: Option<Secret>,
    /// Which process it runs in under a supervisor.
    #[serde(default)]
    pub isolation: Isolation,
}

impl PluginSpec {
    /// The plugin in `component`, named after the file (without `.wasm`), with its state in
    /// `<state_root>/<name>/`, default limits and no arguments.
    pub fn from_file(
        component: impl Into<PathBuf>,
        state_root: &Path,
    ) -> Result<PluginSpec, BadName> {
        let component = component.into();
        let name = component.file_stem().map_or_else(
            || component.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        Self::named(name, component, state_root)
    }

    /// The plugin in `component` under `name`, with its state in `<state_root>/<name>/`.
    pub fn named(
        name: impl Into<String>,
        component: impl Into<PathBuf>,
        state_root: &Path,
    ) -> Result<PluginSpec, BadName> {
        let name = name.into();
        check_name(&name)?;
        Ok(PluginSpec {
            state_dir: state_root.join(&name),
            name,
            component: component.into(),
            sha256: None,
            args: Vec::new(),
            env: Vec::new(),
            start: StartPosition::default(),
            restart: RestartPolicy::default(),
            limits: Limits::default(),
            input: None,
            outputs: Vec::new(),
            allowed_outbound_hosts: Vec::new(),
            webhook_secret: None,
            isolation: Isolation::default(),
        })
    }
}

/// The sha256 of `bytes`, in lower-case hex: how a manifest pins a component and a compile
/// cache finds it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A plugin name that cannot be used: a name labels the plugin's output and names its state
/// directory, so it must be one plain path component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} is not a usable plugin name: it must be a plain file name, without / or \\ or control characters, not starting with a dot",
    if name.chars().any(char::is_control) { "a name with control characters".to_owned() } else { format!("\"{name}\"") }
)]
pub struct BadName {
    /// The name given.
    pub name: String,
}

/// A name labels output and usually names the state directory: one plain path component, not
/// hidden, with nothing that could rewrite a terminal line.
pub(crate) fn check_name(name: &str) -> Result<(), BadName> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control);
    if plain {
        Ok(())
    } else {
        Err(BadName {
            name: name.to_owned(),
        })
    }
}
