//! Supervision: each plugin of a run in a worker process of its own (the same binary,
//! re-executed), under OS limits its plugin cannot get around (see `os`), so that a worker that
//! blows up dies alone and is reported with the reason. The supervisor holds no plugin state:
//! it starts the workers, waits until every plugin is admitted, relays output and progress,
//! passes the stop signal on, and reports how each plugin ended.

mod os;
mod protocol;
mod worker;

pub use worker::serve;

use crate::runtime::{Failure, Outcome, OutputSink, RunOptions};
use crate::spec::PluginSpec;
use protocol::{Assignment, Order, Report};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

/// How long after a worker should have ended on its own (its grace period or wall-clock limit
/// is over, and it cancels its plugin then) the supervisor kills it.
const KILL_MARGIN: Duration = Duration::from_secs(1);

/// How often a worker's peak memory is read while it runs, for a worker that dies before it can
/// report its own.
const RSS_SAMPLES: Duration = Duration::from_millis(250);

/// The last bytes of a worker's stderr kept for the report of its death.
const STDERR_TAIL: usize = 2048;

/// The program a worker process runs: a binary whose `args` lead to [`serve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

impl WorkerCommand {
    /// This executable, with `args`.
    pub fn current_exe(
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> std::io::Result<Self> {
        Ok(WorkerCommand {
            program: std::env::current_exe()?,
            args: args.into_iter().map(Into::into).collect(),
        })
    }
}

/// Why a supervised run could not take place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuperviseError {
    /// A component cannot be run as a plugin; no plugin was started.
    #[error("{reason}")]
    Refused {
        /// The plugin.
        plugin: String,
        /// Why, naming it.
        reason: String,
    },
    /// A worker process could not be started; no plugin was started.
    #[error("cannot start a worker process ({}): {source}", program.display())]
    Spawn {
        /// The worker program.
        program: PathBuf,
        /// What the OS reported.
        source: std::io::Error,
    },
    /// The supervisor's own executor could not start.
    #[error("cannot start the async executor: {0}")]
    Executor(std::io::Error),
}

/// Runs plugins in worker processes.
#[derive(Debug, Clone)]
pub struct Supervisor {
    worker: WorkerCommand,
}

/// One worker process, as the supervisor holds it.
struct Worker {
    spec: PluginSpec,
    child: Child,
    orders: ChildStdin,
    reports: Lines<BufReader<ChildStdout>>,
    last_words: tokio::task::JoinHandle<String>,
    pid: String,
}

impl Worker {
    async fn order(&mut self, order: Order) {
        let mut line = Vec::new();
        // A worker that is gone cannot be told anything; its end is reported from its status.
        if protocol::send(&mut line, &order).is_ok() {
            let _ = self.orders.write_all(&line).await;
        }
    }

    /// The next report, or `None` once the worker's stdout closes (or says something that is
    /// not a report, which a worker never does).
    async fn next_report(&mut self) -> Option<Report> {
        let line = self.reports.next_line().await.ok()??;
        serde_json::from_str(&line).ok()
    }
}

/// How a worker's first report went.
enum Admission {
    Ready,
    Refused(String),
    /// It never became ready: how it ended instead.
    Ended(Outcome),
}

impl Supervisor {
    /// A supervisor starting workers with `worker`.
    pub fn new(worker: WorkerCommand) -> Self {
        Supervisor { worker }
    }

