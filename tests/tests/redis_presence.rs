//! Presence across nodes through a Redis of the test's own: members counted and listed on
//! every node, leaves across nodes, a node killed with SIGKILL, a dead node's many groups
//! swept a bounded number per beat, and a Redis that restarts.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rohrpost::handshake::{Accept, Handshake};
use rohrpost::prelude::*;
use rohrpost::presence::Presence;
use rohrpost::subscribe::Subscriptions;
use serde_json::json;
use tests::{Client, RedisServer, TestServer};

/// The user a connection gave as `?user=` in its URL.
struct User(String);

const TOKEN: &str = "hunter2";

/// One node: a server with presence in `todo-*`, its groups in Redis.
struct Node {
    server: TestServer,
    groups: Groups,
}

impl Node {
    async fn start(redis: &RedisServer, presence: Presence) -> Self {
        Self::start_with_timeout(redis, presence, Duration::from_millis(500)).await
    }

    /// A node whose Redis calls give up after `timeout`.
    async fn start_with_timeout(
        redis: &RedisServer,
        presence: Presence,
        timeout: Duration,
    ) -> Self {
        let layer = redis.groups(timeout).await;
        let groups = Groups::new(layer);
        let builder = Server::builder()
            .handlers(Subscriptions::token(TOKEN).with_presence().handlers())
            .groups(groups.clone())
            .authenticate(|handshake: Handshake| {
                let user = handshake.query("user").map(|user| user.into_owned());
                async move { Ok(Accept::new().with(User(user.unwrap_or_default()))) }
            })
            .presence(presence)
            .presence_id(|conn| {
                conn.get::<User>()
                    .map(|user| user.0.clone())
                    .unwrap_or_default()
            })
            .presence_info(|conn| json!({"user": conn.get::<User>().map(|user| user.0.clone())}));
        Self {
            server: TestServer::with(builder).await,
            groups,
        }
    }

    async fn connect(&self, user: &str) -> Client {
        Client::connect(&format!("{}?user={user}", self.server.url)).await
    }

    /// Waits until the node's count of `todo-1` is `(connections, members)`.
    async fn until_counted(&self, expected: (u64, u64)) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let count = self.groups.presence_count("todo-1").await.expect("count");
            if (count.connections, count.members) == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "counted {count:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn presence(grace: Duration) -> Presence {
    Presence::groups(["todo-*"])
        .grace(grace)
        .node_ttl(Duration::from_secs(1))
}

fn subscribe(presence: bool) -> Value {
    let mut object = json!({"type": "todo", "id": 1});
    if presence {
        object["presence"] = json!(true);
    }
    json!({"id": 1, "type": "subscribe", "auth_jwt": TOKEN, "data": object})
}

fn unsubscribe() -> Value {
    json!({"id": 2, "type": "unsubscribe", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1}})
}

/// Subscribes with `"presence": true`; skips the reply and its own join, in either order.
async fn watch(client: &mut Client, user: &str) {
    client.send_json(subscribe(true)).await;
    let mut seen = [client.recv_json().await, client.recv_json().await];
    seen.sort_by_key(|message| message["type"] != "subscribe");
    assert_eq!(
        seen[0]["data"],
        json!({"group": "todo-1", "presence": true})
    );
    assert_eq!(seen[1]["data"]["type"], "join");
    assert_eq!(seen[1]["data"]["object"]["id"], user);
}

async fn expect_event(client: &mut Client, kind: &str, user: &str) {
    let event = client.recv_json().await;
    assert_eq!(
        event["data"],
        json!({"type": kind, "group": "todo-1", "object": {"id": user, "info": {"user": user}}}),
        "{event}"
    );
}

