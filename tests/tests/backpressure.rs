//! What a burst does to a client that does not keep up, over real sockets: replies are never
//! dropped, pushes follow their policy (disconnect, conflate, drop the oldest volatile one),
//! order holds, and a disconnect always says why.

use rohrpost_todo as app;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rohrpost::notify::{Change, Notify};
use rohrpost::prelude::*;
use rohrpost::Groups;
use serde_json::json;
use tests::{Client, TestServer};
use tokio_tungstenite::tungstenite::Message as Frame;

const TOKEN: &str = "hunter2";

#[rohrpost_handler("backpressure.echo")]
async fn echo(req: Request) -> Option<Value> {
    req.data
}

#[rohrpost_handler("backpressure.join")]
async fn join(conn: Connection, Data(group): Data<String>) -> Result<(), rohrpost::Error> {
    conn.join(&group).await.map_err(rohrpost::Error::internal)
}

/// The todo demo on a fresh SQLite file, with its default limits.
/// The demo, with a write timeout far beyond any test's length: the readers here stall on
/// purpose for as long as the bursts take, which depends on the machine's disk.
async fn demo(dir: &tempfile::TempDir) -> (TestServer, Groups) {
    let config = app::Config::local(app::sqlite_in(dir.path()));
    let groups = Groups::memory();
    let builder = app::builder(&config, groups.clone())
        .await
        .expect("demo settings")
        .write_timeout(Duration::from_secs(300));
    (TestServer::with(builder).await, groups)
}

/// Sends `requests` pipelined, `window` at a time, and returns their replies in order.
async fn pipelined(client: &mut Client, requests: Vec<Value>, window: usize) -> Vec<Value> {
    let mut replies = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(window) {
        for request in chunk {
            client.send_json(request.clone()).await;
        }
        for _ in chunk {
            replies.push(client.recv_json().await);
        }
    }
    replies
}

