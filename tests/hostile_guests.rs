//! Hostile guests built from source: each is denied or stopped, the host survives, and a
//! well-behaved plugin in the same run completes with correct output. Most run in-process
//! (the `Runtime`); those that attack the host's own memory run in worker processes (the
//! `Supervisor`), as `pulsewatch run` does.

mod common;

use common::{Harness, log_with, wait_until};
use pulsewatch::{Failure, Limits, Outcome, PluginSpec, QuotaBreach, Stream};
use std::time::{Duration, Instant};

/// Small budgets keep the runaway guests' runs short; the well-behaved plugin fits in them.
fn limits() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        cpu: Duration::from_millis(200),
        output_bytes: 64 << 10,
        ..Limits::default()
    }
}

const EVENTS: u64 = 5_000;

/// The grace period after the stop signal in these runs.
const GRACE: Duration = Duration::from_secs(1);

/// A run of `hostile` (its spec adjusted by `adjust`) beside kind-counts over 5,000 events.
struct Beside {
    hostile: Outcome,
    harness: Harness,
    /// From the start of the run to its end.
    elapsed: Duration,
    _dir: tempfile::TempDir,
}

/// Where a run happens.
#[derive(Clone, Copy)]
enum Host {
    /// The `Runtime`, in this process.
    InProcess,
    /// The `Supervisor`, each plugin in a worker process.
    Workers,
}

/// Runs `hostile` with `args` beside kind-counts; `setup` may change the run and the hostile
/// plugin's spec first, and `during` runs while they do.
fn run_beside_a_good_plugin(
    hostile: &str,
    args: &[&str],
    host: Host,
    setup: impl FnOnce(&mut Harness, &mut PluginSpec),
    during: impl FnOnce(&Harness),
) -> Beside {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), EVENTS);
    let mut harness = Harness::with_limits(dir.path(), limits());
    harness.options.grace = GRACE;
    let mut spec = harness.spec(hostile);
    spec.args = args.iter().map(|a| (*a).to_owned()).collect();
    setup(&mut harness, &mut spec);
    let specs = [spec, harness.spec("kind-counts")];
    let started = Instant::now();
    let mut outcomes = std::thread::scope(|scope| {
        let run = scope.spawn(|| match host {
            Host::InProcess => {
                let plugins: Vec<_> = specs
                    .iter()
                    .map(|s| harness.runtime.load(s).unwrap())
                    .collect();
                harness.run_all(&plugins, &log)
            }
            Host::Workers => harness.supervise(&specs, &dir.path().join("events.redb")),
        });
        during(&harness);
        run.join().unwrap()
    });
    let elapsed = started.elapsed();
    let good = outcomes.pop().unwrap();
    assert!(good.result.is_ok(), "the good plugin: {good:?}");
    assert_eq!(
        harness.lines.value("kind-counts", "cursor: ").unwrap(),
        EVENTS.to_string()
    );
    assert!(
        harness
            .lines
            .value("kind-counts", "totals: ")
            .is_some_and(|t| t.starts_with("created=")),
        "kind-counts printed its totals"
    );
    Beside {
        hostile: outcomes.pop().unwrap(),
        harness,
        elapsed,
        _dir: dir,
    }
}

fn beside(hostile: &str, args: &[&str]) -> Beside {
    run_beside_a_good_plugin(hostile, args, Host::InProcess, |_, _| {}, |_| {})
}

/// Waits until `plugin`'s run, known to have started, is over: its state directory, locked
/// while it runs, is free.
fn wait_until_ended(harness: &Harness, plugin: &str) {
    wait_until(&format!("{plugin} to end"), || {
        std::fs::File::open(harness.state_root.join(plugin)).is_ok_and(|dir| dir.try_lock().is_ok())
    });
}

/// Waits until `plugin` has asked for the events after `seq`.
fn wait_for_cursor(harness: &Harness, plugin: &str, seq: u64) {
    wait_until(&format!("{plugin} to reach {seq}"), || {
        harness.options.progress.cursor(plugin) == Some(seq)
    });
}

