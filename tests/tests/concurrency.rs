//! Handlers of one connection: one at a time in request order by default, or several at
//! once with `handlers_per_connection`, bounded, and finished before shutdown or a close.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rohrpost::prelude::*;
use rohrpost::server::ServerError;
use serde_json::json;
use tests::TestServer;
use tokio::sync::Semaphore;

#[rohrpost_handler("sleep")]
async fn sleep(Data(millis): Data<u64>) -> u64 {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    millis
}

/// Permits handed out by the test: a `gate` handler waits for one.
static GATE: Semaphore = Semaphore::const_new(0);
static GATED_NOW: AtomicUsize = AtomicUsize::new(0);
static GATED_MOST: AtomicUsize = AtomicUsize::new(0);

#[rohrpost_handler("gate")]
async fn gate() {
    let now = GATED_NOW.fetch_add(1, Ordering::SeqCst) + 1;
    GATED_MOST.fetch_max(now, Ordering::SeqCst);
    GATE.acquire().await.expect("gate open").forget();
    GATED_NOW.fetch_sub(1, Ordering::SeqCst);
}

static FINISHED_AFTER_CLOSE: AtomicUsize = AtomicUsize::new(0);

#[rohrpost_handler("finish_after_close")]
async fn finish_after_close(Data(millis): Data<u64>) {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    FINISHED_AFTER_CLOSE.fetch_add(1, Ordering::SeqCst);
}

fn ids(replies: &[Value]) -> Vec<i64> {
    replies
        .iter()
        .map(|reply| reply["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn by_default_a_connections_messages_are_handled_in_order() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client
        .send_json(json!({"id": 1, "type": "sleep", "data": 200}))
        .await;
    client.send_json(json!({"id": 2, "type": "ping"})).await;
    let replies = [client.recv_json().await, client.recv_json().await];
    assert_eq!(ids(&replies), [1, 2], "the ping waits for the slow handler");
}

#[tokio::test]
async fn with_several_handlers_a_fast_message_overtakes_a_slow_one() {
    let server = TestServer::with(Server::builder().handlers_per_connection(4)).await;
    let mut client = server.client().await;
    client
        .send_json(json!({"id": 1, "type": "sleep", "data": 300}))
        .await;
    client
        .send_json(json!({"id": 2, "type": "sleep", "data": 100}))
        .await;
    client.send_json(json!({"id": 3, "type": "ping"})).await;
    let replies = [
        client.recv_json().await,
        client.recv_json().await,
        client.recv_json().await,
    ];
    assert_eq!(ids(&replies), [3, 2, 1], "replies in completion order");
    assert_eq!(replies[2], json!({"id": 1, "type": "sleep", "data": 300}));
}

#[tokio::test]
async fn reading_pauses_while_every_handler_slot_is_busy() {
    let server = TestServer::with(Server::builder().handlers_per_connection(2)).await;
    let mut client = server.client().await;
    for id in 1..=3 {
        client.send_json(json!({"id": id, "type": "gate"})).await;
    }
    client.send_json(json!({"id": 4, "type": "ping"})).await;
    // Two gates run; the third and the ping are not read yet.
    client.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(GATED_NOW.load(Ordering::SeqCst), 2);
    GATE.add_permits(1);
    // One gate finishes and acknowledges; the third starts in its slot, still not the ping.
    let first = client.recv_json().await;
    assert!([1, 2].contains(&first["id"].as_i64().unwrap()), "{first}");
    client.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(GATED_NOW.load(Ordering::SeqCst), 2);
    GATE.add_permits(2);
    let mut rest = ids(&[
        client.recv_json().await,
        client.recv_json().await,
        client.recv_json().await,
    ]);
    rest.push(first["id"].as_i64().unwrap());
    rest.sort_unstable();
    assert_eq!(rest, [1, 2, 3, 4], "every gate and the ping answered");
    assert_eq!(
        GATED_MOST.load(Ordering::SeqCst),
        2,
        "never more than 2 at once"
    );
    assert_eq!(GATED_NOW.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn at_shutdown_running_handlers_finish_and_reply_before_the_close() {
    let mut server = TestServer::with(Server::builder().handlers_per_connection(4)).await;
    let mut client = server.client().await;
    for (id, millis) in [(1, 300), (2, 200), (3, 250)] {
        client
            .send_json(json!({"id": id, "type": "sleep", "data": millis}))
            .await;
    }
    // Frames are read in order: the pong shows that the server read all three.
    client.send_json(json!({"id": 4, "type": "ping"})).await;
    assert_eq!(client.recv_json().await["id"], 4);
    server.begin_shutdown();
    let replies = [
        client.recv_json().await,
        client.recv_json().await,
        client.recv_json().await,
    ];
    assert_eq!(ids(&replies), [2, 3, 1]);
    assert_eq!(
        client.expect_close().await.map(|(code, _)| code),
        Some(1001)
    );
}

#[tokio::test]
async fn a_client_that_leaves_does_not_cut_its_running_handlers_short() {
    let server = TestServer::with(Server::builder().handlers_per_connection(4)).await;
    let mut client = server.client().await;
    for (id, millis) in [(1, 100), (2, 300)] {
        client
            .send_json(json!({"id": id, "type": "finish_after_close", "data": millis}))
            .await;
    }
    client.send_json(json!({"id": 3, "type": "ping"})).await;
    assert_eq!(client.recv_json().await["type"], "pong");
    client.close().await;
    // Both run to their end, the longer one too, after the shorter one's reply had
    // nowhere to go.
    tokio::time::timeout(Duration::from_secs(5), async {
        while FINISHED_AFTER_CLOSE.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both handlers ran to their end");
    // And the connection is gone from the server afterwards.
    let metrics = server.metrics.clone();
    tokio::time::timeout(Duration::from_secs(5), async move {
        while metrics.snapshot().connections_open > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the connection closed");
}

#[tokio::test]
async fn zero_handlers_per_connection_is_refused_at_bind() {
    let error = Server::builder()
        .handlers_per_connection(0)
        .bind("127.0.0.1:0")
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, ServerError::InvalidConfig(message) if message.contains("handlers_per_connection")),
        "{error}"
    );
}

#[tokio::test]
async fn many_concurrent_requests_on_one_connection_all_get_their_reply() {
    let server = TestServer::with(Server::builder().handlers_per_connection(16)).await;
    let mut client = server.client().await;
    for id in 0..500 {
        client
            .send_json(json!({"id": id, "type": "sleep", "data": id % 7}))
            .await;
    }
    let mut seen = Vec::new();
    for _ in 0..500 {
        let reply = client.recv_json().await;
        assert_eq!(reply["data"], json!(reply["id"].as_i64().unwrap() % 7));
        seen.push(reply["id"].as_i64().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..500).collect::<Vec<_>>());
}
