//! How a `Log` learns that the file changed: a count of changes, bumped at once by appends made
//! through it and, on Linux, by inotify when any process writes the file. Waiters (threads in
//! [`crate::Log::wait`], tasks awaiting [`crate::Log::appended`]) wake on each bump, and a reader
//! that knows the count has not moved since it last read the head can answer a caught-up poll
//! without a read transaction.
//!
//! A missed or late notification only costs latency: waiters also recheck the file every
//! [`CROSS_PROCESS_RECHECK`] (every [`WATCHED_RECHECK`] while a watch is in place), and a stale
//! "caught up" answer delivers nothing, it consumes nothing.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// How often a waiter looks at the file for commits it was not told of, where no watch tells
/// it of other processes' commits.
pub const CROSS_PROCESS_RECHECK: Duration = Duration::from_millis(20);

/// How often a waiter looks at the file anyway while a watch is in place: a safety net, rare
/// enough that a thousand idle followers wake about 17 times a second, each answered from the
/// head its handle keeps.
pub const WATCHED_RECHECK: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Count {
    value: u64,
    /// Tasks to wake on the next change. No async runtime is assumed: any executor's wakers.
    wakers: Vec<Waker>,
}

/// The change count of one `Log` and everything waiting on it.
#[derive(Default)]
pub(crate) struct Changes {
    count: Mutex<Count>,
    cond: Condvar,
    /// Whether every change to the file bumps the count (an inotify watch is in place, or no
    /// other process can write it); if not, the count says nothing about other processes.
    complete: std::sync::atomic::AtomicBool,
    /// Whether another process's watch tells this count of changes ([`crate::Log::changed`]).
    pub(crate) told: std::sync::atomic::AtomicBool,
    /// The write end of a pipe the watching thread also polls: it closes with this, and the
    /// thread ends at once, without waking up now and then to look.
    #[cfg(target_os = "linux")]
    watch_end: Mutex<Option<std::io::PipeWriter>>,
}

impl Changes {
    fn lock(&self) -> MutexGuard<'_, Count> {
        self.count.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current count.
    pub(crate) fn count(&self) -> u64 {
        self.lock().value
    }

    /// Whether the count moves with every change to the file, so that an unchanged count means
    /// an unchanged file.
    pub(crate) fn is_complete(&self) -> bool {
        self.complete.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set_complete(&self, complete: bool) {
        self.complete
            .store(complete, std::sync::atomic::Ordering::Release);
    }

    /// How long a waiter may sleep before it must read the head again.
    pub(crate) fn recheck(&self) -> Duration {
        if self.is_complete() {
            WATCHED_RECHECK
        } else {
            CROSS_PROCESS_RECHECK
        }
    }

    /// Gives up on completeness, and wakes every waiter so that it shortens its sleep.
    #[cfg(target_os = "linux")]
    fn lost_watch(&self) {
        self.set_complete(false);
        self.bump();
    }

    /// Records a change and wakes everyone waiting.
    pub(crate) fn bump(&self) {
        let mut count = self.lock();
        count.value = count.value.wrapping_add(1);
        let wakers = std::mem::take(&mut count.wakers);
        drop(count);
        self.cond.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Blocks until the count moves past `seen` or `timeout` passes.
    pub(crate) fn wait(&self, seen: u64, timeout: Duration) {
        let count = self.lock();
        if count.value != seen {
            return;
        }
        drop(
            self.cond
                .wait_timeout(count, timeout)
                .unwrap_or_else(|e| e.into_inner()),
        );
    }

    /// A future that completes once the count moves past `seen`.
    pub(crate) fn after(&self, seen: u64) -> AppendedSince<'_> {
        AppendedSince {
            changes: self,
            seen,
        }
    }
}

/// A future that completes with the new change count once the log changes after the count it
/// was created with; see [`crate::Log::appended`].
#[must_use = "futures do nothing unless awaited"]
pub struct AppendedSince<'a> {
    changes: &'a Changes,
    seen: u64,
}

impl Future for AppendedSince<'_> {
    type Output = u64;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let mut count = self.changes.lock();
        if count.value != self.seen {
            return Poll::Ready(count.value);
        }
        // One entry per waiting task: a task polled again replaces its own waker.
        match count.wakers.iter_mut().find(|w| w.will_wake(cx.waker())) {
            Some(waker) => waker.clone_from(cx.waker()),
            None => count.wakers.push(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Bumps `changes` whenever any process writes the file at `path`, for as long as `changes`
/// is alive; marks it complete once the watch is in place. Where inotify is not available the
/// count stays incomplete and readers fall back to read transactions and rechecks.
///
/// Under WASI the count is complete from the start: WASI has no file locks, so a file is read
/// there only when no other process may write it (a snapshot, for the provider component), and
/// its own appends are all the changes it sees.
pub(crate) fn watch(path: &Path, changes: &Arc<Changes>) {
    #[cfg(target_os = "linux")]
    if inotify_watch(path, changes).is_ok() {
        changes.set_complete(true);
    }
    #[cfg(target_os = "wasi")]
    changes.set_complete(true);
    #[cfg(not(target_os = "linux"))]
    let _ = path;
}

#[cfg(target_os = "linux")]
fn inotify_watch(path: &Path, strong: &Arc<Changes>) -> std::io::Result<()> {
    use inotify::{Inotify, WatchMask};
    use nix::errno::Errno;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;

    let mut inotify = Inotify::init()?;
    inotify.watches().add(path, WatchMask::MODIFY)?;
    // Closed when the log's `Changes` drop: the thread then sees the hang-up and ends.
    let (closed, watch_end) = std::io::pipe()?;
    *strong.watch_end.lock().unwrap_or_else(|e| e.into_inner()) = Some(watch_end);
    let changes = Arc::downgrade(strong);
    std::thread::Builder::new()
        .name("pulsewatch-log-watch".into())
        .spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                let mut fds = [
                    PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
                    PollFd::new(closed.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    // A signal delivered to this thread (a supervisor's children ending): not
                    // the watch's end.
                    Err(Errno::EINTR) => continue,
                    // Without the watch, nobody may trust the count for other processes' writes.
                    Err(_) => {
                        if let Some(changes) = changes.upgrade() {
                            changes.lost_watch();
                        }
                        return;
                    }
                }
                let Some(changes) = changes.upgrade() else {
                    return;
                };
                match inotify.read_events(&mut buffer) {
                    Ok(mut events) => {
                        if events.next().is_some() {
                            changes.bump();
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        changes.lost_watch();
                        return;
                    }
                }
            }
        })?;
    Ok(())
}
