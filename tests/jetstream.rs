//! The feed on NATS JetStream, against real `nats-server` processes (a single server and a
//! cluster of three): what the feed relies on from the server, the same guests giving the same
//! output on a log and on its stream, an R3 stream losing nothing when a server is killed, and a
//! relay killed again and again publishing each event once at its seq.

mod common;

use async_nats::jetstream::{self, stream};
use common::nats::{Cluster, Server};
use common::{change, guest, log_with, pulsewatch, text};
use futures::StreamExt;
use pulsewatch::jetstream::{
    JetStreamError, StreamAddr, StreamFeed, StreamOptions, StreamOutput, StreamWriter,
    create_stream,
};
use pulsewatch::{Change, Derived, Given, Log, OutputLog, Outputs, PollLimits};
use pulsewatch_log::codec::{Entries, EntryRef};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The configuration `pulsewatch stream create` is to make: nothing can be deleted or purged,
/// so seqs stay gap-free; limits retention trims from the front; direct gets are allowed.
fn config(name: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.events")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// The events after `since`, at most `limit`, by one batched direct get on an inbox: each
/// message is one event, and a status message ends the batch.
async fn batch(
    client: &async_nats::Client,
    stream: &str,
    since: u64,
    limit: usize,
) -> (Vec<(u64, Vec<u8>)>, Option<async_nats::Message>) {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    let request = serde_json::json!({ "seq": since + 1, "batch": limit });
    client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{stream}"),
            inbox,
            request.to_string().into(),
        )
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Some(message) = replies.next().await {
        if message.status.is_some() {
            return (events, Some(message));
        }
        let seq = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Sequence"))
            .and_then(|v| v.as_str().parse().ok())
            .expect("each message names its seq");
        events.push((seq, message.payload.to_vec()));
    }
    (events, None)
}

