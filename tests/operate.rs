//! Plugins operated as a service: a manifest checked before anything starts, restarts with
//! backoff, quarantine of a plugin stuck on one event, a compile cache that is used and that
//! refuses what it did not write, `status` from another process, SIGHUP reloading the manifest.

mod common;

use nix::sys::signal::Signal;

use common::{guest, pulsewatch, supervisor, text, wait_until, write_manifest};
use pulsewatch::{
    Change, ChangeKind, Failure, Home, Log, OutputSink, PluginSpec, RunOptions, manifest,
    sha256_hex,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

fn log_with(path: &Path, n: u64) {
    let log = Log::create(path).unwrap();
    let changes: Vec<Change> = (1..=n)
        .map(|i| Change::new(ChangeKind::ALL[(i % 4) as usize], u128::from(i), 5).at(i))
        .collect();
    log.append_batch(&changes).unwrap();
}

fn spec(name: &str, program: &str, root: &Path) -> PluginSpec {
    PluginSpec::named(name, guest(program), root).unwrap()
}

/// Runs `specs` following, under a home in `root`, until `done` holds, then stops them.
fn follow_until(
    specs: &[PluginSpec],
    db: &Path,
    root: &Path,
    done: impl Fn(&RunOptions) -> bool,
) -> (Vec<pulsewatch::Outcome>, Arc<common::Lines>) {
    let lines = Arc::new(common::Lines::default());
    let sink: Arc<dyn OutputSink> = lines.clone();
    let options = RunOptions {
        follow: true,
        ..RunOptions::default()
    };
    let outcomes = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            supervisor()
                .with_home(Home::under(root))
                .run(specs, db, &options, &sink)
                .unwrap()
        });
        wait_until("the plugins got where they should", || {
            done(&options) || run.is_finished()
        });
        options.stop.stop();
        run.join().unwrap()
    });
    (outcomes, lines)
}

#[test]
fn a_plugin_that_fails_on_its_first_starts_is_restarted_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    log_with(&db, 500);
    let root = dir.path().join("state");
    let specs = [spec("flaky", "flaky", &root)];
    let (outcomes, lines) = follow_until(&specs, &db, &root, |options| {
        options.progress.cursor("flaky") == Some(500)
    });
    assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
    assert_eq!(outcomes[0].restarts, 2, "failed on starts 1 and 2");
    assert_eq!(
        lines.value("flaky", "received: ").unwrap(),
        "500 cursor: 500"
    );
    assert_eq!(
        lines
            .of("flaky", pulsewatch::Stream::Stdout)
            .iter()
            .filter(|l| l.starts_with("start "))
            .count(),
        3
    );
}

#[test]
fn a_plugin_stuck_on_one_event_is_quarantined_there_while_another_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    log_with(&db, 300);
    let root = dir.path().join("state");
    let mut poison = spec("poison", "poison", &root);
    poison.args = vec!["123".into()];
    let specs = [poison.clone(), spec("kind-counts", "kind-counts", &root)];
    let home = Home::under(&root);
    let (outcomes, lines) = follow_until(&specs, &db, &root, |options| {
        home.quarantine("poison").is_some() && options.progress.cursor("kind-counts") == Some(300)
    });
    match &outcomes[0].result {
        Err(Failure::Quarantined {
            seq,
            failures,
            last,
        }) => {
            assert_eq!(*seq, Some(123));
            assert_eq!(*failures, 5);
            assert!(last.contains("exited with status 1"), "{last}");
        }
        other => panic!("expected a quarantine, got {other:?}"),
    }
    assert_eq!(outcomes[0].restarts, 4);
    assert!(outcomes[1].result.is_ok(), "{outcomes:?}");
    assert_eq!(lines.value("kind-counts", "cursor: ").unwrap(), "300");
    let record = home.quarantine("poison").unwrap();
    assert_eq!(record.seq, Some(123));
    assert!(record.at_ms > 0);

    // The next run leaves it alone, without starting it.
    let (outcomes, _) = follow_until(&specs[..1], &db, &root, |_| true);
    assert!(
        matches!(
            outcomes[0].result,
            Err(Failure::Quarantined { seq: Some(123), .. })
        ),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[0].restarts, 0);
    // `pulsewatch release` lets it start again (and be quarantined again).
    let out = pulsewatch(&[
        "release",
        "poison",
        "--db",
        db.to_str().unwrap(),
        "--state-dir",
        root.to_str().unwrap(),
    ]);
    assert!(
        text(&out.stderr).contains("released"),
        "{}",
        text(&out.stderr)
    );
    assert!(home.quarantine("poison").is_none());
    let (outcomes, _) = follow_until(&specs[..1], &db, &root, |_| {
        home.quarantine("poison").is_some()
    });
    assert_eq!(outcomes[0].restarts, 4, "{outcomes:?}");
    // A changed spec (a manifest edit) releases it too.
    let mut changed = poison;
    changed.args = vec!["1000".into()];
    let (outcomes, _) = follow_until(&[changed], &db, &root, |options| {
        options.progress.cursor("poison") == Some(300)
    });
    assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
    assert!(home.quarantine("poison").is_none());
}