/// Waits until `plugin` printed a line starting with `prefix`.
fn wait_for_line(harness: &Harness, plugin: &str, prefix: &str) {
    wait_until(&format!("{plugin} to print {prefix:?}"), || {
        harness.lines.value(plugin, prefix).is_some()
    });
}

#[test]
fn reading_host_files_is_denied() {
    let run = beside("read-passwd", &[]);
    assert!(run.hostile.result.is_ok(), "{:?}", run.hostile);
    let out = run.harness.lines.of("read-passwd", Stream::Stdout);
    assert_eq!(
        out.iter().filter(|l| l.starts_with("denied ")).count(),
        3,
        "{out:?}"
    );
    assert!(!out.iter().any(|l| l.contains("LEAKED")), "{out:?}");
}

#[test]
fn the_environment_and_arguments_are_empty() {
    let run = beside("read-env", &[]);
    assert!(run.hostile.result.is_ok(), "{:?}", run.hostile);
    assert_eq!(
        run.harness.lines.value("read-env", "env vars: ").unwrap(),
        "0"
    );
    assert_eq!(run.harness.lines.value("read-env", "args: ").unwrap(), "0");
}

#[test]
fn connecting_to_loopback_is_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let run = beside("connect-loopback", &[&port]);
    assert!(run.hostile.result.is_ok(), "{:?}", run.hostile);
    let out = run.harness.lines.of("connect-loopback", Stream::Stdout);
    assert!(
        out.iter().any(|l| l.starts_with("denied 127.0.0.1:")),
        "{out:?}"
    );
    assert!(
        listener.accept().is_err(),
        "no connection reached the listener"
    );
}

#[test]
fn spinning_forever_is_stopped_by_the_cpu_budget() {
    let run = beside("spin-forever", &[]);
    assert_eq!(
        run.hostile.result,
        Err(Failure::CpuBudget { cpu: limits().cpu })
    );
    assert!(
        run.hostile.detail.is_some(),
        "the backtrace is kept for --verbose"
    );
}

/// Each call that delivers nothing used to hand out a fresh budget. A safety-net wall-clock
/// limit turns a regression into a failed assertion instead of a hung test.
#[test]
fn computing_between_calls_that_deliver_nothing_is_stopped_by_the_cpu_budget() {
    for call in ["head", "poll", "wait"] {
        // Following, a `wait` at the head times out instead of closing the feed.
        let follow = call == "wait";
        let run = run_beside_a_good_plugin(
            "compute-between-calls",
            &[call],
            Host::InProcess,
            |harness, spec| {
                harness.options.follow = follow;
                spec.limits.wall_clock = Some(Duration::from_secs(60));
            },
            |harness| {
                if follow {
                    wait_for_line(harness, "compute-between-calls", "rounds: ");
                    wait_until_ended(harness, "compute-between-calls");
                    wait_for_cursor(harness, "kind-counts", EVENTS);
                    harness.options.stop.stop();
                }
            },
        );
        assert_eq!(
            run.hostile.result,
            Err(Failure::CpuBudget { cpu: limits().cpu }),
            "computing between `{call}` calls"
        );
        let rounds: u64 = run
            .harness
            .lines
            .value("compute-between-calls", "rounds: ")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            rounds >= 2,
            "{call}: it made {rounds} calls, so calls were made and did not refill the budget"
        );
    }
}

