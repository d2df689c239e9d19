//! The host side of `pulse:watch/feed`: answers a plugin's calls from the event log, and grants
//! it CPU for the events that are new to it ([`super::cpu`]).

use super::StopSignal;
use super::progress::{Resources, Tracker};
use super::store::Sandbox;
use crate::jetstream::{JetStreamError, StreamFeed, StreamReader};
use pulsewatch_log::{Given, Outputs};
use pulsewatch_log::{Log, PollLimits};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "pulse:watch/plugin",
});

use pulse::watch::feed as wit;
pub(crate) use pulse::watch::output;

/// The interface the functions are linked under, as in wit/feed.wit. Admission accepts imports
/// of its package at any version semver-compatible with this one or one of [`OLDER_FEEDS`].
pub(crate) const FEED_INTERFACE: &str = "pulse:watch/feed@0.3.0";

/// Earlier versions of the feed, linked to the same functions: their contract is unchanged, so
/// plugins built against them keep running on this host without a rebuild.
pub(crate) const OLDER_FEEDS: [&str; 1] = ["pulse:watch/feed@0.2.0"];

/// Where a plugin's feed reads from: the same contract over either.
#[derive(Clone, Debug)]
pub enum Source {
    /// A redb log on this machine.
    Log(Arc<Log>),
    /// A JetStream stream.
    Stream(Arc<StreamFeed>),
}

impl From<Arc<Log>> for Source {
    fn from(log: Arc<Log>) -> Self {
        Source::Log(log)
    }
}

impl From<&Arc<Log>> for Source {
    fn from(log: &Arc<Log>) -> Self {
        Source::Log(log.clone())
    }
}

impl From<Arc<StreamFeed>> for Source {
    fn from(stream: Arc<StreamFeed>) -> Self {
        Source::Stream(stream)
    }
}

impl Source {
    /// How derived events name where they came from: the log's path or the stream's location.
    pub fn name(&self) -> String {
        match self {
            Source::Log(log) => log.path().display().to_string(),
            Source::Stream(stream) => stream.addr().to_string(),
        }
    }

    async fn head(&self) -> Result<u64, wit::PollError> {
        match self {
            Source::Log(log) => log.head().map_err(poll_error),
            Source::Stream(stream) => stream.head().await.map_err(stream_error),
        }
    }

    async fn seq_at(&self, timestamp_ms: u64) -> Result<u64, wit::PollError> {
        match self {
            Source::Log(log) => log.seq_at(timestamp_ms).map_err(poll_error),
            Source::Stream(stream) => stream.seq_at(timestamp_ms).await.map_err(stream_error),
        }
    }
}

/// Why a poll of a stream failed, in the contract's terms.
fn stream_error(err: JetStreamError) -> wit::PollError {
    match err {
        JetStreamError::Truncated { oldest } => wit::PollError::Truncated(oldest),
        JetStreamError::Undecodable { seq, .. } => wit::PollError::Undecodable(seq),
        other => wit::PollError::Unavailable(other.to_string()),
    }
}

/// What one plugin's feed calls read from.
pub(crate) struct Feed {
    pub(crate) source: Source,
    /// The plugin's place in the stream, when it reads one: made at its first poll.
    pub(crate) reader: tokio::sync::Mutex<Option<StreamReader>>,
    pub(crate) poll_limits: PollLimits,
    /// Keep waiting for new events once caught up, instead of closing the feed.
    pub(crate) follow: bool,
    pub(crate) stop: StopSignal,
    /// Where the `since` of the latest call is published, for [`super::Progress`].
    pub(crate) tracker: Arc<Tracker>,
    /// The output logs the plugin commits derived events to, if it is granted any.
    pub(crate) outputs: Option<Arc<Outputs>>,
    /// The highest seq delivered to the plugin in this run: how far it may commit.
    pub(crate) delivered: AtomicU64,
    /// The `since` of the last poll that delivered events: the batch the plugin works on.
    pub(crate) batch_since: AtomicU64,
    /// The `since` of the plugin's first poll (`u64::MAX` before it): where it started.
    pub(crate) start: AtomicU64,
    /// Derived events it committed in this run.
    pub(crate) emitted: AtomicU64,
}

