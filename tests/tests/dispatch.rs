//! Every row of the dispatch table in `rohrpost::protocol`'s docs, over a real socket.

use rohrpost::prelude::*;
use serde_json::json;
use tests::TestServer;

#[rohrpost_handler("echo")]
async fn echo(req: Request) -> Option<Value> {
    req.data
}

#[rohrpost_handler("fields")]
async fn fields(req: Request) -> Value {
    json!({ "fields": req.fields, "has_data": req.data.is_some() })
}

#[rohrpost_handler("fail")]
async fn fail() -> Result<(), Error> {
    Err(Error::new("Something specific went wrong."))
}

#[rohrpost_handler("fail_internally")]
async fn fail_internally() -> Result<(), Error> {
    let number: i64 = "not a number".parse()?;
    let _ = number;
    Ok(())
}

#[rohrpost_handler("panic")]
async fn panic() -> Value {
    panic!("secret internal detail")
}

#[tokio::test]
async fn empty_frame_gets_error() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.send_text("").await;
    assert_eq!(
        client.recv_json().await,
        json!({"error": "Received empty message."})
    );
}

#[tokio::test]
async fn invalid_json_gets_error_with_parser_detail() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.send_text("{not json").await;
    assert_eq!(
        client.recv_json().await,
        json!({"error": "Could not decode JSON message. Error: key must be a string at line 1 column 2"})
    );
}

#[tokio::test]
async fn json_that_is_not_an_object_gets_error() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for text in ["[1, 2]", "\"ping\"", "42", "null"] {
        client.send_text(text).await;
        assert_eq!(
            client.recv_json().await,
            json!({"error": "Expected a JSON object as message."}),
            "for {text}"
        );
    }
}

#[tokio::test]
async fn missing_type_is_checked_before_missing_id() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.send_text("{}").await;
    assert_eq!(
        client.recv_json().await,
        json!({"error": "Missing required field 'type'."})
    );
    client.send_text(r#"{"id": 1}"#).await;
    assert_eq!(
        client.recv_json().await,
        json!({"error": "Missing required field 'type'."})
    );
    client.send_text(r#"{"type": "ping"}"#).await;
    assert_eq!(
        client.recv_json().await,
        json!({"error": "Missing required field 'id'."})
    );
}

#[tokio::test]
async fn type_that_is_not_a_string_gets_error_with_id() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.send_text(r#"{"id": 5, "type": 12}"#).await;
    assert_eq!(
        client.recv_json().await,
        json!({"id": 5, "error": "Field 'type' must be a string."})
    );
    // The connection stays usable.
    assert_eq!(
        client.call(json!({"id": 6, "type": "ping"})).await,
        json!({"id": 6, "type": "pong"})
    );
}

#[tokio::test]
async fn unknown_type_gets_error_with_id_and_type() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert_eq!(
        client.call(json!({"id": 3, "type": "nope"})).await,
        json!({"id": 3, "type": "nope", "error": "Unknown message type 'nope'."})
    );
}

#[tokio::test]
async fn handler_error_is_sent_and_connection_stays_open() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert_eq!(
        client.call(json!({"id": 1, "type": "fail"})).await,
        json!({"id": 1, "type": "fail", "error": "Something specific went wrong."})
    );
    assert_eq!(
        client.call(json!({"id": 2, "type": "ping"})).await,
        json!({"id": 2, "type": "pong"})
    );
}

#[tokio::test]
async fn internal_error_is_not_leaked() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert_eq!(
        client
            .call(json!({"id": 1, "type": "fail_internally"}))
            .await,
        json!({"id": 1, "type": "fail_internally", "error": "Internal server error."})
    );
}

#[tokio::test]
async fn handler_panic_gets_error_and_connection_stays_open() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert_eq!(
        client.call(json!({"id": "p", "type": "panic"})).await,
        json!({"id": "p", "type": "panic", "error": "Internal server error."})
    );
    assert_eq!(
        client.call(json!({"id": 2, "type": "ping"})).await,
        json!({"id": 2, "type": "pong"})
    );
}

#[tokio::test]
async fn ping_without_data_gets_pong() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert_eq!(
        client.recv_or_call(json!({"id": 7, "type": "ping"})).await,
        r#"{"id":7,"type":"pong"}"#
    );
}

#[tokio::test]
async fn ping_returns_object_data_and_wraps_anything_else() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let cases = [
        (json!({"a": [1, 2]}), json!({"a": [1, 2]})),
        (json!({}), json!({})),
        (json!(1), json!({"data": 1})),
        (json!(0), json!({"data": 0})),
        (json!(""), json!({"data": ""})),
        (json!([1, 2, 3, 4]), json!({"data": [1, 2, 3, 4]})),
        (json!(false), json!({"data": false})),
        (json!(null), json!({"data": null})),
    ];
    for (data, expected) in cases {
        assert_eq!(
            client
                .call(json!({"id": 7, "type": "ping", "data": data}))
                .await,
            json!({"id": 7, "type": "pong", "data": expected}),
            "for data {data}"
        );
    }
}

#[tokio::test]
async fn ids_are_echoed_unchanged() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for id in [
        json!(0),
        json!(""),
        json!(1.5),
        json!(-3),
        json!("abc-123"),
        json!(18446744073709551615u64),
        json!(null),
        json!([1, "a"]),
        json!({"nested": true}),
    ] {
        assert_eq!(
            client
                .call(json!({"id": id, "type": "echo", "data": 1}))
                .await,
            json!({"id": id, "type": "echo", "data": 1}),
            "for id {id}"
        );
    }
}

#[tokio::test]
async fn reply_text_has_protocol_field_order() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert_eq!(
        client
            .recv_or_call(json!({"data": {"x": 1}, "type": "echo", "id": 0}))
            .await,
        r#"{"id":0,"type":"echo","data":{"x":1}}"#
    );
    assert_eq!(
        client.recv_or_call(json!({"id": 0, "type": "echo"})).await,
        r#"{"id":0,"type":"echo"}"#
    );
}

#[tokio::test]
async fn every_top_level_field_reaches_the_handler() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert_eq!(
        client
            .call(json!({"id": 1, "type": "fields", "auth_jwt": "tok", "extra": [1]}))
            .await,
        json!({"id": 1, "type": "fields", "data": {"fields": {"auth_jwt": "tok", "extra": [1]}, "has_data": false}})
    );
}

/// Sends a request and returns the reply's raw text, to check the exact bytes.
trait RawCall {
    async fn recv_or_call(&mut self, request: Value) -> String;
}

impl RawCall for tests::Client {
    async fn recv_or_call(&mut self, request: Value) -> String {
        self.send_json(request).await;
        self.recv_text().await
    }
}
