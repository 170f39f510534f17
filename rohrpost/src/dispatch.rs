//! One text frame → validated request → handler → reply, with the protocol's error table.
//!
//! | input | reply |
//! | --- | --- |
//! | empty frame | `{"error": "Received empty message."}` |
//! | not JSON | `{"error": "Could not decode JSON message. Error: <parser detail>"}` |
//! | JSON but not an object | `{"error": "Expected a JSON object as message."}` |
//! | no `type` (checked first), then no `id` | `{"error": "Missing required field 'type'."}` / `'id'.` |
//! | `type` not a string (the original crashes) | `{"id": <id>, "error": "Field 'type' must be a string."}` |
//! | `type` names no handler | `{"id", "type", "error": "Unknown message type '<type>'."}` |
//! | handler fails or panics | `{"id", "type", "error": "<message>"}`, connection stays open |

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use std::time::Duration;

use futures_util::FutureExt;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::extract::RequestContext;
use crate::incoming::Incoming;
use crate::message::{error_json, reply_json, Message};
use crate::metrics::{Counter, Metrics};
use crate::protocol::{self, HANDLER_TIMEOUT_ERROR, INTERNAL_ERROR};
use crate::registry::Registered;
use crate::reply::{Reply, ReplyKind};
use crate::type_map::TypeMap;
use crate::{Connection, Handlers, Request};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// What every connection of a server shares: its handlers and its application state.
pub(crate) struct Dispatcher {
    handlers: Handlers,
    /// No handler took `ping`: the built-in answers it.
    builtin_ping: bool,
    state: Arc<TypeMap>,
    metrics: Metrics,
    handler_timeout: Duration,
}

impl Dispatcher {
    pub(crate) fn new(
        handlers: Handlers,
        state: TypeMap,
        metrics: Metrics,
        handler_timeout: Duration,
    ) -> Self {
        Self {
            builtin_ping: handlers.get(protocol::PING).is_none(),
            handlers,
            state: Arc::new(state),
            metrics,
            handler_timeout,
        }
    }

    /// The reply to a message that is not handled (the rate limit): `error` under the
    /// message's id and type when it has them.
    pub(crate) fn refuse(&self, text: &str, error: &str) -> String {
        match read(text) {
            Ok(request) => {
                let reply = error_json(&request.id, &request.message_type, error);
                match ExactId::of(text, &request.id) {
                    Some(exact) => exact.restore(reply),
                    None => reply,
                }
            }
            Err(reply) => reply,
        }
    }

    /// The reply to a built-in `ping`, answered at once from the raw text (see
    /// [`raw_pong`]); `None` for any other frame. Called once per frame, before
    /// [`dispatch`](Self::dispatch), which does not ask again.
    pub(crate) fn pong_now(&self, text: &str) -> Option<String> {
        if self.builtin_ping {
            raw_pong(text)
        } else {
            None
        }
    }

    /// Handles one text frame (not a built-in ping: see [`pong_now`](Self::pong_now)) and
    /// returns the reply to send, if any.
    pub(crate) async fn dispatch(
        &self,
        text: Utf8Bytes,
        connection: &Connection,
    ) -> Option<String> {
        // One pass that keeps `data` as raw text; anything unusual is left to the `Value`
        // parse, which has the protocol's exact error replies.
        let request = match read(&text) {
            Ok(request) => request,
            Err(reply) => return Some(reply),
        };
        let exact = ExactId::of(&text, &request.id);
        // The frame (up to the message size limit) need not live while the handler runs.
        drop(text);
        let reply = match self.handlers.get(&request.message_type) {
            Some((message_type, handler)) => {
                self.run(message_type, handler, request, connection).await
            }
            None if request.message_type == protocol::PING => Some(pong(&request)),
            None => {
                let error = protocol::unknown_type(&request.message_type);
                Some(error_json(&request.id, &request.message_type, &error))
            }
        };
        match exact {
            Some(exact) => reply.map(|reply| exact.restore(reply)),
            None => reply,
        }
    }

