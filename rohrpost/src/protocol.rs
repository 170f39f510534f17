//! The wire contract: every text and code a client can see, in one place.
//!
//! A message is one JSON object in one text frame: `{"id": …, "type": "…", "data": …}`.
//! The id is any JSON value and comes back as sent; `data` is optional. A reply carries
//! the request's `id` and `type`, and `data` or `error`. Pushes the client did not ask for
//! (group messages, `subscription-update`) have ids of their own.
//!
//! ## Requests and what they get back
//!
//! | request | reply | connection |
//! | --- | --- | --- |
//! | empty text frame | `{"error": "Received empty message."}` | stays |
//! | not JSON | `{"error": "Could not decode JSON message. Error: <serde's reason>"}` | stays |
//! | JSON, not an object | `{"error": "Expected a JSON object as message."}` | stays |
//! | no `type` | `{"error": "Missing required field 'type'."}` | stays |
//! | no `id` | `{"error": "Missing required field 'id'."}` | stays |
//! | `type` not a string | `{"id", "error": "Field 'type' must be a string."}` | stays |
//! | `type` with no handler | `{"id", "type", "error": "Unknown message type '<type>'."}` | stays |
//! | `{"id", "type": "ping", "data"?}` | `{"id", "type": "pong", "data"?}`: an object as given, any other value as `{"data": value}` | stays |
//! | `data` that does not fit the handler's `Data<T>` (or, for a handler taking the whole `Request`, a `Value`: a number beyond `f64`, 128 levels of nesting or more) | `{"id", "type", "error": "Invalid data: <serde's reason>"}` | stays |
//! | no `data` where the handler needs some | `{"id", "type", "error": "Missing required field 'data'."}` | stays |
//! | a handler's [`Error::new`](crate::Error::new) | `{"id", "type", "error": <its text>}` | stays |
//! | a handler's internal error or panic | `{"id", "type", "error": "Internal server error."}` ([`INTERNAL_ERROR`]) | stays |
//! | a handler past the handler timeout | `{"id", "type", "error": "Handler timed out."}` ([`HANDLER_TIMEOUT_ERROR`]) | stays |
//! | over the rate limit | `{"id", "type", "error": "Rate limit exceeded."}` ([`RATE_LIMITED`]) | stays |
//! | a subscription refused | `{"id", "type", "error": "ACCESS_DENIED"}` ([`ACCESS_DENIED`]) | stays |
//! | binary frame | `{"error": "Binary frames are not supported: …"}` ([`BINARY_FRAME_ERROR`]) | stays |
//!
//! ## Extensions a client opts into
//!
//! An unmodified rohrpost.js client never sees them: they travel as extra keys, only to a
//! client that sent `since` or `presence` in its group object (see
//! [`History`](crate::groups::History) and [`presence`](crate::presence)), or as the reply to
//! the opt-in `presence` request.
//!
//! | request | reply |
//! | --- | --- |
//! | `subscribe` with `"since": null` | `{"group", "offset", "epoch"}` for a group with history; pushes to this subscriber carry `"offset"` and `"epoch"` beside `"data"` |
//! | `subscribe` with `"since": {"offset", "epoch"}` | the missed pushes first, then `{"group", "offset", "epoch", "recovered": true}`; or nothing replayed and `"recovered": false` |
//! | `subscribe` with `"presence": true` | `{"group", "presence": true}` (`false` for a group without presence); then `subscription-update` pushes with `"type": "join"` or `"leave"` and `"object": {"id", "info"}` |
//! | `presence` (with `Subscriptions::with_presence`) | `{"group", "connections", "members", "list": [{"id", "info", "connections"}]}`, without `list` for `"list": false`; `ACCESS_DENIED` when the hook refuses, `PRESENCE_DISABLED` ([`PRESENCE_DISABLED`]) for a group without presence |
//!
//! ## Closes the server starts
//!
//! | code | reason | when |
//! | --- | --- | --- |
//! | 1000 | (none, or the handler's) | [`Connection::close`](crate::Connection::close) |
//! | 1001 | `server shutting down` ([`SHUTTING_DOWN_CLOSE`]) | graceful shutdown |
//! | 1002 | `WebSocket protocol error` ([`PROTOCOL_ERROR_CLOSE`]) | a frame that breaks RFC 6455 |
//! | 1007 | `text frame is not valid UTF-8` ([`INVALID_UTF8_CLOSE`]) | |
//! | 1008 | `outbound queue full: the client is not reading` ([`SLOW_CLIENT_CLOSE`]) | a client that does not keep up with its pushes (see [`Policy`](crate::groups::Policy)) or reads nothing for the write timeout |
//! | 1009 | `message too big` ([`MESSAGE_TOO_BIG_CLOSE`]) | a message over `max_message_size` |
//!
//! ## Handshakes the server refuses
//!
//! The body is a plain-text reason.
//!
//! | status | reason | when |
//! | --- | --- | --- |
//! | 400 | tungstenite's reason | not a WebSocket upgrade, a malformed request, more than 124 headers |
//! | 401, 403 | the authentication hook's | the hook refused |
//! | 403 | `origin <origin> is not allowed` | `Origin` not on the allow-list |
//! | 404 | `no rohrpost endpoint at <path>` | another path |
//! | 431 | `the handshake request head is over 16384 bytes` | a request head over [`MAX_REQUEST_HEAD`](crate::server::MAX_REQUEST_HEAD) |
//! | 503 | [`TOO_MANY_CONNECTIONS`], [`AUTH_TIMED_OUT`], [`SHUTTING_DOWN`] | `max_connections` open; the hook outlasted the handshake timeout; the server is shutting down |

