//! The Rust client against the todo demo (and a few deliberately odd servers), over real
//! sockets: calls, concurrent calls answered out of order, timeouts, subscriptions, a
//! server restart with subscriptions restored, dead connections, close.

use rohrpost_todo as app;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rohrpost::client::{group_object, Client, ClientError, ConnectionState, Update};
use rohrpost::notify::Change;
use rohrpost::Groups;
use serde_json::{json, Value};
use tests::TestServer;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as Frame;

const TOKEN: &str = "hunter2";

async fn todo_server(addr: &str, database: &str) -> TestServer {
    todo_server_with(addr, database, Groups::memory()).await
}

async fn todo_server_with(addr: &str, database: &str, groups: Groups) -> TestServer {
    let config = app::Config {
        addr: addr.into(),
        ..app::Config::local(database)
    };
    let server = app::server(&config, groups).await.expect("demo starts");
    TestServer::run(server)
}

fn sqlite(dir: &tempfile::TempDir) -> String {
    app::sqlite_in(dir.path())
}

async fn client(url: &str) -> Client {
    Client::builder(url)
        .token(TOKEN)
        .call_timeout(Duration::from_secs(5))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .expect("client connects")
}

#[tokio::test]
async fn calls_resolve_with_data_or_fail_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = todo_server("127.0.0.1:0", &sqlite(&dir)).await;
    let client = client(&server.url).await;
    assert_eq!(client.call("ping", ()).await, Ok(Value::Null));
    assert_eq!(
        client.call("echo", json!({"x": [1, 2]})).await,
        Ok(json!({"x": [1, 2]}))
    );
    let todo: app::Todo = client
        .call_as("todo.create", json!({"title": "milk"}))
        .await
        .unwrap();
    assert_eq!(
        todo,
        app::Todo {
            id: 1,
            title: "milk".into()
        }
    );
    assert_eq!(
        client
            .call("todo.update", json!({"id": 9, "title": "x"}))
            .await,
        Err(ClientError::Reply {
            error: json!("Todo 9 does not exist."),
            data: None
        })
    );
    assert!(matches!(
        client
            .call_as::<app::Todo>("echo", json!({"no": "todo"}))
            .await,
        Err(ClientError::Decode { .. })
    ));
    assert_eq!(client.state(), ConnectionState::Connected);
}

/// A server that reads `n` requests, then answers them in reverse order.
async fn reversing_server(n: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
        let mut requests = Vec::new();
        while requests.len() < n {
            if let Some(Ok(Frame::Text(text))) = socket.next().await {
                let request: Value = serde_json::from_str(&text).unwrap();
                if request["type"] != "ping" {
                    requests.push(request);
                }
            }
        }
        for request in requests.into_iter().rev() {
            let reply =
                json!({"id": request["id"], "type": request["type"], "data": request["data"]});
            socket
                .send(Frame::Text(reply.to_string().into()))
                .await
                .unwrap();
        }
        while socket.next().await.is_some() {}
    });
    addr
}

#[tokio::test]
async fn concurrent_calls_match_replies_that_come_out_of_order() {
    let addr = reversing_server(3).await;
    let client = client(&format!("ws://{addr}/")).await;
    let (a, b, c) = tokio::join!(
        client.call("echo", json!("a")),
        client.call("echo", json!("b")),
        client.call("echo", json!("c")),
    );
    assert_eq!((a, b, c), (Ok(json!("a")), Ok(json!("b")), Ok(json!("c"))));
}