    /// Runs every plugin in a worker process of its own over the log at `db`, blocking the
    /// calling thread (which must not be inside an async executor), and returns how each ended,
    /// in the order given.
    ///
    /// No plugin starts until every one is admitted: a component that cannot be run as a plugin
    /// stops the run before it begins.
    pub fn run(
        &self,
        specs: &[PluginSpec],
        db: &Path,
        options: &RunOptions,
        sink: &Arc<dyn OutputSink>,
    ) -> Result<Vec<Outcome>, SuperviseError> {
        let executor = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SuperviseError::Executor)?;
        executor.block_on(self.run_async(specs, db, options, sink))
    }

    /// [`Supervisor::run`] on the caller's tokio executor.
    pub async fn run_async(
        &self,
        specs: &[PluginSpec],
        db: &Path,
        options: &RunOptions,
        sink: &Arc<dyn OutputSink>,
    ) -> Result<Vec<Outcome>, SuperviseError> {
        os::raise_open_files();
        let mut workers = Vec::with_capacity(specs.len());
        for spec in specs {
            workers.push(self.spawn(spec, db, options).await?);
        }
        let admissions = tokio::select! {
            admissions = futures::future::join_all(workers.iter_mut().map(admit)) => admissions,
            () = options.stop.stopped() => {
                // Stopped before anything ran: nothing to wait for.
                return Ok(specs.iter().map(|spec| cancelled_before_start(spec, options)).collect());
            }
        };
        if let Some((worker, reason)) = workers.iter().zip(&admissions).find_map(|(w, a)| match a {
            Admission::Refused(reason) => Some((w, reason)),
            _ => None,
        }) {
            return Err(SuperviseError::Refused {
                plugin: worker.spec.name.clone(),
                reason: reason.clone(),
            });
        }
        let runs = workers
            .into_iter()
            .zip(admissions)
            .map(|(worker, admission)| async move {
                match admission {
                    Admission::Ended(outcome) => outcome,
                    _ => supervise(worker, options, sink).await,
                }
            });
        Ok(futures::future::join_all(runs).await)
    }

    async fn spawn(
        &self,
        spec: &PluginSpec,
        db: &Path,
        options: &RunOptions,
    ) -> Result<Worker, SuperviseError> {
        let failed = |source| SuperviseError::Spawn {
            program: self.worker.program.clone(),
            source,
        };
        let mut child = Command::new(&self.worker.program)
            .args(&self.worker.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A terminal's Ctrl-C goes to the supervisor, which decides what each worker hears.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(failed)?;
        let (Some(mut orders), Some(reports), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(failed(std::io::Error::other("no pipes to the worker")));
        };
        let assignment = Assignment {
            spec: spec.clone(),
            db: db.to_path_buf(),
            follow: options.follow,
            grace: options.grace,
        };
        let mut line = Vec::new();
        protocol::send(&mut line, &assignment).map_err(failed)?;
        // A worker that died at once is reported when its first report does not come.
        let _ = orders.write_all(&line).await;
        let last_words = tokio::spawn(async move {
            let mut tail = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                tail.extend_from_slice(&buf[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..excess);
            }
            String::from_utf8_lossy(&tail).trim().to_owned()
        });
        Ok(Worker {
            spec: spec.clone(),
            pid: child
                .id()
                .map_or_else(|| "self".into(), |id| id.to_string()),
            child,
            orders,
            reports: BufReader::new(reports).lines(),
            last_words,
        })
    }
}

fn cancelled_before_start(spec: &PluginSpec, options: &RunOptions) -> Outcome {
    Outcome {
        plugin: spec.name.clone(),
        result: Err(Failure::Cancelled {
            grace: if options.stop.is_stopped_now() {
                Duration::ZERO
            } else {
                options.grace
            },
        }),
        detail: None,
        peak_rss_bytes: None,
    }
}

/// Waits for a worker's first report.
async fn admit(worker: &mut Worker) -> Admission {
    match worker.next_report().await {
        Some(Report::Ready) => Admission::Ready,
        Some(Report::Refused(reason)) => Admission::Refused(reason),
        Some(Report::Ended {
            result,
            detail,
            peak_rss_bytes,
        }) => Admission::Ended(Outcome {
            plugin: worker.spec.name.clone(),
            result,
            detail,
            peak_rss_bytes,
        }),
        _ => {
            let status = worker.child.wait().await;
            let last_words = (&mut worker.last_words).await.unwrap_or_default();
            Admission::Ended(Outcome {
                plugin: worker.spec.name.clone(),
                result: Err(died(&worker.spec, status, &last_words)),
                detail: None,
                peak_rss_bytes: None,
            })
        }
    }
}

