//! Hostile and broken clients over real sockets: odd messages, floods,
//! stuck handlers, slow consumers, silent peers, shutdown under load, and churn.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rohrpost::groups::GroupStats;
use rohrpost::prelude::*;
use rohrpost::server::MetricsSnapshot;
use rohrpost::Groups;
use serde_json::json;
use tests::{Client, Event, TestServer};

#[rohrpost_handler("echo")]
async fn echo(req: Request) -> Option<Value> {
    req.data
}

static STUCK_DROPPED: AtomicBool = AtomicBool::new(false);

struct SetOnDrop;

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        STUCK_DROPPED.store(true, Ordering::SeqCst);
    }
}

#[rohrpost_handler("stuck")]
async fn stuck() {
    let _guard = SetOnDrop;
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[rohrpost_handler("join")]
async fn join(conn: Connection, Data(group): Data<String>) -> Result<(), Error> {
    conn.join(&group).await.map_err(Error::internal)
}

#[tokio::test]
async fn odd_json_gets_clear_errors_and_the_connection_stays() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    client.send_text(deep).await;
    let reply = client.recv_json().await;
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .starts_with("Could not decode JSON message. Error: recursion limit exceeded"),
        "{reply}"
    );
    client
        .send_text(r#"{"id": 1, "type": "echo", "data": 1e400}"#)
        .await;
    let reply = client.recv_json().await;
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("number out of range"),
        "{reply}"
    );
    // A large integer is kept as a number (beyond 64 bits, as a float).
    assert_eq!(
        client
            .call(json!({"id": 2, "type": "echo", "data": 18446744073709551615u64}))
            .await["data"],
        json!(18446744073709551615u64)
    );
    // Unknown top-level fields are carried, not refused.
    assert_eq!(
        client
            .call(json!({"id": 3, "type": "echo", "data": 1, "unknown": {"x": 1}}))
            .await,
        json!({"id": 3, "type": "echo", "data": 1})
    );
    // An id that is an object is echoed as it is.
    assert_eq!(
        client.call(json!({"id": {"a": [1]}, "type": "ping"})).await,
        json!({"id": {"a": [1]}, "type": "pong"})
    );
    assert_eq!(
        client.call(json!({"id": 4, "type": "ping"})).await["type"],
        "pong"
    );
    // Ids come back as the very text the client sent, also those a 64-bit number cannot
    // hold: in replies, pongs, error replies and the unknown-type error.
    let exact = [
        (
            r#"{"id": 18446744073709551617, "type": "ping"}"#,
            r#"{"id":18446744073709551617,"type":"pong"}"#,
        ),
        (
            r#"{"id":1.0,"type":"echo","data":1}"#,
            r#"{"id":1.0,"type":"echo","data":1}"#,
        ),
        (
            r#"{"id":1e2,"type":"nope"}"#,
            r#"{"id":1e2,"type":"nope","error":"Unknown message type 'nope'."}"#,
        ),
        (
            r#"{"id":-0.50,"type":7}"#,
            r#"{"id":-0.50,"error":"Field 'type' must be a string."}"#,
        ),
    ];
    for (sent, expected) in exact {
        client.send_text(sent).await;
        assert_eq!(client.recv_text().await, expected, "for {sent}");
    }
}

