//! Groups over real sockets: joining and leaving from handlers, sending from anywhere,
//! one frame for all members, slow members, and leaving on every kind of close.

use std::time::Duration;

use rohrpost::groups::{GroupError, GroupStats};
use rohrpost::prelude::*;
use rohrpost::subscribe::{GroupObject, Subscriptions};
use rohrpost::Groups;
use serde_json::json;
use tests::{Client, TestServer};

#[rohrpost_handler("join")]
async fn join(conn: Connection, Data(group): Data<String>) -> Result<Vec<String>, Error> {
    conn.join(&group).await.map_err(Error::internal)?;
    Ok(conn.groups())
}

#[rohrpost_handler("leave")]
async fn leave(conn: Connection, Data(group): Data<String>) -> bool {
    conn.leave(&group)
}

/// Sends `data.message` to `data.group` from a handler.
#[rohrpost_handler("shout")]
async fn shout(groups: Groups, Data(shout): Data<Value>) -> Result<usize, Error> {
    let message = Message::success("shout", 0).with_data(shout["message"].clone());
    let group = shout["group"].as_str().unwrap_or_default();
    groups.send(group, &message).await.map_err(Error::internal)
}

/// Replies with the connection's id.
#[rohrpost_handler("whoami")]
async fn whoami(conn: Connection) -> u64 {
    conn.id()
}

/// Sends `data.message` to the connection `data.to`; replies whether there was one.
#[rohrpost_handler("poke")]
async fn poke(groups: Groups, Data(poke): Data<Value>) -> Result<bool, Error> {
    let message = Message::push("poked", &poke["message"]).map_err(Error::internal)?;
    let to = poke["to"].as_u64().unwrap_or_default();
    groups.send_to(to, &message).map_err(Error::internal)
}

/// Sends `data.message` to `data.group`, but not to the sender; replies with membership.
#[rohrpost_handler("shout_others")]
async fn shout_others(conn: Connection, Data(shout): Data<Value>) -> Result<Value, Error> {
    let group = shout["group"].as_str().unwrap_or_default();
    let message = Message::push("shout", &shout["message"]).map_err(Error::internal)?;
    let reached = conn
        .server_groups()
        .send_except(group, &message, &conn)
        .await
        .map_err(Error::internal)?;
    Ok(json!({"reached": reached, "member": conn.is_member(group)}))
}

async fn start() -> (TestServer, Groups) {
    let groups = Groups::memory();
    let handlers = Handlers::collect().merge(
        Subscriptions::new(|attempt| async move { attempt.object.object_type == "todo" })
            .handlers(),
    );
    let builder = Server::builder()
        .groups(groups.clone())
        .handlers(handlers)
        .outbound_queue(16)
        .write_timeout(Duration::from_millis(300));
    (TestServer::with(builder).await, groups)
}

async fn joined(server: &TestServer, group: &str) -> Client {
    let mut client = server.client().await;
    let reply = client
        .call(json!({"id": 0, "type": "join", "data": group}))
        .await;
    assert_eq!(reply["data"], json!([group]));
    client
}

#[tokio::test]
async fn join_and_leave_from_handlers() {
    let (server, groups) = start().await;
    let mut client = server.client().await;
    assert_eq!(
        client
            .call(json!({"id": 1, "type": "join", "data": "a"}))
            .await["data"],
        json!(["a"])
    );
    assert_eq!(
        client
            .call(json!({"id": 2, "type": "join", "data": "b"}))
            .await["data"],
        json!(["a", "b"])
    );
    // Joining twice is one membership.
    client
        .call(json!({"id": 3, "type": "join", "data": "b"}))
        .await;
    assert_eq!(
        groups.stats(),
        GroupStats {
            groups: 2,
            memberships: 2,
            connections: 1
        }
    );
    assert_eq!(
        client
            .call(json!({"id": 4, "type": "leave", "data": "a"}))
            .await["data"],
        true
    );
    assert_eq!(
        client
            .call(json!({"id": 5, "type": "leave", "data": "a"}))
            .await["data"],
        false
    );
    assert_eq!(groups.member_count("a"), 0);
    assert_eq!(groups.member_count("b"), 1);
    // An empty group name is refused.
    assert_eq!(
        client
            .call(json!({"id": 6, "type": "join", "data": ""}))
            .await["error"],
        "Internal server error."
    );
}