/// Runs a ready worker to its end: starts it, relays its reports, passes stops on, and kills it
/// if it outlives its grace period or wall-clock limit by [`KILL_MARGIN`].
async fn supervise(
    mut worker: Worker,
    options: &RunOptions,
    sink: &Arc<dyn OutputSink>,
) -> Outcome {
    let name = worker.spec.name.clone();
    let cursor = options.progress.track(&name);
    let limits = worker.spec.limits;
    worker.order(Order::Start).await;
    let started = Instant::now();
    // When to kill the worker, and what to report then.
    let mut kill: Option<(Instant, Failure)> = limits
        .wall_clock
        .map(|limit| (started + limit + KILL_MARGIN, Failure::WallClock { limit }));
    let mut stop_passed = false;
    let mut killed: Option<Failure> = None;
    let mut ended = None;
    let mut peak = None;
    let mut samples = tokio::time::interval(RSS_SAMPLES);
    loop {
        let kill_at = kill.as_ref().map(|(at, _)| *at);
        tokio::select! {
            report = worker.next_report() => match report {
                Some(Report::Line { stream, text }) => sink.line(&name, stream, &text),
                Some(Report::Cursor(seq)) => cursor.store(seq, Ordering::Relaxed),
                Some(Report::Ended { result, detail, peak_rss_bytes }) => {
                    ended = Some((result, detail, peak_rss_bytes));
                }
                Some(Report::Ready | Report::Refused(_)) => {}
                None => break,
            },
            () = options.stop.stopped(), if !stop_passed => {
                stop_passed = true;
                worker.order(Order::Stop).await;
                let at = Instant::now() + options.grace + KILL_MARGIN;
                if kill_at.is_none_or(|k| at < k) {
                    kill = Some((at, Failure::Cancelled { grace: options.grace }));
                }
            }
            () = options.stop.stopped_now(), if killed.is_none() => {
                let _ = worker.child.start_kill();
                killed = Some(Failure::Cancelled { grace: Duration::ZERO });
            }
            () = tokio::time::sleep_until(kill_at.unwrap_or(started)), if kill_at.is_some() && killed.is_none() => {
                let _ = worker.child.start_kill();
                killed = kill.take().map(|(_, failure)| failure);
            }
            _ = samples.tick() => {
                peak = peak.max(os::peak_rss(&worker.pid));
            }
        }
    }
    let status = worker.child.wait().await;
    let last_words = (&mut worker.last_words).await.unwrap_or_default();
    match (ended, killed) {
        (Some((result, detail, peak_rss_bytes)), _) => Outcome {
            plugin: name,
            result,
            detail,
            peak_rss_bytes: peak_rss_bytes.max(peak),
        },
        (None, Some(failure)) => Outcome {
            plugin: name,
            result: Err(failure),
            detail: None,
            peak_rss_bytes: peak,
        },
        (None, None) => Outcome {
            result: Err(died(&worker.spec, status, &last_words)),
            plugin: name,
            detail: (!last_words.is_empty()).then_some(last_words),
            peak_rss_bytes: peak,
        },
    }
}

/// Why a worker ended without reporting: its host memory ran out (the OS limit did its job),
/// or it died some other way.
fn died(spec: &PluginSpec, status: std::io::Result<ExitStatus>, last_words: &str) -> Failure {
    use std::os::unix::process::ExitStatusExt;
    if last_words.contains("memory allocation of") {
        return Failure::HostMemory {
            limit: spec.limits.worker_data_bytes(),
        };
    }
    let last_line = last_words.lines().last().unwrap_or("no message");
    let how = match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
                Ok(signal) => format!("killed by {signal}"),
                Err(_) => format!("killed by signal {signal}"),
            },
            (None, None) => status.to_string(),
        },
        Err(e) => format!("cannot be waited for: {e}"),
    };
    Failure::Worker(format!(
        "{how} without reporting ({})",
        last_line.escape_debug()
    ))
}