/// A server that completes the handshake, reads, and never answers anything.
async fn mute_server(drop_after_first_request: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(frame)) = socket.next().await {
                    if drop_after_first_request && frame.is_text() {
                        return; // the connection drops with the call in flight
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_call_without_reply_times_out() {
    let addr = mute_server(false).await;
    let client = Client::builder(format!("ws://{addr}/"))
        .call_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        client.call("echo", 1).await,
        Err(ClientError::Timeout(Duration::from_millis(200)))
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_call_in_flight_when_the_connection_drops_fails_clearly() {
    let addr = mute_server(true).await;
    let client = client(&format!("ws://{addr}/")).await;
    assert_eq!(client.call("echo", 1).await, Err(ClientError::Disconnected));
}

#[tokio::test]
async fn a_silent_connection_counts_as_dead_and_is_replaced() {
    let addr = mute_server(false).await;
    let client = Client::builder(format!("ws://{addr}/"))
        .ping_interval(Duration::from_millis(100))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    let mut state = client.state_changes();
    tokio::time::timeout(
        Duration::from_secs(3),
        state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
    )
    .await
    .expect("the dead connection is noticed within a few ping intervals")
    .unwrap();
}

#[tokio::test]
async fn subscriptions_deliver_typed_updates() {
    let dir = tempfile::tempdir().unwrap();
    let server = todo_server("127.0.0.1:0", &sqlite(&dir)).await;
    let watcher = client(&server.url).await;
    let editor = client(&server.url).await;
    let mut changes = watcher
        .subscribe::<app::Todo>(group_object("todo", 1))
        .await
        .unwrap();
    assert_eq!(changes.group(), "todo-1");
    editor
        .call("todo.create", json!({"title": "milk"}))
        .await
        .unwrap();
    editor
        .call("todo.update", json!({"id": 1, "title": "oat milk"}))
        .await
        .unwrap();
    editor.call("todo.delete", json!({"id": 1})).await.unwrap();
    let expected = [
        (Change::Create, "milk"),
        (Change::Update, "oat milk"),
        (Change::Delete, "oat milk"),
    ];
    for (change, title) in expected {
        let update = changes.next().await.expect("an update").expect("decodes");
        assert_eq!(
            update,
            Update {
                change,
                group: "todo-1".into(),
                object: app::Todo {
                    id: 1,
                    title: title.into()
                }
            }
        );
    }
    // A refused subscription fails with the server's error.
    let intruder = Client::connect(server.url.clone()).await.unwrap();
    assert_eq!(
        intruder
            .subscribe::<Value>(group_object("todo", 1))
            .await
            .err(),
        Some(ClientError::Reply {
            error: json!("ACCESS_DENIED"),
            data: None
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_restores_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let database = sqlite(&dir);
    let first = todo_server("127.0.0.1:0", &database).await;
    let addr = first.addr.to_string();
    let watcher = client(&first.url).await;
    let mut changes = watcher
        .subscribe::<app::Todo>(group_object("todo", 1))
        .await
        .unwrap();
    let mut state = watcher.state_changes();

    first.shutdown().await;
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    // Same address, same database: the client comes back and re-subscribes by itself.
    let second = todo_server(&addr, &database).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| *s == ConnectionState::Connected),
    )
    .await
    .expect("reconnected")
    .unwrap();
    // The restarted server's stream is another: the subscription says that what happened
    // meanwhile may be lost, then goes on.
    expect_missed(&mut changes, "todo-1").await;
    let editor = client(&second.url).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    // The re-subscription may still be on its way: retry the change until it is heard.
    let mut title = 0;
    let update = loop {
        title += 1;
        editor
            .call("todo.create", json!({"title": format!("t{title}")}))
            .await
            .unwrap();
        if let Ok(update) = tokio::time::timeout(Duration::from_millis(300), changes.next()).await {
            break update.unwrap().unwrap();
        }
        assert!(Instant::now() < deadline, "no update after the restart");
    };
    assert_eq!(update.group, "todo-1");
    assert_eq!(update.change, Change::Create);
}

#[tokio::test]
async fn close_ends_calls_and_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let server = todo_server("127.0.0.1:0", &sqlite(&dir)).await;
    let client = client(&server.url).await;
    let mut changes = client
        .subscribe::<Value>(group_object("todo", 1))
        .await
        .unwrap();
    client.close().await;
    assert_eq!(client.state(), ConnectionState::Closed);
    assert_eq!(client.call("ping", ()).await, Err(ClientError::Closed));
    assert!(changes.next().await.is_none(), "the subscription ended");
}

#[tokio::test]
async fn unsubscribe_stops_updates() {
    let dir = tempfile::tempdir().unwrap();
    let server = todo_server("127.0.0.1:0", &sqlite(&dir)).await;
    let watcher = client(&server.url).await;
    let editor = client(&server.url).await;
    let changes = watcher
        .subscribe::<Value>(group_object("todo", 1))
        .await
        .unwrap();
    changes.unsubscribe();
    // Once the unsubscribe went out (the ping after it is answered), nothing is delivered.
    watcher.call("ping", ()).await.unwrap();
    let mut after = watcher
        .subscribe::<Value>(group_object("todo", 2))
        .await
        .unwrap();
    editor
        .call("todo.create", json!({"title": "one"}))
        .await
        .unwrap();
    editor
        .call("todo.create", json!({"title": "two"}))
        .await
        .unwrap();
    let update = after.next().await.unwrap().unwrap();
    assert_eq!(update.group, "todo-2", "todo-1's update was not delivered");
}

/// A server that drops the first connection when it receives a subscribe, and answers
/// subscribes on the next connection.
async fn flaky_subscribe_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
            let drop_it = std::mem::replace(&mut first, false);
            tokio::spawn(async move {
                while let Some(Ok(Frame::Text(text))) = socket.next().await {
                    let request: Value = serde_json::from_str(&text).unwrap();
                    if request["type"] == "subscribe" {
                        if drop_it {
                            return;
                        }
                        let group = format!(
                            "{}-{}",
                            request["data"]["type"].as_str().unwrap(),
                            request["data"]["id"]
                        );
                        let reply = json!({"id": request["id"], "type": "subscribe", "data": {"group": group}});
                        socket
                            .send(Frame::Text(reply.to_string().into()))
                            .await
                            .unwrap();
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_subscribe_pending_when_the_connection_drops_is_sent_again() {
    let addr = flaky_subscribe_server().await;
    let client = client(&format!("ws://{addr}/")).await;
    let subscription = client
        .subscribe::<Value>(group_object("todo", 5))
        .await
        .unwrap();
    assert_eq!(subscription.group(), "todo-5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_while_offline_forgets_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let database = sqlite(&dir);
    let first = todo_server("127.0.0.1:0", &database).await;
    let addr = first.addr.to_string();
    let watcher = client(&first.url).await;
    let forgotten = watcher
        .subscribe::<Value>(group_object("todo", 1))
        .await
        .unwrap();
    let mut kept = watcher
        .subscribe::<Value>(group_object("todo", 2))
        .await
        .unwrap();
    let mut state = watcher.state_changes();
    first.shutdown().await;
    state
        .wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. }))
        .await
        .unwrap();
    forgotten.unsubscribe();
    let groups = Groups::memory();
    let second = todo_server_with(&addr, &database, groups.clone()).await;
    state
        .wait_for(|s| *s == ConnectionState::Connected)
        .await
        .unwrap();
    expect_missed(&mut kept, "todo-2").await;
    let editor = client(&second.url).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    // todo 1, then todo 2; only todo 2's subscription was restored.
    editor
        .call("todo.create", json!({"title": "one"}))
        .await
        .unwrap();
    loop {
        editor
            .call("todo.update", json!({"id": 1, "title": "one"}))
            .await
            .ok();
        editor
            .call("todo.create", json!({"title": "two"}))
            .await
            .unwrap();
        if let Ok(update) = tokio::time::timeout(Duration::from_millis(300), kept.next()).await {
            assert_eq!(update.unwrap().unwrap().group, "todo-2");
            break;
        }
        assert!(Instant::now() < deadline, "todo-2 restored");
    }
    assert_eq!(watcher.state(), ConnectionState::Connected);
    assert_eq!(groups.member_count("todo-2"), 1, "re-subscribed");
    assert_eq!(groups.member_count("todo-1"), 0, "forgotten while offline");
}

#[tokio::test]
async fn two_subscriptions_to_one_group_each_get_updates_and_leave_alone() {
    let dir = tempfile::tempdir().unwrap();
    let groups = Groups::memory();
    let server = todo_server_with("127.0.0.1:0", &sqlite(&dir), groups.clone()).await;
    let watcher = client(&server.url).await;
    let editor = client(&server.url).await;
    let mut first = watcher
        .subscribe::<app::Todo>(group_object("todo", 1))
        .await
        .unwrap();
    let mut second = watcher
        .subscribe::<app::Todo>(group_object("todo", 1))
        .await
        .unwrap();
    editor
        .call("todo.create", json!({"title": "milk"}))
        .await
        .unwrap();
    for subscription in [&mut first, &mut second] {
        let update = subscription.next().await.unwrap().unwrap();
        assert_eq!(update.object.title, "milk");
    }
    // Dropping one keeps the other, and the connection stays in the group.
    drop(first);
    watcher.call("ping", ()).await.unwrap();
    assert_eq!(groups.member_count("todo-1"), 1);
    editor
        .call("todo.update", json!({"id": 1, "title": "oat milk"}))
        .await
        .unwrap();
    assert_eq!(
        second.next().await.unwrap().unwrap().object.title,
        "oat milk"
    );
    // Dropping the last one unsubscribes on the server.
    drop(second);
    watcher.call("ping", ()).await.unwrap();
    assert_eq!(groups.member_count("todo-1"), 0);
}

/// The next item of a subscription is `Missed` for `group`.
async fn expect_missed<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    subscription: &mut rohrpost::client::Subscription<T>,
    group: &str,
) {
    let told = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("told in time")
        .expect("the subscription goes on");
    assert_eq!(
        told.unwrap_err(),
        rohrpost::client::ClientError::Missed {
            group: group.into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_headers_and_cookies_reach_the_server_and_a_refusal_keeps_its_status() {
    use rohrpost::handshake::{Accept, Refusal};
    let server = rohrpost::Server::builder()
        .handlers(rohrpost::Handlers::new())
        .authenticate(|handshake| async move {
            let bearer = handshake.header("authorization") == Some("Bearer s3cret");
            let session = handshake.cookie("session").as_deref() == Some("abc");
            let theme = handshake.cookie("theme").as_deref() == Some("dark");
            match (bearer, session && theme) {
                (true, true) => Ok(Accept::new()),
                (false, _) => Err(Refusal::unauthorized("no bearer token")),
                (true, false) => Err(Refusal::forbidden("no session")),
            }
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn();
    let accepted = Client::builder(server.url())
        .header("authorization", "Bearer s3cret")
        .cookie("session", "abc")
        .cookie("theme", "dark")
        .connect()
        .await
        .expect("accepted");
    accepted.close().await;
    let refused = Client::builder(server.url())
        .header("authorization", "Bearer s3cret")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        ClientError::Refused {
            url: server.url(),
            status: 403,
            body: "no session".into()
        }
    );
    let invalid = Client::builder(server.url())
        .header("bad header", "x")
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&invalid, ClientError::Connect { reason, .. } if reason.contains("invalid header name")),
        "{invalid}"
    );
    server.shutdown().await;
}