#[tokio::test]
async fn a_flood_past_the_rate_limit_gets_error_replies() {
    let server = TestServer::with(Server::builder().rate_limit(10.0, 5)).await;
    let mut client = server.client().await;
    for id in 0..20 {
        client.send_json(json!({"id": id, "type": "ping"})).await;
    }
    let mut pongs = 0;
    for id in 0..20 {
        let reply = client.recv_json().await;
        if reply["type"] == "pong" {
            pongs += 1;
        } else {
            assert_eq!(
                reply,
                json!({"id": id, "type": "ping", "error": "Rate limit exceeded."})
            );
        }
    }
    // The burst, and perhaps a token refilled while the flood arrived.
    assert!((5..=6).contains(&pongs), "{pongs} pongs");
    assert_eq!(server.metrics.snapshot().rate_limited, 20 - pongs);
    // Tokens come back over time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        client.call(json!({"id": 99, "type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn a_stuck_handler_times_out_and_is_dropped() {
    let builder = Server::builder().handler_timeout(Duration::from_millis(200));
    let server = TestServer::with(builder).await;
    let mut client = server.client().await;
    let started = Instant::now();
    assert_eq!(
        client.call(json!({"id": 1, "type": "stuck"})).await,
        json!({"id": 1, "type": "stuck", "error": "Handler timed out."})
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        STUCK_DROPPED.load(Ordering::SeqCst),
        "the handler's future was dropped"
    );
    assert_eq!(server.metrics.snapshot().handler_timeouts, 1);
    assert_eq!(
        client.call(json!({"id": 2, "type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_never_slows_a_thousand_others() {
    let groups = Groups::memory();
    let builder = Server::builder()
        .groups(groups.clone())
        .outbound_queue(16)
        .write_timeout(Duration::from_secs(1))
        .close_timeout(Duration::from_secs(20));
    let server = TestServer::with(builder).await;
    let mut stalled = Client::connect_small_buffer(&server.url).await;
    stalled
        .call(json!({"id": 0, "type": "join", "data": "stream"}))
        .await;
    stalled
        .call(json!({"id": 0, "type": "join", "data": "flood"}))
        .await;
    // Only the stalled client gets this: 8 MB, more than the socket buffers (up to 4 MB
    // for sending, on Linux's defaults) and its queue hold.
    let big = "f".repeat(20 * 1024);
    for n in 0..400 {
        let message = Message::success("flood", n).with_data(big.as_str());
        groups.send("flood", &message).await.unwrap();
    }
    let count = 100;
    let mut readers = Vec::new();
    for _ in 0..1000 {
        let mut reader = server.client().await;
        reader
            .call(json!({"id": 0, "type": "join", "data": "stream"}))
            .await;
        readers.push(reader);
    }
    let receiving: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            tokio::spawn(async move {
                for n in 0..count {
                    let text = reader.recv_text().await;
                    assert!(text.starts_with(&format!(r#"{{"id":{n},"type":"tick""#)));
                }
                reader
            })
        })
        .collect();
    let payload = "p".repeat(1024);
    for n in 0..count {
        let message = Message::success("tick", n).with_data(payload.as_str());
        groups.send("stream", &message).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut readers = Vec::new();
    for task in receiving {
        readers.push(
            tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .expect("every reader got every message in order")
                .unwrap(),
        );
    }
    stalled.expect_slow_client_close().await;
    assert_eq!(server.metrics.snapshot().slow_clients, 1);
    drop(stalled);
    wait_until(|| groups.member_count("stream") == 1000).await;
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped_and_leaves_its_groups() {
    let groups = Groups::memory();
    let builder = Server::builder()
        .groups(groups.clone())
        .ping(Duration::from_millis(200), Duration::from_millis(200));
    let server = TestServer::with(builder).await;
    let mut silent = server.client().await;
    silent
        .call(json!({"id": 0, "type": "join", "data": "g"}))
        .await;
    let mut alive = server.client().await;
    alive
        .call(json!({"id": 0, "type": "join", "data": "g"}))
        .await;
    // The live client keeps reading (and so answers pings); the silent one never reads.
    let reading = tokio::spawn(async move {
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            alive.expect_silence(Duration::from_millis(50)).await;
        }
        alive
    });
    wait_until(|| server.metrics.snapshot().ping_timeouts == 1).await;
    wait_until(|| groups.member_count("g") == 1).await;
    let mut alive = reading.await.unwrap();
    assert_eq!(
        alive.call(json!({"id": 1, "type": "ping"})).await["type"],
        "pong"
    );
    assert_eq!(
        server.metrics.snapshot().ping_timeouts,
        1,
        "only the silent one"
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_loses_no_reply_already_produced() {
    let mut server = TestServer::start().await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut client = server.client().await;
        for id in 0..200 {
            client
                .send_json(json!({"id": id, "type": "echo", "data": id}))
                .await;
        }
        clients.push(client);
    }
    server.begin_shutdown();
    for mut client in clients {
        let mut expected = 0;
        let close = loop {
            match client.next_event().await {
                Event::Text(text) => {
                    let reply: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(
                        reply,
                        json!({"id": expected, "type": "echo", "data": expected}),
                        "no gap"
                    );
                    expected += 1;
                }
                other => break other,
            }
        };
        assert_eq!(
            close,
            Event::Closed(Some((1001, "server shutting down".into())))
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connect_subscribe_disconnect_cycles_leave_nothing_behind() {
    let groups = Groups::memory();
    let server = TestServer::with(Server::builder().groups(groups.clone())).await;
    let metrics = server.metrics.clone();
    let runtime = tokio::runtime::Handle::current().metrics();
    let cycle = |n: usize| {
        let url = server.url.clone();
        async move {
            let mut client = Client::connect(&url).await;
            client
                .call(json!({"id": 0, "type": "join", "data": format!("g{}", n % 100)}))
                .await;
            if n.is_multiple_of(2) {
                client.close().await;
            } else {
                drop(client);
            }
        }
    };
    // Warm up, so that allocator pools and buffers exist before the baseline.
    for n in 0..1000 {
        cycle(n).await;
    }
    wait_until(|| metrics.snapshot().connections_open == 0).await;
    let tasks_before = runtime.num_alive_tasks();
    let memory_before = resident_kib();
    for n in 0..10_000 {
        cycle(n).await;
    }
    wait_until(|| metrics.snapshot().connections_open == 0).await;
    wait_until(|| groups.stats() == GroupStats::default()).await;
    wait_until(|| runtime.num_alive_tasks() <= tasks_before).await;
    let MetricsSnapshot {
        connections_total, ..
    } = metrics.snapshot();
    assert_eq!(connections_total, 11_000);
    let growth = resident_kib().saturating_sub(memory_before);
    assert!(growth < 8 * 1024, "resident memory grew by {growth} KiB");
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
