//! One plugin's worker: its own process, or its slot in the shared worker ([`super::shared`]);
//! started with an assignment, admitted, run to its end, and reported on, with its death
//! explained when it dies without reporting.

use super::os;
use super::protocol::{self, Assignment, Hello, Order, Report};
use super::shared::Slot;
use super::{RunContext, SuperviseError, WorkerCommand};
use crate::runtime::{Failure, Outcome, OutputSink, StopSignal};
use crate::spec::{Isolation, PluginSpec};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

/// How long after a worker should have ended on its own (its grace period or wall-clock limit
/// is over, and it cancels its plugin then) the supervisor kills it.
const KILL_MARGIN: Duration = Duration::from_secs(1);

/// How often a worker's memory and CPU time are read while it runs.
const SAMPLES: Duration = Duration::from_secs(60);

/// The last bytes of a worker's stderr kept for the report of its death.
const STDERR_TAIL: usize = 2048;

/// One plugin's worker, as the supervisor holds it.
pub(super) struct Worker {
    pub(super) spec: PluginSpec,
    link: Link,
}

enum Link {
    Own(Box<Process>),
    Shared(Slot),
}

/// A worker process of the plugin's own.
struct Process {
    child: Child,
    orders: ChildStdin,
    reports: Lines<BufReader<ChildStdout>>,
    last_words: tokio::task::JoinHandle<String>,
    pid: String,
}

/// A worker process just started, its pipes taken.
pub(super) struct Spawned {
    pub(super) child: Child,
    pub(super) orders: ChildStdin,
    pub(super) reports: ChildStdout,
    pub(super) stderr: ChildStderr,
}

impl Spawned {
    pub(super) fn new(command: &WorkerCommand) -> Result<Spawned, SuperviseError> {
        let failed = |source| SuperviseError::Spawn {
            program: command.program.clone(),
            source,
        };
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A terminal's Ctrl-C goes to the supervisor, which decides what each worker hears.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(failed)?;
        match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(orders), Some(reports), Some(stderr)) => Ok(Spawned {
                child,
                orders,
                reports,
                stderr,
            }),
            _ => Err(failed(std::io::Error::other("no pipes to the worker"))),
        }
    }
}

/// The last [`STDERR_TAIL`] bytes a worker writes on stderr, once it closes it.
pub(super) fn last_words(mut stderr: ChildStderr) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut tail = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buf).await {
            tail.extend_from_slice(&buf[..n]);
            let excess = tail.len().saturating_sub(STDERR_TAIL);
            tail.drain(..excess);
        }
        String::from_utf8_lossy(&tail).trim().to_owned()
    })
}

/// How a worker's first report went.
pub(super) enum Admission {
    Ready {
        compiled: bool,
    },
    Refused(String),
    /// It never became ready: how it ended instead.
    Ended(Outcome),
}

/// What the supervisor learns of a running worker, for the run's status.
pub(super) trait Watch: Send + Sync {
    /// Its cursor and what it holds of its limits moved.
    fn progress(&self, report: &Report);
    /// Its CPU time and resident memory, sampled.
    fn sampled(&self, cpu_ms: u64, rss_bytes: u64);
}

impl Worker {
    /// Starts a worker for `spec` and gives it its assignment: to run it, or only to compile
    /// its component into the run's cache. A shared plugin that runs joins the run's shared
    /// worker; compiling is always done in a process of its own, under the compile budget.
    pub(super) async fn spawn(
        command: &WorkerCommand,
        spec: &PluginSpec,
        run: &RunContext<'_>,
        compile_only: bool,
    ) -> Result<Worker, SuperviseError> {
        let (db, appended) = run.input(spec);
        let assignment = Assignment {
            spec: spec.clone(),
            db,
            notices: appended.is_some(),
            follow: run.options.follow,
            grace: run.options.grace,
            cache_dir: run.cache.map(Path::to_path_buf),
            compile_only,
            log_http: run.options.log_http,
        };
        if spec.isolation == Isolation::Shared && !compile_only {
            let shared = run.shared.get(command, run).await?;
            return Ok(Worker {
                spec: spec.clone(),
                link: Link::Shared(shared.assign(assignment).await),
            });
        }
        let Spawned {
            child,
            mut orders,
            reports,
            stderr,
        } = Spawned::new(command)?;
        let mut line = Vec::new();
        // A worker that died at once is reported when its first report does not come.
        if protocol::send(&mut line, &Hello::One(Box::new(assignment))).is_ok() {
            let _ = orders.write_all(&line).await;
        }
        Ok(Worker {
            spec: spec.clone(),
            link: Link::Own(Box::new(Process {
                pid: child
                    .id()
                    .map_or_else(|| "self".into(), |id| id.to_string()),
                child,
                orders,
                reports: BufReader::new(reports).lines(),
                last_words: last_words(stderr),
            })),
        })
    }