#[test]
fn components_are_compiled_once_kept_and_a_tampered_cache_file_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    log_with(&db, 50);
    let root = dir.path().join("state");
    let specs: Vec<PluginSpec> = ["a", "b", "c"]
        .iter()
        .map(|name| spec(name, "kind-counts", &root))
        .collect();
    let lines: Arc<dyn OutputSink> = Arc::new(common::Lines::default());
    let run = || {
        supervisor()
            .with_home(Home::under(&root))
            .run(&specs, &db, &RunOptions::default(), &lines)
            .unwrap()
    };
    let first = run();
    assert!(first.iter().all(|o| o.result.is_ok()), "{first:?}");
    assert_eq!(
        first.iter().filter(|o| o.compiled).count(),
        1,
        "three plugins, one component, one compilation: {first:?}"
    );
    let second = run();
    assert!(
        second.iter().all(|o| o.result.is_ok() && !o.compiled),
        "{second:?}"
    );

    let cache_dir = Home::under(&root).cache_dir();
    let files: Vec<PathBuf> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&files[0], &bytes).unwrap();
    let third = run();
    assert!(third.iter().all(|o| o.result.is_ok()), "{third:?}");
    assert_eq!(
        third.iter().filter(|o| o.compiled).count(),
        1,
        "the tampered file was refused and the component compiled again: {third:?}"
    );
    assert_ne!(
        std::fs::read(&files[0]).unwrap(),
        bytes,
        "and the file replaced"
    );
}

