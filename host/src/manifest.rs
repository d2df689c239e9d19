//! A manifest: the plugins of a deployment, their grants and their limits, as data a reviewer
//! can read (Spin's `spin.toml` is the model). Parsed with `toml` and serde, unknown keys
//! refused; every error names the file, the line, and where it applies the plugin and the key.
//! Everything is checked before any plugin starts: duplicate names, missing or changed
//! components (each pinned by its sha256), limits out of range.
//!
//! ```toml
//! [[plugin]]
//! name = "kind-counts"
//! component = "plugins/kind-counts.wasm"      # relative to this file
//! sha256 = "3b1f…"
//! args = ["--verbose"]
//! env = { REGION = "eu" }                     # nothing is inherited
//! start = "head"                              # "beginning" (default), "head", a seq, or
//!                                              # { time = "2026-11-27T06:00:00Z" }
//! restart = "on-failure"                      # (default) or "never"; with --follow
//!
//! [plugin.limits]                             # each defaults to limits.rs
//! memory_mib = 64
//! wall_clock = "10m"
//! ```

use crate::limits::Limits;
use crate::spec::{PluginSpec, RestartPolicy, StartPosition, sha256_hex};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Why a manifest cannot be used. Nothing is started when a manifest is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The manifest.
        path: PathBuf,
        /// What the OS reported.
        source: std::io::Error,
    },
    /// Something in it is wrong.
    #[error("{}:{line}: {}{}{message}", path.display(), plugin.as_ref().map_or_else(String::new, |p| format!("plugin {p:?}: ")), key.as_ref().map_or_else(String::new, |k| format!("{k}: ")))]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// The line the problem is on (from 1).
        line: usize,
        /// The plugin it concerns, when known.
        plugin: Option<String>,
        /// The key it concerns, when known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

/// A start position as the manifest spells it: `"beginning"`, `"head"`, a seq, or
/// `{ time = "2026-11-27T06:00:00Z" }` (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum StartEntry {
    Named(StartName),
    Seq(u64),
    Time(StartTime),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartTime {
    time: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum StartName {
    Beginning,
    Head,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    plugin: Vec<Spanned<Entry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Spanned<String>,
    component: Spanned<PathBuf>,
    sha256: Spanned<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    start: Option<Spanned<StartEntry>>,
    #[serde(default)]
    restart: Option<RestartPolicy>,
    #[serde(default)]
    limits: Option<Spanned<LimitsEntry>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsEntry {
    memory_mib: Option<Spanned<u64>>,
    fuel: Option<Spanned<u64>>,
    idle_fuel_per_second: Option<Spanned<u64>>,
    wall_clock: Option<Spanned<String>>,
    disk_mib: Option<Spanned<u64>>,
    disk_entries: Option<Spanned<u64>>,
    poll_events: Option<Spanned<u64>>,
    poll_mib: Option<Spanned<u64>>,
    output_kib: Option<Spanned<u64>>,
    handles: Option<Spanned<u64>>,
}

/// The bounds each limit may be set within, with its unit.
mod bounds {
    use std::ops::RangeInclusive;
    pub const MEMORY_MIB: RangeInclusive<u64> = 1..=4096;
    pub const FUEL: RangeInclusive<u64> = 1_000_000..=u64::MAX;
    pub const IDLE_FUEL: RangeInclusive<u64> = 0..=u64::MAX;
    pub const DISK_MIB: RangeInclusive<u64> = 1..=1 << 20;
    pub const DISK_ENTRIES: RangeInclusive<u64> = 1..=10_000_000;
    pub const POLL_EVENTS: RangeInclusive<u64> = 1..=100_000;
    pub const POLL_MIB: RangeInclusive<u64> = 1..=256;
    pub const OUTPUT_KIB: RangeInclusive<u64> = 1..=1 << 20;
    pub const HANDLES: RangeInclusive<u64> = 16..=4096;
}

/// The line (from 1) of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Reads and checks the manifest at `path`: the plugins it describes, their components read and
/// matched against their sha256, their state directories under `state_root`.
pub fn load(path: &Path, state_root: &Path) -> Result<Vec<PluginSpec>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text, state_root)
}

