//! Several servers, one set of groups: the todo demo on two nodes sharing a Redis of the
//! test's own, with pushes crossing nodes, Redis restarting, and a node leaving.

use rohrpost_todo as app;

use std::time::{Duration, Instant};

use rohrpost::groups::RedisGroups;
use rohrpost::Groups;
use serde_json::{json, Value};
use tests::{Client, RedisServer, TestServer};

const TOKEN: &str = "hunter2";
const CHANNEL: &str = "rohrpost:group:todo-1";

/// One node: the todo demo with a Redis group layer.
struct Node {
    server: TestServer,
    layer: RedisGroups,
}

impl Node {
    async fn start(redis: &RedisServer, database_url: &str) -> Self {
        let config = app::Config {
            redis_url: Some(redis.url()),
            ..app::Config::local(database_url)
        };
        let layer = redis.groups(Duration::from_millis(300)).await;
        let server = app::server(&config, Groups::new(layer.clone()))
            .await
            .expect("node starts");
        Self {
            server: TestServer::run(server),
            layer,
        }
    }

    async fn subscriber(&self) -> Client {
        let mut client = self.server.client().await;
        let reply = client.call(subscribe(1)).await;
        assert_eq!(
            reply,
            json!({"id": 1, "type": "subscribe", "data": {"group": "todo-1"}})
        );
        client
    }
}

fn subscribe(id: i64) -> Value {
    json!({"id": id, "type": "subscribe", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1}})
}

async fn expect_push(client: &mut Client, change: &str, object: Value) {
    client.expect_push(change, "todo-1", object).await;
}

