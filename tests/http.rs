//! Outbound HTTP: only to granted destinations, never to private addresses a grant does not
//! name, within the host's timeouts and caps, with idempotency keys that survive a replay and
//! signatures the plugin cannot see or forge. Against a real HTTP server on loopback.

mod common;

use common::procs::{descendants, signal};
use common::receiver::{Receiver, Reply};
use common::*;
use nix::sys::signal::Signal;
use pulsewatch::{AllowedHost, Secret};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

fn grant(text: &str) -> AllowedHost {
    text.parse().unwrap()
}

/// Runs the probe on `url` with `grants` (and a first-byte timeout in ms), and returns what it
/// printed.
fn probe(dir: &std::path::Path, grants: &[&str], url: &str, first_byte_ms: Option<u64>) -> String {
    let h = Harness::new(dir);
    let log = log_with(dir, 1);
    let mut spec = h.spec("http-probe");
    spec.args = std::iter::once(url.to_owned())
        .chain(first_byte_ms.map(|ms| ms.to_string()))
        .collect();
    spec.allowed_outbound_hosts = grants.iter().map(|g| grant(g)).collect();
    let plugin = h.runtime.load(&spec).unwrap();
    let outcome = &h.run_all(&[plugin], &log)[0];
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    h.lines
        .of("http-probe", pulsewatch::Stream::Stdout)
        .join("\n")
}

#[test]
fn a_plugin_without_a_grant_cannot_import_http() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(dir.path());
    let refused = h
        .runtime
        .load(&h.spec("http-probe"))
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("imports `wasi:http/")
            && refused.contains("granted no outbound hosts")
            && refused.contains("allowed_outbound_hosts"),
        "{refused}"
    );
}

#[test]
fn only_granted_destinations_are_reached() {
    let dir = tempfile::tempdir().unwrap();
    let granted = Receiver::start(|_, _| Reply::ok());
    let other = Receiver::start(|_, _| Reply::ok());
    let grants = [format!("http://127.0.0.1:{}", granted.addr.port())];
    let grants: Vec<&str> = grants.iter().map(String::as_str).collect();

    let said = probe(dir.path(), &grants, &granted.url("/hook"), None);
    assert_eq!(said, "status 200, 10 bytes");
    assert_eq!(granted.requests()[0].path, "/hook");

    // Another port of the same address: refused before any connection.
    let said = probe(dir.path(), &grants, &other.url("/"), None);
    assert_eq!(said, "error: ErrorCode::HttpRequestDenied");
    assert_eq!(other.connections(), 0);
    let said = probe(dir.path(), &grants, "http://example.com/", None);
    assert_eq!(said, "error: ErrorCode::HttpRequestDenied");

    // https is TLS: a plain HTTP server on the other end fails the handshake, and no request
    // is made.
    let tls = format!("https://127.0.0.1:{}", granted.addr.port());
    let said = probe(dir.path(), &[&tls], &format!("{tls}/"), None);
    assert!(said.starts_with("error: "), "{said}");
    assert_eq!(granted.requests().len(), 1);

    // `run -v` says each request; `--allow-outbound-host` grants it.
    let db = dir.path().join("events.redb");
    let run = pulsewatch(&[
        "run",
        "-v",
        "--db",
        db.to_str().unwrap(),
        "--allow-outbound-host",
        grants[0],
        "--arg",
        &format!("http-probe={}", granted.url("/logged")),
        guest("http-probe").to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let said = text(&run.stderr);
    assert!(
        said.contains(&format!(
            "pulsewatch: plugin http-probe: http GET {}: 200 OK in ",
            granted.url("/logged")
        )),
        "{said}"
    );
}

#[test]
fn private_addresses_need_a_grant_that_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Receiver::start(|_, _| Reply::ok());
    let port = server.addr.port();
    // Any host on that port: a name that resolves to loopback is still refused, and so are
    // private, link-local (the cloud metadata service) and v4-mapped addresses.
    let any = format!("http://*:{port}");
    for url in [
        format!("http://localhost:{port}/"),
        format!("http://127.0.0.1:{port}/"),
        format!("http://10.0.0.1:{port}/"),
        format!("http://169.254.169.254:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
    ] {
        let said = probe(dir.path(), &[&any], &url, None);
        assert_eq!(said, "error: ErrorCode::DestinationIpProhibited", "{url}");
    }
    assert_eq!(server.connections(), 0);
    // Named, they are reached.
    let named = format!("http://localhost:{port}");
    let said = probe(
        dir.path(),
        &[&named],
        &format!("http://localhost:{port}/"),
        None,
    );
    assert_eq!(said, "status 200, 10 bytes");
}

#[test]
fn slow_and_endless_responses_hit_the_host_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Receiver::start(|_, _| Reply {
        delay: Duration::from_millis(1500),
        ..Reply::ok()
    });
    let grant = format!("http://127.0.0.1:{}", slow.addr.port());
    let said = probe(dir.path(), &[&grant], &slow.url("/"), Some(200));
    assert_eq!(said, "error: ErrorCode::ConnectionReadTimeout");

    let endless = Receiver::start(|_, _| Reply {
        endless: true,
        ..Reply::ok()
    });
    let grant = format!("http://127.0.0.1:{}", endless.addr.port());
    let said = probe(dir.path(), &[&grant], &endless.url("/"), None);
    assert!(
        said.starts_with("error after ")
            && said.contains("HTTP response body size exceeds limit: 4194304 bytes"),
        "{said}"
    );
    let bytes: u64 = said["error after ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes <= 4 << 20, "{bytes} bytes passed the cap");
}

/// The Standard Webhooks signature of a request as the receiver got it.
fn expected_signature(key: &[u8], request: &common::receiver::Received) -> String {
    use base64::Engine as _;
    use hmac::Mac;
    let id = request.header("webhook-id").unwrap();
    let timestamp = request.header("webhook-timestamp").unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&request.body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{sig}")
}

#[test]
fn the_webhook_delivers_signed_requests_with_stable_keys_over_few_connections() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 200);
    // Every 7th request fails once with a 503: the webhook retries it.
    let receiver = Receiver::start(|request, index| {
        let first = index % 7 == 3 && !request.body.is_empty();
        Reply {
            status: if first { 503 } else { 200 },
            ..Reply::ok()
        }
    });
    let h = Harness::new(dir.path());
    let mut spec = h.spec("webhook");
    spec.args = vec![receiver.url("/events"), "kind=updated".into()];
    spec.allowed_outbound_hosts =
        vec![grant(&format!("http://127.0.0.1:{}", receiver.addr.port()))];
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    spec.webhook_secret = Some(Secret(secret.into()));
    let plugin = h.runtime.load(&spec).unwrap();
    let outcome = &h.run_all(&[plugin], &log)[0];
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);

    let updated: Vec<u64> = log
        .poll(0, 1000)
        .unwrap()
        .events
        .iter()
        .filter(|e| e.change.kind == pulsewatch::ChangeKind::Updated)
        .map(|e| e.seq)
        .collect();
    let requests = receiver.requests();
    let key = pulsewatch::decode_secret(secret).unwrap();
    let mut keys: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for request in &requests {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["kind"], "updated");
        let id = request.header("webhook-id").unwrap().to_owned();
        assert_eq!(request.header("idempotency-key"), Some(id.as_str()));
        assert_eq!(
            request.header("webhook-signature").unwrap(),
            expected_signature(&key, request)
        );
        keys.entry(body["seq"].as_u64().unwrap())
            .or_default()
            .push(id);
    }
    assert_eq!(keys.keys().copied().collect::<Vec<_>>(), updated);
    // A retried request is the same request: the same key.
    let retried = keys.values().filter(|ids| ids.len() > 1).count();
    assert!(retried > 0);
    assert!(keys.values().all(|ids| ids.iter().all(|id| *id == ids[0])));
    // The webhook keeps up to 8 requests in flight: at most a connection each, reused.
    assert!(
        receiver.connections() <= 8,
        "{} connections for {} requests: not kept alive",
        receiver.connections(),
        requests.len()
    );
    assert!(
        h.lines
            .of("webhook", pulsewatch::Stream::Stdout)
            .contains(&format!(
                "webhook: delivered {}, refused 0, through seq 200",
                updated.len()
            ))
    );
}