    async fn run(
        &self,
        message_type: &str,
        handler: &Registered,
        request: Incoming,
        connection: &Connection,
    ) -> Option<String> {
        // Kept for the replies built after the handler's future is gone (timeout, panic).
        let id = request.id.clone();
        let cx = RequestContext {
            request,
            connection: connection.clone(),
            state: self.state.clone(),
        };
        let mut call = AssertUnwindSafe((handler.call)(cx)).catch_unwind();
        // Most handlers finish at their first poll: the timer is armed only for the others.
        let outcome = match (&mut call).now_or_never() {
            Some(outcome) => outcome,
            None => match tokio::time::timeout(self.handler_timeout, call).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    self.metrics.add(Counter::HandlerTimeouts);
                    tracing::error!(
                        handler = %handler.function,
                        message_type = %message_type,
                        timeout = ?self.handler_timeout,
                        "handler timed out and was dropped"
                    );
                    return Some(error_json(&id, message_type, HANDLER_TIMEOUT_ERROR));
                }
            },
        };
        let error = match outcome {
            Ok(Reply(ReplyKind::Nothing)) => return None,
            Ok(Reply(ReplyKind::Text(text))) => return Some(text),
            Ok(Reply(ReplyKind::Error(error))) => error,
            Err(panic) => {
                self.metrics.add(Counter::HandlerPanics);
                tracing::error!(
                    handler = %handler.function,
                    message_type = %message_type,
                    panic = panic_message(&*panic),
                    "handler panicked"
                );
                return Some(error_json(&id, message_type, INTERNAL_ERROR));
            }
        };
        if error.is_internal() {
            self.metrics.add(Counter::HandlerErrors);
            tracing::error!(
                handler = %handler.function,
                message_type = %message_type,
                error = %error,
                "handler failed"
            );
        }
        let mut reply = Message::error(error.client_error());
        if let Some(data) = error.data() {
            reply = reply.with_data(data.clone());
        }
        Some(reply_to(&id, message_type, reply))
    }
}

/// An id that serde_json would not write back as it was sent: a number that is not a 64-bit
/// integer (`18446744073709551617`, `1.0`, `1e2`) becomes an `f64`. Replies start with
/// `{"id":`, so the id as written is put back in their first bytes.
struct ExactId {
    /// `{"id":` and the id as serde_json writes it.
    written: String,
    /// `{"id":` and the id as the client sent it.
    sent: String,
}