    async fn order(&mut self, order: Order) {
        match &mut self.link {
            Link::Own(process) => {
                let mut line = Vec::new();
                // A worker that is gone cannot be told anything; its end is reported from its
                // status.
                if protocol::send(&mut line, &order).is_ok() {
                    let _ = process.orders.write_all(&line).await;
                }
            }
            Link::Shared(slot) => slot.order(order).await,
        }
    }

    /// The next report, or `None` once the worker's stdout closes (or says something that is
    /// not a report, which a worker never does).
    async fn next_report(&mut self) -> Option<Report> {
        match &mut self.link {
            Link::Own(process) => {
                let line = process.reports.next_line().await.ok()??;
                serde_json::from_str(&line).ok()
            }
            Link::Shared(slot) => slot.next_report().await,
        }
    }

    /// Ends the plugin at once: kills its process, or tells the shared worker to cancel it.
    async fn kill(&mut self) {
        match &mut self.link {
            Link::Own(process) => drop(process.child.start_kill()),
            Link::Shared(slot) => slot.order(Order::StopNow).await,
        }
    }

    /// Why the worker ended without reporting, once it has ended, and its last words.
    async fn death(&mut self) -> (Failure, String) {
        match &mut self.link {
            Link::Own(process) => {
                let status = process.child.wait().await;
                let last_words = (&mut process.last_words).await.unwrap_or_default();
                (died(&self.spec, status, &last_words), last_words)
            }
            Link::Shared(slot) => (Failure::Worker(slot.death().await), String::new()),
        }
    }

    /// Waits for the worker's first report.
    pub(super) async fn admit(&mut self) -> Admission {
        match self.next_report().await {
            Some(Report::Ready { compiled }) => Admission::Ready { compiled },
            Some(Report::Refused(reason)) => Admission::Refused(reason),
            Some(Report::Ended {
                result,
                detail,
                peak_rss_bytes,
            }) => Admission::Ended(Outcome {
                plugin: self.spec.name.clone(),
                result,
                detail,
                peak_rss_bytes,
                ..Outcome::default()
            }),
            _ => {
                let (failure, _) = self.death().await;
                Admission::Ended(Outcome::failed(&self.spec.name, failure))
            }
        }
    }