async fn wait_for_subscribers(redis: &RedisServer, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = redis.subscribers(CHANNEL).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} subscribers, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two nodes on one Redis and one SQLite file.
async fn cluster() -> Option<(RedisServer, Node, Node, tempfile::TempDir)> {
    let redis = RedisServer::start()?;
    let dir = tempfile::tempdir().unwrap();
    let database = app::sqlite_in(dir.path());
    let a = Node::start(&redis, &database).await;
    let b = Node::start(&redis, &database).await;
    Some((redis, a, b, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_cross_nodes_exactly_once() {
    let Some((_redis, a, b, _dir)) = cluster().await else {
        return;
    };
    let mut on_a = a.subscriber().await;
    let mut on_b = b.subscriber().await;
    let mut also_on_b = b.subscriber().await;
    let mut editor_on_a = a.server.client().await;
    let mut editor_on_b = b.server.client().await;

    let created = editor_on_a
        .call(json!({"id": 2, "type": "todo.create", "data": {"title": "milk"}}))
        .await;
    assert_eq!(created["data"], json!({"id": 1, "title": "milk"}));
    for client in [&mut on_a, &mut on_b, &mut also_on_b] {
        expect_push(client, "create", json!({"id": 1, "title": "milk"})).await;
    }

    editor_on_b
        .call(json!({"id": 3, "type": "todo.update", "data": {"id": 1, "title": "oat milk"}}))
        .await;
    for client in [&mut on_a, &mut on_b, &mut also_on_b] {
        let object = json!({"id": 1, "title": "oat milk", "updated_fields": ["title"]});
        expect_push(client, "update", object).await;
    }
    // Exactly once: nothing more arrives.
    for client in [&mut on_a, &mut on_b, &mut also_on_b] {
        client.expect_silence(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_subscribes_to_a_channel_only_while_it_has_local_members() {
    let Some((redis, a, b, _dir)) = cluster().await else {
        return;
    };
    assert_eq!(redis.subscribers(CHANNEL).await, 0);
    let mut on_a = a.subscriber().await;
    wait_for_subscribers(&redis, 1).await;
    let second_on_a = a.subscriber().await;
    let mut on_b = b.subscriber().await;
    wait_for_subscribers(&redis, 2).await;
    // One node's last member leaves: that node unsubscribes.
    let reply = on_b
        .call(json!({"id": 5, "type": "unsubscribe", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1}}))
        .await;
    assert_eq!(reply, json!({"id": 5, "type": "unsubscribe"}));
    wait_for_subscribers(&redis, 1).await;
    // Node A keeps its subscription while any member is left.
    second_on_a.close().await;
    on_a.call(json!({"id": 6, "type": "ping"})).await;
    assert_eq!(redis.subscribers(CHANNEL).await, 1);
    on_a.close().await;
    wait_for_subscribers(&redis, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_a_redis_restart_and_outage_traffic_stays_local() {
    let Some((mut redis, a, b, _dir)) = cluster().await else {
        return;
    };
    let mut on_a = a.subscriber().await;
    let mut on_b = b.subscriber().await;
    let mut editor = a.server.client().await;
    editor
        .call(json!({"id": 1, "type": "todo.create", "data": {"title": "milk"}}))
        .await;
    expect_push(&mut on_a, "create", json!({"id": 1, "title": "milk"})).await;
    expect_push(&mut on_b, "create", json!({"id": 1, "title": "milk"})).await;

    redis.stop();
    // During the outage: the change is committed and replied to, node A's member gets it,
    // node B's does not (pub/sub is at-most-once), and nothing is replayed later.
    let started = Instant::now();
    let reply = editor
        .call(json!({"id": 2, "type": "todo.update", "data": {"id": 1, "title": "outage"}}))
        .await;
    assert_eq!(reply["data"], json!({"id": 1, "title": "outage"}));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the Redis timeout"
    );
    let object = json!({"id": 1, "title": "outage", "updated_fields": ["title"]});
    expect_push(&mut on_a, "update", object).await;

    restart_and_reconnect(&mut redis, [&a, &b]).await;
    editor
        .call(json!({"id": 3, "type": "todo.update", "data": {"id": 1, "title": "back"}}))
        .await;
    // The outage's update never arrives: the first thing B hears is this one.
    let object = json!({"id": 1, "title": "back", "updated_fields": ["title"]});
    expect_push(&mut on_a, "update", object.clone()).await;
    expect_push(&mut on_b, "update", object).await;
}

/// Restarts Redis and waits until every node has re-established its subscriptions.
async fn restart_and_reconnect(redis: &mut RedisServer, nodes: [&Node; 2]) {
    redis.restart();
    for node in nodes {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !(node.layer.status().connected && node.layer.status().connections >= 2) {
            assert!(
                Instant::now() < deadline,
                "node reconnected: {:?}",
                node.layer.status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_for_subscribers(redis, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_are_not_held_up_when_redis_is_gone() {
    let Some((mut redis, a, _b, _dir)) = cluster().await else {
        return;
    };
    redis.stop();
    let started = Instant::now();
    let mut subscriber = a.subscriber().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "join bounded by the Redis timeout"
    );
    let mut editor = a.server.client().await;
    editor
        .call(json!({"id": 2, "type": "todo.create", "data": {"title": "local"}}))
        .await;
    expect_push(
        &mut subscriber,
        "create",
        json!({"id": 1, "title": "local"}),
    )
    .await;
    assert!(!a.layer.status().connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaving_does_not_disturb_the_others() {
    let Some((redis, a, b, _dir)) = cluster().await else {
        return;
    };
    let mut on_a = a.subscriber().await;
    let _on_b = b.subscriber().await;
    wait_for_subscribers(&redis, 2).await;
    b.server.shutdown().await;
    drop(b.layer);
    wait_for_subscribers(&redis, 1).await;
    let mut editor = a.server.client().await;
    editor
        .call(json!({"id": 2, "type": "todo.create", "data": {"title": "after"}}))
        .await;
    expect_push(&mut on_a, "create", json!({"id": 1, "title": "after"})).await;
    on_a.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_send_after_a_redis_restart_reaches_the_other_node_from_each_node() {
    let Some((mut redis, a, b, _dir)) = cluster().await else {
        return;
    };
    let mut on_a = a.subscriber().await;
    let mut on_b = b.subscriber().await;
    let mut editor_a = a.server.client().await;
    let mut editor_b = b.server.client().await;
    // Both nodes publish once, so that each has a publishing connection to lose.
    editor_a
        .call(json!({"id": 1, "type": "todo.create", "data": {"title": "milk"}}))
        .await;
    expect_push(&mut on_a, "create", json!({"id": 1, "title": "milk"})).await;
    expect_push(&mut on_b, "create", json!({"id": 1, "title": "milk"})).await;
    editor_b
        .call(json!({"id": 1, "type": "todo.update", "data": {"id": 1, "title": "oat milk"}}))
        .await;
    let object = json!({"id": 1, "title": "oat milk", "updated_fields": ["title"]});
    expect_push(&mut on_a, "update", object.clone()).await;
    expect_push(&mut on_b, "update", object).await;

    restart_and_reconnect(&mut redis, [&a, &b]).await;

    // The very first send of each node after the restart crosses to the other node.
    for (editor, title) in [(&mut editor_a, "from a"), (&mut editor_b, "from b")] {
        let reply = editor
            .call(json!({"id": 2, "type": "todo.update", "data": {"id": 1, "title": title}}))
            .await;
        assert_eq!(reply["data"]["title"], title);
        let object = json!({"id": 1, "title": title, "updated_fields": ["title"]});
        expect_push(&mut on_a, "update", object.clone()).await;
        expect_push(&mut on_b, "update", object).await;
    }
}