#[tokio::test]
async fn a_single_server_serves_a_poll_as_one_batched_direct_get() {
    if !common::nats::available() {
        return;
    }
    let server = Server::start();
    let client = async_nats::connect(&server.url).await.unwrap();
    let js = jetstream::new(client.clone());
    js.create_stream(config("feed", 1)).await.unwrap();
    for i in 1..=10u8 {
        js.publish("feed.events", vec![i].into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let (events, end) = batch(&client, "feed", 3, 4).await;
    assert_eq!(
        events,
        (4..=7u8)
            .map(|i| (u64::from(i), vec![i]))
            .collect::<Vec<_>>()
    );
    let end = end.expect("a status ends the batch");
    let last = end
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Last-Sequence"))
        .map(|v| v.as_str().to_owned());
    assert_eq!(last.as_deref(), Some("7"), "{end:?}");

    // Caught up: nothing after the head, and the end says so.
    let (events, end) = batch(&client, "feed", 10, 4).await;
    assert!(events.is_empty());
    assert!(end.is_some());

    // Deleting a message would leave a gap: the stream refuses.
    let stream = js.get_stream("feed").await.unwrap();
    assert!(stream.delete_message(5).await.is_err());
}

#[tokio::test]
async fn a_cluster_of_three_keeps_a_replicated_stream() {
    if !common::nats::available() {
        return;
    }
    let cluster = Cluster::start();
    let addrs: Vec<async_nats::ServerAddr> =
        cluster.urls().iter().map(|u| u.parse().unwrap()).collect();
    let client = async_nats::connect(addrs).await.unwrap();
    let js = jetstream::new(client.clone());
    // The cluster forms and elects its meta leader within a few seconds.
    let started = std::time::Instant::now();
    let created = loop {
        match js.create_stream(config("replicated", 3)).await {
            Ok(created) => break created,
            Err(e) if started.elapsed() < std::time::Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no R3 stream: {e}"),
        }
    };
    assert_eq!(created.cached_info().config.num_replicas, 3);
    for i in 1..=5u8 {
        js.publish("replicated.events", vec![i].into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let (events, _) = batch(&client, "replicated", 0, 100).await;
    assert_eq!(events.len(), 5);
}

/// `nats://` locations of `urls` for `stream`.
fn location(urls: &[String], stream: &str) -> String {
    let servers: Vec<&str> = urls
        .iter()
        .map(|u| u.trim_start_matches("nats://"))
        .collect();
    format!("nats://{}/{stream}", servers.join(","))
}

/// Every packed event of `feed`, from the start, as a new reader polls them.
async fn everything(feed: &Arc<StreamFeed>) -> Result<Vec<u8>, JetStreamError> {
    let mut reader = feed.reader();
    let (mut bytes, mut since) = (Vec::new(), 0);
    loop {
        let packed = reader
            .poll_packed(since, 1000, &PollLimits::default(), &mut bytes)
            .await?;
        if packed.events == 0 {
            return Ok(bytes);
        }
        since = packed.last_seq;
    }
}

/// The stream's last seq, as a new reader finds it.
async fn feed_head(addr: &StreamAddr) -> u64 {
    StreamFeed::open(addr).await.unwrap().head().await.unwrap()
}

/// Every packed event of `log`.
fn everything_in(log: &Log) -> Vec<u8> {
    let (mut bytes, mut since) = (Vec::new(), 0);
    loop {
        let packed = log
            .poll_packed(since, 1000, &PollLimits::default(), &mut bytes)
            .unwrap();
        if packed.events == 0 {
            return bytes;
        }
        since = packed.last_seq;
    }
}

/// Files under `dir`, by path relative to it, with their bytes; the host's own `.pulsewatch`
/// records (cache, status) left out.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == ".pulsewatch") {
                continue;
            }
            if path.is_dir() {
                todo.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                found.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn the_same_guests_give_the_same_output_on_a_log_and_on_its_stream() {
    if !common::nats::available() {
        return;
    }
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 5_000);
    drop(log);
    let db = dir.path().join("events.redb");
    let db = db.to_str().unwrap();
    let stream = location(std::slice::from_ref(&server.url), "EVENTS");

    let made = pulsewatch(&["stream", "create", &stream]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let relayed = pulsewatch(&["relay", "--db", db, "--to", &stream]);
    assert!(relayed.status.success(), "{}", text(&relayed.stderr));
    assert!(
        text(&relayed.stderr).contains("relayed 5000 events; the stream's last seq is 5000"),
        "{}",
        text(&relayed.stderr)
    );

    // `tail` prints the same lines from either.
    let tail = |feed: &str| pulsewatch(&["tail", "--db", feed, "--since", "4990"]);
    let (from_log, from_stream) = (tail(db), tail(&stream));
    assert!(
        from_stream.status.success(),
        "{}",
        text(&from_stream.stderr)
    );
    assert_eq!(text(&from_log.stdout).lines().count(), 10);
    assert_eq!(text(&from_log.stdout), text(&from_stream.stdout));

    let plugins = ["kind-counts", "filter-jsonl", "feed-edges"].map(guest);
    let run = |feed: &str, state: &Path| {
        let mut args = vec!["run", "--db", feed, "--state-dir", state.to_str().unwrap()];
        args.extend(plugins.iter().map(|p| p.to_str().unwrap()));
        let out = pulsewatch(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
        // Plugins run side by side: their lines interleave differently from run to run.
        lines.sort();
        (lines, text(&out.stderr))
    };
    let (on_log, _) = run(db, &dir.path().join("on-log"));
    let (on_stream, said) = run(&stream, &dir.path().join("on-stream"));
    assert!(on_log.len() > 20, "{on_log:?}");
    assert_eq!(on_log, on_stream);
    assert!(
        said.contains("plugin kind-counts ended cleanly at seq 5000"),
        "{said}"
    );
    assert_eq!(
        files(&dir.path().join("on-log")),
        files(&dir.path().join("on-stream"))
    );
    assert!(!files(&dir.path().join("on-stream")).is_empty());
}

#[test]
fn a_stream_that_could_have_gaps_or_is_missing_is_refused_with_what_to_do() {
    if !common::nats::available() {
        return;
    }
    let server = Server::start();
    let missing = location(std::slice::from_ref(&server.url), "NOPE");
    let out = pulsewatch(&[
        "run",
        "--feed",
        &missing,
        guest("kind-counts").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("stream NOPE does not exist: create it with `pulsewatch stream create"),
        "{}",
        text(&out.stderr)
    );

    // A stream made by hand, whose messages can be deleted: refused, not changed.
    let executor = tokio::runtime::Runtime::new().unwrap();
    executor.block_on(async {
        let client = async_nats::connect(&server.url).await.unwrap();
        let js = jetstream::new(client);
        js.create_stream(stream::Config {
            name: "LOOSE".into(),
            subjects: vec!["LOOSE.events".into()],
            allow_direct: true,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let loose = location(std::slice::from_ref(&server.url), "LOOSE");
    for args in [
        vec!["stream", "create", &loose],
        vec![
            "run",
            "--feed",
            &loose,
            guest("kind-counts").to_str().unwrap(),
        ],
    ] {
        let out = pulsewatch(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let said = text(&out.stderr);
        assert!(
            said.contains("stream LOOSE cannot hold a pulsewatch log: messages can be deleted"),
            "{said}"
        );
    }

    let out = pulsewatch(&["append", "--to", "nats://127.0.0.1:1/", "--kind", "created"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_stream_loses_no_acknowledged_event_when_a_server_is_killed() {
    if !common::nats::available() {
        return;
    }
    let mut cluster = Cluster::start();
    let addr: StreamAddr = location(&cluster.urls(), "R3").parse().unwrap();
    let options = StreamOptions {
        replicas: 3,
        ..StreamOptions::default()
    };
    // The cluster forms and elects its meta leader within a few seconds.
    let started = Instant::now();
    while let Err(e) = create_stream(&addr, &options).await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no R3 stream: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let feed = Arc::new(StreamFeed::open(&addr).await.unwrap());
    let mut reader = feed.reader();
    let mut writer = StreamWriter::open(&addr).await.unwrap();
    // A plugin following the stream all along, which fails on any gap or repeat.
    let dir = tempfile::tempdir().unwrap();
    let plugin = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args([
            "run",
            "--follow",
            "--feed",
            &addr.to_string(),
            "--state-dir",
        ])
        .arg(dir.path())
        .arg(guest("seq-check"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Batches of 100, each retried until acknowledged: a retry after a lost acknowledgement
    // stores nothing twice. One server is killed after the tenth.
    let (mut acknowledged, mut polled, mut since) = (0u64, Vec::new(), 0u64);
    let mut killed = None;
    for batch in 0..30u64 {
        let changes: Vec<Change> = (batch * 100..(batch + 1) * 100).map(change).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match writer.append(&changes).await {
                Ok(last) => {
                    assert_eq!(last, (batch + 1) * 100);
                    acknowledged = last;
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "appends did not resume: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if batch == 9 {
            let victim = cluster.servers.remove(1);
            killed = Some(victim.pid());
            drop(victim);
        }
        // Reads go on too, from any server that answers.
        if let Ok(packed) = reader
            .poll_packed(since, 250, &PollLimits::default(), &mut polled)
            .await
        {
            since = packed.last_seq;
        }
    }
    assert!(killed.is_some());
    assert_eq!(acknowledged, 3_000);
    // Every acknowledged event, once, at its seq, and nothing else.
    let deadline = Instant::now() + Duration::from_secs(30);
    // Reads fail while the stream elects a new leader, and then go on.
    let stored = loop {
        let head = feed.head().await.ok();
        let stored = everything(&feed).await;
        if let Ok(stored) = &stored
            && stored.len() >= polled.len()
            && head == Some(3_000)
        {
            break stored.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the stream did not settle: {:?}",
            stored.map(|s| s.len())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let expected = {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path().join("same.redb")).unwrap();
        let changes: Vec<Change> = (0..3_000).map(change).collect();
        log.append_batch(&changes).unwrap();
        everything_in(&log)
    };
    assert!(
        stored == expected,
        "the stream differs from the events appended"
    );
    assert!(
        expected.starts_with(&polled),
        "what was polled during the kill is not a prefix of the events"
    );

    // The plugin went on to the end, without a restart.
    let status = dir.path().join(".pulsewatch/status.json");
    let seq_check = || -> Option<serde_json::Value> {
        let status: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&status).ok()?).ok()?;
        Some(status["plugins"][0].clone())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while seq_check().is_none_or(|p| p["cursor"] != 3_000) {
        assert!(
            Instant::now() < deadline,
            "the plugin stopped at {:?}",
            seq_check()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    common::procs::signal(plugin.id(), nix::sys::signal::Signal::SIGINT);
    let out = plugin.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("first: 1 last: 3000 cursor: 3000"),
        "{}",
        text(&out.stdout)
    );
    let seq_check = seq_check().unwrap();
    assert_eq!(
        seq_check["restarts"],
        0,
        "{seq_check}\n{}",
        text(&out.stderr)
    );
}

#[test]
fn a_relay_killed_ten_times_publishes_each_event_once_at_its_seq() {
    if !common::nats::available() {
        return;
    }
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    let log = Arc::new(Log::create(&db).unwrap());
    let stream = location(std::slice::from_ref(&server.url), "RELAYED");
    assert!(pulsewatch(&["stream", "create", &stream]).status.success());

    // A writer appending all along, in small batches.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (log, writing) = (log.clone(), writing.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<Change> = (i..i + 50).map(change).collect();
                log.append_batch(&batch).unwrap();
                i += 50;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let relay = || {
        Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
            .args([
                "relay",
                "--follow",
                "--db",
                db.to_str().unwrap(),
                "--to",
                &stream,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    for kill in 0..10u64 {
        let mut child = relay();
        std::thread::sleep(Duration::from_millis(150 + 37 * kill));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let head = log.head().unwrap();
    assert!(head >= 1_000, "the writer wrote only {head} events");
    let executor = tokio::runtime::Runtime::new().unwrap();
    let addr: StreamAddr = stream.parse().unwrap();
    let before =
        executor.block_on(async { StreamFeed::open(&addr).await.unwrap().head().await.unwrap() });
    // The killed relays had published most of it, in the middle of the writer's appends.
    assert!(
        before > head / 2,
        "the killed relays published {before} of {head}"
    );

    // A last relay, to the end of the log, says how far it went.
    let out = pulsewatch(&["relay", "--db", db.to_str().unwrap(), "--to", &stream]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("the stream's last seq is {head}")),
        "{}",
        text(&out.stderr)
    );
    let stored = executor.block_on(async {
        let feed = Arc::new(StreamFeed::open(&addr).await.unwrap());
        assert_eq!(feed.head().await.unwrap(), head);
        everything(&feed).await.unwrap()
    });
    assert!(
        stored == everything_in(&log),
        "the stream does not hold exactly the log's events"
    );
}

#[tokio::test]
async fn a_writer_that_lost_a_race_stores_nothing_and_is_told() {
    if !common::nats::available() {
        return;
    }
    let server = Server::start();
    let client = async_nats::connect(&server.url).await.unwrap();
    // One stream as `stream create` makes it (atomic batches), one made by hand without them:
    // a writer publishes each event on its own there.
    let atomic: StreamAddr = location(std::slice::from_ref(&server.url), "ATOMIC")
        .parse()
        .unwrap();
    create_stream(&atomic, &StreamOptions::default())
        .await
        .unwrap();
    let each: StreamAddr = location(std::slice::from_ref(&server.url), "EACH")
        .parse()
        .unwrap();
    let without_batches = stream::Config {
        allow_atomic_publish: false,
        ..pulsewatch::jetstream::stream_config(&each, &StreamOptions::default())
    };
    jetstream::new(client)
        .create_stream(without_batches)
        .await
        .map(drop)
        .unwrap();
    for addr in [atomic, each] {
        let mut first = StreamWriter::open(&addr).await.unwrap();
        let mut second = StreamWriter::open(&addr).await.unwrap();
        let changes: Vec<Change> = (0..1_500).map(change).collect();
        assert_eq!(first.append(&changes).await.unwrap(), 1_500);
        let lost = second.append(&changes[..10]).await.unwrap_err();
        assert!(
            matches!(
                lost,
                JetStreamError::Conflict {
                    expected: 0,
                    found: 1_500,
                    ..
                }
            ),
            "{addr}: {lost}"
        );
        assert!(
            lost.to_string()
                .contains("nothing of this append was stored")
        );
        // Told where the stream stands, it goes on after the other's events.
        assert_eq!(second.append(&changes[..10]).await.unwrap(), 1_510);
        // A writer that appends again what it appended, at the same seqs, under the same id
        // (a retry after a lost acknowledgement, a relay started again) is recognised: its
        // events are not stored twice.
        let mut retry = StreamWriter::open_as(&addr, "retrying").await.unwrap();
        let mut again = StreamWriter::open_as(&addr, "retrying").await.unwrap();
        assert_eq!(retry.append(&changes[..1_200]).await.unwrap(), 2_710);
        assert_eq!(again.append(&changes[..1_200]).await.unwrap(), 2_710);
        assert_eq!(feed_head(&addr).await, 2_710);
        let feed = Arc::new(StreamFeed::open(&addr).await.unwrap());
        let stored = everything(&feed).await.unwrap();
        let expected = {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::create(dir.path().join("same.redb")).unwrap();
            log.append_batch(&changes).unwrap();
            log.append_batch(&changes[..10]).unwrap();
            log.append_batch(&changes[..1_200]).unwrap();
            everything_in(&log)
        };
        assert!(stored == expected, "{addr}: the stream holds other events");
    }
}

#[test]
fn a_manifest_names_a_stream_as_a_plugins_input() {
    if !common::nats::available() {
        return;
    }
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    drop(log_with(dir.path(), 50));
    let stream = location(std::slice::from_ref(&server.url), "INPUT");
    assert!(pulsewatch(&["stream", "create", &stream]).status.success());
    let db = dir.path().join("events.redb");
    assert!(
        pulsewatch(&["relay", "--db", db.to_str().unwrap(), "--to", &stream])
            .status
            .success()
    );
    // The run's own log is empty: what the plugin reads comes from the stream.
    let empty = dir.path().join("empty.redb");
    drop(Log::create(&empty).unwrap());
    let input = format!("input = \"{stream}\"");
    let manifest = common::write_manifest(dir.path(), &[("counts", "kind-counts", &input)]);
    let out = pulsewatch(&[
        "run",
        "--db",
        empty.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("plugin counts ended cleanly at seq 50"),
        "{}",
        text(&out.stderr)
    );

    let bad = common::write_manifest(
        dir.path(),
        &[(
            "counts",
            "kind-counts",
            "input = \"nats://127.0.0.1:1/a.b\"",
        )],
    );
    let out = pulsewatch(&[
        "run",
        "--db",
        empty.to_str().unwrap(),
        "--manifest",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("input") && text(&out.stderr).contains("not a stream location"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_retention_dropped_are_truncated_and_seq_at_goes_by_store_time() {
    if !common::nats::available() {
        return;
    }
    let server = Server::start();
    let addr: StreamAddr = location(std::slice::from_ref(&server.url), "KEPT")
        .parse()
        .unwrap();
    // At most 100 messages: retention drops the oldest as new ones come.
    let config = stream::Config {
        max_messages: 100,
        ..pulsewatch::jetstream::stream_config(&addr, &StreamOptions::default())
    };
    let client = async_nats::connect(&server.url).await.unwrap();
    jetstream::new(client).create_stream(config).await.unwrap();
    let mut writer = StreamWriter::open(&addr).await.unwrap();
    let before = pulsewatch::now_ms();
    let changes: Vec<Change> = (0..300).map(change).collect();
    writer.append(&changes[..150]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = pulsewatch::now_ms();
    tokio::time::sleep(Duration::from_millis(50)).await;
    writer.append(&changes[150..]).await.unwrap();

    let feed = Arc::new(StreamFeed::open(&addr).await.unwrap());
    let mut reader = feed.reader();
    let mut bytes = Vec::new();
    let limits = PollLimits::default();
    // From before the oldest kept: told where to go on, nothing skipped silently.
    for since in [0, 150, 199] {
        let polled = reader.poll_packed(since, 10, &limits, &mut bytes).await;
        assert!(
            matches!(polled, Err(JetStreamError::Truncated { oldest: 201 })),
            "{since}: {polled:?}"
        );
        assert!(bytes.is_empty());
    }
    let packed = reader
        .poll_packed(200, 10, &limits, &mut bytes)
        .await
        .unwrap();
    assert_eq!((packed.events, packed.last_seq), (10, 210));
    assert_eq!(feed.head().await.unwrap(), 300);

    // By store time: everything kept was stored after `before`, and so were the events after
    // `between`, from 151 on; of those, 201 is the first kept, and a poll from 200 returns it.
    assert_eq!(feed.seq_at(before).await.unwrap(), 200);
    assert_eq!(feed.seq_at(between).await.unwrap(), 200);
    assert_eq!(
        feed.seq_at(pulsewatch::now_ms() + 60_000).await.unwrap(),
        300
    );
    assert_eq!(feed.seq_at(u64::MAX).await.unwrap(), 300);
}

/// Every message of stream `name`, from seq 1 on: its seq, its `Pulsewatch-Origin` (empty for
/// an event a writer appended) and its entry.
async fn messages_of(server: &Server, name: &str) -> Vec<(u64, String, Vec<u8>)> {
    let client = async_nats::connect(&server.url).await.unwrap();
    let stream = jetstream::new(client).get_stream(name).await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut found = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.unwrap();
        let origin = message
            .headers
            .get(pulsewatch::jetstream::ORIGIN_HEADER)
            .map_or_else(String::new, |o| o.as_str().to_owned());
        found.push((seq, origin, message.payload.to_vec()));
    }
    found
}

/// An event's fields but its seq and stamp, which differ between outputs.
fn derived_fields(entry: &[u8]) -> (u8, [u8; 32], Vec<u8>) {
    let event = EntryRef::split(entry).unwrap().0;
    let mut ids = [0u8; 32];
    ids[..16].copy_from_slice(&event.entity().to_le_bytes());
    ids[16..].copy_from_slice(&event.collective().to_le_bytes());
    (event.kind() as u8, ids, event.payload().to_vec())
}

/// Commits of one plugin through two outputs on the same stream, as two hosts make them when
/// the plugin moves and the first, stale, host wakes up: whatever order they come in, and
/// however often one is retried, each derived event is stored once, in input order, and the
/// checkpoint never goes back.
#[test]
fn derived_events_in_a_stream_are_stored_once_whoever_commits_them() {
    if !common::nats::available() {
        return;
    }
    let server = Server::start();
    let executor = tokio::runtime::Runtime::new().unwrap();
    let addr: StreamAddr = location(std::slice::from_ref(&server.url), "totals")
        .parse()
        .unwrap();
    executor
        .block_on(create_stream(&addr, &StreamOptions::default()))
        .unwrap();
    // Each with a connection of its own, as on hosts of their own.
    let outputs = || {
        let output = executor.block_on(StreamOutput::open(&addr)).unwrap();
        Outputs::new(
            "t",
            "in.redb",
            vec![("totals".into(), output as Arc<dyn OutputLog>)],
        )
    };
    let (a, b) = (outputs(), outputs());
    let derived = |from: u64, n: u32| -> Vec<(u32, Derived)> {
        (0..n)
            .map(|i| {
                let change = change(from).with_payload(format!("{from}:{i}"));
                (0, Derived { from, change })
            })
            .collect()
    };
    let range = |from: u64, to: u64, n: u32| -> Vec<(u32, Derived)> {
        (from..=to).flat_map(|s| derived(s, n)).collect()
    };
    let given = |start: u64, delivered: u64| Given {
        start: Some(start),
        delivered,
    };

    assert!(a.committed().unwrap().is_none());
    a.commit(10, given(0, 10), b"a10", range(1, 10, 2)).unwrap();
    // The plugin moves: the new host resumes from the checkpoint and goes further, in more
    // than one atomic batch (2,400 events).
    let resumed = b.committed().unwrap().unwrap();
    assert_eq!(
        (resumed.cursor, resumed.state.as_deref()),
        (10, Some(&b"a10"[..]))
    );
    b.commit(1_210, given(10, 1_210), b"b1210", range(11, 1_210, 2))
        .unwrap();
    // The stale host, which knows nothing of it, commits what it had derived meanwhile:
    // nothing is stored twice, and its older checkpoint is not kept.
    a.commit(15, given(0, 15), b"a15", range(11, 15, 2))
        .unwrap();
    // And a host that resumed from a checkpoint read before the last commits (or retries a
    // commit whose answer it lost): what it derives again is dropped, what is new is stored.
    let late = outputs();
    late.set_base(10);
    late.commit(1_300, given(10, 1_300), b"c1300", range(11, 1_300, 2))
        .unwrap();
    let checkpoint = b.committed().unwrap().unwrap();
    assert_eq!(
        (checkpoint.cursor, checkpoint.state.as_deref()),
        (1_300, Some(&b"c1300"[..]))
    );
    // An event no message of the server can hold breaks a rule: refused, nothing written.
    let mut huge = derived(1_301, 1);
    huge[0].1.change.payload = vec![b'x'; 2 << 20];
    let refused = b.commit(1_301, given(1_300, 1_301), b"big", huge);
    assert!(
        matches!(&refused, Err(pulsewatch::OutputError::Invalid(why)) if why.contains("bytes of payload")),
        "{refused:?}"
    );

    let stored = executor.block_on(messages_of(&server, "totals"));
    let expected: Vec<String> = (1..=1_300u64)
        .flat_map(|s| (0..2).map(move |i| format!("t:{s}:{i}")))
        .collect();
    let origins: Vec<&str> = stored.iter().map(|(_, o, _)| o.as_str()).collect();
    assert_eq!(origins, expected);
    for (seq, origin, entry) in &stored {
        let event = EntryRef::split(entry).unwrap().0;
        assert_eq!(
            event.seq(),
            *seq,
            "each entry encodes the seq it is stored at"
        );
        let (_, from, index) = {
            let mut parts = origin.split(':');
            (parts.next(), parts.next().unwrap(), parts.next().unwrap())
        };
        assert_eq!(event.payload(), format!("{from}:{index}").as_bytes());
    }
}

/// `pulsewatch run --output nats://...`: a transform killed again and again while it commits
/// into a stream leaves each input event's derived events there once, in input order, the same
/// as it derives into a log.
#[test]
fn a_transform_killed_while_it_commits_into_a_stream_derives_each_event_once() {
    if !common::nats::available() {
        return;
    }
    const EVENTS: u64 = 20_000;
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    drop(log_with(dir.path(), EVENTS));
    let db = dir.path().join("events.redb");
    let stream = location(std::slice::from_ref(&server.url), "totals");
    let made = pulsewatch(&["stream", "create", &stream]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let transform = guest("tenant-totals");
    let run = |output: &str, state: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pulsewatch"));
        command
            .args(["run", "--db", db.to_str().unwrap(), "--output", output])
            .args(["--state-dir", dir.path().join(state).to_str().unwrap()])
            .arg(&transform)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    let into_log = run(dir.path().join("totals.redb").to_str().unwrap(), "a")
        .output()
        .unwrap();
    assert!(into_log.status.success(), "{}", text(&into_log.stderr));

    let executor = tokio::runtime::Runtime::new().unwrap();
    let stored = |executor: &tokio::runtime::Runtime| {
        executor.block_on(async {
            let client = async_nats::connect(&server.url).await.unwrap();
            let mut stream = jetstream::new(client).get_stream("totals").await.unwrap();
            stream.info().await.unwrap().state.last_sequence
        })
    };
    // Killed (with its worker) as the stream passes each mark: in the middle of its commits.
    for mark in [3_000, 8_000, 13_000] {
        let mut child = run(&stream, "b").spawn().unwrap();
        common::wait_until(&format!("{mark} derived events"), || {
            stored(&executor) >= mark
        });
        for pid in common::procs::descendants(child.id()) {
            common::procs::signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(stored(&executor) < EVENTS, "killed after its last commit");
    }
    let last = run(&stream, "b").output().unwrap();
    assert!(last.status.success(), "{}", text(&last.stderr));
    assert!(
        text(&last.stdout).contains(&format!("committed through seq {EVENTS}")),
        "{}",
        text(&last.stdout)
    );
    // Once more: nothing is left to derive.
    assert!(run(&stream, "b").output().unwrap().status.success());
    // `tail` says where a derived event came from, as from a log.
    let tail = pulsewatch(&["tail", "--db", &stream, "--limit", "1"]);
    let line = text(&tail.stdout);
    assert!(
        line.contains(r#""plugin":"tenant-totals","seq":1,"index":0},"id":"tenant-totals:1:0""#),
        "{line}"
    );

    let in_stream = executor.block_on(messages_of(&server, "totals"));
    let origins: Vec<&str> = in_stream.iter().map(|(_, o, _)| o.as_str()).collect();
    let expected: Vec<String> = (1..=EVENTS)
        .map(|s| format!("tenant-totals:{s}:0"))
        .collect();
    assert_eq!(origins, expected);
    let in_log = everything_in(&Log::open_read_only(dir.path().join("totals.redb")).unwrap());
    let in_log: Vec<_> = Entries::new(&in_log)
        .map(|e| derived_fields(e.as_bytes()))
        .collect();
    let in_stream: Vec<_> = in_stream
        .iter()
        .map(|(_, _, e)| derived_fields(e))
        .collect();
    assert!(
        in_stream == in_log,
        "the stream's derived events are not the log's"
    );
}