impl Feed {
    /// The `since` of the last poll that delivered events (`u64::MAX` before any).
    pub(crate) fn batch_since(&self) -> u64 {
        self.batch_since.load(Ordering::Relaxed)
    }

    /// What the plugin was given in this run, which bounds what it may commit.
    pub(crate) fn given(&self) -> Given {
        let start = self.start.load(Ordering::Relaxed);
        Given {
            start: (start != u64::MAX).then_some(start),
            delivered: self.delivered.load(Ordering::Relaxed),
        }
    }

    /// Notes a poll from `since`: the first one is where the plugin started.
    fn polled(&self, since: u64) {
        let _ = self
            .start
            .compare_exchange(u64::MAX, since, Ordering::Relaxed, Ordering::Relaxed);
    }

    async fn poll(&self, since: u64, limit: u32) -> Result<(Vec<wit::Event>, u64), wit::PollError> {
        self.tracker.set_cursor(since);
        self.polled(since);
        if self.stop.is_stopped() {
            return Ok((Vec::new(), since));
        }
        let batch = match &self.source {
            Source::Log(log) => log
                .poll_within(since, limit, &self.poll_limits)
                .map_err(poll_error)?,
            Source::Stream(stream) => self
                .reader
                .lock()
                .await
                .get_or_insert_with(|| stream.reader())
                .poll(since, limit, &self.poll_limits)
                .await
                .map_err(stream_error)?,
        };
        Ok((
            batch.events.into_iter().map(to_wit).collect(),
            batch.last_seq,
        ))
    }

    async fn poll_packed(&self, since: u64, limit: u32) -> Result<(Vec<u8>, u64), wit::PollError> {
        self.tracker.set_cursor(since);
        self.polled(since);
        let mut bytes = Vec::new();
        if self.stop.is_stopped() {
            return Ok((bytes, since));
        }
        let packed = match &self.source {
            Source::Log(log) => log
                .poll_packed(since, limit, &self.poll_limits, &mut bytes)
                .map_err(poll_error)?,
            Source::Stream(stream) => self
                .reader
                .lock()
                .await
                .get_or_insert_with(|| stream.reader())
                .poll_packed(since, limit, &self.poll_limits, &mut bytes)
                .await
                .map_err(stream_error)?,
        };
        Ok((bytes, packed.last_seq))
    }

    async fn wait(&self, since: u64, timeout: Duration) -> Result<u64, wit::WaitError> {
        self.tracker.set_cursor(since);
        // A timeout too large to represent is as good as forever.
        let deadline = Instant::now().checked_add(timeout);
        let log = match &self.source {
            Source::Log(log) => log,
            Source::Stream(stream) => return self.wait_stream(stream, since, deadline).await,
        };
        // What to answer on a timeout: the head last read, or `since` if none could be read.
        let mut last_head = since;
        loop {
            if self.stop.is_stopped() {
                return Err(wit::WaitError::Closed);
            }
            // Read before the head, so that an append in between wakes the wait below.
            let generation = log.generation();
            match log.head() {
                Ok(head) if head > since => return Ok(head),
                // Caught up: a run without --follow ends here.
                Ok(_) if !self.follow => return Err(wit::WaitError::Closed),
                Ok(head) => last_head = head,
                // Unreadable: not "closed", which would end the plugin as if it were done; try
                // again after a recheck, and at the deadline let its next poll meet the error.
                Err(_) => {}
            }
            let now = Instant::now();
            let recheck = log.recheck_interval();
            let slice = match deadline {
                Some(deadline) if now >= deadline => return Ok(last_head),
                Some(deadline) => (deadline - now).min(recheck),
                None => recheck,
            };
            // Appends by this process wake the wait at once, and so do other processes' where
            // the log watches its file; elsewhere they are seen within a recheck.
            tokio::select! {
                () = self.stop.stopped() => {}
                _ = log.appended(generation) => {}
                () = tokio::time::sleep(slice) => {}
            }
        }
    }