/// Checks manifest `text`, read from `path` (component paths are relative to its directory).
pub fn parse(path: &Path, text: &str, state_root: &Path) -> Result<Vec<PluginSpec>, ManifestError> {
    let invalid = |offset: usize, plugin: Option<&str>, key: Option<&str>, message: String| {
        ManifestError::Invalid {
            path: path.to_path_buf(),
            line: line_of(text, offset),
            plugin: plugin.map(str::to_owned),
            key: key.map(str::to_owned),
            message,
        }
    };
    let file: File = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        invalid(offset, None, None, e.message().trim().to_owned())
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut specs: Vec<PluginSpec> = Vec::new();
    for entry in &file.plugin {
        let entry = entry.get_ref();
        let name = entry.name.get_ref().as_str();
        let at = |spanned_start: usize, key: &str, message: String| {
            invalid(spanned_start, Some(name), Some(key), message)
        };
        let mut spec = PluginSpec::named(name, base.join(entry.component.get_ref()), state_root)
            .map_err(|e| at(entry.name.span().start, "name", e.to_string()))?;
        if specs.iter().any(|s| s.name == spec.name) {
            return Err(at(
                entry.name.span().start,
                "name",
                "a second plugin of this name (each needs its own state)".into(),
            ));
        }
        let component = entry.component.span().start;
        let bytes = std::fs::read(&spec.component).map_err(|e| {
            at(
                component,
                "component",
                format!("{}: cannot read: {e}", spec.component.display()),
            )
        })?;
        let expected = entry.sha256.get_ref().to_ascii_lowercase();
        if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(at(
                entry.sha256.span().start,
                "sha256",
                format!("{expected:?} is not a sha256 (64 hex digits)"),
            ));
        }
        let actual = sha256_hex(&bytes);
        if actual != expected {
            return Err(at(
                entry.sha256.span().start,
                "sha256",
                format!(
                    "{} does not match: the manifest says {expected}, the file's is {actual}",
                    spec.component.display()
                ),
            ));
        }
        spec.sha256 = Some(actual);
        spec.args = entry.args.clone();
        if let Some(env) = &entry.env {
            if let Some(key) = env
                .get_ref()
                .keys()
                .find(|k| k.is_empty() || k.contains(['=', '\0']))
            {
                return Err(at(
                    env.span().start,
                    "env",
                    format!("{key:?} is not a variable name"),
                ));
            }
            spec.env = env
                .get_ref()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        spec.start = match entry.start.as_ref().map(Spanned::get_ref) {
            None | Some(StartEntry::Named(StartName::Beginning)) => StartPosition::Beginning,
            Some(StartEntry::Named(StartName::Head)) => StartPosition::Head,
            Some(StartEntry::Seq(seq)) => StartPosition::After(*seq),
            Some(StartEntry::Time(StartTime { time })) => {
                let offset = entry.start.as_ref().map_or(0, |s| s.span().start);
                let at = humantime::parse_rfc3339(time).map_err(|e| {
                    invalid(
                        offset,
                        Some(name),
                        Some("start"),
                        format!(
                            "{time:?}: {e} (expected RFC 3339 in UTC, e.g. 2026-11-27T06:00:00Z)"
                        ),
                    )
                })?;
                let ms = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                StartPosition::Time(ms)
            }
        };
        spec.restart = entry.restart.unwrap_or_default();
        if let Some(limits) = &entry.limits {
            spec.limits = limits_from(limits.get_ref(), |offset, key, message| {
                invalid(offset, Some(name), Some(key), message)
            })?;
        }
        specs.push(spec);
    }
    Ok(specs)
}

fn limits_from(
    entry: &LimitsEntry,
    invalid: impl Fn(usize, &str, String) -> ManifestError,
) -> Result<Limits, ManifestError> {
    let value = |field: &Option<Spanned<u64>>, key: &str, range: RangeInclusive<u64>| {
        field
            .as_ref()
            .map(|v| {
                if range.contains(v.get_ref()) {
                    Ok(*v.get_ref())
                } else {
                    Err(invalid(
                        v.span().start,
                        &format!("limits.{key}"),
                        format!(
                            "{} is out of range ({} to {})",
                            v.get_ref(),
                            range.start(),
                            range.end()
                        ),
                    ))
                }
            })
            .transpose()
    };
    let mut limits = Limits::default();
    if let Some(mib) = value(&entry.memory_mib, "memory_mib", bounds::MEMORY_MIB)? {
        limits.memory_bytes = (mib << 20) as usize;
    }
    if let Some(fuel) = value(&entry.fuel, "fuel", bounds::FUEL)? {
        limits.fuel = fuel;
    }
    if let Some(rate) = value(
        &entry.idle_fuel_per_second,
        "idle_fuel_per_second",
        bounds::IDLE_FUEL,
    )? {
        limits.idle_fuel_per_second = rate;
    }
    if let Some(text) = &entry.wall_clock {
        let limit: Duration = humantime::parse_duration(text.get_ref())
            .map_err(|e| invalid(text.span().start, "limits.wall_clock", format!("{e}")))?;
        limits.wall_clock = Some(limit);
    }
    if let Some(mib) = value(&entry.disk_mib, "disk_mib", bounds::DISK_MIB)? {
        limits.disk.bytes = mib << 20;
    }
    if let Some(entries) = value(&entry.disk_entries, "disk_entries", bounds::DISK_ENTRIES)? {
        limits.disk.entries = entries;
    }
    if let Some(events) = value(&entry.poll_events, "poll_events", bounds::POLL_EVENTS)? {
        limits.poll.max_events = events as u32;
    }
    if let Some(mib) = value(&entry.poll_mib, "poll_mib", bounds::POLL_MIB)? {
        limits.poll.max_bytes = (mib << 20) as usize;
    }
    if let Some(kib) = value(&entry.output_kib, "output_kib", bounds::OUTPUT_KIB)? {
        limits.output_bytes = (kib << 10) as usize;
    }
    if let Some(handles) = value(&entry.handles, "handles", bounds::HANDLES)? {
        limits.handles = handles as usize;
    }
    Ok(limits)
}
