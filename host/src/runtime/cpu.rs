//! CPU is granted for new events. A feed call that gives a plugin events it was not given before
//! (its highest delivered seq rises) grants it a full budget ([`Limits::cpu`]); while it receives
//! nothing new it earns CPU at its idle rate, up to that budget. Re-reading old events, calling
//! `head` or `wait`, or looping over any host call earns nothing more.
//!
//! What counts is all the CPU its run takes: its own code, its instantiation, and the host's work
//! inside its WASI and feed calls (random bytes, file reads, clocks). In a supervisor's worker,
//! which runs one plugin, it is read from the process's CPU clock ([`CpuClock::Process`]), so
//! that work wasmtime-wasi does on other threads (file streams, on tokio's blocking pool) is
//! charged too. In a process of many plugins it is read from the clock of the thread that runs
//! the plugin, over each step of its run ([`CpuClock::Thread`]; each poll of its future:
//! wasmtime runs the plugin and its host calls on the polling thread), exact but for that pool.
//! Time spent waiting costs nothing.
//!
//! The budget is looked at as host calls return (the time every [`CALLS_PER_LOOK`] calls, the
//! clock at most every [`CHECK_EVERY`]) and after each step; computation that calls nothing
//! yields a step every few milliseconds (the fuel yield interval, `store.rs`). A feed call
//! grants a budget only when it delivers a seq above every one delivered before, so a plugin
//! gets at most one grant for each event in the log.

use crate::limits::Limits;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

/// How often, at most, a host call's return looks at the CPU clock (a system call).
const CHECK_EVERY: Duration = Duration::from_millis(1);

/// Host calls between two looks at the time: the hook runs on every host call, and the cheap
/// path (a count) keeps a caught-up poll's cost where it was (0.43 µs with the time read on
/// every call, 0.37 µs without the hook). Even a call that takes a whole millisecond of host CPU
/// then overshoots the budget by 16 ms at most.
const CALLS_PER_LOOK: u32 = 16;

/// Raised into a plugin's run when it has spent its CPU budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the plugin used its CPU budget")]
pub(crate) struct CpuBudgetSpent;

/// Which CPU clock a plugin's run is charged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuClock {
    /// The clock of the thread that runs the plugin, over each step of its run: exact with many
    /// plugins in one process. Host work that wasmtime-wasi hands to other threads (file
    /// streams' reads and writes on tokio's blocking pool) is not charged.
    #[default]
    Thread,
    /// The clock of the whole process, from the start of the run: for a process that runs one
    /// plugin (a supervisor's worker), so that work on any of its threads is charged.
    Process,
}

impl CpuClock {
    /// The clock's time, in ns.
    fn now(self) -> u64 {
        use nix::time::{ClockId, clock_gettime};
        let id = match self {
            CpuClock::Thread => ClockId::CLOCK_THREAD_CPUTIME_ID,
            CpuClock::Process => ClockId::CLOCK_PROCESS_CPUTIME_ID,
        };
        clock_gettime(id).map_or(0, |t| {
            (t.tv_sec() as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(t.tv_nsec() as u64)
        })
    }
}

/// The CPU account of one plugin's run, in nanoseconds of its clock.
#[derive(Debug)]
pub(crate) struct CpuMeter {
    clock: CpuClock,
    budget: u64,
    idle_percent: u64,
    /// Host calls returned since the time was last looked at.
    calls: AtomicU32,
    account: Mutex<Account>,
}

#[derive(Debug, Clone)]
struct Account {
    /// CPU spent in finished steps.
    spent: u64,
    /// The clock when the current step began, during a step; by the process's clock, the run
    /// is one step.
    step_began: Option<u64>,
    /// What `spent` may reach.
    allowance: u64,
    /// The highest seq delivered so far.
    delivered: u64,
    /// When idle earnings were last added.
    earned_at: Instant,
    /// When a host call's return next looks at the clock.
    next_check: Instant,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Account {
    /// CPU spent so far, the current step included, `now_cpu` being the thread's clock.
    fn spent(&self, now_cpu: u64) -> u64 {
        self.spent
            .saturating_add(self.step_began.map_or(0, |b| now_cpu.saturating_sub(b)))
    }

    /// Adds what was earned at the idle rate since the last time, never more than a full budget
    /// beyond what is spent.
    fn earn(&mut self, budget: u64, idle_percent: u64, spent: u64, now: Instant) {
        let elapsed = nanos(now.saturating_duration_since(self.earned_at));
        let earned =
            u64::try_from(u128::from(elapsed) * u128::from(idle_percent) / 100).unwrap_or(u64::MAX);
        self.earned_at = now;
        self.allowance = self
            .allowance
            .saturating_add(earned)
            .min(spent.saturating_add(budget));
    }
}

impl CpuMeter {
    pub(crate) fn new(limits: &Limits, clock: CpuClock, now: Instant) -> Self {
        let budget = nanos(limits.cpu);
        CpuMeter {
            clock,
            budget,
            idle_percent: u64::from(limits.idle_cpu_percent),
            calls: AtomicU32::new(0),
            account: Mutex::new(Account {
                spent: 0,
                step_began: (clock == CpuClock::Process).then(|| clock.now()),
                allowance: budget,
                delivered: 0,
                earned_at: now,
                next_check: now,
            }),
        }
    }

