//! Resumable subscriptions over real sockets: a subscriber that comes back with `since`
//! gets exactly what it missed, or `"recovered": false` when that cannot be told; one that
//! never sends `since` sees the bytes it always saw.

use std::time::Duration;

use rohrpost::groups::History;
use rohrpost::prelude::*;
use rohrpost::subscribe::Subscriptions;
use rohrpost_todo as app;
use serde_json::json;
use tests::{Client, TestServer};

const TOKEN: &str = "hunter2";

async fn demo(database_url: &str) -> TestServer {
    let config = app::Config::local(database_url);
    let server = app::server(&config, Groups::memory())
        .await
        .expect("demo starts");
    TestServer::run(server)
}

fn sqlite(dir: &tempfile::TempDir) -> String {
    app::sqlite_in(dir.path())
}

fn subscribe(id: i64, since: Value) -> Value {
    json!({"id": id, "type": "subscribe", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1, "since": since}})
}

/// A server whose groups `g-*` keep `history`, with the ready-made subscribe handlers.
async fn with_history(history: History) -> (TestServer, Groups) {
    let groups = Groups::memory();
    let builder = Server::builder()
        .handlers(Handlers::new().merge(Subscriptions::allow_all().handlers()))
        .groups(groups.clone())
        .history(history);
    (TestServer::with(builder).await, groups)
}

fn subscribe_g(id: i64, since: Value) -> Value {
    json!({"id": id, "type": "subscribe", "data": {"type": "g", "id": 1, "since": since}})
}

async fn push(groups: &Groups, n: u64) {
    let message = Message::success("subscription-update", n).with_data(json!({"n": n}));
    groups.send("g-1", &message).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_comes_back_gets_exactly_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let server = demo(&sqlite(&dir)).await;
    let mut editor = server.client().await;
    editor
        .call(json!({"id": 1, "type": "todo.create", "data": {"title": "milk"}}))
        .await;
    let mut page = server.client().await;
    let reply = page.call(subscribe(1, Value::Null)).await;
    let epoch = reply["data"]["epoch"]
        .as_str()
        .expect("an epoch")
        .to_owned();
    assert_eq!(
        reply,
        json!({"id": 1, "type": "subscribe", "data": {"group": "todo-1", "offset": 1, "epoch": epoch}})
    );
    page.close().await;

    for title in ["oat milk", "soy milk", "no milk"] {
        editor
            .call(json!({"id": 2, "type": "todo.update", "data": {"id": 1, "title": title}}))
            .await;
    }
    let mut page = server.client().await;
    page.send_json(subscribe(5, json!({"offset": 1, "epoch": epoch})))
        .await;
    for (offset, title) in [(2, "oat milk"), (3, "soy milk"), (4, "no milk")] {
        let text = page.recv_text().await;
        let push: Value = serde_json::from_str(&text).unwrap();
        let expected = format!(
            r#"{{"id":{},"type":"subscription-update","offset":{offset},"epoch":"{epoch}","data":{{"group":"todo-1","object":{{"id":1,"title":"{title}","updated_fields":["title"]}},"type":"update"}}}}"#,
            push["id"]
        );
        assert_eq!(text, expected);
    }
    assert_eq!(
        page.recv_json().await,
        json!({"id": 5, "type": "subscribe", "data": {"group": "todo-1", "offset": 4, "epoch": epoch, "recovered": true}})
    );
    // Live pushes carry their position from now on.
    editor
        .call(json!({"id": 3, "type": "todo.update", "data": {"id": 1, "title": "milk again"}}))
        .await;
    let live = page.recv_json().await;
    assert_eq!(
        (live["offset"].clone(), live["epoch"].clone()),
        (json!(5), json!(epoch))
    );
}