/// Only events new to a plugin grant it CPU: one that polls the same events again and again
/// spends its budget and is stopped, while the good plugin beside it finishes.
#[test]
fn replaying_old_events_forever_is_stopped_by_the_cpu_budget() {
    let run = run_beside_a_good_plugin(
        "replay-forever",
        &[],
        Host::InProcess,
        // A safety net: a regression fails the assertion instead of hanging the test.
        |_, spec| spec.limits.wall_clock = Some(Duration::from_secs(60)),
        |_| {},
    );
    assert_eq!(
        run.hostile.result,
        Err(Failure::CpuBudget { cpu: limits().cpu })
    );
    let rounds: u64 = run
        .harness
        .lines
        .value("replay-forever", "rounds: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(rounds >= 2, "it was given the same events {rounds} times");
}

/// The CPU the host spends inside a plugin's WASI calls is the plugin's: a plugin that makes the
/// host work without end (random bytes, file reads, the clock), computing next to nothing
/// itself, is stopped for its CPU budget, in a worker process as in this one; in a worker, also
/// for work wasmtime-wasi does on other threads while the plugin waits (file streams).
#[test]
fn looping_over_host_calls_is_stopped_by_the_cpu_budget() {
    for (call, host) in [
        ("random", Host::InProcess),
        ("read", Host::InProcess),
        ("clock", Host::InProcess),
        ("random", Host::Workers),
        // Reads that wasmtime-wasi does on its blocking threads while the plugin waits: a
        // worker charges its whole process.
        ("stream", Host::Workers),
    ] {
        let run = run_beside_a_good_plugin(
            "host-calls-forever",
            &[call],
            host,
            |_, spec| spec.limits.wall_clock = Some(Duration::from_secs(60)),
            |_| {},
        );
        assert_eq!(
            run.hostile.result,
            Err(Failure::CpuBudget { cpu: limits().cpu }),
            "{call} calls"
        );
    }
}

/// A plugin that waits for events and does a little work every 100 ms earns more CPU while it
/// waits than it spends: it runs as long as it is left running, far past what its budget alone
/// would allow.
#[test]
fn a_plugin_that_waits_and_does_a_little_periodic_work_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), EVENTS);
    let mut harness = Harness::with_limits(
        dir.path(),
        Limits {
            // Two or three rounds' work: without what it earns while waiting, it would be
            // stopped in its third round.
            cpu: Duration::from_millis(10),
            ..limits()
        },
    );
    harness.options.follow = true;
    let plugins = [
        harness.load_with("periodic-work", &["200000"]),
        harness.load("kind-counts"),
    ];
    let outcomes = std::thread::scope(|scope| {
        let run = scope.spawn(|| harness.run_all(&plugins, &log));
        std::thread::sleep(Duration::from_secs(3));
        harness.options.stop.stop();
        run.join().unwrap()
    });
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    let rounds: u64 = harness
        .lines
        .value("periodic-work", "rounds: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(rounds >= 10, "{rounds} rounds in 3 s");
}

#[test]
fn a_blocked_sleep_is_cancelled_when_the_grace_period_after_the_stop_signal_ends() {
    let mut stopped_at = None;
    let run = run_beside_a_good_plugin(
        "sleep-forever",
        &[],
        Host::InProcess,
        |_, _| {},
        |harness| {
            wait_for_line(harness, "sleep-forever", "sleeping");
            wait_for_line(harness, "kind-counts", "cursor: ");
            stopped_at = Some(Instant::now());
            harness.options.stop.stop();
        },
    );
    assert_eq!(run.hostile.result, Err(Failure::Cancelled { grace: GRACE }));
    let after_stop = stopped_at.unwrap().elapsed();
    assert!(
        after_stop <= GRACE + Duration::from_secs(1),
        "{after_stop:?} after the stop signal"
    );
}

#[test]
fn a_blocked_sleep_is_cancelled_at_its_wall_clock_limit() {
    let limit = Duration::from_secs(1);
    let run = run_beside_a_good_plugin(
        "sleep-forever",
        &[],
        Host::InProcess,
        |_, spec| spec.limits.wall_clock = Some(limit),
        |_| {},
    );
    assert_eq!(run.hostile.result, Err(Failure::WallClock { limit }));
    assert!(
        run.elapsed < limit + Duration::from_secs(10),
        "{:?}",
        run.elapsed
    );
}

#[test]
fn a_blocked_sleep_in_a_worker_is_cancelled_too() {
    let run = run_beside_a_good_plugin(
        "sleep-forever",
        &[],
        Host::Workers,
        |_, _| {},
        |harness| {
            wait_for_line(harness, "sleep-forever", "sleeping");
            wait_for_line(harness, "kind-counts", "cursor: ");
            // Not `stop_now`: kind-counts has printed its cursor but may not have returned yet,
            // and would be cancelled with it. Its grace period lets it return.
            harness.options.stop.stop();
        },
    );
    assert_eq!(run.hostile.result, Err(Failure::Cancelled { grace: GRACE }));
}

