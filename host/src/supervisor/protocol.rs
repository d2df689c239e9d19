//! What the supervisor and a worker say to each other: one JSON value a line, orders on the
//! worker's stdin and reports on its stdout. The first line says which worker it is: one
//! plugin's, or the shared worker, whose lines after that each name the plugin they are for. The worker's stderr is left to the host's own last
//! words (a panic, a failed allocation), which the supervisor keeps for the failure report.

use crate::runtime::{Failure, Resources, Stream};
use crate::spec::PluginSpec;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// The worker's first line.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Hello {
    /// A worker for this one plugin.
    One(Box<Assignment>),
    /// The shared worker: [`ToShared`] lines follow.
    Shared,
}

/// The supervisor's lines to the shared worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToShared {
    /// Run a plugin, called `id` from now on (ids are not reused).
    Assign {
        id: u64,
        assignment: Box<Assignment>,
    },
    /// An order for plugin `id`.
    Order { id: u64, order: Order },
    /// The log at this path changed (the supervisor's watch saw a write).
    Changed(PathBuf),
}

/// A report of the shared worker's, for plugin `id`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Tagged<T> {
    pub(crate) id: u64,
    pub(crate) message: T,
}

/// What to run, on what.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Assignment {
    pub(crate) spec: PluginSpec,
    /// The event log, opened read-only.
    pub(crate) db: PathBuf,
    pub(crate) follow: bool,
    pub(crate) grace: Duration,
    /// The compile cache to take the component from and keep it in, if any.
    pub(crate) cache_dir: Option<PathBuf>,
    /// Only compile the component into the cache (under the compile budget) and report.
    pub(crate) compile_only: bool,
    /// Report each HTTP request the plugin makes as a notice.
    pub(crate) log_http: bool,
    /// The supervisor watches the log and says [`Order::Changed`] on every change: a worker
    /// that cannot watch it itself relies on that.
    #[serde(default)]
    pub(crate) notices: bool,
}

/// The supervisor's later lines. The end of the worker's stdin means the supervisor is gone:
/// the worker stops at once.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Order {
    /// Every plugin of the run is ready: start.
    Start,
    /// Finish within the grace period.
    Stop,
    /// Stop at once.
    StopNow,
    /// The log changed (the supervisor's watch saw a write).
    Changed,
}

/// The worker's lines.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// The plugin is admitted and linked (compiled now, or taken from the cache).
    Ready { compiled: bool },
    /// The component cannot be run as a plugin: why, naming it.
    Refused(String),
    /// A line the plugin printed, already made safe to show.
    Line { stream: Stream, text: String },
    /// Something the worker says about the plugin's run (not the plugin's output), naming it.
    Notice(String),
    /// Where the plugin is: its cursor, once it has one, and what it holds of its limits.
    Progress {
        cursor: Option<u64>,
        resources: Resources,
    },
    /// The plugin's run is over (or never began, if this comes instead of `Ready`).
    Ended {
        result: Result<(), Failure>,
        detail: Option<String>,
        peak_rss_bytes: Option<u64>,
    },
}

/// Writes `message` as one line and flushes it.
pub(crate) fn send(out: &mut impl Write, message: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}