/// The built-in keepalive request's type.
pub const PING: &str = "ping";
/// The type of the reply to [`PING`].
pub const PONG: &str = "pong";

/// The type of the reply to a request of `request_type`: the same type, except [`PONG`]
/// for [`PING`].
pub fn reply_type(request_type: &str) -> &str {
    if request_type == PING {
        PONG
    } else {
        request_type
    }
}

/// The error reply to an empty text frame.
pub const EMPTY_MESSAGE: &str = "Received empty message.";
/// The error reply to a frame that is JSON but not an object.
pub const NOT_AN_OBJECT: &str = "Expected a JSON object as message.";
/// The error reply to a message without `type`.
pub const MISSING_TYPE: &str = "Missing required field 'type'.";
/// The error reply to a message without `id`.
pub const MISSING_ID: &str = "Missing required field 'id'.";
/// The error reply to a message whose `type` is not a string.
pub const TYPE_NOT_A_STRING: &str = "Field 'type' must be a string.";
/// The error reply to a message without `data` where the handler needs some.
pub const MISSING_DATA: &str = "Missing required field 'data'.";
/// What the client sees for an internal error or a handler's panic.
pub const INTERNAL_ERROR: &str = "Internal server error.";
/// The error reply to a handler that ran past the handler timeout.
pub const HANDLER_TIMEOUT_ERROR: &str = "Handler timed out.";
/// The error reply to a message over the rate limit.
pub const RATE_LIMITED: &str = "Rate limit exceeded.";
/// The error reply to a refused subscription, as the original sends it.
pub const ACCESS_DENIED: &str = "ACCESS_DENIED";
/// The error of a `presence` request for a group that keeps no presence.
pub const PRESENCE_DISABLED: &str = "PRESENCE_DISABLED";
/// The reply to a binary frame: the protocol is JSON in text frames.
pub const BINARY_FRAME_ERROR: &str =
    "Binary frames are not supported: send each message as one JSON text frame.";

/// The error reply to a frame that is not JSON.
pub fn not_json(reason: impl std::fmt::Display) -> String {
    format!("Could not decode JSON message. Error: {reason}")
}

/// The error reply to a message type without a handler.
pub fn unknown_type(message_type: &str) -> String {
    format!("Unknown message type '{message_type}'.")
}

/// The error reply to `data` that does not fit the handler's `Data<T>`.
pub fn invalid_data(reason: impl std::fmt::Display) -> String {
    format!("Invalid data: {reason}")
}

/// The close reason (code 1008) for a client that does not read what it is sent.
pub const SLOW_CLIENT_CLOSE: &str = "outbound queue full: the client is not reading";
/// The close reason (code 1001) at a graceful shutdown.
pub const SHUTTING_DOWN_CLOSE: &str = "server shutting down";
/// The close reason (code 1009) for a message over `max_message_size`.
pub const MESSAGE_TOO_BIG_CLOSE: &str = "message too big";
/// The close reason (code 1007) for a text frame that is not UTF-8.
pub const INVALID_UTF8_CLOSE: &str = "text frame is not valid UTF-8";
/// The close reason (code 1002) for a frame that breaks the WebSocket protocol.
pub const PROTOCOL_ERROR_CLOSE: &str = "WebSocket protocol error";

/// The HTTP 503 reason when `max_connections` are open.
pub const TOO_MANY_CONNECTIONS: &str = "too many connections; try again later";
/// The HTTP 503 reason when the authentication hook outlasted the handshake timeout.
pub const AUTH_TIMED_OUT: &str = "authentication timed out; try again later";
/// The HTTP 503 reason for a handshake that arrives during shutdown.
pub const SHUTTING_DOWN: &str = "the server is shutting down; try again later";

/// The HTTP 403 reason for an origin that is not on the allow-list.
pub fn origin_not_allowed(origin: &str) -> String {
    format!("origin {origin} is not allowed")
}

/// The HTTP 404 reason for another path.
pub fn no_endpoint(path: &str) -> String {
    format!("no rohrpost endpoint at {path}")
}

/// The HTTP 431 reason for a request head over `limit` bytes.
pub fn head_too_large(limit: usize) -> String {
    format!("the handshake request head is over {limit} bytes")
}