#[test]
fn a_blocked_sleep_in_a_worker_is_cancelled_at_once_by_stop_now() {
    let dir = tempfile::tempdir().unwrap();
    let _log = log_with(dir.path(), EVENTS);
    let mut harness = Harness::with_limits(dir.path(), limits());
    // A stop that is not at once would wait out this grace period and end otherwise.
    harness.options.grace = Duration::from_secs(20);
    let specs = [harness.spec("sleep-forever")];
    let mut stopped_at = None;
    let outcomes = std::thread::scope(|scope| {
        let run = scope.spawn(|| harness.supervise(&specs, &dir.path().join("events.redb")));
        wait_for_line(&harness, "sleep-forever", "sleeping");
        stopped_at = Some(Instant::now());
        harness.options.stop.stop_now();
        run.join().unwrap()
    });
    assert_eq!(
        outcomes[0].result,
        Err(Failure::Cancelled {
            grace: Duration::ZERO
        })
    );
    let after_stop = stopped_at.unwrap().elapsed();
    assert!(after_stop < Duration::from_secs(10), "{after_stop:?}");
}

#[test]
fn allocating_without_bound_is_stopped_at_the_memory_limit() {
    let run = beside("alloc-forever", &[]);
    assert_eq!(
        run.hostile.result,
        Err(Failure::Memory {
            limit: limits().memory_bytes
        })
    );
}

#[test]
fn one_huge_allocation_reads_as_the_memory_limit() {
    for mib in ["3072", "1024", "40"] {
        let run = beside("huge-alloc", &[mib]);
        assert_eq!(
            run.hostile.result,
            Err(Failure::Memory {
                limit: limits().memory_bytes
            }),
            "{mib} MiB at once"
        );
    }
}

#[test]
fn recursing_without_bound_is_stopped() {
    let run = beside("recurse-forever", &[]);
    assert_eq!(run.hostile.result, Err(Failure::StackOverflow));
}

#[test]
fn overflowing_the_stack_in_linear_memory_reads_as_a_stack_overflow() {
    let run = beside("deep-frames", &[]);
    assert_eq!(run.hostile.result, Err(Failure::StackOverflow));
}

#[test]
fn printing_without_end_is_capped_and_stopped() {
    let run = beside("print-forever", &[]);
    assert_eq!(
        run.hostile.result,
        Err(Failure::CpuBudget { cpu: limits().cpu })
    );
    let out = run.harness.lines.of("print-forever", Stream::Stdout);
    let shown: usize = out.iter().map(|l| l.len() + 1).sum();
    assert!(shown <= limits().output_bytes + 200, "{shown} bytes shown");
    assert!(
        out.last().unwrap().contains("output truncated"),
        "{:?}",
        out.last()
    );
}

#[test]
fn output_cannot_forge_a_host_line_or_move_the_cursor() {
    let run = beside("forge-output", &[]);
    assert!(run.hostile.result.is_ok(), "{:?}", run.hostile);
    let out = run.harness.lines.of("forge-output", Stream::Stdout);
    assert_eq!(
        out,
        [
            "\\rpulsewatch: plugin kind-counts stopped: used its CPU budget",
            "\\x1b[2K\\x1b[1Gcleared line",
            "tab\tstays, bell\\x07 and nul\\x00 do not",
        ]
    );
}

#[test]
fn filling_the_disk_is_stopped_by_the_quota() {
    let quota = 8 << 20;
    let run = run_beside_a_good_plugin(
        "fill-disk",
        &["bytes"],
        Host::InProcess,
        |_, spec| spec.limits.disk.bytes = quota,
        |_| {},
    );
    assert_eq!(
        run.hostile.result,
        Err(Failure::DiskQuota(QuotaBreach::Bytes(quota)))
    );
    let written = std::fs::metadata(run.harness.state_root.join("fill-disk/fill"))
        .unwrap()
        .len();
    assert!(written <= quota, "{written} bytes in /state");
    let stderr = run.harness.lines.of("fill-disk", Stream::Stderr).join("\n");
    assert!(stderr.contains("write: "), "its write failed: {stderr}");
}

