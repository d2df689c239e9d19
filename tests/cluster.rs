//! Hosts sharing plugins (`run --cluster`), as real `pulsewatch run` processes on one stream of
//! a real `nats-server`: each plugin runs on one host at a time, a killed host's plugins resume
//! on the others from their checkpoints, and a host paused past its lease writes nothing when it
//! resumes.

mod common;

use common::nats::Server;
use common::procs::{alive, descendants, signal};
use common::{change, wait_until, write_manifest};
use nix::sys::signal::Signal;
use pulsewatch::Change;
use pulsewatch::jetstream::cluster::{Held, Member};
use pulsewatch::jetstream::{
    ORIGIN_HEADER, StreamAddr, StreamOptions, StreamWriter, create_stream,
};
use pulsewatch_log::codec::EntryRef;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One `pulsewatch run --cluster` process, with the lines it has written.
struct Host {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Host {
    fn start(addr: &StreamAddr, manifest: &Path, cluster: &str, state: &Path) -> Host {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
            .args(["run", "--feed", &addr.to_string(), "--cluster", cluster])
            .arg("--manifest")
            .arg(manifest)
            .arg("--state-dir")
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let into = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    into.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Host {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether it has said a line containing `what`.
    fn said(&self, what: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|l| l.contains(what))
    }

    /// The plugins it has taken.
    fn taken(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                l.strip_prefix("pulsewatch: plugin ")?
                    .strip_suffix(": taken")
            })
            .map(str::to_owned)
            .collect()
    }