#[test]
fn keys_are_the_same_when_a_killed_plugin_replays() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 100);
    drop(log);
    let receiver = Receiver::start(|_, _| Reply {
        delay: Duration::from_millis(15),
        ..Reply::ok()
    });
    let manifest = write_manifest(
        dir.path(),
        &[(
            "webhook",
            "webhook",
            &format!(
                "args = [\"{}\"]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]",
                receiver.url("/"),
                receiver.addr.port()
            ),
        )],
    );
    let mut host = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["run", "--follow", "--manifest"])
        .arg(&manifest)
        .arg("--db")
        .arg(dir.path().join("events.redb"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Part-way through its first batch of 100, its worker is killed; its restart replays the
    // batch from its last commit (none).
    wait_until("some deliveries", || receiver.requests().len() >= 30);
    for worker in descendants(host.id()) {
        signal(worker, Signal::SIGKILL);
    }
    wait_until("every event delivered after the restart", || {
        let seqs: std::collections::BTreeSet<String> = receiver
            .requests()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        seqs.len() == 100
    });
    signal(host.id(), Signal::SIGINT);
    host.wait().unwrap();
    // `status` counts the requests of the plugin's last worker.
    let status = pulsewatch(&[
        "status",
        "--db",
        dir.path().join("events.redb").to_str().unwrap(),
        "--json",
    ]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let usage = &status["plugins"][0]["usage"];
    assert!(usage["http_requests"].as_u64().unwrap() >= 70, "{usage}");
    assert_eq!(usage["http_failures"], 0, "{usage}");
    assert!(usage["http_bytes"].as_u64().unwrap() > 0, "{usage}");

    let mut keys: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for request in receiver.requests() {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        keys.entry(body["seq"].as_u64().unwrap())
            .or_default()
            .push(request.header("webhook-id").unwrap().to_owned());
    }
    assert_eq!(keys.len(), 100);
    let replayed = keys.values().filter(|ids| ids.len() > 1).count();
    assert!(replayed >= 30, "{replayed} events were sent again");
    for (seq, ids) in &keys {
        assert!(ids.iter().all(|id| *id == ids[0]), "seq {seq}: {ids:?}");
    }
    let distinct: std::collections::BTreeSet<&String> = keys.values().map(|ids| &ids[0]).collect();
    assert_eq!(distinct.len(), 100, "each event has a key of its own");
}

/// The host's work on each request is charged to the plugin, and each answer grants a little
/// CPU for it: a plugin making a request per event gets through batches of 1,000.
#[test]
fn a_request_per_event_fits_the_cpu_budget() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 2000);
    let receiver = Receiver::start(|_, _| Reply::ok());
    let h = Harness::new(dir.path());
    let mut spec = h.spec("webhook");
    spec.args = vec![receiver.url("/events")];
    spec.allowed_outbound_hosts =
        vec![grant(&format!("http://127.0.0.1:{}", receiver.addr.port()))];
    let plugin = h.runtime.load(&spec).unwrap();
    let outcome = &h.run_all(&[plugin], &log)[0];
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert_eq!(receiver.requests().len(), 2000);
    assert!(receiver.connections() <= 8, "{}", receiver.connections());
}