#[test]
fn manifest_errors_name_the_file_the_plugin_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_manifest(dir.path(), &[("kc", "kind-counts", "start = \"head\"")]);
    let specs = manifest::load(&good, &dir.path().join("state")).unwrap();
    assert_eq!(specs[0].name, "kc");
    assert_eq!(specs[0].start, pulsewatch::StartPosition::Head);
    let out = pulsewatch(&["check", "--manifest", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 plugin can start: kc"));
    // The run's database, named, is checked as the run would open it.
    let missing = dir.path().join("missing.redb");
    let out = pulsewatch(&[
        "check",
        "--manifest",
        good.to_str().unwrap(),
        "--db",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.redb: no such database file"));
    assert!(!dir.path().join("missing.redb.state").exists());

    let sha = sha256_hex(&std::fs::read(guest("kind-counts")).unwrap());
    let component = guest("kind-counts").display().to_string();
    let entry = |name: &str, rest: &str| {
        format!(
            "[[plugin]]\nname = \"{name}\"\ncomponent = \"{component}\"\nsha256 = \"{sha}\"\n{rest}\n"
        )
    };
    let cases = [
        (
            "# nothing yet\n".to_owned(),
            ":1: ",
            "declares no plugins: a manifest needs at least one [[plugin]] entry",
        ),
        (
            entry("kc", "colour = \"blue\""),
            ":5: plugin \"kc\": colour: ",
            "unknown key; a plugin's keys are name, component, sha256",
        ),
        (
            entry("kc", "") + &entry("kc", ""),
            ":7: plugin \"kc\": name: a second plugin of this name",
            "",
        ),
        (
            entry("kc", "").replace(&component, "missing.wasm"),
            ":3: plugin \"kc\": component: ",
            "cannot read",
        ),
        (
            entry("kc", "").replace(&sha, &"0".repeat(64)),
            ":4: plugin \"kc\": sha256: ",
            &format!("the manifest says {}, the file's is {sha}", "0".repeat(64)),
        ),
        (
            entry("kc", "").replace(&sha, "abc"),
            ":4: plugin \"kc\": sha256: ",
            "is not a sha256",
        ),
        (
            entry("kc", "[plugin.limits]\nmemory_mib = 0"),
            ":6: plugin \"kc\": limits.memory_mib: ",
            "0 MiB is out of range: it must be from 1 MiB to 4096 MiB",
        ),
        (
            entry("kc", "[plugin.limits]\nmemory_mib = -5"),
            ":6: plugin \"kc\": limits.memory_mib: ",
            "expected a whole number from 1 MiB to 4096 MiB",
        ),
        (
            entry("kc", "[plugin.limits]\nmemory_mib = \"64\""),
            ":6: plugin \"kc\": limits.memory_mib: ",
            "expected a whole number from 1 MiB to 4096 MiB, found a string",
        ),
        (
            entry("kc", "[plugin.limits]\nfuel = 5"),
            ":6: plugin \"kc\": limits.fuel: ",
            "unknown limit; the limits are memory_mib, cpu,",
        ),
        (
            entry("kc", "args = \"--verbose\""),
            ":5: plugin \"kc\": args: ",
            "expected an array of strings, found a string",
        ),
        (
            entry("kc", "[plugin.limits]\nwall_clock = \"soon\""),
            ":6: plugin \"kc\": limits.wall_clock: ",
            "",
        ),
        (
            entry("kc", "start = \"middle\""),
            ":5: plugin \"kc\": start: ",
            "\"middle\" is not a start position: expected \"beginning\", \"head\", a seq",
        ),
        (
            entry("kc", "start = { when = 5 }"),
            ":5: plugin \"kc\": start: ",
            "expected \"beginning\", \"head\", a seq",
        ),
        (
            entry("../kc", ""),
            ":2: plugin \"../kc\": name: ",
            "not a usable plugin name",
        ),
    ];
    for (manifest, at, says) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &manifest).unwrap();
        let error = manifest::load(&path, dir.path()).unwrap_err().to_string();
        assert!(error.starts_with(&path.display().to_string()), "{error}");
        assert!(error.contains(at), "{at:?} in {error:?}\n{manifest}");
        assert!(error.contains(says), "{says:?} in {error:?}");
        for rust in ["untagged", "variant", "i128", "u64", "Spanned"] {
            assert!(!error.contains(rust), "{rust:?} in {error:?}");
        }
        let out = pulsewatch(&["check", "--manifest", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains(at), "{}", text(&out.stderr));
        let run = pulsewatch(&[
            "run",
            "--db",
            dir.path().join("none.redb").to_str().unwrap(),
            "--manifest",
            path.to_str().unwrap(),
        ]);
        assert_eq!(run.status.code(), Some(2), "refused before anything starts");
    }
}

/// `run`'s limit flags have the manifest's bounds and say so in the same words; with a
/// manifest, whose limits are per plugin, a limit flag is refused rather than ignored.
#[test]
fn a_limit_flag_out_of_the_manifests_bounds_is_refused_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    log_with(&db, 10);
    let plugin = guest("kind-counts");
    let run = |flags: &[&str]| {
        let mut args = vec!["run", "--db", db.to_str().unwrap()];
        args.extend_from_slice(flags);
        args.push(plugin.to_str().unwrap());
        pulsewatch(&args)
    };
    for (flag, value, says) in [
        (
            "--memory-mib",
            "0",
            "0 MiB is out of range: it must be from 1 MiB to 4096 MiB",
        ),
        (
            "--cpu",
            "0s",
            "0s is out of range: it must be from 1ms to 1h",
        ),
        (
            "--disk-entries",
            "0",
            "0 entries is out of range: it must be from 1 entries",
        ),
        (
            "--wall-clock",
            "soon",
            "\"soon\" is not a duration such as 500ms, 30s or 10m",
        ),
    ] {
        let out = run(&[flag, value]);
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {said}");
        assert!(said.contains(&format!("{flag} {value}: {says}")), "{said}");
        let key = flag.trim_start_matches("--").replace('-', "_");
        let value = if value.parse::<u64>().is_ok() {
            value.to_owned()
        } else {
            format!("{value:?}")
        };
        let manifest = write_manifest(
            dir.path(),
            &[(
                "kc",
                "kind-counts",
                &format!("[plugin.limits]\n{key} = {value}"),
            )],
        );
        let error = manifest::load(&manifest, dir.path())
            .unwrap_err()
            .to_string();
        assert!(error.contains(&format!("limits.{key}: {says}")), "{error}");
    }
    assert!(
        run(&["--cpu", "250ms", "--memory-mib", "32"])
            .status
            .success()
    );

    let manifest = write_manifest(dir.path(), &[("kc", "kind-counts", "")]);
    let out = pulsewatch(&[
        "run",
        "--db",
        db.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--memory-mib",
        "10",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot be used with"),
        "{}",
        text(&out.stderr)
    );
}

/// A plugin that cannot start because another run holds its state did nothing wrong: a second
/// run is refused before it starts anything, and a plugin added by a reload while its state is
/// held waits its turn, however long, and is never quarantined for it.
#[test]
fn a_state_directory_held_by_another_run_never_quarantines() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    log_with(&db, 300);
    let root = dir.path().join("state");
    let home = Home::under(&root);

    // Another run holds b's state: a run of b is refused, naming it.
    let held = root.join("b");
    std::fs::create_dir_all(&held).unwrap();
    let lock = std::fs::File::open(&held).unwrap();
    lock.lock().unwrap();
    let refused = supervisor()
        .with_home(home.clone())
        .run(
            &[spec("b", "kind-counts", &root)],
            &db,
            &RunOptions::default(),
            &(Arc::new(common::Lines::default()) as Arc<dyn OutputSink>),
        )
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("plugin b: its state directory")
            && refused.contains("is in use by another run"),
        "{refused}"
    );
    assert!(home.quarantine("b").is_none());

    // b added by a reload while its state is held: it waits, restart after restart.
    let lines = Arc::new(common::Lines::default());
    let sink: Arc<dyn OutputSink> = lines.clone();
    let options = RunOptions {
        follow: true,
        ..RunOptions::default()
    };
    let both = [
        spec("a", "kind-counts", &root),
        spec("b", "kind-counts", &root),
    ];
    let reload = || Ok(both.to_vec());
    let status_of = |name: &str| {
        let run = home.status().ok()??;
        run.plugins.into_iter().find(|p| p.name == name)
    };
    let outcomes = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            supervisor()
                .with_home(home.clone())
                .run_reloading(&both[..1], &db, &options, &sink, Some(&reload))
                .unwrap()
        });
        wait_until("a at the head", || {
            options.progress.cursor("a") == Some(300)
        });
        options.reload.request();
        wait_until("b failed to start five times", || {
            status_of("b").is_some_and(|b| b.restarts >= 5 || b.quarantine.is_some())
        });
        let b = status_of("b").unwrap();
        assert!(
            b.quarantine.is_none() && home.quarantine("b").is_none(),
            "{b:?}"
        );
        assert!(
            b.last_error
                .as_deref()
                .is_some_and(|e| e.contains("in use by another run")),
            "{b:?}"
        );
        // Released by the other run, b starts and catches up.
        drop(lock);
        wait_until("b at the head", || {
            options.progress.cursor("b") == Some(300)
        });
        options.stop.stop();
        run.join().unwrap()
    });
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert!(home.quarantine("b").is_none());
}

