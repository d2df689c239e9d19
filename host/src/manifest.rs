//! A manifest: the plugins of a deployment, their grants and their limits, as data a reviewer
//! can read (Spin's `spin.toml` is the model). Every error names the file, the line, and where
//! it applies the plugin and the key, in a sentence that says what was expected. Everything is
//! checked before any plugin starts: duplicate names, missing or changed components (each
//! pinned by its sha256), limits out of range ([`Limit`], the same bounds as `run`'s flags).
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
//! input = "events.redb"                       # the log it reads, or nats://HOST:PORT/STREAM [default: run's --db]
//! allowed_outbound_hosts = ["https://hooks.example.com"]   # HTTP it may send
//! webhook_secret = { env = "HOOK_SECRET" }    # whsec_...; signs its requests
//! outputs = ["totals.redb"]                   # logs it commits derived events to, known
//!                                              # to it as "totals"; or nats://HOST:PORT/TOTALS
//! isolation = "shared"                        # "process" (default): a worker of its own;
//!                                              # "shared": one worker for all such plugins
//!
//! [plugin.limits]                             # each defaults to limits.rs
//! memory_mib = 64
//! cpu = "500ms"
//! wall_clock = "10m"
//! ```

use crate::limits::{Limit, Limits, Unit};
use crate::runtime::{Secret, decode_secret, output_name};
use crate::spec::{PluginSpec, RestartPolicy, StartPosition, sha256_hex};
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Why a manifest cannot be used. Nothing is started when a manifest is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{}: cannot read the manifest: {source}", path.display())]
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

