//! `pulsewatch run --metrics ADDR`: the run's figures as Prometheus text on `/metrics`, read
//! from the run's status and the log when scraped (nothing is sampled between scrapes).

use super::jetstream::Feed;
use super::operate::rows;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use pulsewatch::Home;
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What a scrape reads.
#[derive(Clone)]
struct Source {
    db: PathBuf,
    home: Home,
    /// The log or stream, opened at the first scrape and kept: a log's handle costs a file
    /// watch, of which a user has few; a stream's a connection.
    log: Arc<Mutex<Option<Arc<Feed>>>>,
}

impl Source {
    fn log(&self) -> anyhow::Result<Arc<Feed>> {
        let mut held = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = held.as_ref() {
            return Ok(Arc::clone(log));
        }
        let log = Arc::new(Feed::open(&self.db)?);
        *held = Some(Arc::clone(&log));
        Ok(log)
    }
}

/// Serves `/metrics` on `addr` on a thread of its own for as long as the process; returns the
/// address it listens on (a port 0 is chosen by the system).
pub fn serve(addr: SocketAddr, db: &Path, home: Home) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("--metrics {addr}: cannot listen: {e}"))?;
    let addr = listener.local_addr()?;
    let source = Source {
        db: db.to_path_buf(),
        home,
        log: Arc::default(),
    };
    super::http::serve(listener, move |request| {
        let source = source.clone();
        let path = request.uri().path().to_owned();
        // Reading a stream's state waits on its own executor: not on this one's thread.
        async move {
            let answered = tokio::task::spawn_blocking(move || answer(&path, &source)).await;
            Ok(answered.unwrap_or_else(|_| {
                failed("cannot read the run's figures: the host panicked".into())
            }))
        }
    })?;
    Ok(addr)
}

/// A 500 answer saying `why`.
fn failed(why: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(why)));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

fn answer(path: &str, source: &Source) -> Response<Full<Bytes>> {
    if path != "/metrics" {
        let mut response = Response::new(Full::new(Bytes::from_static(b"see /metrics\n")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    let text = match exposition(source) {
        Ok(text) => text,
        Err(e) => {
            // Opened again at the next scrape.
            *source.log.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return failed(format!("cannot read the run's figures: {e:#}\n"));
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// A label value, escaped as the exposition format says.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its help, type and samples (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// A per-plugin metric family: name, type, help, and the value of a plugin's row.
type Family<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a dyn Fn(&super::operate::Row) -> Option<f64>,
);

/// The run's figures, as Prometheus text.
fn exposition(source: &Source) -> anyhow::Result<String> {
    let log = source.log()?;
    let head = log.head()?;
    let oldest = log.oldest()?;
    let run = source.home.status()?;
    let rows = run
        .as_ref()
        .map(|run| rows(&log, head, run))
        .unwrap_or_default();
    let mut out = String::new();
    let db = label(&source.db.display().to_string());
    family(
        &mut out,
        "pulsewatch_log_head",
        "gauge",
        "The seq of the newest event in the log.",
        &[(format!("log=\"{db}\""), head as f64)],
    );
    family(
        &mut out,
        "pulsewatch_log_oldest",
        "gauge",
        "The seq of the oldest event the log still holds.",
        &[(format!("log=\"{db}\""), oldest as f64)],
    );
    let plugin = |row: &super::operate::Row| format!("plugin=\"{}\"", label(&row.status.name));
    let per_plugin = |value: &dyn Fn(&super::operate::Row) -> Option<f64>| -> Vec<(String, f64)> {
        rows.iter()
            .filter_map(|row| Some((plugin(row), value(row)?)))
            .collect()
    };
    let states = [
        "starting",
        "running",
        "backing-off",
        "quarantined",
        "stopped",
        "finished",
        "failed",
    ];
    let mut state_samples = Vec::new();
    for row in &rows {
        let now = serde_json::to_value(row.status.state)?
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for state in states {
            state_samples.push((
                format!("{},state=\"{state}\"", plugin(row)),
                f64::from(u8::from(now == state)),
            ));
        }
    }
    family(
        &mut out,
        "pulsewatch_plugin_state",
        "gauge",
        "1 for the state the plugin is in.",
        &state_samples,
    );
    let families: [Family<'_>; 15] = [
        (
            "pulsewatch_plugin_cursor",
            "gauge",
            "The seq of the last event the plugin has read through.",
            &|r| r.status.cursor.map(|c| c as f64),
        ),
        (
            "pulsewatch_plugin_lag_events",
            "gauge",
            "Events in the log after the plugin's cursor.",
            &|r| r.lag_events.map(|l| l as f64),
        ),
        (
            "pulsewatch_plugin_lag_seconds",
            "gauge",
            "How far behind the head the plugin is, in the writer's time.",
            &|r| r.lag_ms.map(|l| l as f64 / 1000.0),
        ),
        (
            "pulsewatch_plugin_events_delivered_total",
            "counter",
            "Events the plugin has read through (its cursor).",
            &|r| Some(r.status.cursor.unwrap_or(0) as f64),
        ),
        (
            "pulsewatch_plugin_restarts_total",
            "counter",
            "Times the plugin was started again after a failure.",
            &|r| Some(f64::from(r.status.restarts)),
        ),
        (
            "pulsewatch_plugin_quarantined",
            "gauge",
            "1 if the plugin is quarantined.",
            &|r| Some(f64::from(u8::from(r.status.quarantine.is_some()))),
        ),
        (
            "pulsewatch_plugin_cpu_seconds_total",
            "counter",
            "CPU time of the plugin's worker process.",
            &|r| Some(r.status.usage.cpu_ms as f64 / 1000.0),
        ),
        (
            "pulsewatch_plugin_memory_bytes",
            "gauge",
            "The plugin's linear memory.",
            &|r| Some(r.status.usage.held.memory_bytes as f64),
        ),
        (
            "pulsewatch_plugin_memory_limit_bytes",
            "gauge",
            "The plugin's memory limit.",
            &|r| Some(r.status.limits.memory_bytes as f64),
        ),
        (
            "pulsewatch_plugin_disk_bytes",
            "gauge",
            "Bytes in the plugin's /state.",
            &|r| Some(r.status.usage.held.disk_bytes as f64),
        ),
        (
            "pulsewatch_plugin_disk_limit_bytes",
            "gauge",
            "The plugin's disk quota.",
            &|r| Some(r.status.limits.disk.bytes as f64),
        ),
        (
            "pulsewatch_plugin_http_requests_total",
            "counter",
            "HTTP requests the plugin's current worker sent.",
            &|r| Some(r.status.usage.held.http_requests as f64),
        ),
        (
            "pulsewatch_plugin_http_failures_total",
            "counter",
            "Of those, the ones that got no response.",
            &|r| Some(r.status.usage.held.http_failures as f64),
        ),
        (
            "pulsewatch_plugin_http_bytes_total",
            "counter",
            "HTTP body bytes sent and received.",
            &|r| Some(r.status.usage.held.http_bytes as f64),
        ),
        (
            "pulsewatch_plugin_emitted_events_total",
            "counter",
            "Derived events the plugin's current worker committed to its output logs.",
            &|r| Some(r.status.usage.held.emitted_events as f64),
        ),
    ];
    for (name, kind, help, value) in families {
        family(&mut out, name, kind, help, &per_plugin(value));
    }
    Ok(out)
}