#[tokio::test]
async fn positions_that_cannot_be_resumed_get_recovered_false_and_nothing_replayed() {
    let history = History::groups(["g-*"]).size(3).max_recovered(2);
    let (server, groups) = with_history(history).await;
    let mut first = server.client().await;
    let start = first.call(subscribe_g(1, Value::Null)).await["data"].clone();
    let epoch = start["epoch"].clone();
    assert_eq!(start["offset"], 0);
    for n in 1..=5 {
        push(&groups, n).await;
    }
    let cases = [
        ("another epoch", json!({"offset": 4, "epoch": "not-it"})),
        (
            "trimmed: only 3..5 are kept",
            json!({"offset": 1, "epoch": epoch}),
        ),
        (
            "more than max_recovered",
            json!({"offset": 2, "epoch": epoch}),
        ),
        ("ahead of the stream", json!({"offset": 9, "epoch": epoch})),
    ];
    for (case, since) in cases {
        let mut client = server.client().await;
        let reply = client.call(subscribe_g(2, since)).await;
        assert_eq!(
            reply,
            json!({"id": 2, "type": "subscribe", "data": {"group": "g-1", "offset": 5, "epoch": epoch, "recovered": false}}),
            "{case}"
        );
        client.expect_silence(Duration::from_millis(50)).await;
    }
    // Within the limits, the same stream recovers.
    let mut client = server.client().await;
    client
        .send_json(subscribe_g(3, json!({"offset": 3, "epoch": epoch})))
        .await;
    assert_eq!(client.recv_json().await["offset"], 4);
    assert_eq!(client.recv_json().await["offset"], 5);
    assert_eq!(client.recv_json().await["data"]["recovered"], true);
}

