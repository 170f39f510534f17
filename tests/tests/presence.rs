//! Presence on one node: the `presence` request, join and leave events for subscribers that
//! ask, leaves at once on unsubscribe and after the grace on disconnect.

use std::time::{Duration, Instant};

use rohrpost::handshake::{Accept, Handshake};
use rohrpost::prelude::*;
use rohrpost::presence::Presence;
use rohrpost::subscribe::Subscriptions;
use serde_json::json;
use tests::{Client, TestServer};

/// The user a connection gave as `?user=` in its URL.
struct User(String);

const TOKEN: &str = "hunter2";

async fn server(grace: Duration) -> (TestServer, Groups) {
    server_with(Presence::groups(["todo-*"]).grace(grace)).await
}

async fn server_with(presence: Presence) -> (TestServer, Groups) {
    let groups = Groups::memory();
    let builder = Server::builder()
        .handlers(Subscriptions::token(TOKEN).with_presence().handlers())
        .groups(groups.clone())
        .authenticate(|handshake: Handshake| {
            let user = handshake.query("user").map(|user| user.into_owned());
            async move {
                Ok(match user {
                    Some(user) => Accept::new().with(User(user)),
                    None => Accept::new(),
                })
            }
        })
        .presence(presence)
        .presence_id(|conn| match conn.get::<User>() {
            Some(user) => user.0.clone(),
            None => conn.id().to_string(),
        })
        .presence_info(|conn| json!({"user": conn.get::<User>().map(|user| user.0.clone())}));
    (TestServer::with(builder).await, groups)
}

async fn connect(server: &TestServer, user: &str) -> Client {
    Client::connect(&format!("{}?user={user}", server.url)).await
}

fn subscribe(id: u64, presence: bool) -> Value {
    let mut object = json!({"type": "todo", "id": 1});
    if presence {
        object["presence"] = json!(true);
    }
    json!({"id": id, "type": "subscribe", "auth_jwt": TOKEN, "data": object})
}