#[test]
fn check_compiles_into_the_runs_cache_and_refuses_a_component_that_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    log_with(&db, 20);
    let root = dir.path().join("state");

    let wrong = write_manifest(
        dir.path(),
        &[("kc", "kind-counts", ""), ("nr", "no_run", "")],
    );
    let out = pulsewatch(&["check", "--manifest", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let error = text(&out.stderr);
    assert!(
        error.contains("nr") && error.contains("exports no `wasi:cli/run"),
        "{error}"
    );

    let good = write_manifest(
        dir.path(),
        &[("kc", "kind-counts", ""), ("kc2", "kind-counts", "")],
    );
    let check = || {
        let out = pulsewatch(&[
            "check",
            "--manifest",
            good.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--state-dir",
            root.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(
        check().contains("1 component compiled now"),
        "two plugins, one component"
    );
    assert!(check().contains("0 components compiled now"));
    let specs = manifest::load(&good, &root).unwrap();
    let lines: Arc<dyn OutputSink> = Arc::new(common::Lines::default());
    let outcomes = supervisor()
        .with_home(Home::under(&root))
        .run(&specs, &db, &RunOptions::default(), &lines)
        .unwrap();
    assert!(
        outcomes.iter().all(|o| o.result.is_ok() && !o.compiled),
        "the run loaded what check compiled: {outcomes:?}"
    );
}

/// `pulsewatch status --json`, or null while no status has been written yet.
fn status_json(db: &Path) -> serde_json::Value {
    let out = pulsewatch(&["status", "--db", db.to_str().unwrap(), "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn plugin<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

/// A reload that adds two plugins of a component new to the run compiles it once, in a worker
/// that only compiles (both run workers then load it from the cache), and both run.
#[test]
fn a_component_new_on_reload_is_compiled_once_for_all_its_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    log_with(&db, 200);
    let root = dir.path().join("state");
    let first = [spec("kc", "kind-counts", &root)];
    let reloaded = [
        spec("kc", "kind-counts", &root),
        spec("a", "seq-check", &root),
        spec("b", "seq-check", &root),
    ];
    let reload = || Ok(reloaded.to_vec());
    let sink: Arc<dyn OutputSink> = Arc::new(common::Lines::default());
    let options = RunOptions {
        follow: true,
        ..RunOptions::default()
    };
    let at_head = |name: &str| options.progress.cursor(name) == Some(200);
    let outcomes = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            supervisor()
                .with_home(Home::under(&root))
                .run_reloading(&first, &db, &options, &sink, Some(&reload))
                .unwrap()
        });
        wait_until("kc at the head", || at_head("kc") || run.is_finished());
        options.reload.request();
        wait_until("a and b at the head", || {
            (at_head("a") && at_head("b")) || run.is_finished()
        });
        options.stop.stop();
        run.join().unwrap()
    });
    let names: Vec<&str> = outcomes.iter().map(|o| o.plugin.as_str()).collect();
    assert_eq!(names, ["kc", "a", "b"]);
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    let compiled = outcomes[1..].iter().filter(|o| o.compiled).count();
    assert_eq!(compiled, 1, "seq-check compiled once: {outcomes:?}");
}

/// `status` from another process during a run and after it; SIGHUP adds and removes plugins.
#[test]
fn status_during_and_after_a_run_and_sighup_reloading_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    log_with(&db, 200);
    let manifest = write_manifest(
        dir.path(),
        &[("kc", "kind-counts", ""), ("old", "seq-check", "")],
    );
    let run = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args([
            "run",
            "--follow",
            "--db",
            db.to_str().unwrap(),
            "--manifest",
        ])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let at = |name: &str, state: &str, cursor: u64| {
        let status = status_json(&db);
        plugin(&status, name).is_some_and(|p| p["state"] == state && p["cursor"] == cursor)
    };
    wait_until("both running at the head", || {
        at("kc", "running", 200) && at("old", "running", 200)
    });
    let status = status_json(&db);
    assert_eq!(status["running"], true);
    assert_eq!(status["head"], 200);
    let kc = plugin(&status, "kc").unwrap();
    assert_eq!(kc["lag_events"], 0);
    assert_eq!(kc["restarts"], 0);
    assert!(kc["usage"]["rss_bytes"].as_u64().unwrap() > 0, "{kc}");
    assert_eq!(kc["limits"]["memory_bytes"], 64 << 20);

    // An invalid manifest changes nothing; a valid one adds `new` and removes `old`.
    std::fs::write(&manifest, "[[plugin]]\nname = 3\n").unwrap();
    common::procs::signal(run.id(), Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(at("old", "running", 200), "nothing changed");
    write_manifest(
        dir.path(),
        &[("kc", "kind-counts", ""), ("new", "seq-check", "")],
    );
    common::procs::signal(run.id(), Signal::SIGHUP);
    wait_until("new at the head, old stopped", || {
        at("new", "running", 200) && at("old", "stopped", 200)
    });
    common::procs::signal(run.id(), Signal::SIGINT);
    let out = run.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stderr.contains("plugins not reloaded, nothing changed"),
        "{stderr}"
    );
    assert!(
        stdout.contains("[old] received: 200 first: 1 last: 200 cursor: 200"),
        "the removed plugin committed and returned: {stdout}"
    );
    assert!(
        stdout.contains("[new] received: 200 first: 1 last: 200 cursor: 200"),
        "{stdout}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "every plugin ended cleanly: {stderr}"
    );

    let after = status_json(&db);
    assert_eq!(after["running"], false);
    for name in ["kc", "new", "old"] {
        assert_eq!(plugin(&after, name).unwrap()["state"], "stopped", "{name}");
    }
    let table = pulsewatch(&["status", "--db", db.to_str().unwrap()]);
    assert!(
        text(&table.stdout).contains("not running"),
        "{}",
        text(&table.stdout)
    );
}