#[tokio::test]
async fn send_from_outside_any_handler_reaches_every_member_with_the_same_frame() {
    let (server, groups) = start().await;
    let mut members = Vec::new();
    for _ in 0..5 {
        members.push(joined(&server, "news").await);
    }
    let mut outsider = joined(&server, "sports").await;
    // A background task, not a handler.
    let sender = groups.clone();
    let delivered = tokio::spawn(async move {
        let message = Message::success("news", 7).with_data(json!({"headline": "Moin"}));
        sender.send("news", &message).await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(delivered, 5);
    for member in &mut members {
        assert_eq!(
            member.recv_text().await,
            r#"{"id":7,"type":"news","data":{"headline":"Moin"}}"#
        );
    }
    outsider.expect_silence(Duration::from_millis(100)).await;
    // A group nobody is in: delivered to none, no error.
    let nobody = groups
        .send("empty", &Message::success("x", 1))
        .await
        .unwrap();
    assert_eq!(nobody, 0);
    // An empty message is refused before anything is sent.
    assert!(matches!(
        groups.send("news", &Message::new()).await,
        Err(GroupError::Empty(_))
    ));
}

#[tokio::test]
async fn send_from_a_handler_reaches_the_group() {
    let (server, _groups) = start().await;
    let mut member = joined(&server, "room").await;
    let mut speaker = server.client().await;
    let reply = speaker
        .call(json!({"id": 1, "type": "shout", "data": {"group": "room", "message": "hi"}}))
        .await;
    assert_eq!(reply, json!({"id": 1, "type": "shout", "data": 1}));
    assert_eq!(
        member.recv_json().await,
        json!({"id": 0, "type": "shout", "data": "hi"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_does_not_read_never_delays_the_others() {
    let groups = Groups::memory();
    let builder = Server::builder()
        .groups(groups.clone())
        .outbound_queue(64)
        .write_timeout(Duration::from_millis(300));
    let server = TestServer::with(builder).await;
    let mut stalled = joined(&server, "stream").await;
    let count = 1500;
    let mut readers = Vec::new();
    for _ in 0..20 {
        let mut reader = joined(&server, "stream").await;
        readers.push(tokio::spawn(async move {
            for n in 0..count {
                let text = reader.recv_text().await;
                assert!(
                    text.starts_with(&format!(r#"{{"id":{n},"type":"tick""#)),
                    "in order, none missing"
                );
            }
            reader
        }));
    }
    // 12 MB for each member: more than a socket's buffers hold for the stalled one.
    let payload = "p".repeat(8 * 1024);
    for n in 0..count {
        let message = Message::success("tick", n).with_data(payload.as_str());
        groups.send("stream", &message).await.unwrap();
        if n % 16 == 15 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut still_connected = Vec::new();
    for reader in readers {
        let reader = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("every reader got every message")
            .unwrap();
        still_connected.push(reader);
    }
    // The stalled member was disconnected and left the group.
    stalled.expect_slow_client_close().await;
    drop(stalled);
    for _ in 0..500 {
        if groups.member_count("stream") == 20 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the stalled member did not leave: {:?}", groups.stats());
}

#[tokio::test]
async fn a_connection_closed_for_a_protocol_error_leaves_its_groups() {
    let groups = Groups::memory();
    let builder = Server::builder()
        .groups(groups.clone())
        .max_message_size(100);
    let server = TestServer::with(builder).await;
    let mut client = joined(&server, "g").await;
    assert_eq!(groups.member_count("g"), 1);
    client.send_text("x".repeat(200)).await;
    assert_eq!(
        client.expect_close().await,
        Some((1009, "message too big".into()))
    );
    for _ in 0..200 {
        if groups.stats() == GroupStats::default() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("groups not left: {:?}", groups.stats());
}

#[tokio::test]
async fn the_authorization_hook_decides_per_group_object() {
    let (server, groups) = start().await;
    let mut client = server.client().await;
    assert_eq!(
        client
            .call(json!({"id": 1, "type": "subscribe", "data": {"type": "todo", "id": "x"}}))
            .await,
        json!({"id": 1, "type": "subscribe", "data": {"group": "todo-x"}})
    );
    assert_eq!(
        client
            .call(json!({"id": 2, "type": "subscribe", "data": {"type": "secret", "id": 1}}))
            .await,
        json!({"id": 2, "type": "subscribe", "error": "ACCESS_DENIED"})
    );
    assert_eq!(
        client
            .call(json!({"id": 3, "type": "subscribe", "data": {"id": 1}}))
            .await,
        json!({"id": 3, "type": "subscribe", "error": "Invalid data: missing field `type`"})
    );
    assert_eq!(groups.member_count("todo-x"), 1);
    assert_eq!(groups.member_count("secret-1"), 0);
    let object = GroupObject {
        object_type: "todo".into(),
        id: json!("x"),
    };
    assert_eq!(object.group_name(), "todo-x");
}

#[tokio::test]
async fn one_connection_is_reached_by_its_id_and_a_sender_can_be_left_out() {
    let (server, _groups) = start().await;
    let mut ada = joined(&server, "room").await;
    let mut bob = joined(&server, "room").await;
    let bob_id = bob.call(json!({"id": 1, "type": "whoami"})).await["data"].clone();
    let reply = ada
        .call(json!({"id": 2, "type": "poke", "data": {"to": bob_id, "message": {"hi": 1}}}))
        .await;
    assert_eq!(reply["data"], true);
    assert_eq!(
        bob.recv_text().await,
        r#"{"type":"poked","data":{"hi":1}}"#,
        "a push without an id"
    );
    let reply = ada
        .call(json!({"id": 3, "type": "poke", "data": {"to": 999_999, "message": {}}}))
        .await;
    assert_eq!(reply["data"], false, "no such connection");

    let reply = ada
        .call(json!({"id": 4, "type": "shout_others", "data": {"group": "room", "message": "hey"}}))
        .await;
    assert_eq!(reply["data"], json!({"reached": 1, "member": true}));
    assert_eq!(
        bob.recv_json().await,
        json!({"type": "shout", "data": "hey"})
    );
    ada.expect_silence(Duration::from_millis(100)).await;
    let reply = ada
        .call(json!({"id": 5, "type": "shout_others", "data": {"group": "elsewhere", "message": "x"}}))
        .await;
    assert_eq!(reply["data"], json!({"reached": 0, "member": false}));
}