#[tokio::test]
async fn an_expired_stream_cannot_be_resumed() {
    let history = History::groups(["g-*"]).ttl(Duration::from_millis(100));
    let (server, groups) = with_history(history).await;
    let mut client = server.client().await;
    let start = client.call(subscribe_g(1, Value::Null)).await["data"].clone();
    push(&groups, 1).await;
    assert_eq!(client.recv_json().await["offset"], 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut back = server.client().await;
    let since = json!({"offset": 1, "epoch": start["epoch"]});
    let reply = back.call(subscribe_g(2, since)).await["data"].clone();
    assert_eq!(reply["recovered"], false);
    assert_ne!(reply["epoch"], start["epoch"], "a new stream, a new epoch");
    assert_eq!(reply["offset"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_cannot_resume_positions_of_before() {
    let dir = tempfile::tempdir().unwrap();
    let server = demo(&sqlite(&dir)).await;
    let mut page = server.client().await;
    let before = page.call(subscribe(1, Value::Null)).await["data"].clone();
    server.shutdown().await;
    let server = demo(&sqlite(&dir)).await;
    let mut page = server.client().await;
    let since = json!({"offset": before["offset"], "epoch": before["epoch"]});
    let after = page.call(subscribe(2, since)).await["data"].clone();
    assert_eq!(after["recovered"], false);
    assert_ne!(after["epoch"], before["epoch"]);
}

#[tokio::test]
async fn subscribers_without_since_see_the_bytes_they_always_saw() {
    let (server, groups) = with_history(History::groups(["g-*"])).await;
    let mut plain = server.client().await;
    let reply = plain
        .call(json!({"id": 1, "type": "subscribe", "data": {"type": "g", "id": 1}}))
        .await;
    assert_eq!(
        reply,
        json!({"id": 1, "type": "subscribe", "data": {"group": "g-1"}})
    );
    let mut positioned = server.client().await;
    let epoch = positioned.call(subscribe_g(1, Value::Null)).await["data"]["epoch"].clone();
    push(&groups, 7).await;
    assert_eq!(
        plain.recv_text().await,
        r#"{"id":7,"type":"subscription-update","data":{"n":7}}"#
    );
    assert_eq!(
        positioned.recv_text().await,
        format!(
            r#"{{"id":7,"type":"subscription-update","offset":1,"epoch":{epoch},"data":{{"n":7}}}}"#
        )
    );
    // A group without history: no positions, and `since` gets recovered false.
    let mut other = server.client().await;
    let reply = other
        .call(json!({"id": 2, "type": "subscribe", "data": {"type": "x", "id": 1, "since": {"offset": 1, "epoch": "e"}}}))
        .await;
    assert_eq!(
        reply,
        json!({"id": 2, "type": "subscribe", "data": {"group": "x-1", "recovered": false}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_racing_a_subscribe_are_neither_missed_nor_doubled() {
    let total = 2000;
    let history = History::groups(["g-*"]).size(total as usize);
    let (server, groups) = with_history(history).await;
    let mut first = server.client().await;
    let start = first.call(subscribe_g(1, Value::Null)).await["data"].clone();
    let pushing = tokio::spawn({
        let groups = groups.clone();
        async move {
            for n in 1..=total {
                push(&groups, n).await;
                if n % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(2)).await;
    let mut racer = server.client().await;
    let since = json!({"offset": 0, "epoch": start["epoch"]});
    racer.send_json(subscribe_g(2, since)).await;
    let mut expected = 1;
    let mut replied = false;
    while expected <= total {
        let message = racer.recv_json().await;
        if message["type"] == "subscribe" {
            assert_eq!(message["data"]["recovered"], true);
            replied = true;
            continue;
        }
        assert_eq!(message["offset"], expected, "contiguous, once each");
        assert_eq!(message["data"]["n"], expected);
        expected += 1;
    }
    pushing.await.unwrap();
    assert!(replied, "the reply came among the pushes");
    racer.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_malformed_since_is_invalid_data_and_the_connection_stays() {
    let (server, _groups) = with_history(History::groups(["g-*"])).await;
    let mut client: Client = server.client().await;
    let reply = client
        .call(subscribe_g(1, json!({"offset": "twelve", "epoch": "e"})))
        .await;
    let error = reply["error"].as_str().expect("an error reply");
    assert!(error.starts_with("Invalid data: "), "{error}");
    assert_eq!(
        client.call(json!({"id": 2, "type": "ping"})).await["type"],
        "pong"
    );
}

/// Closes the caller's connection: a dropped connection, as the client sees it.
#[rohrpost_handler("history.kick")]
async fn kick(conn: Connection) -> NoReply {
    conn.close();
    NoReply
}

/// A server like `with_history`, with this file's handlers (`history.kick`) too.
async fn kickable(history: History) -> (TestServer, Groups) {
    let groups = Groups::memory();
    let builder = Server::builder()
        .handlers(Handlers::collect().merge(Subscriptions::allow_all().handlers()))
        .groups(groups.clone())
        .history(history);
    (TestServer::with(builder).await, groups)
}

async fn update(groups: &Groups, group: &str, n: u64) {
    let data = json!({"type": "update", "group": group, "object": {"n": n}});
    let message = Message::success("subscription-update", n).with_data(data);
    groups.send(group, &message).await.unwrap();
}

/// A Rust client that reconnects within 50 ms.
async fn quick_client(server: &TestServer) -> rohrpost::client::Client {
    rohrpost::client::Client::builder(server.url.as_str())
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(50))
        .connect()
        .await
        .unwrap()
}

/// The next update of a subscription, in time.
async fn next(
    updates: &mut rohrpost::client::Subscription<Value>,
) -> Result<rohrpost::client::Update<Value>, rohrpost::client::ClientError> {
    tokio::time::timeout(Duration::from_secs(5), updates.next())
        .await
        .expect("an update in time")
        .expect("the subscription goes on")
}

async fn dropped_and_back(
    client: &rohrpost::client::Client,
    during: impl std::future::Future<Output = ()>,
) {
    use rohrpost::client::ConnectionState;
    let mut state = client.state_changes();
    client.send("history.kick", Value::Null).unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
    )
    .await
    .expect("the connection dropped")
    .unwrap();
    during.await;
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| *s == ConnectionState::Connected),
    )
    .await
    .expect("reconnected")
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_resumes_from_its_last_position_after_a_drop() {
    let (server, groups) = kickable(History::groups(["g-*"])).await;
    let client = quick_client(&server).await;
    let object = rohrpost::subscribe::GroupObject {
        object_type: "g".into(),
        id: json!(1),
    };
    let mut updates = client.subscribe::<Value>(object).await.unwrap();
    update(&groups, "g-1", 1).await;
    assert_eq!(next(&mut updates).await.unwrap().object, json!({"n": 1}));
    dropped_and_back(&client, async {
        update(&groups, "g-1", 2).await;
        update(&groups, "g-1", 3).await;
    })
    .await;
    for n in [2, 3] {
        assert_eq!(next(&mut updates).await.unwrap().object, json!({"n": n}));
    }
    update(&groups, "g-1", 4).await;
    assert_eq!(next(&mut updates).await.unwrap().object, json!({"n": 4}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_says_so_when_what_it_missed_cannot_be_replayed() {
    let (server, groups) = kickable(History::groups(["g-*"])).await;
    let client = quick_client(&server).await;
    // A group without history: what happens while the connection is down is lost.
    let object = rohrpost::subscribe::GroupObject {
        object_type: "x".into(),
        id: json!(1),
    };
    let mut updates = client.subscribe::<Value>(object).await.unwrap();
    dropped_and_back(&client, update(&groups, "x-1", 1)).await;
    let told = tokio::time::timeout(Duration::from_secs(5), updates.next())
        .await
        .expect("told in time")
        .expect("the subscription goes on");
    assert_eq!(
        told.unwrap_err(),
        rohrpost::client::ClientError::Missed {
            group: "x-1".into()
        }
    );
    update(&groups, "x-1", 2).await;
    let after = tokio::time::timeout(Duration::from_secs(5), updates.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(after.object, json!({"n": 2}), "updates go on after it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_with_positions_lets_no_change_slip_past_the_refetch() {
    let dir = tempfile::tempdir().unwrap();
    let server = demo(&sqlite(&dir)).await;
    let mut editor = server.client().await;
    editor
        .call(json!({"id": 1, "type": "todo.create", "data": {"title": "milk"}}))
        .await;
    let mut page = server.client().await;
    let snapshot = page.call(json!({"id": 1, "type": "todo.snapshot"})).await["data"].clone();
    assert_eq!(snapshot["todos"], json!([{"id": 1, "title": "milk"}]));
    let position = snapshot["positions"]["todo-1"].clone();
    assert_eq!(position["offset"], 1);
    assert_eq!(snapshot["positions"]["todos-all"]["offset"], 1);
    // A change between the fetch and the subscription...
    editor
        .call(json!({"id": 2, "type": "todo.update", "data": {"id": 1, "title": "oat milk"}}))
        .await;
    // ...is replayed by subscribing from the snapshot's position.
    page.send_json(subscribe(2, position)).await;
    let replayed = page.recv_json().await;
    assert_eq!(replayed["data"]["object"]["title"], "oat milk");
    assert_eq!(replayed["offset"], 2);
    assert_eq!(page.recv_json().await["data"]["recovered"], true);
}

/// A group layer that keeps no history (every method but the history ones delegates).
#[derive(Default)]
struct WithoutHistory(rohrpost::groups::MemoryGroups);

impl rohrpost::groups::GroupLayer for WithoutHistory {
    fn join<'a>(
        &'a self,
        group: &'a str,
        connection: &'a Connection,
    ) -> futures_util::future::BoxFuture<'a, Result<(), rohrpost::groups::GroupError>> {
        self.0.join(group, connection)
    }
    fn leave(&self, group: &str, connection: &Connection) -> bool {
        self.0.leave(group, connection)
    }
    fn leave_all(&self, connection: &Connection) {
        self.0.leave_all(connection)
    }
    fn send<'a>(
        &'a self,
        group: &'a str,
        push: rohrpost::groups::Push,
    ) -> futures_util::future::BoxFuture<'a, Result<usize, rohrpost::groups::GroupError>> {
        self.0.send(group, push)
    }
    fn groups_of(&self, connection: &Connection) -> Vec<String> {
        self.0.groups_of(connection)
    }
    fn member_count(&self, group: &str) -> usize {
        self.0.member_count(group)
    }
    fn stats(&self) -> rohrpost::groups::GroupStats {
        self.0.stats()
    }
}

#[tokio::test]
async fn history_on_a_layer_that_keeps_none_fails_at_bind_saying_what_to_do() {
    let error = Server::builder()
        .groups(Groups::new(WithoutHistory::default()))
        .history(History::groups(["g-*"]))
        .bind("127.0.0.1:0")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("keeps no history"), "{message}");
    assert!(message.contains("use MemoryGroups"), "{message}");
}
