//! NATS JetStream under the feed: real `nats-server` processes, a single server and a cluster
//! of three, and what the feed relies on from them: a stream whose seqs stay gap-free, and the
//! batched direct get that `poll(since, limit)` maps to.

mod common;

use async_nats::jetstream::{self, stream};
use common::nats::{Cluster, Server};
use futures::StreamExt;

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
