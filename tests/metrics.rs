//! Metrics: `pulsewatch run --metrics` serves the run's figures as Prometheus text, scraped over
//! HTTP and read with a real exposition-format parser.

mod common;

use common::procs::signal;
use common::*;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

/// GET `path` from `addr`, the body.
fn get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// `pulsewatch run --follow --metrics 127.0.0.1:0` with `args`, and the address it serves on.
fn run_with_metrics(args: &[&std::ffi::OsStr]) -> (std::process::Child, String) {
    let mut host = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["run", "--follow", "--metrics", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(host.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("pulsewatch: metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (host, addr)
}

/// The value of the sample `name` with `labels` in the exposition `text`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn a_scrape_shows_each_plugin_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 500);
    let db = dir.path().join("events.redb");
    let kind_counts = guest("kind-counts");
    let (mut host, addr) = run_with_metrics(&["--db".as_ref(), db.as_ref(), kind_counts.as_ref()]);
    let plugin = [("plugin", "kind-counts")];
    wait_until("the plugin at the head, in the metrics", || {
        value(&get(&addr, "/metrics"), "pulsewatch_plugin_cursor", &plugin) == Some(500.0)
    });
    fill(&log, 500, 520);
    wait_until("the plugin at the new head", || {
        value(&get(&addr, "/metrics"), "pulsewatch_plugin_cursor", &plugin) == Some(520.0)
    });
    let text = get(&addr, "/metrics");
    let db_label = db.display().to_string();
    assert_eq!(
        value(&text, "pulsewatch_log_head", &[("log", &db_label)]),
        Some(520.0)
    );
    assert_eq!(
        value(&text, "pulsewatch_log_oldest", &[("log", &db_label)]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "pulsewatch_plugin_state",
            &[("plugin", "kind-counts"), ("state", "running")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "pulsewatch_plugin_lag_events", &plugin),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "pulsewatch_plugin_restarts_total", &plugin),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "pulsewatch_plugin_quarantined", &plugin),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "pulsewatch_plugin_memory_limit_bytes", &plugin),
        Some(64.0 * 1024.0 * 1024.0)
    );
    assert!(value(&text, "pulsewatch_plugin_memory_bytes", &plugin).unwrap() > 0.0);
    signal(host.id(), Signal::SIGINT);
    assert!(host.wait().unwrap().success());
}

#[test]
fn json_logs_carry_each_line_with_its_plugin() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 50);
    let run = pulsewatch(&[
        "run",
        "--log-format",
        "json",
        "--db",
        dir.path().join("events.redb").to_str().unwrap(),
        guest("kind-counts").to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let lines = |bytes: &[u8]| -> Vec<serde_json::Value> {
        text(bytes)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    };
    let out = lines(&run.stdout);
    assert!(
        out.iter()
            .all(|l| l["plugin"] == "kind-counts" && l["target"] == "plugin::stdout")
    );
    assert!(out.iter().any(|l| l["message"] == "cursor: 50"), "{out:?}");
    let err = lines(&run.stderr);
    assert!(
        err.iter().any(
            |l| l["message"] == "plugin kind-counts ended cleanly at seq 50"
                && l["level"] == "INFO"
        ),
        "{err:?}"
    );
}

#[test]
fn derived_events_a_plugin_commits_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 200);
    let db = dir.path().join("events.redb");
    let totals = dir.path().join("totals.redb");
    let transform = guest("tenant-totals");
    let (mut host, addr) = run_with_metrics(&[
        "--db".as_ref(),
        db.as_ref(),
        "--output".as_ref(),
        totals.as_ref(),
        transform.as_ref(),
    ]);
    let plugin = [("plugin", "tenant-totals")];
    // One derived event for each event it reads.
    wait_until("every derived event counted", || {
        value(
            &get(&addr, "/metrics"),
            "pulsewatch_plugin_emitted_events_total",
            &plugin,
        ) == Some(200.0)
    });
    assert_eq!(
        pulsewatch::Log::open_read_only(&totals)
            .unwrap()
            .head()
            .unwrap(),
        200,
        "as many as the output log holds"
    );
    signal(host.id(), Signal::SIGINT);
    assert!(host.wait().unwrap().success());
}

#[test]
fn a_run_on_a_jetstream_feed_is_scraped_and_shown_as_one_on_a_log() {
    if !common::nats::available() {
        return;
    }
    let server = common::nats::Server::start();
    let dir = tempfile::tempdir().unwrap();
    drop(log_with(dir.path(), 300));
    let db = dir.path().join("events.redb");
    let stream = format!("{}/EVENTS", server.url);
    assert!(pulsewatch(&["stream", "create", &stream]).status.success());
    let relayed = pulsewatch(&["relay", "--db", db.to_str().unwrap(), "--to", &stream]);
    assert!(relayed.status.success(), "{}", text(&relayed.stderr));
    let state = dir.path().join("state");
    let kind_counts = guest("kind-counts");
    let (mut host, addr) = run_with_metrics(&[
        "--feed".as_ref(),
        stream.as_ref(),
        "--state-dir".as_ref(),
        state.as_ref(),
        kind_counts.as_ref(),
    ]);
    let plugin = [("plugin", "kind-counts")];
    wait_until("the plugin at the head, in the metrics", || {
        value(&get(&addr, "/metrics"), "pulsewatch_plugin_cursor", &plugin) == Some(300.0)
    });
    let text_now = get(&addr, "/metrics");
    for (name, expected) in [
        ("pulsewatch_log_head", 300.0),
        ("pulsewatch_log_oldest", 1.0),
    ] {
        assert_eq!(
            value(&text_now, name, &[("log", &stream)]),
            Some(expected),
            "{text_now}"
        );
    }
    let status = pulsewatch(&[
        "status",
        "--db",
        &stream,
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let shown = text(&status.stdout);
    assert!(
        shown.contains("running (pid") && shown.contains(", head 300,"),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("kind-counts") && l.contains(" 300 ") && l.contains(" 0 ")),
        "{shown}"
    );
    signal(host.id(), Signal::SIGINT);
    assert!(host.wait().unwrap().success());
}
