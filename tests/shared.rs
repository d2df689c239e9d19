//! The shared worker: plugins whose isolation is `shared` run together in one worker process,
//! give the output they give in processes of their own, are contained one by one by the limits
//! wasmtime and the host enforce, and are restarted when that process dies.

mod common;

use common::procs::{descendants, signal};
use common::*;
use nix::sys::signal::Signal;
use pulsewatch::{Failure, Isolation, Limits, PluginSpec, Stream};
use std::process::{Command, Stdio};
use std::time::Duration;

fn spec_as(harness: &Harness, program: &str, name: &str, isolation: Isolation) -> PluginSpec {
    let mut spec = PluginSpec::named(name, guest(program), &harness.state_root).unwrap();
    spec.limits = harness.limits;
    spec.isolation = isolation;
    spec
}

#[test]
fn shared_plugins_print_what_plugins_in_their_own_processes_print() {
    let dir = tempfile::tempdir().unwrap();
    let _log = log_with(dir.path(), 300);
    let harness = Harness::new(dir.path());
    let specs = [
        spec_as(&harness, "kind-counts", "own", Isolation::Process),
        spec_as(&harness, "kind-counts", "shared-1", Isolation::Shared),
        spec_as(&harness, "kind-counts", "shared-2", Isolation::Shared),
    ];
    let outcomes = harness.supervise(&specs, &dir.path().join("events.redb"));
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    let own = harness.lines.of("own", Stream::Stdout);
    assert!(own.iter().any(|l| l == "cursor: 300"), "{own:?}");
    for shared in ["shared-1", "shared-2"] {
        assert_eq!(harness.lines.of(shared, Stream::Stdout), own, "{shared}");
    }
}

#[test]
fn a_hostile_plugin_in_the_shared_worker_is_stopped_alone() {
    let dir = tempfile::tempdir().unwrap();
    let _log = log_with(dir.path(), 300);
    let limits = Limits {
        cpu: Duration::from_millis(200),
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let harness = Harness::with_limits(dir.path(), limits);
    let specs = [
        spec_as(&harness, "spin-forever", "spin", Isolation::Shared),
        spec_as(&harness, "alloc-forever", "alloc", Isolation::Shared),
        spec_as(&harness, "kind-counts", "counts", Isolation::Shared),
    ];
    let outcomes = harness.supervise(&specs, &dir.path().join("events.redb"));
    let outcome = |name: &str| outcomes.iter().find(|o| o.plugin == name).unwrap();
    assert_eq!(
        outcome("spin").result,
        Err(Failure::CpuBudget { cpu: limits.cpu })
    );
    assert!(
        matches!(outcome("alloc").result, Err(Failure::Memory { .. })),
        "{:?}",
        outcome("alloc")
    );
    assert!(outcome("counts").result.is_ok(), "{:?}", outcome("counts"));
    let counts = harness.lines.of("counts", Stream::Stdout);
    assert!(counts.iter().any(|l| l == "cursor: 300"), "{counts:?}");
}

/// `pulsewatch status --json` of the run on `db`, once written.
fn status(db: &std::path::Path) -> Option<serde_json::Value> {
    let out = pulsewatch(&["status", "--db", db.to_str().unwrap(), "--json"]);
    serde_json::from_slice(&out.stdout).ok()
}

fn plugin_field(status: &serde_json::Value, plugin: &str, field: &str) -> serde_json::Value {
    status["plugins"]
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| p["name"] == plugin))
        .map_or(serde_json::Value::Null, |p| p[field].clone())
}

#[test]
fn plugins_of_a_killed_shared_worker_restart_from_their_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 300);
    let db = dir.path().join("events.redb");
    let plugins: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let path = dir.path().join(format!("{name}.wasm"));
            std::fs::copy(guest("kind-counts"), &path).unwrap();
            path
        })
        .collect();
    let mut host = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["run", "--follow", "--isolation", "shared", "--db"])
        .arg(&db)
        .args(&plugins)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let at = |seq: u64| {
        let db = db.clone();
        move || {
            status(&db).is_some_and(|s| {
                ["a", "b"]
                    .iter()
                    .all(|p| plugin_field(&s, p, "cursor") == seq)
            })
        }
    };
    wait_until("both plugins at the head", at(300));
    // Compiling was done in workers of their own, gone now: one worker runs both plugins.
    let workers = descendants(host.id());
    assert_eq!(workers.len(), 1, "{workers:?}");

    signal(workers[0], Signal::SIGKILL);
    fill(&log, 300, 310);
    wait_until("both plugins restarted and at the new head", at(310));
    let status = status(&db).unwrap();
    for plugin in ["a", "b"] {
        assert_eq!(plugin_field(&status, plugin, "restarts"), 1, "{status}");
        let error = plugin_field(&status, plugin, "last_error");
        assert!(
            error
                .as_str()
                .is_some_and(|e| e.contains("killed by SIGKILL") && e.contains("shared worker")),
            "{error}"
        );
    }
    let replacement = descendants(host.id());
    assert_eq!(replacement.len(), 1, "{replacement:?}");
    assert_ne!(replacement, workers);

    signal(host.id(), Signal::SIGINT);
    assert!(host.wait().unwrap().success());
}

#[test]
fn a_manifest_chooses_the_isolation_and_refuses_what_it_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let _log = log_with(dir.path(), 10);
    let db = dir.path().join("events.redb");
    let manifest = write_manifest(
        dir.path(),
        &[
            ("counts", "kind-counts", "isolation = \"shared\""),
            ("alone", "kind-counts", "isolation = \"process\""),
        ],
    );
    let run = |manifest: &std::path::Path| {
        let (db, manifest) = (db.to_str().unwrap(), manifest.to_str().unwrap());
        pulsewatch(&["run", "--db", db, "--manifest", manifest])
    };
    let out = run(&manifest);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("[counts] cursor: 10"), "{stdout}");
    assert!(stdout.contains("[alone] cursor: 10"), "{stdout}");

    let manifest = write_manifest(
        dir.path(),
        &[("counts", "kind-counts", "isolation = \"thread\"")],
    );
    let out = run(&manifest);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("isolation") && stderr.contains("expected \"process\" or \"shared\""),
        "{stderr}"
    );
}
