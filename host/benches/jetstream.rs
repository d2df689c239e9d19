//! JetStream under the feed, before the feed is built on it: what a `poll(since, 1000)` costs as
//! one batched direct get on an inbox, and how fast events can be appended, on a single real
//! `nats-server` on loopback and on a cluster of three with an R3 stream. Events are 118 bytes,
//! the size of a stored event with a 64-byte payload. Run with `cargo bench --bench jetstream`
//! (needs `nats-server` on the PATH).

#[path = "../../tests/common/nats.rs"]
mod nats;

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use std::time::{Duration, Instant};

const EVENTS: u64 = 100_000;
const EVENT_BYTES: usize = 118;
const IN_FLIGHT: usize = 256;

fn config(name: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.events")],
        storage: stream::StorageType::File,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Appends `EVENTS` events with up to `IN_FLIGHT` acks outstanding; events/s.
async fn append(js: &jetstream::Context, subject: &str) -> f64 {
    let started = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    for _ in 0..EVENTS {
        if acks.len() >= IN_FLIGHT
            && let Some(ack) = acks.pop_front()
        {
            let ack: jetstream::context::PublishAckFuture = ack;
            ack.await.unwrap();
        }
        let ack = js
            .publish(subject.to_owned(), vec![7u8; EVENT_BYTES].into())
            .await
            .unwrap();
        acks.push_back(ack);
    }
    for ack in acks {
        ack.await.unwrap();
    }
    EVENTS as f64 / started.elapsed().as_secs_f64()
}

/// Batched direct gets over one long-lived inbox subscription, as a feed would hold it.
struct Poller {
    client: async_nats::Client,
    inbox: String,
    replies: async_nats::Subscriber,
}

impl Poller {
    async fn new(client: &async_nats::Client) -> Poller {
        let inbox = client.new_inbox();
        let replies = client.subscribe(inbox.clone()).await.unwrap();
        Poller {
            client: client.clone(),
            inbox,
            replies,
        }
    }

    /// One batched direct get of `limit` events after `since`; the events it returned.
    async fn poll(&mut self, stream: &str, since: u64, limit: usize) -> usize {
        let request = format!("{{\"seq\":{},\"batch\":{limit}}}", since + 1);
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{stream}"),
                self.inbox.clone(),
                request.into(),
            )
            .await
            .unwrap();
        let mut events = 0;
        while let Some(message) = self.replies.next().await {
            if message.status.is_some() {
                break;
            }
            events += 1;
        }
        events
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    fields
        .get(11)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
}

async fn measure(what: &str, urls: Vec<String>, replicas: usize, servers: Vec<u32>) {
    let addrs: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().unwrap()).collect();
    let client = async_nats::connect(addrs).await.unwrap();
    let js = jetstream::new(client.clone());
    let started = Instant::now();
    while js.create_stream(config("bench", replicas)).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "no stream");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rate = append(&js, "bench.events").await;
    let mut poller = Poller::new(&client).await;
    let server_before: u64 = servers.iter().map(|&p| cpu_ticks(p)).sum();
    let own_before = cpu_ticks(std::process::id());
    let wall = Instant::now();
    let mut times = Vec::new();
    for pass in 0..50u64 {
        let since = (pass * 1_000) % (EVENTS - 1_000);
        let started = Instant::now();
        let got = poller.poll("bench", since, 1_000).await;
        times.push(started.elapsed());
        assert_eq!(got, 1_000);
    }
    let wall = wall.elapsed().as_secs_f64();
    let server_cpu =
        (servers.iter().map(|&p| cpu_ticks(p)).sum::<u64>() - server_before) as f64 / 100.0;
    let own_cpu = (cpu_ticks(std::process::id()) - own_before) as f64 / 100.0;
    println!(
        "  50 polls: wall {wall:.3} s, server CPU {server_cpu:.2} s, client CPU {own_cpu:.2} s"
    );
    times.sort();
    // The same reads through one ordered consumer from the start, as a feed reading on would
    // hold it: 1,000 messages at a time.
    let stream = js.get_stream("bench").await.unwrap();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let server_before: u64 = servers.iter().map(|&p| cpu_ticks(p)).sum();
    let own_before = cpu_ticks(std::process::id());
    let consumed = Instant::now();
    let mut ordered = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        for _ in 0..1_000 {
            messages.next().await.unwrap().unwrap();
        }
        ordered.push(started.elapsed());
    }
    ordered.sort();
    println!(
        "  ordered consumer, 50 x 1000: wall {:.3} s, server CPU {:.2} s, client CPU {:.2} s; p50 {:.2} ms a 1000",
        consumed.elapsed().as_secs_f64(),
        (servers.iter().map(|&p| cpu_ticks(p)).sum::<u64>() - server_before) as f64 / 100.0,
        (cpu_ticks(std::process::id()) - own_before) as f64 / 100.0,
        ordered[25].as_secs_f64() * 1e3
    );
    println!(
        "{what}: append {rate:.0} events/s ({IN_FLIGHT} in flight); poll(since, 1000) p50 {:.2} ms, p90 {:.2} ms",
        times[25].as_secs_f64() * 1e3,
        times[45].as_secs_f64() * 1e3
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let executor = tokio::runtime::Runtime::new().unwrap();
    let single = nats::Server::start();
    executor.block_on(measure(
        "single server",
        vec![single.url.clone()],
        1,
        vec![single.pid()],
    ));
    drop(single);
    let cluster = nats::Cluster::start();
    let pids = cluster.servers.iter().map(nats::Server::pid).collect();
    executor.block_on(measure("3-node cluster, R3", cluster.urls(), 3, pids));
}
