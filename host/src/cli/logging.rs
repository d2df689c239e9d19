//! How the host's own lines are written: as text (`pulsewatch: ...`, `[plugin] line`), or as
//! JSON lines through `tracing` (`--log-format json`): host messages on stderr, plugin output on
//! stdout and stderr as the plugin wrote it, each with the plugin's name as a field.

use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::fmt::writer::MakeWriterExt;

/// The format of the host's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for a person: `pulsewatch: ...` and `[plugin] line`.
    #[default]
    Text,
    /// One JSON object a line, for a log collector.
    Json,
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Whether lines are JSON.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// The target of plugin stdout lines; everything else goes to stderr.
pub const PLUGIN_STDOUT: &str = "plugin::stdout";

/// Sets the format for the rest of the process.
pub fn init(format: LogFormat) {
    if format != LogFormat::Json {
        return;
    }
    let writer = std::io::stdout
        .with_filter(|meta: &tracing::Metadata<'_>| meta.target() == PLUGIN_STDOUT)
        .or_else(std::io::stderr);
    let installed = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(writer)
        .try_init();
    JSON.store(installed.is_ok(), Ordering::Relaxed);
}

/// A host message, as a JSON line (without its `pulsewatch: ` prefix).
pub fn message(text: &str) {
    let text = text.strip_prefix("pulsewatch: ").unwrap_or(text);
    tracing::info!(target: "pulsewatch", "{text}");
}