/// The keys of a `[[plugin]]` entry.
const ENTRY_KEYS: [&str; 13] = [
    "name",
    "component",
    "sha256",
    "args",
    "env",
    "start",
    "restart",
    "limits",
    "input",
    "outputs",
    "allowed_outbound_hosts",
    "webhook_secret",
    "isolation",
];

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
    let reader = Reader { path, text };
    let file = DeTable::parse(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        reader.invalid(offset, None, None, sentence(e.message()))
    })?;
    let mut plugins = None;
    for (key, value) in file.get_ref() {
        match key.get_ref().as_ref() {
            "plugin" => plugins = Some(value),
            other => {
                return Err(reader.invalid(
                    key.span().start,
                    None,
                    Some(other),
                    "unknown key: a manifest holds only [[plugin]] entries".into(),
                ));
            }
        }
    }
    let entries = match plugins.map(|v| (v, v.get_ref())) {
        None => {
            return Err(reader.invalid(
                0,
                None,
                None,
                "declares no plugins: a manifest needs at least one [[plugin]] entry".into(),
            ));
        }
        Some((_, DeValue::Array(entries))) => entries.iter().collect::<Vec<_>>(),
        Some((value, _)) => {
            return Err(reader.invalid(
                value.span().start,
                None,
                Some("plugin"),
                "expected [[plugin]] entries (an array of tables)".into(),
            ));
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut specs: Vec<PluginSpec> = Vec::new();
    for entry in entries {
        let DeValue::Table(table) = entry.get_ref() else {
            return Err(reader.invalid(
                entry.span().start,
                None,
                Some("plugin"),
                "expected a table of keys such as name, component and sha256".into(),
            ));
        };
        let spec = reader.entry(entry.span().start, table, base, state_root)?;
        if specs.iter().any(|s| s.name == spec.name) {
            let at = find(table, "name").map_or(entry.span().start, |(_, v)| v.span().start);
            return Err(reader.invalid(
                at,
                Some(&spec.name),
                Some("name"),
                "a second plugin of this name: each needs its own state, so rename one".into(),
            ));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// The value of `key` in `table`, with the span of its key.
fn find<'a, 'i>(
    table: &'a DeTable<'i>,
    key: &str,
) -> Option<(std::ops::Range<usize>, &'a Spanned<DeValue<'i>>)> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(k, v)| (k.span(), v))
}

/// A parser's message as a sentence: capitalised words of its own stay, the trailing newline
/// and full stop go.
fn sentence(message: &str) -> String {
    message.trim().trim_end_matches('.').to_owned()
}

/// What a value is, in a message: "a string", "a table".
fn kind_of(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a decimal number",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// A whole number that is not negative, as a TOML integer gives it.
fn whole(value: &DeValue<'_>) -> Option<u64> {
    let DeValue::Integer(int) = value else {
        return None;
    };
    u64::from_str_radix(int.as_str(), int.radix()).ok()
}

struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Reader<'_> {
    fn invalid(
        &self,
        offset: usize,
        plugin: Option<&str>,
        key: Option<&str>,
        message: String,
    ) -> ManifestError {
        ManifestError::Invalid {
            path: self.path.to_path_buf(),
            line: line_of(self.text, offset),
            plugin: plugin.map(str::to_owned),
            key: key.map(str::to_owned),
            message,
        }
    }

    /// One `[[plugin]]` entry, starting at `at`.
    fn entry(
        &self,
        at: usize,
        table: &DeTable<'_>,
        base: &Path,
        state_root: &Path,
    ) -> Result<PluginSpec, ManifestError> {
        // The name first, so that every other message can name the plugin.
        let name = match find(table, "name") {
            Some((_, value)) => match value.get_ref() {
                DeValue::String(name) => name.to_string(),
                other => {
                    return Err(self.invalid(
                        value.span().start,
                        None,
                        Some("name"),
                        format!(
                            "expected the plugin's name as a string, found {}",
                            kind_of(other)
                        ),
                    ));
                }
            },
            None => {
                return Err(self.invalid(
                    at,
                    None,
                    Some("name"),
                    "missing: every [[plugin]] needs a name".into(),
                ));
            }
        };
        let at_key = |offset: usize, key: &str, message: String| {
            self.invalid(offset, Some(&name), Some(key), message)
        };
        for (key, _) in table {
            let key_name = key.get_ref().as_ref();
            if !ENTRY_KEYS.contains(&key_name) {
                return Err(at_key(
                    key.span().start,
                    key_name,
                    format!("unknown key; a plugin's keys are {}", ENTRY_KEYS.join(", ")),
                ));
            }
        }
        let required = |key: &str| {
            find(table, key)
                .map(|(_, v)| v)
                .ok_or_else(|| at_key(at, key, "missing: every [[plugin]] needs it".into()))
        };
        let string = |key: &str, value: &Spanned<DeValue<'_>>, what: &str| match value.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            other => Err(at_key(
                value.span().start,
                key,
                format!("expected {what} as a string, found {}", kind_of(other)),
            )),
        };

        let name_value = required("name")?;
        let component = required("component")?;
        let component_path = string("component", component, "the component's path")?;
        let mut spec = PluginSpec::named(&name, base.join(&component_path), state_root)
            .map_err(|e| at_key(name_value.span().start, "name", e.to_string()))?;
        let bytes = std::fs::read(&spec.component).map_err(|e| {
            at_key(
                component.span().start,
                "component",
                format!("cannot read {}: {e}", spec.component.display()),
            )
        })?;
        let pinned = required("sha256")?;
        let expected = string("sha256", pinned, "the component's sha256")?.to_ascii_lowercase();
        if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(at_key(
                pinned.span().start,
                "sha256",
                format!("{expected:?} is not a sha256 (64 hex digits); `sha256sum FILE` gives it"),
            ));
        }
        let actual = sha256_hex(&bytes);
        if actual != expected {
            return Err(at_key(
                pinned.span().start,
                "sha256",
                format!(
                    "{} does not match: the manifest says {expected}, the file's is {actual}; \
                     pin the new one if the change is wanted",
                    spec.component.display()
                ),
            ));
        }
        spec.sha256 = Some(actual);

        let strings = |key: &str, value: &Spanned<DeValue<'_>>, what: &str| match value.get_ref() {
            DeValue::Array(list) => list.iter().map(|v| string(key, v, what)).collect(),
            other => Err(at_key(
                value.span().start,
                key,
                format!("expected an array of strings, found {}", kind_of(other)),
            )),
        };
        if let Some((_, args)) = find(table, "args") {
            spec.args = strings("args", args, "each argument")?;
        }
        if let Some((_, input)) = find(table, "input") {
            let text = string("input", input, "the input log's path or stream")?;
            spec.input = Some(if text.starts_with(crate::jetstream::SCHEME) {
                // A stream, not a path: kept as written, once it parses.
                text.parse::<crate::jetstream::StreamAddr>()
                    .map_err(|e| at_key(input.span().start, "input", e.to_string()))?;
                PathBuf::from(text)
            } else {
                base.join(text)
            });
        }
        if let Some((_, outputs)) = find(table, "outputs") {
            for output in strings("outputs", outputs, "each output log's path or stream")? {
                let path = if output.starts_with(crate::jetstream::SCHEME) {
                    output
                        .parse::<crate::jetstream::StreamAddr>()
                        .map_err(|e| at_key(outputs.span().start, "outputs", e.to_string()))?;
                    PathBuf::from(&output)
                } else {
                    base.join(&output)
                };
                let name = output_name(&path);
                if spec.outputs.iter().any(|o| output_name(o) == name) {
                    return Err(at_key(
                        outputs.span().start,
                        "outputs",
                        format!(
                            "two outputs are called {name:?}: the plugin tells its outputs apart \
                             by file name, so rename one"
                        ),
                    ));
                }
                if spec.input.as_ref() == Some(&path) {
                    return Err(at_key(
                        outputs.span().start,
                        "outputs",
                        format!(
                            "{output} is the plugin's input too: a plugin would read what it \
                             derives, without end"
                        ),
                    ));
                }
                spec.outputs.push(path);
            }
        }
        if let Some((_, hosts)) = find(table, "allowed_outbound_hosts") {
            for host in strings("allowed_outbound_hosts", hosts, "each host")? {
                let host = host.parse().map_err(|e: crate::runtime::BadHost| {
                    at_key(hosts.span().start, "allowed_outbound_hosts", e.to_string())
                })?;
                spec.allowed_outbound_hosts.push(host);
            }
        }
        if let Some((_, secret)) = find(table, "webhook_secret") {
            let at = |message: String| at_key(secret.span().start, "webhook_secret", message);
            let text = match secret.get_ref() {
                DeValue::String(text) => text.to_string(),
                DeValue::Table(from) => match (from.len(), find(from, "env")) {
                    (1, Some((_, var))) => {
                        let var = string("webhook_secret.env", var, "a variable's name")?;
                        std::env::var(&var).map_err(|_| {
                            at(format!(
                                "the variable {var} is not set in pulsewatch's environment"
                            ))
                        })?
                    }
                    _ => return Err(at("expected a string or { env = \"VARIABLE\" }".into())),
                },
                other => {
                    return Err(at(format!(
                        "expected a string or {{ env = \"VARIABLE\" }}, found {}",
                        kind_of(other)
                    )));
                }
            };
            decode_secret(&text).map_err(|e| at(e.to_string()))?;
            if !spec.allowed_outbound_hosts.iter().any(|h| h.is_exact()) {
                return Err(at("signs only requests to a host a grant names, and \
                     allowed_outbound_hosts names none (only * or *.domain): add the \
                     receiver's host, e.g. \"https://hooks.example.com\""
                    .into()));
            }
            spec.webhook_secret = Some(Secret(text));
        }
        if let Some((_, env)) = find(table, "env") {
            let DeValue::Table(vars) = env.get_ref() else {
                return Err(at_key(
                    env.span().start,
                    "env",
                    format!(
                        "expected a table of variables, e.g. {{ REGION = \"eu\" }}, found {}",
                        kind_of(env.get_ref())
                    ),
                ));
            };
            for (key, value) in vars {
                let var = key.get_ref().to_string();
                if var.is_empty() || var.contains(['=', '\0']) {
                    return Err(at_key(
                        key.span().start,
                        "env",
                        format!("{var:?} is not a variable name (no = or NUL, not empty)"),
                    ));
                }
                let value = string(&format!("env.{var}"), value, "the variable's value")?;
                spec.env.push((var, value));
            }
        }
        if let Some((_, start)) = find(table, "start") {
            spec.start = self
                .start(start)
                .map_err(|message| at_key(start.span().start, "start", message))?;
        }
        if let Some((_, restart)) = find(table, "restart") {
            spec.restart = match restart.get_ref().as_str() {
                Some("on-failure") => RestartPolicy::OnFailure,
                Some("never") => RestartPolicy::Never,
                _ => {
                    return Err(at_key(
                        restart.span().start,
                        "restart",
                        "expected \"on-failure\" or \"never\"".into(),
                    ));
                }
            };
        }
        if let Some((_, isolation)) = find(table, "isolation") {
            let at = |message: String| at_key(isolation.span().start, "isolation", message);
            spec.isolation = match isolation.get_ref().as_str() {
                Some(text) => text.parse().map_err(at)?,
                None => return Err(at("expected \"process\" or \"shared\"".into())),
            };
        }
        if let Some((_, limits)) = find(table, "limits") {
            spec.limits = self.limits(limits, &name)?;
        }
        Ok(spec)
    }

    /// A start position: `"beginning"`, `"head"`, a seq, or `{ time = "..." }` (RFC 3339, UTC;
    /// a TOML date-time without quotes is taken too).
    fn start(&self, value: &Spanned<DeValue<'_>>) -> Result<StartPosition, String> {
        const EXPECTED: &str = "expected \"beginning\", \"head\", a seq (a whole number) or \
                                { time = \"2026-11-27T06:00:00Z\" }";
        let time = |text: &str| {
            let at = humantime::parse_rfc3339(text).map_err(|e| {
                format!("{text:?} is not a time: {e}; expected RFC 3339 in UTC, e.g. 2026-11-27T06:00:00Z")
            })?;
            let ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            Ok(StartPosition::Time(ms))
        };
        match value.get_ref() {
            DeValue::String(s) if s == "beginning" => Ok(StartPosition::Beginning),
            DeValue::String(s) if s == "head" => Ok(StartPosition::Head),
            DeValue::String(s) => Err(format!("{s:?} is not a start position: {EXPECTED}")),
            DeValue::Integer(_) => whole(value.get_ref())
                .map(StartPosition::After)
                .ok_or_else(|| format!("a seq is a whole number from 0: {EXPECTED}")),
            DeValue::Datetime(at) => time(&at.to_string()),
            DeValue::Table(table) => match (table.len(), find(table, "time")) {
                (1, Some((_, at))) => match at.get_ref() {
                    DeValue::String(text) => time(text),
                    DeValue::Datetime(at) => time(&at.to_string()),
                    _ => Err(EXPECTED.into()),
                },
                _ => Err(EXPECTED.into()),
            },
            other => Err(format!("found {}: {EXPECTED}", kind_of(other))),
        }
    }

    /// `[plugin.limits]`: each key a [`Limit`], checked against its bounds.
    fn limits(&self, value: &Spanned<DeValue<'_>>, plugin: &str) -> Result<Limits, ManifestError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.invalid(
                value.span().start,
                Some(plugin),
                Some("limits"),
                format!("expected a table, found {}", kind_of(value.get_ref())),
            ));
        };
        let mut limits = Limits::default();
        for (key, value) in table {
            let key_name = key.get_ref().as_ref();
            let full_key = format!("limits.{key_name}");
            let invalid = |message: String| {
                self.invalid(value.span().start, Some(plugin), Some(&full_key), message)
            };
            let Some(limit) = Limit::from_key(key_name) else {
                let known: Vec<&str> = Limit::ALL.iter().map(|l| l.key()).collect();
                return Err(self.invalid(
                    key.span().start,
                    Some(plugin),
                    Some(&full_key),
                    format!("unknown limit; the limits are {}", known.join(", ")),
                ));
            };
            let (min, max) = limit.bounds();
            let expected = match limit.unit() {
                Unit::Count(_) => format!(
                    "expected a whole number from {} to {}",
                    limit.show(min),
                    limit.show(max)
                ),
                Unit::Duration => format!(
                    "expected a duration as a string, from {:?} to {:?}",
                    limit.show(min),
                    limit.show(max)
                ),
            };
            let set = match (limit.unit(), value.get_ref()) {
                (Unit::Count(_), DeValue::Integer(_)) => match whole(value.get_ref()) {
                    Some(n) => limit.set(&mut limits, n),
                    None => return Err(invalid(expected)),
                },
                (Unit::Duration, DeValue::String(text)) => limit.set_text(&mut limits, text),
                (_, other) => {
                    return Err(invalid(format!("{expected}, found {}", kind_of(other))));
                }
            };
            set.map_err(|e| invalid(e.to_string()))?;
        }
        Ok(limits)
    }
}