impl ExactId {
    /// `None` for the usual ids (integers, strings, …): nothing to restore.
    fn of(text: &str, id: &Value) -> Option<Self> {
        if !matches!(id, Value::Number(number) if number.is_f64()) {
            return None;
        }
        #[derive(serde::Deserialize)]
        struct Id<'a> {
            #[serde(borrow)]
            id: &'a serde_json::value::RawValue,
        }
        let sent = serde_json::from_str::<Id<'_>>(text).ok()?.id.get();
        Some(Self {
            written: format!(r#"{{"id":{}"#, serde_json::to_string(id).ok()?),
            sent: format!(r#"{{"id":{sent}"#),
        })
    }

    fn restore(&self, reply: String) -> String {
        match reply.strip_prefix(&self.written) {
            Some(rest) if rest.starts_with([',', '}']) => format!("{}{rest}", self.sent),
            _ => reply,
        }
    }
}

/// `message` with the request's id and type: `{"id", "type", "data"?, "error"}`.
fn reply_to(id: &Value, message_type: &str, message: Message) -> String {
    json_of(message.with_id(id.clone()).with_type(message_type))
}

/// The JSON of a message that has at least one field set.
fn json_of(message: Message) -> String {
    message.to_json().unwrap_or_default()
}

fn bare_error(error: &str) -> String {
    json_of(Message::error(error))
}

/// Reads a frame in one pass (`data` kept raw, see [`Incoming::read`]), or through a `Value`
/// for anything unusual; on failure, the protocol's error reply to send.
fn read(text: &str) -> Result<Incoming, String> {
    match Incoming::read(text) {
        Some(request) => Ok(request),
        None => parse(text).map(Incoming::from),
    }
}

/// Checks a frame against the protocol and splits it into a [`Request`]; on failure, the
/// error reply to send.
pub(crate) fn parse(text: &str) -> Result<Request, String> {
    if text.is_empty() {
        return Err(bare_error(protocol::EMPTY_MESSAGE));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| bare_error(&protocol::not_json(e)))?;
    let Value::Object(mut fields) = value else {
        return Err(bare_error(protocol::NOT_AN_OBJECT));
    };
    let Some(message_type) = fields.remove("type") else {
        return Err(bare_error(protocol::MISSING_TYPE));
    };
    let Some(id) = fields.remove("id") else {
        return Err(bare_error(protocol::MISSING_ID));
    };
    let Value::String(message_type) = message_type else {
        let exact = ExactId::of(text, &id);
        let reply = json_of(Message::error(protocol::TYPE_NOT_A_STRING).with_id(id));
        return Err(match exact {
            Some(exact) => exact.restore(reply),
            None => reply,
        });
    };
    let data = fields.remove("data");
    Ok(Request {
        id,
        message_type,
        data,
        fields,
    })
}

/// The built-in `ping`: `{"id", "type": "pong"}`, with `data` as given when it is an
/// object, wrapped as `{"data": …}` otherwise (`null` included: any value given is kept), and
/// left out when absent. `data` is given back as the text the client sent.
fn pong(request: &Incoming) -> String {
    #[derive(serde::Serialize)]
    struct Wrapped<'a> {
        data: &'a RawValue,
    }
    let reply = match request.data.as_deref() {
        None => reply_json(&request.id, protocol::PONG, &()),
        Some(object) if object.get().starts_with('{') => {
            reply_json(&request.id, protocol::PONG, object)
        }
        Some(other) => reply_json(&request.id, protocol::PONG, &Wrapped { data: other }),
    };
    // Raw JSON text and a `Value` id cannot fail to serialize.
    reply.unwrap_or_default()
}

