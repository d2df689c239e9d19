//! The signals a run is given from outside: to stop (gracefully, then at once), and, for a
//! supervisor that can read its plugins again, to reload. Either can be given from any thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Stop levels; 0, the default, is running.
const GRACEFUL: u8 = 1;
const NOW: u8 = 2;

#[derive(Debug, Default)]
struct StopState {
    level: AtomicU8,
    changed: Notify,
    /// Signals made by [`StopSignal::child`]: each is raised with this one.
    children: std::sync::Mutex<Vec<std::sync::Weak<StopState>>>,
}

/// Stops the plugins of a run. [`StopSignal::stop`] asks them to finish: `poll` returns
/// nothing more and `wait` returns `closed`, so a plugin commits its cursor and returns; one
/// still running when the grace period ends is cancelled wherever it is. [`StopSignal::stop_now`]
/// cancels them at once. Cloning shares the signal; any thread may give it.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<StopState>);

impl StopSignal {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks plugins to finish within the grace period.
    pub fn stop(&self) {
        self.raise(GRACEFUL);
    }

    /// Cancels plugins at once.
    pub fn stop_now(&self) {
        self.raise(NOW);
    }

    /// A signal of its own that is also given whenever this one is: one plugin can be stopped
    /// alone, and a stop of the whole run reaches it, whenever it was made.
    pub fn child(&self) -> StopSignal {
        let child = StopSignal::new();
        let mut children = self.children();
        children.retain(|c| c.strong_count() > 0);
        children.push(Arc::downgrade(&child.0));
        // Read under the lock `raise` passes a level on under: a level raised before is seen
        // here, one raised after reaches the child through the list.
        child.raise(self.0.level.load(Ordering::SeqCst));
        drop(children);
        child
    }

    fn children(&self) -> std::sync::MutexGuard<'_, Vec<std::sync::Weak<StopState>>> {
        self.0.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn raise(&self, level: u8) {
        self.0.level.fetch_max(level, Ordering::SeqCst);
        self.0.changed.notify_waiters();
        for child in self.children().iter().filter_map(std::sync::Weak::upgrade) {
            StopSignal(child).raise(level);
        }
    }

    /// Whether plugins were asked to stop (either way).
    pub fn is_stopped(&self) -> bool {
        self.0.level.load(Ordering::SeqCst) >= GRACEFUL
    }

    /// Whether plugins were asked to stop at once.
    pub fn is_stopped_now(&self) -> bool {
        self.0.level.load(Ordering::SeqCst) >= NOW
    }

    async fn reached(&self, level: u8) {
        loop {
            let changed = self.0.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before the check, so a signal given in between is not missed.
            changed.as_mut().enable();
            if self.0.level.load(Ordering::SeqCst) >= level {
                return;
            }
            changed.await;
        }
    }

    /// Completes once [`StopSignal::stop`] (or `stop_now`) is given.
    pub async fn stopped(&self) {
        self.reached(GRACEFUL).await;
    }

    /// Completes once [`StopSignal::stop_now`] is given.
    pub async fn stopped_now(&self) {
        self.reached(NOW).await;
    }

    /// Completes when plugins must be cancelled: `grace` after [`StopSignal::stop`], or at
    /// [`StopSignal::stop_now`]. Returns the grace they had.
    pub(crate) async fn cancelled(&self, grace: Duration) -> Duration {
        self.stopped().await;
        tokio::select! {
            () = tokio::time::sleep(grace) => grace,
            () = self.stopped_now() => Duration::ZERO,
        }
    }
}

/// Asks a supervisor to read its plugins again (SIGHUP, for `pulsewatch run`). Cloning shares
/// the signal; any thread may give it; requests given while one is being handled make one more.
#[derive(Debug, Clone, Default)]
pub struct ReloadSignal(Arc<ReloadState>);

#[derive(Debug, Default)]
struct ReloadState {
    pending: std::sync::atomic::AtomicBool,
    requested: Notify,
}

impl ReloadSignal {
    /// Asks for a reload.
    pub fn request(&self) {
        self.0.pending.store(true, Ordering::SeqCst);
        self.0.requested.notify_waiters();
    }

    /// Completes when a reload is asked for, and takes the request.
    pub async fn requested(&self) {
        loop {
            let requested = self.0.requested.notified();
            let mut requested = std::pin::pin!(requested);
            requested.as_mut().enable();
            if self.0.pending.swap(false, Ordering::SeqCst) {
                return;
            }
            requested.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StopSignal;

    #[test]
    fn a_child_stops_with_its_parent_whenever_made_and_alone_when_told() {
        let run = StopSignal::new();
        let early = run.child();
        early.stop();
        assert!(
            early.is_stopped() && !run.is_stopped(),
            "a child stops alone"
        );

        let running = run.child();
        run.stop();
        assert!(running.is_stopped() && !running.is_stopped_now());
        let late = run.child();
        assert!(late.is_stopped() && !late.is_stopped_now());
        run.stop_now();
        assert!(running.is_stopped_now() && late.is_stopped_now() && early.is_stopped_now());
        assert!(run.child().is_stopped_now());
    }

    #[tokio::test]
    async fn a_childs_waiters_wake_when_the_parent_is_given() {
        let run = StopSignal::new();
        let child = run.child();
        let waiter = tokio::spawn(async move { child.stopped_now().await });
        tokio::task::yield_now().await;
        run.stop_now();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