/// Reads the next frame: a join or leave of `user` in `todo-1`, in the documented bytes.
async fn expect_event(client: &mut Client, kind: &str, user: &str) {
    let text = client.recv_text().await;
    let (head, rest) = text.split_once(',').expect("an object with several keys");
    assert!(head.starts_with(r#"{"id":"#), "{text}");
    assert!(
        head[6..].parse::<u64>().is_ok(),
        "a generated integer id: {text}"
    );
    assert_eq!(
        rest,
        format!(
            r#""type":"subscription-update","data":{{"type":"{kind}","group":"todo-1","object":{{"id":"{user}","info":{{"user":"{user}"}}}}}}}}"#
        ),
    );
}

/// Subscribes `client` (the member `user`) with `"presence": true`: the reply and its own
/// join arrive, in either order (on one node the join is queued first; through Redis it
/// comes back later).
async fn watch(client: &mut Client, user: &str) {
    client.send_json(subscribe(1, true)).await;
    let first = client.recv_json().await;
    let second = client.recv_json().await;
    let (reply, join) = if first["type"] == "subscribe" {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(
        reply,
        json!({"id": 1, "type": "subscribe", "data": {"group": "todo-1", "presence": true}})
    );
    assert_eq!(
        join["data"],
        json!({"type": "join", "group": "todo-1", "object": {"id": user, "info": {"user": user}}})
    );
}

fn sorted(mut reply: Value) -> Value {
    if let Some(list) = reply["data"]["list"].as_array_mut() {
        list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    }
    reply
}

#[tokio::test]
async fn the_presence_request_counts_connections_and_members_and_lists_them() {
    let (server, groups) = server(Duration::from_secs(15)).await;
    let mut ada = connect(&server, "ada").await;
    let mut ada_again = connect(&server, "ada").await;
    let mut bob = connect(&server, "bob").await;
    for client in [&mut ada, &mut ada_again, &mut bob] {
        let reply = client.call(subscribe(1, false)).await;
        assert_eq!(reply["data"], json!({"group": "todo-1"}));
    }
    let reply = bob
        .call(json!({"id": 5, "type": "presence", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1}}))
        .await;
    assert_eq!(
        sorted(reply),
        json!({"id": 5, "type": "presence", "data": {
            "group": "todo-1", "connections": 3, "members": 2,
            "list": [
                {"id": "ada", "info": {"user": "ada"}, "connections": 2},
                {"id": "bob", "info": {"user": "bob"}, "connections": 1},
            ],
        }})
    );
    bob.send_json(json!({"id": 6, "type": "presence", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1, "list": false}}))
        .await;
    assert_eq!(
        bob.recv_text().await,
        r#"{"id":6,"type":"presence","data":{"group":"todo-1","connections":3,"members":2}}"#
    );
    let count = groups.presence_count("todo-1").await.unwrap();
    assert_eq!((count.connections, count.members), (3, 2));
    let snapshot = groups.presence("todo-1").await.unwrap();
    assert_eq!(snapshot.list.map(|list| list.len()), Some(2));
    // Nobody in another todo.
    let reply = bob
        .call(json!({"id": 7, "type": "presence", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 2}}))
        .await;
    assert_eq!(
        reply["data"],
        json!({"group": "todo-2", "connections": 0, "members": 0, "list": []})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn presence_is_authorized_like_subscribe_and_refused_for_groups_without_it() {
    let (server, groups) = server(Duration::from_secs(15)).await;
    let mut client = connect(&server, "ada").await;
    client
        .send_json(json!({"id": 1, "type": "presence", "auth_jwt": "wrong", "data": {"type": "todo", "id": 1}}))
        .await;
    assert_eq!(
        client.recv_text().await,
        r#"{"id":1,"type":"presence","error":"ACCESS_DENIED"}"#
    );
    client
        .send_json(json!({"id": 2, "type": "presence", "auth_jwt": TOKEN, "data": {"type": "chat", "id": 1}}))
        .await;
    assert_eq!(
        client.recv_text().await,
        r#"{"id":2,"type":"presence","error":"PRESENCE_DISABLED"}"#
    );
    // A subscriber asking for events of a group without presence is told so.
    let reply = client
        .call(json!({"id": 3, "type": "subscribe", "auth_jwt": TOKEN, "data": {"type": "chat", "id": 1, "presence": true}}))
        .await;
    assert_eq!(reply["data"], json!({"group": "chat-1", "presence": false}));
    assert!(groups.presence("chat-1").await.is_err());
    // The connection is still usable.
    let pong = client.call(json!({"id": 4, "type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    server.shutdown().await;
}

#[tokio::test]
async fn joins_and_leaves_reach_the_subscribers_that_asked_and_nobody_else() {
    let (server, _groups) = server(Duration::from_secs(15)).await;
    let mut watcher = connect(&server, "ada").await;
    let mut plain = connect(&server, "bob").await;
    watch(&mut watcher, "ada").await;
    // A subscriber without `presence` gets today's bytes, and no event ever.
    plain.send_json(subscribe(1, false)).await;
    assert_eq!(
        plain.recv_text().await,
        r#"{"id":1,"type":"subscribe","data":{"group":"todo-1"}}"#
    );
    expect_event(&mut watcher, "join", "bob").await;

    let mut carl = connect(&server, "carl").await;
    carl.call(subscribe(1, false)).await;
    expect_event(&mut watcher, "join", "carl").await;
    // A second connection of the same member: no second join; closing one of two: no leave.
    let mut carl_again = connect(&server, "carl").await;
    carl_again.call(subscribe(1, false)).await;
    carl.close().await;
    watcher.expect_silence(Duration::from_millis(300)).await;
    // Its last connection unsubscribes: the leave goes out at once.
    let reply = carl_again
        .call(json!({"id": 2, "type": "unsubscribe", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1}}))
        .await;
    assert_eq!(reply, json!({"id": 2, "type": "unsubscribe"}));
    expect_event(&mut watcher, "leave", "carl").await;
    plain.expect_silence(Duration::from_millis(200)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_disconnect_leaves_after_the_grace_and_coming_back_in_time_cancels_it() {
    let grace = Duration::from_millis(600);
    let (server, groups) = server(grace).await;
    let mut watcher = connect(&server, "ada").await;
    watch(&mut watcher, "ada").await;

    // A reload: gone, back within the grace. No leave, no second join.
    let mut bob = connect(&server, "bob").await;
    bob.call(subscribe(1, false)).await;
    expect_event(&mut watcher, "join", "bob").await;
    bob.close().await;
    let mut bob = connect(&server, "bob").await;
    bob.call(subscribe(1, false)).await;
    watcher
        .expect_silence(grace + Duration::from_millis(300))
        .await;
    let count = groups.presence_count("todo-1").await.unwrap();
    assert_eq!((count.connections, count.members), (2, 2));

    // Gone for good: still present during the grace (with no connection), then the leave.
    let closed = Instant::now();
    bob.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let listed = groups.presence("todo-1").await.unwrap();
    assert_eq!((listed.connections, listed.members), (1, 2));
    expect_event(&mut watcher, "leave", "bob").await;
    assert!(
        closed.elapsed() >= grace,
        "the leave waited for the grace ({:?})",
        closed.elapsed()
    );
    let count = groups.presence_count("todo-1").await.unwrap();
    assert_eq!((count.connections, count.members), (1, 1));
    server.shutdown().await;
}

#[tokio::test]
async fn presence_settings_without_presence_are_refused() {
    let bound = Server::builder()
        .presence_id(|conn| conn.id().to_string())
        .bind("127.0.0.1:0")
        .await;
    let Err(error) = bound else {
        panic!("a server with presence_id but no presence was bound");
    };
    assert!(
        error
            .to_string()
            .contains("presence_id and presence_info need presence"),
        "{error}"
    );
}

#[tokio::test]
async fn the_rust_client_asks_who_is_there_and_reads_joins_and_leaves() {
    use rohrpost::client::{group_object, Client as RustClient, Event, Member};

    let (server, _groups) = server(Duration::from_secs(15)).await;
    let ada = RustClient::builder(format!("{}?user=ada", server.url))
        .token(TOKEN)
        .connect()
        .await
        .expect("the client connects");
    let mut todo = ada
        .subscribe_with_presence::<Value>(group_object("todo", 1))
        .await
        .expect("subscribed");
    let member = |id: &str| Member {
        id: id.into(),
        info: json!({"user": id}),
    };
    assert_eq!(next(&mut todo).await, Event::Join(member("ada")));
    let mut bob = connect(&server, "bob").await;
    bob.call(subscribe(1, false)).await;
    assert_eq!(next(&mut todo).await, Event::Join(member("bob")));
    let here = ada
        .presence(group_object("todo", 1))
        .await
        .expect("presence");
    assert_eq!((here.connections, here.members), (2, 2));
    assert_eq!(here.list.map(|list| list.len()), Some(2));
    bob.call(json!({"id": 2, "type": "unsubscribe", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1}}))
        .await;
    assert_eq!(next(&mut todo).await, Event::Leave(member("bob")));
    ada.close().await;
    server.shutdown().await;
}

async fn next(todo: &mut rohrpost::client::Subscription<Value>) -> rohrpost::client::Event<Value> {
    tokio::time::timeout(Duration::from_secs(5), todo.next_event())
        .await
        .expect("an event in time")
        .expect("the subscription is open")
        .expect("an event, not an error")
}

#[tokio::test]
async fn events_are_batched_per_interval_and_a_join_and_leave_in_one_batch_cancel_out() {
    let interval = Duration::from_millis(400);
    let (server, _groups) = server_with(Presence::groups(["todo-*"]).interval(interval)).await;
    let mut watcher = connect(&server, "ada").await;
    watch(&mut watcher, "ada").await;
    // Within the interval after the watcher's own join: bob and carl come, carl goes.
    let mut bob = connect(&server, "bob").await;
    bob.call(subscribe(1, false)).await;
    let mut carl = connect(&server, "carl").await;
    carl.call(subscribe(1, false)).await;
    carl.call(json!({"id": 2, "type": "unsubscribe", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1}}))
        .await;
    // One batch: bob's join; carl's join and leave cancelled out.
    expect_event(&mut watcher, "join", "bob").await;
    watcher
        .expect_silence(interval + Duration::from_millis(200))
        .await;
    server.shutdown().await;
}

#[tokio::test]
async fn groups_above_events_max_send_no_events_but_still_count() {
    let (server, groups) = server_with(Presence::groups(["todo-*"]).events_max(2)).await;
    let mut watcher = connect(&server, "ada").await;
    watch(&mut watcher, "ada").await;
    let mut bob = connect(&server, "bob").await;
    bob.call(subscribe(1, false)).await;
    expect_event(&mut watcher, "join", "bob").await;
    // The third member: over the limit, no event; the count and the list go on.
    let mut carl = connect(&server, "carl").await;
    carl.call(subscribe(1, false)).await;
    watcher.expect_silence(Duration::from_millis(300)).await;
    let snapshot = groups.presence("todo-1").await.unwrap();
    assert_eq!((snapshot.connections, snapshot.members), (3, 3));
    assert_eq!(snapshot.list.map(|list| list.len()), Some(3));
    // Its leave back to the limit is as silent as its join was.
    carl.call(json!({"id": 2, "type": "unsubscribe", "auth_jwt": TOKEN, "data": {"type": "todo", "id": 1}}))
        .await;
    watcher.expect_silence(Duration::from_millis(300)).await;
    let count = groups.presence_count("todo-1").await.unwrap();
    assert_eq!((count.connections, count.members), (2, 2));
    server.shutdown().await;
}