fn sorted_list(reply: &Value) -> Vec<(String, u64)> {
    let mut list: Vec<(String, u64)> = reply["data"]["list"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|member| {
            (
                member["id"].as_str().unwrap_or_default().to_owned(),
                member["connections"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    list.sort();
    list
}

#[tokio::test]
async fn members_on_two_nodes_are_counted_and_listed_on_both() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = Node::start(&redis, presence(Duration::from_secs(15))).await;
    let b = Node::start(&redis, presence(Duration::from_secs(15))).await;
    let mut ada = a.connect("ada").await;
    watch(&mut ada, "ada").await;
    // A subscriber without `presence` on the other node: today's bytes, and it is counted.
    let mut bob = b.connect("bob").await;
    bob.send_json(subscribe(false)).await;
    assert_eq!(
        bob.recv_text().await,
        r#"{"id":1,"type":"subscribe","data":{"group":"todo-1"}}"#
    );
    expect_event(&mut ada, "join", "bob").await;
    // Its second connection, on the first node: no second join.
    let mut bob_again = a.connect("bob").await;
    bob_again.call(subscribe(false)).await;
    a.until_counted((3, 2)).await;
    b.until_counted((3, 2)).await;
    for node in [&a, &b] {
        let mut asker = node.connect("asker").await;
        let reply = asker
            .call(json!({"id": 5, "type": "presence", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1}}))
            .await;
        assert_eq!(reply["data"]["connections"], 3, "{reply}");
        assert_eq!(reply["data"]["members"], 2, "{reply}");
        assert_eq!(
            sorted_list(&reply),
            vec![("ada".to_owned(), 1), ("bob".to_owned(), 2)]
        );
        let members = node.groups.presence("todo-1").await.unwrap();
        assert_eq!(members.list.map(|list| list.len()), Some(2));
    }
    // Closing one of its two connections: no leave.
    bob.close().await;
    a.until_counted((2, 2)).await;
    ada.expect_silence(Duration::from_millis(500)).await;
    bob_again.expect_silence(Duration::from_millis(10)).await;
    a.server.shutdown().await;
    b.server.shutdown().await;
}

#[tokio::test]
async fn leaves_cross_nodes_at_once_on_unsubscribe_and_after_the_grace_on_disconnect() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let grace = Duration::from_millis(800);
    let a = Node::start(&redis, presence(grace)).await;
    let b = Node::start(&redis, presence(grace)).await;
    let mut ada = a.connect("ada").await;
    watch(&mut ada, "ada").await;

    let mut bob = b.connect("bob").await;
    bob.call(subscribe(false)).await;
    expect_event(&mut ada, "join", "bob").await;
    let unsubscribed = Instant::now();
    assert_eq!(
        bob.call(unsubscribe()).await,
        json!({"id": 2, "type": "unsubscribe"})
    );
    expect_event(&mut ada, "leave", "bob").await;
    assert!(
        unsubscribed.elapsed() < grace,
        "an unsubscribe leaves at once"
    );

    // A disconnect on one node, back on the other within the grace: nothing to see.
    let mut carl = b.connect("carl").await;
    carl.call(subscribe(false)).await;
    expect_event(&mut ada, "join", "carl").await;
    carl.close().await;
    let mut carl = a.connect("carl").await;
    carl.call(subscribe(false)).await;
    ada.expect_silence(grace + Duration::from_millis(500)).await;
    a.until_counted((2, 2)).await;

    // Gone for good: the leave after the grace.
    let closed = Instant::now();
    carl.close().await;
    expect_event(&mut ada, "leave", "carl").await;
    assert!(
        closed.elapsed() >= grace,
        "left after {:?}",
        closed.elapsed()
    );
    b.until_counted((1, 1)).await;
    a.server.shutdown().await;
    b.server.shutdown().await;
}

/// The todo demo in a process of its own (`kill -9` stops it without a goodbye).
struct DemoProcess {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl DemoProcess {
    fn start(redis: &RedisServer, grace: &str, node_ttl: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut child = Command::new(env!("CARGO_BIN_EXE_todo_node"))
            .args(["--addr", "127.0.0.1:0"])
            .args(["--database-url", &rohrpost_todo::sqlite_in(dir.path())])
            .args(["--redis-url", &redis.url()])
            .args(["--presence-grace", grace, "--node-ttl", node_ttl])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the demo starts");
        let stdout = child.stdout.take().expect("its stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the demo says where it listens");
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("ws://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        Self {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (5 s at most) until the nodes Redis lists for presence satisfy `done`: a dead
/// node is forgotten.
async fn until_nodes(
    connection: &mut redis::aio::MultiplexedConnection,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg("rohrpost:group:presence-nodes")
            .query_async(connection)
            .await
            .unwrap();
        if done(&nodes) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the dead node stays listed: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_members_of_a_killed_node_leave_within_node_ttl_and_grace() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (grace, node_ttl) = (Duration::from_secs(1), Duration::from_secs(1));
    let mut demo = DemoProcess::start(&redis, "1", "1");
    let a = Node::start(&redis, presence(grace)).await;
    let mut ada = a.connect("ada").await;
    watch(&mut ada, "ada").await;
    let mut eve = Client::connect(&format!("{}?user=eve", demo.url)).await;
    let reply = eve.call(subscribe(false)).await;
    assert_eq!(reply["data"], json!({"group": "todo-1"}));
    expect_event(&mut ada, "join", "eve").await;
    a.until_counted((2, 2)).await;

    demo.child.kill().expect("SIGKILL");
    let killed = Instant::now();
    demo.child.wait().expect("it ended");
    expect_event(&mut ada, "leave", "eve").await;
    let took = killed.elapsed();
    assert!(
        took <= node_ttl + grace,
        "the leave took {took:?}, more than node_ttl + grace"
    );
    a.until_counted((1, 1)).await;
    println!("a killed node's member left after {took:?}");
    // The dead node is forgotten; once the group is empty, none of its keys is left behind.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    until_nodes(&mut connection, |nodes| nodes.len() == 1).await;
    ada.call(unsubscribe()).await;
    a.until_counted((0, 0)).await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("rohrpost:group:{todo-1}:p*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(left.is_empty(), "keys of an empty group: {left:?}");
    a.server.shutdown().await;
}

#[tokio::test]
async fn presence_is_written_again_when_redis_comes_back_empty() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let a = Node::start(&redis, presence(Duration::from_secs(15))).await;
    let b = Node::start(&redis, presence(Duration::from_secs(15))).await;
    let mut ada = a.connect("ada").await;
    ada.call(subscribe(false)).await;
    let mut bob = b.connect("bob").await;
    bob.call(subscribe(false)).await;
    a.until_counted((2, 2)).await;
    redis.restart();
    // Both nodes find their liveness key gone and write their part again.
    a.until_counted((2, 2)).await;
    b.until_counted((2, 2)).await;
    a.server.shutdown().await;
    b.server.shutdown().await;
}

#[tokio::test]
async fn a_dead_node_with_many_groups_is_swept_at_most_256_groups_a_beat() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    // A node that died listed in 600 groups (with nothing left in them).
    let ghost_groups = "rohrpost:group:node:ghost:groups";
    let groups: Vec<String> = (0..600).map(|n| format!("todo-{n}")).collect();
    redis::cmd("SADD")
        .arg(ghost_groups)
        .arg(&groups)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    redis::cmd("SADD")
        .arg("rohrpost:group:presence-nodes")
        .arg("ghost")
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    // A live node sweeps every third of its node_ttl (3 s): each beat removes a burst of
    // at most 256 groups, one script call each, then the count rests until the next beat.
    let a = Node::start(
        &redis,
        presence(Duration::from_secs(1)).node_ttl(Duration::from_secs(3)),
    )
    .await;
    let mut resting = Vec::new();
    let (mut last, mut since) = (usize::MAX, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left: usize = redis::cmd("SCARD")
            .arg(ghost_groups)
            .query_async(&mut connection)
            .await
            .unwrap();
        if left != last {
            (last, since) = (left, Instant::now());
        } else if since.elapsed() >= Duration::from_millis(300) && resting.last() != Some(&left) {
            resting.push(left);
        }
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} groups left, resting at {resting:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("the dead node's groups rested at {resting:?}");
    // The first beat took 256 (not fewer), and so did the next.
    let after_beats: Vec<usize> = resting.into_iter().filter(|&left| left != 600).collect();
    assert!(
        after_beats.starts_with(&[344, 88]),
        "not 256 a beat: resting at {after_beats:?}"
    );
    let resting = after_beats;
    assert!(
        resting.windows(2).all(|pair| pair[0] - pair[1] <= 256),
        "more than 256 groups in one beat: {resting:?}"
    );
    // Once its last group is gone, the dead node is forgotten.
    until_nodes(&mut connection, |nodes| {
        !nodes.iter().any(|node| node == "ghost")
    })
    .await;
    a.server.shutdown().await;
}

/// A node writes its presence changes in script calls of at most 1,000 changes each: a
/// burst of 1,100 joins to one group, held back while Redis pauses its writes, is written
/// in more than one call when Redis answers again, and the other node counts every member
/// (and none once they have all left).
#[tokio::test]
async fn a_burst_of_joins_above_one_script_call_is_counted_whole_on_the_other_node() {
    const MEMBERS: u64 = 1_101;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // A short grace, so that the leaves come soon after the disconnects; a long Redis
    // timeout, so that the pause below holds the joins back without a write being given up;
    // and a node lifetime longer than that, so that no node is taken for dead (which would
    // make it write its whole part again, not its queued changes).
    let presence = || {
        Presence::groups(["todo-*"])
            .grace(Duration::from_millis(200))
            .node_ttl(Duration::from_secs(60))
    };
    let timeout = Duration::from_secs(30);
    let a = Node::start_with_timeout(&redis, presence(), timeout).await;
    let b = Node::start_with_timeout(&redis, presence(), timeout).await;
    let mut clients = Vec::new();
    for n in 0..MEMBERS {
        clients.push(a.connect(&format!("user{n}")).await);
    }
    // The first join is written at once and its write waits out the pause; the others come
    // meanwhile and queue behind it, to be written together when Redis answers again. The
    // pause is ended once they are all queued, well within the nodes' timeout.
    let pause = Duration::from_secs(20);
    if !redis.pause_writes(pause).await {
        return;
    }
    let paused = Instant::now();
    let subscribed = |reply: Value| {
        assert_eq!(reply["data"], json!({"group": "todo-1"}), "{reply}");
    };
    clients[0].send_json(subscribe(false)).await;
    subscribed(clients[0].recv_json().await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for client in &mut clients[1..] {
        client.send_json(subscribe(false)).await;
    }
    for client in &mut clients[1..] {
        subscribed(client.recv_json().await);
    }
    let queued = paused.elapsed();
    println!("{MEMBERS} joins queued {queued:?} into the pause");
    assert!(
        queued < pause,
        "the joins took longer than the pause ({queued:?}): some were written before the rest came"
    );
    redis.unpause().await;
    b.until_counted((MEMBERS, MEMBERS)).await;
    a.until_counted((MEMBERS, MEMBERS)).await;
    // The leaves come as their grace ends, in one script call or several.
    drop(clients);
    b.until_counted((0, 0)).await;
    a.until_counted((0, 0)).await;
    a.server.shutdown().await;
    b.server.shutdown().await;
}
