//! Hostile guests built from source: each is denied or stopped, the host survives, and a
//! well-behaved plugin in the same run completes.

mod common;

use common::{Harness, log_with};
use pulsewatch::{Failure, Limits, Outcome, Stream};

/// Small budgets keep the runaway guests' runs short; the well-behaved plugin fits in them.
fn limits() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        fuel_per_call: 200_000_000,
        output_bytes: 64 << 10,
        ..Limits::default()
    }
}

/// Runs `hostile` beside kind-counts over 5,000 events; checks kind-counts finished and returns
/// the hostile one's outcome and the harness (for its output).
fn run_beside_a_good_plugin(hostile: &str, args: &[&str]) -> (Outcome, Harness) {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 5_000);
    let mut harness = Harness::with_limits(dir.path(), limits());
    harness.options.args = args
        .iter()
        .map(|a| (hostile.to_owned(), (*a).to_owned()))
        .collect();
    let plugins = [harness.load(hostile), harness.load("kind-counts")];
    let mut outcomes = harness.run_all(&plugins, &log);
    let good = outcomes.pop().unwrap();
    assert!(good.result.is_ok(), "the good plugin: {good:?}");
    assert_eq!(
        harness.lines.value("kind-counts", "cursor: ").unwrap(),
        "5000"
    );
    (outcomes.pop().unwrap(), harness)
}

#[test]
fn reading_host_files_is_denied() {
    let (outcome, harness) = run_beside_a_good_plugin("read-passwd", &[]);
    assert!(outcome.result.is_ok(), "{outcome:?}");
    let out = harness.lines.of("read-passwd", Stream::Stdout);
    assert_eq!(
        out.iter().filter(|l| l.starts_with("denied ")).count(),
        3,
        "{out:?}"
    );
    assert!(!out.iter().any(|l| l.contains("LEAKED")), "{out:?}");
}

#[test]
fn the_environment_and_arguments_are_empty() {
    let (outcome, harness) = run_beside_a_good_plugin("read-env", &[]);
    assert!(outcome.result.is_ok(), "{outcome:?}");
    assert_eq!(harness.lines.value("read-env", "env vars: ").unwrap(), "0");
    assert_eq!(harness.lines.value("read-env", "args: ").unwrap(), "0");
}

#[test]
fn connecting_to_loopback_is_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let (outcome, harness) = run_beside_a_good_plugin("connect-loopback", &[&port]);
    assert!(outcome.result.is_ok(), "{outcome:?}");
    let out = harness.lines.of("connect-loopback", Stream::Stdout);
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
    let (outcome, _) = run_beside_a_good_plugin("spin-forever", &[]);
    assert_eq!(
        outcome.result,
        Err(Failure::CpuBudget(limits().fuel_per_call))
    );
    assert!(
        outcome.detail.is_some(),
        "the backtrace is kept for --verbose"
    );
}

#[test]
fn allocating_without_bound_is_stopped_at_the_memory_limit() {
    let (outcome, _) = run_beside_a_good_plugin("alloc-forever", &[]);
    assert_eq!(outcome.result, Err(Failure::Memory(limits().memory_bytes)));
}

#[test]
fn recursing_without_bound_is_stopped() {
    let (outcome, _) = run_beside_a_good_plugin("recurse-forever", &[]);
    assert_eq!(outcome.result, Err(Failure::StackOverflow));
}

#[test]
fn printing_without_end_is_capped_and_stopped() {
    let (outcome, harness) = run_beside_a_good_plugin("print-forever", &[]);
    assert_eq!(
        outcome.result,
        Err(Failure::CpuBudget(limits().fuel_per_call))
    );
    let out = harness.lines.of("print-forever", Stream::Stdout);
    let shown: usize = out.iter().map(|l| l.len() + 1).sum();
    assert!(shown <= limits().output_bytes + 200, "{shown} bytes shown");
    assert!(
        out.last().unwrap().contains("output truncated"),
        "{:?}",
        out.last()
    );
}

#[test]
fn a_panic_is_reported_with_its_message() {
    let (outcome, harness) = run_beside_a_good_plugin("panic", &[]);
    assert!(
        matches!(outcome.result, Err(Failure::Trap(_))),
        "{outcome:?}"
    );
    let stderr = harness.lines.of("panic", Stream::Stderr).join("\n");
    assert!(stderr.contains("plugin bug after 1000 events"), "{stderr}");
}

#[test]
fn a_non_zero_exit_status_is_a_failure() {
    // WASI 0.2's stable `exit` carries only success or failure: any non-zero code arrives as 1.
    let (outcome, _) = run_beside_a_good_plugin("exit-code", &["3"]);
    assert_eq!(outcome.result, Err(Failure::Exit(1)));
    let (outcome, _) = run_beside_a_good_plugin("exit-code", &["0"]);
    assert_eq!(outcome.result, Ok(()));
}