    /// Runs a ready worker to its end: starts it, relays its reports, passes stops on, and
    /// kills it if it outlives its grace period or wall-clock limit by [`KILL_MARGIN`].
    pub(super) async fn run(
        mut self,
        stop: &StopSignal,
        grace: Duration,
        sink: &Arc<dyn OutputSink>,
        watch: &dyn Watch,
        appended: Option<tokio::sync::watch::Receiver<u64>>,
    ) -> Outcome {
        let name = self.spec.name.clone();
        let limits = self.spec.limits;
        let own = matches!(self.link, Link::Own(_));
        // The shared worker is told of changes once for all its plugins.
        let mut appended = appended.filter(|_| own);
        self.order(Order::Start).await;
        let started = Instant::now();
        // When to kill the worker, and what to report then.
        let mut kill: Option<(Instant, Failure)> = limits
            .wall_clock
            .map(|limit| (started + limit + KILL_MARGIN, Failure::WallClock { limit }));
        let mut stop_passed = false;
        let mut killed: Option<Failure> = None;
        // A plugin of the shared worker that does not end when cancelled is given up on then,
        // and the worker killed.
        let mut given_up_at: Option<Instant> = None;
        let mut ended = None;
        let mut peak = None;
        let mut samples = tokio::time::interval(SAMPLES);
        loop {
            let kill_at = kill.as_ref().map(|(at, _)| *at);
            tokio::select! {
                report = self.next_report() => match report {
                    Some(Report::Line { stream, text }) => sink.line(&name, stream, &text),
                    Some(Report::Notice(text)) => sink.notice(&text),
                    Some(report @ Report::Progress { .. }) => watch.progress(&report),
                    Some(Report::Ended { result, detail, peak_rss_bytes }) => {
                        ended = Some((result, detail, peak_rss_bytes));
                        // A process of its own is waited for to the end of its output; in the
                        // shared worker, the plugin's last report is its end.
                        if !own {
                            break;
                        }
                    }
                    Some(Report::Ready { .. } | Report::Refused(_)) => {}
                    None => break,
                },
                () = stop.stopped(), if !stop_passed => {
                    stop_passed = true;
                    self.order(Order::Stop).await;
                    let at = Instant::now() + grace + KILL_MARGIN;
                    if kill_at.is_none_or(|k| at < k) {
                        kill = Some((at, Failure::Cancelled { grace }));
                    }
                }
                () = stop.stopped_now(), if killed.is_none() => {
                    self.kill().await;
                    killed = Some(Failure::Cancelled { grace: Duration::ZERO });
                    given_up_at = (!own).then(|| Instant::now() + KILL_MARGIN);
                }
                () = tokio::time::sleep_until(kill_at.unwrap_or(started)), if kill_at.is_some() && killed.is_none() => {
                    self.kill().await;
                    killed = kill.take().map(|(_, failure)| failure);
                    given_up_at = (!own).then(|| Instant::now() + KILL_MARGIN);
                }
                () = tokio::time::sleep_until(given_up_at.unwrap_or(started)), if given_up_at.is_some() => {
                    if let Link::Shared(slot) = &self.link {
                        slot.kill_worker();
                    }
                    break;
                }
                Some(Ok(())) = async { Some(appended.as_mut()?.changed().await) }, if appended.is_some() => {
                    self.order(Order::Changed).await;
                }
                _ = samples.tick(), if own => {
                    if let Link::Own(process) = &self.link
                        && let Some(sample) = os::sample(&process.pid)
                    {
                        peak = peak.max(Some(sample.peak_rss));
                        watch.sampled(sample.cpu_ms, sample.rss);
                    }
                }
            }
        }
        match (ended, killed) {
            (Some((result, detail, peak_rss_bytes)), _) => {
                self.reap().await;
                Outcome {
                    plugin: name,
                    result,
                    detail,
                    peak_rss_bytes: peak_rss_bytes.max(peak),
                    ..Outcome::default()
                }
            }
            (None, Some(failure)) => {
                self.reap().await;
                Outcome {
                    peak_rss_bytes: peak,
                    ..Outcome::failed(name, failure)
                }
            }
            (None, None) => {
                let (failure, last_words) = self.death().await;
                Outcome {
                    detail: (!last_words.is_empty()).then_some(last_words),
                    peak_rss_bytes: peak,
                    ..Outcome::failed(name, failure)
                }
            }
        }
    }

    /// Waits for a process of the plugin's own to exit.
    async fn reap(&mut self) {
        if let Link::Own(process) = &mut self.link {
            let _ = process.child.wait().await;
        }
    }
}

/// Why a worker ended without reporting: its host memory ran out (the OS limit did its job),
/// or it died some other way.
fn died(spec: &PluginSpec, status: std::io::Result<ExitStatus>, last_words: &str) -> Failure {
    if last_words.contains("memory allocation of") {
        return Failure::HostMemory {
            limit: spec.limits.worker_data_bytes(),
        };
    }
    let last_line = last_words.lines().last().unwrap_or("no message");
    let how = describe_exit(status);
    Failure::Worker(format!(
        "{how} without reporting ({})",
        last_line.escape_debug()
    ))
}

/// How a worker process ended, in words: "exited with status 3", "killed by SIGSEGV".
pub(super) fn describe_exit(status: std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
                Ok(signal) => format!("killed by {signal}"),
                Err(_) => format!("killed by signal {signal}"),
            },
            (None, None) => status.to_string(),
        },
        Err(e) => format!("cannot be waited for: {e}"),
    }
}