/// The built-in `ping` answered without building a `Value`: the type borrowed, the id and
/// `data` kept as the raw text the client sent (so the id comes back exactly as sent, and
/// an object is given back as given). `None` for anything but a plain `ping` object (another
/// type, escapes in the type, duplicate keys, a `null` id…): the general path answers those.
fn raw_pong(text: &str) -> Option<String> {
    /// A field that is kept as raw text, `null` included (an `Option` would take `null` for
    /// absent).
    struct Raw<'a>(Option<&'a RawValue>);

    impl<'de: 'a, 'a> serde::Deserialize<'de> for Raw<'a> {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            <&RawValue>::deserialize(deserializer).map(|raw| Raw(Some(raw)))
        }
    }

    #[derive(serde::Deserialize)]
    struct Ping<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        #[serde(rename = "type", borrow)]
        message_type: Option<&'a str>,
        #[serde(borrow, default = "absent")]
        data: Raw<'a>,
    }

    fn absent<'a>() -> Raw<'a> {
        Raw(None)
    }

    // A struct would also take an array (`["1","ping"]`): objects only. Every other message
    // passes here first, so it is turned away by a scan, not a parse: a plain ping's type
    // is the text `"ping"` (one with escapes goes the general way).
    if !text.trim_start().starts_with('{') || !text.contains(r#""ping""#) {
        return None;
    }
    let ping: Ping<'_> = serde_json::from_str(text).ok()?;
    if ping.message_type? != protocol::PING {
        return None;
    }
    let id = ping.id?.get();
    let mut out = String::with_capacity(text.len() + 32);
    out.push_str(r#"{"id":"#);
    out.push_str(id);
    out.push_str(r#","type":"pong""#);
    if let Some(data) = ping.data.0.map(RawValue::get) {
        if data.starts_with('{') {
            out.push_str(r#","data":"#);
            out.push_str(data);
        } else {
            out.push_str(r#","data":{"data":"#);
            out.push_str(data);
            out.push('}');
        }
    }
    out.push('}');
    Some(out)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "(not a string)"
    }
}

/// Dispatches `text` on a connection that belongs to no socket, with a few handlers of
/// every kind: for property tests, the fuzz target and the micro-benchmark. Returns the
/// reply, if any. (No handler here panics: libFuzzer's panic hook would abort on a panic
/// even though the dispatcher catches it; panics are tested over sockets.)
#[doc(hidden)]
pub fn dispatch_detached(text: &str) -> Option<String> {
    use std::net::{Ipv4Addr, SocketAddr};

    #[derive(serde::Deserialize)]
    struct Add {
        a: i64,
        b: i64,
    }
    async fn add(crate::Data(add): crate::Data<Add>) -> Result<i64, crate::Error> {
        add.a
            .checked_add(add.b)
            .ok_or_else(|| crate::Error::new("Overflow."))
    }
    async fn echo(request: Request) -> Option<Value> {
        request.data
    }
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Todo {
        title: String,
        done: bool,
    }
    async fn todo(crate::Data(todo): crate::Data<Todo>) -> crate::Json<Todo> {
        crate::Json(todo)
    }
    async fn relay(crate::Data(data): crate::Data<Option<Box<RawValue>>>) -> Option<Box<RawValue>> {
        data
    }
    async fn fail() -> Result<(), crate::Error> {
        Err(crate::Error::internal(std::io::Error::other("hidden")))
    }

    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        static DISPATCHER: Dispatcher = Dispatcher::new(
            Handlers::new()
                .handler("add", add)
                .handler("echo", echo)
                .handler("todo", todo)
                .handler("relay", relay)
                .handler("fail", fail),
            TypeMap::default(),
            Metrics::default(),
            Duration::from_secs(1),
        );
        static CONNECTION: Connection = Connection::new(
            0,
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tokio_util::sync::CancellationToken::new(),
            crate::Groups::memory(),
            crate::connection::Budget {
                outbound_queue: 16,
                reply_backlog: 16,
                write_timeout: Duration::from_secs(1),
                metrics: Metrics::default(),
            },
            TypeMap::default(),
        );
    }
    RUNTIME.with(|runtime| {
        DISPATCHER.with(|dispatcher| {
            CONNECTION.with(|connection| match dispatcher.pong_now(text) {
                Some(pong) => Some(pong),
                None => {
                    // Polled once in the runtime's context, as a connection's task would;
                    // `block_on` (hundreds of ns) only for a handler that waits.
                    let _context = runtime.enter();
                    let mut dispatch =
                        std::pin::pin!(dispatcher.dispatch(Utf8Bytes::from(text), connection));
                    match (&mut dispatch).now_or_never() {
                        Some(reply) => reply,
                        None => runtime.block_on(dispatch),
                    }
                }
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Map;

    /// Any JSON value, nested a few levels.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".*".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                prop::collection::hash_map("[a-z_]{0,8}", inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// Requests shaped like the protocol's, with any id, type and data.
    fn request() -> impl Strategy<Value = Value> {
        let message_type = prop_oneof![
            Just(Value::from("ping")),
            Just(Value::from("add")),
            Just(Value::from("echo")),
            Just(Value::from("todo")),
            Just(Value::from("relay")),
            Just(Value::from("fail")),
            json(),
        ];
        (json(), message_type, proptest::option::of(json())).prop_map(|(id, t, data)| {
            let mut request = Map::new();
            request.insert("id".into(), id);
            request.insert("type".into(), t);
            if let Some(data) = data {
                request.insert("data".into(), data);
            }
            Value::Object(request)
        })
    }

    /// Every reply is one JSON object with a `type` or an `error`.
    fn check_reply(reply: Option<String>) {
        let reply = reply.expect("every message here gets a reply");
        let reply: Value = serde_json::from_str(&reply).expect("replies are JSON");
        let object = reply.as_object().expect("replies are objects");
        assert!(object.contains_key("type") || object.contains_key("error"));
    }

    proptest! {
        #[test]
        fn any_text_gets_a_json_reply_and_no_panic(text in ".*") {
            check_reply(dispatch_detached(&text));
        }

        #[test]
        fn any_json_gets_a_json_reply_and_no_panic(value in json()) {
            check_reply(dispatch_detached(&value.to_string()));
        }

        #[test]
        fn any_request_gets_a_json_reply_and_no_panic(request in request()) {
            check_reply(dispatch_detached(&request.to_string()));
        }
    }

    #[test]
    fn data_is_decoded_from_the_text_as_sent() {
        let cases = [
            // Straight into the handler's type.
            (
                r#"{"id":1,"type":"todo","data":{"done":true,"title":"milk"}}"#,
                r#"{"id":1,"type":"todo","data":{"title":"milk","done":true}}"#,
            ),
            // serde's reason, without a position that would count within `data`.
            (
                r#"{"id":2,"type":"todo","data":{"title":"milk"}}"#,
                r#"{"id":2,"type":"todo","error":"Invalid data: missing field `done`"}"#,
            ),
            (
                r#"{"id":3,"type":"add","data":{"a":"1","b":2}}"#,
                r#"{"id":3,"type":"add","error":"Invalid data: invalid type: string \"1\", expected i64"}"#,
            ),
            (
                r#"{"id":4,"type":"add"}"#,
                r#"{"id":4,"type":"add","error":"Missing required field 'data'."}"#,
            ),
            // What a `Value` accepts is still accepted, with its wording of reasons.
            (
                r#"{"id":9,"type":"todo","data":{"title":"a","title":"b","done":true}}"#,
                r#"{"id":9,"type":"todo","data":{"title":"b","done":true}}"#,
            ),
            (
                r#"{"id":10,"type":"todo","data":{"title":1,"done":"x"}}"#,
                r#"{"id":10,"type":"todo","error":"Invalid data: invalid type: string \"x\", expected a boolean"}"#,
            ),
            // Raw text is relayed byte for byte, also what a `Value` cannot hold.
            (
                r#"{"id":5,"type":"relay","data": {"b" : 1e400, "a":[ ]}}"#,
                r#"{"id":5,"type":"relay","data":{"b" : 1e400, "a":[ ]}}"#,
            ),
            (r#"{"id":6,"type":"relay"}"#, r#"{"id":6,"type":"relay"}"#),
            // A handler that takes the whole `Request` sees a `Value`, and says when data
            // does not fit one.
            (
                r#"{"id":7,"type":"echo","data":{"b":1,"a":2}}"#,
                r#"{"id":7,"type":"echo","data":{"a":2,"b":1}}"#,
            ),
            (
                r#"{"id":8,"type":"echo","data":[1e400]}"#,
                r#"{"id":8,"type":"echo","error":"Invalid data: number out of range"}"#,
            ),
        ];
        for (sent, expected) in cases {
            assert_eq!(dispatch_detached(sent).as_deref(), Some(expected), "{sent}");
        }
    }

    #[test]
    fn ids_a_64_bit_number_cannot_hold_come_back_as_sent() {
        let cases = [
            (
                r#"{"id":18446744073709551617,"type":"ping"}"#,
                r#"{"id":18446744073709551617,"type":"pong"}"#,
            ),
            (
                r#"{"type":"echo","data":[1],"id":  1.50}"#,
                r#"{"id":1.50,"type":"echo","data":[1]}"#,
            ),
            (
                r#"{"id":1e2,"type":"fail"}"#,
                r#"{"id":1e2,"type":"fail","error":"Internal server error."}"#,
            ),
            // Usual ids are written by serde_json as they were.
            (r#"{"id":7,"type":"ping"}"#, r#"{"id":7,"type":"pong"}"#),
            (r#"{"id":"a","type":"ping"}"#, r#"{"id":"a","type":"pong"}"#),
        ];
        for (sent, expected) in cases {
            assert_eq!(dispatch_detached(sent).as_deref(), Some(expected), "{sent}");
        }
    }

    #[test]
    fn parse_keeps_every_top_level_field() {
        let request = parse(r#"{"id":0,"type":"t","data":{},"auth_jwt":"tok","x":[1]}"#).unwrap();
        assert_eq!(request.id, Value::from(0));
        assert_eq!(request.message_type, "t");
        assert_eq!(request.data, Some(Value::Object(Map::new())));
        assert_eq!(request.fields.len(), 2);
        assert_eq!(request.fields["auth_jwt"], "tok");
    }

    #[test]
    fn type_is_checked_before_id() {
        assert_eq!(
            parse("{}").unwrap_err(),
            r#"{"error":"Missing required field 'type'."}"#
        );
        assert_eq!(
            parse(r#"{"type":"x"}"#).unwrap_err(),
            r#"{"error":"Missing required field 'id'."}"#
        );
    }

    #[test]
    fn the_raw_pong_answers_as_the_general_path_does() {
        for (ping, pong) in [
            (r#"{"id":7,"type":"ping"}"#, r#"{"id":7,"type":"pong"}"#),
            (
                r#"{"id":"a","type":"ping","data":{"x":1}}"#,
                r#"{"id":"a","type":"pong","data":{"x":1}}"#,
            ),
            (
                r#"{"type":"ping","data":[1,2],"id":3}"#,
                r#"{"id":3,"type":"pong","data":{"data":[1,2]}}"#,
            ),
            (
                r#"{"id":4,"type":"ping","data":null}"#,
                r#"{"id":4,"type":"pong","data":{"data":null}}"#,
            ),
            (
                r#"{"id":18446744073709551617,"type":"ping","auth_jwt":"t"}"#,
                r#"{"id":18446744073709551617,"type":"pong"}"#,
            ),
        ] {
            assert_eq!(raw_pong(ping).as_deref(), Some(pong), "{ping}");
            // The general path agrees.
            let general = pong_of(ping);
            assert_eq!(general, pong, "{ping}");
        }
        // What the raw path leaves to the general one.
        for other in [
            r#"["1","ping"]"#,
            r#"{"id":1,"type":"echo"}"#,
            r#"{"id":1,"type":"p\u0069ng"}"#,
            r#"{"id":1,"id":2,"type":"ping"}"#,
            r#"{"id":null,"type":"ping"}"#,
            r#"{"type":"ping"}"#,
            r#"{"id":1,"type":"ping"} x"#,
        ] {
            assert_eq!(raw_pong(other), None, "{other}");
        }
    }

    /// The general path's pong (with the exact id restored, as `dispatch` does).
    fn pong_of(text: &str) -> String {
        let request = read(text).unwrap();
        let exact = ExactId::of(text, &request.id);
        let reply = pong(&request);
        match exact {
            Some(exact) => exact.restore(reply),
            None => reply,
        }
    }

    #[test]
    fn pong_wraps_non_objects() {
        let ping = |data: Option<Value>| {
            pong(&Incoming::from(Request {
                id: Value::from(7),
                message_type: "ping".into(),
                data,
                fields: Map::new(),
            }))
        };
        assert_eq!(ping(None), r#"{"id":7,"type":"pong"}"#);
        assert_eq!(
            ping(Some(Value::from(1))),
            r#"{"id":7,"type":"pong","data":{"data":1}}"#
        );
        assert_eq!(
            ping(Some(Value::Object(Map::new()))),
            r#"{"id":7,"type":"pong","data":{}}"#
        );
    }
}