    fn account(&self) -> MutexGuard<'_, Account> {
        self.account.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A step of the plugin's run begins on this thread.
    pub(crate) fn begin_step(&self) {
        if self.clock == CpuClock::Thread {
            self.account().step_began = Some(self.clock.now());
        }
    }

    /// The step ends; returns whether the plugin is now over its budget.
    pub(crate) fn end_step(&self) -> bool {
        let now_cpu = self.clock.now();
        let mut account = self.account();
        if self.clock == CpuClock::Thread {
            account.spent = account.spent(now_cpu);
            account.step_began = None;
        }
        self.over(&mut account, now_cpu, Instant::now())
    }

    /// The CPU the run has taken so far, in ms: by the thread's clock, its finished steps.
    pub(crate) fn spent_ms(&self) -> u64 {
        let account = self.account();
        let spent = match self.clock {
            CpuClock::Process => account.spent(self.clock.now()),
            CpuClock::Thread => account.spent,
        };
        spent / 1_000_000
    }

    /// A feed call delivered events up to `last_seq`: a full budget if any of them is new.
    pub(crate) fn delivered(&self, last_seq: u64) {
        let mut account = self.account();
        if last_seq > account.delivered {
            account.delivered = last_seq;
            let spent = account.spent(self.clock.now());
            account.allowance = spent.saturating_add(self.budget);
            account.earned_at = Instant::now();
        }
    }

    /// Adds `cpu` to what the plugin may spend, never more than a full budget beyond what it has
    /// spent: what an answer from the network grants for the host's work on it.
    /// Called from any thread: by the thread's clock, only finished steps are counted.
    pub(crate) fn credit(&self, cpu: Duration) {
        let mut account = self.account();
        let spent = match self.clock {
            CpuClock::Process => account.spent(self.clock.now()),
            CpuClock::Thread => account.spent,
        };
        account.allowance = account
            .allowance
            .saturating_add(nanos(cpu))
            .min(spent.saturating_add(self.budget));
    }

    /// After a host call: whether the plugin is over its budget, looking at the time every
    /// [`CALLS_PER_LOOK`] calls, and at the CPU clock at most every [`CHECK_EVERY`].
    pub(crate) fn check(&self) -> Result<(), CpuBudgetSpent> {
        if !self
            .calls
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(CALLS_PER_LOOK)
        {
            return Ok(());
        }
        let now = Instant::now();
        let mut account = self.account();
        if now < account.next_check {
            return Ok(());
        }
        account.next_check = now + CHECK_EVERY;
        if self.over(&mut account, self.clock.now(), now) {
            Err(CpuBudgetSpent)
        } else {
            Ok(())
        }
    }

    fn over(&self, account: &mut Account, now_cpu: u64, now: Instant) -> bool {
        let spent = account.spent(now_cpu);
        account.earn(self.budget, self.idle_percent, spent, now);
        spent > account.allowance
    }
}

/// Runs `run`, a plugin's run on `meter`'s store, one metered step per poll; a step that leaves
/// it over its budget ends it (dropping `run` cancels the plugin wherever it is).
pub(crate) async fn metered<T>(
    meter: &CpuMeter,
    run: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    let mut run = std::pin::pin!(run);
    std::future::poll_fn(|cx| {
        meter.begin_step();
        let polled = run.as_mut().poll(cx);
        let over = meter.end_step();
        match polled {
            Poll::Pending if over => Poll::Ready(Err(wasmtime::Error::new(CpuBudgetSpent))),
            polled => polled,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn account(allowance: u64, at: Instant) -> Account {
        Account {
            spent: 0,
            step_began: None,
            allowance,
            delivered: 0,
            earned_at: at,
            next_check: at,
        }
    }

    #[test]
    fn idle_time_earns_at_the_idle_rate_up_to_a_full_budget() {
        let t0 = Instant::now();
        let mut a = account(100 * MS, t0);
        a.spent = 90 * MS;
        // 5% of 1 s is 50 ms.
        a.earn(100 * MS, 5, 90 * MS, t0 + Duration::from_secs(1));
        assert_eq!(a.allowance, 150 * MS);
        a.earn(100 * MS, 5, 90 * MS, t0 + Duration::from_secs(1));
        assert_eq!(a.allowance, 150 * MS, "no time passed, nothing earned");
        a.earn(100 * MS, 5, 90 * MS, t0 + Duration::from_secs(100));
        assert_eq!(
            a.allowance,
            190 * MS,
            "capped at a budget beyond what is spent"
        );
    }

    #[test]
    fn the_current_step_counts_until_it_ends() {
        let mut a = account(0, Instant::now());
        a.spent = 5;
        a.step_began = Some(100);
        assert_eq!(a.spent(130), 35);
        a.step_began = None;
        assert_eq!(a.spent(130), 5);
    }

    #[test]
    fn only_events_not_delivered_before_grant_a_budget() {
        let meter = CpuMeter::new(
            &Limits {
                cpu: Duration::from_millis(10),
                idle_cpu_percent: 0,
                ..Limits::default()
            },
            CpuClock::Thread,
            Instant::now(),
        );
        meter.account().spent = 25 * MS;
        meter.delivered(1000);
        assert_eq!(meter.account().allowance, 35 * MS);
        meter.account().spent = 40 * MS;
        meter.delivered(1000);
        meter.delivered(10);
        assert_eq!(
            meter.account().allowance,
            35 * MS,
            "events delivered before grant nothing"
        );
        assert!(meter.end_step(), "40 ms spent of 35");
    }
}