    /// [`Feed::wait`] on a stream, whose head is known without asking the server.
    async fn wait_stream(
        &self,
        stream: &StreamFeed,
        since: u64,
        deadline: Option<Instant>,
    ) -> Result<u64, wit::WaitError> {
        if self.stop.is_stopped() {
            return Err(wit::WaitError::Closed);
        }
        if !self.follow {
            // Caught up: a run without --follow ends here.
            return match stream.head().await {
                Ok(head) if head > since => Ok(head),
                Ok(_) => Err(wit::WaitError::Closed),
                Err(_) => Ok(since),
            };
        }
        tokio::select! {
            () = self.stop.stopped() => Err(wit::WaitError::Closed),
            head = stream.wait_past(since, deadline) => Ok(head),
        }
    }
}

pulsewatch_log::feed_conversions!();

/// What a poll from `since` delivered, if anything: the events after `since` up to the seq it
/// returned.
fn delivered<T>(since: u64, result: &Result<(Vec<T>, u64), wit::PollError>) -> Option<(u64, u64)> {
    match result {
        Ok((items, last_seq)) if !items.is_empty() => Some((since, *last_seq)),
        _ => None,
    }
}

/// After a feed call: grants a full CPU budget if it delivered the events after `since` up to
/// `last_seq` and any of them is new to the plugin, and publishes what the plugin holds of its
/// limits and what its requests did.
fn after_call(store: &StoreContextMut<'_, Sandbox>, delivered: Option<(u64, u64)>) {
    let sandbox = store.data();
    if let Some((since, last_seq)) = delivered {
        sandbox.cpu.delivered(last_seq);
        sandbox
            .feed
            .delivered
            .fetch_max(last_seq, Ordering::Relaxed);
        sandbox.feed.batch_since.store(since, Ordering::Relaxed);
    }
    let (disk_bytes, disk_entries) = sandbox.disk.counts();
    let (http_requests, http_failures, http_bytes) = sandbox.outbound.stats();
    sandbox.feed.tracker.set_resources(Resources {
        memory_bytes: sandbox.limiter.memory_used() as u64,
        disk_bytes,
        disk_entries,
        http_requests,
        http_failures,
        http_bytes,
        emitted_events: sandbox.feed.emitted.load(Ordering::Relaxed),
        cpu_spent_ms: sandbox.cpu.spent_ms(),
    });
}

/// Adds the feed functions to `linker`. Over a redb log, `poll`, `head` and `seq-at` answer at
/// once from a read transaction; over a stream they await the server. `wait` sleeps without
/// holding a thread, and the stop signal or a cancellation reaches it.
pub(crate) fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    for version in std::iter::once(FEED_INTERFACE).chain(OLDER_FEEDS) {
        add_feed(linker, version)?;
    }
    Ok(())
}

fn add_feed(linker: &mut Linker<Sandbox>, interface: &str) -> wasmtime::Result<()> {
    let mut feed = linker.instance(interface)?;
    feed.func_wrap_async("poll", |store, (since, limit): (u64, u32)| {
        Box::new(async move {
            let feed = store.data().feed.clone();
            let result = feed.poll(since, limit).await;
            after_call(&store, delivered(since, &result));
            Ok((result,))
        })
    })?;
    feed.func_wrap_async("poll-packed", |store, (since, limit): (u64, u32)| {
        Box::new(async move {
            let feed = store.data().feed.clone();
            let result = feed.poll_packed(since, limit).await;
            after_call(&store, delivered(since, &result));
            Ok((result,))
        })
    })?;
    feed.func_wrap_async("head", |store, (): ()| {
        Box::new(async move {
            let feed = store.data().feed.clone();
            let result = feed.source.head().await;
            after_call(&store, None);
            Ok((result,))
        })
    })?;
    feed.func_wrap_async("seq-at", |store, (timestamp_ms,): (u64,)| {
        Box::new(async move {
            let feed = store.data().feed.clone();
            let result = feed.source.seq_at(timestamp_ms).await;
            after_call(&store, None);
            Ok((result,))
        })
    })?;
    feed.func_wrap_async("wait", |store, (since, timeout_ms): (u64, u32)| {
        Box::new(async move {
            let feed = store.data().feed.clone();
            let timeout = Duration::from_millis(u64::from(timeout_ms));
            let result = feed.wait(since, timeout).await;
            after_call(&store, None);
            Ok((result,))
        })
    })?;
    Ok(())
}
