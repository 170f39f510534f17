//! Resumable subscriptions across nodes: history kept in a Redis of the test's own, nodes
//! that restart, nodes that publish at once, and a Redis that restarts.

use std::time::{Duration, Instant};

use rohrpost::groups::{History, RedisGroups};
use rohrpost::prelude::*;
use rohrpost::subscribe::Subscriptions;
use serde_json::json;
use tests::{Client, RedisServer, TestServer};

/// One node: a server whose groups `g-*` keep `history` in Redis.
struct Node {
    server: TestServer,
    groups: Groups,
    layer: RedisGroups,
}

impl Node {
    async fn start(redis: &RedisServer, history: History) -> Self {
        let layer = redis.groups(Duration::from_millis(500)).await;
        let groups = Groups::new(layer.clone());
        let shout = |conn: Connection, Data(n): Data<u64>| async move {
            let message = Message::success("subscription-update", n).with_data(json!({"n": n}));
            conn.server_groups()
                .send_except("g-1", &message, &conn)
                .await
                .map_err(Error::internal)
        };
        let handlers = Handlers::new()
            .merge(Subscriptions::allow_all().handlers())
            .handler("shout", shout);
        let builder = Server::builder()
            .handlers(handlers)
            .groups(groups.clone())
            .history(history);
        Self {
            server: TestServer::with(builder).await,
            groups,
            layer,
        }
    }

    async fn stop(self) {
        self.server.shutdown().await;
    }
}

fn history() -> History {
    History::groups(["g-*"])
}

fn subscribe(id: i64, since: Value) -> Value {
    json!({"id": id, "type": "subscribe", "data": {"type": "g", "id": 1, "since": since}})
}

async fn push(groups: &Groups, n: u64) {
    let message = Message::success("subscription-update", n).with_data(json!({"n": n}));
    groups.send("g-1", &message).await.expect("Redis takes it");
}

/// The position in a reply's `data` or a push's top level.
fn position(fields: &Value) -> Value {
    json!({"offset": fields["offset"], "epoch": fields["epoch"]})
}

