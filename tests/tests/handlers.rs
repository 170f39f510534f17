//! What a handler may take and return, over a real socket.

use std::sync::atomic::{AtomicUsize, Ordering};

use rohrpost::prelude::*;
use rohrpost::SendError;
use serde_json::json;
use tests::{Client, TestServer};

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[rohrpost_handler("add", "sum")]
async fn add(Data(add): Data<Add>) -> Result<i64, Error> {
    add.a
        .checked_add(add.b)
        .ok_or_else(|| Error::new("Overflow."))
}

static OPTIONAL_CALLS: AtomicUsize = AtomicUsize::new(0);

#[rohrpost_handler]
async fn optional(Data(value): Data<Option<String>>) -> String {
    OPTIONAL_CALLS.fetch_add(1, Ordering::SeqCst);
    value.unwrap_or_else(|| "nothing".into())
}

#[rohrpost_handler("ack")]
async fn ack() {}

/// rohrpost reached through another path, as after a rename in Cargo.toml.
mod shim {
    pub(crate) use ::rohrpost::*;
}

#[rohrpost_handler("through_shim", crate = "crate::shim")]
async fn through_shim(shim::Data(text): shim::Data<String>) -> String {
    text.to_uppercase()
}

#[rohrpost_handler("silent")]
async fn silent() -> NoReply {
    NoReply
}

#[derive(Serialize)]
struct Todo {
    id: i64,
    title: String,
}

#[rohrpost_handler("todo")]
async fn todo(RequestId(id): RequestId) -> Json<Todo> {
    Json(Todo {
        id: id.as_i64().unwrap_or_default(),
        title: "milk".into(),
    })
}

#[rohrpost_handler("explicit")]
async fn explicit(req: Request) -> Message {
    Message::success("explicit.done", req.id).with_data(json!({"ok": true}))
}

#[rohrpost_handler("error_with_data")]
async fn error_with_data() -> Error {
    Error::json(json!({"code": 42})).with_data(json!({"field": "title"}))
}

#[rohrpost_handler("push_three")]
async fn push_three(conn: Connection, req: Request) -> Result<NoReply, Error> {
    for n in 0..3 {
        conn.send(Message::success("pushed", n))
            .await
            .map_err(Error::internal)?;
    }
    let empty = conn.send(Message::new()).await;
    assert_eq!(empty, Err(SendError::Empty(rohrpost::EmptyMessage)));
    conn.try_send(Message::error("done").with_id(req.id))
        .map_err(Error::internal)?;
    Ok(NoReply)
}

struct Greeting {
    text: String,
}

#[rohrpost_handler("greet")]
async fn greet(greeting: State<Greeting>, Data(name): Data<String>) -> String {
    format!("{}, {name}", greeting.text)
}

struct Unconfigured;

#[rohrpost_handler("needs_state")]
async fn needs_state(_: State<Unconfigured>) {}

struct User(String);

#[rohrpost_handler("login")]
async fn login(conn: Connection, Data(name): Data<String>) {
    conn.insert(User(name));
}

#[rohrpost_handler("whoami")]
async fn whoami(conn: Connection) -> Option<String> {
    conn.get::<User>().map(|user| user.0.clone())
}

async fn start() -> TestServer {
    TestServer::with(Server::builder().state(Greeting {
        text: "Moin".into(),
    }))
    .await
}

#[tokio::test]
async fn data_is_decoded_and_every_name_reaches_the_handler() {
    let server = start().await;
    let mut client = server.client().await;
    for name in ["add", "sum"] {
        assert_eq!(
            client
                .call(json!({"id": 1, "type": name, "data": {"a": 2, "b": 3}}))
                .await,
            json!({"id": 1, "type": name, "data": 5})
        );
    }
    assert_eq!(
        client
            .call(json!({"id": 2, "type": "add", "data": {"a": i64::MAX, "b": 1}}))
            .await,
        json!({"id": 2, "type": "add", "error": "Overflow."})
    );
}