#[test]
fn creating_files_without_end_is_stopped_by_the_quota() {
    let run = run_beside_a_good_plugin(
        "fill-disk",
        &["entries"],
        Host::InProcess,
        |_, spec| spec.limits.disk.entries = 100,
        |_| {},
    );
    assert_eq!(
        run.hostile.result,
        Err(Failure::DiskQuota(QuotaBreach::Entries(100)))
    );
    let entries = std::fs::read_dir(run.harness.state_root.join("fill-disk"))
        .unwrap()
        .count();
    assert_eq!(entries, 100);
}

#[test]
fn filling_the_disk_from_a_worker_is_stopped_by_the_quota() {
    let quota = 8 << 20;
    let run = run_beside_a_good_plugin(
        "fill-disk",
        &["bytes"],
        Host::Workers,
        |_, spec| spec.limits.disk.bytes = quota,
        |_| {},
    );
    assert_eq!(
        run.hostile.result,
        Err(Failure::DiskQuota(QuotaBreach::Bytes(quota)))
    );
}

#[test]
fn holding_pollables_without_end_is_stopped_at_the_handle_limit() {
    let run = beside("hold-pollables", &[]);
    assert_eq!(
        run.hostile.result,
        Err(Failure::Handles {
            limit: limits().handles
        })
    );
}

#[test]
fn holding_files_without_end_is_stopped_at_the_handle_limit() {
    let run = run_beside_a_good_plugin("hold-files", &[], Host::Workers, |_, _| {}, |_| {});
    assert_eq!(
        run.hostile.result,
        Err(Failure::Handles {
            limit: limits().handles
        })
    );
}

/// wasmtime-wasi reads a directory listing whole into the host's memory, outside the plugin's
/// memory limit: 9,000 names of 200 bytes, held open 256 times over, would be 600 MiB. In a
/// worker process, the OS data limit stops it, and only that worker.
#[test]
fn directory_listings_exhaust_only_their_own_worker() {
    let run = run_beside_a_good_plugin(
        "list-dirs",
        &["9000", "500"],
        Host::Workers,
        // Creating the files takes more than one budget's CPU, with no feed call between.
        |_, spec| spec.limits.cpu = Duration::from_secs(600),
        |_| {},
    );
    let limit = limits().worker_data_bytes();
    assert_eq!(run.hostile.result, Err(Failure::HostMemory { limit }));
    let peak = run
        .hostile
        .peak_rss_bytes
        .expect("the worker's RSS was sampled");
    // RSS also counts what the data limit does not: the executable's code (tens of MiB in a
    // debug build) and the stacks. Unbounded, the listings would take 600 MiB.
    assert!(
        peak <= limit + (64 << 20),
        "worker peak RSS {} MiB against a data limit of {} MiB",
        peak >> 20,
        limit >> 20
    );
    assert!(
        run.harness
            .lines
            .of("list-dirs", Stream::Stdout)
            .iter()
            .any(|l| l.starts_with("holding ")),
        "it got as far as holding listings"
    );
}

#[test]
fn a_panic_is_reported_with_its_message() {
    let run = beside("panic", &[]);
    assert!(
        matches!(run.hostile.result, Err(Failure::Trap(_))),
        "{:?}",
        run.hostile
    );
    let stderr = run.harness.lines.of("panic", Stream::Stderr).join("\n");
    assert!(stderr.contains("plugin bug after 1000 events"), "{stderr}");
}

#[test]
fn a_non_zero_exit_status_is_a_failure() {
    // WASI 0.2's stable `exit` carries only success or failure: any non-zero code arrives as 1.
    let run = beside("exit-code", &["3"]);
    assert_eq!(run.hostile.result, Err(Failure::Exit(1)));
    let run = beside("exit-code", &["0"]);
    assert_eq!(run.hostile.result, Ok(()));
}