/// Reads `count` pushes; returns their `n` and offsets.
async fn pushes(client: &mut Client, count: usize) -> Vec<(u64, u64)> {
    let mut seen = Vec::new();
    for _ in 0..count {
        let push = client.recv_json().await;
        assert_eq!(push["type"], "subscription-update", "{push}");
        seen.push((
            push["data"]["n"].as_u64().expect("n"),
            push["offset"].as_u64().expect("offset"),
        ));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_of_a_restarted_node_recovers_what_the_other_node_sent() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = Node::start(&redis, history()).await;
    let b = Node::start(&redis, history()).await;
    let mut page = a.server.client().await;
    let reply = page.call(subscribe(1, Value::Null)).await;
    assert_eq!(reply["data"]["offset"], 0, "{reply}");
    push(&b.groups, 1).await;
    assert_eq!(pushes(&mut page, 1).await, [(1, 1)]);
    let seen = position(&reply["data"]);
    let seen = json!({"offset": 1, "epoch": seen["epoch"]});

    a.stop().await;
    let _ = page.expect_close().await;
    for n in 2..=4 {
        push(&b.groups, n).await;
    }
    let a = Node::start(&redis, history()).await;
    let mut page = a.server.client().await;
    page.send_json(subscribe(2, seen.clone())).await;
    assert_eq!(pushes(&mut page, 3).await, [(2, 2), (3, 3), (4, 4)]);
    let reply = page.recv_json().await;
    assert_eq!(
        reply,
        json!({"id": 2, "type": "subscribe", "data": {"group": "g-1", "offset": 4, "epoch": seen["epoch"], "recovered": true}})
    );
    push(&b.groups, 5).await;
    assert_eq!(pushes(&mut page, 1).await, [(5, 5)]);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_publishing_at_once_give_every_subscriber_the_same_contiguous_offsets() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = Node::start(&redis, history().size(500)).await;
    let b = Node::start(&redis, history().size(500)).await;
    let mut on_a = a.server.client().await;
    let mut on_b = b.server.client().await;
    on_a.call(subscribe(1, Value::Null)).await;
    on_b.call(subscribe(1, Value::Null)).await;
    let (from_a, from_b) = (a.groups.clone(), b.groups.clone());
    let send_a = tokio::spawn(async move {
        for n in (1..=200).step_by(2) {
            push(&from_a, n).await;
        }
    });
    let send_b = tokio::spawn(async move {
        for n in (2..=200).step_by(2) {
            push(&from_b, n).await;
        }
    });
    send_a.await.unwrap();
    send_b.await.unwrap();
    let seen_a = pushes(&mut on_a, 200).await;
    let seen_b = pushes(&mut on_b, 200).await;
    assert_eq!(seen_a, seen_b, "both nodes deliver in Redis's order");
    let offsets: Vec<u64> = seen_a.iter().map(|(_, offset)| *offset).collect();
    assert_eq!(offsets, (1..=200).collect::<Vec<_>>());
    let mut ns: Vec<u64> = seen_a.iter().map(|(n, _)| *n).collect();
    ns.sort_unstable();
    assert_eq!(ns, (1..=200).collect::<Vec<_>>(), "each push once");
    on_a.expect_silence(Duration::from_millis(100)).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_that_cannot_be_resumed_get_recovered_false_and_nothing_replayed() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let node = Node::start(&redis, history().size(3).max_recovered(2)).await;
    let mut page = node.server.client().await;
    let reply = page.call(subscribe(1, Value::Null)).await;
    let epoch = reply["data"]["epoch"].clone();
    for n in 1..=4 {
        push(&node.groups, n).await;
    }
    pushes(&mut page, 4).await;
    let cases = [
        (json!({"offset": 3, "epoch": "other"}), "another epoch"),
        (json!({"offset": 0, "epoch": epoch}), "trimmed"),
        (
            json!({"offset": 1, "epoch": epoch}),
            "more than max_recovered",
        ),
        (json!({"offset": 9, "epoch": epoch}), "ahead of the stream"),
    ];
    for (id, (since, why)) in (10..).zip(cases) {
        let mut back = node.server.client().await;
        let reply = back.call(subscribe(id, since)).await;
        assert_eq!(
            reply,
            json!({"id": id, "type": "subscribe", "data": {"group": "g-1", "offset": 4, "epoch": epoch, "recovered": false}}),
            "{why}"
        );
        back.expect_silence(Duration::from_millis(50)).await;
    }
    let mut back = node.server.client().await;
    back.send_json(subscribe(20, json!({"offset": 2, "epoch": epoch})))
        .await;
    assert_eq!(pushes(&mut back, 2).await, [(3, 3), (4, 4)]);
    assert_eq!(back.recv_json().await["data"]["recovered"], true);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_stream_or_a_restarted_redis_cannot_be_resumed() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let node = Node::start(&redis, history().ttl(Duration::from_millis(300))).await;
    let mut page = node.server.client().await;
    let reply = page.call(subscribe(1, Value::Null)).await;
    push(&node.groups, 1).await;
    pushes(&mut page, 1).await;
    let seen = json!({"offset": 1, "epoch": reply["data"]["epoch"]});
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut back = node.server.client().await;
    let reply = back.call(subscribe(2, seen)).await;
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    assert_eq!(reply["data"]["offset"], 0, "a new stream: {reply}");
    back.expect_silence(Duration::from_millis(50)).await;

    push(&node.groups, 2).await;
    let (_, offset) = pushes(&mut back, 1).await[0];
    let seen = json!({"offset": offset, "epoch": reply["data"]["epoch"]});
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(node.layer.status().connected && node.layer.status().connections >= 2) {
        assert!(Instant::now() < deadline, "node reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = node.server.client().await;
    let reply = again.call(subscribe(3, seen.clone())).await;
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    assert_ne!(reply["data"]["epoch"], seen["epoch"], "{reply}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_redis_could_not_record_starts_a_new_epoch() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let node = Node::start(&redis, history()).await;
    let mut page = node.server.client().await;
    let reply = page.call(subscribe(1, Value::Null)).await;
    let epoch = reply["data"]["epoch"].clone();
    push(&node.groups, 1).await;
    pushes(&mut page, 1).await;

    redis.stop();
    let message = Message::success("subscription-update", 2).with_data(json!({"n": 2}));
    let error = node.groups.send("g-1", &message).await.unwrap_err();
    assert!(error.to_string().contains("backend"), "{error}");
    let live = page.recv_json().await;
    assert_eq!(live["data"]["n"], 2, "the node's members still get it");
    assert!(live.get("offset").is_none(), "without a position: {live}");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !node.layer.status().connected {
        assert!(Instant::now() < deadline, "node reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut back = node.server.client().await;
    let reply = back
        .call(subscribe(2, json!({"offset": 1, "epoch": epoch})))
        .await;
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_without_since_see_the_bytes_they_always_saw() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let node = Node::start(&redis, history()).await;
    let mut plain = node.server.client().await;
    let mut positioned = node.server.client().await;
    let reply = plain
        .call(json!({"id": 1, "type": "subscribe", "data": {"type": "g", "id": 1}}))
        .await;
    assert_eq!(
        reply,
        json!({"id": 1, "type": "subscribe", "data": {"group": "g-1"}})
    );
    positioned.call(subscribe(1, Value::Null)).await;
    push(&node.groups, 7).await;
    assert_eq!(
        plain.recv_text().await,
        r#"{"id":7,"type":"subscription-update","data":{"n":7}}"#
    );
    let text = positioned.recv_text().await;
    assert!(
        text.starts_with(r#"{"id":7,"type":"subscription-update","offset":1,"epoch":""#),
        "{text}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_racing_a_resubscribe_are_neither_missed_nor_doubled() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = Node::start(&redis, history().size(100_000)).await;
    let b = Node::start(&redis, history().size(100_000)).await;
    let mut first = a.server.client().await;
    let reply = first.call(subscribe(1, Value::Null)).await;
    let epoch = reply["data"]["epoch"].clone();
    let sender = b.groups.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let sending = tokio::spawn(async move {
        let mut n = 0;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            push(&sender, n).await;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    });
    // Resubscribe from a position taken mid-stream, while pushes keep coming.
    let mut offsets = Vec::new();
    for round in 0..5 {
        let seen: Vec<_> = pushes(&mut first, 10).await;
        let last = seen.last().expect("ten pushes").1;
        let mut back = a.server.client().await;
        back.send_json(subscribe(
            2 + round,
            json!({"offset": last, "epoch": epoch}),
        ))
        .await;
        let mut next = last;
        loop {
            let message = back.recv_json().await;
            if message["type"] == "subscribe" {
                assert_eq!(message["data"]["recovered"], true, "{message}");
                let offset = message["data"]["offset"].as_u64().expect("offset");
                assert!(offset <= next, "{message} after {next}");
                break;
            }
            let offset = message["offset"].as_u64().expect("positioned");
            assert_eq!(offset, next + 1, "no gap, no duplicate");
            next = offset;
        }
        // And what follows the reply continues where the replay stopped.
        let offset = back.recv_json().await["offset"].as_u64().expect("offset");
        assert_eq!(offset, next + 1, "after the reply: no gap, no duplicate");
        offsets.push(offset);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sending.await.unwrap();
    assert_eq!(offsets.len(), 5);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_coming_back_together_share_history_reads() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let node = Node::start(&redis, history()).await;
    let mut first = node.server.client().await;
    let reply = first.call(subscribe(1, Value::Null)).await;
    let seen = json!({"offset": 0, "epoch": reply["data"]["epoch"]});
    for n in 1..=50 {
        push(&node.groups, n).await;
    }
    const CLIENTS: usize = 200;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(node.server.client().await);
    }
    let before = node.layer.history_reads();
    for client in &mut clients {
        client.send_json(subscribe(2, seen.clone())).await;
    }
    for client in &mut clients {
        let replayed = pushes(client, 50).await;
        assert_eq!(replayed.last(), Some(&(50, 50)));
        assert_eq!(client.recv_json().await["data"]["recovered"], true);
    }
    let reads = node.layer.history_reads() - before;
    eprintln!("{CLIENTS} subscribers coming back together: {reads} history reads");
    assert!(
        reads < CLIENTS as u64 / 2,
        "{reads} reads for {CLIENTS} identical subscribes"
    );
    node.stop().await;
}

/// Collects what a tracing subscriber writes.
#[derive(Clone, Default)]
struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// On one thread, so that the layer's check (a task) logs to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_redis_that_may_evict_keys_is_warned_about_at_start() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing_subscriber::util::SubscriberInitExt::set_default(subscriber);
    let warning = "maxmemory-policy is not noeviction";

    let quiet = Node::start(&redis, history()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!log.text().contains(warning), "noeviction: {}", log.text());
    quiet.stop().await;

    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    let node = Node::start(&redis, history()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.text().contains(warning) {
        assert!(Instant::now() < deadline, "no warning: {}", log.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(log.text().contains("allkeys-lru"), "{}", log.text());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_leaves_its_sender_out_does_so_on_its_node_only() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = Node::start(&redis, history()).await;
    let b = Node::start(&redis, history()).await;
    let mut sender = a.server.client().await;
    let mut on_a = a.server.client().await;
    let mut on_b = b.server.client().await;
    for client in [&mut sender, &mut on_a, &mut on_b] {
        client.call(subscribe(1, Value::Null)).await;
    }
    let reply = sender
        .call(json!({"id": 2, "type": "shout", "data": 7}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(pushes(&mut on_a, 1).await, [(7, 1)]);
    assert_eq!(pushes(&mut on_b, 1).await, [(7, 1)]);
    sender.expect_silence(Duration::from_millis(150)).await;
    // The stream kept it: a subscriber that comes back from before gets it, sender or not.
    let epoch = on_a.call(subscribe(3, Value::Null)).await["data"]["epoch"].clone();
    let mut back = a.server.client().await;
    back.send_json(subscribe(4, json!({"offset": 0, "epoch": epoch})))
        .await;
    assert_eq!(pushes(&mut back, 1).await, [(7, 1)]);
    a.stop().await;
    b.stop().await;
}