#[tokio::test]
async fn a_handler_with_a_crate_path_is_registered_and_served() {
    let server = start().await;
    let mut client = server.client().await;
    assert_eq!(
        client
            .call(json!({"id": 1, "type": "through_shim", "data": "shout"}))
            .await,
        json!({"id": 1, "type": "through_shim", "data": "SHOUT"})
    );
}

#[tokio::test]
async fn data_that_does_not_decode_gets_error_naming_the_problem() {
    let server = start().await;
    let mut client = server.client().await;
    assert_eq!(
        client
            .call(json!({"id": 1, "type": "add", "data": {"a": 2}}))
            .await,
        json!({"id": 1, "type": "add", "error": "Invalid data: missing field `b`"})
    );
    assert_eq!(
        client
            .call(json!({"id": 2, "type": "add", "data": {"a": "2", "b": 1}}))
            .await,
        json!({"id": 2, "type": "add", "error": "Invalid data: invalid type: string \"2\", expected i64"})
    );
    assert_eq!(
        client.call(json!({"id": 3, "type": "add"})).await,
        json!({"id": 3, "type": "add", "error": "Missing required field 'data'."})
    );
}

#[tokio::test]
async fn handler_is_not_called_when_data_does_not_decode() {
    let server = start().await;
    let mut client = server.client().await;
    let before = OPTIONAL_CALLS.load(Ordering::SeqCst);
    assert_eq!(
        client
            .call(json!({"id": 1, "type": "optional", "data": 5}))
            .await,
        json!({"id": 1, "type": "optional", "error": "Invalid data: invalid type: integer `5`, expected a string"})
    );
    assert_eq!(OPTIONAL_CALLS.load(Ordering::SeqCst), before);
    // A missing `data` decodes as `None`; the function's own name is its message type.
    assert_eq!(
        client.call(json!({"id": 2, "type": "optional"})).await,
        json!({"id": 2, "type": "optional", "data": "nothing"})
    );
}

#[tokio::test]
async fn unit_is_an_acknowledgement_and_no_reply_is_silence() {
    let server = start().await;
    let mut client = server.client().await;
    assert_eq!(
        client.call(json!({"id": 1, "type": "ack"})).await,
        json!({"id": 1, "type": "ack"})
    );
    client.send_json(json!({"id": 2, "type": "silent"})).await;
    // Replies come in order, so the pong proves the silent handler sent nothing.
    assert_eq!(
        client.call(json!({"id": 3, "type": "ping"})).await,
        json!({"id": 3, "type": "pong"})
    );
}

#[tokio::test]
async fn json_message_and_error_replies() {
    let server = start().await;
    let mut client = server.client().await;
    assert_eq!(
        client.call(json!({"id": 9, "type": "todo"})).await,
        json!({"id": 9, "type": "todo", "data": {"id": 9, "title": "milk"}})
    );
    assert_eq!(
        client.call(json!({"id": 1, "type": "explicit"})).await,
        json!({"id": 1, "type": "explicit.done", "data": {"ok": true}})
    );
    assert_eq!(
        client
            .call(json!({"id": 1, "type": "error_with_data"}))
            .await,
        json!({"id": 1, "type": "error_with_data", "data": {"field": "title"}, "error": {"code": 42}})
    );
}

#[tokio::test]
async fn handler_sends_messages_through_its_connection_in_order() {
    let server = start().await;
    let mut client = server.client().await;
    client
        .send_json(json!({"id": "x", "type": "push_three"}))
        .await;
    for n in 0..3 {
        assert_eq!(client.recv_json().await, json!({"id": n, "type": "pushed"}));
    }
    assert_eq!(
        client.recv_json().await,
        json!({"id": "x", "error": "done"})
    );
}

