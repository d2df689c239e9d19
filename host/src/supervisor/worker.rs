//! One worker process: started with an assignment, admitted, run to its end, and reported
//! on, with its death explained when it dies without reporting.

use super::os;
use super::protocol::{self, Assignment, Order, Report};
use super::{RunContext, SuperviseError, WorkerCommand};
use crate::runtime::{Failure, Outcome, OutputSink, StopSignal};
use crate::spec::PluginSpec;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

/// How long after a worker should have ended on its own (its grace period or wall-clock limit
/// is over, and it cancels its plugin then) the supervisor kills it.
const KILL_MARGIN: Duration = Duration::from_secs(1);

/// How often a worker's memory and CPU time are read while it runs.
const SAMPLES: Duration = Duration::from_secs(60);

/// The last bytes of a worker's stderr kept for the report of its death.
const STDERR_TAIL: usize = 2048;

/// One worker process, as the supervisor holds it.
pub(super) struct Worker {
    pub(super) spec: PluginSpec,
    child: Child,
    orders: ChildStdin,
    reports: Lines<BufReader<ChildStdout>>,
    last_words: tokio::task::JoinHandle<String>,
    pid: String,
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
    /// its component into the run's cache.
    pub(super) async fn spawn(
        command: &WorkerCommand,
        spec: &PluginSpec,
        run: &RunContext<'_>,
        compile_only: bool,
    ) -> Result<Worker, SuperviseError> {
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
        let (Some(mut orders), Some(reports), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(failed(std::io::Error::other("no pipes to the worker")));
        };
        let assignment = Assignment {
            spec: spec.clone(),
            db: run.input(spec).0,
            notices: run.input(spec).1.is_some(),
            follow: run.options.follow,
            grace: run.options.grace,
            cache_dir: run.cache.map(Path::to_path_buf),
            compile_only,
            log_http: run.options.log_http,
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
                let status = self.child.wait().await;
                let last_words = (&mut self.last_words).await.unwrap_or_default();
                Admission::Ended(Outcome::failed(
                    &self.spec.name,
                    died(&self.spec, status, &last_words),
                ))
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
        mut appended: Option<tokio::sync::watch::Receiver<u64>>,
    ) -> Outcome {
        let name = self.spec.name.clone();
        let limits = self.spec.limits;
        self.order(Order::Start).await;
        let started = Instant::now();
        // When to kill the worker, and what to report then.
        let mut kill: Option<(Instant, Failure)> = limits
            .wall_clock
            .map(|limit| (started + limit + KILL_MARGIN, Failure::WallClock { limit }));
        let mut stop_passed = false;
        let mut killed: Option<Failure> = None;
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
                    let _ = self.child.start_kill();
                    killed = Some(Failure::Cancelled { grace: Duration::ZERO });
                }
                () = tokio::time::sleep_until(kill_at.unwrap_or(started)), if kill_at.is_some() && killed.is_none() => {
                    let _ = self.child.start_kill();
                    killed = kill.take().map(|(_, failure)| failure);
                }
                Some(Ok(())) = async { Some(appended.as_mut()?.changed().await) }, if appended.is_some() => {
                    self.order(Order::Changed).await;
                }
                _ = samples.tick() => {
                    if let Some(sample) = os::sample(&self.pid) {
                        peak = peak.max(Some(sample.peak_rss));
                        watch.sampled(sample.cpu_ms, sample.rss);
                    }
                }
            }
        }
        let status = self.child.wait().await;
        let last_words = (&mut self.last_words).await.unwrap_or_default();
        match (ended, killed) {
            (Some((result, detail, peak_rss_bytes)), _) => Outcome {
                plugin: name,
                result,
                detail,
                peak_rss_bytes: peak_rss_bytes.max(peak),
                ..Outcome::default()
            },
            (None, Some(failure)) => Outcome {
                peak_rss_bytes: peak,
                ..Outcome::failed(name, failure)
            },
            (None, None) => Outcome {
                detail: (!last_words.is_empty()).then_some(last_words.clone()),
                peak_rss_bytes: peak,
                ..Outcome::failed(name, died(&self.spec, status, &last_words))
            },
        }
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