/// A title of about 2 KiB that starts with `n`, so that a burst outgrows the socket buffers.
fn long_title(n: usize) -> String {
    format!("{n:05} {}", "t".repeat(2048))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reads_late_gets_the_latest_todo_instead_of_a_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _groups) = demo(&dir).await;
    let mut editor = server.client().await;
    editor
        .call(json!({"id": 1, "type": "todo.create", "data": {"title": "milk"}}))
        .await;
    let mut reader = Client::connect_small_buffer(&server.url).await;
    let reply = reader
        .call(json!({"id": 1, "type": "subscribe", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1}}))
        .await;
    assert_eq!(reply["data"]["group"], "todo-1");

    let updates = 5000;
    let requests = (0..updates)
        .map(|n| json!({"id": n, "type": "todo.update", "data": {"id": 1, "title": long_title(n)}}))
        .collect();
    let replies = pipelined(&mut editor, requests, 100).await;
    assert!(replies.iter().all(|reply| reply["type"] == "todo.update"));

    // Now the reader reads: what the socket buffers held, then the conflated rest.
    let mut received = 0;
    let last = loop {
        let push = reader.recv_json().await;
        received += 1;
        let object = push["data"]["object"].clone();
        if object["title"] == long_title(updates - 1) {
            break object;
        }
    };
    assert_eq!(last["updated_fields"], json!(["title"]));
    let metrics = server.metrics.snapshot();
    assert_eq!(metrics.slow_clients, 0);
    // Every update either arrived or was replaced by a newer one: none lost silently. What
    // arrived is what the socket buffers took before the reader stalled (about 2.5 MB here:
    // Linux grows the send buffer) and what the queue held; the queue held at most its
    // length, or the reader would have been disconnected.
    assert_eq!(received + metrics.pushes_conflated as usize, updates);
    assert!(
        received < updates / 2,
        "{received} pushes for {updates} updates"
    );
    // Still connected, and nothing else was waiting.
    let pong = reader.call(json!({"id": 2, "type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    eprintln!(
        "{received} pushes reached the reader for {updates} updates; {} conflated",
        metrics.pushes_conflated
    );
}

/// A type whose updates name different fields, conflated.
#[derive(serde::Serialize, Notify)]
#[rohrpost(serialize, conflate, name = "doc")]
struct Doc {
    id: i64,
    title: String,
    body: String,
}

/// The same type's pushes without conflation.
#[derive(serde::Serialize, Notify)]
#[rohrpost(serialize, name = "doc")]
struct PlainDoc {
    id: i64,
    title: String,
    body: String,
}

async fn stalled_member(server: &TestServer, group: &str) -> Client {
    let mut client = Client::connect_small_buffer(&server.url).await;
    let reply = client
        .call(json!({"id": 0, "type": "backpressure.join", "data": group}))
        .await;
    assert_eq!(reply["type"], "backpressure.join", "{reply}");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflated_update_carries_the_union_of_the_fields_it_replaced() {
    let groups = Groups::memory();
    let server = TestServer::with(Server::builder().groups(groups.clone())).await;
    let mut reader = stalled_member(&server, "doc-1").await;
    let body = "b".repeat(2048);
    let updates = 5000;
    for n in 0..updates {
        let doc = Doc {
            id: 1,
            title: format!("title {n}"),
            body: body.clone(),
        };
        // Most updates change the title; one in the middle changes the body.
        let fields: &[&str] = if n == updates / 2 {
            &["body"]
        } else {
            &["title"]
        };
        groups
            .notify(&doc, Change::Update, Some(fields))
            .await
            .unwrap();
    }
    let last = loop {
        let push = reader.recv_json().await;
        if push["data"]["object"]["title"] == format!("title {}", updates - 1) {
            break push["data"]["object"].clone();
        }
    };
    assert_eq!(last["updated_fields"], json!(["title", "body"]));
    assert_eq!(server.metrics.snapshot().slow_clients, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_burst_without_conflation_disconnects_with_1008() {
    let groups = Groups::memory();
    let server = TestServer::with(Server::builder().groups(groups.clone())).await;
    let mut reader = stalled_member(&server, "doc-1").await;
    let body = "b".repeat(2048);
    for n in 0..5000 {
        let doc = PlainDoc {
            id: 1,
            title: format!("title {n}"),
            body: body.clone(),
        };
        let _ = groups.notify(&doc, Change::Update, Some(&["title"])).await;
    }
    reader.expect_slow_client_close().await;
    assert_eq!(server.metrics.snapshot().slow_clients, 1);
    assert_eq!(server.metrics.snapshot().pushes_conflated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_of_a_client_that_reads_late_all_get_their_replies_in_order() {
    let server = TestServer::start().await;
    let (socket, _) = tokio_tungstenite::connect_async(server.url.as_str())
        .await
        .expect("connects");
    let (mut sink, mut stream) = socket.split();
    let requests = 5000;
    let payload = "p".repeat(1024);
    // The writer blocks once the server stops reading (reply backlog full, buffers full).
    let writing = tokio::spawn(async move {
        for n in 0..requests {
            let request = json!({"id": n, "type": "backpressure.echo", "data": payload});
            sink.feed(Frame::Text(request.to_string().into()))
                .await
                .expect("sent");
        }
        sink.flush().await.expect("flushed");
        sink
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in 0..requests {
        let frame = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a reply in time")
            .expect("the connection stays open")
            .expect("a frame");
        let Frame::Text(text) = frame else {
            panic!("reply {n} is {frame:?}");
        };
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(reply["id"], n, "replies in request order");
        assert_eq!(reply["data"].as_str().map(str::len), Some(1024));
    }
    let mut sink = writing.await.unwrap();
    sink.send(Frame::Text(r#"{"id":"last","type":"ping"}"#.into()))
        .await
        .unwrap();
    let Some(Ok(Frame::Text(pong))) = stream.next().await else {
        panic!("the connection stays open");
    };
    assert_eq!(pong.as_str(), r#"{"id":"last","type":"pong"}"#);
    assert_eq!(server.metrics.snapshot().slow_clients, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_pushes_drop_the_oldest_keep_their_order_and_never_disconnect() {
    let groups = Groups::memory();
    let server = TestServer::with(Server::builder().groups(groups.clone())).await;
    let mut reader = stalled_member(&server, "ticker").await;
    let payload = "v".repeat(2048);
    let sent = 5000;
    for n in 0..sent {
        let tick = Message::success("tick", n).with_data(payload.as_str());
        groups.send_volatile("ticker", &tick).await.unwrap();
    }
    let mut previous = None;
    let mut received = 0;
    loop {
        let tick = reader.recv_json().await;
        let n = tick["id"].as_u64().expect("a tick");
        assert!(previous.is_none_or(|p| n > p), "{n} after {previous:?}");
        previous = Some(n);
        received += 1;
        if n == sent - 1 {
            break;
        }
    }
    let metrics = server.metrics.snapshot();
    assert_eq!(metrics.slow_clients, 0);
    assert!(metrics.pushes_dropped_volatile > 0);
    assert_eq!(
        received + metrics.pushes_dropped_volatile,
        sent,
        "every tick either arrived or was counted as dropped"
    );
    assert_eq!(
        reader.call(json!({"id": 1, "type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_never_overtaken_by_a_later_reply_under_pressure() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _groups) = demo(&dir).await;
    let mut flooder = server.client().await;
    flooder
        .call(json!({"id": 1, "type": "todo.create", "data": {"title": "milk"}}))
        .await;
    // The editor subscribes, then reads nothing while another client floods the todo.
    let mut editor = Client::connect_small_buffer(&server.url).await;
    editor
        .call(json!({"id": 1, "type": "subscribe", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1}}))
        .await;
    let flood = (0..3000)
        .map(|n| json!({"id": n, "type": "todo.update", "data": {"id": 1, "title": long_title(n)}}))
        .collect();
    pipelined(&mut flooder, flood, 100).await;
    // Its own updates: each reply must come after a push at least as new as that update.
    let own = 50;
    for k in 0..own {
        let title = format!("editor {k:03}");
        editor
            .send_json(json!({"id": format!("e{k}"), "type": "todo.update", "data": {"id": 1, "title": title}}))
            .await;
    }
    let mut newest_pushed: Option<String> = None;
    let mut replies = 0;
    while replies < own {
        let message = editor.recv_json().await;
        match message["type"].as_str() {
            Some("subscription-update") => {
                let title = message["data"]["object"]["title"].as_str().unwrap();
                if title.starts_with("editor") {
                    newest_pushed = Some(title.to_owned());
                }
            }
            Some("todo.update") => {
                let title = message["data"]["title"].as_str().unwrap().to_owned();
                assert!(
                    newest_pushed
                        .as_ref()
                        .is_some_and(|pushed| *pushed >= title),
                    "the reply for {title:?} came before its push (newest push: {newest_pushed:?})"
                );
                replies += 1;
            }
            _ => panic!("unexpected {message}"),
        }
    }
    assert_eq!(server.metrics.snapshot().slow_clients, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_that_reads_late_still_gets_1008_and_its_reason() {
    let groups = Groups::memory();
    let close_timeout = Duration::from_secs(2);
    let builder = Server::builder()
        .groups(groups.clone())
        .outbound_queue(64)
        .write_timeout(Duration::from_millis(300))
        .close_timeout(close_timeout);
    let server = TestServer::with(builder).await;
    let mut reader = stalled_member(&server, "flood").await;
    let payload = "f".repeat(2048);
    for n in 0..10_000 {
        let message = Message::success("flood", n).with_data(payload.as_str());
        let _ = groups.send("flood", &message).await;
    }
    let cut_off = std::time::Instant::now();
    while server.metrics.snapshot().slow_clients == 0 {
        assert!(cut_off.elapsed() < Duration::from_secs(5), "cut off");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Reads only after the close timeout (a close frame without a status came here before:
    // the client saw 1005 and could not tell why it was cut off).
    tokio::time::sleep(close_timeout + close_timeout / 4).await;
    let reading = std::time::Instant::now();
    reader.expect_slow_client_close().await;
    eprintln!("read to the close frame in {:?}", reading.elapsed());
}

/// Reports on `0` when dropped: the connection that held it in its state was freed.
struct Freed(tokio::sync::mpsc::UnboundedSender<()>);

impl Drop for Freed {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

async fn wait_freed(frees: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    tokio::time::timeout(Duration::from_secs(5), frees.recv())
        .await
        .expect("the connection was freed")
        .expect("a report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_freed_when_it_ends_even_while_its_reader_waits_for_the_backlog() {
    let (freed, mut frees) = tokio::sync::mpsc::unbounded_channel();
    let builder = Server::builder().reply_backlog(4).authenticate(
        move |_: rohrpost::handshake::Handshake| {
            let freed = freed.clone();
            async move { Ok(rohrpost::handshake::Accept::new().with(Freed(freed))) }
        },
    );
    let server = TestServer::with(builder).await;
    // A connection that ends plainly.
    let mut plain = server.client().await;
    plain.call(json!({"id": 1, "type": "ping"})).await;
    plain.close().await;
    wait_freed(&mut frees).await;
    // A client that sends requests and reads nothing: the server's writer stalls on the full
    // socket, the replies fill the backlog, and the reader waits for room (its waker kept by
    // the connection) when the client goes away.
    let (socket, _) = tokio_tungstenite::connect_async(server.url.as_str())
        .await
        .expect("connects");
    let (mut sink, stream) = socket.split();
    let payload = "p".repeat(16 * 1024);
    let writing = tokio::spawn(async move {
        for n in 0..2000 {
            let request = json!({"id": n, "type": "backpressure.echo", "data": payload});
            if sink
                .send(Frame::Text(request.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !writing.is_finished(),
        "the server stopped reading the requests"
    );
    writing.abort();
    let _ = writing.await;
    drop(stream);
    wait_freed(&mut frees).await;
    server.shutdown().await;
}