#[tokio::test]
async fn application_state_reaches_handlers() {
    let server = start().await;
    let mut client = server.client().await;
    assert_eq!(
        client
            .call(json!({"id": 1, "type": "greet", "data": "Ada"}))
            .await,
        json!({"id": 1, "type": "greet", "data": "Moin, Ada"})
    );
    // State the server was not given: an internal error, not a crash.
    assert_eq!(
        client.call(json!({"id": 2, "type": "needs_state"})).await,
        json!({"id": 2, "type": "needs_state", "error": "Internal server error."})
    );
}

#[tokio::test]
async fn connection_state_is_per_connection() {
    let server = start().await;
    let mut ada = server.client().await;
    let mut bob = server.client().await;
    ada.call(json!({"id": 1, "type": "login", "data": "ada"}))
        .await;
    bob.call(json!({"id": 1, "type": "login", "data": "bob"}))
        .await;
    assert_eq!(
        ada.call(json!({"id": 2, "type": "whoami"})).await["data"],
        "ada"
    );
    assert_eq!(
        bob.call(json!({"id": 2, "type": "whoami"})).await["data"],
        "bob"
    );
    let mut anonymous = server.client().await;
    assert_eq!(
        anonymous.call(json!({"id": 3, "type": "whoami"})).await,
        json!({"id": 3, "type": "whoami"})
    );
}

async fn shout(Data(text): Data<String>) -> String {
    text.to_uppercase()
}

#[tokio::test]
async fn explicit_handler_set_replaces_the_global_one() {
    let handlers = Handlers::new().handler("shout", shout);
    let server = TestServer::with(Server::builder().handlers(handlers)).await;
    let mut client = server.client().await;
    assert_eq!(
        client
            .call(json!({"id": 1, "type": "shout", "data": "hi"}))
            .await,
        json!({"id": 1, "type": "shout", "data": "HI"})
    );
    assert_eq!(
        client
            .call(json!({"id": 2, "type": "add", "data": {"a": 1, "b": 1}}))
            .await,
        json!({"id": 2, "type": "add", "error": "Unknown message type 'add'."})
    );
    // The built-in ping is there in every set.
    assert_eq!(
        client.call(json!({"id": 3, "type": "ping"})).await,
        json!({"id": 3, "type": "pong"})
    );
}

#[tokio::test]
async fn two_servers_in_one_process_serve_different_handlers() {
    let a =
        TestServer::with(Server::builder().handlers(Handlers::new().handler("shout", shout))).await;
    let b = start().await;
    let mut on_a = Client::connect(&a.url).await;
    let mut on_b = Client::connect(&b.url).await;
    assert_eq!(
        on_a.call(json!({"id": 1, "type": "shout", "data": "x"}))
            .await["data"],
        "X"
    );
    assert_eq!(
        on_b.call(json!({"id": 1, "type": "shout", "data": "x"}))
            .await["error"],
        "Unknown message type 'shout'."
    );
}

async fn custom_ping() -> &'static str {
    "my pong"
}

#[tokio::test]
async fn a_handler_named_ping_replaces_the_built_in_one() {
    let handlers = Handlers::new().handler("ping", custom_ping);
    let server = TestServer::with(Server::builder().handlers(handlers)).await;
    let mut client = server.client().await;
    assert_eq!(
        client.call(json!({"id": 1, "type": "ping"})).await,
        json!({"id": 1, "type": "ping", "data": "my pong"})
    );
}

#[tokio::test]
async fn a_name_defined_twice_is_a_start_up_error_naming_both_functions() {
    let handlers = Handlers::new()
        .handler("dup", shout)
        .handler("dup", custom_ping);
    let error = Server::builder()
        .handlers(handlers)
        .bind("127.0.0.1:0")
        .await
        .expect_err("duplicate names refuse to start");
    assert_eq!(
        error.to_string(),
        "Handler for \"dup\" is already defined: by `handlers::shout` and by `handlers::custom_ping`"
    );
}
