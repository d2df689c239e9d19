//! A plugin described as data: what to run, what it is given, what it may consume. Built from
//! command-line flags today; a manifest entry becomes one too.

use crate::limits::Limits;
use crate::runtime::LoadError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One plugin to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSpec {
    /// Its name: how its output and failures are labelled. One plain file name.
    pub name: String,
    /// The component file.
    pub component: PathBuf,
    /// Arguments after `argv[0]`, which is the plugin's name.
    pub args: Vec<String>,
    /// What it may consume.
    pub limits: Limits,
    /// The host directory it sees as `/state`, created if missing.
    pub state_dir: PathBuf,
}

impl PluginSpec {
    /// The plugin in `component`, named after the file (without `.wasm`), with its state in
    /// `<state_root>/<name>/`, default limits and no arguments.
    pub fn from_file(
        component: impl Into<PathBuf>,
        state_root: &Path,
    ) -> Result<PluginSpec, LoadError> {
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
    ) -> Result<PluginSpec, LoadError> {
        let name = name.into();
        check_name(&name)?;
        Ok(PluginSpec {
            state_dir: state_root.join(&name),
            name,
            component: component.into(),
            args: Vec::new(),
            limits: Limits::default(),
        })
    }
}

/// A name labels output and usually names the state directory: one plain path component, not
/// hidden, with nothing that could rewrite a terminal line.
pub(crate) fn check_name(name: &str) -> Result<(), LoadError> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control);
    if plain {
        Ok(())
    } else {
        Err(LoadError::BadName {
            name: name.to_owned(),
        })
    }
}