    /// Stops it with SIGINT; its stdout.
    fn stop(mut self) -> Vec<String> {
        let mut child = self.child.take().unwrap();
        signal(child.id(), Signal::SIGINT);
        let status = child.wait().unwrap();
        assert!(status.success(), "{:?}", self.stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(200));
        self.stdout.lock().unwrap().clone()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            for pid in descendants(child.id()) {
                signal(pid, Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The events `from..to` (by index) appended to the stream.
fn append(executor: &tokio::runtime::Runtime, addr: &StreamAddr, from: u64, to: u64) {
    let changes: Vec<Change> = (from..to).map(change).collect();
    executor.block_on(async {
        let mut writer = StreamWriter::open(addr).await.unwrap();
        writer.append(&changes).await.unwrap();
    });
}

/// Who holds each plugin of cluster `name`, and its last checkpoint.
fn held(executor: &tokio::runtime::Runtime, addr: &StreamAddr, name: &str) -> Vec<Held> {
    // Nothing is held before the first host has made the cluster's buckets.
    executor.block_on(async {
        match Member::join(addr, name, "", 1).await {
            Ok(member) => member.held().await.unwrap(),
            Err(_) => Vec::new(),
        }
    })
}

/// Waits until every plugin of `plugins` is held and checkpointed at `cursor`.
fn checkpointed(
    executor: &tokio::runtime::Runtime,
    addr: &StreamAddr,
    name: &str,
    plugins: usize,
    cursor: u64,
) {
    wait_until(
        &format!("{plugins} plugins checkpointed at {cursor}"),
        || {
            let held = held(executor, addr, name);
            held.len() == plugins && held.iter().all(|h| h.cursor == Some(cursor))
        },
    );
}

/// A stream of `events` events and a manifest of `plugins` seq-check plugins, `p1`...
fn setup(
    server: &Server,
    dir: &Path,
    plugins: usize,
    events: u64,
) -> (tokio::runtime::Runtime, StreamAddr, std::path::PathBuf) {
    let executor = tokio::runtime::Runtime::new().unwrap();
    let addr: StreamAddr = format!("{}/EVENTS", server.url).parse().unwrap();
    executor
        .block_on(create_stream(&addr, &StreamOptions::default()))
        .unwrap();
    append(&executor, &addr, 0, events);
    let names: Vec<String> = (1..=plugins).map(|i| format!("p{i}")).collect();
    let entries: Vec<(&str, &str, &str)> = names
        .iter()
        .map(|n| (n.as_str(), "seq-check", ""))
        .collect();
    let manifest = write_manifest(dir, &entries);
    (executor, addr, manifest)
}

/// Each plugin's received ranges, from `seq-check`'s last lines: `[p1] received: N first: F
/// last: L cursor: C`.
fn ranges(lines: &[String]) -> Vec<(String, u64, u64)> {
    lines
        .iter()
        .filter_map(|line| {
            let (plugin, rest) = line.strip_prefix('[')?.split_once("] received: ")?;
            let words: Vec<&str> = rest.split_whitespace().collect();
            let first = words.get(2)?.parse().ok()?;
            let last = words.get(4)?.parse().ok()?;
            Some((plugin.to_owned(), first, last))
        })
        .collect()
}

#[test]
fn a_killed_hosts_plugins_resume_on_the_others_from_their_checkpoints() {
    if !common::nats::available() {
        return;
    }
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (executor, addr, manifest) = setup(&server, dir.path(), 6, 200);
    let hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .map(|h| Host::start(&addr, &manifest, "shared", &dir.path().join(h)))
        .collect();
    // Each plugin on one host, two a host, each at the head.
    checkpointed(&executor, &addr, "shared", 6, 200);
    for host in &hosts {
        assert_eq!(host.taken().len(), 2, "{:?}", host.stderr.lock().unwrap());
    }

    let mut hosts = hosts;
    let killed = hosts.remove(2);
    let moved = killed.taken();
    let workers = descendants(killed.pid());
    signal(killed.pid(), Signal::SIGKILL);
    let started = Instant::now();
    wait_until("the killed host's plugins taken by the others", || {
        let taken: Vec<String> = hosts.iter().flat_map(Host::taken).collect();
        moved.iter().all(|p| taken.contains(p))
    });
    let failover = started.elapsed();
    // The lease lasts 10 s after its last renewal; the others look every second.
    assert!(failover < Duration::from_secs(25), "{failover:?}");
    wait_until("the killed host's workers gone", || {
        workers.iter().all(|&pid| !alive(pid))
    });
    drop(killed);

    append(&executor, &addr, 200, 300);
    checkpointed(&executor, &addr, "shared", 6, 300);
    let survivors: Vec<String> = hosts.iter().map(|h| format!("-{}", h.pid())).collect();
    for h in held(&executor, &addr, "shared") {
        assert!(survivors.iter().any(|s| h.host.ends_with(s)), "{h:?}");
    }
    // `status` shows the two live hosts (the dead one's heartbeat has expired with its
    // leases) and each plugin on one of them.
    let status = common::pulsewatch(&["status", "--db", &addr.to_string(), "--cluster", "shared"]);
    assert!(status.status.success(), "{}", common::text(&status.stderr));
    let shown = common::text(&status.stdout);
    assert!(shown.starts_with("cluster shared: 2 hosts"), "{shown}");
    for plugin in (1..=6).map(|i| format!("p{i}")) {
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with(&format!("  plugin {plugin} on "))
                    && survivors.iter().any(|s| l.contains(&format!("{s},")))
                    && l.ends_with("checkpointed at 300")),
            "{shown}"
        );
    }

    // Every event reached every plugin exactly once: on its first host up to the kill, on the
    // one that took it over from its checkpoint on.
    let mut lines = Vec::new();
    for host in hosts {
        lines.extend(host.stop());
    }
    for plugin in (1..=6).map(|i| format!("p{i}")) {
        let mut seen: Vec<(u64, u64)> = ranges(&lines)
            .into_iter()
            .filter(|(p, _, _)| *p == plugin)
            .map(|(_, first, last)| (first, last))
            .collect();
        seen.sort();
        let expected = if moved.contains(&plugin) {
            vec![(201, 300)]
        } else {
            vec![(1, 300)]
        };
        assert_eq!(seen, expected, "{plugin}: {lines:?}");
    }
    eprintln!("failover took {failover:?}");
}

#[test]
fn a_host_paused_past_its_lease_writes_nothing_when_it_resumes() {
    if !common::nats::available() {
        return;
    }
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (executor, addr, manifest) = setup(&server, dir.path(), 2, 100);
    let paused = Host::start(&addr, &manifest, "fenced", &dir.path().join("a"));
    let other = Host::start(&addr, &manifest, "fenced", &dir.path().join("b"));
    checkpointed(&executor, &addr, "fenced", 2, 100);
    let moved = paused.taken();
    assert_eq!(moved.len(), 1);

    // The whole host stops, as a machine or a VM that is paused: its supervisor and workers.
    let processes: Vec<u32> = std::iter::once(paused.pid())
        .chain(descendants(paused.pid()))
        .collect();
    for &pid in &processes {
        signal(pid, Signal::SIGSTOP);
    }
    wait_until("the other host took the paused host's plugin", || {
        other.taken().contains(&moved[0])
    });
    append(&executor, &addr, 100, 150);
    checkpointed(&executor, &addr, "fenced", 2, 150);

    for &pid in &processes {
        signal(pid, Signal::SIGCONT);
    }
    wait_until("the resumed host gave its plugin up", || {
        paused.said(&format!("plugin {}: lease lost", moved[0]))
    });
    append(&executor, &addr, 150, 160);
    checkpointed(&executor, &addr, "fenced", 2, 160);
    // Its checkpoints are the other host's: the resumed one wrote none, before or after it
    // learnt it had lost the plugin.
    let other_host = format!("-{}", other.pid());
    let held = held(&executor, &addr, "fenced");
    assert!(
        held.iter().all(|h| h.host.ends_with(&other_host)),
        "{held:?}"
    );
    paused.stop();
    let out = other.stop();
    assert!(
        ranges(&out)
            .iter()
            .any(|(p, first, last)| *p == moved[0] && *first == 101 && *last == 160),
        "{out:?}"
    );
}

/// Hosts sharing transforms that derive into a stream: a host SIGKILLed (with its workers) while
/// its plugins commit leaves each input event's derived event in the stream once, in input
/// order, and the plugins that moved go on from their checkpoints with their state: all four
/// derive the same events.
#[test]
fn a_killed_hosts_transforms_derive_each_event_once_into_a_stream() {
    if !common::nats::available() {
        return;
    }
    const EVENTS: u64 = 4_000;
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let executor = tokio::runtime::Runtime::new().unwrap();
    let addr: StreamAddr = format!("{}/EVENTS", server.url).parse().unwrap();
    let totals: StreamAddr = format!("{}/totals", server.url).parse().unwrap();
    for stream in [&addr, &totals] {
        executor
            .block_on(create_stream(stream, &StreamOptions::default()))
            .unwrap();
    }
    let output = format!("outputs = [\"{totals}\"]");
    let names = ["t1", "t2", "t3", "t4"];
    let entries: Vec<(&str, &str, &str)> = names
        .iter()
        .map(|n| (*n, "tenant-totals", output.as_str()))
        .collect();
    let manifest = write_manifest(dir.path(), &entries);
    let mut hosts: Vec<Host> = ["a", "b"]
        .iter()
        .map(|h| Host::start(&addr, &manifest, "derive", &dir.path().join(h)))
        .collect();
    wait_until("each host took two plugins", || {
        hosts.iter().all(|h| h.taken().len() == 2)
    });

    let stored = || {
        executor.block_on(async {
            let client = async_nats::connect(&server.url).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let mut stream = js.get_stream("totals").await.unwrap();
            stream.info().await.unwrap().state.last_sequence
        })
    };
    let writer = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let executor = tokio::runtime::Runtime::new().unwrap();
            for from in (0..EVENTS).step_by(50) {
                append(&executor, &addr, from, from + 50);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    wait_until("derived events in the stream", || stored() >= 2_000);
    let killed = hosts.remove(1);
    let moved = killed.taken();
    for pid in std::iter::once(killed.pid()).chain(descendants(killed.pid())) {
        signal(pid, Signal::SIGKILL);
    }
    wait_until("the killed host's plugins taken over", || {
        moved.iter().all(|p| hosts[0].taken().contains(p))
    });
    drop(killed);
    writer.join().unwrap();
    let all = EVENTS * names.len() as u64;
    wait_until("every derived event", || stored() >= all);
    // Time for a commit that would store anything twice.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stored(), all);

    let mut derived: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    executor.block_on(async {
        let client = async_nats::connect(&server.url).await.unwrap();
        let stream = async_nats::jetstream::new(client)
            .get_stream("totals")
            .await
            .unwrap();
        for seq in 1..=all {
            let message = stream.get_raw_message(seq).await.unwrap();
            let origin = message.headers.get(ORIGIN_HEADER).unwrap().to_string();
            let (plugin, place) = origin.split_once(':').unwrap();
            let payload = EntryRef::split(&message.payload)
                .unwrap()
                .0
                .payload()
                .to_vec();
            derived
                .entry(plugin.to_owned())
                .or_default()
                .push((place.to_owned(), payload));
        }
    });
    let expected: Vec<String> = (1..=EVENTS).map(|s| format!("{s}:0")).collect();
    for (plugin, events) in &derived {
        let places: Vec<&str> = events.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(places, expected, "{plugin}");
    }
    let payloads: Vec<Vec<&Vec<u8>>> = derived
        .values()
        .map(|events| events.iter().map(|(_, p)| p).collect())
        .collect();
    assert_eq!(payloads.len(), 4, "{:?}", derived.keys());
    assert!(
        payloads.iter().all(|p| *p == payloads[0]),
        "the moved plugins' totals went on from their checkpoints"
    );
    hosts.remove(0).stop();
}

/// A plugin in a cluster moves between hosts: an output log on one host's disk would be left
/// behind, so `run --cluster` refuses it, saying what to use.
#[test]
fn a_cluster_refuses_an_output_log_on_one_host() {
    if !common::nats::available() {
        return;
    }
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (_executor, addr, _) = setup(&server, dir.path(), 0, 0);
    let manifest = write_manifest(
        dir.path(),
        &[("t1", "tenant-totals", "outputs = [\"totals.redb\"]")],
    );
    let out = common::pulsewatch(&[
        "run",
        "--feed",
        &addr.to_string(),
        "--cluster",
        "refused",
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let said = common::text(&out.stderr);
    assert!(
        said.contains("plugin t1 writes to")
            && said.contains("totals.redb, a log on this host")
            && said.contains("its outputs must be streams"),
        "{said}"
    );
}
