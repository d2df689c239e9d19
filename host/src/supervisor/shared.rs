//! The shared worker, as the supervisor holds it: one process for every plugin of the run whose
//! isolation is [`Isolation::Shared`](crate::Isolation::Shared), started with the first of them
//! and again after it dies. Each plugin is a [`Slot`] in it: its orders go tagged with its id,
//! and its reports come back on a channel of its own.

use super::RunContext;
use super::protocol::{self, Assignment, Hello, Order, Report, Tagged, ToShared};
use super::worker::{Spawned, describe_exit};
use super::{SuperviseError, WorkerCommand};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, watch};

/// The plugins' report channels, by id; `None` once the process's output has ended, so that a
/// plugin assigned then is not routed to a map nobody reads.
type Routes = Mutex<Option<HashMap<u64, mpsc::UnboundedSender<Report>>>>;

/// The shared worker process.
pub(super) struct SharedWorker {
    orders: tokio::sync::Mutex<ChildStdin>,
    routes: Arc<Routes>,
    next_id: AtomicU64,
    pid: Option<u32>,
    /// How the process ended, once it has: what each of its plugins that had not ended reports.
    death: watch::Receiver<Option<String>>,
}

/// Where a run keeps its shared worker, started when the first shared plugin starts.
#[derive(Default)]
pub(crate) struct SharedSlot(tokio::sync::Mutex<Option<Arc<SharedWorker>>>);

impl SharedSlot {
    /// The run's shared worker: the one that runs, or a new one.
    pub(super) async fn get(
        &self,
        command: &WorkerCommand,
        run: &RunContext<'_>,
    ) -> Result<Arc<SharedWorker>, SuperviseError> {
        let mut held = self.0.lock().await;
        if let Some(worker) = held.as_ref().filter(|w| w.is_running()) {
            return Ok(Arc::clone(worker));
        }
        let worker = SharedWorker::spawn(command, run).await?;
        *held = Some(Arc::clone(&worker));
        Ok(worker)
    }
}

impl SharedWorker {
    async fn spawn(
        command: &WorkerCommand,
        run: &RunContext<'_>,
    ) -> Result<Arc<SharedWorker>, SuperviseError> {
        let Spawned {
            mut child,
            mut orders,
            reports,
            stderr,
        } = Spawned::new(command)?;
        let mut hello = Vec::new();
        // A worker that died at once is reported by its plugins' channels closing.
        if protocol::send(&mut hello, &Hello::Shared).is_ok() {
            let _ = orders.write_all(&hello).await;
        }
        let routes: Arc<Routes> = Arc::new(Mutex::new(Some(HashMap::new())));
        let pid = child.id();
        let (died, death) = watch::channel(None);
        let last_words = super::worker::last_words(stderr);
        let routing = Arc::clone(&routes);
        tokio::spawn(async move {
            let mut lines = BufReader::new(reports).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(Tagged { id, message }) = serde_json::from_str::<Tagged<Report>>(&line)
                else {
                    continue;
                };
                let routes = routing.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(route) = routes.as_ref().and_then(|r| r.get(&id)) {
                    let _ = route.send(message);
                }
            }
            // Gone: each plugin that had not ended learns it when its channel closes.
            *routing.lock().unwrap_or_else(|e| e.into_inner()) = None;
            let status = child.wait().await;
            let last_words = last_words.await.unwrap_or_default();
            let last_line = last_words.lines().last().unwrap_or("no message");
            let _ = died.send(Some(format!(
                "{} without reporting ({}); it was the shared worker, which every plugin with \
                 isolation \"shared\" lost with it",
                describe_exit(status),
                last_line.escape_debug()
            )));
        });
        let worker = Arc::new(SharedWorker {
            orders: tokio::sync::Mutex::new(orders),
            routes,
            next_id: AtomicU64::new(0),
            pid,
            death,
        });
        // The supervisor's watch of each log, passed on once for all the plugins reading it.
        for (path, appended) in &run.appended {
            let (path, mut appended) = (path.clone(), appended.clone());
            let weak = Arc::downgrade(&worker);
            tokio::spawn(async move {
                while appended.changed().await.is_ok() {
                    let Some(worker) = weak.upgrade() else { break };
                    worker.send(&ToShared::Changed(path.clone())).await;
                }
            });
        }
        Ok(worker)
    }

    async fn send(&self, message: &ToShared) {
        let mut line = Vec::new();
        // A worker that is gone cannot be told anything; its plugins learn it from their
        // channels.
        if protocol::send(&mut line, message).is_ok() {
            let _ = self.orders.lock().await.write_all(&line).await;
        }
    }

    /// Whether its output goes on: it runs, or has only just died.
    fn is_running(&self) -> bool {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Gives the worker a plugin to run.
    pub(super) async fn assign(self: &Arc<Self>, assignment: Assignment) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (route, reports) = mpsc::unbounded_channel();
        // Not routed once the worker is gone: the slot's channel is closed from the start.
        if let Some(routes) = self
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            routes.insert(id, route);
        }
        let assignment = Box::new(assignment);
        self.send(&ToShared::Assign { id, assignment }).await;
        Slot {
            worker: Arc::clone(self),
            id,
            reports,
        }
    }
}

/// One plugin in the shared worker.
pub(super) struct Slot {
    worker: Arc<SharedWorker>,
    id: u64,
    reports: mpsc::UnboundedReceiver<Report>,
}

impl Slot {
    /// Passes `order` on to the plugin.
    pub(super) async fn order(&self, order: Order) {
        let id = self.id;
        self.worker.send(&ToShared::Order { id, order }).await;
    }

    /// The plugin's next report; `None` once the shared worker has died.
    pub(super) async fn next_report(&mut self) -> Option<Report> {
        self.reports.recv().await
    }

    /// Kills the shared worker: the plugin did not end when cancelled, so the host's code
    /// serving it is stuck, and only a new process frees its state for its restart. Every
    /// plugin of the worker restarts by its policy.
    pub(super) fn kill_worker(&self) {
        // Only while its output goes on: the process is then not yet reaped, and its pid is
        // still its own.
        if !self.worker.is_running() {
            return;
        }
        if let Some(pid) = self.worker.pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Why the plugin ended without reporting: the shared worker died.
    pub(super) async fn death(&self) -> String {
        let mut death = self.worker.death.clone();
        match death.wait_for(Option::is_some).await {
            Ok(said) => said.clone().unwrap_or_default(),
            Err(_) => "its shared worker ended".into(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut routes = self.worker.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(routes) = routes.as_mut() {
            routes.remove(&self.id);
        }
    }
}
